"""Tables the notebooks show (pandas DataFrames), built from the results that helpers.experiments
computes. Display only: no number is computed here."""
from __future__ import annotations

import dataclasses

import pandas as pd

from . import config


def _pm(r: dict, key: str, digits: int) -> str:
    if key not in r:
        return "n/a"
    se = r.get(f"{key}_se")
    return f"{r[key]:.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None else "")


def metrics_table(results: dict[str, dict]) -> pd.DataFrame:
    """One row per model (label -> result of final_metrics / real_data_metrics)."""
    rows = {}
    for label, r in results.items():
        inc = r.get("inception", {})
        rows[label] = {
            "FID (MNIST classifier)": _pm(r, "fid_classifier", 2),
            "KID (MNIST classifier)": f"{r['kid_classifier_mean']:.4f} ± {r['kid_classifier_std']:.4f}",
            "IS (MNIST classifier)": _pm(r, "is_classifier_mean", 2),
            "class entropy (bits)": f"{abs(r['class_entropy_bits']):.2f}",
            "top class share": f"{r['top_class_share']:.2f}",
            "n vs n_test": f"{r['n']} vs {r['n_reference']}",
            "FID (Inception-v3)": f"{inc['fid_inception']:.1f} (n={inc['n']})" if inc else "not computed",
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def presets_table(names: list[str], overrides: dict | None = None) -> pd.DataFrame:
    """The hyperparameters of DDPM presets side by side (the seed's tables 1.1 and 1.2); `overrides`
    maps a preset name to the changes applied to it."""
    overrides = overrides or {}
    cols = {n: dataclasses.asdict(config.ddpm_preset(n, **overrides.get(n, {}))) for n in names}
    return pd.DataFrame(cols).astype(str)


def config_table(cfg, name: str = "value") -> pd.DataFrame:
    """Any configuration dataclass as a one-column table."""
    return pd.DataFrame({name: dataclasses.asdict(cfg)}).astype(str)


def reconstruction_table(table: dict) -> pd.DataFrame:
    """The reconstruction metrics, one row per kind of image."""
    return pd.DataFrame.from_dict(table, orient="index").round(4)


def ddim_table(sweep: dict) -> pd.DataFrame:
    """FID and IS against the number of sampling steps, with the time per sample and the speed-up."""
    frame = pd.DataFrame(sweep["rows"])
    frame["eta"] = frame["eta"].map(lambda e: "-" if e is None or e != e else f"{e:g}")  # None / NaN: Prince
    frame["FID (MNIST classifier)"] = [f"{f:.2f} ± {s:.2f}" for f, s in
                                       zip(frame["fid_classifier"], frame["fid_classifier_se"])]
    frame["IS (MNIST classifier)"] = frame["is_classifier_mean"].map(lambda v: f"{v:.2f}")
    frame["s per sample"] = frame["seconds_per_sample"].map(lambda v: f"{v:.3f}")
    frame["speed-up"] = frame["speedup"].map(lambda v: f"{v:.1f}x")
    return frame[["sampler", "steps", "eta", "FID (MNIST classifier)", "IS (MNIST classifier)", "n",
                  "s per sample", "speed-up"]]


def ema_table(comparison: dict) -> pd.DataFrame:
    """Raw against EMA weights at each evaluated epoch."""
    rows = []
    for epoch, pair in comparison["per_epoch"].items():
        for which in ("raw", "ema"):
            m = pair[which]
            rows.append({"epoch": epoch, "weights": which, "FID (MNIST classifier)": f"{m['fid_classifier']:.2f}",
                         "IS (MNIST classifier)": f"{m['is_classifier_mean']:.2f}", "n": m["n"]})
    return pd.DataFrame(rows)
