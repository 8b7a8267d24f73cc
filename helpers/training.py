"""The training engine shared by every model in the study.

A model is any nn.Module with a class attribute `kind`, `loss(x, generator) -> scalar` and
`sample(n, generator) -> images`; a `ModelKind` says how to build one from its configuration and
the training data. What the engine is given - the model kind and configuration, the optimiser, the
settings, the data - keys a run folder together with the code of the package (helpers/store.py).
The engine owns everything around the model: seeded shuffling, the optimiser, an optional
exponential moving average of the weights, progress bars, atomic verified per-epoch checkpoints
that let an interrupted run resume bit for bit on the CPU (with the same number of threads), a lock
against two processes training the same run, and a clear error when the loss stops being finite.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import config, store
from .hardware import autocast as hardware_autocast
from .hardware import configure, grad_scaler, pick_device

CHECKPOINTS_KEPT = 2


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left in place."""


class TrainingStopped(RuntimeError):
    """Training stopped at an epoch boundary because its deadline passed; the checkpoint of that
    epoch is written, and the next call with the same inputs resumes from it."""


class CheckpointError(RuntimeError):
    """A checkpoint failed its checks, could not be loaded, or does not belong to the run."""


# --------------------------------------------------------------------------- what a run is given
@dataclass(frozen=True)
class ModelKind:
    """How to make a model of one kind: `build_fn(config, training_data or None) -> model`
    (default: `model_cls(config)`), and the kind's named configurations. The kind's name is the
    model class's own `kind`."""

    model_cls: type
    build_fn: Callable[[Any, torch.Tensor], nn.Module] | None = None
    presets: dict = field(default_factory=dict)  # name -> configuration (helpers.config)

    @property
    def name(self) -> str:
        return self.model_cls.kind

    def build(self, cfg: Any, data: torch.Tensor | None) -> nn.Module:
        """A new model; `data` is None when the weights will come from a checkpoint."""
        model = self.build_fn(cfg, data) if self.build_fn else self.model_cls(cfg)
        if getattr(model, "kind", None) != self.name:
            raise TypeError(f"building a {self.name!r} model returned a {type(model).__name__}")
        return model


@dataclass(frozen=True)
class StepConfig:
    """What one optimiser step is: Adam with learning rate `lr` on a batch of `batch_size` images."""

    lr: float
    batch_size: int

    def __post_init__(self) -> None:
        config.check_float("lr", self.lr, 0.0)
        config.check_int("batch_size", self.batch_size, 1, 65_536)

    @classmethod
    def of(cls, cfg: Any) -> StepConfig:
        """The step a preset names (its `lr` and `batch_size` fields)."""
        return cls(lr=cfg.lr, batch_size=cfg.batch_size)


@dataclass(frozen=True)
class TrainSettings:
    """How a model is trained; every field keys the run cache."""

    epochs: int
    seed: int = 0
    train_limit: int | None = None
    sample_epochs: tuple[int, ...] = ()
    n_grid: int = 16
    precision: str = "fp32"  # "bf16" / "fp16": autocast (fp16 with a gradient scaler; helpers.hardware)
    channels_last: bool = False
    eval_epochs: tuple[int, ...] = ()
    eval_key: str = ""  # names what the per-epoch evaluation computes (empty: none)
    ema_decay: float | None = None  # exponential moving average of the weights (None: off)
    ema_eval_epochs: tuple[int, ...] | None = None  # epochs at which the EMA is scored too (None: every eval epoch)

    def __post_init__(self) -> None:
        for name in ("sample_epochs", "eval_epochs"):
            value = getattr(self, name)
            object.__setattr__(self, name, tuple(value) if isinstance(value, list) else value)
        config.check_int("epochs", self.epochs, 0, config.MAX_EPOCHS)
        config.check_int("seed", self.seed, 0, config.MAX_SEED)
        if self.train_limit is not None:
            config.check_int("train_limit", self.train_limit, 1, config.MNIST_TRAIN_SIZE)
        config.check_int("n_grid", self.n_grid, 1, 1024)
        config.check_choice("precision", self.precision, config.PRECISIONS)
        config.check_bool("channels_last", self.channels_last)
        for name in ("sample_epochs", "eval_epochs"):
            config.check_epochs(name, getattr(self, name))
        if self.ema_decay is not None:
            config.check_float("ema_decay", self.ema_decay, 0.0, 1.0)
        if self.ema_eval_epochs is not None:
            object.__setattr__(self, "ema_eval_epochs", tuple(self.ema_eval_epochs))
            config.check_epochs("ema_eval_epochs", self.ema_eval_epochs)
            if not set(self.ema_eval_epochs) <= set(self.eval_epochs):
                raise ValueError(
                    f"ema_eval_epochs={self.ema_eval_epochs!r} is not allowed; expected epochs among "
                    f"eval_epochs={self.eval_epochs!r}"
                )


