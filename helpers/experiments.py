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
                         and k not in _IPYTHON_NAMES and not isinstance(v, types.ModuleType))
        if unknown:
            raise ValueError(f"unknown parameter {unknown[0]!r}; this notebook takes {sorted(params)}")
    out = dict(params)
    if "profile" in params and params["profile"] is not None:
        config.check_choice("profile", params["profile"], config.PROFILES)
    if "preset" in params:
        config.check_choice("preset", params["preset"], config.DDPM_PRESETS)
    if "seed" in params:
        config.check_int("seed", params["seed"], 0)
    if "device" in params:
        config.check_choice("device", params["device"], ("auto", "cpu", "cuda"))
    return out


def train_ddpm(preset: str = "default", profile: str | config.Profile | None = None, seed: int = 0,
               overrides: dict | None = None, device: str = "auto", runs_dir: Path | None = None,
               progress: bool = True, **train_overrides: Any) -> Run:
    """Train a DDPM preset under a profile, or return the finished run from the cache."""
    cfg = config.ddpm_preset(preset, **(overrides or {}))
    prof = profile if isinstance(profile, config.Profile) else resolve_profile(profile)
    settings = TrainSettings.from_profile(prof, seed=seed, **train_overrides)
    return train(lambda: DDPM(cfg), dataclasses.asdict(cfg), settings, kind="ddpm", label=preset,
                 runs_dir=runs_dir, device=device, progress=progress)
