"""Exit 0 when this Python has every pin of requirements.txt and the helpers package; else say what is off.

Standard library only: run_all.sh calls it before anything is installed.
"""
import sys
from importlib import metadata
from pathlib import Path

root = Path(__file__).resolve().parents[1]
problems = []
for line in (root / "requirements.txt").read_text().splitlines():
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, _, version = line.partition("==")
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        problems.append(f"{name} is not installed")
        continue
    if have.split("+")[0] != version:
        problems.append(f"{name} {have} installed, {version} pinned")
try:
    import helpers  # noqa: F401
except ImportError:
    problems.append("the helpers package is not installed (pip install -e . --no-deps)")
if problems:
    print("; ".join(problems))
    sys.exit(1)
