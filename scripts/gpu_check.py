"""Check a machine before the full profile runs on it (the first command on a lent GPU: a few minutes).

    python scripts/gpu_check.py [--device auto] [--seconds 3] [--json PATH]

(a) the machine's capabilities and the precision "auto" picks, with the reason;
(b) Inception-v3 FID features of a few MNIST digits on the device and on the CPU, and their largest
    difference (the network is first used after all training, so a device problem shows here first);
(c) speed: training steps/s of the default DDPM, the U-Net DDPM and the main cold model at batch 128,
    eager and as a replayed CUDA graph (training.StepRunner), and the losses of 50 graphed steps
    against 50 eager ones from the same start; sampler steps/s at batches 16 and the device's sampling
    batch, and at 1,000 / 5,000 / 10,000; the time of the CPU-side metrics;
(d) the cost model's prediction of the full profile (helpers/cost.py) at the rates measured here.

Runs on any device, the CPU included (no graph there: the eager rows only). Nothing is written except
the optional JSON; the reference features it needs are cached like any metric's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from helpers import config, hardware, training  # noqa: E402
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


def probe_graphs(dev: torch.device, precision: str, seconds: float, steps: int = 50) -> dict:
    """Training-step time eager and graphed (training.StepRunner), per network, and the largest
    difference between the losses of `steps` graphed and `steps` eager steps from the same start."""
    out = {}
    for name, cfg in (("ddpm", config.DDPM_PRESETS["default"]), ("unet", config.DDPM_PRESETS["unet"])):
        data = torch.rand(TRAIN_BATCH * 8, 1, 28, 28, device=dev, generator=None) - 0.5
        losses = {}
        for graphed in (False, True):
            torch.manual_seed(0)
            model = DDPM(cfg).to(dev).train()
            opt = training.adam(model, 2e-4, dev)
            gen = torch.Generator(device=dev).manual_seed(0)
            runner = training.StepRunner(
                model, opt, gen, hardware.autocast(dev.type, precision), hardware.grad_scaler(dev.type, precision),
                None, TRAIN_BATCH, dev, precision, print,
            )  # fmt: skip
            if not graphed:
                runner.capture = False
            elif not runner.capture:
                break  # no graph on this device or in this precision
            got = [runner(data[(i % 8) * TRAIN_BATCH : (i % 8 + 1) * TRAIN_BATCH]).clone() for i in range(steps)]
            losses[graphed] = torch.stack(got).float().cpu()
            i = [steps]

            def step(runner=runner, i=i, data=data):
                runner(data[(i[0] % 8) * TRAIN_BATCH : (i[0] % 8 + 1) * TRAIN_BATCH])
                i[0] += 1

            out[f"{name}_train_{'graphed' if graphed else 'eager'}"] = timed(step, dev, seconds)
            out[f"{name}_graph"] = runner.reason
        if True in losses:
            out[f"{name}_graph_loss_max_abs_diff"] = float((losses[True] - losses[False]).abs().max())
    return out


def probe_large_batches(dev: torch.device, precision: str, seconds: float) -> dict:
    """Seconds per sampler step of the default DDPM at batches 1,000, 5,000 and 10,000."""
    torch.manual_seed(0)
    ddpm = DDPM(config.DDPM_PRESETS["default"]).to(dev).eval()
    k = 5
    short = GaussianNoising(k, *ddpm.cfg.betas).to(dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    out = {}
    for batch in (1000, 5000, 10000):
        z = torch.randn(batch, 1, 28, 28, device=dev)

        def step(z=z):
            with torch.no_grad(), hardware.autocast(dev.type, precision):
                sample_prince(short, ddpm.eps, z, gen)

        out[f"ddpm_sample_{batch}"] = timed(step, dev, seconds / 2, warmup=1) / k
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
    metrics.evaluate(x[:2000], "test", ("classifier",), protocol=metrics.Protocol(n_bootstrap=20), **quiet)
    t0 = time.perf_counter()
    metrics.evaluate(x[:2000], "test", ("classifier",), protocol=metrics.Protocol(n_bootstrap=20), **quiet)
    boot2000 = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics.evaluate(x[:2000], "test", ("classifier",), **quiet)
    plain2000 = time.perf_counter() - t0
    return {"evaluate_epoch": per_epoch, "evaluate_2000_bootstrap": boot2000, "evaluate_2000": plain2000}


# --------------------------------------------------------------------------- prediction
def hms(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600} h {s % 3600 // 60:02d} min" if s >= 3600 else f"{s // 60} min {s % 60:02d} s"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", choices=hardware.DEVICE_CHOICES)
    ap.add_argument("--precision", default="auto", choices=config.PRECISION_CHOICES)
    ap.add_argument("--seconds", type=float, default=3.0, help="measuring time of each training probe")
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
    t = probe_models(dev, precision, args.seconds, 1)
    t.update(probe_graphs(dev, precision, args.seconds))
    t.update(probe_large_batches(dev, precision, args.seconds))
    prof = config.profile("full")
    t.update(probe_metrics(dev, prof.eval_samples))
    print("    measured (seconds per step or per call):")
    for k, v in t.items():
        if isinstance(v, str):
            print(f"      {k:<28}{v}")
            continue
        rate = f"{1 / v:10.1f} per s" if v > 0 else ""
        print(f"      {k:<28}{v * 1000:10.3f} ms  {rate}")
    from helpers import cost

    rates = cost.rates_from_gpu_check(
        {"ddpm_train": t["ddpm_train"], "ddpm_sample_500": t["ddpm_sample_500"]},
        inc.get("seconds_per_image") or float("inf"),
        device=dev.type if dev.type in hardware.SAMPLING_BATCH else "cpu",
        precision=precision,
    )
    if t.get("ddpm_train_graphed"):  # the engine replays graphs where it can: predict with those rates
        rates["train/cnn"] = TRAIN_BATCH / t["ddpm_train_graphed"]
        rates["train/unet"] = TRAIN_BATCH / t["unet_train_graphed"]
    else:
        rates["train/unet"] = TRAIN_BATCH / t["unet_train_eager"]
    rates["source"] = f"measured by scripts/gpu_check.py on {dev} ({precision}); " + rates.get("source", "")
    prediction = cost.predict("full", rates)
    print(f"\n(d) the cost model's prediction of 'full' at these rates: {hms(prediction.seconds)} (one job)")
    for nb, sec in prediction.by_notebook().items():
        print(f"      {nb:<24}{hms(sec)}")
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
                    "rates": rates,
                    "predicted_seconds": prediction.seconds,
                    "predicted_by_notebook": prediction.by_notebook(),
                },
                indent=1,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
