"""Benchmark of cold diffusion: how fast the degradation is, and what a short training run reconstructs.

Prints (no timed assertions):
1. degradations per second, vectorised vs the per-image, per-row reference loop, and their ratio;
2. the share of one training step (batch 128: degrade, forward, backward, Adam) spent degrading;
3. after a short run of the main variant ("columns"), RMSE / SSIM / PSNR of the degraded test images and
   of their direct, Algorithm 1 and Algorithm 2 reconstructions (conditional mode).

    python scripts/bench_cold.py [--epochs 2] [--n-test 1000] [--device auto] [--skip-train] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from helpers import runs
from helpers.cold import ColdDiffusion, reconstruction_metrics, reconstructions
from helpers.config import COLD_PRESETS, profile
from helpers.data import test_images, training_images
from helpers.degradations import RowColumnAveraging, degrade_loop


def timed(fn, repeats: int) -> float:
    """Fastest of `repeats` calls, in seconds (after one warm-up call): the least disturbed by other load."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_degradation(batch: int = 128) -> None:
    print(f"1. degradation throughput, batch of {batch} training images, t ~ Uniform{{1..T}}")
    x = training_images(batch)
    print(f"   {'preset':<20}{'vectorised img/s':>18}{'loop img/s':>14}{'ratio':>10}")
    for name, cfg in COLD_PRESETS.items():
        op = RowColumnAveraging(cfg.axis, cfg.group, cfg.schedule, cfg.schedule_seed)
        t = torch.randint(1, op.T + 1, (batch,), generator=torch.Generator().manual_seed(0))
        fast = timed(lambda op=op, t=t: op.degrade(x, t), 50)
        slow = timed(lambda op=op, t=t: degrade_loop(op, x, t), 3)
        print(f"   {name:<20}{batch / fast:>18,.0f}{batch / slow:>14,.0f}{slow / fast:>9,.0f}x")


def bench_step_share(batch: int = 128) -> None:
    print(f"2. share of a training step spent degrading (preset 'columns', batch {batch})")
    torch.manual_seed(0)
    model = ColdDiffusion(COLD_PRESETS["columns"])
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    x = training_images(batch)
    t = torch.randint(1, model.T + 1, (batch,))

    def step():
        loss = model.loss(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step_s = timed(step, 10)
    degrade_s = timed(lambda: model.degradation.degrade(x, t), 50)
    print(
        f"   step {step_s * 1e3:.1f} ms, degrade {degrade_s * 1e3:.3f} ms: {100 * degrade_s / step_s:.2f}% of the step"
    )


def bench_reconstruction(epochs: int, n_test: int, device: str) -> None:
    print(
        f"3. preset 'columns' after {epochs} epoch(s) on 60,000 images; "
        f"reconstructions of the first {n_test} test images (conditional mode)"
    )
    t0 = time.perf_counter()
    run = runs.train(
        "cold", "columns", profile("quick"), epochs=epochs, device=device, progress=False, score_epochs=False
    )
    print(
        f"   run {run.dir.name} ({'from the cache' if run.cached else 'trained'} in "
        f"{time.perf_counter() - t0:.0f} s); epoch losses " + ", ".join(f"{v:.4f}" for v in run.epoch_loss)
    )
    x = test_images(n_test)
    t0 = time.perf_counter()
    images = reconstructions(run.model, x)
    print(f"   degraded + direct + algorithm 1 + algorithm 2 in {time.perf_counter() - t0:.1f} s")
    table = reconstruction_metrics(x, images)
    print(f"   {'images':<12}{'RMSE':>8}{'SSIM':>8}{'PSNR':>8}")
    for name, row in table.items():
        print(f"   {name:<12}{row['RMSE']:>8.4f}{row['SSIM']:>8.4f}{row['PSNR']:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-train", action="store_true", help="only the timing parts 1 and 2")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (1 gives stable timings on a small machine that other jobs load)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_degradation()
    bench_step_share()
    if not args.skip_train:
        bench_reconstruction(args.epochs, args.n_test, args.device)


if __name__ == "__main__":
    main()
