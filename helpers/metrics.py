"""Sample-quality metrics of generated MNIST digits (SPEC section 3).

Two feature networks ("backends"):

- "classifier": the project's MNIST classifier (helpers/classifier.py). Its 128 penultimate features
  give "FID (MNIST classifier)" and KID; its softmax gives "IS (MNIST classifier)" and the histogram
  of the classes of the generated digits.
- "inception": Inception-v3 pool3 features with the standard FID weights (helpers/inception.py),
  for comparison with the literature. FID only: offline there is no Inception classifier head.

All statistics are torchmetrics' (FrechetInceptionDistance, KernelInceptionDistance,
InceptionScore). Each image set goes through its feature network once; the features are then handed
to the torchmetrics classes through a pass-through feature module (`PrecomputedFeatures`), so the
reference side can be cached on disk and the bootstrap can resample features instead of running the
network again. `ClassifierFeatures` is the same network as a torchmetrics feature module on images,
for anyone who wants to call torchmetrics directly (the tests check that both routes give the same
FID).

Protocol
- Generated images come in the model's range [-0.5, 0.5] and are mapped with x + 0.5, clamped to
  [0, 1]. Anything outside [-1.5, 1.5] (for instance 0..255 pixels) is refused.
- Reference: the MNIST test set. A reference of n images is a fixed, seeded random subset of the split
  (the first and second halves of the MNIST test set differ in difficulty, so "the first n" would be
  biased). By default the reference has as many images as the generated set (capped at 10,000).
- Reference features are computed once per (backend, weights, split, n) and cached under
  `<DATA_DIR>/metrics_cache/`.
- `real_data_floor(n)` evaluates n real training images against the test reference with exactly the
  same code and sizes: the "real data" row of every table, the best value a generator can expect.
- Uncertainty: a bootstrap over the generated samples (`n_bootstrap` replicates drawn with
  replacement, reference fixed). The standard deviation of the replicates is reported as the standard
  error (`fid_classifier_se`, `is_classifier_mean_se`, `fid_inception_se`), quoted as value +- se
  around the full-sample value. Duplicated samples make bootstrap FIDs larger than the full-sample
  FID (FID grows as the effective sample shrinks), so the replicates' mean and percentiles are biased
  and are not reported; their spread estimates how much the FID of a fresh draw of N samples would
  vary. KID carries its own spread over random subsets (torchmetrics' kid_std, subsets of at most half
  the sample).
- Feature scale: the classifier's penultimate features have unit root-mean-square on the training
  set (folded into its weights), which keeps KID's cubic kernel well conditioned.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

from . import classifier as clf
from . import config, store
from .hardware import pick_device

BACKENDS = ("classifier", "inception")
REFERENCES = ("test", "train")
SPLIT_SIZES = {"test": 10_000, "train": 60_000}
_SPLIT_SEEDS = {"test": 20_231, "train": 60_000}  # fixed permutations that pick reference subsets
RANGE_LIMIT = 1.5  # |value| beyond this cannot be an image in the model's range [-0.5, 0.5]
KID_SUBSET_SIZE = 1000
KID_SUBSETS = 100
IS_SPLITS = 10


@dataclass(frozen=True)
class Protocol:
    """The metric settings of one evaluation: KID's subsets, IS's splits and the bootstrap of the
    standard errors (`n_bootstrap` resamples of the generated set, for `bootstrap_backends`)."""

    kid_subset_size: int = KID_SUBSET_SIZE
    kid_subsets: int = KID_SUBSETS
    is_splits: int = IS_SPLITS
    n_bootstrap: int = 0
    bootstrap_backends: tuple[str, ...] = ("classifier",)


NO_BOOTSTRAP = Protocol()

METRIC_LABELS = {
    "fid_classifier": "FID (MNIST classifier)",
    "kid_classifier_mean": "KID (MNIST classifier)",
    "kid_classifier_std": "KID std over subsets",
    "is_classifier_mean": "IS (MNIST classifier)",
    "is_classifier_std": "IS std over splits",
    "class_entropy_bits": "class entropy (bits, max 3.32)",
    "top_class_share": "share of the most common class",
    "fid_inception": "FID (Inception-v3)",
}


# --------------------------------------------------------------------------- feature modules
class PrecomputedFeatures(nn.Module):
    """Pass-through "feature network" for torchmetrics: update() receives features, not images."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 2 or features.shape[1] != self.num_features:
            raise ValueError(f"expected features of shape (N, {self.num_features}), got {tuple(features.shape)}")
        return features


