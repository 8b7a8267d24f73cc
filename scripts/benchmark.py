"""The study's speed, measured side by side in one run: prints one table (no assertion on time).

    .venv/bin/python scripts/benchmark.py [--steps 40] [--device auto] [--compile] [--profile quick]

Rows, every one measured in this process, one after the other (run it on an otherwise idle machine):
- training images/s of the default DDPM (batch 128): a reference loop written the way the course's
  starter does it (torchvision MNIST dataset, ToTensor + Normalize, DataLoader, fp32) against the
  engine (helpers.training.fit) with each of its options: fp32, channels_last, bf16 autocast, and
  with --compile torch.compile (its compilation time is printed apart);
- DDPM sampling (network evaluations per second, img-steps/s): the starter's way (batch 16, schedule
  recomputed every step) against the package's sampler at batch 16, 64 and 256, fp32 and bf16, each the
  fastest of three timed calls after a warm-up;
- the row/column averaging against a per-image, per-row loop;
- the share of evaluation in one epoch at the profile's settings, from the rates above;
- peak resident memory, and the machine: CPU flags (AVX2, AVX-512 BF16, AMX), threads, GPU.
bf16 rows on hardware without native bf16 are measured too: they show why it is never the default there.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import config, data, hardware, training  # noqa: E402
from helpers.ddpm import DDPM  # noqa: E402
from helpers.degradations import RowColumnAveraging, degrade_loop  # noqa: E402
from helpers.runs import KINDS  # noqa: E402

BATCH = 128
ROWS: list[tuple[str, str, str]] = []  # (what, value, note)


def add(what: str, value: str, note: str = "") -> None:
    ROWS.append((what, value, note))
    print(f"  {what}: {value} {note}", flush=True)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


# --------------------------------------------------------------------------- training
def reference_training(steps: int, dev: torch.device) -> float:
    """The starter's loop: a torchvision dataset with per-item transforms and a DataLoader."""
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (1.0,))])
    ds = datasets.MNIST(str(config.DATA_DIR), train=True, download=False, transform=tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=0, drop_last=True)
    torch.manual_seed(0)
    model = DDPM(config.ddpm_preset("default")).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    it = iter(loader)
    t0, seen = None, 0
    for i in range(steps + 2):  # two warm-up steps
        if i == 2:
            sync(dev)
            t0, seen = time.perf_counter(), 0
        x, _ = next(it)
        x = x.to(dev)
        loss = model.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()  # the starter logs every step
        seen += x.shape[0]
    sync(dev)
    return seen / (time.perf_counter() - t0)


def engine_training(steps: int, dev: torch.device, **options) -> tuple[float, float]:
    """Images per second of the engine on `steps` batches (one epoch of steps * 128 images, in a
    temporary runs folder, checkpoint included), and the seconds of a first, untimed warm-up epoch."""
    images = data.training_images(steps * BATCH)
    kind = KINDS["ddpm"]
    cfg = config.ddpm_preset("default")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        training.fit(
            kind,
            cfg,
            training.TrainSettings(epochs=1, train_limit=4 * BATCH, **options),
            data=images,
            runs_dir=Path(tmp),
            device=str(dev.type),
            progress=False,
            log=lambda *_: None,
        )
        warm = time.perf_counter() - t0
        sync(dev)
        t0 = time.perf_counter()
        training.fit(
            kind,
            cfg,
            training.TrainSettings(epochs=1, seed=1, **options),
            data=images,
            runs_dir=Path(tmp),
            device=str(dev.type),
            progress=False,
            log=lambda *_: None,
        )
        sync(dev)
        return images.shape[0] / (time.perf_counter() - t0), warm


def compiled_training(steps: int, dev: torch.device) -> tuple[float, float]:
    """torch.compile of the network in the engine's own step (outside the engine: it is no option of it)."""
    torch.manual_seed(0)
    model = DDPM(config.ddpm_preset("default")).to(dev)
    model.net = torch.compile(model.net)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    x_all = data.training_images(steps * BATCH).to(dev)
    t0 = time.perf_counter()
    for i in range(2):
        loss = model.loss(x_all[i * BATCH : (i + 1) * BATCH])
        opt.zero_grad()
        loss.backward()
        opt.step()
    sync(dev)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(steps):
        loss = model.loss(x_all[i * BATCH : (i + 1) * BATCH])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(dev)
    return steps * BATCH / (time.perf_counter() - t0), compile_s


# --------------------------------------------------------------------------- sampling
def reference_sampling(model: DDPM, steps: int, batch: int) -> float:
    """The starter's sampler: the schedule's products recomputed at every step."""
    dev = next(model.parameters()).device
    T = model.T
    beta = torch.linspace(1e-4, 0.02, T + 1, device=dev)
    z = torch.randn(batch, 1, 28, 28, device=dev)
    with torch.no_grad():
        for t in range(T, T - steps, -1):
            alpha_t = torch.prod(1 - beta[1 : t + 1])
            eps = model.net(z, torch.full((batch, 1), t / T, device=dev))
            z = (z - beta[t] / torch.sqrt(1 - alpha_t) * eps) / torch.sqrt(1 - beta[t])
            z = z + torch.sqrt(beta[t]) * torch.randn_like(z)
    sync(dev)
    return z


def package_sampling(model: DDPM, steps: int, batch: int, bf16: bool = False):
    """Our sampler (Prince 18.2 over every step) on a copy of the network with T = `steps`."""
    dev = next(model.parameters()).device
    short = DDPM(model.cfg.replace(T=steps)).to(dev)
    short.net.load_state_dict(model.net.state_dict())
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
        out = short.sample(batch, generator=torch.Generator(device=dev).manual_seed(0))
    sync(dev)
    return out


