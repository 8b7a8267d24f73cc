"""The MNIST classifier that serves as the feature network of the evaluation (SPEC section 3).

A small CNN trained on the 60,000 training images by `scripts/train_classifier.py`; its weights ship
in the repository (`helpers/weights/mnist_classifier.pt`, a plain state_dict) and are accepted only
with the SHA-256 pinned below. Inputs are images in [0, 1] of shape (N, 1, 28, 28).

- `features(x)`: the 128 penultimate activations (after ReLU, input of the last linear layer); they
  give "FID (MNIST classifier)" and KID.
- `forward(x)`: the 10 logits; their softmax gives "IS (MNIST classifier)" and the class histogram.

Training is seeded and uses torch's deterministic algorithms: on the same machine, torch build and
thread count it reproduces the shipped file bit for bit; elsewhere floating-point reduction order may
differ, so a retrained file gets a new hash (and must then be pinned again, see the script).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .store import file_hash

WEIGHTS_PATH = Path(__file__).resolve().parent / "weights" / "mnist_classifier.pt"
WEIGHTS_SHA256 = "0a44f95739dbc0b71bf469f7988b29a511a4bbd7119ef7f5f1b9d5e0f7dad88a"
FEATURE_DIM = 128
NUM_CLASSES = 10


class ClassifierError(RuntimeError):
    """The classifier weights are missing, damaged or not the pinned ones."""


class MNISTClassifier(nn.Module):
    """Three strided conv stages (28 -> 14 -> 7 -> 4) with batch norm, then 128 features, 10 logits.

    Strided convolutions instead of pooling keep the activations small: one training epoch costs
    about 20 CPU-seconds on one thread.
    """

    def __init__(
        self, widths: tuple[int, int, int] = (32, 64, 128), feature_dim: int = FEATURE_DIM, dropout: float = 0.3
    ):
        super().__init__()
        c1, c2, c3 = widths

        def stage(c_in: int, c_out: int, k: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, k, stride=2, padding=k // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

        self.body = nn.Sequential(*stage(1, c1, 5), *stage(c1, c2, 3), *stage(c2, c3, 3), nn.Flatten())
        self.embed = nn.Sequential(nn.Linear(c3 * 4 * 4, feature_dim), nn.ReLU())
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, NUM_CLASSES)
        self.num_features = feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (N, 128) of images in [0, 1]."""
        return self.embed(self.body(x))

    def logits_from_features(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, 10) of images in [0, 1]."""
        return self.head(self.dropout(self.features(x)))


# --------------------------------------------------------------------------- weights
def weights_id() -> str:
    """Short identity of the shipped weights (first 12 hex digits of the pinned SHA-256)."""
    return WEIGHTS_SHA256[:12]


_LOADED: dict[tuple[str, str], MNISTClassifier] = {}


def load_classifier(
    device: str | torch.device = "cpu", path: Path | None = None, expected_sha256: str | None = WEIGHTS_SHA256
) -> MNISTClassifier:
    """The classifier in eval mode with frozen parameters (the shipped file is read once per device).

    The file must have SHA-256 `expected_sha256` (the pinned one by default; None skips the check,
    for freshly trained weights only).
    """
    path = Path(path or WEIGHTS_PATH)
    shipped = path == WEIGHTS_PATH and expected_sha256 == WEIGHTS_SHA256
    key = (str(path), str(device))
    if shipped and key in _LOADED:
        return _LOADED[key]
    if not path.is_file():
        raise ClassifierError(
            f"classifier weights {path} are missing: restore them from git or run scripts/train_classifier.py"
        )
    if expected_sha256 is not None:
        got = file_hash(path, "sha256")
        if got != expected_sha256:
            raise ClassifierError(
                f"classifier weights {path} have SHA-256 {got}, expected {expected_sha256}: the file is "
                "damaged or was retrained; restore it from git, or pin the new hash in "
                "helpers/classifier.py (WEIGHTS_SHA256) if the retraining was intended"
            )
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = MNISTClassifier()
    model.load_state_dict(state)
    model.eval().requires_grad_(False).to(device)
    if shipped:
        _LOADED[key] = model
    return model


# --------------------------------------------------------------------------- inference
def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) or float (N, 1, 28, 28) in [0, 1] -> float (N, 1, 28, 28) in [0, 1]."""
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    if images.dim() == 3:
        images = images.unsqueeze(1)
    return images.float()


