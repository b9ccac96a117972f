#!/usr/bin/env bash
# Set up (if needed), type-check src/ and run the whole test suite. Exit non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/install-chromium.sh
.venv/bin/python -m mypy
.venv/bin/python -m pytest -q "$@"
