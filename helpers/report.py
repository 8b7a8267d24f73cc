"""The report's values and verdicts: results/<profile>/*.json -> generated LaTeX definitions.

    python -m helpers.report --profile NAME [--generate-only] [--results-dir D] [--plots-dir D] [--out-dir D]

`generate` writes every value of the results files as a definition `\\resdef{key}{text}` (keys such as
`01-ddpm/model/final/fid-classifier-pm`, numbers written by `tables.fmt`), adds the models under their
roles, the title-page record, figure file names, the facts about the networks (`models.describe`),
the rows of the tables that have one row per entry (ready macro calls such as
`\\variantrow{variants/0}\\variantrow{variants/1}`) and the verdicts (keys such as `higher`, `lower`,
`unresolved`, `falls`), and writes them to <out>/generated/report-results.tex. Every sentence, table
label and figure environment is in report/report.tex, report/beyond.tex and report/networks.tex,
which read the values as `\\res{key}` and give each verdict its words with `\\verdict{family}{key}`
(one `\\words` line per verdict of the family). `build` then compiles the PDF through
`helpers.latex`, which runs LaTeX and reads its log; an undefined key or a verdict without words
becomes a ReportError naming it.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from . import config, latex, results, store, study, tables
from .tables import decimals, escape, integer, percent

SOURCE_DIR = config.REPORT_DIR
MAIN = "report.tex"
GENERATED = "report-results.tex"
KEYS_FILE = "keys.txt"
NA = r"\textit{n/a}"

# Two numbers differ "resolved" when |a - b| exceeds this many standard errors of the difference.
RESOLVE_SE = 2.0
# Reconstruction metrics carry no standard error: they are called different only when RMSE and SSIM
# both move by more than this relative amount, in the same direction.
REL_TOL = 0.01

# The student's own final report (SPEC section 5), shown for the discussion, never as targets: per
# model its FID and IS and what the rows' labels in report.tex state (epochs, T, steps). Their FID:
# Inception-v3 on 100 vs 100 images wrapped by a uint8 cast; IS from 16-image splits.
STUDENT = {
    "ddpm-default": {"fid": "98.7", "is": "1.38", "epochs": "100"},
    "ddpm-t1500": {"fid": "95.4", "is": "1.5", "t": "1500"},
    "cold-rows28": {"fid": "108.5", "is": "1.9", "steps": "28", "epochs": "80"},
    "cold-grouped": {"fid": "190--195", "is": "n/a", "steps": "7"},
}
STUDENT_FID_IMAGES = 100
STUDENT_IS_SPLIT = 16


# The roles the report gives the models of each notebook: role -> the parameter that names the model.
class ReportError(RuntimeError):
    """The report cannot be generated or built; the message says what is missing or wrong."""


# The LaTeX text of a result value (and of value ± error), by the name of its field.
fmt = functools.partial(tables.fmt, tex=True)
pm = functools.partial(tables.pm, tex=True)


def slug(name: Any) -> str:
    return str(name).replace("_", "-").lower()


def calls(macro: str, args: Iterable[str], sep: str = "", last: str | None = None) -> str:
    """Ready macro calls, one per argument: `\\macro{a}sep\\macro{b}last\\macro{c}` (`last`, default
    `sep`, before the final one). A table's rows (`\\variantrow{variants/0}...`, each row macro ends
    its row) or a list in a sentence (sep `\\listsep`, last `\\listand`, which the TeX words)."""
    items = [f"{macro}{{{a}}}" for a in args]
    if len(items) < 2:
        return "".join(items)
    return sep.join(items[:-1]) + (sep if last is None else last) + items[-1]


# --------------------------------------------------------------------------- values
def flatten(prefix: str, name: str, obj: Any, out: dict[str, str]) -> None:
    """Every value under `obj` as out["prefix/a/b"] = text. A field x with a sibling x_se also gets
    "x-pm" (value ± error); a metric block gets has-inception, class-share/<digit> and
    class-share/cells (a table row's cells, ready \\sharecell calls); lists of
    per-epoch numbers get first / last / min / mean / total, lists of blocks a count."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            flatten(f"{prefix}/{slug(k)}", str(k), v, out)
        for k, v in obj.items():
            if f"{k}_se" in obj and isinstance(v, (int, float)):
                out[f"{prefix}/{slug(k)}-pm"] = pm(k, v, obj[f"{k}_se"])
        if "kid_classifier_mean" in obj and "kid_classifier_std" in obj:
            out[f"{prefix}/kid-classifier-pm"] = pm(
                "kid_classifier_mean", obj["kid_classifier_mean"], obj["kid_classifier_std"]
            )
        if "fid_classifier" in obj and "class_counts" in obj:
            out[f"{prefix}/has-inception"] = "yes" if (obj.get("inception") or {}).get("n") else "no"
            total = sum(obj["class_counts"]) or 1
            for d, c in enumerate(obj["class_counts"]):
                out[f"{prefix}/class-share/{d}"] = decimals(100 * c / total, 1)
            digits = range(len(obj["class_counts"]))
            out[f"{prefix}/class-share/cells"] = calls(r"\sharecell", [f"{prefix}/class-share/{d}" for d in digits])
        epochs = sorted((int(k), k) for k in obj if str(k).isdigit())
        if epochs and all(isinstance(obj[k], dict) for _, k in epochs):
            flatten(f"{prefix}/first", name, obj[epochs[0][1]], out)
            flatten(f"{prefix}/last", name, obj[epochs[-1][1]], out)
            out[f"{prefix}/epochs"] = ", ".join(str(e) for e, _ in epochs)
        return
    if isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj):
        for i, v in enumerate(obj):
            flatten(f"{prefix}/{i}", name, v, out)
        out[f"{prefix}/count"] = integer(len(obj))
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


