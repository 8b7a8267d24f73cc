"""Fault injection: killed processes, damaged files, failing writes, divergence, concurrent runs.

Each test injects one fault and checks that no work is lost and nothing wrong is used silently.
"""

import dataclasses
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch

from helpers import plotting, store
from helpers.training import TrainingDiverged, TrainSettings

SETTINGS = TrainSettings(epochs=3, sample_epochs=(3,), n_grid=2)

# The child process trains the same tiny run (conftest's fit_tiny) and SIGKILLs itself at a chosen point.
CHILD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from conftest import fit_tiny
    from helpers import store
    from helpers.training import TrainSettings
    settings = {settings!r}
    mode, epoch, step, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

    def die(*_):
        os.kill(os.getpid(), signal.SIGKILL)

    if mode == "step":
        fit_tiny(runs, settings, on_step=lambda e, s: die() if (e, s) == (epoch, step) else None)
    else:  # killed half-way through writing the checkpoint of `epoch`
        real = store.atomic_write_bytes
        def torn(path, data):
            if path.name == f"ckpt-{{epoch:04d}}.pt":
                store.temporary_name(path).write_bytes(data[: len(data) // 2])
                die()
            return real(path, data)
        store.atomic_write_bytes = torn
        fit_tiny(runs, settings)
""")


def _kill_child(runs, mode, epoch, step=0):
    code = CHILD.format(tests=os.path.dirname(__file__), settings=SETTINGS)
    proc = subprocess.run(
        [sys.executable, "-c", code, mode, str(epoch), str(step), str(runs)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


def _same(a, b):
    assert a.iter_loss == b.iter_loss and a.epoch_loss == b.epoch_loss
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert torch.equal(a.samples[3], b.samples[3])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, train_tiny_in):
    return train_tiny_in(tmp_path_factory.mktemp("ref"), SETTINGS)


def test_sigkill_at_a_random_step_then_resume_matches(reference, train_tiny, tmp_path):
    rng = random.Random(os.environ.get("PYTEST_SEED", 1234))
    epoch, step = rng.randint(1, 3), rng.randint(1, 6)
    _kill_child(tmp_path, "step", epoch, step)
    resumed = train_tiny(SETTINGS)
    assert not resumed.cached
    _same(reference, resumed)


def test_sigkill_during_checkpoint_write_then_resume_matches(reference, train_tiny, tmp_path):
    _kill_child(tmp_path, "write", 2)
    (run_dir,) = tmp_path.iterdir()
    assert sorted(p.name for p in run_dir.glob("ckpt-*.pt")) == ["ckpt-0001.pt"]
    assert list(run_dir.glob(".ckpt-0002.*.tmp.pt"))  # the torn temporary is still there
    resumed = train_tiny(SETTINGS)
    _same(reference, resumed)
    assert not list(run_dir.glob(".*.tmp*"))  # and removed by the next run


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "header"])
def test_damaged_checkpoint_is_detected_and_retrained(reference, train_tiny, damage):
    first = train_tiny(SETTINGS)
    last = first.dir / "ckpt-0003.pt"
    blob = last.read_bytes()
    if damage == "flip":
        last.write_bytes(blob[:100] + bytes([blob[100] ^ 1]) + blob[101:])
    elif damage == "truncate":
        last.write_bytes(blob[: len(blob) - 10])
    elif damage == "empty":
        last.write_bytes(b"")
    else:  # a checksum that does not match the contents
        last.write_bytes(b"sha256:" + b"0" * 64 + blob[blob.index(b"\n") :])
    messages = []
    again = train_tiny(SETTINGS, log=messages.append)
    assert any("ignoring checkpoint" in m and "ckpt-0003" in m for m in messages)
    assert not again.cached  # epoch 3 was retrained from epoch 2, not loaded
    _same(reference, again)


def test_failed_figure_write_keeps_the_previous_figure(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    fig = plt.figure()
    plotting.save(fig, "smoke", "f", plots_dir=tmp_path)
    path = plotting.figure_path("smoke", "f", plots_dir=tmp_path)
    before = path.read_bytes()

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fig, "savefig", full)
    with pytest.raises(OSError, match="No space"):
        plotting.save(fig, "smoke", "f", plots_dir=tmp_path)
    assert path.read_bytes() == before
    assert [p.name for p in (tmp_path / "smoke").iterdir()] == ["f.png"]


def test_failed_checkpoint_write_keeps_the_last_checkpoint(reference, train_tiny, tmp_path, monkeypatch):
    real = store.atomic_write_bytes

    def full(path, data):
        if path.name.startswith("ckpt-0002"):
            raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(store, "atomic_write_bytes", full)
    with pytest.raises(OSError, match="No space"):
        train_tiny(SETTINGS)
    (run_dir,) = tmp_path.iterdir()
    assert sorted(p.name for p in run_dir.iterdir() if not p.name.startswith(".")) == ["ckpt-0001.pt", "run.json"]
    monkeypatch.undo()  # space again: the run resumes from epoch 1 and ends as if nothing happened
    _same(reference, train_tiny(SETTINGS))


def test_diverging_learning_rate_stops_with_epoch_and_step(train_tiny, tiny_ddpm_config, blob_images, tmp_path):
    cfg = dataclasses.replace(tiny_ddpm_config, lr=1e6)
    steps = len(blob_images) // cfg.batch_size
    with pytest.raises(TrainingDiverged, match=rf"at epoch \d+, step \d+ of {steps}") as err:
        train_tiny(TrainSettings(epochs=50), cfg=cfg, data=blob_images)
    epoch = int(str(err.value).split("at epoch ")[1].split(",")[0])
    (run_dir,) = tmp_path.iterdir()
    ckpts = sorted(p.name for p in run_dir.glob("ckpt-*.pt"))
    assert ckpts[-1:] == ([f"ckpt-{epoch - 1:04d}.pt"] if epoch > 1 else [])


def test_second_process_waits_for_the_lock(tmp_path):
    messages = []
    first_done = threading.Event()
    with store.file_lock(tmp_path / "r" / ".lock", "r", log=messages.append):
        t = threading.Thread(
            target=lambda: (
                store.file_lock(tmp_path / "r" / ".lock", "r", log=messages.append).__enter__(),
                first_done.set(),
            )
        )
        t.start()
        time.sleep(0.5)
        assert not first_done.is_set() and "waiting" in messages[0]
    t.join(5)
    assert first_done.is_set()


def test_same_seed_gives_bitwise_identical_runs(train_tiny, tmp_path):
    a = train_tiny(TrainSettings(epochs=2), runs_dir=tmp_path / "a")
    b = train_tiny(TrainSettings(epochs=2), runs_dir=tmp_path / "b")
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])
    assert a.iter_loss == b.iter_loss
    c = train_tiny(TrainSettings(epochs=2, seed=1), runs_dir=tmp_path / "c")
    assert c.iter_loss != a.iter_loss


@pytest.mark.parametrize("damage", ["edit", "truncate", "garbage"])
def test_damaged_result_file_is_recomputed_not_used(tmp_path, damage):
    _cached_json = store.cached_json
    path = tmp_path / "final.json"
    calls = []

    def compute():
        calls.append(1)
        return {"fid": 1.5, "n": 10}

    assert _cached_json(path, compute) == {"fid": 1.5, "n": 10}
    assert _cached_json(path, compute) == {"fid": 1.5, "n": 10} and len(calls) == 1  # cached
    text = path.read_text()
    path.write_text({"edit": text.replace("1.5", "0.5"), "truncate": text[:-20], "garbage": "\x00"}[damage])
    assert _cached_json(path, compute) == {"fid": 1.5, "n": 10} and len(calls) == 2
