"""What the notebooks call: resolve and validate parameters, then train (or fetch from the cache)."""
from __future__ import annotations

import dataclasses
import types
from pathlib import Path
from typing import Any

from . import config
from .ddpm import DDPM
from .training import Run, TrainSettings, train


def resolve_profile(name: str | None) -> config.Profile:
    """`None` picks the default for this machine (full with CUDA, quick without) and says why."""
    if name is None:
        name, why = config.default_profile_name()
        print(f"profile: {name} ({why})")
    return config.profile(name)


# Names IPython puts in every notebook's namespace.
_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def check_params(namespace: dict | None = None, **params: Any) -> dict:
    """Validate the parameters a notebook was given, before any work starts.

    With `namespace=globals()`, any other variable defined before this call (a name papermill
    injected that the parameters cell does not declare) is refused too.
    """
    if namespace is not None:
        unknown = sorted(k for k, v in namespace.items() if not k.startswith("_") and k not in params
                         and k not in _IPYTHON_NAMES and not isinstance(v, types.ModuleType)
                         and not callable(v))
        if unknown:
            raise ValueError(f"unknown parameter {unknown[0]!r}; this notebook takes {sorted(params)}")
    out = dict(params)
    if "profile" in params and params["profile"] is not None:
        config.check_choice("profile", params["profile"], config.PROFILES)
    for name in ("preset", "baseline"):
        if name in params:
            config.check_choice(name, params[name], config.DDPM_PRESETS)
    if "cold_preset" in params:
        config.check_choice("cold_preset", params["cold_preset"], config.COLD_PRESETS)
    if "cold_variants" in params:
        variants = params["cold_variants"]
        if not isinstance(variants, (list, tuple)) or not all(
                isinstance(v, str) and v in config.COLD_PRESETS for v in variants):
            raise ValueError(f"cold_variants={variants!r} is not allowed; expected a list of "
                             f"{sorted(config.COLD_PRESETS)}")
    if "seed" in params:
        config.check_int("seed", params["seed"], 0)
    if "device" in params:
        config.check_choice("device", params["device"], ("auto", "cpu", "cuda"))
    return out


def evaluation_settings(prof: config.Profile, seed: int = 0) -> tuple[Any, dict]:
    """The per-epoch FID / KID / IS hook of a profile: (evaluate function, TrainSettings fields)."""
    from . import metrics

    epochs = tuple(e for e in prof.eval_epochs if e <= prof.epochs)
    if not epochs:
        return None, {}
    fn, key = metrics.epoch_evaluator(prof.eval_samples, seed=seed)
    return fn, {"eval_epochs": epochs, "eval_key": key}


# Modules whose code decides a run's result (besides the model's own): a change to any retrains.
ENGINE_MODULES = ("models", "training")
EVAL_MODULES = ("metrics", "classifier")


def train_ddpm(preset: str = "default", profile: str | config.Profile | None = None, seed: int = 0,
               overrides: dict | None = None, device: str = "auto", runs_dir: Path | None = None,
               progress: bool = True, evaluate: bool = True, **train_overrides: Any) -> Run:
    """Train a DDPM preset under a profile, or return the finished run from the cache.

    With `evaluate`, FID / KID / IS (MNIST classifier) are measured at the profile's eval epochs
    and stored in `run.metrics`.
    """
    cfg = config.ddpm_preset(preset, **(overrides or {}))
    prof = profile if isinstance(profile, config.Profile) else resolve_profile(profile)
    fn, eval_fields = evaluation_settings(prof, seed) if evaluate else (None, {})
    settings = TrainSettings.from_profile(prof, seed=seed, **{**eval_fields, **train_overrides})
    modules = ENGINE_MODULES + ("ddpm",) + (EVAL_MODULES if fn else ())
    return train(lambda: DDPM(cfg), dataclasses.asdict(cfg), settings, kind="ddpm", label=preset,
                 code_modules=modules, runs_dir=runs_dir, device=device, progress=progress,
                 evaluate=fn)


