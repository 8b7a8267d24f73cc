"""Results files: the numbers each notebook shows, as plain JSON under results/<profile>/<notebook>.json.

Run folders hold the cache (hash-named, verified); these files are the interface to the report
(`helpers.report`), so every notebook writes the same shape, built here (`notebook_block`,
`model_block`, `run_summary`; report/README.md describes it). They are written atomically, and
non-finite numbers become `null`, so any JSON reader (not only Python's) can read them. `load` is the
one reader: a field that a file lacks raises `MissingField` naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from . import config, store, study

# What may be saved: the four notebooks and the pipeline's own record (helpers.pipeline).
NOTEBOOKS = tuple(study.NOTEBOOKS)  # the notebooks whose numbers the report reads (the contract's order)
RECORDS = NOTEBOOKS + ("pipeline",)

# The per-epoch numbers a RUN block keeps (metrics.EPOCH_METRICS plus the sample size and epoch).
EPOCH_FIELDS = (
    "fid_classifier",
    "fid_classifier_se",
    "kid_classifier_mean",
    "kid_classifier_std",
    "is_classifier_mean",
    "is_classifier_mean_se",
    "is_classifier_std",
    "class_entropy_bits",
    "top_class_share",
    "class_counts",
    "n",
    "n_reference",
    "epoch",
)


def results_dir() -> Path:
    """DIFFUSION_RESULTS_DIR, read at every call (tests and the pipeline set it), else <repo>/results."""
    return config._dir("DIFFUSION_RESULTS_DIR", config.ROOT / "results")


def _check(profile: str, notebook: str) -> None:
    if not isinstance(profile, str) or not profile or "/" in profile or profile.startswith("."):
        raise ValueError(
            f"profile={profile!r} is not allowed; expected a profile name such as {sorted(config.PROFILES)}"
        )
    config.check_choice("notebook", notebook, RECORDS)


def path(profile: str, notebook: str) -> Path:
    """results/<profile>/<notebook>.json (the file need not exist)."""
    _check(profile, notebook)
    return results_dir() / profile / f"{notebook}.json"


def _finite(obj: Any) -> Any:
    """NaN and infinities -> None: strict JSON has no spelling for them."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def save(profile: str, notebook: str, data: dict) -> Path:
    """Write `data` as results/<profile>/<notebook>.json, atomically.

    "notebook" and "profile" are filled in, and "profile_settings" too when `profile` is one of
    config.PROFILES (the report states the protocol from it). Numpy / torch scalars become plain
    numbers; anything that is not JSON-able is refused with an error naming where it sits.
    """
    _check(profile, notebook)
    if not isinstance(data, dict):
        raise TypeError(f"data must be a dict, not {type(data).__name__}")
    data = dict(data)
    for name, value in (("notebook", notebook), ("profile", profile)):
        if data.setdefault(name, value) != value:
            raise ValueError(f"data[{name!r}]={data[name]!r} disagrees with {name}={value!r}")
    if notebook != "pipeline" and profile in config.PROFILES:
        data.setdefault("profile_settings", dataclasses.asdict(config.PROFILES[profile]))
    plain = _finite(store.to_plain(data, f"{notebook}.json"))
    return store.write_json(path(profile, notebook), plain)


class MissingField(LookupError):
    """A results file lacks a field that its reader needs."""


class Node(dict):
    """A dict of a results file whose missing fields raise MissingField naming the file and the field
    (`.get` still answers None for the optional ones)."""

    where = ""

    def __missing__(self, key):
        raise MissingField(f"{self.where} has no field {key!r} (rerun the notebook that writes this file)")


def _nodes(obj: Any, where: str) -> Any:
    if isinstance(obj, dict):
        node = Node({k: _nodes(v, f"{where}.{k}") for k, v in obj.items()})
        node.where = where
        return node
    if isinstance(obj, list):
        return [_nodes(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    return obj


def load(profile: str, notebook: str, folder: Path | None = None) -> dict:
    """The results file of one notebook (under `folder`/<profile>/, default `results_dir()`), as Nodes;
    FileNotFoundError names the notebook that writes it, CorruptFile a file that is not JSON."""
    _check(profile, notebook)
    p = Path(folder) / profile / f"{notebook}.json" if folder else path(profile, notebook)
    if not p.is_file():
        what = "helpers.pipeline" if notebook == "pipeline" else f"notebooks/{notebook}.ipynb"
        raise FileNotFoundError(f"{p} does not exist: run {what} with profile={profile!r} first")
    try:
        return _nodes(store.loads(p.read_text()), str(p))
    except ValueError as exc:
        raise store.CorruptFile(f"{p} is not valid JSON ({exc})") from exc


def load_all(profile: str, folder: Path | None = None) -> dict[str, dict]:
    """Every results file of a profile (the pipeline record is optional); FileNotFoundError names the
    notebooks whose file is missing."""
    out, missing = {}, []
    for name in RECORDS:
        try:
            out[name] = load(profile, name, folder)
        except FileNotFoundError:
            missing += [name] if name in NOTEBOOKS else []
    if missing:
        where = (Path(folder) if folder else results_dir()) / profile
        raise FileNotFoundError(
            f"no results for notebook(s) {', '.join(missing)} of profile {profile!r} in "
            f"{where}: run ./run_all.sh --profile {profile} (or those notebooks) first"
        )
    return out


def run_summary(run) -> dict:
    """The RUN block of a results file for a `helpers.training.Run`: identity, losses, timings and the
    per-epoch FID / KID / IS measured during training (keys are epochs as strings, as JSON has them)."""
    meta_file = Path(run.dir) / "run.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    try:
        device = str(next(run.model.parameters()).device)
    except (StopIteration, AttributeError):
        device = "unknown"
    logs = run.logs
    return {
        "key": run.key,
        "label": meta.get("label") or Path(run.dir).name,
        "epochs": len(logs.get("epoch_loss", [])),
        "train_limit": run.settings.train_limit,
        "cached": bool(run.cached),
        "device": device,
        "precision": run.settings.precision,
        "epoch_loss": [float(v) for v in logs.get("epoch_loss", [])],
        "epoch_seconds": [float(v) for v in logs.get("epoch_seconds", [])],
        "train_seconds": [float(v) for v in logs.get("train_seconds", [])],
        "steps": len(logs.get("iter_loss", [])),
        "per_epoch": {
            str(e): {k: m[k] for k in EPOCH_FIELDS if k in m} for e, m in sorted(logs.get("metrics", {}).items())
        },
    }


def model_block(cfg, run, final: dict, **extra: Any) -> dict:
    """The block of one model in a results file: its resolved configuration, its run summary, its
    final metrics, and any further named results (for example `reconstruction=`)."""
    return {"config": dataclasses.asdict(cfg), "run": run_summary(run), "final": final, **extra}


def notebook_block(params: dict, real: dict, real_per_epoch: dict, models: dict[str, dict], **extra: Any) -> dict:
    """What every notebook saves, in one shape: the parameters it ran with (they name the roles of its
    models: `preset`, `baseline`, `cold_preset`), the real-data rows at the final and the per-epoch
    sample sizes, its models by preset name (each a `model_block`), and any further named results
    (for example `ddim=`, `ema=`)."""
    return {"params": dict(params), "real": real, "real_per_epoch": real_per_epoch, "models": dict(models), **extra}
