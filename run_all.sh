#!/usr/bin/env bash
# The study's two commands:
#   ./run_all.sh [--profile smoke|quick|full] [--only NOTEBOOK ...]   regenerate every figure (and the report)
#   ./run_all.sh test [PYTEST ARGS ...]                               run the whole test suite
# Each sets up what it needs on a fresh machine: a virtual environment in .venv with the pinned
# requirements (reused while requirements.txt and pyproject.toml are unchanged), unless an active
# conda or virtual environment already has every pin.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

say() { printf '[run_all] %s\n' "$*" >&2; }
die() { printf '[run_all] error: %s\n' "$*" >&2; exit 2; }

usage() { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; }

# ---------------------------------------------------------------- arguments
MODE=main
if [ "${1:-}" = "test" ]; then MODE=test; shift; fi
if [ "$MODE" = main ]; then
  ARGS=()
  while [ $# -gt 0 ]; do
    case "$1" in
      -h|--help) usage; exit 0 ;;
      --profile) [ $# -ge 2 ] || die "--profile needs a value"; ARGS+=(--profile "$2"); PROFILE="$2"; shift 2 ;;
      --profile=*) PROFILE="${1#*=}"; ARGS+=(--profile "$PROFILE"); shift ;;
      --only) shift; ARGS+=(--only); while [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; do ARGS+=("$1"); shift; done ;;
      *) die "unknown argument '$1' (see ./run_all.sh --help)" ;;
    esac
  done
  if [ -n "${PROFILE:-}" ]; then
    # Validate before any set-up: helpers/config.py imports only the standard library.
    msg="$(python3 - "$ROOT" "$PROFILE" 2>&1 <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
from helpers import config
try:
    config.profile(sys.argv[2])
except ValueError as exc:
    print(exc)
    sys.exit(1)
PY
)" || die "$msg"
  fi
fi

# ---------------------------------------------------------------- environment
stamp() { cat requirements.txt pyproject.toml | sha256sum | cut -c1-16; }

setup_env() {
  if [ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ] && [ "${VIRTUAL_ENV:-}" != "$ROOT/.venv" ] \
     && python scripts/check_env.py >/dev/null 2>&1; then
    PY="$(command -v python)"; say "using the active environment ($PY)"; return
  fi
  local venv="$ROOT/.venv" want; want="$(stamp)"
  exec 9>"$ROOT/.venv.lock"
  flock 9
  if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.stamp" 2>/dev/null)" = "$want" ]; then
    PY="$venv/bin/python"; flock -u 9; return
  fi
  local base; base="$(command -v python3.11 || command -v python3)"
  "$base" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || say "warning: $base is not Python 3.11; the pinned torch build is for 3.11"
  say "setting up $venv (pinned requirements; a few minutes the first time)"
  [ -x "$venv/bin/python" ] || "$base" -m venv "$venv"
  rm -f "$venv/.stamp"
  # (pip warns about every local index folder that lacks a package; those lines are noise)
  if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt 2>&1 \
      | { grep -v "^WARNING: Location '.*' is ignored" || true; }; then
    die "pip could not install requirements.txt"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
  "$venv/bin/python" scripts/check_env.py || die "the environment in $venv does not match requirements.txt"
  echo "$want" > "$venv/.stamp"
  flock -u 9
  PY="$venv/bin/python"
}

setup_env
export PYTHONUNBUFFERED=1
if [ "$MODE" = test ]; then
  say "running the test suite with $PY"
  exec "$PY" -m pytest "$@"
fi
exec "$PY" -m helpers.pipeline "${ARGS[@]}"
