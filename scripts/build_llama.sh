#!/usr/bin/env bash
# Build (once per machine and flag set) and install llama-cpp-python into the active Python.
#
# Why not a plain `pip install llama-cpp-python`?
#  * PyPI ships only an sdist, and a default build uses GGML_NATIVE=ON, which compiles ggml's AMX
#    kernels on Sapphire-Rapids-class Xeons; those segfault on the first decode (llama.cpp#20824).
#  * pip's own wheel cache is keyed by the sdist, not by CMAKE_ARGS, so changing flags silently
#    reuses a stale build. We key our own wheel folder by version + python tag + flags instead.
#
# Env:
#   LLAMA_CPP_VERSION   pinned version (default below; keep in sync with pyproject.toml)
#   CMAKE_ARGS          extra CMake flags, e.g. "-DGGML_CUDA=on" for NVIDIA GPUs
#   PROMPTLAB_WHEELS    wheel cache folder (default ~/.cache/promptlab/wheels)
#   PYTHON              interpreter to install into (default: python)
#
# `scripts/build_llama.sh --cmake-args` prints the CMake flags it would use and exits.
set -euo pipefail

VERSION="${LLAMA_CPP_VERSION:-0.3.36}"
PYTHON="${PYTHON:-python}"
CACHE="${PROMPTLAB_WHEELS:-$HOME/.cache/promptlab/wheels}"

cpu_flags() {
  # A portable CPU build: GGML_NATIVE=OFF (so no AMX), then turn on exactly the SIMD sets this CPU
  # reports. On non-x86 machines ggml picks its own defaults.
  local args="-DGGML_NATIVE=OFF"
  if [[ -r /proc/cpuinfo ]] && grep -qw avx /proc/cpuinfo; then
    local f
    f=$(grep -m1 '^flags' /proc/cpuinfo)
    has() { [[ " $f " == *" $1 "* ]]; }
    has avx && args+=" -DGGML_AVX=ON"
    has avx2 && args+=" -DGGML_AVX2=ON"
    has fma && args+=" -DGGML_FMA=ON"
    has f16c && args+=" -DGGML_F16C=ON"
    has bmi2 && args+=" -DGGML_BMI2=ON"
    has avx512f && args+=" -DGGML_AVX512=ON"
    has avx512vbmi && args+=" -DGGML_AVX512_VBMI=ON"
    has avx512_vnni && args+=" -DGGML_AVX512_VNNI=ON"
    has avx512_bf16 && args+=" -DGGML_AVX512_BF16=ON"
    has avx_vnni && args+=" -DGGML_AVX_VNNI=ON"
  fi
  echo "$args"
}

ARGS="$(cpu_flags) -DLLAVA_BUILD=OFF ${CMAKE_ARGS:-}"
# `build_llama.sh --cmake-args`: print the flags and stop (benchmarks/gpu_check.sh reuses them).
if [[ "${1:-}" == "--cmake-args" ]]; then
  echo "$ARGS"
  exit 0
fi
PYTAG=$("$PYTHON" -c 'import sys, sysconfig; print(f"cp{sys.version_info[0]}{sys.version_info[1]}-{sysconfig.get_platform()}")')
KEY=$(printf '%s|%s|%s' "$VERSION" "$PYTAG" "$ARGS" | sha256sum | cut -c1-12)
DIR="$CACHE/llama-cpp-python-$VERSION-$KEY"

if ! ls "$DIR"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "promptlab: building llama-cpp-python $VERSION once for this machine (5-10 min)" >&2
  echo "promptlab: CMAKE_ARGS=$ARGS" >&2
  TMP="$DIR.tmp.$$"
  rm -rf "$TMP"; mkdir -p "$TMP"
  CMAKE_ARGS="$ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc 2>/dev/null || echo 2)" \
    "$PYTHON" -m pip wheel --no-deps --no-cache-dir --no-binary llama-cpp-python \
    ${LLAMA_CPP_SDIST:-"llama-cpp-python==$VERSION"} -w "$TMP" >&2
  printf '%s\n' "$ARGS" >"$TMP/CMAKE_ARGS"
  rm -rf "$DIR"; mv "$TMP" "$DIR"   # atomic publish: a half-built folder is never reused
fi
"$PYTHON" -m pip install --quiet --no-deps --force-reinstall "$DIR"/llama_cpp_python-*.whl
echo "$DIR"
