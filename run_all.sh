#!/usr/bin/env bash
# The study's two commands:
#   ./run_all.sh [--profile NAME] [--only NAME ...] [-p NAME VALUE ...] [--fresh] [--jobs N] [--pretrain]
#                                       regenerate every figure, table and the report (--help: every option)
#   ./run_all.sh test [PYTEST ARGS ...] lint, then the whole test suite (-m 'not slow': the fast loop)
# Each sets up what it needs on a fresh machine: a virtual environment in .venv with the pinned
# requirements (reused while requirements.txt and pyproject.toml are unchanged), unless an active
# conda or virtual environment already has every pin; TeX for the report and Chromium for the
# browser test come from apt-get when missing (as root).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

say() { printf '[run_all] %s\n' "$*" >&2; }
die() { printf '[run_all] error: %s\n' "$*" >&2; exit 2; }

# ---------------------------------------------------------------- arguments
# Checked before any set-up by the pipeline's own parser, which needs only the standard library.
MODE=main
if [ "${1:-}" = "test" ]; then MODE=test; shift; fi
REPORT=
if [ "$MODE" = main ]; then
  command -v python3 >/dev/null || die "python3 is needed (3.11 for the pinned torch build)"
  for a in "$@"; do
    case "$a" in -h|--help) PYTHONPATH="$ROOT" PYTHONDONTWRITEBYTECODE=1 exec python3 -m helpers.pipeline --help ;; esac
  done
  rc=0; REPORT="$(PYTHONPATH="$ROOT" PYTHONDONTWRITEBYTECODE=1 python3 -m helpers.pipeline --check-args "$@")" || rc=$?
  [ "$rc" = 0 ] || exit "$rc"
fi

# ---------------------------------------------------------------- system packages
TEX_PKGS="latexmk texlive-latex-recommended texlive-fonts-recommended lmodern poppler-utils"
have_tex() { command -v latexmk && command -v pdflatex && command -v pdftotext && kpsewhich lmodern.sty; } >/dev/null 2>&1
APT_UPDATED=
apt_install() {  # packages...; false when not root or apt-get is missing or it fails
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 1
  say "installing with apt-get: $*"
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "$APT_UPDATED" ]; then apt-get update -qq >/dev/null || return 1; APT_UPDATED=1; fi
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
ensure_tex() {  # strict: die when TeX is missing and cannot be installed
  have_tex && return 0
  if [ "$1" = strict ]; then
    { apt_install $TEX_PKGS && have_tex; } \
      || die "the report needs TeX: install $TEX_PKGS (sudo apt-get install --no-install-recommends ...)"
  else
    { apt_install $TEX_PKGS && have_tex; } || say "warning: no TeX ($TEX_PKGS); the report tests cannot build a PDF"
  fi
}
if [ "$MODE" = test ]; then
  ensure_tex lenient
  command -v chromium >/dev/null || apt_install chromium \
    || say "warning: no chromium (apt-get install chromium); the browser test needs it"
elif [ "$REPORT" = report ]; then
  ensure_tex strict
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

# JupyterLab in this project's environment: no pop-up asking to fetch Jupyter news (it would cover the
# output and, offline, can only fail) and no update check; the user's own settings still win.
lab_overrides() {
  local dir; dir="$("$PY" -c 'import sys; print(sys.prefix)')/share/jupyter/lab/settings"
  [ "$dir" = "$ROOT/.venv/share/jupyter/lab/settings" ] || return 0
  mkdir -p "$dir" && cat > "$dir/overrides.json" <<'JSON'
{"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}
JSON
}

setup_env
lab_overrides
export PYTHONUNBUFFERED=1
if [ "$MODE" = test ]; then
  # The tree must be lint-clean and formatted (settings in pyproject.toml); a second, not a test run.
  say "ruff check and ruff format --check"
  "$PY" -m ruff check --quiet . && "$PY" -m ruff format --check --quiet . \
    || die "ruff found problems (fix: $PY -m ruff check --fix . && $PY -m ruff format .)"
  say "running the test suite with $PY"
  exec "$PY" -m pytest "$@"
fi
exec "$PY" -m helpers.pipeline "$@"