def data_identity(data: torch.Tensor | None, train_limit: int | None) -> dict:
    """What identifies the training data: the verified MNIST files and the subset, or the content
    hash of a tensor given explicitly."""
    if data is None:
        from .data import FILES_MD5

        return {"mnist": FILES_MD5, "train_limit": train_limit}
    if train_limit is not None:
        data = data[:train_limit]
    return {"tensor": store.tensor_hash(data)}


def run_code(kind: ModelKind) -> str:
    """The code that runs while a `kind` model trains: the engine, the model's own module and what
    they import from the package (networks, schedules, degradations, data loading, hardware rules),
    compared without comments or docstrings. Tables whose values are in the key (presets, profiles)
    and code that does not run in training (analyses, plotting, the report) are not part of it."""
    return store.code_hash(("training", kind.model_cls.__module__.rsplit(".", 1)[-1]))


def run_key(kind: str, model_config: dict, step: StepConfig, settings: TrainSettings, data_id: dict, code: str) -> str:
    """A run's key: the values that decide it and the code that runs while it trains."""
    return store.key_of(
        {
            "kind": kind,
            "model": model_config,
            "step": dataclasses.asdict(step),
            "train": dataclasses.asdict(settings),
            "data": data_id,
            "code": code,
        }
    )


# --------------------------------------------------------------------------- checkpoints
def _ckpt_path(run_dir: Path, epoch: int) -> Path:
    return run_dir / f"ckpt-{epoch:04d}.pt"


def save_checkpoint(run_dir: Path, epoch: int, payload: dict) -> Path:
    """Write the checkpoint of `epoch` (verified; refused if the safe loader could not read it back),
    then keep only the newest CHECKPOINTS_KEPT."""
    path = store.save_tensors(_ckpt_path(run_dir, epoch), payload)
    for old in sorted(run_dir.glob("ckpt-*.pt"))[:-CHECKPOINTS_KEPT]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, key: str) -> dict:
    """Verify the checksum, load with torch's safe loader, check the run key and the contents."""
    try:
        payload = store.load_tensors(path)
    except (store.CorruptFile, OSError) as exc:
        raise CheckpointError(str(exc)) from exc
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} does not hold a checkpoint")
    if payload.get("key") != key:
        raise CheckpointError(f"{path} belongs to run {payload.get('key')!r}, not {key!r}")
    missing = {"epoch", "model", "logs"} - set(payload)  # optim and rng: only to resume (_Job.restore)
    if missing:
        raise CheckpointError(f"{path} lacks {sorted(missing)}")
    return payload


def checkpoints(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("ckpt-*.pt"), reverse=True)