def model(prefix: str, name: str, block: dict, d: dict[str, str]) -> None:
    """A model block under another key (its role), with its name."""
    flatten(prefix, name, block, d)
    d[f"{prefix}/name"], d[f"{prefix}/slug"] = escape(name), slug(name)
    d[f"{prefix}/has-reconstruction"] = "yes" if (block.get("reconstruction") or {}).get("algorithm2") else "no"


# --------------------------------------------------------------------------- verdicts
def compare(a: float, se_a: float | None, b: float, se_b: float | None) -> int:
    """+1 when a > b, -1 when a < b, 0 when the difference is within RESOLVE_SE standard errors
    (missing errors count as 0)."""
    se = math.hypot(se_a or 0.0, se_b or 0.0)
    diff = a - b
    if abs(diff) <= RESOLVE_SE * se or diff == 0:
        return 0
    return 1 if diff > 0 else -1


def metric_verdict(a: dict, b: dict, field: str = "fid_classifier", se: str = "_se") -> str:
    """ "higher", "lower" or "unresolved": a's final metric against b's."""
    c = compare(a[field], a.get(field + se), b[field], b.get(field + se))
    return {1: "higher", -1: "lower", 0: "unresolved"}[c]


def direction(first: float, last: float) -> str:
    return "falls" if last < first else "rises" if last > first else "stays"


def loss_trend(run: dict) -> dict[str, str]:
    """How the per-epoch mean loss of a run moved: verdict none / single / falls / rises / stays."""
    losses = run["epoch_loss"]
    out = {"epochs": integer(len(losses))}
    if losses:
        out.update(first=fmt("epoch_loss", losses[0]), last=fmt("epoch_loss", losses[-1]))
    out["verdict"] = "none" if not losses else "single" if len(losses) == 1 else direction(losses[0], losses[-1])
    return out


def metric_trend(per_epoch: dict, name: str) -> dict[str, str]:
    """A metric from the first to the last evaluated epoch: verdict none / single / falls / rises /
    stays, with both values and epochs."""
    epochs = sorted(int(e) for e in per_epoch)
    if not epochs:
        return {"verdict": "none", "last": NA}
    first, last = per_epoch[str(epochs[0])].get(name), per_epoch[str(epochs[-1])].get(name)
    single = len(epochs) == 1 or first is None or last is None
    return {
        "verdict": "single" if single else direction(first, last),
        "first": fmt(name, first),
        "last": fmt(name, last),
        "first-epoch": str(epochs[0]),
        "last-epoch": str(epochs[-1]),
    }


def favoured_digits(model_: dict, real: dict) -> list[tuple[int, float, float]]:
    """Digits whose share among generated samples exceeds the real data's by more than RESOLVE_SE
    standard errors (binomial errors of both shares): (digit, generated share, real share)."""
    g, r = model_["class_counts"], real["class_counts"]
    ng, nr = sum(g), sum(r)
    if not ng or not nr:
        return []
    out = []
    for digit, (cg, cr) in enumerate(zip(g, r)):
        pg, pr = cg / ng, cr / nr
        se = math.sqrt(pg * (1 - pg) / ng + pr * (1 - pr) / nr)
        if pg - pr > RESOLVE_SE * se and pg > pr:
            out.append((digit, pg, pr))
    return sorted(out, key=lambda t: t[2] - t[1])


