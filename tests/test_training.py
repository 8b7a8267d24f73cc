import dataclasses
import json

import pytest
import torch

from helpers import store, training
from helpers.ddpm import DDPM
from helpers.training import ModelKind, TrainingDiverged, TrainSettings


def _steps(images, cfg):
    return len(images) // cfg.batch_size  # optimiser steps per epoch (192 blobs in batches of 32: 6)


def test_tiny_run_lowers_the_loss_and_is_reused(train_tiny, blob_images, tiny_ddpm_config):
    s = TrainSettings(epochs=4, sample_epochs=(2, 4), n_grid=4)
    run = train_tiny(s)
    assert len(run.iter_loss) == 4 * _steps(blob_images, tiny_ddpm_config) and len(run.epoch_loss) == 4
    assert run.epoch_loss[-1] < 0.8 * run.epoch_loss[0]
    assert sorted(run.samples) == [2, 4] and run.samples[4].shape == (4, 1, 28, 28)
    assert not run.cached
    again = train_tiny(s)
    assert again.cached and again.dir == run.dir
    for k, v in run.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k])


def test_changed_settings_get_a_new_run_folder(train_tiny, tiny_ddpm_config):
    a = train_tiny(TrainSettings(epochs=1))
    b = train_tiny(TrainSettings(epochs=1, seed=1))
    c = train_tiny(TrainSettings(epochs=1), cfg=dataclasses.replace(tiny_ddpm_config, lr=1e-3))
    assert len({a.dir, b.dir, c.dir}) == 3


def test_interrupted_run_resumes_to_identical_weights_and_logs(train_tiny, tmp_path):
    s = TrainSettings(epochs=3, sample_epochs=(3,), n_grid=2)
    ref = train_tiny(s, runs_dir=tmp_path / "a")

    def interrupt(epoch, step):
        if epoch == 2 and step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_tiny(s, runs_dir=tmp_path / "b", on_step=interrupt)
    resumed = train_tiny(s, runs_dir=tmp_path / "b")
    assert not resumed.cached
    assert resumed.iter_loss == ref.iter_loss
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert torch.equal(ref.samples[3], resumed.samples[3])


class _NaNAt(DDPM):
    """Loss turns NaN at one (epoch, step) - a stand-in for divergence."""

    calls = 0
    at = 0  # the call that turns NaN

    def loss(self, x, generator=None):
        type(self).calls += 1
        out = super().loss(x, generator)
        return out * float("nan") if type(self).calls == self.at else out


def test_non_finite_loss_names_epoch_and_step_and_keeps_checkpoint(train_tiny, tmp_path, blob_images, tiny_ddpm_config):
    steps = _steps(blob_images, tiny_ddpm_config)
    _NaNAt.calls, _NaNAt.at = 0, steps + 3
    with pytest.raises(TrainingDiverged, match=rf"epoch 2, step 3 of {steps}.*epoch 1"):
        train_tiny(TrainSettings(epochs=3), kind=ModelKind(_NaNAt))
    (run_dir,) = tmp_path.iterdir()
    assert sorted(p.name for p in run_dir.glob("ckpt-*.pt")) == ["ckpt-0001.pt"]
    key = json.loads((run_dir / "run.json").read_text())["key"]
    assert training.load_checkpoint(run_dir / "ckpt-0001.pt", key)["epoch"] == 1


def test_damaged_checkpoint_is_skipped_for_the_previous_one(train_tiny):
    run = train_tiny(TrainSettings(epochs=2))
    last = run.dir / "ckpt-0002.pt"
    blob = bytearray(last.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    last.write_bytes(bytes(blob))
    with pytest.raises(training.CheckpointError, match="SHA-256"):
        training.load_checkpoint(last, run.key)
    messages = []
    resumed = train_tiny(TrainSettings(epochs=2), log=messages.append)  # retrains epoch 2
    assert any("ignoring checkpoint ckpt-0002.pt" in m and "SHA-256" in m for m in messages)
    assert not resumed.cached and resumed.iter_loss == run.iter_loss


def test_checkpoint_of_another_run_is_refused(train_tiny):
    run = train_tiny(TrainSettings(epochs=1))
    with pytest.raises(training.CheckpointError, match="belongs to run"):
        training.load_checkpoint(run.dir / "ckpt-0001.pt", "0" * 12)


def test_only_the_last_checkpoints_are_kept(train_tiny):
    run = train_tiny(TrainSettings(epochs=4))
    assert sorted(p.name for p in run.dir.glob("ckpt-*")) == ["ckpt-0003.pt", "ckpt-0004.pt"]


def test_code_hash_ignores_comments_but_not_code_and_follows_imports(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("def f():\n    from . import b\n    return b.x\n")
    (pkg / "b.py").write_text("x = 1\n")
    (pkg / "c.py").write_text("y = 1\n")
    assert store.module_closure(["a"], pkg) == ["a", "b"]
    h = store.code_hash(["a"], pkg)
    (pkg / "b.py").write_text("# a comment\nx = 1  # another\n")
    (pkg / "c.py").write_text("y = 2\n")  # not imported by a
    assert store.code_hash(["a"], pkg) == h
    (pkg / "b.py").write_text("x = 2\n")  # imported lazily, inside a function
    assert store.code_hash(["a"], pkg) != h


def test_failed_atomic_write_keeps_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    store.atomic_write_bytes(target, b"old")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.os, "fsync", boom)
    with pytest.raises(OSError, match="No space"):
        store.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_a_deadline_stops_at_an_epoch_boundary_and_the_same_call_resumes_bitwise(train_tiny, tmp_path):
    from helpers.training import TrainingStopped

    s = TrainSettings(epochs=3, sample_epochs=(3,), n_grid=2)
    whole = train_tiny(s, runs_dir=tmp_path / "whole")
    with pytest.raises(TrainingStopped, match="stopped at its deadline after epoch 1 of 3"):
        train_tiny(s, runs_dir=tmp_path / "cut", deadline=0.0)  # long past: stop after the first epoch
    (run_dir,) = (tmp_path / "cut").iterdir()
    assert sorted(p.name for p in run_dir.glob("ckpt-*.pt")) == ["ckpt-0001.pt"]
    resumed = train_tiny(s, runs_dir=tmp_path / "cut")
    assert not resumed.cached and resumed.iter_loss == whole.iter_loss
    assert all(
        torch.equal(a, b) for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values())
    )
    assert torch.equal(whole.samples[3], resumed.samples[3])
