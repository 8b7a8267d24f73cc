"""The pre-training stage: every run of the study trained (and its final samples scored) before the
notebooks, several at once, so that the notebooks then only load them from the cache.

    python -m helpers.pretrain --profile NAME [--jobs N]          # what `run_all.sh --pretrain` runs
    python -m helpers.pretrain --profile NAME --one KIND:PRESET   # one job (the stage's workers)

Each job is a process of its own: on one GPU several share it (the models are small, so one alone
leaves most of the chip idle); with several GPUs each job is pinned to one, round robin; on every
device the CPU cores are divided between the jobs. A job trains its run through the engine (which
locks the run folder, so a run is trained once even when a notebook asks for it at the same time), then
computes the cached results the notebooks will ask for: the final metrics, and the reconstruction
metrics (cold diffusion) or the DDIM sweep and the EMA's final metrics (the default DDPM). Each job
writes its output into a log file and ends it with one JSON line of timings; `run` collects them and
appends each to jobs.jsonl as the job finishes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import config, study

# The runs of the study (helpers/study.py), most expensive first, so the long jobs start at once and
# the short ones fill the gaps; `study_runs(profile)` those of one profile.
STUDY_RUNS = tuple((r.kind, r.preset) for r in study.RUNS)


def study_runs(profile: str) -> tuple[tuple[str, str], ...]:
    return tuple((r.kind, r.preset) for r in study.runs(profile))


RESULT_PREFIX = "[pretrain-result] "


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_jobs() -> int:
    """Every run at once on a GPU (a few hundred MB each); one at a time on a CPU, where the cores
    are shared anyway."""
    return len(STUDY_RUNS) if gpu_count() else 1


def work(kind: str, preset: str, profile: str, seed: int = 0) -> dict:
    """Train one run and compute its cached results; return the seconds each part took."""
    from .study import Study

    s = Study(profile, seed, progress=False)
    out = {"kind": kind, "preset": preset}
    t0 = time.perf_counter()
    run = s.train(kind, preset)
    out.update(
        train_seconds=round(time.perf_counter() - t0, 2),
        cached=run.cached,
        device=str(next(run.model.parameters()).device),
        precision=run.settings.precision,
    )
    t0 = time.perf_counter()
    final = s.final(run)
    out["final_seconds"] = round(time.perf_counter() - t0, 2)
    out["sample_seconds"] = round(final.get("sample_seconds", 0.0), 2)
    t0 = time.perf_counter()
    if kind == "cold":
        s.reconstructions(run)
    elif run.ema_model is not None:
        s.ddim_sweep(run)
        s.final(run, use_ema=True)
    out["extra_seconds"] = round(time.perf_counter() - t0, 2)
    return out


def _env(slot: int, jobs: int, gpus: int) -> dict:
    """A worker's environment: this checkout first on the path, its GPU when there are several, and
    its share of the cores on every device (on a GPU machine the workers still compute on the CPU
    during FID/KID statistics and the prior's fit: 8 workers of 16 threads each on 16 cores would
    spend their time switching)."""
    env = dict(os.environ, PYTHONPATH=config.pythonpath_with_root())
    env["PYTHONUNBUFFERED"] = "1"
    if gpus > 1:
        env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def worker_command(kind: str, preset: str, profile: str) -> list[str]:
    """The command line of one job (tests replace it with a fake worker)."""
    return [sys.executable, "-m", "helpers.pretrain", "--profile", profile, "--one", f"{kind}:{preset}"]


def log_folder(profile: str) -> Path:
    """Where the stage writes each worker's output (<kind>-<preset>.log) and the timings of every
    finished job, one JSON line each as it finishes (jobs.jsonl)."""
    return config.BUILD_DIR / profile / "pretrain"


def _result_of(log_path: Path) -> dict | None:
    """The last result line a worker wrote into its log, or None."""
    found = None
    with open(log_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(RESULT_PREFIX):
                found = line[len(RESULT_PREFIX) :]
    return json.loads(found) if found is not None else None


def _tail(log_path: Path, chars: int = 1500) -> str:
    with open(log_path, "rb") as f:
        f.seek(max(0, log_path.stat().st_size - 4 * chars))
        return f.read().decode("utf-8", errors="replace").strip()[-chars:]


def run(
    profile: str, jobs: int | None = None, runs=None, log: Callable[[str], None] = print, log_dir: Path | None = None
) -> list[dict]:
    """Train `runs` of `profile` (default: the profile's runs of the study) with `jobs` worker processes
    (default: `default_jobs()`); return the timings of each job. A failed job raises after the others have finished.

    Each worker writes its stdout and stderr into `log_dir/<kind>-<preset>.log` (default
    `log_folder(profile)`), never into a pipe that nobody reads while it runs (a pipe holds 64 KiB:
    a worker with more warnings than that would block forever); its result line is read from there
    once it exits, and appended to `log_dir/jobs.jsonl` at once, so the timings of finished jobs
    survive a later failure."""
    config.check_choice("profile", profile, config.PROFILES)
    runs = study_runs(profile) if runs is None else runs
    jobs = default_jobs() if jobs is None else jobs
    config.check_int("jobs", jobs, 1, 64)
    gpus = gpu_count()
    folder = Path(log_dir) if log_dir is not None else log_folder(profile)
    folder.mkdir(parents=True, exist_ok=True)
    timings = folder / "jobs.jsonl"
    timings.write_text("")  # this stage's jobs only
    pending = list(enumerate(runs))
    running: list[tuple[subprocess.Popen, str, int, Path, float]] = []
    results, failed = [], []
    free_slots = list(range(jobs))

    def record(entry: dict) -> None:
        with open(timings, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")

    while pending or running:
        while pending and free_slots:
            i, (kind, preset) = pending.pop(0)
            slot = free_slots.pop(0)
            out_path = folder / f"{kind}-{preset}.log"
            with open(out_path, "wb") as out:
                proc = subprocess.Popen(
                    worker_command(kind, preset, profile),
                    env=_env(slot, jobs, gpus),
                    cwd=config.ROOT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            running.append((proc, f"{kind}:{preset}", slot, out_path, time.perf_counter()))
            log(f"[pretrain] started {kind}:{preset} (slot {slot}, output in {out_path})")
        time.sleep(0.2)
        for item in list(running):
            proc, name, slot, out_path, started = item
            if proc.poll() is None:
                continue
            running.remove(item)
            free_slots.append(slot)
            seconds = round(time.perf_counter() - started, 1)
            try:
                result = _result_of(out_path)
            except ValueError:
                result = None
            if proc.returncode != 0 or result is None:
                failed.append(f"{name}: exit {proc.returncode}: {_tail(out_path)}")
                record(
                    {"job": name, "status": "failed", "exit": proc.returncode, "seconds": seconds, "log": out_path.name}
                )
                log(f"[pretrain] {name} failed (exit {proc.returncode}); its output is in {out_path}")
                continue
            results.append(result)
            record({"job": name, "status": "ok", "seconds": seconds, **result})
            log(
                f"[pretrain] {name}: trained in {result['train_seconds']:.1f} s (from cache: {result['cached']}), "
                f"final samples in {result['sample_seconds']:.1f} s, other results in {result['extra_seconds']:.1f} s"
            )
    if failed:
        raise RuntimeError("pre-training failed: " + " | ".join(failed))
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m helpers.pretrain", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", required=True, choices=sorted(config.PROFILES))
    ap.add_argument(
        "--jobs", type=int, default=None, help="worker processes (default: every run at once on a GPU, one on a CPU)"
    )
    ap.add_argument("--one", metavar="KIND:PRESET", help="run one job in this process")
    args = ap.parse_args(argv)
    if args.one:
        kind, _, preset = args.one.partition(":")
        if (kind, preset) not in STUDY_RUNS:
            ap.error(f"--one {args.one!r} is not allowed; expected one of {[f'{k}:{p}' for k, p in STUDY_RUNS]}")
        print(RESULT_PREFIX + json.dumps(work(kind, preset, args.profile)), flush=True)
        return 0
    t0 = time.perf_counter()
    results = run(args.profile, args.jobs)
    print(json.dumps({"seconds": round(time.perf_counter() - t0, 1), "jobs": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
