#!/usr/bin/env bash
# A rehearsal, on this CPU, of scripts/gpu_full.sh on the GPU machine: a venv with only the packages
# that machine has (docs: the device's KINDS.md; no notebook tools), the wheels gpu_carry.sh prepares,
# a copy of the working tree as the device receives it (tracked and untracked-not-ignored files,
# no data/, runs/ or .venv), the two calls (stage, then run with --profile smoke) in that copy,
# and checks on what comes back in $OUT: the log, the timings per model and per notebook, the
# results, the figures tarball, at most 8 files of at most 16 MiB. Then a run that fails at once
# must still bring back its log and timings.
#
#   bash scripts/gpu_replica.sh            # about 5 minutes once the cache is built
#
# Differences from the GPU machine, by necessity: Python 3.11 and torch 2.14.1 (the builds on this
# workplace's disk) instead of 3.12 and 2.11; no GPU, so the CPU path of the same code runs.
# Cache (REPLICA_CACHE, default ~/.cache/diffusion-gpu-replica): the venv and the wheels, rebuilt
# only when their package lists change. KEEP=1 keeps the device copy for inspection.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CACHE="${REPLICA_CACHE:-$HOME/.cache/diffusion-gpu-replica}"
BASE_PY="${REPLICA_BASE_PYTHON:-$(readlink -f "$ROOT/.venv/bin/python")}"
STUDY_PY="${PYTHON:-$ROOT/.venv/bin/python}"
PROFILE="${REPLICA_PROFILE:-smoke}"
# What the GPU machine has of what the study imports (its image's list), at this disk's torch.
PACKAGES="torch==2.14.1 torchvision==0.29.1 torchmetrics==1.9.0 numpy==2.4.6 scipy==1.17.1 pandas==3.1.1
matplotlib==3.11.2 seaborn==0.13.2 tqdm==4.70.1 PyYAML==6.0.4 pillow jinja2 markupsafe pygments packaging
psutil requests click attrs aiohttp certifi charset-normalizer idna urllib3 six python-dateutil
typing-extensions anyio httpx"
ABSENT="papermill nbclient nbformat ipykernel ipywidgets nbconvert jupyter_client jupyter_core"
t0=$(date +%s)
say() { echo "[replica $(( $(date +%s) - t0 )) s] $*"; }

# 1. The venv (cached).
VENV="$CACHE/venv"
stamp="$(echo "$PACKAGES" | tr -s ' \n' ' ') | $("$BASE_PY" -c 'import sys; print(sys.version.split()[0])')"
if [ -f "$VENV/.stamp" ] && [ "$(cat "$VENV/.stamp")" = "$stamp" ]; then
  say "venv: reusing $VENV"
else
  say "venv: building $VENV (once; torch comes from this workplace's disk)"
  rm -rf "$VENV" && mkdir -p "$CACHE"
  "$BASE_PY" -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install --quiet $PACKAGES
  echo "$stamp" > "$VENV/.stamp"
fi
RPY="$VENV/bin/python"
PYVER="$("$RPY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
"$RPY" - $ABSENT <<'PY'
import importlib.util, sys
present = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is not None]
if present:
    sys.exit(f"the replica venv must not have {present}: the GPU machine has none of them")
import torch, torchmetrics
print(f"replica: python {sys.version.split()[0]}, torch {torch.__version__}, torchmetrics {torchmetrics.__version__}; "
      f"no {', '.join(sys.argv[1:])}")
PY

# 2. What the calls carry, prepared the way gpu_carry.sh does it for the GPU machine, for this Python.
say "gpu_carry.sh (wheels for CPython $PYVER)"
PYTHON="$STUDY_PY" CARRY_PYTHON_VERSION="$PYVER" WHL_DIR="$CACHE/whl-cp$PYVER" CARRY_DIR="$CACHE/carry" \
  bash scripts/gpu_carry.sh

# 3. The device: a copy of the tree, as the device receives it.
DEV="$(mktemp -d "${TMPDIR:-/tmp}/gpu-replica.XXXXXX")"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$DEV"' EXIT
mkdir -p "$DEV/repo" "$DEV/out1" "$DEV/out2" "$DEV/out3"
git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$DEV/repo"
device() {  # device OUT CARRIED... -- COMMAND: one call, with only its carried paths present
  local out="$1"; shift
  rm -rf "$DEV/repo/.whl" "$DEV/repo/.carry"; mkdir -p "$DEV/repo/.carry"
  while [ "$1" != "--" ]; do
    case "$1" in
      whl) cp -r "$CACHE/whl-cp$PYVER" "$DEV/repo/.whl" ;;
      *) cp -r "$CACHE/carry/$1" "$DEV/repo/.carry/$1" ;;
    esac
    shift
  done
  shift
  (cd "$DEV/repo" && env -u PYTHONPATH -u VIRTUAL_ENV -u DIFFUSION_DATA_DIR -u DIFFUSION_RUNS_DIR \
     -u DIFFUSION_PLOTS_DIR -u DIFFUSION_BUILD_DIR -u DIFFUSION_FRESH -u JUPYTER_PATH \
     PIP_NO_INDEX=1 PIP_CONFIG_FILE=/dev/null OUT="$out" SITE="$DEV/site" PYTHON="$RPY" "$@")
}
say "call 1: stage"
device "$DEV/out1" mnist inception.part1 -- bash scripts/gpu_full.sh stage > "$DEV/stage.log" 2>&1 || {
  cat "$DEV/stage.log"; exit 1; }
