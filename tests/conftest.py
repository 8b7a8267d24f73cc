import os
import signal
import time

import pipelines
import pytest
import torch

from helpers import config, data, training
from helpers.ddpm import DDPM
from helpers.training import ModelKind, TrainSettings

# The tiny models and data the engine tests train on (tests/test_training.py, test_integrity.py,
# test_reliability.py, test_ema.py, test_model_untouched.py, test_explore.py). Plain module-level
# values and functions behind the fixtures below, so that a child process (test_reliability.py's
# CHILD) can import them with tests/ on sys.path.
TINY_DDPM = config.DDPMConfig(T=20, hidden=(4, 8), batch_size=32, lr=2e-3)
TINY_COLD = config.cold_preset("columns", hidden=(4,), batch_size=32)
N_BLOBS = 192  # 6 optimiser steps of TINY_DDPM.batch_size per epoch
TINY_PROFILE = config.Profile(
    "tiny",
    epochs=1,
    train_limit=64,
    sample_epochs=(),
    eval_epochs=(),
    eval_samples=10,
    final_samples=20,
    inception_samples=0,
    variant_epochs=1,
    variant_train_limit=64,
    ema_decay=0.9,
    ddim_steps=(5,),
    ddim_samples=20,
    n_grid=4,
)


def make_blob_images(n: int = N_BLOBS, seed: int = 5) -> torch.Tensor:
    """Blurry blobs in the model range: 7x7 noise upsampled to 28x28, structured enough for the loss
    to fall within a few epochs."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, 7, 7, generator=g) - 0.5
    return torch.nn.functional.interpolate(base, size=28, mode="bilinear")


def _quiet(*_):
    pass


def fit_tiny(
    runs_dir,
    settings: TrainSettings = TrainSettings(epochs=1),
    *,
    cfg=TINY_DDPM,
    data: torch.Tensor | None = None,
    kind: ModelKind | None = None,
    label: str = "tiny",
    log=_quiet,
    **fit_kwargs,
):
    """The one place the tests call helpers.training.fit: a quiet CPU run of `kind` (a DDPM unless
    given) with configuration `cfg` on `data` (the blobs unless given), kept under `runs_dir`."""
    return training.fit(
        kind or ModelKind(DDPM),
        cfg,
        settings,
        label=label,
        data=make_blob_images() if data is None else data,
        runs_dir=runs_dir,
        device="cpu",
        progress=False,
        log=log,
        **fit_kwargs,
    )


@pytest.fixture(scope="session")
def mnist_dir():
    """The real MNIST files, fetched offline the way CI does it when missing."""
    return data.ensure_mnist()


@pytest.fixture(scope="session")
def smoke_pipelines(tmp_path_factory, mnist_dir):
    """Three smoke pipelines on one cache (tests/pipelines.py): one killed once a run has started,
    then two at once. (base folder, what the killed one left, stdout of each of the two); the runs
    under base/"runs" are the smoke study's, each trained once (tests/test_notebooks.py checks it,
    tests/test_browser.py starts its JupyterLab from a copy)."""
    base = tmp_path_factory.mktemp("pipeline")
    killed = pipelines.start(pipelines.env(base), "--profile", "smoke", *pipelines.NOTEBOOKS)
    deadline = time.time() + 300
    while not list((base / "runs").glob("*/run.json")) and time.time() < deadline:
        time.sleep(0.5)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    broken = {
        "figures": sorted((base / "Plots").rglob("*.png")) if (base / "Plots").exists() else [],
        "notebooks": sorted((base / "build").rglob("01_ddpm.ipynb")) if (base / "build").exists() else [],
    }
    a = pipelines.start(pipelines.env(base, "build_a"), "--profile", "smoke", *pipelines.NOTEBOOKS)
    b = pipelines.start(pipelines.env(base, "build_b"), "--profile", "smoke", *pipelines.NOTEBOOKS)
    return base, broken, pipelines.finish(a), pipelines.finish(b)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_ddpm_config() -> config.DDPMConfig:
    """TINY_DDPM: the DDPMConfig the engine tests train (T = 20, a (4, 8) CNN, batches of 32)."""
    return TINY_DDPM


@pytest.fixture(scope="session")
def tiny_cold_config() -> config.ColdConfig:
    """TINY_COLD: the `columns` cold-diffusion preset with a (4,) CNN and batches of 32."""
    return TINY_COLD


@pytest.fixture(scope="session")
def tiny_profile() -> config.Profile:
    """TINY_PROFILE: a profile whose evaluation sizes take seconds."""
    return TINY_PROFILE


@pytest.fixture
def blob_images() -> torch.Tensor:
    """The N_BLOBS blob images fit_tiny trains on by default (a fresh tensor for each test)."""
    return make_blob_images()


@pytest.fixture(scope="session")
def train_tiny_in():
    """fit_tiny itself, for fixtures wider than one test: train_tiny_in(runs_dir, settings, ...)."""
    return fit_tiny


@pytest.fixture
def train_tiny(tmp_path):
    """fit_tiny with runs kept under this test's tmp_path: train_tiny(settings, cfg=..., data=...,
    runs_dir=..., **fit_kwargs) trains the run or returns it from the cache."""

    def train(settings: TrainSettings = TrainSettings(epochs=1), *, runs_dir=tmp_path, **kw):
        return fit_tiny(runs_dir, settings, **kw)

    return train


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "replica: runs scripts/gpu_replica.sh, the GPU machine's path rehearsed on this CPU "
        "(minutes; skip with -m 'not replica')",
    )
    config.addinivalue_line(
        "markers",
        "slow: runs a pipeline, notebooks in a kernel, a browser or the GPU replica (minutes in all; "
        "the fast loop is -m 'not slow')",
    )
