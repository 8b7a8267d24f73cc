"""The report: results/<profile>/*.json -> generated LaTeX definitions -> report/<profile>/report.pdf.

    python -m helpers.report --profile NAME [--generate-only] [--results-dir D] [--plots-dir D] [--out-dir D]

`generate` turns every number of the results files into a definition `\\resdef{key}{text}` (keys such as
`01-ddpm/final/fid-classifier-pm`, formatted by what the number is), adds table bodies built from the
data, the title-page stamp, figure file names and sentences whose wording the numbers decide (with
their uncertainty), and writes them to <out>/generated/report-results.tex. report/report.tex uses
them as `\\res{key}`: an undefined key stops pdflatex with an error naming it, and `build` turns that
into a ReportError. No number of the report is typed into report/.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from . import config, results, store

DEBIAN_PACKAGES = "latexmk texlive-latex-recommended texlive-fonts-recommended lmodern"
SOURCE_DIR = config.REPORT_DIR
MAIN = "report.tex"
GENERATED = "report-results.tex"
KEYS_FILE = "keys.txt"

# Two numbers differ "resolved" when |a - b| exceeds this many standard errors of the difference.
RESOLVE_SE = 2.0
# Reconstruction metrics carry no standard error: they are called different only when RMSE and SSIM
# both move by more than this relative amount, in the same direction.
REL_TOL = 0.01

# The student's own final report (SPEC section 5): shown for the discussion, never as targets.
# Their FID: Inception-v3 on 100 vs 100 images wrapped by a uint8 cast; IS from 16-image splits.
STUDENT = {
    "ddpm-default": {"label": "DDPM, default set, 100 epochs", "fid": "98.7", "is": "1.38"},
    "ddpm-t1500": {"label": "DDPM, $T = 1500$ set", "fid": "95.4", "is": "1.5"},
    "cold-rows28": {"label": "rows, 28 steps, random order, 80 epochs, conditional", "fid": "108.5",
                    "is": "1.9"},
    "cold-grouped": {"label": "grouped rows or columns (7 steps)", "fid": "190--195", "is": "n/a"},
}
STUDENT_FID_IMAGES = 100
STUDENT_IS_SPLIT = 16


class ReportError(RuntimeError):
    """The report cannot be generated or built; the message says what is missing or wrong."""


# --------------------------------------------------------------------------- formatting
_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#",
                  "^": r"\^{}", "_": r"\_", "%": r"\%", "~": r"\~{}"}
NA = r"\textit{n/a}"
PM = r"\ensuremath{\pm}"


def escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in str(text))


def slug(name: Any) -> str:
    return str(name).replace("_", "-").lower()


def integer(n: int) -> str:
    """10000 -> 10{,}000 (a comma that LaTeX does not space as punctuation in math)."""
    return f"{int(n):,}".replace(",", "{,}").replace("-", "$-$")


def _neg(text: str) -> str:
    return "$-$" + text[1:] if text.startswith("-") else text


def decimals(v: float, digits: int) -> str:
    return _neg(f"{v:.{digits}f}")


def fid_digits(v: float) -> int:
    return 2 if abs(v) < 100 else 1


def scientific(v: float) -> str:
    """2e-4 -> $2\\times10^{-4}$, 1e-4 -> $10^{-4}$; ordinary numbers stay as they are."""
    if v == 0 or 1e-3 <= abs(v) < 1e4:
        return _neg(f"{v:g}")
    mant, exp = f"{v:.3e}".split("e")
    mant = mant.rstrip("0").rstrip(".")
    power = f"10^{{{int(exp)}}}"
    return f"${power}$" if mant == "1" else f"${mant}\\times{power}$"


def seconds(s: float) -> str:
    if s < 1:
        return f"{s * 1e3:.3g}\\,ms"
    if s < 60:
        return f"{s:.1f}\\,s"
    s = int(round(s))
    if s < 3600:
        return f"{s // 60}\\,min {s % 60:02d}\\,s"
    return f"{s // 3600}\\,h {s % 3600 // 60:02d}\\,min"


def percent(share: float) -> str:
    return f"{100 * share:.1f}\\,\\%"


# How each number is written, by the name of its field (a trailing "_se" is written like its value).
def _kind(name: str) -> str:
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


def fmt(name: str, value: Any) -> str:
    """The LaTeX text of one result value, by the name of its field (FID, KID, IS, seconds, ...)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return NA
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(fmt(name, v) for v in value) + ")"
    kind = _kind(name)
    if isinstance(value, int) and kind not in ("sci", "seconds", "percent"):
        return integer(value)
    v = float(value)
    if kind == "fid":
        return decimals(v, fid_digits(v))
    if kind == "kid":
        return decimals(v, 4)
    if kind in ("is", "psnr", "class_entropy_bits"):
        return decimals(v, 2)
    if kind == "rmse":
        return decimals(v, 4)
    if kind == "ssim":
        return decimals(v, 3)
    if kind == "loss":
        return decimals(v, 4) if abs(v) >= 1e-3 else scientific(v)
    if kind == "seconds":
        return seconds(v)
    if kind == "percent":
        return percent(v)
    if kind == "speedup":
        return f"{v:.1f}\\texttimes{{}}"
    if kind == "sci":
        return scientific(v)
    return _neg(f"{v:.4g}")


def pm(name: str, value: Any, se: Any) -> str:
    """value +- se, the error written with the value's decimals."""
    if value is None or se is None:
        return fmt(name, value)
    text = fmt(name, value)
    digits = len(text.split(".")[1]) if "." in text and "\\" not in text else 2
    return f"{text}~{PM}~{se:.{digits}f}"  # ~: never broken across lines


def fid_pm(r: dict) -> str:
    return pm("fid_classifier", r["fid_classifier"], r.get("fid_classifier_se"))


def is_pm(r: dict) -> str:
    return pm("is_classifier_mean", r["is_classifier_mean"], r.get("is_classifier_mean_se"))


def kid_pm(r: dict) -> str:
    return pm("kid_classifier_mean", r["kid_classifier_mean"], r.get("kid_classifier_std"))


