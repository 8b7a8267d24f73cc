"""What the notebooks call: resolve and validate parameters, then train (or fetch from the cache)
and score. Display code (tables, figures) lives in helpers/tables.py and helpers/plotting.py."""

from __future__ import annotations

import dataclasses
import itertools
import time
import types
from pathlib import Path
from typing import Any

import torch

from . import config, hardware, store, study
from .cold import ColdDiffusion
from .ddpm import DDPM
from .training import ModelKind, Optimiser, Run, TrainSettings, fit


def resolve_profile(name: str | config.Profile | None) -> config.Profile:
    """`None` picks the default for this machine (full with CUDA, quick without) and says why."""
    if isinstance(name, config.Profile):
        return name
    if name is None:
        name, why = config.default_profile_name()
        print(f"profile: {name} ({why})")
    return config.profile(name)


# --------------------------------------------------------------------------- the model kinds
def _build_cold(cfg, data):
    # The prior of x_T is fitted on the training data of the run; a model about to receive a
    # checkpoint (data None) gets it from there.
    model = ColdDiffusion(cfg)
    return model if data is None else model.fit_prior(data)


KINDS: dict[str, ModelKind] = {
    "ddpm": ModelKind(DDPM, presets=config.KIND_PRESETS["ddpm"]),
    "cold": ModelKind(ColdDiffusion, _build_cold, presets=config.KIND_PRESETS["cold"]),
}


def preset_config(kind: str, preset: str, overrides: dict | None = None):
    """The configuration of a preset with `overrides` applied (validated: unknown field, wrong type
    or value raise an error naming it)."""
    config.check_choice("kind", kind, KINDS)
    presets = KINDS[kind].presets
    config.check_choice("preset" if kind == "ddpm" else "cold_preset", preset, presets)
    check_overrides_mapping(overrides)
    return presets[preset].replace(**overrides) if overrides else presets[preset]


def check_overrides_mapping(overrides: Any) -> None:
    if overrides is None:
        return
    if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
        raise ValueError(
            f"overrides={overrides!r} is not allowed; expected a mapping of field names to "
            "values, e.g. {'lr': 1e-3, 'hidden': [32, 64, 32]}"
        )


# --------------------------------------------------------------------------- parameters
# Names IPython puts in every notebook's namespace.
_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def check_params(namespace: dict | None = None, **params: Any) -> dict:
    """Validate the parameters a notebook was given, before any work starts.

    With `namespace=globals()`, any other variable defined before this call (a name papermill
    injected that the parameters cell does not declare) is refused too. `overrides` is checked
    against the notebook's DDPM `preset` (or its `cold_preset` when it has no DDPM preset).
    """
    if namespace is not None:
        unknown = sorted(
            k
            for k, v in namespace.items()
            if not k.startswith("_")
            and k not in params
            and k not in _IPYTHON_NAMES
            and not isinstance(v, types.ModuleType)
            and not callable(v)
        )
        if unknown:
            raise ValueError(f"unknown parameter {unknown[0]!r}; this notebook takes {sorted(params)}")
    if params.get("profile") is not None:
        config.check_choice("profile", params["profile"], config.PROFILES)
    for name in ("preset", "baseline"):
        if name in params:
            config.check_choice(name, params[name], config.DDPM_PRESETS)
    if "cold_preset" in params:
        config.check_choice("cold_preset", params["cold_preset"], config.COLD_PRESETS)
    for name, kind in (("unet_preset", "ddpm"), ("cold_unet_preset", "cold")):
        if params.get(name) is not None:
            config.check_choice(name, params[name], config.KIND_PRESETS[kind])
    if "cold_variants" in params:
        variants = params["cold_variants"]
        if not isinstance(variants, (list, tuple)) or not all(
            isinstance(v, str) and v in config.COLD_PRESETS for v in variants
        ):
            raise ValueError(
                f"cold_variants={variants!r} is not allowed; expected a list of {sorted(config.COLD_PRESETS)}"
            )
    if "seed" in params:
        config.check_int("seed", params["seed"], 0, config.MAX_SEED)
    if "device" in params:
        config.check_choice("device", params["device"], hardware.DEVICE_CHOICES)
    if "precision" in params:
        config.check_choice("precision", params["precision"], ("profile",) + config.PRECISION_CHOICES)
    if params.get("overrides"):
        kind, preset = ("ddpm", params["preset"]) if "preset" in params else ("cold", params.get("cold_preset"))
        try:
            preset_config(kind, preset, params["overrides"])
        except (ValueError, TypeError) as exc:
            raise ValueError(f"overrides: {exc}") from None
    elif "overrides" in params:
        check_overrides_mapping(params["overrides"])
    return dict(params)


