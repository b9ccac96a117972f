#!/usr/bin/env bash
# Set up (if needed), type-check src/ and run the whole test suite. Exit non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/install-chromium.sh
# llama.cpp's llama-server for the inference-engine tests (cached after the first build, ~8 min).
LLAMA_SERVER=$(PYTHON=.venv/bin/python ./scripts/build-llama-server.sh | tail -1)
export ORPHEUS_TRIO_LLAMA_SERVER="$LLAMA_SERVER"
# vLLM's CPU build in an environment of its own, for the engine tests against a real vLLM
# (cached after the first install, ~3 GB; tests/test_engine_vllm.py starts one server).
VLLM_PYTHON=$(PYTHON=python3 ./scripts/install-vllm.sh | tail -1)
export ORPHEUS_TRIO_VLLM_PYTHON="$VLLM_PYTHON"
# Tests that need an external program fail here if it is missing, instead of skipping.
export ORPHEUS_TRIO_REQUIRE_TOOLS=1
.venv/bin/python -m mypy
# The layers of docs/architecture.md, as import contracts (pyproject.toml [tool.importlinter]).
.venv/bin/lint-imports
.venv/bin/python -m pytest -q "$@"