say "call 2: run --profile $PROFILE"
set +e
device "$DEV/out2" whl inception.part2 -- bash scripts/gpu_full.sh run --profile "$PROFILE"
rc=$?
say "call 3: a run that fails at once (bad --jobs): its log and timings must come back too"
device "$DEV/out3" whl inception.part2 -- bash scripts/gpu_full.sh run --profile "$PROFILE" --jobs 0 \
  > "$DEV/fail.log" 2>&1
rc_fail=$?
set -e

# 4. What came back.
say "checking what came back"
"$RPY" - "$DEV" "$PROFILE" "$rc" "$rc_fail" <<'PY'
import json, sys, tarfile
from pathlib import Path
dev, profile, rc, rc_fail = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
problems = []
def check(ok, what):
    print(("  ok   " if ok else "  FAIL ") + what)
    ok or problems.append(what)
out = dev / "out2"
files = sorted(p.name for p in out.iterdir())
print(f"$OUT of the run: {files}")
check(rc == 0, f"gpu_full.sh run exited 0 (got {rc})")
check(len(files) <= 8 and all((out / f).stat().st_size <= 16 << 20 for f in files), "at most 8 files of at most 16 MiB")
for name in ("gpu_full.log", "timings.txt", "pretrain-jobs.jsonl", f"results-{profile}.tar.gz",
             f"plots-{profile}.tar.gz", f"logs-{profile}.tar.gz"):
    check((out / name).is_file(), f"{name} came back")
log = (out / "gpu_full.log").read_text() if (out / "gpu_full.log").is_file() else ""
check("Traceback" not in log and "error:" not in log, "no traceback or error in the log")
jobs = [json.loads(l) for l in (out / "pretrain-jobs.jsonl").read_text().splitlines()] if (out / "pretrain-jobs.jsonl").is_file() else []
check(len(jobs) == 8 and all(j["status"] == "ok" and j["train_seconds"] > 0 for j in jobs), "8 pre-training jobs timed, all ok")
timings = (out / "timings.txt").read_text() if (out / "timings.txt").is_file() else ""
books = ("01_ddpm", "02_hyperparams", "03_cold_diffusion", "04_comparison")
check(all(f"notebook {b}" in timings for b in books) and "pipeline wall time" in timings, "timings per model and per notebook")
def names(tar):
    try:
        with tarfile.open(out / tar) as t:
            return t.getnames()
    except (OSError, tarfile.TarError):
        return []
res = names(f"results-{profile}.tar.gz")
check(all(f"{profile}/{b}.json" in res for b in books) and f"{profile}/pipeline.json" in res, "results files of every notebook and pipeline.json")
if f"{profile}/pipeline.json" in res:
    with tarfile.open(out / f"results-{profile}.tar.gz") as t:
        rec = json.load(t.extractfile(f"{profile}/pipeline.json"))
    check(all(rec["notebooks"][b]["status"] == "ok" for b in books), "every notebook ran ok")
pngs = [n for n in names(f"plots-{profile}.tar.gz") if n.endswith(".png")]
check(len(pngs) >= 20, f"figures tarball ({len(pngs)} PNGs)")
html = sorted(p.name for p in (dev / "repo" / "build" / profile).glob("*.html"))
check(len(html) == 4, f"HTML of every notebook exported with the carried nbconvert ({html})")
logs = names(f"logs-{profile}.tar.gz")
check(sum(n.endswith(".ipynb") for n in logs) == 4 and sum(n.endswith(".log") for n in logs) == 8,
      "executed notebooks and the 8 workers' logs")
fail = dev / "out3"
fails = sorted(p.name for p in fail.iterdir())
check(rc_fail != 0 and "gpu_full.log" in fails and "timings.txt" in fails,
      f"a failing run exits non-zero ({rc_fail}) and still brings back its log and timings ({fails})")
flog = (fail / "gpu_full.log").read_text() if (fail / "gpu_full.log").is_file() else ""
check("jobs" in flog and "exit status" in flog, "the failing run's log says why and with which status")
print(f"{'replica: all checks passed' if not problems else 'replica: FAILED: ' + '; '.join(problems)}")
sys.exit(1 if problems else 0)
PY
say "done"