# --------------------------------------------------------------------------- training
def precision_for(prof: config.Profile, device: str = "auto", requested: str = "profile") -> tuple[str, str]:
    """(precision, reason) of a run: the profile's choice unless the notebook asks for another."""
    from .hardware import choose_precision, pick_device

    return choose_precision(prof.precision if requested == "profile" else requested, pick_device(device).type)


def evaluation_settings(
    prof: config.Profile, epochs: int, seed: int = 0, precision: str = "fp32", device: str = "auto"
) -> tuple[Any, dict]:
    """The per-epoch FID / KID / IS hook of a profile: (evaluate function, TrainSettings fields)."""
    from . import metrics

    eval_epochs = tuple(e for e in prof.eval_epochs if e <= epochs)
    if not eval_epochs:
        return None, {}
    fn, key = metrics.epoch_evaluator(prof.eval_samples, seed=seed, precision=precision, device=device)
    return fn, {"eval_epochs": eval_epochs, "eval_key": key}


def run_settings(
    kind: str,
    preset: str,
    prof: config.Profile,
    seed: int = 0,
    device: str = "auto",
    precision: str = "profile",
    evaluate: bool = True,
    **train_overrides: Any,
) -> tuple[TrainSettings, Any]:
    """(TrainSettings, per-epoch evaluate function) of a preset under a profile.

    Budget and EMA come from the study's table (helpers/study.py): the cold-diffusion appendix
    variants get the profile's variant budget; the default DDPM also keeps an EMA of its weights
    (scored beside the raw ones; the raw weights are unchanged by it)."""
    entry = study.study_run(kind, preset)
    epochs, limit = study.epochs_and_limit(prof, entry.budget)
    run_precision = precision_for(prof, device, precision)[0]
    fn, eval_fields = evaluation_settings(prof, epochs, seed, run_precision, device) if evaluate else (None, {})
    fields = dict(
        epochs=epochs,
        seed=seed,
        train_limit=limit,
        sample_epochs=tuple(e for e in prof.sample_epochs if e <= epochs),
        n_grid=prof.n_grid,
        precision=run_precision,
        ema_decay=prof.ema_decay if entry.ema else None,
    )  # None where the profile keeps none
    fields.update(eval_fields)
    fields.update(train_overrides)
    return TrainSettings(**fields), fn


def train(
    kind: str,
    preset: str,
    profile: str | config.Profile | None = None,
    seed: int = 0,
    overrides: dict | None = None,
    device: str = "auto",
    precision: str = "profile",
    runs_dir: Path | None = None,
    progress: bool = True,
    evaluate: bool = True,
    cached_only: bool = False,
    **train_overrides: Any,
) -> Run | None:
    """Train a preset of a model kind ("ddpm" or "cold") under a profile, or return the finished run
    from the cache (with `cached_only`, None when it is not there: nothing is trained).

    With `evaluate`, FID / KID / IS (MNIST classifier) are measured at the profile's eval epochs
    (of unconditional samples) and stored in `run.metrics`.
    """
    cfg = preset_config(kind, preset, overrides)
    prof = resolve_profile(profile)
    settings, fn = run_settings(kind, preset, prof, seed, device, precision, evaluate, **train_overrides)
    label = preset + (f"+{store.key_of(overrides, 6)}" if overrides else "")
    return fit(
        KINDS[kind],
        cfg,
        settings,
        Optimiser.of(cfg),
        label=label,
        runs_dir=runs_dir,
        device=device,
        progress=progress,
        evaluate=fn,
        cached_only=cached_only,
    )