class ClassifierFeatures(nn.Module):
    """The classifier's penultimate features of images in [0, 1]: a torchmetrics feature module."""

    def __init__(self, model: clf.MNISTClassifier | None = None):
        super().__init__()
        self.model = model or clf.load_classifier()
        self.num_features = self.model.num_features

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x.float())


# --------------------------------------------------------------------------- inputs
def prepare_images(
    images: torch.Tensor, value_range: str = "model", strict_range: bool = True, name: str = "images"
) -> tuple[torch.Tensor, float]:
    """Validate generated images; return them as float (N, 1, 28, 28) in [0, 1] and the share of
    pixels that had to be clamped.

    value_range "model": the models' range [-0.5, 0.5], mapped with x + 0.5 (SPEC section 1);
    "unit": already in [0, 1]. Either way the result is clamped to [0, 1].
    strict_range: refuse values more than 1 beyond the range (|x| > 1.5 in the model's range), which
    no sensible generator produces but 0..255 pixels do. Turn it off only for samples of models that
    may still be wild (per-epoch curves), where clamping is the protocol.
    """
    config.check_choice("value_range", value_range, ("model", "unit"))
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype == torch.uint8:
        raise ValueError(
            f"{name} are uint8 (0..255 pixels?); pass float images in the model's range [-0.5, 0.5], i.e. x / 255 - 0.5"
        )
    if not images.is_floating_point():
        raise ValueError(f"{name} have dtype {images.dtype}; expected a floating-point tensor")
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise ValueError(f"{name} have shape {tuple(images.shape)}; expected (N, 1, 28, 28)")
    if images.shape[0] < 2:
        raise ValueError(f"{name}: {images.shape[0]} image(s); at least 2 are needed")
    x = images.detach().float().cpu()
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    centred = x if value_range == "model" else x - 0.5
    lo, hi = centred.min().item(), centred.max().item()
    if strict_range and (lo < -RANGE_LIMIT or hi > RANGE_LIMIT):
        expected = "[-0.5, 0.5]" if value_range == "model" else "[0, 1]"
        lo, hi = x.min().item(), x.max().item()
        raise ValueError(
            f"{name} have values in [{lo:.3g}, {hi:.3g}], far outside the expected range "
            f"{expected} (0..255 pixels must be scaled first)"
        )
    if value_range == "model" and lo >= 0.0 and hi > 0.5:
        # MNIST in the model's range is mostly background at -0.5: a set with no negative pixel at
        # all and values above 0.5 is almost surely [0, 1] data, which x + 0.5 would push to white.
        message = (
            f"{name} have no negative pixel and reach {hi:.3g}: they look like images in [0, 1], "
            "not in the model's range [-0.5, 0.5]; pass value_range='unit' for [0, 1] images"
        )
        if strict_range:
            raise ValueError(message)
        warnings.warn(message, stacklevel=3)
    x01 = centred + 0.5
    clipped = float(((x01 < 0) | (x01 > 1)).double().mean())
    return x01.clamp(0.0, 1.0), clipped


def check_images(images: torch.Tensor, value_range: str = "model", name: str = "images") -> torch.Tensor:
    """Validate generated images and return them as float (N, 1, 28, 28) in [0, 1] (strict range)."""
    return prepare_images(images, value_range, True, name)[0]


def _unit_from_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images.float() / 255.0).unsqueeze(1)


