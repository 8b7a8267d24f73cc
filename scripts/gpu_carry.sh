#!/usr/bin/env bash
# Prepare, on this machine, what scripts/gpu_full.sh needs on a bare, offline GPU machine whose own
# python3 (3.12) has torch, torchmetrics, matplotlib, seaborn, pandas, scipy and tqdm but not the
# notebook tools, then add up what each of the two calls carries against the 64 MiB a call may carry
# (the working tree that travels plus the carried paths) and refuse a plan over it.
#
#   .whl/    wheels of papermill, nbclient, nbformat, nbconvert, ipykernel, ipywidgets and what they
#            need that the GPU machine lacks (pure Python, or built for CPython $CARRY_PYTHON_VERSION
#            manylinux x86-64)
#   .carry/  MNIST's four IDX files, gzip-compressed (53 MB -> about 11 MB), and the Inception-v3
#            FID weights (84 MB, more than one call carries) split in two:
#   call 1: bash scripts/gpu_full.sh stage   carry: .carry/mnist .carry/inception.part1
#           (stages both in data/, which the warm machine keeps between calls)
#   call 2: bash scripts/gpu_full.sh run     carry: .whl .carry/inception.part2
# part1 is sized so that call 1 fills its budget; the rest goes with the wheels in call 2.
#
# Environment: PYTHON (default .venv/bin/python: it downloads and reads MNIST and the weights),
# CARRY_PYTHON_VERSION (3.12: the GPU machine's), WHL_DIR and CARRY_DIR (default .whl and .carry
# in the repository), CARRY_LIMIT_MIB (64) and CARRY_MARGIN_MIB (2, kept free in each call).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
PYVER="${CARRY_PYTHON_VERSION:-3.12}"
WHL="${WHL_DIR:-$ROOT/.whl}"
CARRY="${CARRY_DIR:-$ROOT/.carry}"
LIMIT=$(( ${CARRY_LIMIT_MIB:-64} * 1024 * 1024 ))
MARGIN=$(( ${CARRY_MARGIN_MIB:-2} * 1024 * 1024 ))
SPECS="papermill==2.7.0 nbclient==0.11.0 nbformat==5.11.1 nbconvert==7.17.2 ipykernel==7.4.0 ipywidgets==8.1.9"
# Packages the GPU machine already has (its image's list): not carried, so its versions stay.
HAVE="jinja2 markupsafe pygments packaging psutil pyyaml requests click attrs tqdm aiohttp certifi
charset-normalizer idna urllib3 six python-dateutil typing-extensions aiosignal frozenlist multidict
yarl propcache aiohappyeyeballs anyio h11 httpx httpcore"

# Folders inside the repository must stay out of git (and so out of the tree that travels).
exclude="$(git rev-parse --git-path info/exclude 2>/dev/null || true)"
if [ -n "$exclude" ]; then
  mkdir -p "$(dirname "$exclude")"
  for d in "$WHL" "$CARRY"; do
    case "$d" in
      "$ROOT"/*) rel="/${d#"$ROOT"/}/"; grep -qxF "$rel" "$exclude" 2>/dev/null || echo "$rel" >> "$exclude" ;;
    esac
  done
fi

# Wheels: downloaded once per (specs, python version); a rerun reuses them.
stamp="$SPECS | $HAVE | cp$PYVER"
if [ -f "$WHL/.stamp" ] && [ "$(cat "$WHL/.stamp")" = "$stamp" ]; then
  echo "wheels: reusing $WHL"
else
  rm -rf "$WHL" && mkdir -p "$WHL"
  # shellcheck disable=SC2086
  "$PY" -m pip download --quiet --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_26_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$WHL" $SPECS
  for name in $HAVE; do
    pat="$(echo "$name" | tr - _)"
    rm -f "$WHL/$pat"-[0-9]*.whl "$WHL/$name"-[0-9]*.whl
  done
  echo "$stamp" > "$WHL/.stamp"
fi

mkdir -p "$CARRY"
tree_bytes=$(git ls-files -co --exclude-standard -z | xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
"$PY" - "$CARRY" "$LIMIT" "$MARGIN" "$tree_bytes" <<'PY'
import gzip, shutil, sys
from pathlib import Path
from helpers import data, inception
carry, limit, margin, tree = Path(sys.argv[1]), *map(int, sys.argv[2:])
raw = data.ensure_mnist(log=lambda *_: None)
out = carry / "mnist"
out.mkdir(parents=True, exist_ok=True)
for name in data.FILES_MD5:
    target = out / f"{name}.gz"
    if not target.is_file():
        with open(raw / name, "rb") as src, gzip.open(target, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst)
mnist = sum(p.stat().st_size for p in out.glob("*.gz"))
w = inception.ensure_weights().read_bytes()
first = max(0, min(len(w), limit - margin - tree - mnist))
(carry / "inception.part1").write_bytes(w[:first])
(carry / "inception.part2").write_bytes(w[first:])
PY

size() { du -sb "$@" 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
whl_bytes=$(size "$WHL"); mnist_bytes=$(size "$CARRY/mnist")
p1=$(size "$CARRY/inception.part1"); p2=$(size "$CARRY/inception.part2")
call1=$((tree_bytes + mnist_bytes + p1)); call2=$((tree_bytes + whl_bytes + p2))
echo "what each call carries (limit $(mib "$LIMIT")):"
echo "  the working tree that travels: $(mib "$tree_bytes") in both calls"
echo "  call 1 (stage): tree $(mib "$tree_bytes") + MNIST $(mib "$mnist_bytes") + Inception part 1 $(mib "$p1") = $(mib "$call1")"
echo "  call 2 (run):   tree $(mib "$tree_bytes") + wheels $(mib "$whl_bytes") ($(ls "$WHL"/*.whl | wc -l) files) + Inception part 2 $(mib "$p2") = $(mib "$call2")"
status=0
for n in 1 2; do
  total=$([ $n = 1 ] && echo "$call1" || echo "$call2")
  if [ "$total" -gt "$LIMIT" ]; then
    echo "gpu_carry.sh: call $n would carry $(mib "$total"), over the limit of $(mib "$LIMIT"): refused" >&2
    status=1
  fi
done
exit $status
