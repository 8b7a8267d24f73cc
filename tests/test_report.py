"""The report: results files -> generated LaTeX -> PDF, checked on a complete fixture results set.

The fixture is what the notebooks write for the quick profile (all four results files and the
pipeline record, numbers of a realistic size, tiny PNG figures), so these tests need no training.
Building needs TeX (latexmk, pdflatex, pdftotext): without it the build tests are skipped with the
reason, except under CI=true, where they fail.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import config, latex, report, results, study

PROFILE = "quick"


# --------------------------------------------------------------------------- fixture
def final_block(prof, fid, fid_se, is_, is_se, per_mille, n=None, inception=None):
    """A FINAL / REAL block as metrics.evaluate returns it for profile `prof`; class counts scaled
    from shares in 1/1000."""
    n = n or prof.final_samples
    exact = [c * n / 1000 for c in per_mille]
    counts = [math.floor(v) for v in exact]
    for i in sorted(range(10), key=lambda i: counts[i] - exact[i])[: n - sum(counts)]:  # largest remainders
        counts[i] += 1
    p = [c / n for c in counts]
    out = {
        "fid_classifier": fid,
        "fid_classifier_se": fid_se,
        "kid_classifier_mean": fid / 900,
        "kid_classifier_std": fid / 9000,
        "kid_subset_size": 100,
        "is_classifier_mean": is_,
        "is_classifier_std": is_se * 3,
        "is_classifier_mean_se": is_se,
        "is_splits": 10,
        "n_bootstrap": 20,
        "class_counts": counts,
        "class_entropy_bits": -sum(q * math.log2(q) for q in p if q),
        "top_class": p.index(max(p)),
        "top_class_share": max(p),
        "n": n,
        "n_reference": n,
        "clipped_share": 0.0123,
    }
    if inception is not None and prof.inception_samples:
        out["inception"] = {
            "fid_inception": inception,
            "n": prof.inception_samples,
            "n_reference": prof.inception_samples,
        }
    return out


def run_block(prof, label, fids, iss, losses, epochs=None):
    """A RUN block with the profile's epochs (the last `epochs` of the given curves)."""
    epochs = epochs or prof.epochs
    fids, iss, losses = fids[-epochs:], iss[-epochs:], losses[-epochs:]
    return {
        "key": f"{label}-0123456789ab",
        "label": label,
        "epochs": len(losses),
        "train_limit": prof.train_limit,
        "cached": False,
        "device": "cpu",
        "precision": "fp32",
        "epoch_loss": losses,
        "epoch_seconds": [221.5, 219.0, 224.25][-len(losses) :],
        "per_epoch": {
            str(e): {
                "fid_classifier": f,
                "kid_classifier_mean": f / 900,
                "kid_classifier_std": f / 9000,
                "is_classifier_mean": i,
                "is_classifier_std": 0.2,
                "class_entropy_bits": 3.1,
                "top_class_share": 0.17,
                "n": prof.eval_samples,
                "epoch": e,
            }
            for e, (f, i) in enumerate(zip(fids, iss), start=1)
            if e in prof.eval_epochs
        },
    }


UNIFORM = [100] * 10
REAL_SHARES = [98, 113, 103, 101, 98, 89, 96, 103, 97, 102]


def recon_block(scale=1.0):
    return {
        "degraded": {"RMSE": 0.2710, "SSIM": 0.312, "PSNR": 11.4, "FID": 310.2},
        "direct": {"RMSE": 0.1804 * scale, "SSIM": 0.611, "PSNR": 15.1, "FID": 88.7},
        "algorithm1": {"RMSE": 0.1912, "SSIM": 0.583, "PSNR": 14.6, "FID": 74.3},
        "algorithm2": {"RMSE": 0.1651 * scale, "SSIM": 0.652, "PSNR": 15.9, "FID": 41.9},
    }


def ddpm_config(**kw):
    return dataclasses.asdict(config.ddpm_preset(kw.pop("preset", "default")))


# The quick profile's settings the fixture's numbers and expected sentences were written for; saved
# as each file's profile_settings, so the fixture does not move when quick is re-budgeted.
FIXTURE_QUICK = dataclasses.replace(
    config.PROFILES["quick"],
    epochs=2,
    train_limit=30_000,
    sample_epochs=(1, 2),
    eval_epochs=(1, 2),
    eval_samples=50,
    final_samples=200,
    inception_samples=100,
    variant_epochs=1,
    variant_train_limit=10_000,
    ddim_samples=200,
    short_epochs=None,
    precision="fp32",
    ema_decay=0.995,
    ddim_steps=(10, 20, 50, 100),
)


