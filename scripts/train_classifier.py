"""Train the MNIST classifier that the evaluation uses as its feature network.

    python scripts/train_classifier.py [--out PATH] [--epochs N] [--seed S]

Writes a plain state_dict (atomically) and prints its test accuracy and SHA-256. The run is
deterministic: seeded, torch's deterministic algorithms, one CPU thread (so the floating-point
reduction order does not depend on the number of cores). About 3-4 minutes of CPU time.

The shipped file is helpers/weights/mnist_classifier.pt; after retraining it on purpose, paste the
printed SHA-256 into WEIGHTS_SHA256 of helpers/classifier.py, or loading will refuse the new file.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import classifier  # noqa: E402
from helpers.data import load_mnist  # noqa: E402
from helpers.store import atomic_write_bytes, file_hash  # noqa: E402

MIN_ACCURACY = 0.992  # SPEC section 3


def main(argv: list[str] | None = None) -> int:
    defaults = classifier.ClassifierTraining()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=classifier.WEIGHTS_PATH)
    ap.add_argument("--epochs", type=int, default=defaults.epochs)
    ap.add_argument("--seed", type=int, default=defaults.seed)
    ap.add_argument("--limit", type=int, default=None, help="first N training images (for a quick try)")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    settings = dataclasses.replace(defaults, epochs=args.epochs, seed=args.seed, limit=args.limit)
    print(f"training the MNIST classifier: {settings}")
    t0 = time.perf_counter()
    model = classifier.train_classifier(settings)
    images, labels = load_mnist(False)
    acc = classifier.accuracy(model, images, labels)
    print(f"test accuracy {acc:.4f} ({(1 - acc) * 10000:.0f} errors of 10,000), {time.perf_counter() - t0:.0f} s")

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, buf.getvalue())
    digest = file_hash(args.out, "sha256")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB), SHA-256 {digest}")
    if digest != classifier.WEIGHTS_SHA256:
        print(
            "this differs from WEIGHTS_SHA256 in helpers/classifier.py: pin it there if this file "
            "is to be the shipped one"
        )
    if acc < MIN_ACCURACY:
        print(f"test accuracy {acc:.4f} is below the required {MIN_ACCURACY}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
