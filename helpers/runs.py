"""Training runs and the cached results derived from them: what `helpers.study.Study` calls.

A run is a preset of a model kind trained under a profile's budget (the study's table decides the
budget and the EMA); it is trained once by `helpers.training.fit` and loaded afterwards. Its derived
results (final metrics, cold-diffusion reconstructions) and the real-data rows are cached too, each
keyed by the run, the values that decide it and the code that computes it (`derived_key`).
Display code lives in helpers/tables.py and helpers/plotting.py, the analyses that compare runs in
helpers/analyses.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import config, hardware, store, study
from .cold import ColdDiffusion
from .ddpm import DDPM
from .training import (
    ModelKind,
    Run,
    StepConfig,
    TrainSettings,
    checkpoints,
    find_run,
    fit,
    load_finished,
    sample_images,
)

# --------------------------------------------------------------------------- the model kinds
KINDS: dict[str, ModelKind] = {
    "ddpm": ModelKind(DDPM, presets=config.KIND_PRESETS["ddpm"]),
    "cold": ModelKind(ColdDiffusion, ColdDiffusion.build, presets=config.KIND_PRESETS["cold"]),
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


# --------------------------------------------------------------------------- the metric protocol
@dataclass(frozen=True)
class Protocol:
    """How final numbers are measured; its values are in the key of every derived result."""

    final_seed_offset: int = 7919  # final samples use other noise than the per-epoch ones
    n_bootstrap: int = 20  # bootstrap resamples of the final numbers' standard errors
    timing_samples: int = 32  # images the ancestral sampler draws in the DDIM sweep only to be timed
    ddim_etas: tuple[float, ...] = (0.0, 1.0)


PROTOCOL = Protocol()


def final_protocol():
    """The metric settings of final numbers: the metrics' defaults with PROTOCOL's bootstrap."""
    from .metrics import Protocol as MetricProtocol

    return MetricProtocol(n_bootstrap=PROTOCOL.n_bootstrap)


def derived_key(compute: Callable, modules: tuple[str, ...] = ("metrics",), **spec: Any) -> str:
    """Key of a derived result: its description, the protocol, and the code that computes it (the
    function `compute` itself and the package modules that `modules` import; the run's own code is
    already in its key)."""
    import dataclasses

    return store.key_of(
        {**spec, "protocol": dataclasses.asdict(PROTOCOL), "code": store.code_hash(modules, functions=(compute,))}
    )


# --------------------------------------------------------------------------- training
def settings_for(
    kind: str,
    preset: str,
    prof: config.Profile,
    seed: int,
    device: str,
    precision: str,
    score_epochs: bool = True,
    **train_overrides: Any,
) -> tuple[TrainSettings, Any]:
    """(TrainSettings, per-epoch evaluate function or None) of a preset under a profile, in the
    resolved `precision` ("fp32", "bf16", "fp16").

    Budget and EMA come from the study's table (helpers/study.py); `score_epochs` measures FID / KID /
    IS (MNIST classifier) at the profile's eval epochs."""
    from . import metrics

    entry = study.study_run(kind, preset)
    epochs, limit = study.epochs_and_limit(prof, entry.budget)
    fields = dict(
        epochs=epochs,
        seed=seed,
        train_limit=limit,
        sample_epochs=tuple(e for e in prof.sample_epochs if e <= epochs),
        n_grid=prof.n_grid,
        precision=precision,
        ema_decay=prof.ema_decay if entry.ema else None,  # None where the profile keeps none
    )
    fn = None
    eval_epochs = tuple(e for e in prof.eval_epochs if e <= epochs)
    if score_epochs and eval_epochs:
        fn, key = metrics.epoch_evaluator(prof.eval_samples, seed=seed, precision=precision, device=device)
        fields.update(eval_epochs=eval_epochs, eval_key=key)
        if fields["ema_decay"] is not None:
            fields.update(ema_eval_epochs=tuple(e for e in prof.ema_eval_epochs if e in eval_epochs))
    fields.update(train_overrides)
    return TrainSettings(**fields), fn


def _label(preset: str, overrides: dict | None) -> str:
    return preset + (f"+{store.key_of(overrides, 6)}" if overrides else "")


def train(
    kind: str,
    preset: str,
    prof: config.Profile,
    *,
    seed: int = 0,
    overrides: dict | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    runs_dir: Path | None = None,
    progress: bool = True,
    score_epochs: bool = True,
    fresh: str | None = None,
    deadline: float | None = None,
    **train_overrides: Any,
) -> Run:
    """Train a preset of a model kind ("ddpm" or "cold") under a profile, or return the finished run
    from the cache. `device` and `precision` are resolved ones (the `Study` resolves them)."""
    cfg = preset_config(kind, preset, overrides)
    settings, fn = settings_for(kind, preset, prof, seed, device, precision, score_epochs, **train_overrides)
    if not overrides and not train_overrides and score_epochs:
        run = _shipped_run(kind, preset, cfg, settings, prof, seed, device, runs_dir, fresh)
        if run is not None:
            return run
    return fit(
        KINDS[kind],
        cfg,
        settings,
        StepConfig.of(cfg),
        label=_label(preset, overrides),
        runs_dir=runs_dir,
        device=device,
        progress=progress,
        evaluate=fn,
        fresh=fresh,
        deadline=deadline,
    )