def train_cold(preset: str = "columns", profile: str | config.Profile | None = None, seed: int = 0,
               overrides: dict | None = None, device: str = "auto", runs_dir: Path | None = None,
               progress: bool = True, evaluate: bool = True, **train_overrides: Any) -> Run:
    """Train a cold-diffusion preset under a profile, or return the finished run from the cache.

    The prior of x_T (for unconditional generation) is fitted on the training images when the model
    is built and saved with it. With `evaluate`, the per-epoch FID / KID / IS measure unconditional
    samples (Algorithm 2 from prior draws).
    """
    from .cold import ColdDiffusion, training_prior

    cfg = config.cold_preset(preset, **(overrides or {}))
    prof = profile if isinstance(profile, config.Profile) else resolve_profile(profile)
    fn, eval_fields = evaluation_settings(prof, seed) if evaluate else (None, {})
    settings = TrainSettings.from_profile(prof, seed=seed, **{**eval_fields, **train_overrides})

    def build() -> ColdDiffusion:
        return ColdDiffusion(cfg).set_prior(*training_prior(cfg.axis, cfg.group, settings.train_limit))

    modules = ENGINE_MODULES + ("degradations", "cold") + (EVAL_MODULES if fn else ())
    return train(build, dataclasses.asdict(cfg), settings, kind="cold", label=preset,
                 code_modules=modules, runs_dir=runs_dir, device=device, progress=progress, evaluate=fn)


# --------------------------------------------------------------------------- final numbers
def generate(model, n: int, seed: int = 0, batch_size: int = 500, progress: bool = True):
    """n samples from `model.sample` in batches, from a generator of their own (model range, CPU)."""
    import torch
    from tqdm.auto import tqdm

    dev = next(model.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed)
    parts = []
    for start in tqdm(range(0, n, batch_size), desc="generating", unit="batch", disable=not progress,
                      leave=False):
        parts.append(model.sample(min(batch_size, n - start), generator=gen).float().cpu())
    return torch.cat(parts)


def _cached_json(path: Path, compute) -> dict:
    """Load a result written earlier under this exact key, or compute it and write it atomically.

    The file stores the result with the SHA-256 of its canonical text; a file that fails the check
    is reported and recomputed, never used. A lock makes a second process wait for the first one's
    result instead of computing it again.
    """
    import hashlib
    import json

    from .training import atomic_write_bytes, file_lock

    def digest(result) -> str:
        return hashlib.sha256(json.dumps(result, sort_keys=True).encode()).hexdigest()

    with file_lock(path.with_name(f".{path.name}.lock"), path.name):
        if path.is_file():
            try:
                stored = json.loads(path.read_text())
                if stored["sha256"] == digest(stored["result"]):
                    return stored["result"]
            except (json.JSONDecodeError, KeyError, TypeError):
                pass
            print(f"ignoring damaged result file {path}; recomputing")
        result = compute()
        text = json.dumps({"sha256": digest(result), "result": result}, indent=1, sort_keys=True)
        atomic_write_bytes(path, text.encode())
        return result


def _key(spec: dict) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


FINAL_SEED_OFFSET = 7919  # final samples use other noise than the per-epoch ones
N_BOOTSTRAP = 20


def final_metrics(run: Run, prof: config.Profile, seed: int = 0, progress: bool = True) -> dict:
    """FID / KID / IS (MNIST classifier) of `prof.final_samples` generated images against the test
    set, with bootstrap standard errors, and the Inception-v3 FID of the first
    `prof.inception_samples` of them. Cached in the run folder."""
    from . import metrics
    from .training import code_version

    spec = {"run": run.key, "n": prof.final_samples, "inception": prof.inception_samples, "seed": seed,
            "bootstrap": N_BOOTSTRAP, "code": code_version(EVAL_MODULES + ("inception",))}

    def compute() -> dict:
        images = generate(run.model, prof.final_samples, seed + FINAL_SEED_OFFSET, progress=progress)
        out = metrics.evaluate(images, "test", ("classifier",), n_bootstrap=N_BOOTSTRAP, seed=seed,
                               strict_range=False)
        if prof.inception_samples:
            k = min(prof.inception_samples, len(images))
            out["inception"] = metrics.evaluate(images[:k], "test", ("inception",), seed=seed,
                                                strict_range=False)
        return out

    return _cached_json(run.dir / f"final-{_key(spec)}.json", compute)