def favours(model_: dict, real: dict, prefix: str) -> dict[str, str]:
    """favours/<model>/...: the over-represented digits (`<i>/digit`, `<i>/share`, `<i>/real-share`),
    as lists (`digits`, `shares`: ready calls of \\favdigit / \\favshare) and the verdict none / one /
    several."""
    fav = favoured_digits(model_, real)
    out = {"count": integer(len(fav)), "n": integer(sum(model_["class_counts"]))}
    for i, (digit, pg, pr) in enumerate(fav):
        out.update({f"{i}/digit": str(digit), f"{i}/share": percent(pg), f"{i}/real-share": percent(pr)})
    entries = [f"{prefix}/{i}" for i in range(len(fav))]
    out["digits"] = calls(r"\favdigit", entries, r"\listsep", r"\listand")
    out["shares"] = calls(r"\favshare", entries, r"\listsep")
    out["verdict"] = "none" if not fav else "one" if len(fav) == 1 else "several"
    return out


def ranked(*verdicts: str) -> str:
    """ "ranked" when any of the verdicts about one pair of configurations orders them (higher, lower,
    ahead), else "unranked": the report then says what decides such a ranking (one seed each)."""
    return "ranked" if any(v in ("higher", "lower", "ahead") for v in verdicts) else "unranked"


def reconstruction_verdict(a: dict, b: dict) -> str:
    """ "better" / "worse" when RMSE and SSIM agree by more than REL_TOL, else "unresolved"."""

    def rel(x, y):
        return (x - y) / max(abs(y), 1e-12)

    d_rmse, d_ssim = rel(a["RMSE"], b["RMSE"]), rel(a["SSIM"], b["SSIM"])
    if d_rmse < -REL_TOL and d_ssim > REL_TOL:
        return "better"
    if d_rmse > REL_TOL and d_ssim < -REL_TOL:
        return "worse"
    return "unresolved"


# --------------------------------------------------------------------------- the definitions
def _when(stamp: str | None) -> str:
    if not stamp:
        return NA
    try:
        t = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return escape(stamp)
    if t.tzinfo is not None:
        t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%d %H:%M UTC")


def _lines(order: list[int]) -> str:
    """A schedule, 1-indexed as the seed writes it; long ones shortened in the middle."""
    one = [str(i + 1) for i in order]
    return ", ".join(one) if len(one) <= 10 else ", ".join(one[:6]) + r", \dots, " + ", ".join(one[-2:])


@functools.cache
def _described(net: str, hidden: tuple[int, ...], activation: str) -> dict:
    from . import models

    return models.describe(models.network(SimpleNamespace(net=net, hidden=hidden, activation=activation)))


def described(cfg: dict) -> dict:
    """`models.describe` of the network a model configuration (as a results file holds it) builds."""
    return _described(cfg.get("net", "cnn"), tuple(cfg["hidden"]), cfg["activation"])


def network_facts(prefix: str, cfg: dict) -> dict[str, str]:
    """What the report states about a network, from `models.describe` (prefix/...): `kind` (cnn /
    unet), `parameters`, `mflops`, `convolutions` (count), `kernels` and `resolutions` (lists of
    sides, as ready \\kernelside / \\mapside calls), `levels` (count) with the verdict `levels-verdict`
    (one / several), `receptive-field` (side of one output pixel's window) with `window` (narrower /
    wider than the image), `view-smallest` / `view-largest` (the part of the image one output pixel
    sees), `whole-image-pixels` of `output-pixels` with the verdict `whole` (none / some / all),
    `norm-whole` (yes / no), `time-frequencies`."""
    f = described(cfg)
    side = math.isqrt(f["output_pixels"])
    kernels = sorted({c["kernel"] for c in f["convolutions"]}, reverse=True)
    whole = f["whole_image_pixels"]
    return {
        f"{prefix}/{k}": v
        for k, v in {
            "kind": escape(cfg.get("net", "cnn")),
            "parameters": integer(f["parameters"]),
            "mflops": decimals(f["mflops_per_image"], 1),
            "convolutions": integer(len(f["convolutions"])),
            "kernels": calls(r"\kernelside", map(str, kernels), r"\listsep", r"\listand"),
            "resolutions": calls(r"\mapside", map(str, f["resolutions"]), r"\listsep", r"\listand"),
            "levels": integer(len(f["resolutions"])),
            "levels-verdict": "one" if len(f["resolutions"]) == 1 else "several",
            "receptive-field": integer(f["receptive_field"]),
            "window": "narrower" if f["receptive_field"] < side else "wider",
            "view-smallest": integer(f["view_smallest"]),
            "view-largest": integer(f["view_largest"]),
            "whole-image-pixels": integer(whole),
            "output-pixels": integer(f["output_pixels"]),
            "whole": "none" if whole == 0 else "all" if whole == f["output_pixels"] else "some",
            "norm-whole": "yes" if f["norm_whole_map"] else "no",
            "time-frequencies": integer(f["time_frequencies"]),
        }.items()
    }