# --------------------------------------------------------------------------- RNG state
def _rng_state(gen: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "train": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(gen: torch.Generator | None, state: dict) -> None:
    """The global generators, and the training generator `gen` unless None."""
    torch.set_rng_state(state["torch"])
    if gen is not None:
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
    ema_model: nn.Module | None = None  # the model with the averaged weights, when ema_decay is set
    config: Any = None
    step: StepConfig | None = None

    @property
    def label(self) -> str:
        return self.logs.get("label", "")

    @property
    def sampling_batch(self) -> int:
        """Images per batch of the run's cached samples: the rule of the device it was trained on
        (helpers.hardware.sampling_batch), so a run loaded on another device keeps its samples' keys."""
        from .hardware import sampling_batch

        trained_on = self.logs.get("device")
        return sampling_batch(torch.device(trained_on)) if trained_on else sampling_batch_size(self.model)

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

    @property
    def metrics_ema(self) -> dict[int, dict]:
        return self.logs.get("metrics_ema", {})


def _empty_logs() -> dict:
    return {
        "iter_loss": [],
        "epoch_loss": [],
        "epoch_seconds": [],
        "train_seconds": [],
        "samples": {},
        "metrics": {},
        "metrics_ema": {},
        "threads": torch.get_num_threads(),
        "device": "",
        "label": "",
    }


EvalFn = Callable[[nn.Module, int], dict]


def find_run(
    kind: ModelKind,
    cfg: Any,
    step: StepConfig,
    settings: TrainSettings,
    *,
    label: str = "",
    data: torch.Tensor | None = None,
    runs_dir: Path | None = None,
) -> tuple[Path, str]:
    """(folder, key) of the run these inputs define (the folder may not exist yet)."""
    key = run_key(
        kind.name, dataclasses.asdict(cfg), step, settings, data_identity(data, settings.train_limit), run_code(kind)
    )
    return Path(runs_dir or config.RUNS_DIR) / f"{kind.name}{'-' + label if label else ''}-{key}", key


@dataclass
class _State:
    """What a checkpoint holds, live: the model, its EMA, the optimiser, the training generator,
    the logs and the last finished epoch."""

    model: nn.Module
    ema: Any
    opt: torch.optim.Optimizer
    gen: torch.Generator
    logs: dict
    epoch: int = 0

    def payload(self, key: str) -> dict:
        out = {
            "key": key,
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optim": self.opt.state_dict(),
            "rng": _rng_state(self.gen),
            "logs": self.logs,
        }
        if self.ema is not None:
            out["ema"] = self.ema.state_dict()
        return out

    def averaged(self) -> nn.Module | None:
        """A copy of the model holding the EMA weights (None without an EMA)."""
        if self.ema is None:
            return None
        copy_ = copy.deepcopy(self.model)
        self.ema.copy_to(copy_)
        return copy_.eval()


@dataclass(frozen=True)
class _Job:
    """Everything a training loop needs besides its state and data."""

    kind: ModelKind
    cfg: Any
    settings: TrainSettings
    step: StepConfig
    run_dir: Path
    key: str
    dev: torch.device
    desc: str
    evaluate: Callable[[nn.Module, int], dict] | None = None
    progress: bool = True
    on_step: Callable[[int, int], None] | None = None
    log: Callable[[str], None] = print
    deadline: float | None = None  # time.time() after which training stops at the next epoch boundary

    def new_state(self, gen: torch.Generator, data: torch.Tensor | None) -> _State:
        """A freshly initialised model (seeded), its optimiser and EMA; `data` None: the weights will
        come from a checkpoint."""
        torch.manual_seed(self.settings.seed)
        model = self.kind.build(self.cfg, data).to(self.dev)
        if self.settings.channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = adam(model, self.step.lr, self.dev)
        ema = None
        if self.settings.ema_decay is not None:
            from .ema import EMA

            ema = EMA(model, self.settings.ema_decay)
        return _State(model, ema, opt, gen, _empty_logs())

    def restore(self, gen: torch.Generator, ckpt: dict) -> _State:
        """The state of a verified checkpoint (and the RNGs it saved).

        Only a run that goes on needs its optimiser and its training generator: a finished one
        loads without them (a checkpoint shipped without optimiser state, or one written on
        another device, whose generator state this device cannot take), and sets the global
        generator as the uninterrupted run left it."""
        state = self.new_state(gen, None)
        try:
            state.model.load_state_dict(ckpt["model"])
            if state.ema is not None:
                state.ema.load_state_dict(ckpt["ema"])
            if ckpt["epoch"] < self.settings.epochs:
                state.opt.load_state_dict(ckpt["optim"])
                _set_rng_state(gen, ckpt["rng"])
            elif "rng" in ckpt:
                _set_rng_state(None, ckpt["rng"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(
                f"checkpoint of epoch {ckpt.get('epoch')} does not fit the model "
                f"({type(exc).__name__}: {str(exc)[:200]})"
            ) from exc
        state.logs, state.epoch = ckpt["logs"], ckpt["epoch"]
        return state

    def latest(self, gen: torch.Generator) -> _State | None:
        """The state of the newest checkpoint that passes every check; the others are reported and
        skipped."""
        for path in checkpoints(self.run_dir):
            try:
                return self.restore(gen, load_checkpoint(path, self.key))
            except CheckpointError as exc:
                self.log(f"ignoring checkpoint {path.name}: {exc}")
        return None

    def result(self, state: _State, cached: bool = False) -> Run:
        return Run(
            self.run_dir,
            self.key,
            state.model.eval(),
            self.settings,
            state.logs,
            cached=cached,
            ema_model=state.averaged(),
            config=self.cfg,
            step=self.step,
        )


def _job(
    kind, cfg, settings, step, label, data, runs_dir, device, evaluate, progress, on_step, log, deadline=None
) -> _Job:
    step = step or StepConfig.of(cfg)
    run_dir, key = find_run(kind, cfg, step, settings, label=label, data=data, runs_dir=runs_dir)
    dev = pick_device(device)
    return _Job(
        kind, cfg, settings, step, run_dir, key, dev, label or kind.name, evaluate, progress, on_step, log, deadline
    )


def load_finished(
    kind: ModelKind,
    cfg: Any,
    settings: TrainSettings,
    step: StepConfig | None = None,
    *,
    label: str = "",
    data: torch.Tensor | None = None,
    runs_dir: Path | None = None,
    device: str = "auto",
    fresh: str | None = None,
    log: Callable[[str], None] = print,
) -> Run | None:
    """The finished run these inputs define, or None (nothing is trained). A run that a `fresh`
    token has not retrained yet counts as not finished."""
    job = _job(kind, cfg, settings, step, label, data, runs_dir, device, None, False, None, log)
    if store.fresh_pending(job.run_dir / "run.json", fresh) or not job.run_dir.is_dir():
        return None
    with store.file_lock(job.run_dir / ".lock", f"training {job.run_dir.name}", log):
        gen = torch.Generator(device=job.dev).manual_seed(settings.seed)
        with torch.random.fork_rng(devices=[]):
            state = job.latest(gen)
        return job.result(state, cached=True) if state is not None and state.epoch >= settings.epochs else None


def fit(
    kind: ModelKind,
    cfg: Any,
    settings: TrainSettings,
    step: StepConfig | None = None,
    *,
    label: str = "",
    data: torch.Tensor | None = None,
    runs_dir: Path | None = None,
    device: str = "auto",
    evaluate: EvalFn | None = None,
    progress: bool = True,
    on_step: Callable[[int, int], None] | None = None,
    fresh: str | None = None,
    deadline: float | None = None,
    log: Callable[[str], None] = print,
) -> Run:
    """Train a `kind` model of configuration `cfg` under `settings`, or return the finished run.

    `step` defaults to the preset's own (`StepConfig.of(cfg)`). `evaluate(model, epoch)` runs at
    `settings.eval_epochs` (on the EMA weights too when `settings.ema_decay` is set) and its result
    is stored with the run; its identity must be in `settings.eval_key`. `on_step(epoch, step)` is
    called after every optimiser step (tests use it to interrupt a run). With a `deadline` (a
    time.time() value) training stops at the first epoch boundary past it with `TrainingStopped`,
    that epoch's checkpoint written; the same call later resumes from it. With a `fresh` token
    (run_all.sh --fresh) a finished run is trained again once per token; its old checkpoints are
    moved aside, not deleted.
    """
    if settings.eval_epochs and evaluate is None:
        raise ValueError("settings.eval_epochs is set but no evaluate function was given")
    job = _job(kind, cfg, settings, step, label, data, runs_dir, device, evaluate, progress, on_step, log, deadline)
    run_dir = job.run_dir
    retrain = store.fresh_pending(run_dir / "run.json", fresh)

    with store.file_lock(run_dir / ".lock", f"training {run_dir.name}", log):
        # 1. the newest good checkpoint, unless --fresh asks for a new run
        torch.manual_seed(settings.seed)
        gen = torch.Generator(device=job.dev).manual_seed(settings.seed)
        state = None if retrain else job.latest(gen)
        if state is not None and state.epoch >= settings.epochs:
            return job.result(state, cached=True)

        # 2. the run folder: stale temporaries removed, old checkpoints set aside, the record written
        store.remove_stale_temporaries(run_dir)
        if retrain:
            _set_aside(run_dir, log)
        meta = {
            "kind": kind.name,
            "label": label,
            "key": job.key,
            "code": run_code(kind),
            "model": dataclasses.asdict(cfg),
            "step": dataclasses.asdict(job.step),
            "train": dataclasses.asdict(settings),
            "data": data_identity(data, settings.train_limit),
        }
        store.write_json(run_dir / "run.json", meta)
        store.mark_fresh(run_dir / "run.json", fresh)

        # 3. the data, then a new state or the resumed one
        if data is None:
            from .data import training_images

            data = training_images(settings.train_limit)
        elif settings.train_limit is not None:
            data = data[: settings.train_limit]
        if state is not None:
            if state.logs.get("threads") != torch.get_num_threads():
                log(
                    f"note: this run used {state.logs.get('threads')} threads and now uses "
                    f"{torch.get_num_threads()}; the resumed result matches an uninterrupted run only "
                    "to floating-point noise, not bit for bit"
                )
            log(f"resuming {run_dir.name} after epoch {state.epoch} of {settings.epochs}")
        else:
            state = job.new_state(gen, data)
            state.logs.update(device=str(job.dev), label=label)
        data = data.to(job.dev)
        if settings.channels_last:
            data = data.contiguous(memory_format=torch.channels_last)

        # 4. the remaining epochs
        _fit(job, state, data)
        return job.result(state)


def _set_aside(run_dir: Path, log) -> None:
    old = checkpoints(run_dir)
    if old:
        aside = run_dir / f"replaced-{time.strftime('%Y%m%d-%H%M%S')}"
        aside.mkdir(exist_ok=True)
        for p in old:
            shutil.move(str(p), aside / p.name)
        log(f"--fresh: retraining {run_dir.name}; its previous checkpoints are in {aside.name}/")


def adam(model: nn.Module, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """The engine's optimiser: Adam, fused into one kernel per step on a GPU and `capturable` there
    (its step count on the device), so the step can be captured as a CUDA graph (StepRunner)."""
    fused = {"fused": True, "capturable": True} if device.type == "cuda" else {}
    return torch.optim.Adam(model.parameters(), lr=lr, **fused)


def train_step(
    model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, gen: torch.Generator, autocast, scaler, ema=None
) -> torch.Tensor:
    """One optimiser step on the batch `x` (loss under `autocast`, gradients through `scaler`, then
    the EMA); returns the detached loss, still on the device."""
    with autocast:
        loss = model.loss(x, gen)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    if ema is not None:
        ema.update(model)
    return loss.detach()


class StepRunner:
    """The engine's optimiser steps, with the batch and the loss in static device buffers.

    On CUDA, in fp32 or bf16 (fp16's gradient scaler decides on the host whether to step, so it
    cannot be captured), the first WARMUP full batches run eagerly on a side stream; then one step
    is captured as a CUDA graph (autocast with its cache off, Adam `capturable`, the training
    generator registered with the graph, the EMA's decay computed on the device) and every later full
    batch is copied into the input buffer and replayed: one launch instead of a few hundred. A batch
    of another size (an epoch's last), any other device, or a capture that fails (logged with its
    reason) runs `train_step` eagerly, so on the CPU every number is what `train_step` gives.
    `graph_factory` stands in for torch.cuda.CUDAGraph in tests that exercise the replay path."""

    WARMUP = 3

    def __init__(self, model, opt, gen, autocast, scaler, ema, batch_size, dev, precision, log, graph_factory=None):
        self.model, self.opt, self.gen, self.autocast, self.scaler, self.ema = model, opt, gen, autocast, scaler, ema
        self.batch_size, self.dev, self.precision, self.log = batch_size, dev, precision, log
        self.graph_factory = graph_factory
        self.capture = graph_factory is not None or (dev.type == "cuda" and precision != "fp16")
        self.graph = None
        self.warm = 0
        self.reason = "" if self.capture else f"{dev.type}, {precision}: eager steps"
        self.x = self.loss = self.ema_n = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.capture or x.shape[0] != self.batch_size:
            return self._eager(x)
        if self.x is None:
            self.x = torch.empty_like(x)
            if self.ema is not None:
                self.ema_n = torch.full((), float(self.ema.updates), device=self.dev)
        self.x.copy_(x)
        if self.graph is None and self.warm < self.WARMUP:
            self.warm += 1
            return self._eager_on_buffers()
        if self.graph is None:
            try:
                self._capture()
            except Exception as exc:  # noqa: BLE001 (any failure: fall back, say why)
                self.capture, self.reason = (
                    False,
                    f"CUDA graph capture failed ({type(exc).__name__}: {exc}); eager steps",
                )
                self.log(f"note: {self.reason}")
                return self._eager(x)
        self.graph.replay()
        if self.ema is not None:
            self.ema.updates += 1  # the graph advanced the device counter; the host's follows it
        return self.loss

    def _eager(self, x: torch.Tensor) -> torch.Tensor:
        loss = train_step(self.model, self.opt, x, self.gen, self.autocast, self.scaler, self.ema)
        if self.ema_n is not None:
            self.ema_n.fill_(self.ema.updates)  # keep the device counter with the host's
        return loss

    def _step_on_buffers(self) -> torch.Tensor:
        """The step as it is captured: everything on the device, no host synchronisation."""
        with self._autocast():
            loss = self.model.loss(self.x, self.gen)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.ema is not None:
            self.ema.update_on_device(self.model, self.ema_n)
        return loss.detach()

    def _eager_on_buffers(self) -> torch.Tensor:
        if self.dev.type != "cuda":
            loss = self._step_on_buffers()
        else:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                loss = self._step_on_buffers()
            torch.cuda.current_stream().wait_stream(side)
        if self.ema is not None:
            self.ema.updates += 1
        return loss

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.dev.type, dtype=torch.bfloat16, cache_enabled=False)

    def _capture(self) -> None:
        graph = self.graph_factory() if self.graph_factory is not None else torch.cuda.CUDAGraph()
        if self.dev.type == "cuda":
            graph.register_generator_state(self.gen)
            self.opt.zero_grad(set_to_none=True)
            with torch.cuda.graph(graph):
                self.loss = self._step_on_buffers()
        else:
            self.loss = graph.capture(self._step_on_buffers)
        self.graph = graph
        self.reason = "CUDA graph of the whole step"


def _fit(job: _Job, state: _State, data: torch.Tensor) -> None:
    """Train `state` from its epoch to `job.settings.epochs`, with a verified checkpoint after each."""
    from tqdm.auto import tqdm

    settings, dev, model, opt, ema = job.settings, job.dev, state.model, state.opt, state.ema
    bs = job.step.batch_size
    n = data.shape[0]
    steps = (n + bs - 1) // bs
    sync_every = 1 if dev.type == "cpu" else 50  # how often losses are copied to the host
    configure(dev)
    autocast = hardware_autocast(dev.type, settings.precision)
    scaler = grad_scaler(dev.type, settings.precision)  # fp16 only; otherwise it passes through
    runner = StepRunner(model, opt, state.gen, autocast, scaler, ema, bs, dev, settings.precision, job.log)
    epochs_bar = tqdm(
        range(state.epoch + 1, settings.epochs + 1),
        desc=job.desc,
        unit="epoch",
        initial=state.epoch,
        total=settings.epochs,
        disable=not job.progress,
    )
    for epoch in epochs_bar:
        # 1. one pass over the data in a seeded order
        t0 = time.perf_counter()
        model.train()
        shuffle = torch.Generator().manual_seed(settings.seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=shuffle).to(dev)
        losses = torch.empty(steps, device=dev)
        steps_bar = tqdm(range(steps), desc=f"epoch {epoch}", unit="step", leave=False, disable=not job.progress)
        checked = 0
        for step in steps_bar:
            x = data[order[step * bs : (step + 1) * bs]]
            losses[step] = runner(x)
            # 2. the losses copied to the host now and then, and checked to be finite
            if (step + 1) % sync_every == 0 or step + 1 == steps:
                chunk = losses[checked : step + 1].cpu()
                bad = (~torch.isfinite(chunk)).nonzero()
                if len(bad):
                    at = checked + int(bad[0]) + 1
                    raise TrainingDiverged(
                        f"loss became {chunk[int(bad[0])].item()} at epoch {epoch}, step {at} of "
                        f"{steps}; the last good checkpoint (epoch {epoch - 1}, 0 meaning none) is kept "
                        f"in {job.run_dir}"
                    )
                checked = step + 1
                steps_bar.set_postfix(loss=f"{chunk[-1].item():.4f}", refresh=False)
            if job.on_step is not None:
                job.on_step(epoch, step + 1)
        steps_bar.close()
        logs = state.logs
        logs.setdefault("train_seconds", []).append(time.perf_counter() - t0)  # the optimiser steps alone
        epoch_losses = losses.float().cpu().tolist()
        logs["iter_loss"].extend(epoch_losses)
        logs["epoch_loss"].append(math.fsum(epoch_losses) / len(epoch_losses))
        # 3. the sample grid and the per-epoch metrics (raw and EMA weights)
        model.eval()
        if epoch in settings.sample_epochs:
            # one batch, its own noise, in the run's precision (as every other sample of the run)
            logs["samples"][epoch] = sample_images(
                model, settings.n_grid, settings.seed + 1, batch_size=settings.n_grid, precision=settings.precision
            )
        if epoch in settings.eval_epochs:
            logs["metrics"][epoch] = store.to_plain(job.evaluate(model, epoch), f"metrics of epoch {epoch}")
            ema_epochs = settings.eval_epochs if settings.ema_eval_epochs is None else settings.ema_eval_epochs
            if state.ema is not None and epoch in ema_epochs:  # the averaged copy, made only when scored
                logs["metrics_ema"][epoch] = store.to_plain(
                    job.evaluate(state.averaged(), epoch), f"EMA metrics of epoch {epoch}"
                )
        logs["epoch_seconds"].append(time.perf_counter() - t0)
        # 4. the checkpoint
        state.epoch = epoch
        save_checkpoint(job.run_dir, epoch, state.payload(job.key))
        epochs_bar.set_postfix(loss=f"{logs['epoch_loss'][-1]:.4f}")
        if job.deadline is not None and epoch < settings.epochs and time.time() >= job.deadline:
            epochs_bar.close()
            raise TrainingStopped(
                f"{job.run_dir.name}: stopped at its deadline after epoch {epoch} of {settings.epochs}; "
                "its checkpoint is written and the next call resumes from it"
            )
    epochs_bar.close()


# --------------------------------------------------------------------------- sampling in batches
def sampling_batch_size(model: nn.Module) -> int:
    """Images per sampling batch on the model's device (helpers.hardware.sampling_batch): part of the
    key of every cached sample, since it decides the order in which the noise is drawn."""
    from .hardware import sampling_batch

    return sampling_batch(next(model.parameters()).device)


@torch.no_grad()
def sample_images(
    model: nn.Module,
    n: int,
    seed: int = 0,
    *,
    batch_size: int | None = None,
    precision: str = "fp32",
    progress: bool = False,
    isolate_rng: bool = False,
    **sample_kw: Any,
) -> torch.Tensor:
    """n samples of `model.sample` drawn in batches (default `sampling_batch_size(model)`) from a
    generator of their own seeded with `seed`, in `precision`, returned as float32 on the CPU in the
    model's range. The one sampling loop of the final numbers, the DDIM sweep and the per-epoch
    evaluation; `isolate_rng` also leaves the global RNG as it was."""
    from tqdm.auto import tqdm

    dev = next(model.parameters()).device
    batch_size = sampling_batch_size(model) if batch_size is None else batch_size
    config.check_int("batch_size", batch_size, 1)
    gen = torch.Generator(device=dev).manual_seed(seed)
    rng = (
        torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []) if isolate_rng else contextlib.nullcontext()
    )
    parts = []
    with rng, hardware_autocast(dev.type, precision):
        for start in tqdm(range(0, n, batch_size), desc="generating", unit="batch", disable=not progress, leave=False):
            parts.append(model.sample(min(batch_size, n - start), generator=gen, **sample_kw).float().cpu())
    return torch.cat(parts)