def finished_model(
    kind: str,
    cfg,
    prof: config.Profile,
    *,
    seed: int = 0,
    device: str = "cpu",
    precision: str = "fp32",
    runs_dir: Path | None = None,
):
    """The trained model of configuration `cfg` if the profile's run of that preset is finished in the
    cache, else None; never trains (the explorers use it)."""
    for preset, known in KINDS[kind].presets.items():
        if known == cfg:
            settings, _ = settings_for(kind, preset, prof, seed, device, precision)
            run = load_finished(KINDS[kind], cfg, settings, label=preset, runs_dir=runs_dir, device=device)
            run = run or _shipped_run(kind, preset, cfg, settings, prof, seed, device, runs_dir)
            return None if run is None else run.model
    return None


# --------------------------------------------------------------------------- runs trained elsewhere
def _shipped_run(kind, preset, cfg, settings, prof, seed, device, runs_dir, fresh=None) -> Run | None:
    """The run of a preset shipped for the profile (helpers/shipped.py), when the cache has no
    finished run for `settings` (else None: the caller trains or loads its own).

    A shipped run was trained elsewhere (a GPU, in its precision and sampling batch), so its key is
    recomputed for that device and precision: only when the present code gives the shipped key is it
    the run this study would train there, and used. A `fresh` token skips it (run_all.sh --fresh)."""
    import torch

    from . import shipped

    found = None if fresh else shipped.entry(prof.name, kind, preset, seed)
    if found is None:
        return None
    own_dir, _ = find_run(KINDS[kind], cfg, StepConfig.of(cfg), settings, label=preset, runs_dir=runs_dir)
    if any(int(p.stem.split("-")[1]) >= settings.epochs for p in checkpoints(own_dir)):
        return None
    there, _ = settings_for(kind, preset, prof, seed, torch.device(found["device"]), found["precision"])
    run_dir, key = find_run(KINDS[kind], cfg, StepConfig.of(cfg), there, label=preset, runs_dir=runs_dir)
    if key != found["key"]:
        print(f"note: {shipped.describe(found)} is not what the present code trains (key {key}): not used")
        return None
    shipped.install(prof.name, found, run_dir.parent)
    return load_finished(KINDS[kind], cfg, there, label=preset, runs_dir=runs_dir, device=device)


def finished_dir(kind: str, preset: str, prof: config.Profile, seed: int, runs_dir: Path) -> tuple[Path, str, str]:
    """(folder, device type, precision) of the one finished run of a preset under a profile in
    `runs_dir`, whatever device and precision trained it (its key recomputed for them must be its
    folder's); ValueError when there is none or more than one."""
    import torch

    found = []
    for run_dir in sorted(Path(runs_dir).glob(f"{kind}-{preset}-*")):
        ckpts = sorted(run_dir.glob("ckpt-*.pt"))
        if not ckpts or not (run_dir / "run.json").is_file():
            continue
        precision = store.loads((run_dir / "run.json").read_text())["train"]["precision"]
        device = torch.device(store.load_tensors(ckpts[-1])["logs"].get("device") or "cpu").type
        settings, _ = settings_for(kind, preset, prof, seed, torch.device(device), precision)
        cfg = preset_config(kind, preset)
        folder, _ = find_run(KINDS[kind], cfg, StepConfig.of(cfg), settings, label=preset, runs_dir=runs_dir)
        if folder == run_dir and load_finished(KINDS[kind], cfg, settings, label=preset, runs_dir=runs_dir):
            found.append((run_dir, device, precision))
    if len(found) != 1:
        raise ValueError(
            f"{'no' if not found else len(found)} finished run{'s' if len(found) > 1 else ''} of {kind} "
            f"{preset!r} under profile {prof.name!r}, seed {seed} in {runs_dir}"
            + (f": {[str(f[0].name) for f in found]}" if found else " (train it, or unpack what a device run returned)")
        )
    return found[0]


# --------------------------------------------------------------------------- final numbers
def ema_final_samples(prof: config.Profile) -> int:
    """Images of the EMA weights' final numbers (the raw model's are also given on as many)."""
    return prof.ema_final_samples or prof.final_samples


def final_subsets(run: Run, prof: config.Profile) -> tuple[int, ...]:
    """Sizes below the final sample at which a run's raw model is scored again, on the first images
    of the same final sample: where the EMA's final numbers or the DDIM sweep use a smaller sample,
    so they sit beside the raw model's numbers on the same n without drawing it again."""
    if run.ema_model is None:
        return ()
    return tuple(sorted({n for n in (ema_final_samples(prof), prof.ddim_samples) if n < prof.final_samples}))


