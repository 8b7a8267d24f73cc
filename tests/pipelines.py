"""Smoke pipelines as the notebook and browser tests start them: `python -m helpers.pipeline` in a
process group of its own, with runs, plots and builds under a temporary folder (the session fixture
`smoke_pipelines` in conftest.py, and tests/test_notebooks.py)."""

import os
import subprocess
import sys

from helpers import config, pipeline

# Every notebook, without the report (its own tests build it; here it would write into report/).
NOTEBOOKS = ["--only", *(p.stem for p in pipeline.notebook_paths())]


def env(base, build="build"):
    """The environment of a pipeline whose runs, plots and builds live under `base`."""
    return dict(
        os.environ,
        DIFFUSION_RUNS_DIR=str(base / "runs"),
        DIFFUSION_PLOTS_DIR=str(base / "Plots"),
        DIFFUSION_BUILD_DIR=str(base / build),
        DIFFUSION_RESULTS_DIR=str(base / build / "results"),
    )


def start(environment, *args):
    return subprocess.Popen(
        [sys.executable, "-m", "helpers.pipeline", *args],
        env=environment,
        cwd=config.ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(proc, timeout=1200):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out
