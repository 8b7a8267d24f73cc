#!/usr/bin/env bash
# Prepare, on this machine, what scripts/gpu_full.sh needs on a bare, offline GPU machine whose own
# python3 (3.12) has torch, torchmetrics, matplotlib, seaborn, pandas, scipy and tqdm but not the
# notebook tools. Writes two git-ignored folders, each small enough for one 64 MiB transfer:
#   .whl/    wheels of papermill, nbclient, nbformat, nbconvert, ipykernel, ipywidgets and what they
#            need that the GPU machine lacks (pure Python, or built for CPython 3.12 manylinux x86-64)
#   .carry/  MNIST's four IDX files, gzip-compressed (53 MB -> about 11 MB), and the Inception-v3
#            FID weights (84 MB, more than one transfer) split into two halves, one per call:
#            call 1 carries inception.part1 and leaves it in data/ (kept on the warm machine),
#            call 2 carries inception.part2 and joins them (scripts/gpu_full.sh says how).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
# Packages the GPU machine already has (its image's list): not carried, so its versions stay.
HAVE="jinja2 markupsafe pygments packaging psutil pyyaml requests click attrs tqdm aiohttp certifi
charset-normalizer idna urllib3 six python-dateutil typing-extensions aiosignal frozenlist multidict
yarl propcache aiohappyeyeballs anyio h11 httpx httpcore"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
grep -qx '/.carry/' .git/info/exclude 2>/dev/null || echo '/.carry/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl .carry
"$PY" -m pip download --quiet --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  papermill==2.7.0 nbclient==0.11.0 nbformat==5.11.1 nbconvert==7.17.2 ipykernel==7.4.0 ipywidgets==8.1.9
for name in $HAVE; do
  pat="$(echo "$name" | tr - _)"
  rm -f .whl/"$pat"-[0-9]*.whl .whl/"$name"-[0-9]*.whl
done
"$PY" - <<'PY'
import gzip, shutil
from pathlib import Path
from helpers import data, inception
raw = data.ensure_mnist(log=lambda *_: None)
out = Path(".carry/mnist"); out.mkdir(parents=True, exist_ok=True)
for name in data.FILES_MD5:
    with open(raw / name, "rb") as src, gzip.open(out / f"{name}.gz", "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst)
w = inception.ensure_weights().read_bytes()
half = len(w) // 2
Path(".carry/inception.part1").write_bytes(w[:half])
Path(".carry/inception.part2").write_bytes(w[half:])
PY
du -sh .whl .carry/mnist .carry/inception.part1 .carry/inception.part2
echo "wheels: $(ls .whl | wc -l)"
