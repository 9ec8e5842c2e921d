# Shared by scripts/demo and scripts/test: make sure .venv exists and has the project installed.
# Usage: . scripts/_venv.sh EXTRAS   (EXTRAS: "" for the service alone, "test" or "dev")
# The install is skipped when .venv already holds this pyproject.toml with these extras.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "This project needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "Creating a virtual environment in .venv…" >&2
  "$PYTHON" -m venv .venv
fi
extras="${1:-}"
stamp=".venv/.installed-${extras:-base}"
wanted="$(.venv/bin/python -c 'import hashlib,sys; print(hashlib.sha256(open("pyproject.toml","rb").read()).hexdigest())')"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  target="."
  [ -n "$extras" ] && target=".[$extras]"
  echo "Installing the project ($target)…" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$target"
  # Each set of extras includes the smaller ones: dev > test > the service alone.
  case "$extras" in
    dev) for done in dev test base; do echo "$wanted" >".venv/.installed-$done"; done ;;
    test) for done in test base; do echo "$wanted" >".venv/.installed-$done"; done ;;
    *) echo "$wanted" >".venv/.installed-base" ;;
  esac
fi
