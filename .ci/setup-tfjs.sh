#!/usr/bin/env bash
# Installs the TensorFlow.js converter into a virtual environment of its own, and the pure-JS
# @tensorflow/tfjs (for Node) into that venv's js/ folder.
#
# tensorflowjs 4.22.0 imports tensorflow_decision_forests (whose last release pins
# tensorflow==2.19.0), tensorflow_hub and tf-keras, so it must never share the project's
# environment (TensorFlow 2.21). `--export tfjs` and the tests look for it through
# KERASFLOW_TFJS_CONVERTER, so CI runs:
#
#   export KERASFLOW_TFJS_CONVERTER="$(bash .ci/setup-tfjs.sh)"
#
# The script prints the converter's path on stdout (and nothing else there), and returns at once
# when the pinned versions are already installed. @tensorflow/tfjs is the pure-JS package
# (CPU backend): tfjs-node would download libtensorflow at install time.
set -euo pipefail

TFJS_VERSION="${KERASFLOW_TFJS_VERSION:-4.22.0}"
VENV="${KERASFLOW_TFJS_VENV:-/opt/kerasflow-tfjs}"
PYTHON="${PYTHON:-python3}"
BIN="$VENV/bin/tensorflowjs_converter"
STAMP="$VENV/.kerasflow-tfjs-$TFJS_VERSION"

if [[ -x "$BIN" && -f "$STAMP" ]]; then
    echo "$BIN"
    exit 0
fi

{
    echo "installing tensorflowjs $TFJS_VERSION into $VENV"
    command -v npm >/dev/null || { echo "npm is not installed"; exit 1; }
    "$PYTHON" -m venv --clear "$VENV"
    # The machine-wide pip constraints pin the project's own releases, not these. ydf is held
    # at 0.11.0: later releases are generated for protobuf 6, which TensorFlow 2.19 refuses.
    PIP_CONSTRAINT="" "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --no-cache-dir \
        "tensorflowjs==$TFJS_VERSION" \
        "tensorflow==2.19.0" \
        "tensorflow-decision-forests==1.12.0" \
        "ydf==0.11.0" \
        "tf-keras==2.19.0" \
        "tensorflow-hub==0.16.1" \
        "protobuf==5.29.6" \
        "numpy==2.1.3" \
        "jax==0.10.2" \
        "jaxlib==0.10.2" \
        "flax==0.12.8" \
        "packaging==23.2"
    "$BIN" --version
    mkdir -p "$VENV/js"
    npm install --prefix "$VENV/js" --no-audit --no-fund --no-save --loglevel=error \
        "@tensorflow/tfjs@$TFJS_VERSION"
    touch "$STAMP"
} >&2

echo "$BIN"