def fixture_data(profile: str = PROFILE) -> dict[str, dict]:
    """Every results file the notebooks and the pipeline write for `profile`, with made-up numbers."""
    prof = FIXTURE_QUICK if profile == "quick" else config.PROFILES[profile]
    common = {
        "real": final_block(prof, 0.61, 0.05, 9.62, 0.04, REAL_SHARES, inception=4.9),
        "real_per_epoch": final_block(prof, 2.1, 0.2, 9.4, 0.1, REAL_SHARES, n=prof.eval_samples),
    }
    default = {
        "config": ddpm_config(),
        "run": run_block(prof, "default", [61.2, 38.5, 30.1], [6.1, 7.2, 7.6], [0.0712, 0.0398, 0.0361]),
        "final": final_block(
            prof, 27.34, 0.41, 7.48, 0.05, [88, 131, 97, 104, 95, 80, 99, 112, 90, 104], inception=61.7
        ),
    }
    testing = {
        "config": ddpm_config(preset="testing"),
        "run": run_block(prof, "testing", [80.4, 55.0, 47.9], [5.0, 6.0, 6.3], [0.1003, 0.0655, 0.0611]),
        "final": final_block(
            prof, 45.12, 0.52, 6.71, 0.06, [70, 160, 90, 100, 99, 80, 100, 121, 80, 100], inception=80.2
        ),
    }
    cold = {}
    for i, name in enumerate(["columns", *study.names("cold", "variant")]):  # main model and variants
        cfg = config.COLD_PRESETS[name]
        cold[name] = {
            "config": dataclasses.asdict(cfg),
            "run": run_block(
                prof,
                name,
                [140.0 - i, 95.0 - i, 70.5 + 3 * i],
                [3.0, 3.9, 4.4],
                [0.0521, 0.0302, 0.0288 + 0.001 * i],
                epochs=None if name == "columns" else getattr(prof, "variant_epochs", None),
            ),
            "final": final_block(
                prof,
                66.4 + 4 * i,
                0.8,
                4.95 - 0.1 * i,
                0.04,
                [60, 301, 70, 80, 90, 40, 50, 190, 60, 59],
                inception=140.5 + i,
            ),
            "reconstruction": recon_block(1.0 + 0.02 * i),
        }
    ddim_rows = [
        {
            "sampler": "prince",
            "steps": 1000,
            "eta": 1.0,
            "fid_classifier": 27.3,
            "fid_classifier_se": 0.4,
            "is_classifier_mean": 7.5,
            "seconds_per_sample": 0.212,
            "speedup": 1.0,
        }
    ]
    for steps, fid in ((10, 48.0), (50, 28.1), (100, 27.5)):
        ddim_rows.append(
            {
                "sampler": "ddim",
                "steps": steps,
                "eta": 0.0,
                "fid_classifier": fid,
                "fid_classifier_se": 0.5,
                "is_classifier_mean": 7.3,
                "seconds_per_sample": 0.212 * steps / 1000,
                "speedup": 1000 / steps,
            }
        )
    unet_final = final_block(prof, 18.9, 0.35, 8.02, 0.05, [95, 118, 99, 103, 97, 85, 98, 107, 95, 103])
    same = {
        "cnn": final_block(prof, 96.2, 2.1, 3.4, 0.1, UNIFORM, n=prof.eval_samples),
        "unet": final_block(prof, 41.7, 1.2, 6.6, 0.1, REAL_SHARES, n=prof.eval_samples),
    }
    networks = {
        "reference": "default",
        "networks": {
            name: {
                "parameters": params,
                "mflops_per_image": mflops,
                "net": net,
                "config": ddpm_config(preset=name),
                "precision": "bf16",
                "epochs": epochs,
                "steps": 469 * epochs,
                "steps_per_epoch": 469,
                "train_seconds": 98.5 * epochs,
                "train_seconds_cumulative": [98.5 * (e + 1) for e in range(epochs)],
                "final": final,
            }
            for name, params, mflops, net, epochs, final in (
                ("default", 291_217, 158.9, "cnn", 3, default["final"]),
                ("unet", 179_969, 56.7, "unet", 1, unet_final),
            )
        },
        "same_steps": {"epoch": 1, "steps": 469, "models": {"default": same["cnn"], "unet": same["unet"]}},
        "same_time": {
            "unet": {"epoch": 1, "steps": 469, "train_seconds": 98.5, "reference": same["cnn"], "other": same["unet"]}
        },
    }
    restorer = {
        "config": dataclasses.asdict(config.COLD_PRESETS["columns_unet"]),
        "run": run_block(prof, "columns_unet", [120.0, 80.0, 60.5], [3.3, 4.1, 4.6], [0.05, 0.03, 0.027]),
        "final": final_block(prof, 58.2, 0.7, 5.1, 0.04, [70, 250, 80, 90, 90, 60, 60, 180, 60, 60]),
        "reconstruction": recon_block(0.95),
    }
    last = str(prof.epochs)
    run = {"profile": profile, "seed": 0, "device": "auto", "precision": "profile"}
    common["profile_settings"] = dataclasses.asdict(prof)
    variants = study.names("cold", "variant")
    return {  # helpers.results.notebook_block's shape, as each notebook calls it
        "01_ddpm": results.notebook_block(
            {**run, "preset": "default", "overrides": {}}, **common, models={"default": default}
        ),
        "02_hyperparams": results.notebook_block(
            {**run, "preset": "testing", "baseline": "default", "overrides": {}},
            **common,
            models={"default": default, "testing": testing},
            ddim={"preset": "default", "n": getattr(prof, "ddim_samples", 200), "rows": ddim_rows},
            ema={
                "preset": "default",
                "decay": 0.999,
                "per_epoch": {last: {"raw": {"fid_classifier": 30.1}, "ema": {"fid_classifier": 25.0}}},
                "final": {
                    "raw": default["final"],
                    "ema": final_block(prof, 22.05, 0.38, 7.71, 0.05, UNIFORM, inception=55.3),
                },
            },
        ),
        "03_cold_diffusion": results.notebook_block(
            {
                **run,
                "cold_preset": "columns",
                "cold_variants": variants,
                "cold_unet_preset": "columns_unet",
                "overrides": {},
            },
            **common,
            models=cold,
            restorer_unet=restorer,
        ),
        "04_comparison": results.notebook_block(
            {**run, "preset": "default", "cold_preset": "columns", "unet_preset": "unet"},
            **common,
            models={"default": default, "columns": cold["columns"]},
            networks=networks,
        ),
        "pipeline": {
            "started": "2026-11-29T01:00:00+00:00",
            "finished": "2026-11-29T02:58:31+00:00",
            "wall_seconds": 7111.4,
            "notebooks": {n: {"seconds": 1500.0 + i, "status": "ok"} for i, n in enumerate(results.NOTEBOOKS)},
            "git": {"commit": "9c66354abcdef0123456789", "clean": True},
            "device": "cpu",
            "precision": "fp32",
            "python": "3.11.9",
            "torch": "2.14.1",
        },
    }