def conv_rows(cfgs: dict[str, dict]) -> dict[str, str]:
    """net/convs/<i>/...: for each kernel size and resolution that a network of `cfgs` (role -> config)
    convolves at, the number of convolutions of each (`<role>`), largest resolution and kernel first;
    `rows/net-convs`: the table rows, ready \\convrow calls."""
    counts: dict[tuple[int, int], dict[str, int]] = {}
    for role, cfg in cfgs.items():
        for c in described(cfg)["convolutions"]:
            counts.setdefault((c["resolution"], c["kernel"]), dict.fromkeys(cfgs, 0))[role] += 1
    out = {}
    for i, ((res, kernel), n) in enumerate(sorted(counts.items(), reverse=True)):
        out.update({f"net/convs/{i}/kernel": integer(kernel), f"net/convs/{i}/resolution": integer(res)})
        out.update({f"net/convs/{i}/{role}": integer(v) for role, v in n.items()})
    out["rows/net-convs"] = calls(r"\convrow", [f"net/convs/{i}" for i in range(len(counts))])
    return out


def code_facts(ddpm_cfg: dict, cold_cfg: dict) -> dict[str, str]:
    """Facts the method section states, read from the code that the results came from: the first
    DDPM's network (`models.describe`: arch/...) and the degradation's schedules."""
    from . import degradations, inception

    facts = described(ddpm_cfg)  # the seed's network, as chapter 1 describes it
    convs = facts["convolutions"]
    blocks, out = convs[:-1], convs[-1]
    if len({c["kernel"] for c in blocks}) != 1:
        raise ReportError(
            f"chapter 1 describes a CNN of blocks with one kernel size; the first DDPM's network "
            f"({ddpm_cfg.get('net', 'cnn')}) has kernels {[c['kernel'] for c in convs]}"
        )
    side = degradations.SIZE
    main_order = degradations.schedule_order(
        cold_cfg["schedule"], cold_cfg["T"], cold_cfg.get("schedule_seed", 0)
    ).tolist()
    return {
        **network_facts("arch", ddpm_cfg),
        "arch/blocks": integer(len(blocks)),
        "arch/hidden": ", ".join(str(h) for h in ddpm_cfg["hidden"]),
        "arch/kernel": integer(blocks[0]["kernel"]),
        "arch/out-kernel": integer(out["kernel"]),
        "arch/freqs": integer(facts["time_frequencies"]),
        "arch/params-first": integer(facts["parameters"]),
        "const/image-side": integer(side),
        "const/inception-dims": integer(inception.FEATURE_DIM),
        "schedule/outside-in": _lines(degradations.outside_in(side)),
        "schedule/inside-out": _lines(degradations.inside_out(side)),
        "schedule/main": ", ".join(str(i + 1) for i in main_order),
    }


def roles(src: dict) -> dict[str, tuple[str, dict]]:
    """ "<notebook>/<role>" -> (model name, block), the names read from each notebook's parameters."""
    out = {}
    for nb, named in study.roles().items():
        for role, param in named.items():
            name = src[nb]["params"][param]
            out[f"{slug(nb)}/{role}"] = (name, src[nb]["models"][name])
    return out


def variants(nb3: dict) -> list[str]:
    """The appendix variants of notebook 03: the study's order (helpers.study), then any other."""
    order = study.names("cold")
    main = nb3["params"]["cold_preset"]
    return sorted(
        (v for v in nb3["models"] if v != main), key=lambda v: (order.index(v) if v in order else len(order), v)
    )


