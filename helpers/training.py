"""The training engine shared by every model in the study.

A model is any nn.Module with `loss(x, generator) -> scalar` and `sample(n, generator) -> images`.
The engine owns everything around it: seeded shuffling, the optimiser, progress bars, a run folder
keyed by the hash of the resolved configuration and of the code, atomic per-epoch checkpoints that
let an interrupted run resume bit-for-bit on the CPU, a lock against two processes training the same
run, and a clear error when the loss stops being finite.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import fcntl
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from . import config

CHECKPOINTS_KEPT = 2


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left in place."""


class CheckpointError(RuntimeError):
    """A checkpoint failed its checksum or does not belong to the run."""


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class TrainSettings:
    """How a model is trained; every field but the ones in NOT_HASHED keys the run cache."""

    epochs: int
    seed: int = 0
    train_limit: int | None = None
    sample_epochs: tuple[int, ...] = ()
    n_grid: int = 16
    bf16: bool = False
    channels_last: bool = False
    eval_epochs: tuple[int, ...] = ()
    eval_key: str = ""  # names what the per-epoch evaluation computes (empty: none)

    def __post_init__(self) -> None:
        for name in ("sample_epochs", "eval_epochs"):
            value = getattr(self, name)
            object.__setattr__(self, name, tuple(value) if isinstance(value, list) else value)
        config.check_int("epochs", self.epochs, 0)
        config.check_int("seed", self.seed, 0)
        if self.train_limit is not None:
            config.check_int("train_limit", self.train_limit, 1)
        config.check_int("n_grid", self.n_grid, 1)
        for name in ("bf16", "channels_last"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} is not allowed; expected True or False")
        for name in ("sample_epochs", "eval_epochs"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(
                    isinstance(e, int) and not isinstance(e, bool) and 1 <= e for e in value):
                raise ValueError(f"{name}={value!r} is not allowed; expected a tuple of epochs >= 1")

    @classmethod
    def from_profile(cls, prof: config.Profile, seed: int = 0, **overrides: Any) -> "TrainSettings":
        base = dict(epochs=prof.epochs, seed=seed, train_limit=prof.train_limit,
                    sample_epochs=tuple(e for e in prof.sample_epochs if e <= prof.epochs),
                    n_grid=prof.n_grid)
        base.update(overrides)
        return cls(**base)


def code_version(modules: tuple[str, ...] = ("models", "ddpm", "training")) -> str:
    """Hash of the syntax trees of the modules that decide a run's result.

    Comments and formatting do not change it; any change to the code does.
    """
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in sorted(modules):
        tree = ast.parse((here / f"{name}.py").read_text())
        h.update(name.encode() + ast.dump(tree).encode())
    return h.hexdigest()[:16]


def run_key(kind: str, model_config: dict, settings: TrainSettings, code: str) -> str:
    payload = {"kind": kind, "model": model_config, "train": dataclasses.asdict(settings), "code": code}
    text = json.dumps(payload, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# --------------------------------------------------------------------------- run folder I/O
def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename over `path`.

    A failure at any point leaves the previous `path` untouched and removes the temporary file.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _ckpt_path(run_dir: Path, epoch: int) -> Path:
    return run_dir / f"ckpt-{epoch:04d}.pt"


def save_checkpoint(run_dir: Path, epoch: int, payload: dict) -> Path:
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    path = _ckpt_path(run_dir, epoch)
    atomic_write_bytes(path, data)
    atomic_write_bytes(path.with_suffix(".sha256"), hashlib.sha256(data).hexdigest().encode())
    for old in sorted(run_dir.glob("ckpt-*.pt"))[:-CHECKPOINTS_KEPT]:
        old.with_suffix(".sha256").unlink(missing_ok=True)
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, key: str) -> dict:
    """Verify the checksum and the run key, then load with torch's safe (weights-only) loader."""
    sidecar = path.with_suffix(".sha256")
    if not sidecar.is_file():
        raise CheckpointError(f"{path} has no checksum file {sidecar.name}")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sidecar.read_text().strip():
        raise CheckpointError(f"{path} fails its SHA-256 check (file damaged or cut short)")
    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if payload.get("key") != key:
        raise CheckpointError(f"{path} belongs to run {payload.get('key')!r}, not {key!r}")
    return payload


def latest_checkpoint(run_dir: Path, key: str, log: Callable[[str], None] = print) -> dict | None:
    """The newest checkpoint that passes its checks; damaged ones are reported and skipped."""
    for path in sorted(run_dir.glob("ckpt-*.pt"), reverse=True):
        try:
            return load_checkpoint(path, key)
        except CheckpointError as exc:
            log(f"ignoring checkpoint: {exc}")
    return None


@contextlib.contextmanager
def file_lock(lock_path: Path, what: str, log: Callable[[str], None] = print):
    """Exclusive lock on `lock_path`: a second process waits until the first is done."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another process is working on {what}; waiting for it to finish")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_lock(run_dir: Path, log: Callable[[str], None] = print):
    """Lock on a run folder, held while the run trains."""
    return file_lock(run_dir / ".lock", f"training {run_dir.name}", log)


# --------------------------------------------------------------------------- RNG state
def _rng_state(gen: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "train": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(gen: torch.Generator, state: dict) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["train"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- the engine
@dataclass
class Run:
    """A trained (or cached) run: the model at its last epoch and everything logged on the way."""

    dir: Path
    key: str
    model: nn.Module
    settings: TrainSettings
    logs: dict = field(default_factory=dict)
    cached: bool = False

    @property
    def iter_loss(self) -> list[float]:
        return self.logs["iter_loss"]

    @property
    def epoch_loss(self) -> list[float]:
        return self.logs["epoch_loss"]

    @property
    def samples(self) -> dict[int, torch.Tensor]:
        return self.logs["samples"]

    @property
    def metrics(self) -> dict[int, dict]:
        return self.logs["metrics"]


def _empty_logs() -> dict:
    return {"iter_loss": [], "epoch_loss": [], "epoch_seconds": [], "samples": {}, "metrics": {}}


EvalFn = Callable[[nn.Module, int], dict]


def train(build: Callable[[], nn.Module], model_config: dict, settings: TrainSettings, *,
          kind: str, label: str = "", code_modules: tuple[str, ...] = ("models", "ddpm", "training"),
          data: torch.Tensor | None = None, runs_dir: Path | None = None, device: str = "auto",
          evaluate: EvalFn | None = None, progress: bool = True,
          on_step: Callable[[int, int], None] | None = None,
          log: Callable[[str], None] = print) -> Run:
    """Train `build()` under `settings`, or return the finished run from the cache.

    `model_config` is the JSON-able description of what `build` makes; with `kind`, the settings and
    the code version it keys the run folder. `evaluate(model, epoch)` runs at `settings.eval_epochs`
    and its result is stored with the run (its identity must be in `settings.eval_key`).
    `on_step(epoch, step)` is called after every optimiser step (tests use it to interrupt a run).
    """
    if settings.eval_epochs and evaluate is None:
        raise ValueError("settings.eval_epochs is set but no evaluate function was given")
    code = code_version(code_modules)
    key = run_key(kind, model_config, settings, code)
    run_dir = Path(runs_dir or config.RUNS_DIR) / f"{kind}{'-' + label if label else ''}-{key}"
    dev = pick_device(device)

    with run_lock(run_dir, log):
        meta = {"kind": kind, "label": label, "key": key, "code": code, "model": model_config,
                "train": dataclasses.asdict(settings)}
        atomic_write_bytes(run_dir / "run.json", json.dumps(meta, indent=2, default=list).encode())

        torch.manual_seed(settings.seed)
        model = build().to(dev)
        if settings.channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), lr=model_config["lr"])
        gen = torch.Generator(device=dev).manual_seed(settings.seed)
        logs, start = _empty_logs(), 0

        ckpt = latest_checkpoint(run_dir, key, log)
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optim"])
            _set_rng_state(gen, ckpt["rng"])
            logs, start = ckpt["logs"], ckpt["epoch"]
            if start >= settings.epochs:
                return Run(run_dir, key, model.eval(), settings, logs, cached=True)
            log(f"resuming {run_dir.name} after epoch {start} of {settings.epochs}")

        if data is None:
            from .data import training_images
            data = training_images(settings.train_limit)
        elif settings.train_limit is not None:
            data = data[:settings.train_limit]
        data = data.to(dev)
        if settings.channels_last:
            data = data.contiguous(memory_format=torch.channels_last)

        _fit(model, opt, gen, data, settings, start, logs, run_dir, key, dev, evaluate,
             progress, on_step, label or kind)
        return Run(run_dir, key, model.eval(), settings, logs)


def _fit(model, opt, gen, data, settings: TrainSettings, start: int, logs: dict, run_dir: Path,
         key: str, dev: torch.device, evaluate, progress: bool, on_step, desc: str) -> None:
    from tqdm.auto import tqdm

    n, bs = data.shape[0], model.cfg.batch_size
    steps = (n + bs - 1) // bs
    sync_every = 1 if dev.type == "cpu" else 25  # how often losses are copied to the host
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=settings.bf16)
    epochs_bar = tqdm(range(start + 1, settings.epochs + 1), desc=desc, unit="epoch",
                      initial=start, total=settings.epochs, disable=not progress)
    for epoch in epochs_bar:
        t0 = time.perf_counter()
        model.train()
        shuffle = torch.Generator().manual_seed(settings.seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=shuffle).to(dev)
        losses = torch.empty(steps, device=dev)
        steps_bar = tqdm(range(steps), desc=f"epoch {epoch}", unit="step", leave=False,
                         disable=not progress)
        checked = 0
        for step in steps_bar:
            x = data[order[step * bs:(step + 1) * bs]]
            with autocast:
                loss = model.loss(x, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses[step] = loss.detach()
            if (step + 1) % sync_every == 0 or step + 1 == steps:
                chunk = losses[checked:step + 1].cpu()
                bad = (~torch.isfinite(chunk)).nonzero()
                if len(bad):
                    at = checked + int(bad[0]) + 1
                    raise TrainingDiverged(
                        f"loss became {chunk[int(bad[0])].item()} at epoch {epoch}, step {at} of "
                        f"{steps}; the last good checkpoint (epoch {epoch - 1}, 0 meaning none) is kept "
                        f"in {run_dir}")
                checked = step + 1
                steps_bar.set_postfix(loss=f"{chunk[-1].item():.4f}", refresh=False)
            if on_step is not None:
                on_step(epoch, step + 1)
        steps_bar.close()
        epoch_losses = losses.cpu().tolist()
        logs["iter_loss"].extend(epoch_losses)
        logs["epoch_loss"].append(sum(epoch_losses) / len(epoch_losses))
        model.eval()
        if epoch in settings.sample_epochs:
            grid_gen = torch.Generator(device=dev).manual_seed(settings.seed + 1)
            logs["samples"][epoch] = model.sample(settings.n_grid, generator=grid_gen).float().cpu()
        if epoch in settings.eval_epochs:
            logs["metrics"][epoch] = evaluate(model, epoch)
        logs["epoch_seconds"].append(time.perf_counter() - t0)
        save_checkpoint(run_dir, epoch, {
            "key": key, "epoch": epoch, "model": model.state_dict(), "optim": opt.state_dict(),
            "rng": _rng_state(gen), "logs": logs})
        epochs_bar.set_postfix(loss=f"{logs['epoch_loss'][-1]:.4f}")
    epochs_bar.close()