# --------------------------------------------------------------------------- features
@dataclass
class FeatureSet:
    """What a backend extracts from one image set: features (N, D) and, for the classifier, logits."""

    backend: str
    features: torch.Tensor
    logits: torch.Tensor | None = None
    # FID's statistics of the whole set (float64 sum, sum of outer products, n), kept with a cached
    # reference so that no FID against it computes its 2,048 x 2,048 covariance again
    fid_stats: dict | None = None

    def __len__(self) -> int:
        return self.features.shape[0]

    def subset(self, idx: torch.Tensor) -> FeatureSet:
        return FeatureSet(self.backend, self.features[idx], None if self.logits is None else self.logits[idx])


def backend_id(backend: str) -> str:
    """Identity of a backend's weights (first 12 hex digits of their pinned hash)."""
    config.check_choice("backend", backend, BACKENDS)
    if backend == "classifier":
        return clf.weights_id()
    from . import inception

    return inception.weights_id()


@torch.no_grad()
def extract(
    backend: str, images01: torch.Tensor, device: str | torch.device = "auto", batch_size: int = 1000
) -> FeatureSet:
    """Run the backend's network over images in [0, 1] (N, 1, 28, 28); results float32 on the CPU."""
    config.check_choice("backend", backend, BACKENDS)
    dev = pick_device(device)
    if backend == "classifier":
        model = clf.load_classifier(dev)
        feats, logits = [], []
        for i in range(0, len(images01), batch_size):
            f = model.features(images01[i : i + batch_size].to(dev))
            feats.append(f.cpu())
            logits.append(model.logits_from_features(f).cpu())
        return FeatureSet(backend, torch.cat(feats).float(), torch.cat(logits).float())
    from . import inception

    return FeatureSet(backend, inception.load_inception(dev)(images01).cpu().float())


def reference_indices(reference: str, n: int) -> torch.Tensor:
    """The n images of a split that form its reference subset (a fixed seeded permutation)."""
    config.check_choice("reference", reference, REFERENCES)
    size = SPLIT_SIZES[reference]
    config.check_int("n", n, 2, size, allowed=f"2..{size} (the {reference} split)")
    return torch.randperm(size, generator=torch.Generator().manual_seed(_SPLIT_SEEDS[reference]))[:n]


def reference_images(reference: str, n: int) -> torch.Tensor:
    """The reference subset as float (n, 1, 28, 28) in [0, 1]."""
    from .data import load_mnist

    images, _ = load_mnist(reference == "train")
    return _unit_from_uint8(images[reference_indices(reference, n)])


def cache_dir() -> Path:
    return config.DATA_DIR / "metrics_cache"


_MEMORY: dict[tuple, FeatureSet] = {}


def reference_features(
    backend: str,
    reference: str = "test",
    n: int = 10_000,
    device: str | torch.device = "auto",
    folder: Path | None = None,
    log: Callable[[str], None] = print,
) -> FeatureSet:
    """Features of the reference subset, computed once and cached on disk (verified when read).

    The cache key holds the backend's weights, the split and n, the MNIST files' MD5s and the code
    that extracts and selects (helpers/store.py code_hash); a damaged file is reported and recomputed.
    """
    from .data import FILES_MD5

    reference_indices(reference, n)  # validates reference and n
    wid = backend_id(backend)
    key = store.key_of(
        {
            "backend": backend,
            "weights": wid,
            "reference": reference,
            "n": n,
            "data": FILES_MD5,
            "code": store.code_hash(["metrics"]),
            # the same network gives other features on a GPU (TF32 matrix products) than on a CPU
            "device": pick_device(device).type,
            "matmul": torch.get_float32_matmul_precision(),
        }
    )
    path = Path(folder or cache_dir()) / f"{backend}-{reference}-n{n}-{key}.pt"
    if str(path) in _MEMORY:
        return _MEMORY[str(path)]

    def compute() -> dict:
        if backend == "inception" or n > 20_000:
            log(f"computing {backend} features of {n} {reference} images (cached afterwards)")
        fs = extract(backend, reference_images(reference, n), device)
        return {"features": fs.features, "logits": fs.logits, "fid_stats": fid_statistics(fs.features)}

    payload = store.cached_tensors(path, compute, log)
    fs = FeatureSet(backend, payload["features"], payload.get("logits"), payload.get("fid_stats"))
    _MEMORY[str(path)] = fs
    return fs


