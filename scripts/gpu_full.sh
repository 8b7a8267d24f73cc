#!/usr/bin/env bash
# The full profile on a GPU machine, timed: every run of the study trained concurrently first
# (helpers.pretrain: several processes share the GPU, one per GPU when there are several), then the
# four notebooks, which load those runs and their results from the cache. Prints the training and
# sampling time of each model and the time of each notebook. The report is not built there (no
# TeX): run `./run_all.sh --profile full --only report` here on the returned results.
#
# Whatever happens (a failed job, a failed notebook, a kill by the time limit), a trap on exit
# brings back into $OUT, when it is set, at most 8 files: the whole log (gpu_full.log), the timings
# of every pre-training job that finished (pretrain-jobs.jsonl, written as each finishes), the
# timing summary (timings.txt), and tarballs of the results files, of the figures, and of the
# workers' logs with the executed notebooks (a failed one with its traceback).
#
# On a bare, offline GPU machine (its own python3; never a venv), after scripts/gpu_carry.sh here:
#   call 1: bash scripts/gpu_full.sh stage            carry: .carry/mnist .carry/inception.part1
#   call 2: bash scripts/gpu_full.sh run              carry: .whl .carry/inception.part2
# (the Inception weights, 84 MB, are more than one call can carry: the first part and MNIST wait
# in data/, which the warm machine keeps between calls). On this machine, to exercise the same path:
#   PYTHON=.venv/bin/python bash scripts/gpu_full.sh run --profile smoke
# scripts/gpu_replica.sh runs it in a copy of the tree with a replica of the GPU machine's packages.
#
# Environment: PYTHON (python3), SITE (/tmp/site: where the carried wheels are installed), OUT.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
SITE="${SITE:-/tmp/site}"
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

unpack_mnist() {
  if [ -d .carry/mnist ]; then
    mkdir -p data/MNIST/raw
    for f in .carry/mnist/*.gz; do
      out="data/MNIST/raw/$(basename "$f" .gz)"; [ -f "$out" ] || gunzip -c "$f" > "$out"
    done
  fi
}

case "$MODE" in
  stage)
    mkdir -p data/inception
    [ -f .carry/inception.part1 ] && cp .carry/inception.part1 data/inception/part1
    unpack_mnist
    ls -l data/inception data/MNIST/raw
    exit 0 ;;
  run) ;;
  *) echo "gpu_full.sh: mode '$MODE' is not allowed; expected 'stage' or 'run'" >&2; exit 2 ;;
esac

LOGS="build/$PROFILE"
mkdir -p "$LOGS"
LOG="$LOGS/gpu_full.log"
exec > >(tee "$LOG") 2>&1
t_start=$(date +%s)

summary() {
  # The timings that exist: pre-training jobs as they finished, then the notebooks' record.
  "$PY" - "$PROFILE" <<'PY' || true
import json, sys
from pathlib import Path
profile = sys.argv[1]
jobs = Path("build") / profile / "pretrain" / "jobs.jsonl"
rows = [json.loads(l) for l in jobs.read_text().splitlines() if l.strip()] if jobs.is_file() else []
print(f"{'pre-training job':<28}{'status':>8}{'wall s':>9}{'train s':>10}{'final samples s':>17}"
      f"{'other results s':>17}  device / precision")
for r in rows:
    if r.get("status") == "ok":
        print(f"{r['kind'] + ' ' + r['preset']:<28}{'ok':>8}{r['seconds']:>9.1f}{r['train_seconds']:>10.1f}"
              f"{r['sample_seconds']:>17.1f}{r['extra_seconds']:>17.1f}  {r['device']} / {r['precision']}")
    else:
        print(f"{r['job']:<28}{r.get('status', '?'):>8}{r.get('seconds', 0):>9.1f}  exit {r.get('exit')}, "
              f"see {r.get('log')}")
if not rows:
    print("(no pre-training job finished)")
rec_path = Path("results") / profile / "pipeline.json"
try:
    from helpers import results
    rec = results.load(profile, "pipeline") if rec_path.is_file() else None
except Exception as exc:  # a damaged record: say so, keep going
    print(f"pipeline record unreadable: {exc}")
    rec = None
if rec:
    pre = rec.get("pretrain") or {}
    print(f"pre-training stage: {pre.get('seconds')} s with {pre.get('jobs')} job(s)")
    for name, v in rec["notebooks"].items():
        print(f"notebook {name:<20}{v['seconds']:>8.1f} s  {v['status']}")
    print(f"pipeline wall time: {rec['wall_seconds']} s")
else:
    print("(no notebook record: the pipeline stopped before or during the first notebook)")
PY
}

collect() {
  status=$?
  set +e
  t_end=$(date +%s)
  echo "gpu_full.sh: exit status $status after $((t_end - t_start)) s (set-up included)"
  summary > "$LOGS/timings.txt" 2>&1
  cat "$LOGS/timings.txt"
  if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    cp "$LOGS/timings.txt" "$OUT/timings.txt"
    [ -f "$LOGS/pretrain/jobs.jsonl" ] && cp "$LOGS/pretrain/jobs.jsonl" "$OUT/pretrain-jobs.jsonl"
    [ -d "results/$PROFILE" ] && tar -czf "$OUT/results-$PROFILE.tar.gz" -C results "$PROFILE"
    [ -d "Plots/$PROFILE" ] && tar -czf "$OUT/plots-$PROFILE.tar.gz" -C Plots "$PROFILE"
    # Workers' logs and the executed notebooks (HTML left out: the .ipynb holds the same).
    (cd build && find "$PROFILE" \( -name '*.log' -o -name '*.ipynb' -o -name 'jobs.jsonl' \) \
       ! -name gpu_full.log -print0 |
       tar -czf "$OUT/logs-$PROFILE.tar.gz" --null -T -)
    for f in "$OUT"/*; do  # what comes back: 16 MiB a file
      if [ "$(stat -c %s "$f")" -gt $((16 * 1024 * 1024)) ]; then
        echo "gpu_full.sh: $(basename "$f") is over 16 MiB and would not come back; removed"; rm -f "$f"
      fi
    done
    ls -l "$OUT"
    sleep 0.2  # let tee write the last lines before the log is copied
    cp "$LOG" "$OUT/gpu_full.log"
  fi
  exit $status
}
trap collect EXIT

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH"
  # Installed with --target, the notebook tools' data files (nbconvert's templates, the kernel spec)
  # are under $SITE/share/jupyter, which no search path names: nbconvert would find no template.
  export JUPYTER_PATH="$SITE/share/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
unpack_mnist
if [ -f data/inception/part1 ] && [ -f .carry/inception.part2 ] && [ ! -f "$INC" ]; then
  cat data/inception/part1 .carry/inception.part2 > "$INC.tmp" && mv "$INC.tmp" "$INC"
fi
"$PY" -c 'import helpers.hardware as h, json; print("machine:", json.dumps(h.capabilities()))'
"$PY" -c 'import helpers.hardware as h; print("precision for auto:", *h.choose_precision("auto", h.pick_device("auto").type), sep=" ")'
t_setup=$(date +%s)
echo "set-up: $((t_setup - t_start)) s"
"$PY" -m helpers.pipeline --profile "$PROFILE" --pretrain ${JOBS:+--jobs "$JOBS"} \
  --only 01_ddpm 02_hyperparams 03_cold_diffusion 04_comparison
