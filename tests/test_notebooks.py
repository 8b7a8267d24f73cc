"""The notebooks run headless through the pipeline with the smoke profile, survive being killed and
being run twice at once, and refuse bad parameters before any work."""

import json
import os
import subprocess
import sys
import time

import pytest
from pipelines import env, finish, start

from helpers import config, pipeline, study

NB01 = config.NOTEBOOKS_DIR / "01_ddpm.ipynb"


# The smoke_pipelines fixture (conftest.py) runs three smoke pipelines (one killed, two at once):
# minutes, so every test that uses it is slow.
@pytest.mark.slow
def test_killed_pipeline_left_no_final_outputs(smoke_pipelines):
    _, broken, _, _ = smoke_pipelines
    assert broken["notebooks"] == []
    assert not any("loss" in p.name or "samples" in p.name for p in broken["figures"])


@pytest.mark.slow
def test_smoke_pipeline_writes_figures_and_executed_notebooks(smoke_pipelines):
    base, _, out_a, _ = smoke_pipelines
    assert "profile: smoke (given with --profile)" in out_a
    plots = {p.name for p in (base / "Plots" / "smoke").iterdir()}
    assert {
        "fig1_1_activations.png",
        "fig1_2_loss_default.png",
        "fig1_3_samples_default.png",
        "fig1_4_fid_default.png",
        "fig1_5_is_default.png",
        "fig1_9_fid_sets.png",
        "fig2_0_degradation_steps.png",
        "fig2_4_reconstructions_columns.png",
        "fig2_6_class_histograms.png",
        "figA_reconstructions_rows7.png",
        "figC_1_samples_cnn_unet.png",
        "figC_2_fid_cnn_unet.png",
        "figC_3_class_histograms_cnn_unet.png",
    } <= plots
    record = json.loads((base / "build_a" / "results" / "smoke" / "pipeline.json").read_text())
    assert record["precision"] == "fp32" and record["sampling_batch"] == 64 and record["precision_reason"]
    # the U-Net runs of the smoke study: the DDPM beside the CNN (04) and the restorer (03)
    nb4 = json.loads((base / "build_a" / "results" / "smoke" / "04_comparison.json").read_text())
    nets = nb4["networks"]["networks"]
    assert {v["net"] for v in nets.values()} == {"cnn", "unet"} and nb4["networks"]["same_steps"]["epoch"] == 1
    nb3 = json.loads((base / "build_a" / "results" / "smoke" / "03_cold_diffusion.json").read_text())
    assert nb3["restorer_unet"]["config"]["net"] == "unet" and "algorithm2" in nb3["restorer_unet"]["reconstruction"]
    for name in ("01_ddpm", "02_hyperparams", "03_cold_diffusion", "04_comparison"):
        nb = json.loads((base / "build_a" / "smoke" / f"{name}.ipynb").read_text())
        assert nb["metadata"]["papermill"]["parameters"] == {"profile": "smoke"}
        assert (base / "build_a" / "smoke" / f"{name}.html").stat().st_size > 0
        assert record["notebooks"][name]["status"] == "ok" and record["notebooks"][name]["seconds"] > 0
    assert not [p for p in (base / "build_a").rglob(".*") if ".tmp" in p.name]


@pytest.mark.slow
def test_two_pipelines_at_once_train_once(smoke_pipelines):
    base, _, _, _ = smoke_pipelines
    runs = [d for d in (base / "runs").iterdir() if d.is_dir()]
    expected = len(study.runs("smoke"))  # every run of the study (helpers/study.py), each trained once
    assert len(runs) == expected
    assert all(sorted(p.name for p in d.glob("ckpt-*.pt")) == ["ckpt-0001.pt"] for d in runs)
    texts = [(base / b / "smoke" / "01_ddpm.ipynb").read_text() for b in ("build_a", "build_b")]
    assert sorted("(from cache: True)" in t for t in texts) == [False, True]


@pytest.mark.slow
def test_rerun_after_a_finished_run_uses_the_cache(smoke_pipelines):
    base, _, _, _ = smoke_pipelines
    t0 = time.perf_counter()
    finish(start(env(base, "build_c"), "--profile", "smoke", "--only", "01_ddpm"))  # no report: not named
    assert "(from cache: True)" in (base / "build_c" / "smoke" / "01_ddpm.ipynb").read_text()
    print(f"cached rerun of 01_ddpm: {time.perf_counter() - t0:.1f} s")


def test_bad_profile_is_refused_before_any_work(tmp_path):
    bad = subprocess.run(
        [sys.executable, "-m", "helpers.pipeline", "--profile", "fast"],
        env=env(tmp_path),
        cwd=config.ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "profile='fast' is not allowed" in bad.stderr
    assert list(tmp_path.iterdir()) == []


def test_bad_profile_through_run_all_is_refused_before_set_up(tmp_path):
    bad = subprocess.run(
        [str(config.ROOT / "run_all.sh"), "--profile", "fast"], env=env(tmp_path), capture_output=True, text=True
    )
    assert bad.returncode == 2 and "profile='fast' is not allowed" in bad.stderr
    assert list(tmp_path.iterdir()) == []


# The papermill refusals start a Jupyter kernel that runs the notebook up to its checks: its first
# cell checks the parameters before the slow imports, so each takes a few seconds (the fast loop
# keeps them). The same checks run in-process in tests/test_contract.py and through run_all.sh in
# tests/test_pipeline.py.
@pytest.mark.parametrize(
    "params, message",
    [
        ({"preset": "nope"}, "preset='nope' is not allowed"),
        ({"preset": 3}, "preset=3 is not allowed"),
        ({"seed": -1}, "seed=-1 is not allowed"),
        ({"seed": "0"}, "seed='0' is not allowed"),
        ({"device": "tpu"}, "device='tpu' is not allowed"),
        ({"profile": "fast"}, "profile='fast' is not allowed"),
        ({"epochs": 5}, "unknown parameter 'epochs'"),
    ],
)
def test_bad_parameter_through_papermill_stops_before_any_work(tmp_path, params, message):
    import papermill

    environment = env(tmp_path)
    old = dict(os.environ)
    os.environ.update({k: v for k, v in environment.items() if k.startswith("DIFFUSION_")})
    try:
        with pytest.raises(papermill.PapermillExecutionError, match=message):
            papermill.execute_notebook(
                str(NB01),
                str(tmp_path / "out.ipynb"),
                parameters={"profile": "smoke", **params},
                kernel_name="python3",
                progress_bar=False,
            )
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.ipynb"]  # papermill's own record only


def test_bad_cold_variant_through_papermill(tmp_path):
    import papermill

    with pytest.raises(papermill.PapermillExecutionError, match=r"cold_variants=\['rows99'\] is not allowed"):
        papermill.execute_notebook(
            str(config.NOTEBOOKS_DIR / "03_cold_diffusion.ipynb"),
            str(tmp_path / "o.ipynb"),
            parameters={"profile": "smoke", "cold_variants": ["rows99"]},
            kernel_name="python3",
            progress_bar=False,
        )


def test_unknown_parameter_name_is_refused():
    with pytest.raises(ValueError, match=r"-p epochs: no selected notebook \(01_ddpm\) declares it"):
        pipeline.validate(["--only", "01_ddpm", "-p", "epochs", "3"])