@torch.no_grad()
def predict_logits(model: MNISTClassifier, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Logits (N, 10) in float32 of images in [0, 1] (or uint8), computed in batches."""
    x = to_input(images)
    dev = next(model.parameters()).device
    return torch.cat([model(x[i : i + batch_size].to(dev)).cpu() for i in range(0, len(x), batch_size)])


def accuracy(model: MNISTClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of images whose arg-max class equals the label."""
    return (predict_logits(model, images).argmax(1) == labels).float().mean().item()


# --------------------------------------------------------------------------- training
def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image of (N, 1, H, W) by its own integer (dy, dx) in [-max_shift, max_shift],
    filling with zeros (black), in one gather over the whole batch."""
    if max_shift == 0:
        return x
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator)
    rows = (torch.arange(h)[None, :] + offsets[0][:, None])[:, :, None]  # (N, H, 1)
    cols = (torch.arange(w)[None, :] + offsets[1][:, None])[:, None, :]  # (N, 1, W)
    return padded[torch.arange(n)[:, None, None], 0, rows, cols].unsqueeze(1)


@dataclass(frozen=True)
class ClassifierTraining:
    """How the shipped classifier is trained (scripts/train_classifier.py)."""

    epochs: int = 8
    batch_size: int = 128
    lr: float = 3e-3  # peak of the one-cycle schedule
    weight_decay: float = 1e-4
    max_shift: int = 2  # augmentation: random translations of up to this many pixels
    seed: int = 0
    limit: int | None = None  # first N training images (tests); None: all 60,000


def train_classifier(
    settings: ClassifierTraining = ClassifierTraining(), log: Callable[[str], None] = print
) -> MNISTClassifier:
    """Train the classifier on the MNIST training set, deterministically (CPU)."""
    from .data import load_mnist

    torch.manual_seed(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    images, labels = load_mnist(True)
    if settings.limit is not None:
        images, labels = images[: settings.limit], labels[: settings.limit]
    x = to_input(images)
    n = len(x)
    steps = (n + settings.batch_size - 1) // settings.batch_size
    model = MNISTClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.lr, total_steps=settings.epochs * steps)
    for epoch in range(1, settings.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=gen)
        total, correct = 0.0, 0
        for step in range(steps):
            idx = order[step * settings.batch_size : (step + 1) * settings.batch_size]
            xb = random_shift(x[idx], settings.max_shift, gen)
            logits = model(xb)
            loss = nn.functional.cross_entropy(logits, labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            correct += (logits.argmax(1) == labels[idx]).sum().item()
        log(
            f"epoch {epoch}/{settings.epochs}: loss {total / n:.4f}, train accuracy "
            f"{correct / n:.4f} ({time.perf_counter() - t0:.0f} s)"
        )
    model.eval()
    scale = normalise_features(model, x)
    log(f"features rescaled by {scale:.4f} to unit root-mean-square on the training images")
    return model


@torch.no_grad()
def normalise_features(model: MNISTClassifier, images: torch.Tensor, batch_size: int = 1000) -> float:
    """Rescale the penultimate features to unit root-mean-square over `images`; logits unchanged.

    ReLU is positively homogeneous, so multiplying the embedding layer by s > 0 multiplies the
    features by s, and dividing the head's weights by s leaves the logits as they were. Features of
    unit scale keep KID's cubic kernel (x.y / d + 1)^3 in a well-conditioned range and give FID a
    scale independent of the training run. Returns s.
    """
    sq = torch.zeros((), dtype=torch.float64)
    for i in range(0, len(images), batch_size):
        sq += model.features(images[i : i + batch_size]).double().square().sum()
    scale = float((sq / (len(images) * model.num_features)).rsqrt())
    linear = model.embed[0]
    linear.weight.mul_(scale)
    linear.bias.mul_(scale)
    model.head.weight.div_(scale)
    return scale
