"""Integrity: every cached result keyed by what decides it, every file verified when read (one test
per way a wrong result used to come back without a word)."""

import builtins
import pickle
import shutil
import warnings

import numpy as np
import pytest
import torch

from helpers import config, data, metrics, runs, store, study, training
from helpers.ddpm import DDPM
from helpers.training import TrainSettings


# 1. one altered byte in an MNIST file
def test_every_load_checks_the_mnist_md5s(tmp_path, mnist_dir):
    raw = data.raw_dir(tmp_path)
    raw.mkdir(parents=True)
    for name in data.FILES_MD5:
        shutil.copy2(mnist_dir / name, raw / name)
    images, labels = data.load_mnist(train=True, root=tmp_path)  # read once, fine
    assert labels.shape == (60_000,)
    blob = bytearray((raw / "train-labels-idx1-ubyte").read_bytes())
    blob[1000] = (blob[1000] + 1) % 10
    (raw / "train-labels-idx1-ubyte").write_bytes(bytes(blob))
    with pytest.raises(data.DataError, match=r"train-labels-idx1-ubyte has MD5 .* damaged; delete it"):
        data.load_mnist(train=True, root=tmp_path)


# 2. an edit to the package's code, or other training data, gives another run
def test_code_key_follows_every_module_the_engine_imports(tmp_path):
    pkg = tmp_path / "helpers"
    shutil.copytree(config.ROOT / "helpers", pkg, ignore=shutil.ignore_patterns("__pycache__", "weights"))
    roots = ("training", "ddpm")  # training.run_code of a DDPM
    assert store.code_hash(roots) == training.run_code(training.ModelKind(DDPM))
    before = store.code_hash(roots, pkg)
    assert "data" in store.module_closure(roots, pkg)
    text = (pkg / "data.py").read_text()
    (pkg / "data.py").write_text(
        text.replace("images_uint8.float() / 255.0 - 0.5", "images_uint8.float() / 255.0 - 0.4")
    )
    assert (pkg / "data.py").read_text() != text
    assert store.code_hash(roots, pkg) != before
    (pkg / "data.py").write_text(text + "\n# a comment only\n")
    assert store.code_hash(roots, pkg) == before


def test_other_training_data_is_another_run(train_tiny, blob_images):
    mirrored = blob_images.flip(-1)  # the same blobs, mirrored: other data of the same shape and values
    a = train_tiny(data=blob_images)
    b = train_tiny(data=mirrored)
    assert a.dir != b.dir and not b.cached
    assert train_tiny(data=blob_images.clone()).cached


# 3. damaged reference features
def test_flipped_bytes_in_cached_features_are_recomputed(tmp_path, mnist_dir):
    logs = []
    a = metrics.reference_features("classifier", "test", 40, "cpu", folder=tmp_path, log=logs.append)
    (path,) = tmp_path.glob("*.pt")
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x40  # inside the tensors: torch would still load it
    path.write_bytes(bytes(blob))
    metrics._MEMORY.clear()
    b = metrics.reference_features("classifier", "test", 40, "cpu", folder=tmp_path, log=logs.append)
    assert torch.equal(a.features, b.features)
    assert any("damaged" in m and "recomputing" in m for m in logs)


# 4. a checkpoint that cannot be loaded, and a value that could not be loaded back
class _Evil:
    def __reduce__(self):
        return (print, ("this would have run",))


def test_crafted_checkpoint_with_a_valid_checksum_is_skipped(train_tiny):
    run = train_tiny(TrainSettings(epochs=2))
    store.write_verified(run.dir / "ckpt-0002.pt", pickle.dumps({"key": run.key, "evil": _Evil()}))
    messages = []
    again = train_tiny(TrainSettings(epochs=2), log=messages.append)
    assert any("ignoring checkpoint ckpt-0002.pt" in m for m in messages)
    assert not again.cached and again.iter_loss == run.iter_loss  # epoch 2 retrained from epoch 1


def test_numpy_scalars_in_the_logs_load_back(train_tiny):
    def evaluate(model, epoch):
        return {"fid": np.float64(1.5), "n": np.int64(3)}

    s = TrainSettings(epochs=1, eval_epochs=(1,), eval_key="numpy")
    train_tiny(s, evaluate=evaluate)
    again = train_tiny(s, evaluate=evaluate)
    assert again.cached and again.metrics == {1: {"fid": 1.5, "n": 3}}
    assert type(again.metrics[1]["fid"]) is float and type(again.metrics[1]["n"]) is int