def definitions(profile: str, src: dict, plots_dir: Path) -> dict[str, str]:
    """Every key the report may use, with its LaTeX text."""
    d: dict[str, str] = {}
    for name, node in src.items():
        flatten(slug(name), name, node, d)
    role = roles(src)
    for prefix, (name, block) in role.items():
        model(prefix, name, block, d)
    nb1, nb2, nb3, nb4 = (src[n] for n in results.NOTEBOOKS)
    first, second = role["02-hyperparams/first"][1], role["02-hyperparams/second"][1]
    main, cold_main = role["03-cold-diffusion/main-model"]
    ddpm_f, cold_f = role["04-comparison/ddpm"][1]["final"], role["04-comparison/cold"][1]["final"]
    d.update(code_facts(role["01-ddpm/model"][1]["config"], cold_main["config"]))
    d.update(figure_keys(src, plots_dir))

    # the profile, constants, the draft's numbers
    prof, full = nb1["profile_settings"], config.PROFILES["full"]
    d.update(
        {
            "profile/name": escape(profile),
            "seed/epochs": integer(full.epochs),
            "profile/final-n": integer(nb1["real"]["n"]),
            "profile/epoch-n": integer(nb1["real_per_epoch"]["n"]),
            "const/classes": integer(len(nb1["real"]["class_counts"])),
            "const/max-entropy": decimals(math.log2(len(nb1["real"]["class_counts"])), 2),
            "const/resolve-se": f"{RESOLVE_SE:g}",
            "const/rel-tol": percent(REL_TOL),
            "student/fid-images": integer(STUDENT_FID_IMAGES),
            "student/is-split": integer(STUDENT_IS_SPLIT),
        }
    )
    for key, values in STUDENT.items():
        d.update({f"student/{key}/{k}": v for k, v in values.items()})
    d["profile/sample-epochs"] = ", ".join(str(e) for e in prof["sample_epochs"] if e <= prof["epochs"])
    d["profile/eval-epochs"] = ", ".join(str(e) for e in prof["eval_epochs"] if e <= prof["epochs"])
    short = prof.get("short_epochs")
    budgets = {
        "": (prof["epochs"], prof["train_limit"]),
        "short-": (prof["epochs"] if short is None else short, prof["train_limit"]),
        "variant-": (prof.get("variant_epochs", prof["epochs"]), prof.get("variant_train_limit", prof["train_limit"])),
    }
    for part, (epochs, limit) in budgets.items():
        d[f"profile/{part}epochs"] = integer(epochs)
        d[f"profile/{part}train-limit"] = NA if limit is None else integer(limit)
        d[f"profile/{part}all-images"] = "yes" if limit is None else "no"
    d["profile/variant-same"] = "yes" if budgets[""] == budgets["variant-"] else "no"
    d["profile/short-same"] = "yes" if budgets[""] == budgets["short-"] else "no"
    final1 = nb1["models"][nb1["params"]["preset"]]["final"]
    d["eval/is-splits"] = integer(final1["is_splits"])
    d["eval/is-split-size"] = integer(final1["n"] // final1["is_splits"])
    d["eval/bootstrap"] = integer(final1.get("n_bootstrap") or 0)
    d["eval/inception"] = "computed" if (final1.get("inception") or {}).get("n") else "not-computed"
    stamp_keys(src, d)
    count = sum(1 for k in d if k.startswith("notebooks/") and k.endswith("/name"))
    d["rows/notebooks"] = calls(r"\notebookrow", [f"notebooks/{i}" for i in range(count)]) or r"\nonotebooks"
    d["table/digits"] = calls(r"\digitcell", map(str, range(len(nb4["real"]["class_counts"]))))
    d["run/seed"] = ", ".join(sorted({str(src[n]["params"]["seed"]) for n in results.NOTEBOOKS}))

    # verdicts and the values they need
    for key, run in (("ddpm", role["01-ddpm/model"][1]["run"]), ("cold", cold_main["run"])):
        d.update({f"loss/{key}/{k}": v for k, v in loss_trend(run).items()})
    for key, run, name in (
        ("ddpm-fid", role["01-ddpm/model"][1]["run"], "fid_classifier"),
        ("ddpm-is", role["01-ddpm/model"][1]["run"], "is_classifier_mean"),
        ("second-fid", second["run"], "fid_classifier"),
        ("cold-fid", cold_main["run"], "fid_classifier"),
        ("cold-is", cold_main["run"], "is_classifier_mean"),
    ):
        d.update({f"trend/{key}/{k}": v for k, v in metric_trend(run["per_epoch"], name).items()})
    d["claim/second-set-fid"] = metric_verdict(second["final"], first["final"])
    d["claim/second-set-is"] = metric_verdict(second["final"], first["final"], "is_classifier_mean", "_se")
    lf, ls = first["run"]["epoch_loss"][-1], second["run"]["epoch_loss"][-1]
    d["claim/second-set-loss"] = "higher" if ls > lf else "lower" if ls < lf else "same"
    d["claim/ddpm-vs-cold-fid"] = metric_verdict(ddpm_f, cold_f)
    d["claim/ddpm-vs-cold-is"] = metric_verdict(ddpm_f, cold_f, "is_classifier_mean")
    ed, ec = ddpm_f["class_entropy_bits"], cold_f["class_entropy_bits"]
    d["claim/diversity"] = "more" if ed > ec else "less" if ed < ec else "same"
    d["rank/second-set"] = ranked(d["claim/second-set-fid"], d["claim/second-set-is"])
    d["rank/ddpm-vs-cold"] = ranked(d["claim/ddpm-vs-cold-fid"], d["claim/ddpm-vs-cold-is"])
    for key, block in (("cold", cold_f), ("ddpm", ddpm_f)):
        d.update({f"favours/{key}/{k}": v for k, v in favours(block, nb4["real"], f"favours/{key}").items()})
    recon = role["04-comparison/cold"][1]["reconstruction"]
    d["claim/alg2-vs-alg1"] = reconstruction_verdict(recon["algorithm2"], recon["algorithm1"])
    d["claim/alg2-vs-direct"] = reconstruction_verdict(recon["algorithm2"], recon["direct"])
    cond = recon["algorithm2"].get("FID")
    d["claim/conditional"] = (
        "not-computed"
        if cond is None
        else {1: "higher", -1: "lower", 0: "within"}[
            compare(cond, None, cold_f["fid_classifier"], cold_f.get("fid_classifier_se"))
        ]
    )
    variant_keys(nb3, main, d)
    beyond_keys(nb2, d)
    network_keys(nb3, nb4, d)
    return d


def stamp_keys(src: dict, d: dict[str, str]) -> None:
    """The title page's record of the run: the pipeline's, or what can be read when building."""
    pipe, run1 = src.get("pipeline"), src["01_ddpm"]["models"][src["01_ddpm"]["params"]["preset"]]["run"]
    d["stamp/built"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    d["stamp/pipeline"] = "recorded" if pipe else "missing"
    if pipe:
        git = pipe.get("git") or {}
        d["stamp/commit"] = escape(str(git.get("commit") or "unknown")[:12])
        clean = git.get("clean")
        d["stamp/tree"] = "clean" if clean else "unknown" if clean is None else "dirty"
        d["stamp/date"], d["stamp/wall"] = _when(pipe.get("finished")), fmt("seconds", pipe.get("wall_seconds"))
        d["stamp/python"], d["stamp/torch"] = escape(pipe.get("python", "?")), escape(pipe.get("torch", "?"))
        d["stamp/device"] = escape(pipe.get("device") or run1["device"])
        d["stamp/precision"] = escape(pipe.get("precision") or run1["precision"])
        d["stamp/precision-reason"] = escape(pipe.get("precision_reason") or "not recorded")
        d["stamp/sampling-batch"] = fmt("n", pipe.get("sampling_batch"))
    else:
        state = config.git_state()
        d["stamp/commit"] = escape(state["commit"][:12] if state["commit"] else "unknown")
        d["stamp/tree"] = {True: "clean", False: "dirty", None: "unknown"}[state["clean"]]
        d["stamp/python"] = escape(sys.version.split()[0])
        d["stamp/device"], d["stamp/precision"] = escape(run1["device"]), escape(run1["precision"])
        d["stamp/precision-reason"], d["stamp/sampling-batch"] = "not recorded", NA
    notebooks = (pipe or {}).get("notebooks")
    notebooks = notebooks if isinstance(notebooks, dict) else {}
    d["notebooks/count"] = integer(len(notebooks))
    for i, (name, v) in enumerate(notebooks.items()):
        d[f"notebooks/{i}/name"] = escape(name)
        d[f"notebooks/{i}/seconds"] = fmt("seconds", v.get("seconds"))
        d[f"notebooks/{i}/status"] = escape(v.get("status", ""))


def variant_keys(nb3: dict, main: str, d: dict[str, str]) -> None:
    """Appendix A: the variants as a list (variants/<i>/...; their table rows, figures and timing rows
    as ready calls, rows/variants, rows/variant-figures, rows/variant-timing), and which model has
    the lowest FID."""
    names = variants(nb3)
    d["variants/count"] = integer(len(names))
    for i, v in enumerate(names):
        model(f"variants/{i}", v, nb3["models"][v], d)
    entries = [f"variants/{i}" for i in range(len(names))]
    d["rows/variants"] = calls(r"\variantrow", entries)
    d["rows/variant-figures"] = calls(r"\variantfigure", entries)
    d["rows/variant-timing"] = calls(r"\coldtimingrow", entries)
    order = sorted(
        (
            (nb3["models"][v]["final"]["fid_classifier"], v)
            for v in [main] + names
            if nb3["models"][v]["final"].get("fid_classifier") is not None
        ),
        key=lambda t: t[0],
    )
    if len(order) < 2:
        d["claim/variants-best"] = "unranked"
    else:
        (_, b1), (_, b2) = order[0], order[1]
        f1, f2 = nb3["models"][b1]["final"], nb3["models"][b2]["final"]
        model("variants/best", b1, nb3["models"][b1], d)
        model("variants/next", b2, nb3["models"][b2], d)
        d["claim/variants-best"] = "ahead" if metric_verdict(f2, f1) == "higher" else "within"
    d["rank/variants"] = ranked(d["claim/variants-best"])
    d["variants/mixed-epochs"] = "yes" if len({nb3["models"][v]["run"]["epochs"] for v in [main] + names}) > 1 else "no"


def beyond_keys(nb2: dict, d: dict[str, str]) -> None:
    """Appendix B (only with its results): DDIM with fewer steps (its table rows: rows/ddim, a
    \\princerow or \\ddimrow per row), and EMA weights."""
    ddim = nb2["ddim"] if "rows" in (nb2.get("ddim") or {}) else None
    ema = nb2["ema"] if "final" in (nb2.get("ema") or {}) else None
    if ddim:
        d["rows/ddim"] = "".join(
            rf"\{'princerow' if r['sampler'] == 'prince' else 'ddimrow'}{{02-hyperparams/ddim/rows/{i}}}"
            for i, r in enumerate(ddim["rows"])
        )
        base = [r for r in ddim["rows"] if r["sampler"] == "prince"]
        fast = sorted((r for r in ddim["rows"] if r["sampler"] == "ddim"), key=lambda r: r["steps"])
        if not (base and fast):
            d["claim/ddim"] = "no-baseline"
        else:
            flatten("ddim/baseline", "baseline", base[0], d)
            ok = [
                r
                for r in fast
                if compare(
                    r["fid_classifier"],
                    r.get("fid_classifier_se"),
                    base[0]["fid_classifier"],
                    base[0].get("fid_classifier_se"),
                )
                <= 0
            ]
            d["claim/ddim"] = "reaches" if ok else "fails"
            if ok:
                flatten("ddim/first-ok", "first-ok", ok[0], d)
    if ema:
        d["claim/ema"] = metric_verdict(ema["final"]["ema"], ema["final"]["raw"])
        # both weights come from one training run: ranked as that run's, like two configurations
        d["rank/ema"] = "one-run" if ranked(d["claim/ema"]) == "ranked" else "unranked"
    for flag, present in (("ddim", ddim), ("ema", ema), ("beyond", ddim or ema)):
        if present:
            d[f"has/{flag}"] = "1"


def network_keys(nb3: dict, nb4: dict, d: dict[str, str]) -> None:
    """Appendix C (only with its results): the U-Net beside the CNN. The reference network (the
    DDPM preset of notebook 04) is `networks/first`, the other `networks/second`; each also at the
    same number of steps (`networks/same-steps/...`) and the reference at the other's training time
    (`networks/same-time`). What the text says about each network comes from `models.describe`
    (`net/first/...`, `net/second/...`, `net/restorer/...`, the convolutions table `net/convs/...`);
    the table rows are ready calls (rows/networks, rows/net-convs)."""
    nets = nb4.get("networks")
    if nets and len(nets.get("networks", {})) >= 2:
        first = nets["reference"]
        second = next(n for n in nets["networks"] if n != first)
        cfgs = {"first": nets["networks"][first]["config"], "second": nets["networks"][second]["config"]}
        for role, name in (("first", first), ("second", second)):
            model(f"networks/{role}", name, nets["networks"][name], d)
            d.update(network_facts(f"net/{role}", cfgs[role]))
        d.update(conv_rows(cfgs))
        facts = {role: described(cfg) for role, cfg in cfgs.items()}
        for key, field in (("parameters", "parameters"), ("flops", "mflops_per_image")):
            a, b = facts["second"][field], facts["first"][field]
            d[f"claim/networks-{key}"] = "higher" if a > b else "lower" if a < b else "same"
        d["claim/networks-final"] = metric_verdict(nets["networks"][second]["final"], nets["networks"][first]["final"])
        d["claim/networks-more-steps"] = (
            "yes" if nets["networks"][first]["steps"] > nets["networks"][second]["steps"] else "no"
        )
        same = nets.get("same_steps")
        if same:
            flatten("networks/same-steps", "same_steps", same, d)
            for role, name in (("first", first), ("second", second)):
                model(f"networks/same-steps/{role}", name, same["models"][name], d)
                seconds = nets["networks"][name]["train_seconds_cumulative"]
                d[f"networks/same-steps/{role}/train-seconds"] = fmt("seconds", seconds[same["epoch"] - 1])
            d["claim/networks-same-steps"] = metric_verdict(same["models"][second], same["models"][first])
            d["has/networks-same-steps"] = "1"
        d["rank/networks"] = ranked(d["claim/networks-final"], d.get("claim/networks-same-steps", "unresolved"))
        rows = [r"\netsamerow{first}\netsamerow{second}\midrule"] if same else []
        d["rows/networks"] = "".join([*rows, r"\netfinalrow{first}\netfinalrow{second}"])
        matched = (nets.get("same_time") or {}).get(second)
        if matched:
            flatten("networks/same-time", "same_time", matched, d)
            d["has/networks-same-time"] = "1"
        d["has/networks"] = "1"
    block = nb3.get("restorer_unet")
    if block:
        model("restorer", block["run"]["label"], block, d)
        main = nb3["models"][nb3["params"]["cold_preset"]]
        d.update(network_facts("net/restorer", block["config"]))
        d["claim/restorer-fid"] = metric_verdict(block["final"], main["final"])
        d["rank/restorer"] = ranked(d["claim/restorer-fid"])
        d["has/restorer"] = "1"
    if nets or block:
        d["has/appendix-c"] = "1"


def figure_keys(src: dict, plots_dir: Path) -> dict[str, str]:
    """figure/<key> -> the file the notebooks saved under helpers.study's name (checked to exist)."""
    presets = {
        "ddpm": src["01_ddpm"]["params"]["preset"],
        "second": src["02_hyperparams"]["params"]["preset"],
        "cold": src["03_cold_diffusion"]["params"]["cold_preset"],
    }
    nb2 = src["02_hyperparams"]
    skip = {k for k in study.FIGURES if k.endswith("-explorer")} | {"variant"}
    skip |= set() if "rows" in (nb2.get("ddim") or {}) else {"ddim"}
    skip |= set() if "final" in (nb2.get("ema") or {}) else {"ema"}
    skip |= set() if src["04_comparison"].get("networks") else {k for k in study.FIGURES if k.startswith("networks-")}
    files = {
        key: study.figure(key, presets[key.split("-")[0]] if "{preset}" in t else None)
        for key, t in study.FIGURES.items()
        if key not in skip
    }
    files.update({f"variant/{slug(v)}": study.figure("variant", v) for v in variants(src["03_cold_diffusion"])})
    missing = [f"{f}.png" for f in files.values() if not (plots_dir / f"{f}.png").is_file()]
    if missing:
        raise ReportError(
            f"figure(s) missing in {plots_dir}: {', '.join(missing)} (the notebooks write "
            "them; rerun them for this profile)"
        )
    return {f"figure/{key}": f for key, f in files.items()}


def generated_dir(profile: str, out_dir: Path | None = None) -> Path:
    return Path(out_dir or SOURCE_DIR / profile) / "generated"


def generate(
    profile: str, results_dir: Path | None = None, plots_dir: Path | None = None, out_dir: Path | None = None
) -> Path:
    """Write <out>/generated/report-results.tex (and keys.txt, one key per line); return the .tex."""
    try:
        src = results.load_all(profile, results_dir)
    except (FileNotFoundError, store.CorruptFile) as exc:
        raise ReportError(str(exc)) from exc
    plots = Path(plots_dir) if plots_dir else Path(os.environ.get("DIFFUSION_PLOTS_DIR") or config.PLOTS_DIR)
    plots = (plots / profile).resolve()
    try:
        defs = definitions(profile, src, plots)
    except results.MissingField as exc:
        raise ReportError(f"{exc}: the report needs it") from exc
    lines = [
        "% Generated by helpers.report from results/" + profile + "/*.json: do not edit.\n",
        "\\graphicspath{{plots/}}\n",
    ]  # `build` links the figures' folder there
    lines += [f"\\resdef{{{key}}}{{{defs[key]}}}\n" for key in sorted(defs)]
    folder = generated_dir(profile, out_dir)
    store.atomic_write_text(folder / KEYS_FILE, "".join(f"{k}\n" for k in sorted(defs)))
    return store.atomic_write_text(folder / GENERATED, "".join(lines))


# --------------------------------------------------------------------------- building
def build(
    profile: str,
    results_dir: Path | None = None,
    plots_dir: Path | None = None,
    out_dir: Path | None = None,
    timeout: float = 600,
) -> Path:
    """Generate the includes and compile report/report.tex to <out>/report.pdf (default
    report/<profile>/) with `helpers.latex`. Any LaTeX error, an undefined result key or a verdict
    without words (named), a missing figure or an undefined reference raises ReportError."""
    out = Path(out_dir or SOURCE_DIR / profile).resolve()
    try:
        latex.find_latexmk()
        generate(profile, results_dir, plots_dir, out)
        plots = Path(plots_dir) if plots_dir else Path(os.environ.get("DIFFUSION_PLOTS_DIR") or config.PLOTS_DIR)
        sources = [*SOURCE_DIR.glob("*.tex"), *generated_dir(profile, out).iterdir()]
        return latex.compile_pdf(MAIN, sources, plots / profile, out, timeout)
    except latex.LatexError as exc:
        keys = f"see {generated_dir(profile, out)}/{KEYS_FILE} for the keys that exist"
        if exc.missing_key:
            raise ReportError(
                f"result key {exc.missing_key!r} is not defined: report.tex uses it but no results "
                f"file of profile {profile!r} provides it ({keys})"
            ) from exc
        if exc.no_words:
            verdict, key, family = exc.no_words
            raise ReportError(
                f"verdict {verdict!r} of result key {key!r} has no words in the family {family!r}: "
                f"add \\words{{{family}}}{{{verdict}}} to the report's sources"
            ) from exc
        raise ReportError(str(exc)) from exc


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