# --------------------------------------------------------------------------- reading results
class Node(dict):
    """A dict of a results file whose missing fields raise a ReportError naming the file and field
    (`.get` still answers None for the optional ones)."""

    where = ""

    def __missing__(self, key):
        raise ReportError(f"{self.where} has no field {key!r}: the report needs it (rerun the notebook "
                          "that writes this file)")


def nodes(obj: Any, where: str) -> Any:
    if isinstance(obj, dict):
        node = Node({k: nodes(v, f"{where}.{k}") for k, v in obj.items()})
        node.where = where
        return node
    if isinstance(obj, list):
        return [nodes(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    return obj


def load_results(profile: str, results_dir: Path | None = None) -> dict[str, Node]:
    """The results files of a profile (the pipeline record is optional)."""
    folder = Path(results_dir) if results_dir else results.results_dir()
    out = {}
    for name in results.RECORDS:
        p = folder / profile / f"{name}.json"
        if p.is_file():
            try:
                out[name] = nodes(store.loads(p.read_text()), str(p))
            except ValueError as exc:
                raise ReportError(f"{p} is not valid JSON ({exc})") from exc
    missing = [n for n in results.NOTEBOOKS if n not in out]
    if missing:
        raise ReportError(f"no results for notebook(s) {', '.join(missing)} of profile {profile!r} in "
                          f"{folder / profile}: run ./run_all.sh --profile {profile} (or those notebooks) "
                          "first")
    return out


# --------------------------------------------------------------------------- flattening
def flatten(prefix: str, name: str, obj: Any, out: dict[str, str]) -> None:
    """Every value under `obj` as out["prefix/a/b"] = text. A field x with a sibling x_se also gets
    "x-pm" (value +- error); lists of per-epoch numbers get first / last / min / mean / total."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            flatten(f"{prefix}/{slug(k)}", str(k), v, out)
        for k, v in obj.items():
            if f"{k}_se" in obj and isinstance(v, (int, float)):
                out[f"{prefix}/{slug(k)}-pm"] = pm(k, v, obj[f"{k}_se"])
        if "kid_classifier_mean" in obj and "kid_classifier_std" in obj:
            out[f"{prefix}/kid-classifier-pm"] = kid_pm(obj)
        epochs = sorted((int(k), k) for k in obj if str(k).isdigit())
        if epochs and all(isinstance(obj[k], dict) for _, k in epochs):
            flatten(f"{prefix}/first", name, obj[epochs[0][1]], out)
            flatten(f"{prefix}/last", name, obj[epochs[-1][1]], out)
            out[f"{prefix}/epochs"] = ", ".join(str(e) for e, _ in epochs)
        return
    if isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj):
        for i, v in enumerate(obj):
            flatten(f"{prefix}/{i}", name, v, out)
        return
    out[prefix] = fmt(name, obj)
    if isinstance(obj, list) and obj and all(isinstance(v, (int, float)) and v is not None for v in obj):
        for i, v in enumerate(obj):
            out[f"{prefix}/{i}"] = fmt(name, v)
        if name in ("epoch_loss", "epoch_seconds"):
            nums = [float(v) for v in obj]
            out[f"{prefix}/first"], out[f"{prefix}/last"] = fmt(name, nums[0]), fmt(name, nums[-1])
            out[f"{prefix}/min"] = fmt(name, min(nums))
            out[f"{prefix}/mean"] = fmt(name, sum(nums) / len(nums))
            out[f"{prefix}/total"] = fmt(name, sum(nums))


# --------------------------------------------------------------------------- claims
def compare(a: float, se_a: float | None, b: float, se_b: float | None) -> int:
    """+1 when a > b, -1 when a < b, 0 when the difference is within RESOLVE_SE standard errors
    (missing errors count as 0)."""
    se = math.hypot(se_a or 0.0, se_b or 0.0)
    d = a - b
    if abs(d) <= RESOLVE_SE * se or d == 0:
        return 0
    return 1 if d > 0 else -1


def trend_sentence(what: str, name: str, per_epoch: dict, n_text: str) -> str:
    """'FID fell from x at epoch a to y at epoch b' from a run's per-epoch block."""
    epochs = sorted(int(e) for e in per_epoch)
    if not epochs:
        return f"No per-epoch {what} was measured in this profile."
    first, last = per_epoch[str(epochs[0])].get(name), per_epoch[str(epochs[-1])].get(name)
    if len(epochs) == 1 or first is None or last is None:
        return (f"The {what} was measured at epoch {epochs[-1]} only ({fmt(name, last)} on {n_text} "
                "samples), so this profile shows no trend.")
    if last == first:
        verb = "stayed at"
        return f"The {what} {verb} {fmt(name, first)} from epoch {epochs[0]} to epoch {epochs[-1]}."
    verb = "fell" if last < first else "rose"
    return (f"The {what} {verb} from {fmt(name, first)} at epoch {epochs[0]} to {fmt(name, last)} at "
            f"epoch {epochs[-1]}.")


def fid_claim(a_label: str, a: dict, b_label: str, b: dict, verb: str = "ends") -> str:
    """Which of two final results has the lower FID, or that the difference is not resolved."""
    c = compare(a["fid_classifier"], a.get("fid_classifier_se"), b["fid_classifier"],
                b.get("fid_classifier_se"))
    if c == 0:
        return (f"{a_label} and {b_label} end with FIDs of {fid_pm(a)} and {fid_pm(b)}: the difference "
                f"is within {RESOLVE_SE:g} standard errors, so this run does not resolve which is closer "
                "to the test set.")
    word = "higher" if c > 0 else "lower"
    return (f"{a_label} {verb} with a {word} FID ({fid_pm(a)}) than {b_label} ({fid_pm(b)}), a difference "
            f"larger than {RESOLVE_SE:g} standard errors.")


def is_claim(a_label: str, a: dict, b_label: str, b: dict) -> str:
    c = compare(a["is_classifier_mean"], a.get("is_classifier_mean_se"), b["is_classifier_mean"],
                b.get("is_classifier_mean_se"))
    if c == 0:
        return (f"Their IS ({is_pm(a)} and {is_pm(b)}) do not differ by more than {RESOLVE_SE:g} "
                "standard errors.")
    word = "higher" if c > 0 else "lower"
    return f"{a_label} has the {word} IS ({is_pm(a)} against {is_pm(b)})."


def favoured_digits(model: dict, real: dict) -> list[tuple[int, float, float]]:
    """Digits whose share among generated samples exceeds the real data's by more than RESOLVE_SE
    standard errors (binomial errors of both shares): (digit, generated share, real share)."""
    g, r = model["class_counts"], real["class_counts"]
    ng, nr = sum(g), sum(r)
    if not ng or not nr:
        return []
    out = []
    for d, (cg, cr) in enumerate(zip(g, r)):
        pg, pr = cg / ng, cr / nr
        se = math.sqrt(pg * (1 - pg) / ng + pr * (1 - pr) / nr)
        if pg - pr > RESOLVE_SE * se and pg > pr:
            out.append((d, pg, pr))
    return sorted(out, key=lambda t: t[2] - t[1])


def favour_sentence(who: str, model: dict, real: dict) -> str:
    fav = favoured_digits(model, real)
    n = integer(sum(model["class_counts"]))
    if not fav:
        return (f"{who} over-represents no digit: on {n} samples every class share is within "
                f"{RESOLVE_SE:g} standard errors of, or below, its share in the real data.")
    digits = " and ".join(", ".join(str(d) for d, _, _ in fav).rsplit(", ", 1))
    shares = ", ".join(f"{percent(pg)} against {percent(pr)}" for _, pg, pr in fav)
    noun = "digit" if len(fav) == 1 else "digits"
    return (f"{who} favours {noun} {digits} (share among {n} samples against the real data's: "
            f"{shares}; each beyond {RESOLVE_SE:g} standard errors).")


def reconstruction_claim(a_name: str, a: dict, b_name: str, b: dict) -> str:
    """'a reconstructs better than b' when RMSE and SSIM agree by more than REL_TOL; else unresolved."""
    def rel(x, y):
        return (x - y) / max(abs(y), 1e-12)

    d_rmse, d_ssim = rel(a["RMSE"], b["RMSE"]), rel(a["SSIM"], b["SSIM"])
    numbers = (f"RMSE {fmt('RMSE', a['RMSE'])} against {fmt('RMSE', b['RMSE'])}, SSIM "
               f"{fmt('SSIM', a['SSIM'])} against {fmt('SSIM', b['SSIM'])}")
    tol = percent(REL_TOL)
    if d_rmse < -REL_TOL and d_ssim > REL_TOL:
        return f"{a_name} reconstructs better than {b_name} ({numbers})."
    if d_rmse > REL_TOL and d_ssim < -REL_TOL:
        return f"{a_name} reconstructs worse than {b_name} ({numbers})."
    return (f"{a_name} and {b_name} are not separated ({numbers}): the two measures differ by less than "
            f"{tol} or disagree on the direction.")


# --------------------------------------------------------------------------- tables
def row(*cells: str) -> str:
    return " & ".join(cells) + r" \\" + "\n"


def hyper_rows(cfg: dict, epochs: int) -> str:
    """Seed tables 1.1 / 1.2 / 2.1 from a config block (DDPM or cold)."""
    rows = []
    if "axis" in cfg:
        rows += [row("Averaged lines", escape(cfg["axis"])),
                 row("Lines per step", integer(cfg["group"])),
                 row("Line schedule", escape(cfg["schedule"]))]
    else:
        rows.append(row(r"$(\beta_{\min}, \beta_{\max})$", fmt("betas", cfg["betas"])))
    rows += [row("Number of time steps $T$", integer(cfg["T"])),
             row("Learning rate (Adam)", fmt("lr", cfg["lr"])),
             row("Hidden channels", fmt("hidden", cfg["hidden"])),
             row("Batch size", integer(cfg["batch_size"])),
             row("Activation function", escape(cfg["activation"]))]
    if "loss" in cfg:
        rows.append(row("Loss", escape(cfg["loss"]).upper()))
    rows.append(row("Epochs (this profile)", integer(epochs)))
    return "".join(rows)


def metric_row(label: str, r: dict) -> str:
    inc = r.get("inception") or {}
    inception = (f"{fmt('fid_inception', inc.get('fid_inception'))} ({integer(inc['n'])})"
                 if inc.get("n") else "not computed")
    return row(label, fid_pm(r), kid_pm(r), is_pm(r), fmt("class_entropy_bits", r["class_entropy_bits"]),
               f"{integer(r['n'])} / {integer(r['n_reference'])}", inception)


def reconstruction_rows(table: dict) -> str:
    names = {"degraded": r"degraded $D(x, T)$", "direct": r"direct $R(D(x,T), T)$",
             "algorithm1": "Algorithm 1", "algorithm2": "Algorithm 2"}
    order = [k for k in names if k in table] + sorted(k for k in table if k not in names)
    return "".join(row(names.get(k, escape(k)), fmt("RMSE", table[k]["RMSE"]), fmt("SSIM", table[k]["SSIM"]),
                       fmt("PSNR", table[k]["PSNR"]), fmt("FID", table[k].get("FID"))) for k in order)


def class_share_rows(models: dict[str, dict]) -> str:
    out = []
    for label, r in models.items():
        total = sum(r["class_counts"]) or 1
        out.append(row(label, *(f"{100 * c / total:.1f}" for c in r["class_counts"])))
    return "".join(out)


# --------------------------------------------------------------------------- the generated file
def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=config.ROOT, capture_output=True, text=True,
                              timeout=20, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _when(stamp: str | None) -> str:
    if not stamp:
        return NA
    try:
        t = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return escape(stamp)
    if t.tzinfo is not None:
        t = t.astimezone(timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M UTC")


def _variant_label(name: str, cfg: dict) -> str:
    return (f"\\texttt{{{escape(name)}}} ({escape(cfg['axis'])}, "
            f"$T = {integer(cfg['T'])}$, {escape(cfg['schedule'])})")


def _lines(order: list[int]) -> str:
    """A schedule, 1-indexed as the seed writes it; long ones shortened in the middle."""
    one = [str(i + 1) for i in order]
    return ", ".join(one) if len(one) <= 10 else ", ".join(one[:6]) + r", \dots, " + ", ".join(one[-2:])


def code_facts(ddpm_cfg: dict, cold_cfg: dict) -> dict[str, str]:
    """Facts the method section states, read from the code that the results came from."""
    from . import degradations, inception, models

    net = models.CNN(tuple(ddpm_cfg["hidden"]), ddpm_cfg["activation"])
    side = degradations.SIZE
    main_order = degradations.schedule_order(cold_cfg["schedule"], cold_cfg["T"],
                                             cold_cfg.get("schedule_seed", 0)).tolist()
    return {
        "arch/blocks": integer(len(net.blocks)),
        "arch/hidden": ", ".join(str(h) for h in ddpm_cfg["hidden"]),
        "arch/kernel": integer(net.blocks[0].net[0].kernel_size[0]),
        "arch/out-kernel": integer(net.out.kernel_size[0]),
        "arch/freqs": integer(len(net.time.freqs)),
        "arch/params-first": integer(sum(p.numel() for p in net.parameters())),
        "const/image-side": integer(side),
        "const/inception-dims": integer(inception.FEATURE_DIM),
        "schedule/outside-in": _lines(degradations.outside_in(side)),
        "schedule/inside-out": _lines(degradations.inside_out(side)),
        "schedule/main": ", ".join(str(i + 1) for i in main_order),
    }


@dataclasses.dataclass
class Study:
    """The results files of one profile, with the roles the report gives their models."""

    profile: str
    src: dict

    def __post_init__(self) -> None:
        self.nb1, self.nb2, self.nb3, self.nb4 = (self.src[n] for n in results.NOTEBOOKS)
        self.pipe = self.src.get("pipeline")
        self.prof = self.nb1["profile_settings"]
        self.first_name, self.second_name = self.nb2["baseline"], self.nb2["preset"]
        self.first, self.second = self.nb2["models"][self.first_name], self.nb2["models"][self.second_name]
        self.main = self.nb3["main"]
        self.cold = self.nb3["models"]
        self.cold_main = self.cold[self.main]
        # the seed's order (config.COLD_PRESETS), then any other preset the notebook was given
        order = list(config.COLD_PRESETS)
        self.variants = sorted((v for v in self.cold if v != self.main),
                               key=lambda v: (order.index(v) if v in order else len(order), v))
        self.real, self.real_ep = self.nb1["real"], self.nb1["real_per_epoch"]
        self.n_final, self.n_epoch = integer(self.real["n"]), integer(self.real_ep["n"])
        # the appendix beyond the seed: present only when notebook 02 saved it
        self.ddim = self.nb2["ddim"] if "rows" in (self.nb2.get("ddim") or {}) else None
        self.ema = self.nb2["ema"] if "final" in (self.nb2.get("ema") or {}) else None


def definitions(profile: str, src: dict[str, Node], plots_dir: Path) -> dict[str, str]:
    """Every key the report may use, with its LaTeX text."""
    st = Study(profile, src)
    d: dict[str, str] = {}
    for name, node in src.items():
        flatten(slug(name), name, node, d)
    flatten("02-hyperparams/first", "first", st.first, d)
    flatten("02-hyperparams/second", "second", st.second, d)
    flatten("03-cold-diffusion/main-model", "main", st.cold_main, d)
    d.update(code_facts(st.nb1["config"], st.cold_main["config"]))
    d.update(figure_keys(st, plots_dir))
    for part in (profile_keys, stamp_keys, chapter1_keys, chapter2_keys, variant_keys, beyond_keys,
                 timing_keys):
        part(st, d)
    return d


def profile_keys(st: Study, d: dict[str, str]) -> None:
    """The profile, the seed's protocol for comparison, constants and the student's numbers."""
    prof, full = st.prof, config.PROFILES["full"]
    d["seed/epochs"] = integer(full.epochs)
    d["const/max-entropy"] = decimals(math.log2(10), 2)
    d["const/resolve-se"] = f"{RESOLVE_SE:g}"
    d["const/rel-tol"] = percent(REL_TOL)
    for key, s in STUDENT.items():
        d[f"student/{key}/fid"], d[f"student/{key}/is"] = s["fid"], s["is"]
    d["student/fid-images"] = integer(STUDENT_FID_IMAGES)
    d["student/is-split"] = integer(STUDENT_IS_SPLIT)
    d["table/student"] = "".join(row(s["label"], s["fid"], s["is"]) for s in STUDENT.values())

    def images(limit):
        return "all training images" if limit is None else f"the first {integer(limit)} training images"

    def epochs_on(e, limit):
        return f"{integer(e)} epoch{'s' if e != 1 else ''} on {images(limit)}"

    d["profile/name"] = escape(st.profile)
    d["profile/final-n"], d["profile/epoch-n"] = st.n_final, st.n_epoch
    d["profile/sample-epochs"] = ", ".join(str(e) for e in prof["sample_epochs"] if e <= prof["epochs"])
    d["profile/eval-epochs"] = ", ".join(str(e) for e in prof["eval_epochs"] if e <= prof["epochs"])
    d["profile/train-images"] = images(prof["train_limit"])
    d["profile/training"] = epochs_on(prof["epochs"], prof["train_limit"])
    ve = prof.get("variant_epochs", prof["epochs"])
    vl = prof.get("variant_train_limit", prof["train_limit"])
    d["profile/variant-training"] = epochs_on(ve, vl)
    same = (ve, vl) == (prof["epochs"], prof["train_limit"])
    d["profile/training-all"] = d["profile/training"] + (
        "" if same else f" (the appendix variants: {d['profile/variant-training']})")
    if st.profile == "full":
        d["profile/caveat"] = (f"This report comes from the full profile, the seed's protocol: models "
                               f"trained for {d['profile/training-all']} and final numbers on "
                               f"{st.n_final} samples.")
    else:
        d["profile/caveat"] = (
            f"This report comes from the \\texttt{{{escape(st.profile)}}} profile: models trained for "
            f"{d['profile/training-all']}, where the seed's protocol is {integer(full.epochs)} epochs on "
            f"all of them, and final numbers on {st.n_final} samples. Every statement below is decided "
            "by these numbers and describes these short runs only; what the models reach after the full "
            "protocol is not claimed here.")
    final = st.nb1["final"]
    d["eval/is-splits"] = integer(final["is_splits"])
    d["eval/is-split-size"] = integer(final["n"] // final["is_splits"])


def stamp_keys(st: Study, d: dict[str, str]) -> None:
    """The title-page record: profile, sample sizes of every metric, device, date, code, wall time."""
    run1, final1, pipe = st.nb1["run"], st.nb1["final"], st.pipe
    inc = final1.get("inception") or {}
    if pipe:
        git = pipe.get("git") or {}
        commit = escape(str(git.get("commit") or "unknown")[:12])
        clean = git.get("clean")
        state = "clean tree" if clean else "state unknown" if clean is None else "uncommitted changes"
        d["stamp/commit"] = f"\\texttt{{{commit}}} ({state})"
        d["stamp/date"] = _when(pipe.get("finished"))
        d["stamp/wall"] = fmt("seconds", pipe.get("wall_seconds"))
        d["stamp/software"] = escape(f"Python {pipe.get('python', '?')}, PyTorch {pipe.get('torch', '?')}")
        device, precision = pipe.get("device") or run1["device"], pipe.get("precision") or run1["precision"]
    else:
        commit, dirty = _git("rev-parse", "--short=12", "HEAD"), _git("status", "--porcelain")
        state = "clean tree" if dirty == "" else "uncommitted changes" if dirty else "state unknown"
        d["stamp/commit"] = (f"\\texttt{{{escape(commit or 'unknown')}}} ({state}; read when the report "
                             "was built: no pipeline record)")
        d["stamp/date"] = d["stamp/wall"] = "not recorded (no pipeline record)"
        d["stamp/software"] = escape(f"Python {sys.version.split()[0]}")
        device, precision = run1["device"], run1["precision"]
    d["stamp/device-precision"] = f"{escape(device)}, {escape(precision)}"
    d["stamp/built"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    d["stamp/final-n"] = f"{st.n_final} generated against {integer(st.real['n_reference'])} test images"
    d["stamp/epoch-n"] = (f"{st.n_epoch} generated against {integer(st.real_ep['n_reference'])} test "
                          f"images at epochs {d['profile/eval-epochs'] or 'none'}")
    d["stamp/inception-n"] = (f"{integer(inc['n'])} generated against {integer(inc['n_reference'])} test "
                              "images" if inc.get("n") else "not computed in this profile")
    d["stamp/bootstrap"] = (f"{integer(final1['n_bootstrap'])} bootstrap resamples"
                            if final1.get("n_bootstrap") else "none")
    d["stamp/recon-n"] = f"{integer(st.prof['final_samples'])} test images"
    d["stamp/profile"] = f"\\texttt{{{escape(st.profile)}}}: {escape(st.prof.get('description', ''))}"
    d["stamp/training"] = d["profile/training-all"]
    d["table/stamp"] = "".join(row(k, d[f"stamp/{v}"]) for k, v in (
        ("Profile", "profile"), ("Training", "training"), ("Per-epoch FID, KID, IS", "epoch-n"),
        ("Final FID, KID, IS", "final-n"), ("Their standard errors", "bootstrap"),
        ("FID (Inception-v3)", "inception-n"), ("Reconstruction metrics", "recon-n"),
        ("Device, precision", "device-precision"), ("Run finished", "date"),
        ("Wall time of the run", "wall"), ("Code", "commit"), ("Software", "software"),
        ("Report built", "built")))


def figure_keys(st: Study, plots_dir: Path) -> dict[str, str]:
    """figure/<name> -> the file the notebooks saved (checked to exist), has/<part> flags, the folder."""
    preset, second, main = st.nb1["preset"], st.second_name, st.main
    figures = {
        "activations": "fig1_1_activations",
        "ddpm-loss": f"fig1_2_loss_{preset}",
        "ddpm-samples": f"fig1_3_samples_{preset}",
        "ddpm-fid": f"fig1_4_fid_{preset}",
        "ddpm-is": f"fig1_5_is_{preset}",
        "second-loss": f"fig1_6_loss_{second}",
        "second-samples": f"fig1_7_samples_{second}",
        "second-samples-last": f"fig1_8_samples_last_{second}",
        "sets-fid": "fig1_9_fid_sets",
        "sets-is": "fig1_10_is_sets",
        "cold-degradation": "fig2_0_degradation_steps",
        "cold-loss": f"fig2_1_loss_cold_{main}",
        "cold-samples": f"fig2_samples_cold_{main}",
        "cold-fid": f"fig2_2_fid_cold_{main}",
        "cold-is": f"fig2_3_is_cold_{main}",
        "cold-reconstructions": f"fig2_4_reconstructions_{main}",
        "comparison-fid": "fig2_5_fid_ddpm_vs_cold",
        "class-histograms": "fig2_6_class_histograms",
        **{f"variant/{slug(v)}": f"figA_reconstructions_{v}" for v in st.variants},
        **({"ddim": "figB_1_ddim_steps"} if st.ddim else {}),
        **({"ema": "figB_2_ema"} if st.ema else {}),
    }
    missing = [f"{f}.png" for f in figures.values() if not (plots_dir / f"{f}.png").is_file()]
    if missing:
        raise ReportError(f"figure(s) missing in {plots_dir}: {', '.join(missing)} (the notebooks write "
                          "them; rerun them for this profile)")
    d = {f"figure/{key}": f for key, f in figures.items()}
    d["graphics-dir"] = plots_dir.as_posix() + "/"
    for flag, present in (("ddim", st.ddim), ("ema", st.ema), ("beyond", st.ddim or st.ema)):
        if present:
            d[f"has/{flag}"] = "1"
    return d


def loss_sentence(run: dict) -> str:
    """How the per-epoch mean loss of a run moved, said for any number of epochs."""
    losses = run["epoch_loss"]
    if not losses:
        return "no epoch was trained"
    if len(losses) == 1:
        return f"the mean over its only epoch is {fmt('epoch_loss', losses[0])}"
    verb = "falls" if losses[-1] < losses[0] else "rises" if losses[-1] > losses[0] else "stays"
    return (f"the epoch mean {verb} from {fmt('epoch_loss', losses[0])} in the first epoch to "
            f"{fmt('epoch_loss', losses[-1])} in epoch {integer(len(losses))}")


def chapter1_keys(st: Study, d: dict[str, str]) -> None:
    """The DDPM and the second hyperparameter set: tables 1.1-1.3 and their sentences."""
    first, second, run1 = st.first, st.second, st.nb1["run"]
    d["claim/ddpm-loss"] = loss_sentence(run1)
    d["table/hparams-first"] = hyper_rows(first["config"], first["run"]["epochs"])
    d["table/hparams-second"] = hyper_rows(second["config"], second["run"]["epochs"])
    d["table/final-sets"] = (metric_row(f"first set ({escape(st.first_name)})", first["final"])
                             + metric_row(f"second set ({escape(st.second_name)})", second["final"])
                             + metric_row("real data (train vs test)", st.nb2["real"]))
    fid, is_ = ("FID (MNIST classifier)", "fid_classifier"), ("IS (MNIST classifier)", "is_classifier_mean")
    d["claim/ddpm-fid-trend"] = trend_sentence(*fid, run1["per_epoch"], st.n_epoch)
    d["claim/ddpm-is-trend"] = trend_sentence(*is_, run1["per_epoch"], st.n_epoch)
    d["claim/second-fid-trend"] = trend_sentence(*fid, second["run"]["per_epoch"], st.n_epoch)
    d["claim/second-set-fid"] = fid_claim("The second set", second["final"], "the first", first["final"])
    d["claim/second-set-is"] = is_claim("The second set", second["final"], "the first", first["final"])
    lf, ls = first["run"]["epoch_loss"][-1], second["run"]["epoch_loss"][-1]
    relation = "higher than" if ls > lf else "lower than" if ls < lf else "the same as"
    d["claim/second-set-loss"] = (f"Its mean loss over the last epoch is {fmt('loss', ls)}, {relation} the "
                                  f"first set's {fmt('loss', lf)}")
    per_epoch = run1["per_epoch"]
    last = per_epoch[max(per_epoch, key=int)].get("fid_classifier") if per_epoch else None
    d["claim/ddpm-vs-floor"] = (
        f"At its last evaluated epoch the DDPM's FID is {fmt('fid_classifier', last)}, against "
        f"{fmt('fid_classifier', st.real_ep['fid_classifier'])} for real training images scored the same "
        "way (the dashed floor in the figure)")
    final, real = st.nb1["final"], st.real
    inc = final.get("inception") or {}
    d["claim/ddpm-inception"] = (
        f"With Inception-v3 features, the literature's FID, it scores "
        f"{fmt('fid_inception', inc['fid_inception'])} on {integer(inc['n'])} samples (real data: "
        f"{fmt('fid_inception', (real.get('inception') or {}).get('fid_inception'))})."
        if inc.get("n") else "The FID with Inception-v3 features is not computed in this profile.")


def chapter2_keys(st: Study, d: dict[str, str]) -> None:
    """Cold diffusion: table 2.1, its training, and the comparison with the DDPM (notebook 04)."""
    cold_main, nb4 = st.cold_main, st.nb4
    cfg = cold_main["config"]
    d["claim/cold-loss"] = loss_sentence(cold_main["run"])
    d["cold/axis"] = escape(cfg["axis"])
    d["table/hparams-cold"] = hyper_rows(cfg, cold_main["run"]["epochs"])
    d["table/final-cold"] = (metric_row(f"cold {escape(st.main)} (unconditional)", cold_main["final"])
                             + metric_row("real data (train vs test)", st.nb3["real"]))
    d["table/reconstruction"] = reconstruction_rows(cold_main["reconstruction"])
    d["claim/cold-fid-trend"] = trend_sentence("FID (MNIST classifier) of unconditional samples",
                                               "fid_classifier", cold_main["run"]["per_epoch"], st.n_epoch)
    d["claim/cold-is-trend"] = trend_sentence("IS (MNIST classifier)", "is_classifier_mean",
                                              cold_main["run"]["per_epoch"], st.n_epoch)

    ddpm_f, cold_f, real = nb4["models"]["ddpm"]["final"], nb4["models"]["cold"]["final"], nb4["real"]
    recon = nb4["reconstruction"]
    cold_label = f"cold {escape(nb4['cold_preset'])}"
    d["table/final-comparison"] = (metric_row(f"DDPM ({escape(nb4['ddpm_preset'])})", ddpm_f)
                                   + metric_row(f"{cold_label} (unconditional)", cold_f)
                                   + metric_row("real data (train vs test)", real))
    d["table/class-shares"] = class_share_rows({"real data": real, "DDPM": ddpm_f, cold_label: cold_f})
    d["claim/ddpm-vs-cold-fid"] = fid_claim("The DDPM", ddpm_f, "the unconditional cold model", cold_f)
    d["claim/ddpm-vs-cold-is"] = is_claim("The DDPM", ddpm_f, "the cold model", cold_f)
    ed, ec, er = ddpm_f["class_entropy_bits"], cold_f["class_entropy_bits"], real["class_entropy_bits"]
    more = "more evenly" if ed > ec else "less evenly" if ed < ec else "as evenly"
    d["claim/diversity"] = (
        f"The DDPM's samples spread {more} over the ten classes than the cold model's (class entropy "
        f"{fmt('class_entropy_bits', ed)} against {fmt('class_entropy_bits', ec)} bits; real data "
        f"{fmt('class_entropy_bits', er)}, at most {d['const/max-entropy']}), and their most common "
        f"class takes {percent(ddpm_f['top_class_share'])} against {percent(cold_f['top_class_share'])}")
    axis = {"columns": "Column", "rows": "Row"}.get(cfg["axis"], escape(cfg["axis"]))
    d["claim/cold-favours"] = favour_sentence(f"{axis} averaging (unconditional)", cold_f, real)
    d["claim/ddpm-favours"] = favour_sentence("The DDPM", ddpm_f, real)
    d["claim/alg2-vs-alg1"] = reconstruction_claim("Algorithm 2", recon["algorithm2"], "Algorithm 1",
                                                   recon["algorithm1"])
    d["claim/alg2-vs-direct"] = reconstruction_claim("Algorithm 2", recon["algorithm2"],
                                                     "the direct prediction", recon["direct"])
    cond = recon["algorithm2"].get("FID")
    if cond is None:
        d["claim/conditional"] = "The FID of the conditional reconstructions was not computed"
    else:
        c = compare(cond, None, cold_f["fid_classifier"], cold_f.get("fid_classifier_se"))
        verdict = ("lower than" if c < 0 else "higher than" if c > 0 else
                   f"within {RESOLVE_SE:g} standard errors of")
        d["claim/conditional"] = (
            f"Restored from $D(x, T)$ of test images (conditional), Algorithm 2 reaches an FID of "
            f"{fmt('FID', cond)}, {verdict} the {fid_pm(cold_f)} of unconditional generation from the "
            "fitted prior")


def variant_keys(st: Study, d: dict[str, str]) -> None:
    """Appendix A: one table row and one figure per variant, and which has the lowest FID."""
    vrows, vfigs, ranking = [], [], []
    for v in [st.main] + st.variants:
        m = st.cold[v]
        vrows.append(row(_variant_label(v, m["config"]), integer(m["run"]["epochs"]),
                         fmt("loss", m["run"]["epoch_loss"][-1]), fid_pm(m["final"]), is_pm(m["final"])))
        if m["final"].get("fid_classifier") is not None:
            ranking.append((m["final"]["fid_classifier"], v, m["final"]))
    for v in st.variants:
        m = st.cold[v]
        r = (m.get("reconstruction") or {}).get("algorithm2")
        extra = (f" Algorithm 2 restores test images with RMSE {fmt('RMSE', r['RMSE'])} and SSIM "
                 f"{fmt('SSIM', r['SSIM'])}." if r else "")
        vfigs.append(
            "\\begin{figure}[htbp]\\centering\n"
            f"\\includegraphics[width=\\linewidth]{{figA_reconstructions_{v}}}\n"
            f"\\caption[Variant {escape(v)}]{{Variant {_variant_label(v, m['config'])}: test images, "
            "their degradation $D(x, T)$, the direct, Algorithm 1 and Algorithm 2 restorations, and "
            f"unconditional samples. Last epoch's mean loss {fmt('loss', m['run']['epoch_loss'][-1])}, "
            f"FID {fid_pm(m['final'])}, IS {is_pm(m['final'])}.{extra}}}\n"
            f"\\label{{fig:variant-{slug(v)}}}\n\\end{{figure}}\n")
    d["table/variants"] = "".join(vrows)
    d["appendix/variant-figures"] = "".join(vfigs)
    ranking.sort(key=lambda t: t[0])
    if len(ranking) < 2:
        d["claim/variants-best"] = "Fewer than two models have a finite FID, so none is ranked."
        return
    (_, b1, f1), (_, b2, f2) = ranking[0], ranking[1]
    c = compare(f2["fid_classifier"], f2.get("fid_classifier_se"), f1["fid_classifier"],
                f1.get("fid_classifier_se"))
    d["claim/variants-best"] = (
        f"The lowest unconditional FID is that of \\texttt{{{escape(b1)}}} ({fid_pm(f1)}); "
        + (f"it is ahead of the next, \\texttt{{{escape(b2)}}} ({fid_pm(f2)}), by more than "
           f"{RESOLVE_SE:g} standard errors." if c > 0 else
           f"the next, \\texttt{{{escape(b2)}}} ({fid_pm(f2)}), is within {RESOLVE_SE:g} standard "
           "errors of it, so this run does not single out one variant."))
    if len({st.cold[v]["run"]["epochs"] for v in [st.main] + st.variants}) > 1:
        d["claim/variants-best"] += (" The models were trained for different numbers of epochs "
                                     "(Table~\\ref{tab:variants}), so this is not a like-for-like ranking.")


def beyond_keys(st: Study, d: dict[str, str]) -> None:
    """Appendix B (only with its results): DDIM with fewer steps, and EMA weights."""
    if st.ddim:
        rows_ = st.ddim["rows"]

        def fid(r):
            return pm("fid_classifier", r["fid_classifier"], r.get("fid_classifier_se"))

        d["table/ddim"] = "".join(row(
            "Prince (ancestral)" if r["sampler"] == "prince" else "DDIM", integer(r["steps"]),
            fmt("eta", r.get("eta")) if r["sampler"] == "ddim" else "--", fid(r),
            fmt("is_classifier_mean", r.get("is_classifier_mean")),
            fmt("seconds_per_sample", r.get("seconds_per_sample")), fmt("speedup", r.get("speedup")))
            for r in rows_)
        base = [r for r in rows_ if r["sampler"] == "prince"]
        fast = sorted((r for r in rows_ if r["sampler"] == "ddim"), key=lambda r: r["steps"])
        if not (base and fast):
            d["claim/ddim"] = "The DDIM table lacks a baseline row or a DDIM row, so no comparison is drawn."
        else:
            b = base[0]
            ok = [r for r in fast if compare(r["fid_classifier"], r.get("fid_classifier_se"),
                                             b["fid_classifier"], b.get("fid_classifier_se")) <= 0]
            d["claim/ddim"] = (
                f"With as few as {integer(ok[0]['steps'])} steps DDIM reaches an FID of {fid(ok[0])}, no "
                f"worse beyond {RESOLVE_SE:g} standard errors than the {integer(b['steps'])}-step "
                f"sampler's {fid(b)}, {fmt('speedup', ok[0].get('speedup'))} faster per sample."
                if ok else
                f"Every DDIM setting tried ends with a higher FID than the {integer(b['steps'])}-step "
                f"sampler's {fid(b)}, by more than {RESOLVE_SE:g} standard errors.")
    if st.ema:
        raw_f, ema_f = st.ema["final"]["raw"], st.ema["final"]["ema"]
        d["table/ema"] = metric_row("raw weights", raw_f) + metric_row(
            f"EMA, decay {fmt('decay', st.ema.get('decay'))}", ema_f)
        d["claim/ema"] = fid_claim("The averaged weights", ema_f, "the raw weights", raw_f, verb="end")


def timing_keys(st: Study, d: dict[str, str]) -> None:
    """Appendix C: training time per model and per notebook."""
    models = [(f"DDPM {escape(st.first_name)}", st.first["run"]),
              (f"DDPM {escape(st.second_name)}", st.second["run"]),
              *((f"cold {escape(v)}", st.cold[v]["run"]) for v in [st.main] + st.variants)]
    rows_ = []
    for label, r in models:
        secs = r.get("epoch_seconds") or []
        rows_.append(row(label, integer(r["epochs"]), fmt("seconds", sum(secs) / len(secs)) if secs else NA,
                         "yes" if r.get("cached") else "no"))
    d["table/timings"] = "".join(rows_)
    notebooks = (st.pipe or {}).get("notebooks")
    d["table/notebook-timings"] = "".join(
        row(f"\\texttt{{{escape(n)}}}", fmt("seconds", v.get("seconds")), escape(v.get("status", "")))
        for n, v in notebooks.items()) if isinstance(notebooks, dict) else row(
        "\\multicolumn{3}{l}{not recorded (no pipeline record)}")


def generated_dir(profile: str, out_dir: Path | None = None) -> Path:
    return Path(out_dir or SOURCE_DIR / profile) / "generated"


def generate(profile: str, results_dir: Path | None = None, plots_dir: Path | None = None,
             out_dir: Path | None = None) -> Path:
    """Write <out>/generated/report-results.tex (and keys.txt, one key per line); return the .tex."""
    results.path(profile, "01_ddpm")  # validates the profile name
    src = load_results(profile, results_dir)
    plots = Path(plots_dir) if plots_dir else Path(os.environ.get("DIFFUSION_PLOTS_DIR") or config.PLOTS_DIR)
    plots = (plots / profile).resolve()
    if " " in plots.as_posix() or "%" in plots.as_posix():
        raise ReportError(f"the plots folder {plots} contains a space or %, which \\graphicspath cannot take")
    defs = definitions(profile, src, plots)
    lines = ["% Generated by helpers.report from results/" + profile + "/*.json: do not edit.\n",
             f"\\graphicspath{{{{{defs['graphics-dir']}}}}}\n"]
    for key in sorted(defs):
        lines.append(f"\\resdef{{{key}}}{{{defs[key]}}}\n")
    folder = generated_dir(profile, out_dir)
    store.atomic_write_text(folder / KEYS_FILE, "".join(f"{k}\n" for k in sorted(defs)))
    return store.atomic_write_text(folder / GENERATED, "".join(lines))


# --------------------------------------------------------------------------- building
_MISSING_KEY = re.compile(r"Result key `([^']*)' is not defined")
_NOT_FOUND = re.compile(r"File `([^']*)' not found")
_UNDEFINED = re.compile(r"(Reference|Citation) `([^']*)' on page \d+ undefined")


def find_latexmk() -> str:
    exe = shutil.which("latexmk")
    if exe is None or shutil.which("pdflatex") is None:
        raise ReportError("latexmk and pdflatex are needed to build the report; install the Debian "
                          f"packages: apt-get install --no-install-recommends {DEBIAN_PACKAGES}")
    return exe


def log_problems(log: str) -> list[str]:
    """Undefined references or citations left in a finished LaTeX log."""
    found = [f"undefined {kind.lower()} {name!r}" for kind, name in _UNDEFINED.findall(log)]
    if not found and "There were undefined references" in log:
        found.append("undefined references")
    return found


def build(profile: str, results_dir: Path | None = None, plots_dir: Path | None = None,
          out_dir: Path | None = None, timeout: float = 600) -> Path:
    """Generate the includes and compile report/report.tex to <out>/report.pdf (default
    report/<profile>/). Any LaTeX error, an undefined result key (named), a missing figure or an
    undefined reference raises ReportError."""
    latexmk = find_latexmk()
    out = Path(out_dir or SOURCE_DIR / profile).resolve()
    generate(profile, results_dir, plots_dir, out)
    # max_print_line: TeX wraps log lines at 79 characters, which would split a key in its message
    env = dict(os.environ, TEXINPUTS=f"{generated_dir(profile, out)}:{SOURCE_DIR}:", max_print_line="10000")
    cmd = [latexmk, "-norc", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "-file-line-error",
           f"-outdir={out}", f"-auxdir={out}", MAIN]
    try:
        proc = subprocess.run(cmd, cwd=SOURCE_DIR, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise ReportError(f"latexmk did not finish within {timeout:g} s") from exc
    log_path = out / "report.log"
    log = log_path.read_text(errors="replace") if log_path.is_file() else ""
    if proc.returncode != 0:
        keys = _MISSING_KEY.findall(log)
        if keys:
            raise ReportError(f"result key {keys[0]!r} is not defined: report.tex uses it but no results "
                              f"file of profile {profile!r} provides it (see {generated_dir(profile, out)}/"
                              f"{KEYS_FILE} for the keys that exist)")
        files = _NOT_FOUND.findall(log)
        if files:
            raise ReportError(f"LaTeX could not find the file {files[0]!r} (see {log_path})")
        errors = [line for line in log.splitlines() if line.startswith("!") or " Error:" in line]
        detail = "\n".join(errors[:5]) or (proc.stdout + proc.stderr)[-2000:]
        raise ReportError(f"latexmk failed (exit code {proc.returncode}); see {log_path}:\n{detail}")
    problems = log_problems(log)
    if problems:
        raise ReportError(f"the report built with {', '.join(problems)} (see {log_path})")
    pdf = out / "report.pdf"
    if not pdf.is_file():
        raise ReportError(f"latexmk reported success but {pdf} is missing")
    return pdf


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m helpers.report", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", required=True, choices=sorted(config.PROFILES))
    ap.add_argument("--generate-only", action="store_true", help="write the generated includes, skip LaTeX")
    ap.add_argument("--results-dir", type=Path, help="default: $DIFFUSION_RESULTS_DIR or <repo>/results")
    ap.add_argument("--plots-dir", type=Path, help="default: $DIFFUSION_PLOTS_DIR or <repo>/Plots")
    ap.add_argument("--out-dir", type=Path, help="default: report/<profile>")
    args = ap.parse_args(argv)
    try:
        if args.generate_only:
            path = generate(args.profile, args.results_dir, args.plots_dir, args.out_dir)
        else:
            path = build(args.profile, args.results_dir, args.plots_dir, args.out_dir)
    except (ReportError, FileNotFoundError, ValueError) as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 1
    print(f"report: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
