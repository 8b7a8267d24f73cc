"""How far a DDPM gets in N optimiser steps: the measurement quick's budget was sized with.

    .venv/bin/python scripts/budget_probe.py --preset default --steps 1000,1500,2000 [--samples 200]

Trains the preset in bf16 (fp32 where the CPU has no native bf16) with the engine's optimiser step
(`training.train_step`) on all 60,000 training images, batch 128, reshuffled every epoch, and at each
listed step count draws `--samples` images with Prince's sampler (T steps, sampling batch of
`hardware.sampling_batch`) and prints the FID (MNIST classifier, against as many test images), the
share of the top class and the IS, with the seconds of training and of sampling. A probe, outside the
study's cache: its model seed and data order are its own, so its numbers are not the study's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import config, data, hardware, metrics, training  # noqa: E402
from helpers.ddpm import DDPM  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="default", choices=sorted(config.DDPM_PRESETS))
    ap.add_argument("--steps", default="1000,1500,2000", help="comma-separated step counts to score at")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    marks = sorted({int(s) for s in args.steps.split(",")})
    dev = torch.device("cpu")
    precision, why = hardware.choose_precision("auto", "cpu")
    print(f"precision {precision} ({why}); sampling batch {hardware.sampling_batch(dev)}", flush=True)
    cfg = config.ddpm_preset(args.preset)
    torch.manual_seed(args.seed)
    model = DDPM(cfg)
    opt = training.adam(model, cfg.lr, dev)
    images = data.training_images(None)
    gen = torch.Generator().manual_seed(args.seed)
    scaler = hardware.grad_scaler("cpu", precision)
    step, t0 = 0, time.perf_counter()
    while step < marks[-1]:
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed * 1_000_003 + step))
        for i in range(len(images) // cfg.batch_size):
            x = images[order[i * cfg.batch_size : (i + 1) * cfg.batch_size]]
            training.train_step(model, opt, x, gen, hardware.autocast("cpu", precision), scaler)
            step += 1
            if step in marks:
                trained = time.perf_counter() - t0
                model.eval()
                ts = time.perf_counter()
                samples = training.sample_images(model, args.samples, seed=7919, precision=precision)
                ts = time.perf_counter() - ts
                m = metrics.evaluate(samples, "test", ("classifier",), seed=0, strict_range=False, log=lambda *_: None)
                print(
                    f"{args.preset} after {step} steps (trained {trained:.0f} s, sampled {ts:.0f} s): "
                    f"FID {m['fid_classifier']:.1f}, top class {100 * m['top_class_share']:.0f}%, "
                    f"IS {m['is_classifier_mean']:.2f} (n = {m['n']})",
                    flush=True,
                )
                model.train()
                t0 = time.perf_counter()
            if step >= marks[-1]:
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