FIGURES = [
    "fig1_1_activations",
    "fig1_2_loss_default",
    "fig1_3_samples_default",
    "fig1_4_fid_default",
    "fig1_5_is_default",
    "fig1_6_loss_testing",
    "fig1_7_samples_testing",
    "fig1_8_samples_last_testing",
    "fig1_9_fid_sets",
    "fig1_10_is_sets",
    "fig2_0_degradation_steps",
    "fig2_1_loss_cold_columns",
    "fig2_samples_cold_columns",
    "fig2_2_fid_cold_columns",
    "fig2_3_is_cold_columns",
    "fig2_4_reconstructions_columns",
    "fig2_5_fid_ddpm_vs_cold",
    "fig2_6_class_histograms",
    "figB_1_ddim_steps",
    "figB_2_ema",
    "figC_1_samples_cnn_unet",
    "figC_2_fid_cnn_unet",
    "figC_3_class_histograms_cnn_unet",
    *(f"figA_reconstructions_{v}" for v in study.names("cold", "variant")),
]


def write_png(path: Path, label: str) -> None:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (320, 160), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle([2, 2, 317, 157], outline="black")
    draw.text((12, 70), label, fill="black")
    img.save(path)


def write_fixture(results_dir: Path, plots_dir: Path, profile: str = PROFILE, data: dict | None = None) -> dict:
    """Write the results files through helpers.results.save and the figures; return the data."""
    data = data or fixture_data(profile)
    old = os.environ.get("DIFFUSION_RESULTS_DIR")
    os.environ["DIFFUSION_RESULTS_DIR"] = str(results_dir)
    try:
        for name, block in data.items():
            results.save(profile, name, block)
    finally:
        if old is None:
            del os.environ["DIFFUSION_RESULTS_DIR"]
        else:
            os.environ["DIFFUSION_RESULTS_DIR"] = old
    (plots_dir / profile).mkdir(parents=True, exist_ok=True)
    for name in FIGURES:
        write_png(plots_dir / profile / f"{name}.png", name)
    return data


@pytest.fixture
def fixture_dirs(tmp_path, monkeypatch):
    res, plots, out = tmp_path / "results", tmp_path / "Plots", tmp_path / "out"
    monkeypatch.setenv("DIFFUSION_RESULTS_DIR", str(res))
    monkeypatch.setenv("DIFFUSION_PLOTS_DIR", str(plots))
    data = write_fixture(res, plots)
    return {"results": res, "plots": plots, "out": out, "data": data}


