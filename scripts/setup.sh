#!/usr/bin/env bash
# Create .venv and install orpheus-trio with every extra, building the Cython decoder.
# Idempotent: safe to run again; a fresh machine needs nothing but python3 and gcc.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel "Cython>=3.0"
# The CPU build of torch first: otherwise a dependency pulls the CUDA build (several GB).
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[server,formats,local,test,bench]"
.venv/bin/python -c "import orpheus_trio.frames as f; print('orpheus-trio installed; frame decoder:', f.BACKEND)"