def cached_model(
    kind: str,
    cfg,
    profile: str | config.Profile | None,
    seed: int = 0,
    device: str = "auto",
    runs_dir: Path | None = None,
):
    """The trained model of configuration `cfg` if the profile's run of it is in the cache, else None.
    Never trains (the explorers use it)."""
    prof = resolve_profile(profile)
    for preset, known in KINDS[kind].presets.items():
        if known == cfg:
            run = train(kind, preset, prof, seed, device=device, runs_dir=runs_dir, progress=False, cached_only=True)
            return None if run is None else run.model
    return None


# --------------------------------------------------------------------------- sampling
def sample_batch(model) -> int:
    """Images per sampling batch on the model's device (helpers.hardware.sampling_batch): part of the
    key of every cached sample, since it decides the order in which the noise is drawn."""
    return hardware.sampling_batch(next(model.parameters()).device)


def generate(
    model,
    n: int,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = True,
    precision: str = "fp32",
    **sample_kw: Any,
) -> torch.Tensor:
    """n samples from `model.sample` in batches (default: `sample_batch(model)`), from a generator of
    their own (model range, CPU)."""
    from tqdm.auto import tqdm

    dev = next(model.parameters()).device
    batch_size = sample_batch(model) if batch_size is None else batch_size
    gen = torch.Generator(device=dev).manual_seed(seed)
    parts = []
    with hardware.autocast(dev.type, precision):
        for start in tqdm(range(0, n, batch_size), desc="generating", unit="batch", disable=not progress, leave=False):
            parts.append(model.sample(min(batch_size, n - start), generator=gen, **sample_kw).float().cpu())
    return torch.cat(parts)


# --------------------------------------------------------------------------- final numbers
FINAL_SEED_OFFSET = 7919  # final samples use other noise than the per-epoch ones
N_BOOTSTRAP = 20


def _result_key(**spec: Any) -> str:
    """Key of a cached result: its description plus the code of the whole pipeline that computes it."""
    return store.key_of({**spec, "code": store.code_hash(["experiments"])})


def final_metrics(run: Run, prof: config.Profile, seed: int = 0, progress: bool = True, use_ema: bool = False) -> dict:
    """FID / KID / IS (MNIST classifier) of `prof.final_samples` generated images against the test
    set, with bootstrap standard errors, and the Inception-v3 FID of the first
    `prof.inception_samples` of them; `sample_seconds` is the time to draw them. Cached in the run
    folder."""
    from . import metrics

    model = run.ema_model if use_ema else run.model
    if model is None:
        raise ValueError(f"use_ema=True but run {run.dir.name} kept no EMA weights")
    spec = dict(
        what="final",
        run=run.key,
        n=prof.final_samples,
        inception=prof.inception_samples,
        seed=seed,
        bootstrap=N_BOOTSTRAP,
        ema=use_ema,
        precision=run.settings.precision,
        batch=sample_batch(model),
    )

    def compute() -> dict:
        t0 = time.perf_counter()
        images = generate(
            model, prof.final_samples, seed + FINAL_SEED_OFFSET, progress=progress, precision=run.settings.precision
        )
        seconds = time.perf_counter() - t0
        out = metrics.evaluate(images, "test", ("classifier",), n_bootstrap=N_BOOTSTRAP, seed=seed, strict_range=False)
        out["sample_seconds"] = seconds
        if prof.inception_samples:
            k = min(prof.inception_samples, len(images))
            out["inception"] = metrics.evaluate(images[:k], "test", ("inception",), seed=seed, strict_range=False)
        return out

    return store.cached_json(run.dir / f"final-{_result_key(**spec)}.json", compute)


def real_data_metrics(prof: config.Profile, seed: int = 0, n: int | None = None) -> dict:
    """The "real data" row: training images scored like n generated ones (default: the profile's
    final sample size; pass `n=prof.eval_samples` for the floor of the per-epoch curves, since FID's
    bias depends on n). Inception-v3 FID only at the final size."""
    from . import metrics

    n = prof.final_samples if n is None else n
    config.check_int("n", n, 10, config.MNIST_TEST_SIZE)
    inception = prof.inception_samples if n == prof.final_samples else 0
    spec = dict(what="real", n=n, inception=inception, seed=seed, bootstrap=N_BOOTSTRAP)

    def compute() -> dict:
        out = metrics.real_data_floor(n, "test", ("classifier",), n_bootstrap=N_BOOTSTRAP, seed=seed)
        if inception:
            out["inception"] = metrics.real_data_floor(inception, "test", ("inception",), seed=seed)
        return out

    return store.cached_json(config.RUNS_DIR / f"real-data-{_result_key(**spec)}.json", compute)


