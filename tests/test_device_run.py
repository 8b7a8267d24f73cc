"""A device run that never loses what it finished (helpers/device.py, helpers/pretrain.py,
helpers/pipeline.py, scripts/gpu_full.sh): the preflight, packing into OUT as jobs finish, the
deadline and resuming from what came back, a SIGKILL at a random moment, a failed job, the limits of
OUT, the contention of timed work, and the replica's job count.

Real training runs use the smoke profile shrunk further inside the workers (TINY: 3 epochs on 64
images, T = 10, 4-channel networks) so that each takes seconds; everything else uses stand-in workers
that import nothing heavy."""

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import config, device, pipeline, pretrain, store

ROOT = config.ROOT
SMOKE_RUNS = len(pretrain.study_runs("smoke"))

# The smoke profile and presets shrunk inside the worker (and KID on 4 subsets instead of 100), then
# the real worker's main. With
# TINY_STOP=1 the deadline the stage passes becomes 0: the worker stops at its first epoch boundary.
TINY = r"""
import dataclasses, os, sys
from helpers import config
p = config.PROFILES["smoke"]
config.PROFILES["smoke"] = dataclasses.replace(
    p, epochs=3, variant_epochs=3, train_limit=64, variant_train_limit=64, eval_samples=10, final_samples=10,
    ddim_samples=10, ddim_steps=(2, 5))
for name in ("default", "testing"):
    config.DDPM_PRESETS[name] = config.DDPM_PRESETS[name].replace(T=10, hidden=(4, 4))
config.COLD_PRESETS["columns7"] = config.COLD_PRESETS["columns7"].replace(hidden=(4, 4))
from helpers import metrics
_kid = metrics.kid  # KID's 100 subsets dominate such tiny runs: 4 here
metrics.kid = lambda ref, fake, size=metrics.KID_SUBSET_SIZE, subsets=4, seed=0: _kid(ref, fake, size, min(subsets, 4), seed)
argv = sys.argv[1:]
if os.environ.get("TINY_STOP") == "1" and "--deadline-at" in argv:
    argv[argv.index("--deadline-at") + 1] = "0"
from helpers import pretrain
sys.exit(pretrain.main(argv))
"""

# A stand-in worker: its result at once (or a failure, or sleeping until it is killed); it creates a
# run folder with a "checkpoint" so that packing has something to pack.
FAKE = r"""
import json, os, sys, time
argv = sys.argv[1:]
kind, preset = argv[argv.index("--one") + 1].split(":")
part = argv[argv.index("--part") + 1]
behaviour = json.loads(os.environ.get("FAKE_BEHAVIOUR", "{}")).get(f"{kind}:{preset}", "ok")
run_dir = os.path.join(os.environ["DIFFUSION_RUNS_DIR"], f"{kind}-{preset}-000000000000")
os.makedirs(run_dir, exist_ok=True)
print("[pretrain-run] " + json.dumps({"run_dir": run_dir}), flush=True)
print("args:", " ".join(argv), flush=True)
if behaviour == "sleep":
    time.sleep(600)
if behaviour == "fail" and part == "train":
    print("Traceback: the fake worker of", kind, preset, "fails here", flush=True)
    sys.exit(3)
with open(os.path.join(run_dir, "ckpt-0001.pt"), "wb") as f:
    f.write(os.urandom(int(os.environ.get("FAKE_BYTES", "20000"))))
result = {"kind": kind, "preset": preset, "part": part, "run_dir": run_dir, "status": "ok", "cached": False,
          "train_seconds": 0.1, "sample_seconds": 0.0, "extra_seconds": 0.0, "final_seconds": 0.0}
if part == "timed":
    result.update(ddim_seconds=0.1, computed=True)
elif behaviour == "timed":
    result["timed_part"] = True
print("[pretrain-result] " + json.dumps(result), flush=True)
"""


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """Run, results, figure and build folders of their own (workers inherit them)."""
    paths = {name: tmp_path / name for name in ("runs", "results", "plots", "build")}
    for name, attr, env in (
        ("runs", "RUNS_DIR", "DIFFUSION_RUNS_DIR"),
        ("plots", "PLOTS_DIR", "DIFFUSION_PLOTS_DIR"),
        ("build", "BUILD_DIR", "DIFFUSION_BUILD_DIR"),
    ):
        monkeypatch.setattr(config, attr, paths[name])
        monkeypatch.setenv(env, str(paths[name]))
    monkeypatch.setenv("DIFFUSION_RESULTS_DIR", str(paths["results"]))
    return paths


