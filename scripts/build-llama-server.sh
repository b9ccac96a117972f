#!/usr/bin/env bash
# Build llama.cpp's `llama-server` (CPU only) from the llama-cpp-python source package, the only form of
# llama.cpp the package index has, and cache it. The engine-worker tests and bench/engine.py run against it.
#
# Idempotent: a cached build is reused (seconds); a fresh machine builds it (~8-10 min on 2 cores).
# Prints the binary's path as its last line. Environment:
#   LLAMA_CPP_PYTHON_VERSION  the sdist version to build (default below; pinned so the cache key is stable)
#   ORPHEUS_TRIO_CACHE        cache root (default ~/.cache/orpheus-trio)
#   LLAMA_BUILD_JOBS          make -j (default 2)
set -euo pipefail
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
CACHE=${ORPHEUS_TRIO_CACHE:-$HOME/.cache/orpheus-trio}
DEST="$CACHE/llama-server-$VERSION"
JOBS=${LLAMA_BUILD_JOBS:-2}
PY=${PYTHON:-python3}

if [ -x "$DEST/bin/llama-server" ] && [ -f "$DEST/convert_hf_to_gguf.py" ] && [ -f "$DEST/.complete" ]; then
    echo "$DEST/bin/llama-server"
    exit 0
fi

mkdir -p "$CACHE"
WORK=$(mktemp -d "$CACHE/.llama-build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
echo "building llama-server from llama-cpp-python $VERSION in $WORK (several minutes)" >&2
"$PY" -m pip download -q "llama-cpp-python==$VERSION" --no-binary :all: --no-deps -d "$WORK"
tar -xzf "$WORK"/llama_cpp_python-"$VERSION".tar.gz -C "$WORK"
SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
[ -d "$SRC/tools/server" ] || { echo "no tools/server in $SRC: unexpected sdist layout" >&2; exit 1; }
# NATIVE=OFF: the cache may be reused on another CPU of the same kind of machine; CURL=OFF: no downloads.
cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF \
    -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
    >"$WORK/cmake.log" 2>&1 || { tail -40 "$WORK/cmake.log" >&2; exit 1; }
cmake --build "$WORK/build" --target llama-server -j "$JOBS" >"$WORK/build.log" 2>&1 \
    || { tail -40 "$WORK/build.log" >&2; exit 1; }

# Install atomically: a half-copied cache would be taken for a good one next time.
STAGE="$DEST.tmp.$$"
rm -rf "$STAGE"
mkdir -p "$STAGE/bin"
cp "$WORK/build/bin/llama-server" "$STAGE/bin/"
# The HF -> GGUF converter and its gguf-py package, so tests can use the converter that matches this server.
cp "$SRC/convert_hf_to_gguf.py" "$STAGE/"
cp -r "$SRC/gguf-py" "$STAGE/gguf-py"
touch "$STAGE/.complete"
rm -rf "$DEST"
mv "$STAGE" "$DEST"
echo "$DEST/bin/llama-server"
