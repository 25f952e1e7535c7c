#!/usr/bin/env bash
# Installs llama-cpp-python (llama.cpp built from source) with its OpenAI-compatible server
# into one venv in the shared cache, once: the reference for bench-embedded and the real
# local upstream for the llama.cpp-server test. Prints the venv's python path. Idempotent;
# concurrent callers wait for the first build under a lock.
set -euo pipefail
cache="${CONFAB_CACHE:-$HOME/.cache/confab}"
venv="$cache/llama-cpp-venv"
version=0.3.36
stamp="$venv/.installed-$version"
if [ -f "$stamp" ]; then echo "$venv/bin/python"; exit 0; fi
mkdir -p "$cache"
exec 9>"$cache/.llama-cpp-venv.lock"
flock 9
if [ -f "$stamp" ]; then echo "$venv/bin/python"; exit 0; fi
echo "[llama-cpp-python] building llama-cpp-python==$version into $venv (several minutes, once)" >&2
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip >&2
# Native build for this CPU (what a local llama.cpp install does); the server extra brings
# fastapi, uvicorn and sse-starlette.
CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
  "$venv/bin/pip" install -q --no-cache-dir "llama-cpp-python[server]==$version" >&2
touch "$stamp"
echo "$venv/bin/python"
