#!/usr/bin/env bash
# A rehearsal, on this CPU, of scripts/gpu_full.sh on the GPU machine: a venv with only the packages
# that machine has (docs: the device's KINDS.md; no notebook tools), the wheels gpu_carry.sh prepares,
# a copy of the working tree as the device receives it (tracked and untracked-not-ignored files,
# no data/, runs/ or .venv), the two calls (stage, then run with --profile smoke) in that copy,
# and checks on what comes back in $OUT (scripts/replica_check.py): at most 8 files of at most
# 16 MiB, the manifest and the log, every packed file verified, one training job per run of the
# profile's study and one timed DDIM job per run with an EMA (counted from helpers/study.py), their
# logs and checkpoints, the timings per model and per notebook, the results and the figures. Then a
# run that fails at once must still bring back its log.
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
"$RPY" scripts/replica_check.py "$DEV" "$PROFILE" "$rc" "$rc_fail"
say "done"