# --------------------------------------------------------------------------- torchmetrics wrappers
def _quiet(factory, *args, **kwargs):
    """Build a torchmetrics metric without its "features are kept in memory" warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        return factory(*args, **kwargs)


def _fid(num_features: int) -> FrechetInceptionDistance:
    return FrechetInceptionDistance(feature=PrecomputedFeatures(num_features), reset_real_features=False)


def fid_statistics(features: torch.Tensor) -> dict:
    """The real-side state torchmetrics' FID accumulates from `features` (float64 on the CPU: sum,
    sum of outer products, n), computed by its own update."""
    m = _fid(features.shape[1])
    m.update(features.cpu().double(), real=True)
    return {
        "sum": m.real_features_sum.clone(),
        "cov_sum": m.real_features_cov_sum.clone(),
        "n": int(m.real_features_num_samples),
    }


def fid_metric(reference: FeatureSet) -> FrechetInceptionDistance:
    """torchmetrics FID holding the reference statistics (the cached ones of a reference set, else
    computed now); reset() keeps them for the next set."""
    m = _fid(reference.features.shape[1])
    stats = reference.fid_stats
    if stats is None or stats["n"] != len(reference):
        m.update(reference.features.cpu().double(), real=True)  # statistics in float64, on the CPU
        return m
    m.real_features_sum.copy_(stats["sum"])
    m.real_features_cov_sum.copy_(stats["cov_sum"])
    m.real_features_num_samples.fill_(stats["n"])
    return m


def fid_of(metric: FrechetInceptionDistance, fake: torch.Tensor) -> float:
    metric.reset()
    metric.update(fake.cpu().double(), real=False)
    return float(metric.compute())


def fid(reference: FeatureSet, fake: FeatureSet) -> float:
    """FID between two feature sets, by torchmetrics."""
    return fid_of(fid_metric(reference), fake.features)


def kid(
    reference: FeatureSet,
    fake: FeatureSet,
    subset_size: int = KID_SUBSET_SIZE,
    subsets: int = KID_SUBSETS,
    seed: int = 0,
) -> tuple[float, float, int]:
    """(KID mean, KID std over subsets, the subset size used), by torchmetrics.

    The subset size is capped at half the smaller sample, so that the subsets differ and their spread
    (kid_std) says something; with subsets as large as the sample every subset is the whole set and
    the spread would be zero. The random subsets are drawn from a private RNG seeded with `seed`; the
    global RNG is left as it was.
    """
    size = max(2, min(subset_size, len(reference) // 2, len(fake) // 2))
    m = _quiet(
        KernelInceptionDistance,
        feature=PrecomputedFeatures(reference.features.shape[1]),
        subsets=subsets,
        subset_size=size,
    )
    m.update(reference.features.cpu().double(), real=True)
    m.update(fake.features.cpu().double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = m.compute()
    return float(mean), float(std), size


def inception_score(logits: torch.Tensor, splits: int = IS_SPLITS, seed: int = 0) -> tuple[float, float]:
    """(IS mean, IS std over splits) of classifier logits, by torchmetrics, in float64.

    torchmetrics shuffles before splitting; that shuffle uses a private RNG seeded with `seed`.
    """
    if len(logits) < splits:
        raise ValueError(f"the Inception Score with {splits} splits needs at least {splits} images, got {len(logits)}")
    m = _quiet(InceptionScore, feature=PrecomputedFeatures(logits.shape[1]), splits=splits)
    m.update(logits.cpu().double())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = m.compute()
    return float(mean), float(std)


def class_histogram(logits: torch.Tensor) -> dict:
    """Counts of the predicted classes, their entropy (bits) and the share of the most common class."""
    counts = torch.bincount(logits.argmax(1), minlength=clf.NUM_CLASSES)
    p = counts.double() / counts.sum()
    nz = p[p > 0]
    return {
        "class_counts": [int(c) for c in counts],
        "class_entropy_bits": float(-(nz * nz.log2()).sum()),
        "top_class": int(counts.argmax()),
        "top_class_share": float(p.max()),
    }


# --------------------------------------------------------------------------- evaluation
def bootstrap(
    fake: dict[str, FeatureSet],
    refs: dict[str, FeatureSet],
    n_bootstrap: int,
    seed: int = 0,
    is_splits: int = IS_SPLITS,
) -> dict:
    """Bootstrap standard errors (`*_se`) of FID and IS over the generated samples.

    Every replicate draws len(fake) samples with replacement (the same indices for every backend);
    the reference statistics stay fixed. Only the spread of the replicates is used: duplicates make
    bootstrap FIDs larger than the full-sample FID, so their mean or percentiles would be biased.
    """
    config.check_int("n_bootstrap", n_bootstrap, 1)
    n = len(next(iter(fake.values())))
    gen = torch.Generator().manual_seed(seed)
    metrics = {b: fid_metric(refs[b]) for b in fake}
    draws: dict[str, list[float]] = {f"fid_{b}": [] for b in fake}
    if "classifier" in fake:
        draws["is_classifier_mean"] = []
    for r in range(n_bootstrap):
        idx = torch.randint(n, (n,), generator=gen)
        for b, fs in fake.items():
            draws[f"fid_{b}"].append(fid_of(metrics[b], fs.features[idx]))
        if "classifier" in fake:
            draws["is_classifier_mean"].append(inception_score(fake["classifier"].logits[idx], is_splits, seed + r)[0])
    out: dict = {"n_bootstrap": n_bootstrap}
    for name, values in draws.items():
        out[f"{name}_se"] = float(torch.tensor(values, dtype=torch.float64).std())
    return out


def evaluate_features(
    fake: dict[str, FeatureSet], refs: dict[str, FeatureSet], *, protocol: Protocol = NO_BOOTSTRAP, seed: int = 0
) -> dict:
    """Every metric of already extracted features (one FeatureSet per backend on each side)."""
    kid_subset_size, kid_subsets, is_splits = protocol.kid_subset_size, protocol.kid_subsets, protocol.is_splits
    n_bootstrap, bootstrap_backends = protocol.n_bootstrap, protocol.bootstrap_backends
    n = {len(fs) for fs in fake.values()}
    if len(n) != 1:
        raise ValueError("the generated feature sets of the backends differ in size")
    out: dict = {"n": n.pop(), "n_reference": len(next(iter(refs.values())))}
    if "classifier" in fake:
        f, r = fake["classifier"], refs["classifier"]
        out["fid_classifier"] = fid(r, f)
        out["kid_classifier_mean"], out["kid_classifier_std"], out["kid_subset_size"] = kid(
            r, f, kid_subset_size, kid_subsets, seed
        )
        out["is_classifier_mean"], out["is_classifier_std"] = inception_score(f.logits, is_splits, seed)
        out["is_splits"] = is_splits
        out.update(class_histogram(f.logits))
    if "inception" in fake:
        out["fid_inception"] = fid(refs["inception"], fake["inception"])
    boot = [b for b in bootstrap_backends if b in fake]
    if n_bootstrap and boot:
        out.update(bootstrap({b: fake[b] for b in boot}, {b: refs[b] for b in boot}, n_bootstrap, seed, is_splits))
    return out


def _check_backends(backends: Iterable[str]) -> tuple[str, ...]:
    if isinstance(backends, str):
        backends = (backends,)
    backends = tuple(backends)
    if not backends:
        raise ValueError("backends is empty; choose from " + ", ".join(BACKENDS))
    for b in backends:
        config.check_choice("backend", b, BACKENDS)
    return backends


def _reference_size(reference: str, n: int, n_reference: int | None) -> int:
    config.check_choice("reference", reference, REFERENCES)
    if n_reference is None:
        return min(n, SPLIT_SIZES[reference])
    config.check_int("n_reference", n_reference, 2)
    return n_reference


def evaluate(
    images: torch.Tensor,
    reference: str = "test",
    backends: Iterable[str] = ("classifier",),
    *,
    n_reference: int | None = None,
    value_range: str = "model",
    protocol: Protocol = NO_BOOTSTRAP,
    seed: int = 0,
    strict_range: bool = True,
    device: str | torch.device = "auto",
    log: Callable[[str], None] = print,
) -> dict:
    """Every metric of generated images against a reference split.

    images: float (N, 1, 28, 28) in the model's range [-0.5, 0.5] (or [0, 1] with value_range="unit").
    reference: "test" (the protocol) or "train". n_reference: size of the reference subset; by default
    as many as N (at most the split's size).
    backends: "classifier" (FID, KID, IS, class histogram) and/or "inception" (FID; slow on a CPU).
    `protocol` holds the metric settings (KID subsets, IS splits, bootstrap); its `n_bootstrap` > 0 adds
    bootstrap standard errors (`*_se`) of FID and IS for its `bootstrap_backends` (Inception-v3
    replicates cost seconds each on a CPU).

    strict_range=False clamps instead of refusing values beyond +-1.5 (see prepare_images).

    Returns a dict of plain Python values: the metrics named in METRIC_LABELS, the class histogram,
    the sample sizes ("n", "n_reference", "kid_subset_size"), the share of pixels clamped into
    [0, 1] ("clipped_share") and what was compared.
    """
    backends = _check_backends(backends)
    x, clipped = prepare_images(images, value_range, strict_range)
    n_ref = _reference_size(reference, len(x), n_reference)
    refs = {b: reference_features(b, reference, n_ref, device, log=log) for b in backends}
    fake = {b: extract(b, x, device) for b in backends}
    out = evaluate_features(fake, refs, protocol=protocol, seed=seed)
    out.update(
        source="generated",
        clipped_share=clipped,
        reference=reference,
        backends=list(backends),
        weights={b: backend_id(b) for b in backends},
    )
    return out


def real_data_floor(
    n: int,
    reference: str = "test",
    backends: Iterable[str] = ("classifier",),
    *,
    n_reference: int | None = None,
    protocol: Protocol = NO_BOOTSTRAP,
    seed: int = 0,
    device: str | torch.device = "auto",
    log: Callable[[str], None] = print,
) -> dict:
    """The "real data" row: n real training images scored exactly like n generated ones.

    The training images are a fixed seeded subset of the training split; the reference is the same
    test subset that `evaluate` uses for the same sizes, and the training-side features are cached too.
    """
    backends = _check_backends(backends)
    config.check_int("n", n, 2)
    if reference == "train":
        raise ValueError(
            "the real-data floor compares training images with the test reference; "
            "reference='train' would compare the training split with itself"
        )
    n_ref = _reference_size(reference, n, n_reference)
    refs = {b: reference_features(b, reference, n_ref, device, log=log) for b in backends}
    fake = {b: reference_features(b, "train", n, device, log=log) for b in backends}
    out = evaluate_features(fake, refs, protocol=protocol, seed=seed)
    out.update(
        source="real training images",
        reference=reference,
        backends=list(backends),
        weights={b: backend_id(b) for b in backends},
    )
    return out


# --------------------------------------------------------------------------- per-epoch hook
N_EPOCH_BOOTSTRAP = 20  # bootstrap resamples of the per-epoch FID's standard error
EPOCH_METRICS = (
    "fid_classifier",
    "fid_classifier_se",
    "kid_classifier_mean",
    "kid_classifier_std",
    "is_classifier_mean",
    "is_classifier_std",
    "class_entropy_bits",
    "top_class_share",
)


def epoch_evaluator(
    n_samples: int,
    seed: int = 0,
    batch_size: int | None = None,
    reference: str = "test",
    precision: str = "fp32",
    device: str = "auto",
) -> tuple[Callable[[nn.Module, int], dict], str]:
    """(evaluate(model, epoch) -> dict of plain numbers, eval_key) for training.fit().

    Each call draws `n_samples` images with `model.sample(batch, generator=...)` from a generator of its
    own, seeded with `seed` at every epoch (the same noise each epoch, so curves are not jittered by
    the draw), and never touches the global RNG. Classifier backend only: FID, KID, IS, class entropy,
    share of the top class, the shares of clamped and of non-finite pixels, "n" and "epoch". Samples
    are clamped into range rather than refused (an early model may overshoot); if any is NaN or
    infinite the metrics are NaN and training goes on. The samples are drawn in the run's `precision`
    (helpers.hardware.autocast), in batches of `batch_size` (default: the rule of
    helpers.hardware.sampling_batch for `device`). The key names everything that decides these
    numbers, the batch included (it decides the order of the noise). FID carries a bootstrap
    standard error (N_EPOCH_BOOTSTRAP resamples) and the result the class counts.
    """
    from .hardware import sampling_batch

    config.check_int("n_samples", n_samples, IS_SPLITS)
    config.check_int("seed", seed, 0)
    batch_size = sampling_batch(device) if batch_size is None else batch_size
    config.check_int("batch_size", batch_size, 1)
    config.check_choice("reference", reference, REFERENCES)
    config.check_choice("precision", precision, config.PRECISIONS)
    # Everything that decides these numbers, the batch included (it decides the order of the noise),
    # and the code that computes them.
    key = "classifier-epoch-" + store.key_of(
        {
            "n": n_samples,
            "reference": reference,
            "seed": seed,
            "precision": precision,
            "kid": [max(2, min(KID_SUBSET_SIZE, n_samples // 2)), KID_SUBSETS],
            "is_splits": IS_SPLITS,
            "weights": clf.weights_id(),
            "batch": batch_size,
            "bootstrap": N_EPOCH_BOOTSTRAP,
            "code": store.code_hash(("metrics",)),
        }
    )

    @torch.no_grad()
    def evaluate_epoch(model: nn.Module, epoch: int) -> dict:
        from .training import sample_images

        dev = next(model.parameters()).device
        samples = sample_images(model, n_samples, seed, batch_size=batch_size, precision=precision, isolate_rng=True)
        nonfinite = float((~torch.isfinite(samples)).double().mean())
        if nonfinite > 0:  # a wild model: report it instead of stopping the training run
            out = {name: math.nan for name in EPOCH_METRICS}
            out.update(clipped_share=math.nan, nonfinite_share=nonfinite, n=n_samples, epoch=int(epoch))
            return out
        result = evaluate(
            samples,
            reference,
            ("classifier",),
            seed=seed,
            strict_range=False,
            device=dev,
            protocol=Protocol(n_bootstrap=N_EPOCH_BOOTSTRAP),
            log=lambda *_: None,
        )
        out = {name: float(result[name]) for name in EPOCH_METRICS}
        out.update(
            clipped_share=result["clipped_share"],
            nonfinite_share=0.0,
            n=int(result["n"]),
            epoch=int(epoch),
            n_reference=int(result["n_reference"]),
            is_classifier_mean_se=float(result["is_classifier_mean_se"]),
            class_counts=[int(c) for c in result["class_counts"]],
        )
        return out

    return evaluate_epoch, key


__all__ = [
    "BACKENDS",
    "REFERENCES",
    "METRIC_LABELS",
    "FeatureSet",
    "PrecomputedFeatures",
    "ClassifierFeatures",
    "prepare_images",
    "check_images",
    "extract",
    "reference_indices",
    "reference_images",
    "reference_features",
    "fid",
    "kid",
    "inception_score",
    "class_histogram",
    "bootstrap",
    "evaluate_features",
    "evaluate",
    "real_data_floor",
    "epoch_evaluator",
]
