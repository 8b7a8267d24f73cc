"""The pre-training stage: worker processes train each run once, compute its cached results, and the
notebooks' own calls then load everything from the cache."""
import pytest

from helpers import config, experiments, pretrain

RUNS = (("ddpm", "testing"), ("cold", "columns7"))  # the two cheapest runs of the study


@pytest.fixture
def isolated(tmp_path, monkeypatch, mnist_dir):
    monkeypatch.setenv("DIFFUSION_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(config, "RUNS_DIR", tmp_path / "runs")
    return tmp_path / "runs"


def test_stage_trains_each_run_once_and_notebook_calls_hit_the_cache(isolated):
    logs = []
    first = pretrain.run("smoke", jobs=2, runs=RUNS, log=logs.append)
    assert sorted((r["kind"], r["preset"]) for r in first) == sorted(RUNS)
    assert not any(r["cached"] for r in first)
    assert all(r["train_seconds"] > 0 and r["final_seconds"] > 0 for r in first)
    folders = sorted(d.name for d in isolated.iterdir() if d.is_dir())
    assert len(folders) == 2 and all(sorted(p.name for p in (isolated / f).glob("ckpt-*.pt")) == ["ckpt-0001.pt"]
                                     for f in folders)
    again = pretrain.run("smoke", jobs=2, runs=RUNS, log=logs.append)
    assert all(r["cached"] for r in again)
    prof = config.profile("smoke")
    for kind, preset in RUNS:  # what the notebooks call
        run = experiments.train(kind, preset, prof, progress=False)
        assert run.cached
        finals = list(run.dir.glob("final-*.json"))
        assert len(finals) == 1
        before = finals[0].stat().st_mtime_ns
        experiments.final_metrics(run, prof, progress=False)
        assert finals[0].stat().st_mtime_ns == before  # read, not recomputed
    assert sorted(d.name for d in isolated.iterdir() if d.is_dir()) == folders


def test_stage_refuses_bad_arguments_before_any_work(isolated):
    with pytest.raises(ValueError, match="profile='fast' is not allowed"):
        pretrain.run("fast", jobs=1)
    with pytest.raises(ValueError, match="jobs=0 is not allowed"):
        pretrain.run("smoke", jobs=0)
    assert not isolated.exists()


def test_a_failing_job_is_reported_by_name(isolated):
    with pytest.raises(RuntimeError, match="cold:nope"):
        pretrain.run("smoke", jobs=1, runs=(("cold", "nope"),), log=lambda *_: None)


def test_default_jobs_on_a_cpu_is_one():
    if pretrain.gpu_count():
        pytest.skip("a GPU is present")
    assert pretrain.default_jobs() == 1
