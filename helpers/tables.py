"""How every number of the study is written, and the tables the notebooks show.

`fmt(name, value)` writes a value by the name of its field (FID, KID, IS, seconds, shares, ...): one
set of rounding rules for the report (`tex=True`: LaTeX, as `helpers.report` puts it into the PDF)
and for the notebooks' pandas tables (`tex=False`: plain text). Display only: nothing is computed here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from . import config

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "$": r"\$",
    "&": r"\&",
    "#": r"\#",
    "^": r"\^{}",
    "_": r"\_",
    "%": r"\%",
    "~": r"\~{}",
}
# The pieces that differ between LaTeX and plain text.
_STYLE = {
    True: {
        "na": r"\textit{n/a}",
        "thousands": "{,}",
        "minus": "$-$",
        "thin": r"\,",
        "percent": r"\%",
        "times": r"\texttimes{}",
        "pm": r"~\ensuremath{\pm}~",
    },  # ~: never broken across lines
    False: {"na": "n/a", "thousands": ",", "minus": "-", "thin": " ", "percent": "%", "times": "x", "pm": " ± "},
}


def escape(text: Any, tex: bool = True) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in str(text)) if tex else str(text)


def integer(n: int, tex: bool = True) -> str:
    """10000 -> 10{,}000 in LaTeX (a comma that is not spaced as punctuation), 10,000 as text."""
    s = _STYLE[tex]
    return f"{int(n):,}".replace(",", s["thousands"]).replace("-", s["minus"])


def _neg(text: str, tex: bool) -> str:
    return _STYLE[tex]["minus"] + text[1:] if text.startswith("-") else text


def decimals(v: float, digits: int, tex: bool = True) -> str:
    return _neg(f"{v:.{digits}f}", tex)


def scientific(v: float, tex: bool = True) -> str:
    """2e-4 -> $2\\times10^{-4}$ (text: 2e-4), 1e-4 -> $10^{-4}$; ordinary numbers stay as they are."""
    if v == 0 or 1e-3 <= abs(v) < 1e4:
        return _neg(f"{v:g}", tex)
    mant, exp = f"{v:.3e}".split("e")
    mant = mant.rstrip("0").rstrip(".")
    if not tex:
        return f"{mant}e{int(exp)}"
    power = f"10^{{{int(exp)}}}"
    return f"${power}$" if mant == "1" else f"${mant}\\times{power}$"


def seconds(s: float, tex: bool = True) -> str:
    t = _STYLE[tex]["thin"]
    if s < 1:
        return f"{s * 1e3:.3g}{t}ms"
    if s < 60:
        return f"{s:.1f}{t}s"
    s = int(round(s))
    if s < 3600:
        return f"{s // 60}{t}min {s % 60:02d}{t}s"
    return f"{s // 3600}{t}h {s % 3600 // 60:02d}{t}min"


def percent(share: float, tex: bool = True) -> str:
    s = _STYLE[tex]
    return f"{100 * share:.1f}{s['thin']}{s['percent']}"


def _kind(name: str) -> str:
    """How a field is written, by its name (a trailing "_se" is written like its value)."""
    n = name.lower()
    n = n[:-3] if n.endswith("_se") else n
    if n in ("lr", "betas"):
        return "sci"
    if n.startswith("fid"):
        return "fid"
    if n.startswith("kid"):
        return "kid"
    if n.startswith("is_"):
        return "is"
    if n in ("rmse", "ssim", "psnr", "speedup", "class_entropy_bits"):
        return n
    if n == "seconds" or n.endswith("seconds") or n.startswith("seconds"):
        return "seconds"
    if n.endswith("_share"):
        return "percent"
    if "loss" in n:
        return "loss"
    return "plain"


_DIGITS = {"kid": 4, "is": 2, "psnr": 2, "class_entropy_bits": 2, "rmse": 4, "ssim": 3}


def fmt(name: str, value: Any, tex: bool = True) -> str:
    """One result value, written by the name of its field: FID with 2 decimals (1 from 100 up), KID 4,
    IS 2, RMSE 4, SSIM 3, PSNR 2, losses 4 (scientific below 1e-3), counts with thousands separators,
    times in ms / s / min / h, shares in %."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return _STYLE[tex]["na"]
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return escape(value, tex)
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(fmt(name, v, tex) for v in value) + ")"
    kind = _kind(name)
    if isinstance(value, int) and kind not in ("sci", "seconds", "percent"):
        return integer(value, tex)
    v = float(value)
    if kind == "fid":
        return decimals(v, 2 if abs(v) < 100 else 1, tex)
    if kind in _DIGITS:
        return decimals(v, _DIGITS[kind], tex)
    if kind == "loss":
        return decimals(v, 4, tex) if abs(v) >= 1e-3 else scientific(v, tex)
    if kind == "seconds":
        return seconds(v, tex)
    if kind == "percent":
        return percent(v, tex)
    if kind == "speedup":
        return f"{v:.1f}{_STYLE[tex]['times']}"
    if kind == "sci":
        return scientific(v, tex)
    return _neg(f"{v:.4g}", tex)


