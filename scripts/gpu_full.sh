#!/usr/bin/env bash
# The full profile on a GPU machine, timed: every run of the study trained concurrently first
# (helpers.pretrain: several processes share the GPU, one per GPU when there are several), then the
# four notebooks, which load those runs and their results from the cache. Prints the training and
# sampling time of each model and the time of each notebook; copies the results files and the
# figures to $OUT when it is set. The report is not built there (no TeX): run
# `./run_all.sh --profile full --only report` here on the returned results.
#
# On a bare, offline GPU machine (its own python3; never a venv), after scripts/gpu_carry.sh here:
#   call 1: bash scripts/gpu_full.sh stage            carry: .carry/inception.part1
#   call 2: bash scripts/gpu_full.sh run              carry: .whl .carry/mnist .carry/inception.part2
# (the Inception weights, 84 MB, are more than one call can carry: the first half waits in data/,
# which the warm machine keeps between calls). On this machine, to exercise the same path:
#   PYTHON=.venv/bin/python bash scripts/gpu_full.sh run --profile smoke
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
MODE="${1:-run}"; shift || true
PROFILE=full
JOBS=
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE="$2"; shift 2 ;;
    --jobs) JOBS="$2"; shift 2 ;;
    *) echo "gpu_full.sh: unknown argument $1 (expected --profile NAME, --jobs N)" >&2; exit 2 ;;
  esac
done
INC=data/inception/fid_inception_v3_default_1.pt
case "$MODE" in
  stage)
    mkdir -p data/inception && cp .carry/inception.part1 data/inception/part1 && ls -l data/inception
    exit 0 ;;
  run) ;;
  *) echo "gpu_full.sh: mode '$MODE' is not allowed; expected 'stage' or 'run'" >&2; exit 2 ;;
esac
t_start=$(date +%s)
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -d .carry/mnist ]; then
  mkdir -p data/MNIST/raw
  for f in .carry/mnist/*.gz; do
    out="data/MNIST/raw/$(basename "$f" .gz)"; [ -f "$out" ] || gunzip -c "$f" > "$out"
  done
fi
if [ -f data/inception/part1 ] && [ -f .carry/inception.part2 ] && [ ! -f "$INC" ]; then
  cat data/inception/part1 .carry/inception.part2 > "$INC.tmp" && mv "$INC.tmp" "$INC"
fi
"$PY" -c 'import helpers.hardware as h, json; print("machine:", json.dumps(h.capabilities()))'
t_setup=$(date +%s)
echo "set-up: $((t_setup - t_start)) s"
"$PY" -m helpers.pipeline --profile "$PROFILE" --pretrain ${JOBS:+--jobs "$JOBS"} \
  --only 01_ddpm 02_hyperparams 03_cold_diffusion 04_comparison
t_end=$(date +%s)
"$PY" - "$PROFILE" <<'PY'
import json, sys
from helpers import results
rec = results.load(sys.argv[1], "pipeline")
pre = rec.get("pretrain") or {}
print(f"pre-training stage: {pre.get('seconds')} s with {pre.get('jobs')} job(s)")
print(f"{'model':<28}{'train s':>10}{'final samples s':>17}{'other results s':>17}  device / precision")
for r in pre.get("runs", []):
    print(f"{r['kind'] + ' ' + r['preset']:<28}{r['train_seconds']:>10.1f}{r['sample_seconds']:>17.1f}"
          f"{r['extra_seconds']:>17.1f}  {r['device']} / {r['precision']}")
for name, v in rec["notebooks"].items():
    print(f"notebook {name:<20}{v['seconds']:>8.1f} s  {v['status']}")
print(f"pipeline wall time: {rec['wall_seconds']} s")
PY
echo "total (set-up included): $((t_end - t_start)) s"
if [ -n "${OUT:-}" ]; then
  cp results/"$PROFILE"/*.json "$OUT"/ 2>/dev/null || true
  tar -czf "$OUT/plots-$PROFILE.tar.gz" -C Plots "$PROFILE"
fi
