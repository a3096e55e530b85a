#!/usr/bin/env bash
# A cached rerun of the few-shot suite (80 cells, every one from the result cache) at this
# checkout against the same at another commit, paired by farm-bench in one sitting: did a change
# make the cached path slower? Both sides use this checkout's .venv and the same warm cache.
#
#   bash benchmarks/cached_vs_commit.sh REV [RUNS]      # e.g. REV=3f39cbc, RUNS=20
#
# Prints farm-bench's table; quote the A/B medians (A = this checkout, B = REV).
set -euo pipefail
cd "$(dirname "$0")/.."
REV=${1:?usage: cached_vs_commit.sh REV [RUNS]}
RUNS=${2:-20}
ROOT=$PWD
PY="$ROOT/.venv/bin/python"
OLD=$(mktemp -d /tmp/pl-rev-XXXXXX)
trap 'git -C "$ROOT" worktree remove --force "$OLD" >/dev/null 2>&1 || true' EXIT
git worktree add -q --detach "$OLD" "$REV"
# PYTHONDONTWRITEBYTECODE may be set: compile both trees once so neither pays for it per run.
"$PY" -m compileall -q "$ROOT/promptlab" "$OLD/promptlab"
PROJECT=$("$PY" -c "import sys; sys.path.insert(0, 'benchmarks'); import bench_fewshot as b; print(b.fewshot_project(40))")
cd "$PROJECT"
"$PY" -m promptlab run fewshot-p1.json -o cold >/dev/null 2>&1 || true   # fills the cache
for side in "$ROOT" "$OLD"; do  # both must find every cell in the cache (exit 100: some fail)
  rm -rf check
  said=$(PYTHONPATH="$side" "$PY" -m promptlab run fewshot-p1.json -o check 2>&1 || true)
  grep -q "80 from the cache" <<<"$said" || { echo "$side: not every cell came from the cache" >&2; exit 1; }
done
farm-bench -n "$RUNS" --timeout 900 \
  --vs "sh -c 'rm -rf $PROJECT/b; PYTHONPATH=$OLD exec $PY -m promptlab run fewshot-p1.json -o $PROJECT/b'" \
  -- sh -c "rm -rf $PROJECT/a; PYTHONPATH=$ROOT exec $PY -m promptlab run fewshot-p1.json -o $PROJECT/a"