def pm(name: str, value: Any, se: Any, tex: bool = True) -> str:
    """value ± se, the error written with the value's decimals."""
    if value is None or se is None:
        return fmt(name, value, tex)
    text = fmt(name, value, True)
    digits = len(text.split(".")[1]) if "." in text and "\\" not in text else 2
    return f"{fmt(name, value, tex)}{_STYLE[tex]['pm']}{se:.{digits}f}"


# --------------------------------------------------------------------------- the notebooks' tables
def _frame(rows: dict, **kw):
    import pandas as pd

    return pd.DataFrame.from_dict(rows, **kw)


def metrics_table(results: dict[str, dict]):
    """One row per model (label -> result of final_metrics / real_data_metrics)."""
    rows = {}
    for label, r in results.items():
        inc = r.get("inception") or {}
        rows[label] = {
            "FID (MNIST classifier)": pm("fid_classifier", r.get("fid_classifier"), r.get("fid_classifier_se"), False),
            "KID (MNIST classifier)": pm(
                "kid_classifier_mean", r["kid_classifier_mean"], r["kid_classifier_std"], False
            ),
            "IS (MNIST classifier)": pm(
                "is_classifier_mean", r.get("is_classifier_mean"), r.get("is_classifier_mean_se"), False
            ),
            "class entropy (bits)": fmt("class_entropy_bits", r["class_entropy_bits"], False),
            "top class share": fmt("top_class_share", r["top_class_share"], False),
            "n vs n_test": f"{fmt('n', r['n'], False)} vs {fmt('n', r['n_reference'], False)}",
            "FID (Inception-v3)": (
                f"{fmt('fid_inception', inc['fid_inception'], False)} (n={fmt('n', inc['n'], False)})"
                if inc.get("n")
                else "not computed"
            ),
        }
    return _frame(rows, orient="index")


def presets_table(names: list[str], overrides: dict | None = None):
    """The hyperparameters of DDPM presets side by side (the seed's tables 1.1 and 1.2); `overrides`
    maps a preset name to the changes applied to it."""
    overrides = overrides or {}
    cols = {n: dataclasses.asdict(config.ddpm_preset(n, **overrides.get(n, {}))) for n in names}
    return _frame({n: {k: fmt(k, v, False) for k, v in c.items()} for n, c in cols.items()})


def config_table(cfg, name: str = "value"):
    """Any configuration dataclass as a one-column table."""
    return _frame({name: {k: fmt(k, v, False) for k, v in dataclasses.asdict(cfg).items()}})


def reconstruction_table(table: dict):
    """The reconstruction metrics, one row per kind of image."""
    return _frame({kind: {k: fmt(k, v, False) for k, v in r.items()} for kind, r in table.items()}, orient="index")


def ddim_table(sweep: dict):
    """FID and IS against the number of sampling steps, with the time per sample and the speed-up."""
    rows = [
        {
            "sampler": r["sampler"],
            "steps": r["steps"],
            "eta": fmt("eta", r.get("eta"), False) if r["sampler"] == "ddim" else "-",
            "FID (MNIST classifier)": pm("fid_classifier", r["fid_classifier"], r.get("fid_classifier_se"), False),
            "IS (MNIST classifier)": fmt("is_classifier_mean", r.get("is_classifier_mean"), False),
            "n": r.get("n"),
            "s per sample": fmt("seconds_per_sample", r.get("seconds_per_sample"), False),
            "speed-up": fmt("speedup", r.get("speedup"), False),
        }
        for r in sweep["rows"]
    ]
    return _frame(dict(enumerate(rows)), orient="index")


def network_table(comparison: dict):
    """The networks of `analyses.network_comparison` side by side: size, steps, training time and
    metrics, at the same number of steps (per-epoch evaluation) and at the end of each run (final)."""
    rows = {}
    same = comparison.get("same_steps")
    for name, net in comparison["networks"].items():
        points = [("final", net["steps"], net["train_seconds"], net["final"])]
        if same:
            points.insert(
                0,
                ("same steps", same["steps"], net["train_seconds_cumulative"][same["epoch"] - 1], same["models"][name]),
            )
        for when, steps, seconds, m in points:
            rows[f"{name} ({net['net']}), {when}"] = {
                "parameters": fmt("parameters", net["parameters"], False),
                "MFLOP per image": fmt("mflops", net["mflops_per_image"], False),
                "steps": fmt("steps", steps, False),
                "training time": fmt("seconds", seconds, False),
                "FID (MNIST classifier)": pm(
                    "fid_classifier", m.get("fid_classifier"), m.get("fid_classifier_se"), False
                ),
                "KID": pm("kid_classifier_mean", m["kid_classifier_mean"], m["kid_classifier_std"], False),
                "IS": pm("is_classifier_mean", m.get("is_classifier_mean"), m.get("is_classifier_mean_se"), False),
                "top class share": fmt("top_class_share", m["top_class_share"], False),
                "n": fmt("n", m["n"], False),
            }
    return _frame(rows, orient="index")
