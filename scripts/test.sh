#!/usr/bin/env bash
# Set up (if needed), type-check src/ and run the whole test suite. Exit non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/install-chromium.sh
# Tests that need an external program fail here if it is missing, instead of skipping.
export ORPHEUS_TRIO_REQUIRE_TOOLS=1
.venv/bin/python -m mypy
.venv/bin/python -m pytest -q "$@"