# --------------------------------------------------------------------------- beyond the seed
DDIM_ETAS = (0.0, 1.0)


TIMING_SAMPLES = 32  # images the ancestral sampler draws in the DDIM sweep only to be timed


def ddim_sweep(run: Run, prof: config.Profile, seed: int = 0, progress: bool = True) -> dict:
    """Classifier FID and IS against the number of sampling steps: DDIM with S in prof.ddim_steps and
    eta 0 and 1, and Prince's sampler (S = T), each on prof.ddim_samples images from the same noise
    seed, with the seconds per sample and the speed-up over Prince's sampler, timed side by side in
    this computation. When the sweep's size is the final one, Prince's row is the run's final metrics
    (the very same images: same noise seed and batches) and Prince's sampler only draws
    TIMING_SAMPLES images to be timed. Cached in the run folder."""
    from . import metrics

    n = prof.ddim_samples
    spec = dict(
        what="ddim",
        run=run.key,
        steps=list(prof.ddim_steps),
        etas=list(DDIM_ETAS),
        n=n,
        seed=seed,
        bootstrap=N_BOOTSTRAP,
        timing=TIMING_SAMPLES,
        batch=sample_batch(run.model),
        precision=run.settings.precision,
    )
    T = run.model.T
    ddim = [(s, eta) for s in prof.ddim_steps if s <= T for eta in DDIM_ETAS]

    def timed(count: int, **kw) -> tuple[torch.Tensor, float]:
        t0 = time.perf_counter()
        images = generate(
            run.model, count, seed + FINAL_SEED_OFFSET, progress=progress, precision=run.settings.precision, **kw
        )
        return images, (time.perf_counter() - t0) / count

    def score(images: torch.Tensor) -> dict:
        return metrics.evaluate(
            images, "test", ("classifier",), n_bootstrap=N_BOOTSTRAP, seed=seed, strict_range=False, log=lambda *_: None
        )

    def row(sampler: str, steps: int, eta, m: dict, seconds: float, timed_on: int) -> dict:
        return {
            "sampler": sampler,
            "steps": steps,
            "eta": eta,
            "fid_classifier": m["fid_classifier"],
            "fid_classifier_se": m["fid_classifier_se"],
            "is_classifier_mean": m["is_classifier_mean"],
            "n": m["n"],
            "seconds_per_sample": seconds,
            "timed_on": timed_on,
        }

    def compute() -> dict:
        if n == prof.final_samples:
            m = final_metrics(run, prof, seed, progress)
            k = min(TIMING_SAMPLES, n)
            _, seconds = timed(k)
        else:
            images, seconds = timed(n)
            m, k = score(images), n
        rows = [row("prince", T, None, m, seconds, k)]
        for steps, eta in ddim:
            images, seconds = timed(n, sampler="ddim", steps=steps, eta=eta)
            rows.append(row("ddim", steps, eta, score(images), seconds, n))
        base = rows[0]["seconds_per_sample"]
        for r in rows:
            r["speedup"] = base / r["seconds_per_sample"]
        return {"preset": run.label, "n": n, "T": T, "rows": rows}

    return store.cached_json(run.dir / f"ddim-{_result_key(**spec)}.json", compute)


def ema_comparison(run: Run) -> dict:
    """Raw against EMA weights at every evaluated epoch of a run that kept an EMA (same samples' noise)."""
    if not run.metrics_ema:
        raise ValueError(f"run {run.dir.name} has no EMA metrics (its settings have ema_decay=None)")
    return {
        "preset": run.label,
        "decay": run.settings.ema_decay,
        "per_epoch": {e: {"raw": run.metrics[e], "ema": run.metrics_ema[e]} for e in sorted(run.metrics)},
    }