def rate(fn, work: int, repeats: int = 3) -> float:
    """work / the fastest of `repeats` timed calls, after one warm-up call."""
    return work / timed(fn, repeats)


def timed(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=40, help="training steps timed per row (batch 128)")
    ap.add_argument("--sample-steps", type=int, default=40, help="sampler steps timed per row")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile on a CPU)")
    ap.add_argument(
        "--profile",
        default="quick",
        choices=sorted(config.PROFILES),
        help="whose evaluation settings the evaluation share uses",
    )
    args = ap.parse_args()
    dev = hardware.pick_device(args.device)
    data.ensure_mnist(log=lambda *_: None)
    caps = hardware.capabilities()
    print(f"machine: {caps}", flush=True)
    print(f"precision chosen for 'auto': {hardware.choose_precision('auto', dev.type)}", flush=True)

    print("training, default DDPM, batch 128", flush=True)
    ref = reference_training(args.steps, dev)
    add("train: starter loop (DataLoader, fp32)", f"{ref:,.0f} img/s", "1.00x")
    fp32, _ = engine_training(args.steps, dev)
    add("train: engine fp32", f"{fp32:,.0f} img/s", f"{fp32 / ref:.2f}x")
    for name, opts in (("channels_last", {"channels_last": True}), ("bf16 autocast", {"precision": "bf16"})):
        v, _ = engine_training(args.steps, dev, **opts)
        add(f"train: engine {name}", f"{v:,.0f} img/s", f"{v / ref:.2f}x")
    if args.compile:
        v, compile_s = compiled_training(args.steps, dev)
        add("train: torch.compile", f"{v:,.0f} img/s", f"{v / ref:.2f}x after {compile_s:.0f} s of compilation")

    print("sampling, default DDPM network (img-steps/s: network evaluations per second)", flush=True)
    model = DDPM(config.ddpm_preset("default")).to(dev).eval()
    S = args.sample_steps
    ref16 = rate(lambda: reference_sampling(model, S, 16), 16 * S)
    add("sample: starter loop, batch 16", f"{ref16:,.0f} img-steps/s", "1.00x")
    ours = {}
    rule = hardware.sampling_batch(dev)
    # the batches around the rule's (helpers.hardware.sampling_batch), fp32 and bf16
    for bf16 in (False, True):
        for batch in (16, 64, 256):
            v = rate(lambda batch=batch, bf16=bf16: package_sampling(model, S, batch, bf16=bf16), batch * S)
            ours[(bf16, batch)] = v
            note = f"{v / ref16:.2f}x" + (" (the rule's batch)" if batch == rule else "")
            add(f"sample: package {'bf16' if bf16 else 'fp32'}, batch {batch}", f"{v:,.0f} img-steps/s", note)
    ours = ours[(False, 256)]
    T = model.T
    add("sample: one image with T = 1000, fp32 batch 256", f"{T / ours:.2f} s")

    print("degradation (columns, T = 28, batch 128)", flush=True)
    cfg = config.cold_preset("columns")
    op = RowColumnAveraging(cfg.axis, cfg.group, cfg.schedule, cfg.schedule_seed)
    x = data.training_images(BATCH)
    t = torch.randint(1, op.T + 1, (BATCH,), generator=torch.Generator().manual_seed(0))
    fast = timed(lambda: op.degrade(x, t), 30)
    slow = timed(lambda: degrade_loop(op, x, t), 2)
    add("degrade: per-image, per-row loop", f"{BATCH / slow:,.0f} img/s", "1.00x")
    add("degrade: vectorised", f"{BATCH / fast:,.0f} img/s", f"{slow / fast:,.0f}x")

    prof = config.profile(args.profile)
    n_train = prof.train_limit or config.MNIST_TRAIN_SIZE
    train_s = n_train / fp32
    eval_s = prof.eval_samples * T / ours  # the sampling of one evaluation dominates it
    if prof.ema_decay:
        eval_s *= 2  # the default DDPM scores its EMA weights too
    grid_s = prof.n_grid * T / ours
    add(
        f"epoch share of evaluation ({prof.name}: {n_train:,} images, {prof.eval_samples} samples"
        f"{' raw + EMA' if prof.ema_decay else ''}, grid {prof.n_grid})",
        f"{100 * (eval_s + grid_s) / (train_s + eval_s + grid_s):.0f} %",
        f"(train {train_s:.0f} s, evaluation {eval_s:.0f} s, grid {grid_s:.0f} s; from the fp32 rates above)",
    )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    add("peak resident memory", f"{rss:,.0f} MB")
    if dev.type == "cuda":
        add("peak GPU memory", f"{torch.cuda.max_memory_allocated() / 2**20:,.0f} MB")

    print()
    print("| what | value | relative |")
    print("|---|---|---|")
    for what, value, note in ROWS:
        print(f"| {what} | {value} | {note} |")
    flags = (
        ", ".join(f for f in ("avx2", "avx512_bf16", "amx_bf16") if caps.get(f)) or "none of AVX2 / AVX-512 BF16 / AMX"
    )
    print(
        f"\nmachine: {caps.get('gpu') or caps['cpu']}; CPU flags: {flags}; torch threads {caps['threads']} "
        f"of {caps['cores']} cores; torch {torch.__version__}"
    )
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