def real_data_metrics(prof: config.Profile, seed: int = 0) -> dict:
    """The "real data" row: training images scored like `prof.final_samples` generated ones."""
    from . import metrics
    from .training import code_version

    spec = {"n": prof.final_samples, "inception": prof.inception_samples, "seed": seed,
            "bootstrap": N_BOOTSTRAP, "code": code_version(EVAL_MODULES + ("inception",))}

    def compute() -> dict:
        out = metrics.real_data_floor(prof.final_samples, "test", ("classifier",),
                                      n_bootstrap=N_BOOTSTRAP, seed=seed)
        if prof.inception_samples:
            out["inception"] = metrics.real_data_floor(prof.inception_samples, "test", ("inception",),
                                                       seed=seed)
        return out

    return _cached_json(config.RUNS_DIR / f"real-data-{_key(spec)}.json", compute)


def metrics_table(results: dict[str, dict]):
    """One row per model (label -> result of final_metrics / real_data_metrics), as a DataFrame."""
    import pandas as pd

    def pm(r: dict, key: str, digits: int) -> str:
        if key not in r:
            return "n/a"
        se = r.get(f"{key}_se")
        return f"{r[key]:.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None else "")

    rows = {}
    for label, r in results.items():
        inc = r.get("inception", {})
        rows[label] = {
            "FID (MNIST classifier)": pm(r, "fid_classifier", 2),
            "KID (MNIST classifier)": f"{r['kid_classifier_mean']:.4f} ± {r['kid_classifier_std']:.4f}",
            "IS (MNIST classifier)": pm(r, "is_classifier_mean", 2),
            "class entropy (bits)": f"{abs(r['class_entropy_bits']):.2f}",
            "top class share": f"{r['top_class_share']:.2f}",
            "n vs n_test": f"{r['n']} vs {r['n_reference']}",
            "FID (Inception-v3)": f"{inc['fid_inception']:.1f} (n={inc['n']})" if inc else "not computed",
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def presets_table(names: list[str]):
    """The hyperparameters of DDPM presets side by side (the seed's tables 1.1 and 1.2)."""
    import pandas as pd

    return pd.DataFrame({n: dataclasses.asdict(config.ddpm_preset(n)) for n in names}).astype(str)


# --------------------------------------------------------------------------- cold diffusion
def cold_reconstruction_metrics(run: Run, prof: config.Profile, seed: int = 0) -> dict:
    """RMSE, SSIM, PSNR and FID (MNIST classifier) of the degraded, direct, Algorithm 1 and
    Algorithm 2 reconstructions of the first `prof.final_samples` test images (conditional mode).
    Cached in the run folder."""
    from . import cold, metrics
    from .data import test_images
    from .training import code_version

    spec = {"run": run.key, "n": prof.final_samples, "seed": seed,
            "code": code_version(EVAL_MODULES + ("cold", "degradations"))}

    def compute() -> dict:
        x = test_images(prof.final_samples).to(next(run.model.parameters()).device)
        images = cold.reconstructions(run.model, x)

        def fid(im):
            return metrics.evaluate(im, "test", ("classifier",), seed=seed, strict_range=False,
                                    log=lambda *_: None)["fid_classifier"]

        return cold.reconstruction_metrics(x.cpu(), images, fid_fn=fid)

    return _cached_json(run.dir / f"reconstruction-{_key(spec)}.json", compute)


def cold_examples(run: Run, n: int = 8, seed: int = 0) -> dict:
    """Rows for a figure: test originals, D(x, T), the three restorations, and unconditional samples."""
    import torch

    from . import cold
    from .data import test_images

    dev = next(run.model.parameters()).device
    x = test_images(n).to(dev)
    rows = {"original": x.cpu(), **cold.reconstructions(run.model, x)}
    rows["unconditional"] = run.model.sample(n, generator=torch.Generator(device=dev).manual_seed(seed)).cpu()
    return rows


def reconstruction_table(table: dict):
    """The reconstruction metrics as a DataFrame, one row per kind of image."""
    import pandas as pd

    return pd.DataFrame.from_dict(table, orient="index").round(4)
