#!/usr/bin/env bash
# Create .venv and install orpheus-trio with the extras named (default: every extra, for
# development and the tests), building the Cython decoder in place.
#   ./scripts/setup.sh                 server,formats,local,test,bench (what scripts/test.sh uses)
#   ./scripts/setup.sh server          the reference server and espeak only (what the demo uses)
# Idempotent: safe to run again, also to add extras; a fresh machine needs nothing but python3
# and gcc. When an extra needs torch (local), the CPU build is pinned first, else pip pulls the
# CUDA build (several GB): TORCH='torch==2.13.0' (from PyPI: CUDA) or any other spec overrides it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${1:-server,formats,local,test,bench}
TORCH=${TORCH:-torch==2.13.0+cpu}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
# pyproject.toml's build requirements, here once: the build below uses them (no isolated copy).
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel "Cython>=3.0"
if [[ ",$EXTRAS," == *,local,* ]]; then
    if ! .venv/bin/python -m pip install -q "$TORCH"; then
        echo "setup.sh: cannot install $TORCH. CPU builds are on PyTorch's own index:" \
            "PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu ./scripts/setup.sh;" \
            "or TORCH='torch==2.13.0' for PyPI's (CUDA) build" >&2
        exit 1
    fi
fi
.venv/bin/python -m pip install -q --no-build-isolation -e ".[$EXTRAS]"
.venv/bin/python -c "import orpheus_trio.protocol.frames as f; print('orpheus-trio installed; frame decoder:', f.BACKEND)"