def tex_tools() -> None:
    missing = [t for t in ("latexmk", "pdflatex", "pdftotext") if shutil.which(t) is None]
    if missing:
        why = (
            f"{', '.join(missing)} not installed (apt-get install --no-install-recommends "
            f"{latex.DEBIAN_PACKAGES} poppler-utils)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why)
        pytest.skip(why)


def keys_of(out: Path) -> set[str]:
    return set((out / "generated" / report.KEYS_FILE).read_text().split())


def generated(out: Path) -> dict[str, str]:
    return dict(re.findall(r"\\resdef\{([^}]*)\}\{(.*)\}$", (out / "generated" / report.GENERATED).read_text(), re.M))


def pdf_text(pdf: Path, layout: bool = False) -> str:
    """The PDF's text as one line: words broken across lines joined, runs of white space one space
    (`layout`: table rows kept together, as pdftotext -layout reads them)."""
    text = subprocess.run(
        ["pdftotext", *(["-layout"] if layout else []), str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    for lig, plain in (("\ufb01", "fi"), ("\ufb02", "fl"), ("\ufb00", "ff"), ("\ufb03", "ffi"), ("\u2019", "'")):
        text = text.replace(lig, plain)
    return " ".join(re.sub(r"(\w)-\n(\w)", r"\1\2", text).split())


# --------------------------------------------------------------------------- results files
def test_results_save_load_roundtrip_plain_json(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFUSION_RESULTS_DIR", str(tmp_path))
    p = results.save("quick", "01_ddpm", {"final": {"fid_classifier": float("nan"), "n": 5}, "curve": (1, 2.5)})
    assert p == tmp_path / "quick" / "01_ddpm.json" == results.path("quick", "01_ddpm")
    text = p.read_text()
    assert "NaN" not in text  # strict JSON: the non-finite value is null
    back = results.load("quick", "01_ddpm")
    assert back["final"] == {"fid_classifier": None, "n": 5} and back["curve"] == [1, 2.5]
    assert back["notebook"] == "01_ddpm" and back["profile"] == "quick"
    assert back["profile_settings"]["final_samples"] == config.PROFILES["quick"].final_samples
    assert not list(tmp_path.rglob("*.tmp*"))


def test_results_refuse_bad_names_and_values(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFUSION_RESULTS_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="notebook='05_x'.*01_ddpm"):
        results.save("quick", "05_x", {})
    with pytest.raises(ValueError, match="profile='../x'"):
        results.path("../x", "01_ddpm")
    with pytest.raises(TypeError, match=r"01_ddpm.json\['bad'\]"):
        results.save("quick", "01_ddpm", {"bad": object()})
    with pytest.raises(ValueError, match="disagrees"):
        results.save("quick", "01_ddpm", {"profile": "full"})
    with pytest.raises(FileNotFoundError, match="notebooks/02_hyperparams.ipynb"):
        results.load("quick", "02_hyperparams")


def test_run_summary_from_a_run(tmp_path):
    import torch

    from helpers.training import Run, TrainSettings

    (tmp_path / "run.json").write_text(json.dumps({"label": "default"}))
    logs = {
        "iter_loss": [0.5, 0.4],
        "epoch_loss": [0.45, 0.3],
        "epoch_seconds": [1.5, 1.25],
        "samples": {},
        "metrics": {
            2: {"fid_classifier": 12.5, "n": 32, "epoch": 2, "clipped_share": 0.1},
            1: {"fid_classifier": 20.0, "n": 32, "epoch": 1},
        },
    }
    run = Run(tmp_path, "abc", torch.nn.Linear(1, 1), TrainSettings(epochs=2, train_limit=64), logs, cached=True)
    s = results.run_summary(run)
    assert s["label"] == "default" and s["key"] == "abc" and s["epochs"] == 2 and s["cached"] is True
    assert s["train_limit"] == 64 and s["device"] == "cpu" and s["precision"] == "fp32"
    assert s["epoch_seconds"] == [1.5, 1.25]
    assert list(s["per_epoch"]) == ["1", "2"]  # string keys, in epoch order
    assert s["per_epoch"]["2"] == {"fid_classifier": 12.5, "n": 32, "epoch": 2}  # only the RUN fields
    json.dumps(s, allow_nan=False)


# --------------------------------------------------------------------------- formatting and claims
def test_one_formatter_for_the_report_and_the_notebook_tables():
    from helpers import tables

    assert report.fmt is not tables.fmt and report.fmt("fid_classifier", 27.344) == tables.fmt("fid_classifier", 27.344)
    assert tables.fmt("fid_inception", 123.456, tex=False) == "123.5"
    assert tables.fmt("n", 10000, tex=False) == "10,000"
    assert tables.fmt("lr", 2e-4, tex=False) == "2e-4"
    assert tables.fmt("wall_seconds", 7111.4, tex=False) == "1 h 58 min"
    assert tables.fmt("top_class_share", 0.301, tex=False) == "30.1 %"
    assert tables.fmt("fid_classifier", -1.5, tex=False) == "-1.50"
    assert tables.pm("fid_classifier", 27.344, 0.4123, tex=False) == "27.34 ± 0.41"
    assert tables.pm("fid_classifier", 123.44, 1.234, tex=False) == "123.4 ± 1.2"
    frame = tables.metrics_table(
        {"m": final_block(config.PROFILES[PROFILE], 127.3, 1.21, 7.48, 0.05, UNIFORM, inception=61.7)}
    )
    assert frame.loc["m", "FID (MNIST classifier)"] == "127.3 ± 1.2"
    assert frame.loc["m", "top class share"] == "10.0 %"


def test_notebook_block_has_one_shape():
    block = results.notebook_block({"preset": "default"}, {"n": 1}, {"n": 2}, {"default": {}}, ddim={})
    assert block == {
        "params": {"preset": "default"},
        "real": {"n": 1},
        "real_per_epoch": {"n": 2},
        "models": {"default": {}},
        "ddim": {},
    }


def test_number_formats():
    assert report.fmt("fid_classifier", 27.344) == "27.34"
    assert report.fmt("fid_inception", 123.456) == "123.5"
    assert report.fmt("n", 10000) == "10{,}000"
    assert report.fmt("is_classifier_mean", 7.4812) == "7.48"
    assert report.fmt("kid_classifier_mean", 0.030377) == "0.0304"
    assert report.fmt("lr", 2e-4) == r"$2\times10^{-4}$"
    assert report.fmt("betas", [1e-4, 0.02]) == "($10^{-4}$, 0.02)"
    assert report.fmt("wall_seconds", 7111.4) == r"1\,h 58\,min"
    assert report.fmt("seconds", 75) == r"1\,min 15\,s"
    assert report.fmt("top_class_share", 0.301) == r"30.1\,\%"
    assert report.fmt("fid_classifier", None) == report.NA
    assert report.fmt("label", "a_b&c") == r"a\_b\&c"
    assert report.pm("fid_classifier", 27.344, 0.4123) == r"27.34~\ensuremath{\pm}~0.41"


def test_compare_resolves_only_beyond_the_errors():
    assert report.compare(10.0, 1.0, 5.0, 1.0) == 1  # 5 > 2 * sqrt(2)
    assert report.compare(5.0, 1.0, 10.0, 1.0) == -1
    assert report.compare(10.0, 1.0, 8.0, 1.0) == 0  # 2 < 2.83


def test_favoured_digits_against_real_shares():
    real = {"class_counts": [100] * 10}
    model = {"class_counts": [60, 301, 70, 80, 90, 40, 50, 190, 60, 59]}
    assert [d for d, _, _ in report.favoured_digits(model, real)] == [1, 7]
    assert report.favoured_digits(real, real) == []


def test_claims_flip_when_the_numbers_are_swapped(fixture_dirs):
    res, plots, out, data = (fixture_dirs[k] for k in ("results", "plots", "out", "data"))
    report.generate(PROFILE, res, plots, out)
    defs = generated(out)
    assert defs["claim/second-set-fid"] == "higher" and defs[
        "02-hyperparams/second/final/fid-classifier-pm"
    ].startswith("45.12")
    assert defs["claim/alg2-vs-alg1"] == "better"
    assert defs["favours/cold/count"] == "2" and (defs["favours/cold/0/digit"], defs["favours/cold/1/digit"]) == (
        "1",
        "7",
    )
    # verdicts are keys, never English; lists and rows are ready macro calls
    assert defs["favours/cold/verdict"] == "several"
    assert defs["favours/cold/digits"] == r"\favdigit{favours/cold/0}\listand\favdigit{favours/cold/1}"
    assert defs["rows/variants"].startswith(r"\variantrow{variants/0}\variantrow{variants/1}")
    assert defs["rows/ddim"] == "".join(
        [r"\princerow{02-hyperparams/ddim/rows/0}", *(rf"\ddimrow{{02-hyperparams/ddim/rows/{i}}}" for i in (1, 2, 3))]
    )
    assert defs["rank/second-set"] == "ranked" and defs["claim/networks-final"] == "lower"

    swapped = copy.deepcopy(data)
    m = swapped["02_hyperparams"]["models"]
    m["default"]["final"], m["testing"]["final"] = m["testing"]["final"], m["default"]["final"]
    rec = swapped["04_comparison"]["models"]["columns"]["reconstruction"]
    rec["algorithm1"], rec["algorithm2"] = rec["algorithm2"], rec["algorithm1"]
    swapped["04_comparison"]["models"]["columns"]["final"]["class_counts"] = UNIFORM
    write_fixture(res, plots, data=swapped)
    report.generate(PROFILE, res, plots, out)
    defs = generated(out)
    assert defs["claim/second-set-fid"] == "lower" and defs["02-hyperparams/second/final/fid-classifier-pm"].startswith(
        "27.34"
    )
    assert defs["claim/alg2-vs-alg1"] == "worse"
    assert defs["favours/cold/count"] == "0" and defs["favours/cold/verdict"] == "none"
    if shutil.which("latexmk") and shutil.which("pdftotext"):  # the same decisions, as the PDF words them
        text = pdf_text(report.build(PROFILE, res, plots, out))
        assert "The second set ends with a lower FID (27.34 ± 0.41) than the first (45.12 ± 0.52)" in text
        assert "higher IS (7.48 ± 0.05 against 6.71 ± 0.06). This ranking is this run's: each configuration" in text
        assert "Algorithm 2 reconstructs worse than Algorithm 1 (RMSE 0.1912 against 0.1651" in text
        assert "(unconditional) over-represents no digit" in text

    # within the error: not resolved, whichever way round
    close = copy.deepcopy(data)
    m = close["02_hyperparams"]["models"]
    m["testing"]["final"]["fid_classifier"] = m["default"]["final"]["fid_classifier"] + 0.5
    m["testing"]["final"]["is_classifier_mean"] = m["default"]["final"]["is_classifier_mean"] - 0.05
    write_fixture(res, plots, data=close)
    report.generate(PROFILE, res, plots, out)
    defs = generated(out)
    assert defs["claim/second-set-fid"] == defs["claim/second-set-is"] == "unresolved"
    assert defs["rank/second-set"] == "unranked"  # nothing ranked: nothing to qualify


def test_a_verdict_without_words_stops_the_build_naming_it(fixture_dirs, monkeypatch):
    tex_tools()
    res, plots, out = (fixture_dirs[k] for k in ("results", "plots", "out"))
    monkeypatch.setattr(report, "reconstruction_verdict", lambda a, b: "sideways")
    with pytest.raises(
        report.ReportError,
        match=r"verdict 'sideways' of result key 'claim/alg2-vs-alg1' has no words in the family 'recon'",
    ):
        report.build(PROFILE, res, plots, out)


def test_generate_names_missing_file_field_and_figure(fixture_dirs):
    res, plots, out = (fixture_dirs[k] for k in ("results", "plots", "out"))
    (res / PROFILE / "04_comparison.json").unlink()
    with pytest.raises(report.ReportError, match="04_comparison"):
        report.generate(PROFILE, res, plots, out)
    write_fixture(res, plots)
    d = json.loads((res / PROFILE / "04_comparison.json").read_text())
    del d["models"]["columns"]["reconstruction"]
    (res / PROFILE / "04_comparison.json").write_text(json.dumps(d))
    with pytest.raises(report.ReportError, match=r"04_comparison.json.models.columns has no field 'reconstruction'"):
        report.generate(PROFILE, res, plots, out)
    write_fixture(res, plots)
    (plots / PROFILE / "fig1_9_fid_sets.png").unlink()
    with pytest.raises(report.ReportError, match="fig1_9_fid_sets.png"):
        report.generate(PROFILE, res, plots, out)


def test_cli_refuses_unknown_profile(capsys):
    with pytest.raises(SystemExit):
        report.main(["--profile", "huge"])
    assert "invalid choice: 'huge'" in capsys.readouterr().err


# --------------------------------------------------------------------------- the PDF
def source_keys() -> tuple[set[str], set[str], set[str]]:
    """(\\res / \\resif / \\ifres keys, \\resfig keys, \\input files) that the report's sources spell
    out in full (keys built from a macro's argument, #1/..., are left to the build)."""
    text = "".join(p.read_text() for p in sorted(report.SOURCE_DIR.glob("*.tex")))
    text = re.sub(r"(?<!\\)%.*", "", text)
    keys = set(re.findall(r"\\(?:res|resif|ifres)\{([^}#\\]+)\}", text))
    return (
        {k for k in keys if k != "key"},
        set(re.findall(r"\\resfig(?:\[[^]]*\])?\{([^}#\\]+)\}", text)) - {"key"},
        set(re.findall(r"\\input\{([^}]+)\}", text)),
    )


def test_report_builds_from_the_fixture(fixture_dirs):
    tex_tools()
    res, plots, out, data = (fixture_dirs[k] for k in ("results", "plots", "out", "data"))
    pdf = report.build(PROFILE, res, plots, out)
    assert pdf == out / "report.pdf" and pdf.stat().st_size > 10_000

    log = (out / "report.log").read_text(errors="replace")
    bad = [
        line
        for line in log.splitlines()
        if re.search(
            r"Warning: (Reference|Citation).*undefined|There were undefined|"
            r"Result key|not found|^! ",
            line,
        )
    ]
    assert not bad, bad[:5]
    assert "Output written on" in log

    keys = keys_of(out)
    used, figs, inputs = source_keys()
    assert used and figs and inputs
    optional = {k for k in used if k.startswith("has/")}
    assert used - optional <= keys, sorted(used - optional - keys)
    defs = generated(out)
    assert {f"figure/{key}" for key in figs} <= set(defs)
    figures = {k: v for k, v in defs.items() if k.startswith("figure/")}
    assert figures["figure/variant/rows7"] == "figA_reconstructions_rows7" and len(figures) == len(FIGURES)
    for name in figures.values():
        assert (plots / PROFILE / f"{name}.png").is_file(), name
    for name in inputs:
        assert any(
            (d / f"{name.removesuffix('.tex')}.tex").is_file() for d in (report.SOURCE_DIR, out / "generated")
        ), name

    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    final = data["01_ddpm"]["models"]["default"]["final"]
    assert report.fmt("fid_classifier", final["fid_classifier"]) == "27.34"
    assert "27.34 ± 0.41" in text  # the default DDPM's final FID with its error, as in the file
    assert "9c66354abcde" in text and "clean tree" in text  # the stamp
    assert "DDIM" in text  # the appendix beyond the seed exists when its results do
    # the sentences the verdicts choose
    text = pdf_text(pdf)
    assert "The second set ends with a higher FID (45.12 ± 0.52) than the first (27.34 ± 0.41)" in text
    assert "Algorithm 2 reconstructs better than Algorithm 1 (RMSE 0.1651 against 0.1912" in text
    assert "Column averaging (unconditional) favours digits 1 and 7 (share among 200 samples" in text
    assert "the epoch mean falls from 0.0398 in the first epoch to 0.0361 in epoch 2" in text
    # (a page break may fall inside this sentence: the page's floats then come between its words)
    assert re.search(r"The FID \(MNIST classifier\) fell .*?from 38\.50 at epoch 1 to 30\.10 at epoch 2\.", text)
    assert "The FID (MNIST classifier) fell from 55.00 at epoch 1 to 47.90 at epoch 2." in text
    assert "This report comes from the quick profile: models trained for 2 epochs on the first" in text
    # appendix C, present with the U-Net results: the verdicts at the same steps and at the end
    assert (
        "At the same number of steps, 469 (the per-epoch evaluation of epoch 1, 50 samples each), the "
        "U-Net's FID is lower than the CNN's: 41.70 ± 1.20 against 96.20 ± 2.10"
    ) in text
    assert "the U-Net ends with a lower FID (18.90 ± 0.35) than the CNN (27.34 ± 0.41)" in text
    assert "The U-Net restorer ends with a lower FID (58.20 ± 0.70) than the CNN restorer (66.40 ± 0.80)" in text
    # appendix C's case for the U-Net, every fact from models.describe
    assert (
        "The draft's CNN (Section 1.2) works at a single resolution, 28 × 28 pixels, with 5 convolutions, of "
        "7 × 7 and 3 × 3 pixels. One output pixel is computed from a window of 27 × 27 input pixels, narrower "
        "than the image (28 × 28): no output pixel is computed from the whole image, and a pixel in a corner "
        "is computed from only 14 × 14 of it."
    ) in text
    assert "it works at 3 resolutions, 28 × 28, 14 × 14 and 7 × 7 pixels" in text
    assert "Its window is 54 × 54 pixels, wider than the image, against the CNN's 27 × 27" in text
    assert "for the U-Net 576 of its 784 output pixels are computed from the whole image" in text
    assert "the U-Net has fewer parameters than the CNN (179,969 against 291,217)" in text
    assert "3×3 neighbourhood" not in text and "3 × 3 neighbourhood" not in text
    assert "This ranking is this run's: each configuration was trained once" in text


def test_a_removed_result_stops_the_build_naming_it(fixture_dirs):
    tex_tools()
    res, plots, out = (fixture_dirs[k] for k in ("results", "plots", "out"))
    path = res / PROFILE / "01_ddpm.json"
    original = json.loads(path.read_text())
    d = copy.deepcopy(original)
    del d["models"]["default"]["final"]["clipped_share"]  # read only by the text, through \res: LaTeX must stop on it
    path.write_text(json.dumps(d))
    with pytest.raises(report.ReportError, match=r"'01-ddpm/model/final/clipped-share' is not defined"):
        report.build(PROFILE, res, plots, out)
    assert not (out / "report.pdf").exists()

    d = copy.deepcopy(original)
    del d["models"]["default"]["final"]["is_splits"]  # read while generating: stops before LaTeX, naming it
    path.write_text(json.dumps(d))
    with pytest.raises(report.ReportError, match=r"01_ddpm.json.models.default.final has no field 'is_splits'"):
        report.generate(PROFILE, res, plots, out)


def test_smoke_profile_is_phrased_around_what_it_measured(tmp_path):
    """One evaluated epoch and no Inception FID: the text says so instead of claiming a trend."""
    res, plots, out = tmp_path / "results", tmp_path / "Plots", tmp_path / "out"
    data = fixture_data("smoke")
    del data["02_hyperparams"]["ddim"], data["02_hyperparams"]["ema"], data["pipeline"]
    del data["04_comparison"]["networks"], data["03_cold_diffusion"]["restorer_unet"]  # no U-Net runs
    write_fixture(res, plots, "smoke", data)
    for name in ("figC_1_samples_cnn_unet", "figC_2_fid_cnn_unet", "figC_3_class_histograms_cnn_unet"):
        (plots / "smoke" / f"{name}.png").unlink()  # not needed without them
    report.generate("smoke", res, plots, out)
    defs = generated(out)
    assert defs["trend/ddpm-fid/verdict"] == "single" and defs["trend/ddpm-fid/last-epoch"] == "1"
    assert defs["eval/inception"] == "not-computed"
    assert defs["profile/name"] == "smoke"
    assert defs["01-ddpm/model/final/n"] == report.integer(config.PROFILES["smoke"].final_samples)
    # without DDIM / EMA / U-Net results the appendices beyond the seed are left out (\ifres{has/...})
    assert not any(k.startswith(("has/", "claim/ddim", "claim/ema")) for k in defs)
    # without a pipeline record the stamp says so instead of inventing a date or wall time
    assert defs["stamp/pipeline"] == "missing" and "stamp/wall" not in defs and "stamp/date" not in defs
    if not (shutil.which("latexmk") and shutil.which("pdftotext")):
        return
    pdf = report.build("smoke", res, plots, out)
    text, rows = pdf_text(pdf), pdf_text(pdf, layout=True)  # the same decisions, as the PDF words them
    assert "U-Net" not in text  # no appendix C without its results
    assert "The FID (MNIST classifier) was measured at epoch 1 only" in text
    assert "The FID with Inception-v3 features is not computed in this profile." in text
    assert "This report comes from the smoke profile" in text and "is not claimed here" in text
    assert "Beyond the draft" not in text
    assert "FID (Inception-v3) not computed in this profile" in rows
    assert "Run finished not recorded (no pipeline record)" in rows
    assert "Wall time of the run not recorded (no pipeline record)" in rows
    assert "read when the report was built: no pipeline record" in text
    assert rows.count("not recorded (no pipeline record)") == 3  # and the notebooks' times


def test_loss_verdict_follows_the_numbers():
    one = report.loss_trend({"epoch_loss": [0.5]})
    assert one["verdict"] == "single" and one["last"] == "0.5000"
    falls = report.loss_trend({"epoch_loss": [0.2, 0.1]})
    assert falls["verdict"] == "falls" and falls["first"] == "0.2000" and falls["last"] == "0.1000"
    rises = report.loss_trend({"epoch_loss": [0.1, 0.2, 0.3]})
    assert rises["verdict"] == "rises" and rises["epochs"] == "3"
    assert report.loss_trend({"epoch_loss": [0.1, 0.1]})["verdict"] == "stays"
    assert report.loss_trend({"epoch_loss": []})["verdict"] == "none"


def test_report_builds_from_a_checkout_whose_path_has_spaces_brackets_and_accents(tmp_path, monkeypatch):
    """Sources, results, figures and output all under 'my study [v2]/Übung ñ', reached through a
    symlinked folder as a symlinked home would be: LaTeX sees none of these names."""
    tex_tools()
    odd = tmp_path / "my study [v2]" / "Übung ñ"
    odd.mkdir(parents=True)
    home = tmp_path / "home-link"
    home.symlink_to(odd, target_is_directory=True)
    src = home / "report"
    shutil.copytree(config.REPORT_DIR, src, ignore=shutil.ignore_patterns("quick", "smoke", "full"))
    monkeypatch.setattr(report, "SOURCE_DIR", src)
    res, plots = home / "results", home / "Plots"
    write_fixture(res, plots)
    pdf = report.build(PROFILE, res, plots)
    assert pdf == (src / PROFILE / "report.pdf").resolve() and pdf.stat().st_size > 10_000
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "cold diffusion" in text.lower()
