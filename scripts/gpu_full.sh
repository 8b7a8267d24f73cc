#!/usr/bin/env bash
# The full profile on a GPU machine, timed: every run of the study trained concurrently first
# (helpers.pretrain: several processes share the GPU, one per GPU when there are several), the DDIM
# sweeps (whose point is their timings) afterwards one at a time, then the four notebooks, which load
# those runs and their results from the cache. Prints the training and sampling time of each model
# (with how many jobs shared the device meanwhile) and the time of each notebook. The report is not
# built there (no TeX): run `./run_all.sh --profile full --only report` here on the returned results.
#
# Nothing finished is lost, even when the machine's time limit SIGKILLs the whole command (no exit
# trap runs then):
# - preflight first, in seconds: MNIST, the classifier and Inception weights, every import of the
#   workers, the pipeline and the notebooks (python -m helpers.pretrain --preflight);
# - every pre-training job, every notebook and the pipeline's record are packed into $OUT the moment
#   each finishes (helpers/device.py): manifest.json, gpu_full.log and archives pack-01.tar ... ,
#   never more than 8 files, none over 16 MiB;
# - an internal deadline (--deadline, default 480 s from the start of this script, for a 600 s
#   limit) stops the workers at their next epoch boundary, packs the checkpoints of unfinished runs
#   and starts no notebook; a worker still running --grace seconds later (default 60) is killed and
#   its last checkpoint packed. Exit status 3 then. To resume: on the same (warm) machine run the
#   same command again (the run folders are still there); on a fresh one carry the returned files
#   (e.g. as .resume/) and add --resume-from .resume;
# - the exit trap only adds, as a last resort, what the packer has not (results, figures, logs) and
#   the final log.
# `python -m helpers.device unpack OUTDIR ...` puts what came back into place here.
#
# On a bare, offline GPU machine (its own python3; never a venv), after scripts/gpu_carry.sh here:
#   call 1: bash scripts/gpu_full.sh stage            carry: .carry/mnist .carry/inception.part1
#   call 2: bash scripts/gpu_full.sh run              carry: .whl .carry/inception.part2
# (the Inception weights, 84 MB, are more than one call can carry: the first part and MNIST wait
# in data/, which the warm machine keeps between calls). On this machine, to exercise the same path:
#   PYTHON=.venv/bin/python bash scripts/gpu_full.sh run --profile smoke
# scripts/gpu_replica.sh runs it in a copy of the tree with a replica of the GPU machine's packages.
#
# Options of `run`: --profile NAME (full), --jobs N, --deadline SECONDS (480), --grace SECONDS (60),
# --resume-from DIR ... Environment: PYTHON (python3), SITE (/tmp/site: where the carried wheels are
# installed), OUT.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
SITE="${SITE:-/tmp/site}"
MODE="${1:-run}"; shift || true
PROFILE=full
JOBS=
DEADLINE=480
GRACE=60
RESUME=()
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE="$2"; shift 2 ;;
    --jobs) JOBS="$2"; shift 2 ;;
    --deadline) DEADLINE="$2"; shift 2 ;;
    --grace) GRACE="$2"; shift 2 ;;
    --resume-from) shift; while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do RESUME+=("$1"); shift; done ;;
    *) echo "gpu_full.sh: unknown argument $1 (expected --profile NAME, --jobs N, --deadline SECONDS, --grace SECONDS, --resume-from DIR ...)" >&2; exit 2 ;;
  esac
done
case "$DEADLINE" in ''|*[!0-9]*) echo "gpu_full.sh: --deadline $DEADLINE is not allowed; expected whole seconds" >&2; exit 2 ;; esac
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
rows = []
if jobs.is_file():
    for line in jobs.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
print(f"{'pre-training job':<30}{'status':>12}{'wall s':>9}{'train s':>10}{'final samples s':>17}"
      f"{'other s':>9}{'jobs at once':>18}  device / precision")
for r in rows:
    name = r.get("job", "?") + ("" if r.get("part", "train") == "train" else " (DDIM)")
    at_once = f"{r.get('concurrent_max', '?')} (mean {r.get('concurrent_mean', '?')})"
    if r.get("status") == "ok" and r.get("part") == "timed":
        print(f"{name:<30}{'ok':>12}{r['seconds']:>9.1f}{'':>10}{'':>17}{r.get('ddim_seconds', 0):>9.1f}{at_once:>18}")
    elif r.get("status") == "ok":
        print(f"{name:<30}{'ok':>12}{r['seconds']:>9.1f}{r.get('train_seconds', 0):>10.1f}"
              f"{r.get('sample_seconds', 0):>17.1f}{r.get('extra_seconds', 0):>9.1f}{at_once:>18}"
              f"  {r.get('device')} / {r.get('precision')}")
    else:
        why = r.get("stopped_in") or (f"exit {r.get('exit')}" if "exit" in r else "")
        print(f"{name:<30}{r.get('status', '?'):>12}{r.get('seconds', 0):>9.1f}  {why}, see {r.get('log')}")
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
    print(f"pre-training stage: {pre.get('seconds')} s with {pre.get('jobs')} job(s), {pre.get('status')}")
    for name, v in rec["notebooks"].items():
        print(f"notebook {name:<20}{v['seconds']:>8.1f} s  {v['status']}  {v.get('reason', '')}")
    print(f"pipeline wall time: {rec['wall_seconds']} s")
else:
    print("(no notebook record: the pipeline stopped before or during the first notebook)")
PY
}

collect() {
  # The last resort: the packer has already put every finished job into $OUT; this adds the summary
  # to the log, packs what the packer has not (results, figures, logs), and copies the final log.
  status=$?
  set +e
  t_end=$(date +%s)
  echo "gpu_full.sh: exit status $status after $((t_end - t_start)) s (set-up included)"
  summary
  if [ -n "${OUT:-}" ]; then
    "$PY" -m helpers.device leftovers --out "$OUT" --profile "$PROFILE" --log "$LOG"
    "$PY" -m helpers.device verify "$OUT"
    ls -l "$OUT"
    sleep 0.2  # let tee write the last lines before the log is copied
    cp "$LOG" "$OUT/.gpu_full.log.tmp" && mv "$OUT/.gpu_full.log.tmp" "$OUT/gpu_full.log"
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
OUT_ARGS=()
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  OUT_ARGS=(--out "$OUT" --out-log "$LOG")
fi
# Preflight: data, weights and every import, in seconds, before any worker starts.
"$PY" -m helpers.pretrain --profile "$PROFILE" --preflight
t_setup=$(date +%s)
echo "set-up and preflight: $((t_setup - t_start)) s"
left=$((DEADLINE - (t_setup - t_start)))
if [ "$left" -lt 1 ]; then echo "gpu_full.sh: the deadline ($DEADLINE s) passed during set-up" >&2; exit 3; fi
"$PY" -m helpers.pipeline --profile "$PROFILE" --pretrain ${JOBS:+--jobs "$JOBS"} \
  --only 01_ddpm 02_hyperparams 03_cold_diffusion 04_comparison \
  --deadline "$left" --grace "$GRACE" "${OUT_ARGS[@]}" ${RESUME[@]:+--resume-from "${RESUME[@]}"}
