#!/usr/bin/env bash
# Prints the CMake flags for a CPU-safe ggml build, sourced by setup.sh and build-llama-server.sh alike:
# no -march=native (the native build segfaults in ggml's AMX kernels on these machines), AMX off, and
# exactly the AVX levels this CPU reports.
# MULTAI_PORTABLE_CPU=1 (the container image) targets any x86-64 with AVX2 instead of this machine's CPU.
if [ "${MULTAI_PORTABLE_CPU:-0}" = 1 ]; then
  flags="avx avx2 fma f16c"
else
  flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
fi
has() { [[ " $flags " == *" $1 "* ]] && echo ON || echo OFF; }
cmake_args="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
cmake_args+=" -DGGML_AVX=$(has avx) -DGGML_AVX2=$(has avx2) -DGGML_FMA=$(has fma) -DGGML_F16C=$(has f16c)"
cmake_args+=" -DGGML_AVX512=$(has avx512f) -DGGML_AVX512_VBMI=$(has avx512vbmi)"
cmake_args+=" -DGGML_AVX512_VNNI=$(has avx512_vnni) -DGGML_AVX512_BF16=$(has avx512_bf16)"
cmake_args+=" -DGGML_AVX_VNNI=$(has avx_vnni) -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
echo "$cmake_args"
