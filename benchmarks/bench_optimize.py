"""`promptlab optimize` against plain `promptlab run` on the same cells: calls per second.

    .venv/bin/python benchmarks/bench_optimize.py                      # optimize_demo, smollm2
    .venv/bin/python benchmarks/bench_optimize.py --rounds 3 --budget 264 --seed 1
    .venv/bin/python benchmarks/bench_optimize.py --model "fake://echo?sleep_ms=2" --budget 100 --rounds 1

A: `optimize(evals/optimize_demo.yaml, --no-cache)`: racing, planning each rung, optuna,
   the held-out comparison and the reports, on the cells its search picks. Timed by wall clock
   around the call, minus the model load (`load_ms` of the model records).
B: `core.run(--no-cache)` of a replay suite holding exactly the cells A ran: one raw prompt
   `{{ p }}` whose tests carry each of A's rendered prompts (the demo suite sends raw text,
   `chat: false`, so the replay's text and BOS are A's), with the same params and checks. The
   same cells, in run's own prefix-sharing order, batched as run batches them; timed the same
   way.
Rounds alternate A B, B A, ... so drift on the machine hits both alike; medians are printed,
with the share of the CPUs other processes used meanwhile (`others`): check it before trusting
a figure. Outputs are compared cell by cell (a mismatch means the two did not run the same
cells: exit 1).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from promptlab import core
from promptlab.engine.store import read_manifest, read_results
from promptlab.optimize import optimize

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_engine import CpuMeter, pct  # noqa: E402  (its /proc/stat meter)

NO_CACHE = core.CacheOptions(use=False)


def _load_ms(records: list[dict[str, Any]]) -> float:
    return sum(float(r.get("load_ms") or 0.0) for r in records)


def run_optimize(suite: Path, out: Path, args: argparse.Namespace) -> tuple[float, int]:
    t0 = time.perf_counter()
    result = optimize(
        suite, out=out, cache=NO_CACHE, seed=args.seed, budget=args.budget, model=args.model
    )
    wall = time.perf_counter() - t0
    assert result.status == "complete", result.error
    load = _load_ms(read_manifest(out).get("models", [])) / 1000
    return wall - load, result.ran


def copy_project(suite: Path, dest: Path) -> Path:
    """The suite's folder and its sibling prompts/ folder, copied into a new project at `dest`;
    the copied suite's path."""
    dest.mkdir(parents=True)
    (dest / "promptlab.toml").write_text("")  # the project root marker
    skip = shutil.ignore_patterns("*.optimized.j2", "results", ".promptlab")
    shutil.copytree(suite.parent, dest / suite.parent.name, ignore=skip)
    prompts = suite.parent.parent / "prompts"
    if prompts.is_dir():
        shutil.copytree(prompts, dest / "prompts", ignore=skip)
    return dest / suite.parent.name / suite.name


def replay_suite(project: Path, suite: Path, optimized: Path, model: str | None) -> Path:
    """A suite of exactly the cells the optimization ran."""
    data = yaml.safe_load(suite.read_text(encoding="utf-8"))
    rows = read_results(optimized)
    spec = data["models"][0]
    spec = {"path": spec} if isinstance(spec, str) else dict(spec)
    if model is not None:
        spec = {"path": model}
    if not str(spec["path"]).startswith("fake://"):
        spec["chat"] = False
    replay = {
        "prompts": [{"raw": "{{ p }}", "label": "replay"}],
        "models": [spec],
        "params": data.get("params", {}),
        "defaultTest": data.get("defaultTest"),
        "tests": [
            # lists would expand into several tests (promptfoo's rule): the replay keeps scalars
            {
                "vars": {
                    **{k: v for k, v in r["vars"].items() if not isinstance(v, list)},
                    "p": r["rendered_prompt"],
                }
            }
            for r in rows
        ],
    }
    path = project / "replay.yaml"
    path.write_text(yaml.safe_dump(replay, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def run_plain(suite: Path, out: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    result = core.run(suite, out=out, cache=NO_CACHE)
    wall = time.perf_counter() - t0
    load = _load_ms(read_manifest(out).get("models", [])) / 1000
    return wall - load, result.stats.cells


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--suite", type=Path, default=ROOT / "evals" / "optimize_demo.yaml")
    ap.add_argument("--model", default=None, help="override the suite's model (e.g. fake://echo)")
    ap.add_argument("--budget", type=int, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    suite = args.suite.resolve()
    opt_s: list[float] = []
    run_s: list[float] = []
    others: list[str] = []
    mismatches = 0
    with tempfile.TemporaryDirectory(prefix="bench-optimize-") as tmp:
        base = Path(tmp)
        # optimize writes its winner beside the original template: work on a copy of the
        # suite's project, so a benchmark never leaves files in the checkout.
        suite = copy_project(suite, base / "project")
        first = base / "first"
        _w, cells = run_optimize(suite, first, args)
        replay = replay_suite(suite.parent, suite, first, args.model)
        try:
            for r in range(args.rounds):
                order = ("opt", "run") if r % 2 == 0 else ("run", "opt")
                for which in order:
                    meter = CpuMeter()
                    if which == "opt":
                        secs, n = run_optimize(suite, base / f"opt{r}", args)
                        opt_s.append(n / secs)
                    else:
                        secs, n = run_plain(replay, base / f"run{r}")
                        run_s.append(n / secs)
                    others.append(f"{which} {pct(meter.others())}")
                    print(
                        f"round {r + 1} {which}: {n} cells in {secs:.2f} s = {n / secs:.1f} calls/s",
                        flush=True,
                    )
            replayed = {r["rendered_prompt"]: r["output"] for r in read_results(base / "run0")}
            for row in read_results(first):
                if replayed.get(row["rendered_prompt"]) != row["output"]:
                    mismatches += 1
        finally:
            replay.unlink(missing_ok=True)
    ratio = statistics.median(opt_s) / statistics.median(run_s)
    print(
        json.dumps(
            {
                "cells": cells,
                "optimize_calls_per_s": round(statistics.median(opt_s), 2),
                "run_calls_per_s": round(statistics.median(run_s), 2),
                "optimize_over_run": round(ratio, 3),
                "others": others,
                "output_mismatches": mismatches,
            },
            indent=2,
        )
    )
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
