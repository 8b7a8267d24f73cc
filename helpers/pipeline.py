"""Headless regeneration: pre-train (optional), execute every notebook with papermill, export HTML,
record the run, then build the report.

    python -m helpers.pipeline [--profile NAME] [--only NAME ...] [-p NAME VALUE ...] [--fresh]
                               [--jobs N|auto] [--pretrain]
                               [--out DIR [--out-log FILE]] [--deadline SECONDS [--grace SECONDS]]
                               [--resume-from DIR ...]

Executed notebooks land in build/<profile>/ (a failed one, with its traceback, in
build/<profile>/failed/), figures in Plots/<profile>/, numbers in results/<profile>/ and the run's
record in results/<profile>/pipeline.json.

On a lent machine (scripts/gpu_full.sh): `--out` packs every finished pre-training job, notebook and
the record into that folder the moment each finishes (helpers.device); `--deadline` stops the
pre-training workers at their next epoch boundary past it and starts no notebook after it (the stopped
runs' checkpoints are packed; exit status 3); `--resume-from` puts what earlier OUT folders brought back
into place first. A failed pre-training job does not stop the others: the notebooks that do not need
its run still run, those that do are skipped, the record is written, and the pipeline then fails with
an error naming the job and the end of its log.

Checking the arguments (`validate`) needs only the standard library, so run_all.sh calls
`python3 -m helpers.pipeline --check-args ...` before any environment exists.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import config, study
from .errors import PipelineError, Stopped

REPORT = "report"  # the name `--only` gives the report


# Kernel and client talk over local TCP; with "auto" the kernel manager gives them CurveZMQ keys (the
# python3 kernelspec supports them), so the traffic is encrypted and ipykernel no longer warns about it
# once per notebook.
KERNEL_CONFIG = {"KernelManager": {"transport_encryption": "auto"}}


class NotebookFailed(PipelineError):
    """A notebook raised; the message names it, the cell and where its executed copy is."""


# --------------------------------------------------------------------------- arguments (stdlib only)
def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="./run_all.sh",
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Regenerate every figure, table and the report of the study.\n"
        "`./run_all.sh test [PYTEST ARGS ...]` runs the test suite instead.",
        epilog="examples:\n  ./run_all.sh --profile smoke\n  ./run_all.sh --only 01_ddpm -p preset testing\n"
        "  ./run_all.sh --only 01_ddpm -p overrides \"{'lr': 1e-3}\" --fresh\n"
        "  ./run_all.sh --only report",
    )
    ap.add_argument(
        "--profile", metavar="NAME", help=f"one of {sorted(config.PROFILES)}; default: full with CUDA, quick without"
    )
    ap.add_argument(
        "--only",
        nargs="*",
        metavar="NAME",
        help=f"run only these notebooks (file stems such as 01_ddpm) and/or {REPORT!r}; "
        "the report is built only when it is named here or --only is not given",
    )
    ap.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="set a parameter of every selected notebook that declares it (papermill-style; "
        "VALUE is a Python literal or else a plain string); repeatable",
    )
    ap.add_argument(
        "--fresh",
        action="store_true",
        help="ignore cached runs and results: retrain and recompute what the notebooks touch",
    )
    ap.add_argument(
        "--jobs",
        default="auto",
        metavar="N",
        help="training processes of the pre-training stage: an integer >= 1 or 'auto' "
        "(1 on a CPU, where the stage is skipped; on CUDA what the GPU holds)",
    )
    ap.add_argument(
        "--pretrain", action="store_true", help="train every run of the study before the notebooks even with --jobs 1"
    )
    ap.add_argument(
        "--out",
        metavar="DIR",
        help="pack every finished pre-training job, notebook and the record into DIR as each finishes "
        "(archives and a manifest within the limits of what a lent machine brings back; helpers/device.py)",
    )
    ap.add_argument("--out-log", metavar="FILE", help="with --out: a log file copied into DIR after each addition")
    ap.add_argument(
        "--deadline",
        metavar="SECONDS",
        help="seconds from now after which the pre-training workers stop at their next epoch boundary "
        "(their checkpoints kept and packed) and no notebook starts",
    )
    ap.add_argument(
        "--grace",
        default="60",
        metavar="SECONDS",
        help="with --deadline: seconds past it before a worker that has not stopped is killed (default 60)",
    )
    ap.add_argument(
        "--resume-from",
        nargs="+",
        default=[],
        metavar="DIR",
        help="OUT folders of earlier runs: unpack them first (finished runs load, stopped ones resume)",
    )
    ap.add_argument("--check-args", action="store_true", help=argparse.SUPPRESS)
    return ap


def notebook_paths() -> list[Path]:
    return sorted(config.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def declared_parameters(path: Path) -> dict[str, Any]:
    """Names and default values of the notebook's cell tagged "parameters" (what papermill injects into)."""
    nb = json.loads(Path(path).read_text())
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            out = {}
            for node in ast.parse(src).body:
                target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
                if isinstance(target, ast.Name) and node.value is not None:
                    out[target.id] = ast.literal_eval(node.value)
            return out
    return {}