def final_metrics(
    run: Run,
    prof: config.Profile,
    seed: int = 0,
    progress: bool = True,
    use_ema: bool = False,
    fresh: str | None = None,
) -> dict:
    """FID / KID / IS (MNIST classifier) of `prof.final_samples` generated images (the EMA weights:
    `ema_final_samples(prof)`) against the test set, with bootstrap standard errors, and the
    Inception-v3 FID of the first `prof.inception_samples` of them; `sample_seconds` is the time to
    draw them. The raw model's numbers also hold `subsets` (n -> the same metrics of the first n
    images; `final_subsets`). Cached in the run folder."""
    from . import metrics

    model = run.ema_model if use_ema else run.model
    if model is None:
        raise ValueError(f"use_ema=True but run {run.dir.name} kept no EMA weights")
    n = ema_final_samples(prof) if use_ema else prof.final_samples
    subsets = () if use_ema else final_subsets(run, prof)
    spec = dict(
        what="final",
        run=run.key,
        n=n,
        inception=prof.inception_samples,
        seed=seed,
        ema=use_ema,
        precision=run.settings.precision,
        batch=run.sampling_batch,
        subsets=list(subsets),
    )

    def score(images) -> dict:
        out = metrics.evaluate(
            images, "test", ("classifier",), protocol=final_protocol(), seed=seed, strict_range=False
        )
        if prof.inception_samples:
            k = min(prof.inception_samples, len(images))
            out["inception"] = metrics.evaluate(images[:k], "test", ("inception",), seed=seed, strict_range=False)
        return out

    def compute() -> dict:
        t0 = time.perf_counter()
        images = sample_images(
            model,
            n,
            seed + PROTOCOL.final_seed_offset,
            progress=progress,
            precision=run.settings.precision,
            batch_size=run.sampling_batch,
        )
        seconds = time.perf_counter() - t0
        out = score(images)
        out["sample_seconds"] = seconds
        if subsets:
            out["subsets"] = {k: score(images[:k]) for k in subsets}
        return out

    key = derived_key(final_metrics, **spec)
    return store.cached_json(run.dir / f"final-{key}.json", compute, fresh=fresh)


def on_first(final: dict, n: int) -> dict:
    """The raw model's final numbers on its first n images (`final` itself when that is its size)."""
    if final["n"] == n:
        return final
    if n not in final.get("subsets", {}):
        raise ValueError(f"these final numbers were measured on {final['n']} images and no subset of {n}")
    return final["subsets"][n]


def real_data_metrics(prof: config.Profile, seed: int = 0, n: int | None = None, fresh: str | None = None) -> dict:
    """The "real data" row: training images scored like n generated ones (default: the profile's
    final sample size; pass `n=prof.eval_samples` for the floor of the per-epoch curves, since FID's
    bias depends on n). Inception-v3 FID only at the final size."""
    from . import metrics

    n = prof.final_samples if n is None else n
    config.check_int("n", n, 10, config.MNIST_TEST_SIZE)
    inception = prof.inception_samples if n == prof.final_samples else 0
    spec = dict(what="real", n=n, inception=inception, seed=seed)

    def compute() -> dict:
        out = metrics.real_data_floor(n, "test", ("classifier",), protocol=final_protocol(), seed=seed)
        if inception:
            out["inception"] = metrics.real_data_floor(inception, "test", ("inception",), seed=seed)
        return out

    key = derived_key(real_data_metrics, **spec)
    return store.cached_json(config.RUNS_DIR / f"real-data-{key}.json", compute, fresh=fresh)


def reconstruction_metrics(run: Run, prof: config.Profile, seed: int = 0, fresh: str | None = None) -> dict:
    """RMSE, SSIM, PSNR and FID (MNIST classifier) of the degraded, direct, Algorithm 1 and
    Algorithm 2 reconstructions of the first `prof.final_samples` test images (conditional mode).
    Cached in the run folder."""
    from . import cold, metrics
    from .data import test_images

    spec = dict(what="reconstruction", run=run.key, n=prof.final_samples, seed=seed)

    def compute() -> dict:
        dev = next(run.model.parameters()).device
        x = test_images(prof.final_samples).to(dev)
        with hardware.autocast(dev.type, run.settings.precision):  # the run's precision, as its samples
            images = cold.reconstructions(run.model, x)

        def fid(im):
            return metrics.evaluate(im, "test", ("classifier",), seed=seed, strict_range=False, log=lambda *_: None)[
                "fid_classifier"
            ]

        return cold.reconstruction_metrics(x.cpu(), images, fid_fn=fid)

    key = derived_key(reconstruction_metrics, ("metrics", "cold"), **spec)
    return store.cached_json(run.dir / f"reconstruction-{key}.json", compute, fresh=fresh)


def precision_for(prof: config.Profile, device: str = "auto", requested: str = "profile") -> tuple[str, str]:
    """(precision, reason) of a run: the profile's choice unless the notebook asks for another."""
    wanted = prof.precision if requested == "profile" else requested
    return hardware.choose_precision(wanted, hardware.pick_device(device).type)