def network_comparison(runs: dict[str, Run], finals: dict[str, dict]) -> dict:
    """Two or more networks of one model kind side by side (appendix C: the U-Net beside the CNN), from
    their runs and final metrics: per network its size (`models.describe`), optimiser steps, measured
    training seconds (the optimiser steps alone, per epoch and in all) and final metrics; and two
    matched points against the first network (the reference), both from the per-epoch evaluation:
    `same_steps`, each network at the last epoch of the shortest run that the reference also
    evaluated (every run here takes the same steps per epoch), and `same_time`, the reference's
    evaluated epoch whose training time is nearest each other network's whole run."""
    from . import models

    first = next(iter(runs))
    steps_per_epoch = {name: len(r.iter_loss) // max(len(r.epoch_loss), 1) for name, r in runs.items()}
    if len(set(steps_per_epoch.values())) > 1:
        raise ValueError(
            f"the runs take different steps per epoch ({steps_per_epoch}); network_comparison matches them by epoch"
        )
    out: dict = {"reference": first, "networks": {}}
    for name, r in runs.items():
        cumulative = list(itertools.accumulate(float(v) for v in r.logs.get("train_seconds", [])))
        out["networks"][name] = {
            **models.describe(r.model.net),
            "net": r.model.cfg.net,
            "config": dataclasses.asdict(r.model.cfg),
            "precision": r.settings.precision,
            "epochs": len(r.epoch_loss),
            "steps": len(r.iter_loss),
            "steps_per_epoch": steps_per_epoch[name],
            "train_seconds": cumulative[-1] if cumulative else None,
            "train_seconds_cumulative": cumulative,
            "final": finals[name],
        }
    ref = runs[first]
    shortest = min(len(r.epoch_loss) for r in runs.values())
    if shortest in ref.metrics and all(shortest in r.metrics for r in runs.values()):
        out["same_steps"] = {
            "epoch": shortest,
            "steps": shortest * steps_per_epoch[first],
            "models": {name: r.metrics[shortest] for name, r in runs.items()},
        }
    ref_time = out["networks"][first]["train_seconds_cumulative"]
    matched = {}
    for name in runs:
        if name == first or not ref_time or not ref.metrics or out["networks"][name]["train_seconds"] is None:
            continue
        target = out["networks"][name]["train_seconds"]
        epoch = min(ref.metrics, key=lambda e: abs(ref_time[e - 1] - target))
        matched[name] = {
            "epoch": epoch,
            "steps": epoch * steps_per_epoch[first],
            "train_seconds": ref_time[epoch - 1],
            "reference": ref.metrics[epoch],
            "other": runs[name].metrics.get(max(runs[name].metrics, default=0)),
        }
    if matched:
        out["same_time"] = matched
    return out


# --------------------------------------------------------------------------- cold diffusion
def cold_reconstruction_metrics(run: Run, prof: config.Profile, seed: int = 0) -> dict:
    """RMSE, SSIM, PSNR and FID (MNIST classifier) of the degraded, direct, Algorithm 1 and
    Algorithm 2 reconstructions of the first `prof.final_samples` test images (conditional mode).
    Cached in the run folder."""
    from . import cold, metrics
    from .data import test_images

    spec = dict(what="reconstruction", run=run.key, n=prof.final_samples, seed=seed)

    def compute() -> dict:
        x = test_images(prof.final_samples).to(next(run.model.parameters()).device)
        images = cold.reconstructions(run.model, x)

        def fid(im):
            return metrics.evaluate(im, "test", ("classifier",), seed=seed, strict_range=False, log=lambda *_: None)[
                "fid_classifier"
            ]

        return cold.reconstruction_metrics(x.cpu(), images, fid_fn=fid)

    return store.cached_json(run.dir / f"reconstruction-{_result_key(**spec)}.json", compute)


def cold_examples(run: Run, n: int = 8, seed: int = 0) -> dict:
    """Rows for a figure: test originals, D(x, T), the three restorations, and unconditional samples."""
    from . import cold
    from .data import test_images

    dev = next(run.model.parameters()).device
    x = test_images(n).to(dev)
    rows = {"original": x.cpu(), **cold.reconstructions(run.model, x)}
    rows["unconditional"] = run.model.sample(n, generator=torch.Generator(device=dev).manual_seed(seed)).cpu()
    return rows
