#!/usr/bin/env bash
# Installs checkov into a virtual environment of its own.
#
# checkov pins old releases of packaging, cachetools and importlib_metadata, so it must never share
# the project's environment. The manifest tests look for it through KERASFLOW_CHECKOV, so CI runs:
#
#   export KERASFLOW_CHECKOV="$(bash .ci/setup-checkov.sh)"
#
# The script prints the checkov executable's path on stdout (and nothing else there), and returns
# at once when the pinned version is already installed.
set -euo pipefail

CHECKOV_VERSION="${KERASFLOW_CHECKOV_VERSION:-3.3.30}"
VENV="${KERASFLOW_CHECKOV_VENV:-/opt/kerasflow-checkov}"
PYTHON="${PYTHON:-python3}"
BIN="$VENV/bin/checkov"
STAMP="$VENV/.kerasflow-checkov-$CHECKOV_VERSION"

if [[ -x "$BIN" && -f "$STAMP" ]]; then
    echo "$BIN"
    exit 0
fi

{
    echo "installing checkov $CHECKOV_VERSION into $VENV"
    "$PYTHON" -m venv --clear "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
        "checkov==$CHECKOV_VERSION"
    "$BIN" --version
    touch "$STAMP"
} >&2

echo "$BIN"