def parse_value(text: str) -> Any:
    """`-p NAME VALUE`: a Python literal when VALUE is one (3, 1e-3, None, [1, 2], {'lr': 1e-3}), else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def validate(argv: list[str] | None = None) -> dict:
    """Check every argument against the profiles and the notebooks; ValueError names the bad one.

    Returns the plan: profile (None: chosen later for this machine), notebooks, injected parameters,
    whether the report is built, jobs ('auto' or an int), fresh, pretrain.
    """
    args = parser().parse_args(argv)
    if args.profile is not None:
        try:
            config.profile(args.profile)
        except ValueError as exc:
            raise ValueError(f"--profile: {exc}") from None
    found = {p.stem: p for p in notebook_paths()}
    allowed = sorted(found) + [REPORT]
    if args.only is not None:
        if not args.only:
            raise ValueError(f"--only needs at least one name; expected some of {allowed}")
        for name in args.only:
            if name not in allowed:
                raise ValueError(f"--only: {name!r} is not a notebook or {REPORT!r}; expected some of {allowed}")
    books = [p for name, p in found.items() if args.only is None or name in args.only]
    report = args.only is None or REPORT in args.only

    params = {}
    for name, text in args.parameter:
        if name == "profile":
            raise ValueError("-p profile: give the profile with --profile")
        declared = set().union(*(study.notebook(b.stem).names() for b in books)) if books else set()
        if name not in declared:
            raise ValueError(
                f"-p {name}: no selected notebook ({', '.join(b.stem for b in books) or 'none'}) "
                f"declares it; expected one of {sorted(declared - {'profile'})}"
            )
        params[name] = parse_value(text)

    seconds = {}
    for name, text, low_open in (("deadline", args.deadline, True), ("grace", args.grace, False)):
        if text is None:
            seconds[name] = None
            continue
        try:
            seconds[name] = float(text)
        except ValueError:
            seconds[name] = None
        if seconds[name] is None or not (seconds[name] > 0 if low_open else seconds[name] >= 0):
            raise ValueError(
                f"--{name}={text!r} is not allowed; expected a number of seconds {'> 0' if low_open else '>= 0'}"
            )
    if args.out_log and not args.out:
        raise ValueError("--out-log needs --out")
    jobs = args.jobs
    if jobs != "auto":
        if not jobs.isdigit() or int(jobs) < 1:
            raise ValueError(f"--jobs={jobs!r} is not allowed; expected 'auto' or an integer >= 1")
        jobs = int(jobs)
    return {
        "profile": args.profile,
        "books": books,
        "params": params,
        "report": report,
        "jobs": jobs,
        "fresh": args.fresh,
        "pretrain": args.pretrain,
        "out": args.out,
        "out_log": args.out_log,
        "deadline": seconds["deadline"],
        "grace": seconds["grace"],
        "resume_from": args.resume_from,
        "check_only": args.check_args,
    }


def book_parameters(book: Path, profile: str | None, params: dict) -> dict:
    """What papermill injects into `book`: the profile and the -p names it declares."""
    declared = study.notebook(book.stem).names()
    return {"profile": profile, **{k: v for k, v in params.items() if k in declared}}


def check_values(books: list[Path], profile: str | None, params: dict) -> None:
    """Validate each notebook's parameters as the notebook itself will (its defaults updated by the
    injected values), so a bad value stops here instead of after earlier notebooks ran."""
    from .study import check_params

    for book in books:
        try:
            check_params(book.stem, book_parameters(book, profile, params))
        except ValueError as exc:
            raise ValueError(f"{book.name}: {exc}") from None


# --------------------------------------------------------------------------- running
def remove_stale_temporaries(profile: str) -> None:
    """Half-written files of a killed run (their process is gone)."""
    from . import results, store

    for folder in (config.BUILD_DIR / profile, config.PLOTS_DIR / profile, results.results_dir() / profile):
        store.remove_stale_temporaries(folder, recursive=True)


def execute(book: Path, params: dict, out_dir: Path) -> Path:
    """Run `book` into out_dir/<name> (atomically); on failure keep the executed copy in out_dir/failed/."""
    import papermill
    from traitlets.config import Config

    from . import store

    out, failed = out_dir / book.name, out_dir / "failed" / book.name
    with store.atomic_path(out) as tmp:
        try:
            papermill.execute_notebook(
                str(book),
                str(tmp),
                parameters=params,
                cwd=str(book.parent),
                kernel_name="python3",
                progress_bar=False,
                config=Config(KERNEL_CONFIG),
            )
        except Exception as exc:
            where = "its kernel stopped"
            if isinstance(exc, papermill.PapermillExecutionError):
                first = next((line for line in exc.source.splitlines() if line.strip()), "")
                where = f"cell In [{exc.exec_count}] ({first[:60]!r}) raised {exc.ename}: {exc.evalue}"
            kept = ""
            if tmp.is_file():
                failed.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, failed)
                kept = f"; the executed copy with the traceback is {failed}"
            raise NotebookFailed(f"notebook {book.stem} failed: {where}{kept}") from exc
    failed.unlink(missing_ok=True)  # an earlier failure is fixed
    return out


def export_html(notebook: Path) -> Path:
    from nbconvert import HTMLExporter

    from . import store

    body, _ = HTMLExporter().from_filename(str(notebook))
    return store.atomic_write_text(notebook.with_suffix(".html"), body)


def write_record(profile: str, started: float, timings: dict, params: dict, pretrain: dict | None) -> Path:
    """results/<profile>/pipeline.json; notebooks not run this time keep their earlier entries."""
    import torch

    from . import hardware, results, runs, store

    try:
        earlier = results.load(profile, "pipeline").get("notebooks", {})
    except (OSError, AttributeError, store.CorruptFile):
        earlier = {}
    caps = hardware.capabilities()
    precision, reason = runs.precision_for(
        config.profile(profile), params.get("device", "auto"), params.get("precision", "profile")
    )
    stamp = lambda t: datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")  # noqa: E731
    finished = time.time()
    return results.save(
        profile,
        "pipeline",
        {
            "started": stamp(started),
            "finished": stamp(finished),
            "wall_seconds": round(finished - started, 1),
            "notebooks": {**earlier, **timings},
            "pretrain": pretrain,
            "git": config.git_state(),
            "device": caps.get("gpu") or caps["cpu"],
            "precision": precision,
            "precision_reason": reason,
            "sampling_batch": hardware.sampling_batch(params.get("device", "auto")),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
    )


def _pretrain_module():
    # Looked up in this package's own folder: an editable install of another checkout would
    # otherwise answer for a module this one lacks.
    if not Path(__file__).with_name("pretrain.py").is_file():
        raise PipelineError(
            "the pre-training stage needs helpers/pretrain.py, which this checkout lacks; "
            "run without --pretrain and with --jobs 1"
        )
    return importlib.import_module(f"{__package__}.pretrain")


def resolve_jobs(jobs: str | int) -> int:
    if jobs != "auto":
        return jobs
    import torch

    return _pretrain_module().default_jobs() if torch.cuda.is_available() else 1


def build_report(profile: str) -> None:
    if not (config.ROOT / "helpers" / "report.py").is_file():
        raise PipelineError("the report needs helpers/report.py, which this checkout lacks")
    print(f"[report] building report/{profile}/report.pdf", flush=True)
    r = subprocess.run([sys.executable, "-m", "helpers.report", "--profile", profile], cwd=config.ROOT)
    if r.returncode != 0:
        raise PipelineError(
            f"the report build failed (python -m helpers.report --profile {profile}, exit status {r.returncode})"
        )


def notebook_runs(name: str, params: dict | None = None) -> set[str]:
    """The runs of the study ("kind:preset") that notebook `name` shows with `params` (the contract's
    defaults for the rest): the presets its parameters name."""
    book = study.notebook(name)
    values = {**book.defaults(), **(params or {})}
    out = set()
    for p in book.params:
        value = values.get(p.name)
        if not value:
            continue
        if p.allowed.startswith("ddpm_preset"):
            out.add(f"ddpm:{value}")
        elif p.allowed in ("cold_preset", "cold_preset_or_none"):
            out.add(f"cold:{value}")
        elif p.allowed == "cold_presets":
            out.update(f"cold:{v}" for v in value)
    return out


def notebook_outputs(name: str, book: str, since: float) -> list[Path]:
    """What notebook `book` of profile `name` wrote (for the OUT folder): its executed copy (or the
    failed one), its results file, the figures and real-data rows written since `since`."""
    from . import results

    found = [config.BUILD_DIR / name / f"{book}.ipynb", config.BUILD_DIR / name / "failed" / f"{book}.ipynb"]
    found.append(results.results_dir() / name / f"{book}.json")
    for folder, pattern in ((config.PLOTS_DIR / name, "*"), (config.RUNS_DIR, "real-data-*.json")):
        if folder.is_dir():
            found += [
                p
                for p in sorted(folder.glob(pattern))
                if p.is_file() and not p.name.startswith(".") and p.stat().st_mtime >= since - 1
            ]
    return [p for p in found if p.is_file()]


def _pretrain(name: str, jobs: int, packer, deadline: float | None, grace: float) -> tuple[dict, Exception | None]:
    """Run the pre-training stage; return its record and the error that ended it (a failed job or
    the deadline), or None."""
    extra = {}
    if packer is not None:
        extra["out"] = packer
    if deadline is not None:
        extra.update(deadline=deadline, grace=grace)
    print(f"[pretrain] training every run of the study with {jobs} process(es)", flush=True)
    t0 = time.perf_counter()
    error = None
    try:
        records = _pretrain_module().run(name, jobs, log=print, **extra)
    except PipelineError as exc:
        records = getattr(exc, "records", None)
        if records is None:
            raise
        error = exc
    status = "ok" if error is None else "stopped" if isinstance(error, Stopped) else "failed"
    return {"jobs": jobs, "seconds": round(time.perf_counter() - t0, 1), "status": status, "runs": records}, error


def run(plan: dict) -> None:
    started = time.time()
    if plan["profile"] is None:
        name, why = config.default_profile_name()
        print(f"profile: {name} (chosen because {why})")
    else:
        name = plan["profile"]
        print(f"profile: {name} (given with --profile)")
    check_values(plan["books"], name, plan["params"])
    remove_stale_temporaries(name)
    deadline = started + plan["deadline"] if plan.get("deadline") is not None else None
    packer = None
    if plan.get("resume_from") or plan.get("out"):
        from . import device

        known = device.unpack([Path(p) for p in plan["resume_from"]]) if plan.get("resume_from") else {}
        if plan.get("out"):
            packer = device.Packer(Path(plan["out"]), log_file=plan.get("out_log"), known=known)

    # Kernels import this checkout's helpers, whatever else an active environment has installed.
    os.environ["PYTHONPATH"] = config.pythonpath_with_root()
    if plan["fresh"]:
        # a token new for this run: each cached result is recomputed once under it (config.fresh_token)
        os.environ["DIFFUSION_FRESH"] = f"{time.time_ns()}-{os.getpid()}"
    pretrained, stage_error, unfinished = None, None, set()
    if plan["books"]:
        jobs = resolve_jobs(plan["jobs"])
        if (jobs > 1 or plan["pretrain"]) and plan["params"]:
            # The stage trains the study's runs with the notebooks' defaults; -p may ask for others.
            print(
                f"[pretrain] skipped: -p {', '.join(sorted(plan['params']))} may change which runs the "
                "notebooks need, so they train them themselves",
                flush=True,
            )
        elif jobs > 1 or plan["pretrain"]:
            pretrained, stage_error = _pretrain(name, jobs, packer, deadline, plan.get("grace") or 0.0)
            records = pretrained["runs"] if isinstance(pretrained["runs"], list) else []
            unfinished = {r["job"] for r in records if r.get("status") != "ok"}
            # --fresh is spent: the notebooks must load these new runs, not train them again (results
            # computed from them are keyed by their weights, so nothing stale is reused).
            os.environ.pop("DIFFUSION_FRESH", None)

    out_dir, timings = config.BUILD_DIR / name, {}
    try:
        for book in plan["books"]:
            params = book_parameters(book, name, plan["params"])
            missing = sorted(notebook_runs(book.stem, plan["params"]) & unfinished)
            why = (
                "the deadline has passed"
                if isinstance(stage_error, Stopped) or (deadline is not None and time.time() >= deadline)
                else f"it needs {', '.join(missing)}, which pre-training did not finish"
                if missing
                else None
            )
            if why:
                timings[book.stem] = {"seconds": 0.0, "status": "skipped", "reason": why}
                print(f"[{book.stem}] skipped: {why}", flush=True)
                continue
            print(f"[{book.stem}] running with {params}", flush=True)
            t0 = time.perf_counter()
            t0_wall = time.time()
            seconds = lambda t0=t0: round(time.perf_counter() - t0, 1)  # noqa: E731
            try:
                out = execute(book, params, out_dir)
            except NotebookFailed:
                timings[book.stem] = {"seconds": seconds(), "status": "failed"}
                raise
            finally:
                if packer is not None and book.stem in timings:
                    packer.add(f"notebook {book.stem}", notebook_outputs(name, book.stem, t0_wall), status="failed")
            timings[book.stem] = {"seconds": seconds(), "status": "ok"}
            export_html(out)
            if packer is not None:
                packer.add(f"notebook {book.stem}", notebook_outputs(name, book.stem, t0_wall), **timings[book.stem])
            print(f"[{book.stem}] done in {timings[book.stem]['seconds']:.0f} s -> {out}", flush=True)
    finally:
        if timings or pretrained:
            record = write_record(name, started, timings, plan["params"], pretrained)
            print(f"record: {record}")
            if packer is not None:
                packer.add("pipeline record", [record], status=pretrained["status"] if pretrained else "ok")
    if stage_error is not None:
        raise stage_error
    late = [b for b, t in timings.items() if t.get("reason") == "the deadline has passed"]
    if late:
        raise Stopped(f"the deadline passed before notebook(s) {', '.join(late)} could start; run again to finish")
    if plan["books"]:
        print(f"figures: {config.PLOTS_DIR / name}")
    if plan["report"]:
        build_report(name)


def main(argv: list[str] | None = None) -> int:
    try:
        plan = validate(argv)
        if plan["check_only"]:
            try:  # values too, where this Python can import the checks (they need torch today)
                check_values(plan["books"], plan["profile"], plan["params"])
            except ModuleNotFoundError as exc:
                if (exc.name or "").startswith("helpers"):
                    raise
            print(REPORT if plan["report"] else "")
            return 0
        run(plan)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Stopped as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return 3
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
