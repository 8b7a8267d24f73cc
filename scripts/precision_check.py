"""Does bf16 keep sample quality? The default DDPM at a profile's settings, trained and sampled in
fp32 with two seeds and in bf16 with the first, each scored with the final FID (MNIST classifier).

    .venv/bin/python scripts/precision_check.py [--profile quick] [--seeds 0 1]

bf16 passes when its FID lies within the spread of the fp32 seeds, widened by two standard errors
on each side. The fp32 run of the first seed is the profile's own (from the cache after
./run_all.sh); the others skip the per-epoch evaluation, which does not change the training.
Refused where the hardware has no native bf16 (it would only measure an emulation).
Prints one table; changes no default (helpers.hardware.choose_precision decides from capabilities).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import config, hardware, runs  # noqa: E402
from helpers.hardware import pick_device  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="quick", choices=sorted(config.PROFILES))
    ap.add_argument("--seeds", type=int, nargs=2, default=(0, 1))
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args()
    prof = config.profile(args.profile)
    dev = pick_device(args.device)
    chosen, why = hardware.choose_precision("bf16", dev.type)
    if chosen != "bf16":
        print(f"no check: {why}")
        return 2
    rows = []
    for i, (seed, precision) in enumerate([(args.seeds[0], "fp32"), (args.seeds[1], "fp32"), (args.seeds[0], "bf16")]):
        t0 = time.perf_counter()
        run = runs.train(
            "ddpm",
            "default",
            prof,
            seed=seed,
            device=str(hardware.pick_device(args.device)),
            precision=precision,
            score_epochs=i == 0,
            **({} if i == 0 else {"sample_epochs": ()}),
        )
        train_s = time.perf_counter() - t0
        final = runs.final_metrics(run, prof, seed=seed)
        rows.append((seed, precision, run.cached, train_s, final))
        print(
            f"seed {seed} {precision}: FID {final['fid_classifier']:.2f} ± {final['fid_classifier_se']:.2f}, "
            f"IS {final['is_classifier_mean']:.2f}, sampling {final['sample_seconds']:.0f} s",
            flush=True,
        )
    fp = [r[4] for r in rows if r[1] == "fp32"]
    bf = rows[2][4]
    lo = min(f["fid_classifier"] - 2 * f["fid_classifier_se"] for f in fp)
    hi = max(f["fid_classifier"] + 2 * f["fid_classifier_se"] for f in fp)
    ok = lo <= bf["fid_classifier"] <= hi
    print()
    print("| seed | precision | FID (MNIST classifier) | IS (MNIST classifier) | n | training s | sampling s |")
    print("|---|---|---|---|---|---|---|")
    for seed, precision, cached, train_s, f in rows:
        print(
            f"| {seed} | {precision} | {f['fid_classifier']:.2f} ± {f['fid_classifier_se']:.2f} | "
            f"{f['is_classifier_mean']:.2f} | {f['n']} | {'cached' if cached else f'{train_s:.0f}'} | "
            f"{f['sample_seconds']:.0f} |"
        )
    print(
        f"\nfp32 spread (±2 se): [{lo:.2f}, {hi:.2f}]; bf16 {bf['fid_classifier']:.2f}: "
        f"{'within' if ok else 'OUTSIDE'} ({hardware.cpu_name() if dev.type == 'cpu' else dev})"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
