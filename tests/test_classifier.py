import shutil

import pytest
import torch

from helpers import classifier as clf
from helpers.data import load_mnist
from helpers.store import file_hash


@pytest.fixture(scope="module")
def model(mnist_dir):
    return clf.load_classifier()


def test_shipped_weights_match_the_pinned_hash():
    assert clf.WEIGHTS_PATH.is_file()
    assert clf.WEIGHTS_PATH.stat().st_size < 2_000_000
    assert file_hash(clf.WEIGHTS_PATH, "sha256") == clf.WEIGHTS_SHA256
    state = torch.load(clf.WEIGHTS_PATH, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())  # a plain state_dict


def test_a_changed_or_missing_file_is_refused(tmp_path):
    bad = tmp_path / "w.pt"
    shutil.copy(clf.WEIGHTS_PATH, bad)
    data = bytearray(bad.read_bytes())
    data[-100] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(clf.ClassifierError, match="SHA-256"):
        clf.load_classifier(path=bad)
    with pytest.raises(clf.ClassifierError, match="missing"):
        clf.load_classifier(path=tmp_path / "absent.pt")


def test_test_accuracy_is_at_least_99_2_percent(model):
    images, labels = load_mnist(False)
    assert clf.accuracy(model, images, labels) >= 0.992


def test_outputs_and_feature_scale(model):
    x = load_mnist(True)[0][:2000].float().div(255).unsqueeze(1)
    f = model.features(x)
    assert f.shape == (2000, clf.FEATURE_DIM) and (f >= 0).all()
    # folded into the weights: unit root-mean-square on training images
    assert f.square().mean().sqrt().item() == pytest.approx(1.0, abs=0.05)
    assert torch.equal(model(x), model.logits_from_features(f))  # eval mode: no dropout
    assert model(x).shape == (2000, 10)


def test_feature_rescaling_leaves_logits_unchanged():
    torch.manual_seed(0)
    m = clf.MNISTClassifier().eval()
    x = torch.rand(64, 1, 28, 28)
    before = m(x)
    scale = clf.normalise_features(m, x)
    assert scale > 0
    assert torch.allclose(m(x), before, atol=1e-5)
    assert m.features(x).square().mean().item() == pytest.approx(1.0, rel=1e-4)


def test_random_shift_translates_each_image_within_range():
    x = torch.zeros(200, 1, 28, 28)
    x[:, 0, 14, 14] = 1.0
    out = clf.random_shift(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert torch.equal(out.sum((1, 2, 3)), torch.ones(200))  # the dot stays inside the frame
    pos = out[:, 0].flatten(1).argmax(1)
    dy, dx = pos // 28 - 14, pos % 28 - 14
    assert dy.abs().max() == 2 and dx.abs().max() == 2
    assert len(set(zip(dy.tolist(), dx.tolist()))) == 25  # all 5 x 5 offsets occur
    assert torch.equal(clf.random_shift(x, 0, torch.Generator()), x)


def test_training_is_deterministic(mnist_dir):
    settings = clf.ClassifierTraining(epochs=1, limit=512, batch_size=128)
    a = clf.train_classifier(settings, log=lambda *_: None).state_dict()
    b = clf.train_classifier(settings, log=lambda *_: None).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
