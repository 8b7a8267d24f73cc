"""The pre-training stage: worker processes train each run once, compute its cached results, and the
notebooks' own calls then load everything from the cache."""

import json
import os
import sys
import threading

import pytest

from helpers import config, pretrain, runs

RUNS = (("ddpm", "testing"), ("cold", "columns7"))  # the two cheapest runs of the study


@pytest.fixture
def isolated(tmp_path, monkeypatch, mnist_dir):
    monkeypatch.setenv("DIFFUSION_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(config, "RUNS_DIR", tmp_path / "runs")
    return tmp_path / "runs"


@pytest.mark.slow  # worker processes training several runs
def test_stage_trains_each_run_once_and_notebook_calls_hit_the_cache(isolated, tmp_path):
    logs = []
    first = pretrain.run("smoke", jobs=2, runs=RUNS, log=logs.append, log_dir=tmp_path / "logs")
    assert sorted((r["kind"], r["preset"]) for r in first) == sorted(RUNS)
    assert not any(r["cached"] for r in first)
    assert all(r["train_seconds"] > 0 and r["final_seconds"] > 0 for r in first)
    folders = sorted(d.name for d in isolated.iterdir() if d.is_dir())
    assert len(folders) == 2 and all(
        sorted(p.name for p in (isolated / f).glob("ckpt-*.pt")) == ["ckpt-0001.pt"] for f in folders
    )
    timings = [json.loads(line) for line in (tmp_path / "logs" / "jobs.jsonl").read_text().splitlines()]
    assert sorted(t["job"] for t in timings) == ["cold:columns7", "ddpm:testing"]
    assert all(t["status"] == "ok" and t["train_seconds"] > 0 for t in timings)
    assert all((tmp_path / "logs" / f"{k}-{p}.log").stat().st_size > 0 for k, p in RUNS)
    again = pretrain.run("smoke", jobs=2, runs=RUNS, log=logs.append, log_dir=tmp_path / "logs")
    assert all(r["cached"] for r in again)
    prof = config.profile("smoke")
    for kind, preset in RUNS:  # what the notebooks call
        run = runs.train(kind, preset, prof, progress=False)
        assert run.cached
        finals = list(run.dir.glob("final-*.json"))
        assert len(finals) == 1
        before = finals[0].stat().st_mtime_ns
        runs.final_metrics(run, prof, progress=False)
        assert finals[0].stat().st_mtime_ns == before  # read, not recomputed
    assert sorted(d.name for d in isolated.iterdir() if d.is_dir()) == folders


def test_stage_refuses_bad_arguments_before_any_work(isolated):
    with pytest.raises(ValueError, match="profile='fast' is not allowed"):
        pretrain.run("fast", jobs=1)
    with pytest.raises(ValueError, match="jobs=0 is not allowed"):
        pretrain.run("smoke", jobs=0)
    assert not isolated.exists()


def test_a_failing_job_is_reported_by_name(isolated, tmp_path):
    with pytest.raises(RuntimeError, match="cold:nope"):
        pretrain.run("smoke", jobs=1, runs=(("cold", "nope"),), log=lambda *_: None, log_dir=tmp_path)
    (entry,) = [json.loads(line) for line in (tmp_path / "jobs.jsonl").read_text().splitlines()]
    assert entry["job"] == "cold:nope" and entry["status"] == "failed" and entry["exit"] == 2


# A stand-in worker: floods stderr far past a pipe's 64 KiB, then writes its result line (or fails).
FAKE_WORKER = r"""
import json, os, sys, time
kind, preset, fail = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
for i in range(3000):
    print(f"UserWarning: a long warning of the fake worker, line {i} " + "x" * 60, file=sys.stderr)
if fail:
    sys.exit(3)
print("[pretrain-result] " + json.dumps({"kind": kind, "preset": preset, "train_seconds": 0.1, "cached": False,
      "sample_seconds": 0.0, "extra_seconds": 0.0, "final_seconds": 0.0,
      "threads": os.environ.get("OMP_NUM_THREADS")}), flush=True)
"""


def fake_stage(monkeypatch, tmp_path, runs, jobs, fail=()):
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    monkeypatch.setattr(
        pretrain,
        "worker_command",
        lambda kind, preset, profile, *options: [
            sys.executable,
            str(script),
            kind,
            preset,
            "1" if (kind, preset) in fail else "0",
        ],
    )
    out = {}

    def target():
        try:
            out["results"] = pretrain.run("smoke", jobs=jobs, runs=runs, log=lambda *_: None, log_dir=tmp_path / "logs")
        except RuntimeError as exc:
            out["error"] = str(exc)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(120)
    assert not worker.is_alive(), "the stage hangs on a worker that writes more than a pipe holds"
    return out


def test_a_worker_flooding_stderr_does_not_block_and_its_output_is_kept(monkeypatch, tmp_path):
    runs = (("ddpm", "testing"), ("cold", "columns7"))
    out = fake_stage(monkeypatch, tmp_path, runs, jobs=2)
    assert sorted(r["preset"] for r in out["results"]) == ["columns7", "testing"]
    log = (tmp_path / "logs" / "ddpm-testing.log").read_text()
    assert len(log) > 200_000 and "line 2999" in log
    threads = max(1, (os.cpu_count() or 1) // 2)
    assert all(r["threads"] == str(threads) for r in out["results"])  # cores // jobs, on any device


def test_timings_of_finished_jobs_survive_a_failed_one(monkeypatch, tmp_path):
    runs = (("ddpm", "testing"), ("cold", "columns7"), ("cold", "rows7"))
    out = fake_stage(monkeypatch, tmp_path, runs, jobs=1, fail={("cold", "columns7")})
    assert "cold:columns7: exit 3" in out["error"] and "line 2999" in out["error"]
    timings = [json.loads(line) for line in (tmp_path / "logs" / "jobs.jsonl").read_text().splitlines()]
    assert [(t["job"], t["status"]) for t in timings] == [
        ("ddpm:testing", "ok"),
        ("cold:columns7", "failed"),
        ("cold:rows7", "ok"),
    ]
    assert timings[0]["train_seconds"] == 0.1


def test_workers_get_their_share_of_the_cores_on_every_device(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    for gpus in (0, 1, 2):
        env = pretrain._env(slot=3, jobs=8, gpus=gpus)
        assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "2"
    assert pretrain._env(3, 8, 2)["CUDA_VISIBLE_DEVICES"] == "1"
    assert pretrain._env(0, 32, 1)["OMP_NUM_THREADS"] == "1"


def test_default_jobs_on_a_cpu_is_one():
    if pretrain.gpu_count():
        pytest.skip("a GPU is present")
    assert pretrain.default_jobs() == 1
