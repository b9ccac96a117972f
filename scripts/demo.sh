#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv with what the demo uses (the server extra: the
# reference server and espeak-ng; no torch), then speak a sentence to hello.wav through the full
# client stack against an embedded reference server (espeak engine, 127.0.0.1, port 0).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh server
.venv/bin/orpheus-trio speak "${1:-Hello from Orpheus.}" -o "${2:-hello.wav}"
