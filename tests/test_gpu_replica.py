"""The full-profile GPU script rehearsed on this CPU: a venv with only the GPU machine's packages, the
carried wheels, a copy of the tree as the device receives it, the smoke profile, and checks on what
comes back (scripts/gpu_replica.sh does the work and the checks; this test runs it)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # a venv, a copy of the tree and the smoke study (minutes)


@pytest.mark.replica
@pytest.mark.skipif(
    os.environ.get("GPU_REPLICA") != "1",
    reason="opt-in (GPU_REPLICA=1): about 5 minutes on an idle 2-core CPU once its venv is "
    "cached, 10 more to build it, and a registry for the wheels",
)
def test_gpu_full_script_brings_back_log_timings_results_and_figures():
    if shutil.which("git") is None:
        pytest.skip("git is needed to copy the tree as the device receives it")
    r = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_replica.sh")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    tail = (r.stdout + r.stderr)[-6000:]
    assert r.returncode == 0, tail
    assert "replica: all checks passed" in r.stdout, tail
