"""The pre-training stage: every run of the study trained (and its final samples scored) before the
notebooks, several at once, so that the notebooks then only load them from the cache.

    python -m helpers.pretrain --profile NAME [--jobs N]          # what `run_all.sh --pretrain` runs
        [--out DIR] [--deadline SECONDS] [--grace SECONDS] [--resume-from DIR ...]
    python -m helpers.pretrain --profile NAME --preflight         # data, weights, imports; seconds
    python -m helpers.pretrain --profile NAME --one KIND:PRESET [--part train|timed] [--deadline-at T]
                                                                  # one job (the stage's workers)

Each job is a process of its own: on one GPU several share it (the models are small, so one alone
leaves most of the chip idle); with several GPUs each job is pinned to one, round robin; on every
device the CPU cores are divided between the jobs. A job trains its run through the engine (which
locks the run folder, so a run is trained once even when a notebook asks for it at the same time), then
computes the cached results the notebooks will ask for: the final metrics, and the reconstruction
metrics (cold diffusion) or the EMA's final metrics (a run with an EMA). The DDIM sweep, whose point is
its timings (speed-ups over the ancestral sampler), runs afterwards as a second, "timed" part of such a
run: once every training job has ended, one at a time, with all the cores, so that nothing contends
with it. Each job writes its output into a log file and ends it with one JSON line (its status and
timings); `run` collects them and appends each to jobs.jsonl as the job finishes, with how many jobs
shared the device while it ran (`concurrent_max`, `concurrent_mean`; also appended to the run
folder's timing-context.json, the label of the run's own training times).

Before any worker starts, `helpers.device.preflight` checks MNIST, the weights and the imports. With
an OUT folder (`out`), every job's run folder (its newest checkpoint and cached results) and log are
packed there the moment the job ends (`helpers.device.Packer`), before its line goes to jobs.jsonl.
With a deadline (a time.time() value), the workers stop at their next epoch boundary past it (a job
between training and its results stops before the next result), no job starts after it, and any
worker still running at deadline + grace is killed; the stopped jobs' checkpoints are packed like
finished ones, and the next stage given them (`--resume-from`, or on the same machine the run folders
themselves) resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import config, study
from .errors import PipelineError, Stopped

# The runs of the study (helpers/study.py), most expensive first, so the long jobs start at once and
# the short ones fill the gaps; `study_runs(profile)` those of one profile.
STUDY_RUNS = tuple((r.kind, r.preset) for r in study.RUNS)
PARTS = ("train", "timed")
DEFAULT_GRACE = 60.0  # seconds past the deadline before a worker that has not stopped is killed


def study_runs(profile: str) -> tuple[tuple[str, str], ...]:
    return tuple((r.kind, r.preset) for r in study.runs(profile))


RESULT_PREFIX = "[pretrain-result] "
RUN_PREFIX = "[pretrain-run] "


class JobsFailed(PipelineError):
    """At least one pre-training job failed; `records` holds every job's record (the message names
    the failed ones with the tail of their logs)."""

    def __init__(self, message: str, records: list[dict]):
        super().__init__(message)
        self.records = records


class StageStopped(Stopped):
    """The deadline stopped the stage before every job finished; `records` holds every job's record
    (status "stopped" or "not started" for those), their checkpoints are packed."""

    def __init__(self, message: str, records: list[dict]):
        super().__init__(message)
        self.records = records


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_jobs() -> int:
    """Every run at once on a GPU (a few hundred MB each); one at a time on a CPU, where the cores
    are shared anyway."""
    return len(STUDY_RUNS) if gpu_count() else 1


# --------------------------------------------------------------------------- one job (a worker)
def run_folder(s, kind: str, preset: str) -> Path:
    """The run folder `Study.train(kind, preset)` trains into (known before training starts, so a
    job stopped or killed in training can still be packed)."""
    from . import runs, training

    cfg = runs.preset_config(kind, preset)
    settings, _ = runs.settings_for(kind, preset, s.profile, s.seed, s.device, s.precision)
    path, _ = training.find_run(
        runs.KINDS[kind], cfg, training.StepConfig.of(cfg), settings, label=preset, runs_dir=s.runs_dir
    )
    return path


def work(
    kind: str, preset: str, profile: str, seed: int = 0, deadline: float | None = None, part: str = "train"
) -> dict:
    """One job: part "train" trains a run and computes its untimed cached results, part "timed" its
    DDIM sweep; return its status ("ok" or "stopped": the deadline passed) and the seconds each
    piece took."""
    from .study import Study
    from .training import TrainingStopped

    config.check_choice("part", part, PARTS)
    s = Study(profile, seed, progress=False, deadline=deadline)
    folder = run_folder(s, kind, preset)
    print(RUN_PREFIX + json.dumps({"run_dir": str(folder)}), flush=True)
    out = {"kind": kind, "preset": preset, "part": part, "run_dir": str(folder), "status": "ok"}
    t0 = time.perf_counter()
    try:
        run = s.train(kind, preset)
    except TrainingStopped as exc:
        out.update(status="stopped", stopped_in="training", message=str(exc))
        out["train_seconds"] = round(time.perf_counter() - t0, 2)
        return out
    out.update(
        train_seconds=round(time.perf_counter() - t0, 2),
        cached=run.cached,
        epochs=len(run.epoch_loss),
        device=str(next(run.model.parameters()).device),
        precision=run.settings.precision,
    )

    def past_deadline(before: str) -> bool:
        if deadline is not None and time.time() >= deadline:
            out.update(status="stopped", stopped_in=before, message=f"the deadline passed before {before}")
            return True
        return False

    if part == "timed":
        if run.ema_model is None:
            raise ValueError(f"{kind}:{preset} keeps no EMA under {profile}: it has no timed part")
        before = set(folder.glob("ddim-*.json"))
        t0 = time.perf_counter()
        s.ddim_sweep(run)
        out.update(ddim_seconds=round(time.perf_counter() - t0, 2), computed=set(folder.glob("ddim-*.json")) != before)
        return out
    if past_deadline("the final metrics"):
        return out
    t0 = time.perf_counter()
    final = s.final(run)
    out["final_seconds"] = round(time.perf_counter() - t0, 2)
    out["sample_seconds"] = round(final.get("sample_seconds", 0.0), 2)
    t0 = time.perf_counter()
    if kind == "cold":
        if past_deadline("the reconstructions"):
            return out
        s.reconstructions(run)
    elif run.ema_model is not None:
        if past_deadline("the EMA's final metrics"):
            return out
        s.final(run, use_ema=True)
        out["timed_part"] = True  # the DDIM sweep follows, alone
    out["extra_seconds"] = round(time.perf_counter() - t0, 2)
    return out


# --------------------------------------------------------------------------- the stage
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


def worker_command(kind: str, preset: str, profile: str, *options: str) -> list[str]:
    """The command line of one job; `options` are the stage's (--part, --deadline). Tests replace
    it with a fake worker."""
    return [sys.executable, "-m", "helpers.pretrain", "--profile", profile, "--one", f"{kind}:{preset}", *options]


def log_folder(profile: str) -> Path:
    """Where the stage writes each worker's output (<kind>-<preset>.log) and the timings of every
    finished job, one JSON line each as it finishes (jobs.jsonl)."""
    return config.BUILD_DIR / profile / "pretrain"


def _last_line(log_path: Path, prefix: str) -> dict | None:
    """The last line starting with `prefix` that a worker wrote into its log, decoded, or None."""
    found = None
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(prefix):
                    found = line[len(prefix) :]
    except OSError:
        return None
    try:
        return json.loads(found) if found is not None else None
    except ValueError:
        return None


def _result_of(log_path: Path) -> dict | None:
    """The result line a worker wrote into its log, or None."""
    return _last_line(log_path, RESULT_PREFIX)


def _tail(log_path: Path, chars: int = 1500) -> str:
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, log_path.stat().st_size - 4 * chars))
            return f.read().decode("utf-8", errors="replace").strip()[-chars:]
    except OSError:
        return "(no log)"


@dataclass
class _Job:
    kind: str
    preset: str
    part: str
    log_path: Path
    slot: int = 0
    proc: subprocess.Popen | None = None
    started: float = 0.0  # time.perf_counter()
    started_at: float = 0.0  # time.time()
    concurrent_max: int = 0
    concurrent_area: float = 0.0  # integral of the number of running jobs over this job's time
    last: float = 0.0
    killed: bool = False
    record: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.preset}"


def run(
    profile: str,
    jobs: int | None = None,
    runs=None,
    log: Callable[[str], None] = print,
    log_dir: Path | None = None,
    *,
    out=None,
    deadline: float | None = None,
    grace: float = DEFAULT_GRACE,
    preflight: bool = True,
) -> list[dict]:
    """Train `runs` of `profile` (default: the profile's runs of the study) with `jobs` worker processes
    (default: `default_jobs()`), then the timed parts alone; return each run's record (its training
    part's, with the timed part's seconds added).

    Each worker writes its stdout and stderr into `log_dir/<kind>-<preset>.log` (default
    `log_folder(profile)`; the timed part `<kind>-<preset>.timed.log`), never into a pipe that nobody
    reads while it runs (a pipe holds 64 KiB: a worker with more warnings than that would block
    forever); its result line is read from there once it exits, its files are packed into `out` (a
    `helpers.device.Packer` or a folder) when given, and its record is appended to
    `log_dir/jobs.jsonl` at once, so the timings of finished jobs survive a later failure.

    `deadline`: see the module's docstring. Raises `device.PreflightError` before any worker starts
    when the preflight fails, `JobsFailed` (after every other job) when a job failed, `StageStopped`
    when the deadline left jobs unfinished."""
    from . import device

    config.check_choice("profile", profile, config.PROFILES)
    runs = study_runs(profile) if runs is None else runs
    jobs = default_jobs() if jobs is None else jobs
    config.check_int("jobs", jobs, 1, 64)
    if deadline is not None:
        config.check_float("deadline", deadline, 0.0)
        config.check_float("grace", grace, 0.0, low_open=False)
    if preflight:
        device.preflight(profile, notebooks=False, log=log)
    packer = device.Packer(out, log=log) if out is not None and not isinstance(out, device.Packer) else out
    gpus = gpu_count()
    folder = Path(log_dir) if log_dir is not None else log_folder(profile)
    folder.mkdir(parents=True, exist_ok=True)
    timings = folder / "jobs.jsonl"
    timings.write_text("")  # this stage's jobs only
    records: list[dict] = []

    def past(t: float | None) -> bool:
        return t is not None and time.time() >= t

    def record(job: _Job, entry: dict) -> None:
        """Pack the job's files, then write its line (a line in jobs.jsonl means: in OUT)."""
        run_dir = entry.get("run_dir") or (_last_line(job.log_path, RUN_PREFIX) or {}).get("run_dir")
        trained = entry["part"] == "train" and entry.get("cached") is not True
        if run_dir and entry["status"] != "not started" and (trained or entry.get("computed")):
            _add_session(Path(run_dir), entry)
        if packer is not None:
            files = [(f"build/{profile}/pretrain/{job.log_path.name}", job.log_path)] if job.proc else []
            if run_dir:
                files += device.run_files(Path(run_dir))
            packer.add(f"pretrain {job.name} {job.part}", files, status=entry["status"], record=entry)
        records.append(entry)
        with open(timings, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")

    def stage(pending: list[_Job], slots: int) -> None:
        running: list[_Job] = []
        try:
            _loop(pending, running, slots)
        finally:  # an error here (a failed pack, an interrupt) must not leave workers behind
            _stop([j.proc for j in running if j.proc.poll() is None])

    def _loop(pending: list[_Job], running: list[_Job], slots: int) -> None:
        free = list(range(slots))
        while pending or running:
            while pending and free:
                job = pending.pop(0)
                if past(deadline):
                    record(job, {"job": job.name, "part": job.part, "status": "not started", "seconds": 0.0})
                    log(f"[pretrain] {job.name} ({job.part}) not started: the deadline has passed")
                    continue
                job.slot = free.pop(0)
                options = ["--part", job.part] + (["--deadline-at", repr(deadline)] if deadline is not None else [])
                with open(job.log_path, "wb") as f:
                    job.proc = subprocess.Popen(
                        worker_command(job.kind, job.preset, profile, *options),
                        env=_env(job.slot, slots, gpus),
                        cwd=config.ROOT,
                        stdout=f,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
                job.started = job.last = time.perf_counter()
                job.started_at = time.time()
                running.append(job)
                for j in running:
                    j.concurrent_max = max(j.concurrent_max, len(running))
                log(f"[pretrain] started {job.name} ({job.part}; slot {job.slot}, output in {job.log_path})")
            time.sleep(0.2)
            now = time.perf_counter()
            for j in running:
                j.concurrent_area += len(running) * (now - j.last)
                j.last = now
            if past(deadline + grace if deadline is not None else None):
                late = [j for j in running if j.proc.poll() is None]
                for j in late:
                    log(f"[pretrain] {j.name} still running {grace:.0f} s past the deadline: stopping it")
                    j.killed = True
                _stop([j.proc for j in late])
            for job in [j for j in running if j.proc.poll() is not None]:
                running.remove(job)
                free.append(job.slot)
                _finish(job)

    def _finish(job: _Job) -> None:
        seconds = round(time.perf_counter() - job.started, 1)
        base = {
            "job": job.name,
            "part": job.part,
            "seconds": seconds,
            "concurrent_max": job.concurrent_max,
            "concurrent_mean": round(job.concurrent_area / max(time.perf_counter() - job.started, 1e-9), 2),
            "slots": slots_of[job.part],
            "started_at": round(job.started_at, 3),
            "ended_at": round(time.time(), 3),
            "log": job.log_path.name,
        }
        result = _result_of(job.log_path)
        if job.killed:
            entry = {**base, "status": "stopped", "stopped_in": "killed past the deadline", "exit": job.proc.returncode}
            log(
                f"[pretrain] {job.name} ({job.part}) killed {grace:.0f} s past the deadline; its last checkpoint is kept"
            )
        elif job.proc.returncode != 0 or result is None:
            entry = {**base, "status": "failed", "exit": job.proc.returncode, "tail": _tail(job.log_path)}
            log(
                f"[pretrain] {job.name} ({job.part}) failed (exit {job.proc.returncode}); its output is in {job.log_path}"
            )
        else:
            entry = {**base, "status": "ok", **result, **base}
            entry["status"] = result.get("status", "ok")
            if entry["status"] == "stopped":
                log(f"[pretrain] {job.name} ({job.part}) stopped at the deadline ({result.get('message')})")
            elif job.part == "timed":
                log(f"[pretrain] {job.name}: DDIM sweep in {result.get('ddim_seconds', 0):.1f} s, alone on the device")
            else:
                log(
                    f"[pretrain] {job.name}: trained in {result.get('train_seconds', 0):.1f} s (from cache: "
                    f"{result.get('cached')}), final samples in {result.get('sample_seconds', 0):.1f} s, "
                    f"other results in {result.get('extra_seconds', 0):.1f} s, "
                    f"with up to {job.concurrent_max} job(s) on the device"
                )
        record(job, entry)

    # 1. training and the untimed results, `jobs` at a time
    slots_of = {"train": jobs, "timed": 1}
    stage([_Job(k, p, "train", folder / f"{k}-{p}.log") for k, p in runs], jobs)
    # 2. the timed parts (DDIM sweeps), one at a time with every core, once nothing else runs
    timed = [_Job(r["kind"], r["preset"], "timed", folder / f"{r['kind']}-{r['preset']}.timed.log")
             for r in records if r["part"] == "train" and r["status"] == "ok" and r.get("timed_part")]  # fmt: skip
    stage(timed, 1)
    if packer is not None:
        packer.add(f"pretrain {profile} jobs.jsonl", [(f"build/{profile}/pretrain/jobs.jsonl", timings)])

    failed = [r for r in records if r["status"] == "failed"]
    unfinished = [r for r in records if r["status"] in ("stopped", "not started")]
    if failed:
        raise JobsFailed(
            "pre-training failed: " + " | ".join(f"{r['job']}: exit {r['exit']}: {r['tail']}" for r in failed), records
        )
    if unfinished:
        raise StageStopped(
            f"pre-training stopped at its deadline: {', '.join(r['job'] + ' (' + r['part'] + ')' for r in unfinished)} "
            f"unfinished; their checkpoints are {'packed into ' + str(packer.out) if packer else 'in the run folders'}, "
            "and the stage run again (given them) resumes",
            records,
        )
    merged = {r["job"]: dict(r) for r in records if r["part"] == "train"}
    for r in records:
        if r["part"] == "timed":
            merged[r["job"]].update(ddim_seconds=r.get("ddim_seconds"), ddim_concurrent_max=r["concurrent_max"])
    return list(merged.values())


def _stop(procs: list[subprocess.Popen], wait: float = 10.0) -> None:
    """SIGTERM to every worker, then SIGKILL to those still running `wait` seconds later."""
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    end = time.monotonic() + wait
    for proc in procs:
        try:
            proc.wait(max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _add_session(run_dir: Path, entry: dict) -> None:
    """Append how the device was shared while this job ran to the run folder's timing-context.json
    (the label of its training and sampling times, and of the DDIM sweep's)."""
    from . import store

    if not run_dir.is_dir():
        return
    path = run_dir / "timing-context.json"
    try:
        context = json.loads(path.read_text())
    except (OSError, ValueError):
        context = {"sessions": []}
    keys = ("part", "status", "concurrent_max", "concurrent_mean", "slots", "seconds", "device", "precision", "epochs")
    context["sessions"].append({k: entry[k] for k in keys if k in entry})
    store.write_json(path, context)


# --------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m helpers.pretrain", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", required=True, choices=sorted(config.PROFILES))
    ap.add_argument(
        "--jobs", type=int, default=None, help="worker processes (default: every run at once on a GPU, one on a CPU)"
    )
    ap.add_argument("--one", metavar="KIND:PRESET", help="run one job in this process")
    ap.add_argument("--part", choices=PARTS, default="train", help="with --one: which part of the job")
    ap.add_argument("--deadline", type=float, metavar="SECONDS", help="stop the stage this many seconds from now")
    ap.add_argument("--deadline-at", type=float, metavar="T", help="with --one: the time.time() at which to stop")
    ap.add_argument("--grace", type=float, default=DEFAULT_GRACE, help="seconds past the deadline before a kill")
    ap.add_argument("--out", type=Path, help="pack every finished job into this folder (helpers.device)")
    ap.add_argument("--resume-from", type=Path, nargs="+", default=[], help="unpack these OUT folders first")
    ap.add_argument("--preflight", action="store_true", help="only check data, weights and imports")
    args = ap.parse_args(argv)
    from . import device

    if args.preflight:
        try:
            device.preflight(args.profile, out=args.out)
        except device.PreflightError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.one:
        kind, _, preset = args.one.partition(":")
        if (kind, preset) not in STUDY_RUNS:
            ap.error(f"--one {args.one!r} is not allowed; expected one of {[f'{k}:{p}' for k, p in STUDY_RUNS]}")
        result = work(kind, preset, args.profile, deadline=args.deadline_at, part=args.part)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0
    t0 = time.perf_counter()
    deadline = time.time() + args.deadline if args.deadline is not None else None
    try:
        known = device.unpack(args.resume_from) if args.resume_from else {}
        out = device.Packer(args.out, known=known) if args.out else None
        results = run(args.profile, args.jobs, out=out, deadline=deadline, grace=args.grace)
    except StageStopped as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return 3
    except (PipelineError, device.PreflightError, device.PackError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"seconds": round(time.perf_counter() - t0, 1), "jobs": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
