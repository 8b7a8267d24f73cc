"""Check a machine before the full profile runs on it, and predict how long the full profile takes.

    python scripts/gpu_check.py [--device auto] [--seconds 3] [--jobs 8] [--json PATH]

(a) the machine's capabilities and the precision "auto" picks, with the reason;
(b) Inception-v3 FID features of a few MNIST digits on the device and on the CPU, and their largest
    difference (the network is first used after all training, so a device problem shows here first);
(c) speed: training steps/s and sampler steps/s of the default DDPM and the main cold model at the
    study's batch sizes (training 128, sampling 500, sample grids 16), on the device, in the chosen
    precision, a few seconds each; the time of the CPU-side metrics; then the predicted time of the
    full profile (helpers/config.py PROFILES["full"], the runs of helpers/study.py RUNS), per model as
    steps x seconds per step, for 1 job and for N concurrent jobs.

Runs on any device, the CPU included (it then predicts the CPU's time). Nothing is written except
the optional JSON; the reference features it needs are cached like any metric's.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from helpers import config, hardware, study, training  # noqa: E402
from helpers.cold import ColdDiffusion  # noqa: E402
from helpers.ddpm import DDPM, GaussianNoising, sample_prince  # noqa: E402
from helpers.ema import EMA  # noqa: E402

TRAIN_BATCH = 128
SAMPLE_BATCH = hardware.SAMPLING_BATCH["cuda"]  # the sampling batch on a GPU (hardware.sampling_batch)
RECON_BATCH = 1000  # cold.reconstructions


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


def timed(step, dev: torch.device, seconds: float, warmup: int = 3) -> float:
    """Seconds per call of step(), measured over about `seconds` after `warmup` calls."""
    for _ in range(warmup):
        step()
    sync(dev)
    calls, spent, block = 0, 0.0, 1
    while spent < seconds:
        t0 = time.perf_counter()
        for _ in range(block):
            step()
        sync(dev)
        spent += time.perf_counter() - t0
        calls += block
        block = min(block * 2, 256)
    return spent / calls


# --------------------------------------------------------------------------- (b) Inception
def inception_check(dev: torch.device) -> dict:
    from helpers import inception
    from helpers.data import test_images, to_unit_range

    try:
        net_dev = inception.load_inception(dev, log=lambda *_: None)
        net_cpu = net_dev if dev.type == "cpu" else inception.load_inception("cpu", log=lambda *_: None)
    except Exception as exc:  # no weights here: say so, go on with the speed probe
        print(f"(b) Inception-v3: not checked ({type(exc).__name__}: {exc})")
        return {"error": str(exc)}
    x = to_unit_range(test_images(8))
    on_dev = net_dev(x).cpu()
    on_cpu = net_cpu(x).cpu()
    diff = (on_dev - on_cpu).abs().max().item()
    scale = on_cpu.abs().max().item()
    batch = torch.rand(net_dev.batch_size, 1, 28, 28)
    per_image = timed(lambda: net_dev(batch), dev, 1.0, warmup=1) / len(batch)
    print(
        f"(b) Inception-v3 features of 8 test digits: {dev} vs cpu, largest difference {diff:.3g} "
        f"(largest feature {scale:.3g}; finite on both: {bool(torch.isfinite(on_dev).all())}); "
        f"{1 / per_image:,.0f} images/s on {dev} at batch {net_dev.batch_size}"
    )
    return {"max_abs_diff": diff, "max_feature": scale, "seconds_per_image": per_image}


# --------------------------------------------------------------------------- (c) speed
def probe_models(dev: torch.device, precision: str, seconds: float, jobs: int) -> dict:
    ac = lambda: hardware.autocast(dev.type, precision)  # noqa: E731
    gen = torch.Generator(device=dev).manual_seed(0)
    out = {}

    def train_probe(model, ema: bool, batch: int = TRAIN_BATCH) -> float:
        model.train()
        opt = training.adam(model, 1e-4, dev)
        scaler = hardware.grad_scaler(dev.type, precision)
        avg = EMA(model, 0.9999) if ema else None
        data = torch.rand(batch * 8, 1, 28, 28, device=dev) - 0.5
        i = [0]

        def step():
            x = data[(i[0] % 8) * batch : (i[0] % 8 + 1) * batch]
            i[0] += 1
            training.train_step(model, opt, x, gen, ac(), scaler, avg)

        return timed(step, dev, seconds)

    torch.manual_seed(0)
    ddpm = DDPM(config.DDPM_PRESETS["default"]).to(dev)
    out["ddpm_train_ema"] = train_probe(ddpm, ema=True)
    out["ddpm_train"] = train_probe(ddpm, ema=False)
    out["ddpm_train_x_jobs"] = train_probe(ddpm, ema=False, batch=TRAIN_BATCH * jobs) if jobs > 1 else out["ddpm_train"]
    ddpm.eval()
    k = 10  # sampler steps per timed call; the per-step cost does not depend on T
    short = GaussianNoising(k, *ddpm.cfg.betas).to(dev)

    def ddpm_sampler(batch):
        z = torch.randn(batch, 1, 28, 28, device=dev)

        def step():
            with torch.no_grad(), ac():
                sample_prince(short, ddpm.eps, z, gen)

        return timed(step, dev, seconds / 2, warmup=1) / k

    out["ddpm_sample_500"] = ddpm_sampler(SAMPLE_BATCH)
    out["ddpm_sample_16"] = ddpm_sampler(16)

    torch.manual_seed(0)
    cold = ColdDiffusion(config.COLD_PRESETS["columns"]).to(dev)
    out["cold_train"] = train_probe(cold, ema=False)
    cold.eval()

    def cold_sampler(batch, steps=4):
        x = torch.rand(batch, 1, 28, 28, device=dev) - 0.5
        z = cold.degradation.degrade(x, steps)

        def step():
            with torch.no_grad(), ac():
                cold.sample_from(z, "algorithm2", start=steps)

        return timed(step, dev, seconds / 2, warmup=1) / steps

    out["cold_sample_500"] = cold_sampler(SAMPLE_BATCH)
    out["cold_sample_16"] = cold_sampler(16)
    out["cold_sample_1000"] = cold_sampler(RECON_BATCH)
    return out


def probe_metrics(dev: torch.device, n_epoch: int) -> dict:
    """Seconds of metrics.evaluate (classifier features on the device, statistics on the CPU) at the
    per-epoch size, and with the bootstrap of the final numbers at 2,000 (scaled linearly to 10,000)."""
    from helpers import metrics

    quiet = dict(strict_range=False, device=dev, log=lambda *_: None)
    x = torch.rand(max(n_epoch, 2000), 1, 28, 28) - 0.5
    metrics.evaluate(x[:n_epoch], "test", ("classifier",), **quiet)  # reference features, cached
    t0 = time.perf_counter()
    metrics.evaluate(x[:n_epoch], "test", ("classifier",), **quiet)
    per_epoch = time.perf_counter() - t0
    metrics.evaluate(x[:2000], "test", ("classifier",), n_bootstrap=20, **quiet)
    t0 = time.perf_counter()
    metrics.evaluate(x[:2000], "test", ("classifier",), n_bootstrap=20, **quiet)
    boot2000 = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics.evaluate(x[:2000], "test", ("classifier",), **quiet)
    plain2000 = time.perf_counter() - t0
    return {"evaluate_epoch": per_epoch, "evaluate_2000_bootstrap": boot2000, "evaluate_2000": plain2000}


# --------------------------------------------------------------------------- prediction
def predict(t: dict, inc_per_image: float | None, prof: config.Profile) -> list[dict]:
    """Per run of the study: a list of (what, count, unit seconds) terms."""
    rows = []
    batches = lambda n, b: math.ceil(n / b)  # noqa: E731
    eval_n = len(prof.eval_epochs)
    sample_n = len(prof.sample_epochs)
    final_b = batches(prof.final_samples, SAMPLE_BATCH)
    eval_b = batches(prof.eval_samples, SAMPLE_BATCH)
    scale_final = prof.final_samples / 2000
    final_metrics = t["evaluate_2000_bootstrap"] * scale_final
    inc = prof.inception_samples * inc_per_image if inc_per_image else 0.0
    ddim_n = batches(prof.ddim_samples, SAMPLE_BATCH)
    for r in study.runs(prof.name):
        epochs, limit = study.epochs_and_limit(prof, r.budget)
        n_train = limit or config.MNIST_TRAIN_SIZE
        cfg = (config.DDPM_PRESETS if r.kind == "ddpm" else config.COLD_PRESETS)[r.preset]
        T = cfg.T
        steps = epochs * batches(n_train, cfg.batch_size)
        weights = 2 if r.ema else 1  # raw and EMA weights are both evaluated
        terms = []
        if r.kind == "ddpm":
            terms.append(("train steps", steps, t["ddpm_train_ema" if r.ema else "ddpm_train"]))
            terms.append(
                (
                    f"per-epoch eval sampler steps (batch {SAMPLE_BATCH})",
                    weights * eval_n * eval_b * T,
                    t["ddpm_sample_500"],
                )
            )
            terms.append(("grid sampler steps (batch 16)", sample_n * T, t["ddpm_sample_16"]))
            terms.append((f"final sampler steps (batch {SAMPLE_BATCH})", weights * final_b * T, t["ddpm_sample_500"]))
            if r.ema:  # the DDIM sweep: Prince's sampler and DDIM (eta 0 and 1) on ddim_samples
                ddim_steps = sum(s for s in prof.ddim_steps if s <= T) * 2
                terms.append(
                    (
                        f"DDIM sweep sampler steps (batch {SAMPLE_BATCH})",
                        ddim_n * (T + ddim_steps),
                        t["ddpm_sample_500"],
                    )
                )
                terms.append(
                    (
                        "DDIM sweep scores",
                        1 + 2 * len(prof.ddim_steps),
                        t["evaluate_2000_bootstrap"] * prof.ddim_samples / 2000,
                    )
                )
        else:
            sample = t["cold_sample_500"]
            terms.append(("train steps", steps, t["cold_train"]))
            terms.append((f"per-epoch eval sampler steps (batch {SAMPLE_BATCH})", eval_n * eval_b * T, sample))
            terms.append(("grid sampler steps (batch 16)", sample_n * T, t["cold_sample_16"]))
            terms.append((f"final sampler steps (batch {SAMPLE_BATCH})", final_b * T, sample))
            terms.append(
                (
                    "reconstruction steps (batch 1000)",
                    batches(prof.final_samples, RECON_BATCH) * (2 * T + 1),
                    t["cold_sample_1000"],
                )
            )
            terms.append(("reconstruction FIDs (4 sets)", 4, t["evaluate_2000"] * prof.final_samples / 2000))
        terms.append(("per-epoch metrics (CPU statistics)", weights * eval_n, t["evaluate_epoch"]))
        terms.append(("final metrics with bootstrap", weights, final_metrics))
        if inc:
            terms.append((f"Inception FID features ({prof.inception_samples} images)", weights, inc))
        rows.append({"run": f"{r.kind} {r.preset}", "T": T, "terms": terms, "seconds": sum(c * s for _, c, s in terms)})
    return rows


def hms(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600} h {s % 3600 // 60:02d} min" if s >= 3600 else f"{s // 60} min {s % 60:02d} s"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", choices=hardware.DEVICE_CHOICES)
    ap.add_argument("--precision", default="auto", choices=config.PRECISION_CHOICES)
    ap.add_argument("--seconds", type=float, default=3.0, help="measuring time of each training probe")
    ap.add_argument("--jobs", type=int, default=len(study.runs("full")), help="concurrent jobs to predict for")
    ap.add_argument("--json", type=Path, help="also write the measurements and the prediction here")
    args = ap.parse_args(argv)

    dev = hardware.pick_device(args.device)
    hardware.configure(dev)
    caps = hardware.capabilities()
    precision, why = hardware.choose_precision(args.precision, dev.type)
    print(f"(a) device {dev}; {json.dumps(caps)}")
    print(f"    precision for {args.precision!r}: {precision} ({why})")
    inc = inception_check(dev)
    print(f"(c) speed probes on {dev} in {precision}, about {args.seconds:g} s each ...", flush=True)
    t = probe_models(dev, precision, args.seconds, args.jobs)
    prof = config.profile("full")
    t.update(probe_metrics(dev, prof.eval_samples))
    print("    measured (seconds per step or per call):")
    for k, v in t.items():
        rate = f"{1 / v:10.1f} per s" if v > 0 else ""
        print(f"      {k:<28}{v * 1000:10.3f} ms  {rate}")
    rows = predict(t, inc.get("seconds_per_image"), prof)
    print(
        f"\npredicted time of profile 'full' ({prof.epochs} epochs on {prof.train_limit or 60000} images, "
        f"eval at {len(prof.eval_epochs)} epochs on {prof.eval_samples} samples, {prof.final_samples} final "
        f"samples, DDIM S = {list(prof.ddim_steps)} on {prof.ddim_samples}), {dev}, {precision}, one job:"
    )
    for r in rows:
        print(f"  {r['run']} (T = {r['T']}): {hms(r['seconds'])}")
        for what, count, unit in r["terms"]:
            print(f"      {what:<46}{count:>9,} x {unit * 1000:10.3f} ms = {count * unit:10.1f} s")
    total = sum(r["seconds"] for r in rows)
    longest = max(r["seconds"] for r in rows)
    print(f"  all {len(rows)} runs one after the other: {total:,.0f} s = {hms(total)}")
    # N jobs share the device: their throughput is measured by one training step at N times the batch.
    jobs = args.jobs
    speedup = min(jobs, jobs * t["ddpm_train"] / t["ddpm_train_x_jobs"]) if jobs > 1 else 1.0
    wall = max(longest, total / speedup)
    print(
        f"  {jobs} concurrent jobs: one training step at batch {TRAIN_BATCH * jobs} takes "
        f"{t['ddpm_train_x_jobs'] * 1000:.1f} ms against {jobs} x {t['ddpm_train'] * 1000:.1f} ms, so the device "
        f"serves {jobs} jobs about {speedup:.2f}x faster than one after another: max(longest run "
        f"{hms(longest)}, {total:,.0f} s / {speedup:.2f}) = {wall:,.0f} s = {hms(wall)} "
        "(an estimate: the jobs' CPU-side metrics share the cores too)"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "device": str(dev),
                    "precision": precision,
                    "reason": why,
                    "capabilities": caps,
                    "inception": inc,
                    "measured": t,
                    "runs": rows,
                    "total_one_job": total,
                    "jobs": jobs,
                    "speedup": speedup,
                    "wall_jobs": wall,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