def test_a_payload_the_safe_loader_refuses_is_not_written(tmp_path):
    with pytest.raises(TypeError, match="safe loader could not read it back"):
        store.save_tensors(tmp_path / "x.pt", {"bad": _Evil()})
    assert list(tmp_path.iterdir()) == []


# 5. result files that are not UTF-8; integer keys
def test_non_utf8_result_is_recomputed_and_integer_keys_survive(tmp_path):
    path = tmp_path / "r.json"
    calls = []

    def compute():
        calls.append(1)
        return {1: "one", "x": [1.5]}

    assert store.cached_json(path, compute, log=lambda *_: None) == {1: "one", "x": [1.5]}
    assert store.cached_json(path, compute, log=lambda *_: None) == {1: "one", "x": [1.5]} and len(calls) == 1
    path.write_bytes(b"\xff\xfe\x00garbage")
    logs = []
    assert store.cached_json(path, compute, log=logs.append) == {1: "one", "x": [1.5]}
    assert len(calls) == 2 and any("damaged" in m for m in logs)


# 8. an out-of-range seed is refused before the run folder exists
def test_seed_beyond_what_torch_holds_is_refused_before_any_work(tmp_path):
    with pytest.raises(
        ValueError, match=r"seed=35184372088832 is not allowed; expected an integer >= 0 and <= 2147483647"
    ):
        runs.train("ddpm", "default", config.profile("smoke"), seed=2**45, runs_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="seed="):
        study.check_params("01_ddpm", {"seed": 2**45})
    with pytest.raises(ValueError, match="seed="):
        study.Study("smoke", seed=2**45, runs_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


# 10. temporaries of a killed process, and a read-only runs folder
def test_stale_temporaries_are_removed_when_the_run_resumes(train_tiny, tmp_path):
    import subprocess

    def stop(epoch, step):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_tiny(TrainSettings(epochs=2), on_step=stop)
    (run_dir,) = [d for d in tmp_path.iterdir() if d.is_dir()]
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = run_dir / store.temporary_name(run_dir / "ckpt-0002.pt").name.replace(
        f".{__import__('os').getpid()}.", f".{dead.pid}."
    )
    stale.write_bytes(b"half a checkpoint")
    assert stale.name.startswith(".ckpt-0002.") and str(dead.pid) in stale.name
    resumed = train_tiny(TrainSettings(epochs=2))
    assert resumed.dir == run_dir and not stale.exists()
    assert not [p for p in run_dir.iterdir() if ".tmp" in p.name]


def test_finished_run_loads_from_a_folder_it_cannot_write(train_tiny, tmp_path, monkeypatch):
    run = train_tiny(TrainSettings(epochs=1))
    snapshot = {p.name: p.stat().st_mtime_ns for p in run.dir.iterdir()}
    real_open = builtins.open

    def read_only(file, mode="r", *a, **k):
        if str(file).startswith(str(tmp_path)) and any(c in mode for c in "wax+"):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, mode, *a, **k)

    monkeypatch.setattr(builtins, "open", read_only)
    again = train_tiny(TrainSettings(epochs=1))
    monkeypatch.setattr(builtins, "open", real_open)
    assert again.cached
    assert {p.name: p.stat().st_mtime_ns for p in run.dir.iterdir()} == snapshot


# 11. [0, 1] images where the model range is expected
def test_unit_range_images_passed_as_model_range_are_flagged():
    x = torch.rand(16, 1, 28, 28)  # in [0, 1]
    with pytest.warns(UserWarning, match=r"look like images in \[0, 1\]"):
        metrics.prepare_images(x, "model", strict_range=False)  # how samples of young models are scored
    with pytest.raises(ValueError, match=r"look like images in \[0, 1\]"):
        metrics.prepare_images(x, "model")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics.prepare_images(x - 0.5, "model")  # the model range: no warning
        metrics.prepare_images(x, "unit")


# 12. the thread count of a run is recorded (bitwise resume holds for the same count)
def test_run_records_its_thread_count(train_tiny):
    run = train_tiny(TrainSettings(epochs=1))
    assert run.logs["threads"] == torch.get_num_threads()