def use_worker(monkeypatch, tmp_path, source: str) -> None:
    script = tmp_path / "worker.py"
    script.write_text(source)
    monkeypatch.setattr(
        pretrain,
        "worker_command",
        lambda kind, preset, profile, *options: [
            sys.executable,
            str(script),
            "--profile",
            profile,
            "--one",
            f"{kind}:{preset}",
            *options,
        ],
    )


def switch_runs(monkeypatch, folder: Path) -> None:
    monkeypatch.setattr(config, "RUNS_DIR", folder)
    monkeypatch.setenv("DIFFUSION_RUNS_DIR", str(folder))


def entries(out: Path) -> dict:
    return {e["name"]: e for e in device.read_manifest(out)["entries"]}


# --------------------------------------------------------------------------- preflight
@pytest.fixture
def broken_data(tmp_path, monkeypatch, mnist_dir):
    """A data folder with three of the four MNIST files and Inception weights of the wrong content."""
    data = tmp_path / "data"
    (data / "MNIST" / "raw").mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        (data / "MNIST" / "raw" / name).symlink_to(Path(mnist_dir) / name)
    (data / "inception").mkdir()
    (data / "inception" / "fid_inception_v3_default_1.pt").write_bytes(b"not the weights")
    monkeypatch.setattr(config, "DATA_DIR", data)
    monkeypatch.setenv("DIFFUSION_DATA_DIR", str(data))
    return data


def test_preflight_names_a_missing_mnist_file_and_a_wrong_inception_checksum(broken_data):
    with pytest.raises(device.PreflightError) as err:
        device.preflight("full", notebooks=False, log=lambda *_: None)
    message = str(err.value)
    assert "t10k-labels-idx1-ubyte is missing" in message
    assert "Inception-v3 weights" in message and "have SHA-1 " in message and "expected a16e4d89" in message
    assert "2 problem(s)" in message
    # smoke computes no Inception-v3 FID: only the MNIST file is named
    with pytest.raises(device.PreflightError, match="1 problem") as err:
        device.preflight("smoke", notebooks=False, log=lambda *_: None)
    assert "Inception" not in str(err.value)


def test_preflight_fails_the_stage_before_any_worker_starts(broken_data, folders, tmp_path, monkeypatch):
    use_worker(monkeypatch, tmp_path, FAKE)
    with pytest.raises(device.PreflightError, match="t10k-labels-idx1-ubyte is missing"):
        pretrain.run("full", jobs=2, runs=(("cold", "columns7"),), log=lambda *_: None, log_dir=tmp_path / "logs")
    assert not (folders["runs"] / "cold-columns7-000000000000").exists()  # no worker ran
    assert not (tmp_path / "logs" / "cold-columns7.log").exists()


