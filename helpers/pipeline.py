"""Headless regeneration: execute every notebook in order with papermill, then build the report.

    python -m helpers.pipeline [--profile smoke|quick|full] [--only 01_ddpm ...]

Executed copies land in build/<profile>/, written to a temporary name first so an interrupted run
never leaves a half-executed notebook under the final name. Figures land in Plots/<profile>/.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import config


def notebooks(only: list[str] | None = None) -> list[Path]:
    found = sorted(config.NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        names = {p.stem: p for p in found}
        for name in only:
            config.check_choice("notebook", name, names)
        found = [names[n] for n in only]
    return found


def check_injection(path: Path, params: dict) -> None:
    """Every injected name must be declared in the notebook's parameters cell."""
    import papermill

    declared = papermill.inspect_notebook(str(path))
    for name in params:
        if name not in declared:
            raise ValueError(f"parameter {name!r} is not declared by {path.name}; "
                             f"its parameters are {sorted(declared)}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(out_dir: Path) -> None:
    """Delete half-executed notebooks left by a pipeline that was killed (its pid is gone)."""
    for tmp in out_dir.glob(".*.running.ipynb"):
        pid = tmp.name.split(".")[-3]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def execute(path: Path, params: dict, out_dir: Path) -> Path:
    import papermill

    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / path.name
    tmp = out_dir / f".{path.stem}.{os.getpid()}.running.ipynb"
    try:
        papermill.execute_notebook(str(path), str(tmp), parameters=params, cwd=str(path.parent),
                                   kernel_name="python3", progress_bar=False)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="run_all.sh", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=None,
                    help=f"one of {sorted(config.PROFILES)}; default: full with CUDA, quick without")
    ap.add_argument("--only", nargs="+", default=None, help="run only these notebooks (e.g. 01_ddpm)")
    args = ap.parse_args(argv)

    if args.profile is None:
        name, why = config.default_profile_name()
        print(f"profile: {name} (chosen because {why})")
    else:
        name = config.profile(args.profile).name
        print(f"profile: {name} (given with --profile)")
    params = {"profile": name}
    books = notebooks(args.only)
    for book in books:
        check_injection(book, params)

    out_dir = config.BUILD_DIR / name
    if out_dir.is_dir():
        remove_stale_partials(out_dir)
    for book in books:
        t0 = time.perf_counter()
        print(f"[{book.stem}] running with {params}", flush=True)
        out = execute(book, params, out_dir)
        print(f"[{book.stem}] done in {time.perf_counter() - t0:.0f} s -> {out}", flush=True)
    print(f"figures: {config.PLOTS_DIR / name}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
