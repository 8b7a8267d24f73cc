"""Exit 0 when this Python has every pin of requirements.txt and imports this checkout's helpers; else say what is off.

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
# `import helpers` must find this checkout, not another one an active environment has installed.
try:
    import helpers
except ImportError:
    problems.append(f"the helpers package is not installed (cd {root} && pip install -e . --no-deps)")
else:
    found = Path(helpers.__file__).resolve().parent
    if found != root / "helpers":
        problems.append(
            f"`import helpers` finds {found}, not this checkout's {root / 'helpers'} "
            f"(cd {root} && pip install -e . --no-deps, or put {root} first on PYTHONPATH)"
        )
if problems:
    print("; ".join(problems))
    sys.exit(1)