def test_preflight_command_line_names_the_problem(broken_data):
    r = subprocess.run(
        [sys.executable, "-m", "helpers.pretrain", "--profile", "full", "--preflight"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 1
    assert "t10k-labels-idx1-ubyte is missing" in r.stderr and "SHA-1" in r.stderr


# --------------------------------------------------------------------------- OUT and its limits
def blob(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def test_out_rotates_splits_and_never_exceeds_its_limits(folders, tmp_path):
    out, limit = tmp_path / "out", 200 * 1024
    packer = device.Packer(out, max_files=6, max_bytes=limit, log_file=None, log=lambda *_: None)
    assert packer.max_archives == 4  # 6 files: the manifest, one temporary, four archives
    sizes = {"a": 30_000, "b": 150_000, "c": 450_000, "d": 5_000, "e": 170_000}  # c: more than an archive
    for i, (name, n) in enumerate(sizes.items()):
        run_dir = folders["runs"] / f"ddpm-{name}-000000000000"
        run_dir.mkdir(parents=True)
        (run_dir / "ckpt-0001.pt").write_bytes(blob(n, i))
        (run_dir / "final-x.json").write_text(json.dumps({"fid": i}))
        entry = packer.add(f"job {name}", device.run_files(run_dir), status="ok")
        assert not device.check_limits(out, 6, limit), device.check_limits(out, 6, limit)
        assert len(list(out.iterdir())) <= 6
    archives = sorted(p.name for p in out.glob("pack-*.tar"))
    assert archives == ["pack-01.tar", "pack-02.tar", "pack-03.tar", "pack-04.tar"]
    split = entries(out)["job c"]["members"]["runs/ddpm-c-000000000000/ckpt-0001.pt"]["in"]
    assert len(split) >= 3 and all(member.endswith(f".part{i:03d}") for i, (_, member) in enumerate(split))
    # the last checkpoint found no room: listed as dropped, never an extra file
    assert [d["path"] for d in entry["dropped"]] == ["runs/ddpm-e-000000000000/ckpt-0001.pt"]
    assert "runs/ddpm-e-000000000000/final-x.json" in entry["members"]  # the small result still fits
    files = device.contents(out)
    for i, (name, n) in enumerate(sizes.items()):
        if name != "e":
            assert files[f"runs/ddpm-{name}-000000000000/ckpt-0001.pt"] == blob(n, i)
    # unpacked elsewhere: every file back in place, byte for byte
    shutil.rmtree(folders["runs"])
    placed = device.unpack([out], log=lambda *_: None)
    assert (folders["runs"] / "ddpm-c-000000000000" / "ckpt-0001.pt").read_bytes() == blob(450_000, 2)
    # a packer given what came back does not pack it again
    again = device.Packer(tmp_path / "out2", known=placed, log=lambda *_: None)
    e = again.add("job c", device.run_files(folders["runs"] / "ddpm-c-000000000000"))
    assert not e["members"] and len(e["unchanged"]) == 2


def test_a_failed_archive_write_keeps_the_previous_archive_and_manifest(folders, tmp_path, monkeypatch):
    out = tmp_path / "out"
    packer = device.Packer(out, log=lambda *_: None)
    first = folders["runs"] / "x.json"
    first.parent.mkdir(parents=True)
    first.write_text("1")
    packer.add("first", [first])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    second = folders["runs"] / "y.json"
    second.write_text("2")

    def torn(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(device.tarfile.TarFile, "addfile", torn)
        with pytest.raises(OSError):
            packer.add("second", [second])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temporary, nothing changed
    packer.add("second", [second])  # the same packer goes on
    assert set(device.contents(out)) == {"runs/x.json", "runs/y.json"}


def test_unpack_refuses_names_that_leave_the_folders(tmp_path):
    for name in ("../etc/passwd", "/abs/file", "runs", "elsewhere/file", "runs/../../x"):
        with pytest.raises(ValueError):
            device.destination(name)


# --------------------------------------------------------------------------- the stage's deadline
def test_deadline_kills_a_worker_that_does_not_stop_and_starts_no_other(folders, tmp_path, monkeypatch):
    use_worker(monkeypatch, tmp_path, FAKE)
    monkeypatch.setenv("FAKE_BEHAVIOUR", json.dumps({"ddpm:default": "sleep"}))
    runs = (("ddpm", "default"), ("ddpm", "testing"), ("cold", "columns7"))
    deadline = time.time() + 3
    with pytest.raises(pipeline.Stopped) as err:
        pretrain.run(
            "smoke",
            jobs=1,
            runs=runs,
            log=lambda *_: None,
            log_dir=tmp_path / "logs",
            out=tmp_path / "out",
            deadline=deadline,
            grace=1,
            preflight=False,
        )
    records = {r["job"]: r for r in err.value.records}
    assert records["ddpm:default"]["status"] == "stopped"
    assert records["ddpm:default"]["stopped_in"] == "killed past the deadline"
    assert records["ddpm:testing"]["status"] == records["cold:columns7"]["status"] == "not started"
    log = (tmp_path / "logs" / "ddpm-default.log").read_text()
    assert f"--deadline-at {deadline!r}" in log  # the workers are given the stage's deadline
    packed = entries(tmp_path / "out")
    assert packed["pretrain ddpm:default train"]["status"] == "stopped"
    assert "build/smoke/pretrain/ddpm-default.log" in packed["pretrain ddpm:default train"]["members"]
    assert packed["pretrain ddpm:testing train"]["status"] == "not started"


@pytest.mark.slow  # worker processes training tiny runs: a minute or more
def test_timed_parts_run_alone_after_training_and_every_record_says_how_many_shared_the_device(
    folders, tmp_path, monkeypatch
):
    use_worker(monkeypatch, tmp_path, FAKE)
    monkeypatch.setenv("FAKE_BEHAVIOUR", json.dumps({"ddpm:default": "timed"}))
    runs = (("ddpm", "default"), ("ddpm", "testing"), ("cold", "columns7"))
    results = pretrain.run("smoke", jobs=2, runs=runs, log=lambda *_: None, log_dir=tmp_path / "logs")
    lines = [json.loads(line) for line in (tmp_path / "logs" / "jobs.jsonl").read_text().splitlines()]
    train = [r for r in lines if r["part"] == "train"]
    (timed,) = [r for r in lines if r["part"] == "timed"]
    assert len(train) == 3 and all(r["concurrent_max"] >= 1 and r["slots"] == 2 for r in train)
    assert max(r["concurrent_max"] for r in train) == 2  # the first two were started together
    assert timed["job"] == "ddpm:default" and timed["concurrent_max"] == 1 and timed["slots"] == 1
    assert timed["started_at"] >= max(r["ended_at"] for r in train)  # after every training job
    assert {r["job"]: r.get("ddim_concurrent_max") for r in results}["ddpm:default"] == 1
    context = json.loads((folders["runs"] / "ddpm-default-000000000000" / "timing-context.json").read_text())
    assert [(s["part"], s["concurrent_max"]) for s in context["sessions"]][1] == ("timed", 1)
    assert pretrain._env(0, 1, 0)["OMP_NUM_THREADS"] == str(os.cpu_count() or 1)  # alone: every core


# --------------------------------------------------------------------------- resuming what came back
def _final_state(run_dir: Path) -> dict:
    (ckpt,) = sorted(run_dir.glob("ckpt-*.pt"))[-1:]
    payload = store.load_tensors(ckpt)
    logs = {k: v for k, v in payload["logs"].items() if k not in ("epoch_seconds", "train_seconds")}
    return {"epoch": payload["epoch"], "model": payload["model"], "ema": payload.get("ema"), "logs": logs}


def _numbers(run_dir: Path) -> dict:
    """The cached results of a run folder without their timings."""
    timing = {"sample_seconds", "seconds_per_sample", "speedup"}

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in timing}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    return {
        p.name: strip(store.read_verified_json(p))
        for p in sorted(run_dir.glob("*.json"))
        if p.name not in ("run.json", "timing-context.json")
    }


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    return a == b


TINY_RUNS = (("ddpm", "default"), ("cold", "columns7"))  # an EMA and a DDIM sweep; reconstructions


@pytest.mark.slow  # worker processes training tiny runs: a minute or more
def test_deadline_mid_training_then_a_second_invocation_from_out_matches_an_uninterrupted_run(
    folders, tmp_path, monkeypatch
):
    use_worker(monkeypatch, tmp_path, TINY)
    far = time.time() + 3600  # the stage starts every job; each worker gets deadline 0 (TINY_STOP)
    monkeypatch.setenv("TINY_STOP", "1")
    out1 = tmp_path / "out1"
    with pytest.raises(pipeline.Stopped):
        pretrain.run("smoke", jobs=2, runs=TINY_RUNS, log=print, log_dir=tmp_path / "logs1", out=out1, deadline=far)
    packed = entries(out1)
    for kind, preset in TINY_RUNS:
        e = packed[f"pretrain {kind}:{preset} train"]
        assert e["status"] == "stopped" and e["info"]["record"]["stopped_in"] == "training"
        assert {n.rsplit("/", 1)[1] for n in e["members"] if n.startswith("runs/")} == {
            "run.json",
            "timing-context.json",
            "ckpt-0001.pt",
        }
    assert not any(n.startswith("pretrain ddpm:default timed") for n in packed)

    # a later lease: nothing but what came back
    monkeypatch.setenv("TINY_STOP", "0")
    switch_runs(monkeypatch, tmp_path / "runs-resumed")
    known = device.unpack([out1], log=print)
    out2 = tmp_path / "out2"
    pretrain.run(
        "smoke",
        jobs=2,
        runs=TINY_RUNS,
        log=print,
        log_dir=tmp_path / "logs2",
        out=device.Packer(out2, known=known),
        deadline=far,
    )
    for kind, preset in TINY_RUNS:
        log = (tmp_path / "logs2" / f"{kind}-{preset}.log").read_text()
        assert "after epoch 1 of 3" in log, log[-2000:]  # resumed, not trained again
    assert entries(out2)["pretrain ddpm:default timed"]["status"] == "ok"

    # the same jobs uninterrupted
    switch_runs(monkeypatch, tmp_path / "runs-straight")
    pretrain.run("smoke", jobs=2, runs=TINY_RUNS, log=print, log_dir=tmp_path / "logs3")
    for folder in sorted((tmp_path / "runs-straight").iterdir()):
        if not folder.is_dir():
            continue
        resumed = tmp_path / "runs-resumed" / folder.name
        a, b = _final_state(resumed), _final_state(folder)
        assert a["epoch"] == 3 and _same(a, b), folder.name
        na, nb = _numbers(resumed), _numbers(folder)
        assert na and _same(na, nb), folder.name
        assert any(n.startswith("ddim-") for n in na) or folder.name.startswith("cold")
    # and what the second OUT brought back holds the resumed runs' final checkpoints and results
    files = device.contents(out2)
    for folder in (tmp_path / "runs-resumed").iterdir():
        if folder.is_dir():
            for p in device.run_files(folder):
                name = f"runs/{folder.name}/{p.name}"
                assert files.get(name) == p.read_bytes() or known.get(name), name


SIGKILL_DRIVER = r"""
import sys
from helpers import pretrain
worker, out, logs = sys.argv[1:4]
pretrain.worker_command = lambda kind, preset, profile, *options: [
    sys.executable, worker, "--profile", profile, "--one", f"{kind}:{preset}", *options]
pretrain.run("smoke", jobs=2, runs=[("ddpm", "default"), ("ddpm", "testing"), ("cold", "columns7")],
             out=out, log_dir=logs, preflight=False)
"""


@pytest.mark.slow  # worker processes training tiny runs: a minute or more
def test_sigkill_of_the_process_group_at_a_random_moment_keeps_every_finished_job(folders, tmp_path):
    (tmp_path / "worker.py").write_text(TINY)
    (tmp_path / "driver.py").write_text(SIGKILL_DRIVER)
    out, logs = tmp_path / "out", tmp_path / "logs"
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "worker.py"), str(out), str(logs)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    # the moment: a seeded random time after the first job is recorded (so that some have finished)
    delay = random.Random(20_240).uniform(0.0, 8.0)
    try:
        for _ in range(6000):
            if proc.poll() is not None or ((logs / "jobs.jsonl").is_file() and (logs / "jobs.jsonl").read_text()):
                break
            time.sleep(0.05)
        proc.wait(delay)
    except subprocess.TimeoutExpired:
        pass
    finally:
        killed = proc.poll() is None
        if killed:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = []
    if (logs / "jobs.jsonl").is_file():
        finished = [json.loads(line) for line in (logs / "jobs.jsonl").read_text().splitlines() if line.strip()]
    print(f"{'killed' if killed else 'ended'} {delay:.1f} s after the first record, {len(finished)} job(s) recorded")
    assert finished, "no job finished: the stage failed"
    assert not device.check_limits(out)
    if not (out / "manifest.json").is_file():
        assert not finished
        return
    files = device.contents(out)  # every archive readable, every listed file verified
    packed = entries(out)
    for r in finished:
        e = packed[f"pretrain {r['job']} {r['part']}"]
        assert e["status"] == r["status"] == "ok"
        for name in e["members"]:
            assert name in files
        if r["part"] == "train":
            assert any(n.endswith(".pt") for n in e["members"]) and any("/final-" in n for n in e["members"])


# --------------------------------------------------------------------------- a failed job in the pipeline
def _notebook(path: Path, parameters: str, *cells: str) -> None:
    nb = {
        "cells": [
            {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": parameters, "outputs": [],
             "execution_count": None},
            *({"cell_type": "code", "metadata": {}, "source": c, "outputs": [], "execution_count": None} for c in cells),
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }  # fmt: skip
    path.write_text(json.dumps(nb))


@pytest.fixture
def repo(tmp_path, mnist_dir):
    """A copy of the package and scripts with four tiny notebooks under the study's names (01 and 02
    show ddpm:testing, 03 cold:columns7, 04 ddpm:unet) and stand-in workers (FAKE)."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "helpers", repo / "helpers", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "scripts", repo / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "notebooks").mkdir()
    _notebook(repo / "notebooks" / "01_ddpm.ipynb", "profile = None\npreset = 'testing'", "print('shown:', preset)")
    _notebook(repo / "notebooks" / "02_hyperparams.ipynb", "profile = None\nbaseline = 'testing'", "x = 2")
    _notebook(repo / "notebooks" / "03_cold_diffusion.ipynb", "profile = None\ncold_preset = 'columns7'", "x = 3")
    _notebook(repo / "notebooks" / "04_comparison.ipynb", "profile = None\nunet_preset = 'unet'", "x = 4")
    with open(repo / "helpers" / "study.py", "a") as f:
        f.write(
            "\nNOTEBOOKS.clear()\nNOTEBOOKS.update({\n"
            "    '01_ddpm': Notebook((PROFILE, Param('preset', 'testing', 'ddpm_preset')), roles={}),\n"
            "    '02_hyperparams': Notebook((PROFILE, Param('baseline', 'testing', 'ddpm_preset')), roles={}),\n"
            "    '03_cold_diffusion': Notebook((PROFILE, Param('cold_preset', 'columns7', 'cold_preset')), roles={}),\n"
            "    '04_comparison': Notebook((PROFILE, Param('unet_preset', 'unet', 'ddpm_preset_or_none')), roles={}),\n"
            "})\n"
        )
    (repo / "fake_worker.py").write_text(FAKE)
    with open(repo / "helpers" / "pretrain.py", "a") as f:
        f.write(
            "\n\ndef worker_command(kind, preset, profile, *options):\n"
            f"    return [sys.executable, {str(repo / 'fake_worker.py')!r}, '--profile', profile, "
            "'--one', f'{kind}:{preset}', *options]\n"
        )
    return repo


def _env(repo: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIFFUSION_") and k != "PYTHONPATH"}
    return {**env, "DIFFUSION_DATA_DIR": str(config.DATA_DIR), "DIFFUSION_RUNS_DIR": str(repo / "runs"), **extra}


@pytest.mark.slow  # worker processes training tiny runs: a minute or more
def test_a_failed_job_is_a_pipeline_error_naming_it_and_the_rest_is_kept(repo):
    out = repo / "out"
    r = subprocess.run(
        [sys.executable, "-m", "helpers.pipeline", "--profile", "smoke", "--pretrain", "--jobs", "3",
         "--only", "01_ddpm", "03_cold_diffusion", "--out", str(out)],
        cwd=repo,
        env=_env(repo, FAKE_BEHAVIOUR=json.dumps({"cold:columns7": "fail"})),
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr[-3000:]
    assert "Traceback (most recent call last)" not in r.stderr  # a clear error, not a crash
    assert "error: pre-training failed: cold:columns7: exit 3:" in r.stderr
    assert "the fake worker of cold columns7 fails here" in r.stderr  # the end of its log
    record = json.loads((repo / "results" / "smoke" / "pipeline.json").read_text())
    statuses = {x["job"]: x["status"] for x in record["pretrain"]["runs"]}
    assert len(statuses) == SMOKE_RUNS and statuses.pop("cold:columns7") == "failed"
    assert set(statuses.values()) == {"ok"}
    assert record["pretrain"]["status"] == "failed"
    assert record["notebooks"]["01_ddpm"]["status"] == "ok"  # it needs nothing that failed
    assert record["notebooks"]["03_cold_diffusion"]["status"] == "skipped"
    assert "cold:columns7" in record["notebooks"]["03_cold_diffusion"]["reason"]
    packed = entries(out)
    assert packed["pretrain cold:columns7 train"]["status"] == "failed"
    assert sum(name.endswith(" train") and e["status"] == "ok" for name, e in packed.items()) == SMOKE_RUNS - 1
    files = device.contents(out)
    assert "shown: testing" in files["build/smoke/01_ddpm.ipynb"].decode()
    assert "results/smoke/pipeline.json" in files


# --------------------------------------------------------------------------- gpu_full.sh killed
@pytest.mark.slow  # worker processes training tiny runs: a minute or more
def test_gpu_full_script_killed_by_sigkill_has_already_returned_every_finished_job(repo):
    """The time limit SIGKILLs the whole command (no exit trap runs): what finished is in OUT."""
    out = repo / "out"
    proc = subprocess.Popen(
        ["bash", "scripts/gpu_full.sh", "run", "--profile", "smoke", "--jobs", "2"],
        cwd=repo,
        env=_env(repo, PYTHON=sys.executable, OUT=str(out), FAKE_BEHAVIOUR=json.dumps({"ddpm:default": "sleep"})),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    jobs = repo / "build" / "smoke" / "pretrain" / "jobs.jsonl"
    try:
        for _ in range(3000):  # every job but the sleeping one recorded (or the script ended)
            if proc.poll() is not None:
                break
            if jobs.is_file() and len(jobs.read_text().splitlines()) >= SMOKE_RUNS - 1:
                break
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the script ended before it was killed"
    recorded = [json.loads(line)["job"] for line in jobs.read_text().splitlines()]
    assert len(recorded) == SMOKE_RUNS - 1 and "ddpm:default" not in recorded
    assert not device.check_limits(out)
    packed = entries(out)
    assert {n.split()[1] for n in packed if n.startswith("pretrain ")} >= set(recorded)
    files = device.contents(out)
    assert sum(n.endswith("ckpt-0001.pt") for n in files) == SMOKE_RUNS - 1
    assert "[preflight] smoke: ok" in (out / "gpu_full.log").read_text()  # the log comes back as it grows


# --------------------------------------------------------------------------- the replica's counts
def test_the_replica_expects_the_studys_jobs_not_a_number(folders, tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import replica_check
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    train, timed = replica_check.expected_jobs("smoke")
    assert len(train) == SMOKE_RUNS and timed == ["ddpm:default"]
    assert len(replica_check.expected_jobs("full")[0]) == len(pretrain.study_runs("full"))

    def fake_out(jobs: list[str]) -> Path:
        out = tmp_path / f"out-{len(jobs)}"
        packer = device.Packer(out, log=lambda *_: None)
        for job in jobs:
            kind, preset = job.split(":")
            run_dir = folders["runs"] / f"{kind}-{preset}-000000000000"
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "ckpt-0001.pt").write_bytes(hashlib.sha256(job.encode()).digest())
            log = folders["build"] / "smoke" / "pretrain" / f"{kind}-{preset}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text("ok")
            rec = {"status": "ok", "train_seconds": 1.0, "concurrent_max": 2}
            packer.add(f"pretrain {job} train", [log, *device.run_files(run_dir)], record=rec)
        for job in timed:
            kind, preset = job.split(":")
            log = folders["build"] / "smoke" / "pretrain" / f"{kind}-{preset}.timed.log"
            log.write_text("ok")
            packer.add(f"pretrain {job} timed", [log], record={"status": "ok", "concurrent_max": 1})
        return out

    def job_checks(out: Path) -> dict:
        return {what: ok for ok, what in replica_check.check_run(out, "smoke", 0) if "job" in what or "logs" in what}

    assert all(job_checks(fake_out(train)).values())
    eight = job_checks(fake_out(train[:8]))  # what the replica used to expect
    assert not all(eight.values())


# --------------------------------------------------------------------------- reference statistics
def test_a_cached_reference_brings_its_fid_statistics(tmp_path, mnist_dir, monkeypatch):
    """FID against a cached reference does not recompute the reference's covariance (the 10,000 x
    2,048 one of the Inception FID in `full`), and gives the very same number."""
    from helpers import metrics

    monkeypatch.setattr(metrics, "_MEMORY", {})
    metrics.reference_features("classifier", "test", 200, "cpu", folder=tmp_path, log=lambda *_: None)
    monkeypatch.setattr(metrics, "_MEMORY", {})
    ref = metrics.reference_features("classifier", "test", 200, "cpu", folder=tmp_path, log=lambda *_: None)
    assert ref.fid_stats is not None and ref.fid_stats["n"] == 200  # read back from disk
    fake = metrics.FeatureSet(
        "classifier", torch.randn(150, ref.features.shape[1], generator=torch.Generator().manual_seed(1))
    )
    real_updates = []
    update = metrics.FrechetInceptionDistance.update
    monkeypatch.setattr(
        metrics.FrechetInceptionDistance,
        "update",
        lambda self, imgs, real: (real_updates.append(real), update(self, imgs, real))[1],
    )
    cached = metrics.fid(ref, fake)
    assert real_updates == [False]  # only the generated side
    recomputed = metrics.fid(metrics.FeatureSet("classifier", ref.features), fake)
    assert real_updates == [False, True, False]
    assert cached == recomputed
