"""Two Ray actors with one llama.cpp thread each, against one process with two threads.

Why: on a small machine, is `--ray` with one single-threaded actor per CPU faster than the
local run with every CPU on one model? Single-threaded decoding has no barrier between threads
(llama.cpp's threads wait for the slowest at every step), but each actor loads its own copy of
the model and Ray adds a scheduling hop per chunk of cells.

The same generated suite runs both ways, without the result cache:
- local: `core.run`, the model with n_threads 2 (one process, one model load);
- ray: `core.run(..., ray=...)` on a local Ray cluster of 2 CPUs started once before the
  rounds (its start-up is not timed), the model with n_threads 1, so two actors.
Rounds interleave (local, ray, local, ray, ...), so drift on the machine hits both alike; the
medians are printed. `wall` is the whole run (for Ray: actor start-up and both model loads
too); `gen` is the manifest's generation wall time (first result to last). Every round checks
that the two runs' outputs are equal.

    .venv/bin/python benchmarks/bench_ray.py --rounds 3                    # the measurement
    .venv/bin/python benchmarks/bench_ray.py --rounds 1 --warmup 0 --tests 4 --tokens 4  # smoke
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from promptlab import core
from promptlab.models import BUNDLED

TOPICS = ["a robot", "the sea", "a library", "winter", "a train", "the moon", "a garden", "tea"]


def write_suite(folder: Path, model: Path, tests: int, tokens: int, threads: int) -> Path:
    lines = [
        "description: bench ray",
        "prompts:",
        '  - raw: "Write one sentence about {{ topic }}."',
        "    label: sentence",
        "models:",
        f"  - path: {json.dumps(str(model))}",
        "    label: m",
        "    chat: false",
        "    n_ctx: 512",
        f"    n_threads: {threads}",
        f"params: {{max_tokens: {tokens}, temperature: 0}}",
        "tests:",
    ]
    for i in range(tests):
        lines.append(f"  - vars: {{topic: {json.dumps(f'{TOPICS[i % len(TOPICS)]} ({i})')}}}")
    path = folder / f"suite-{threads}.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def one_run(suite: Path, out: Path, ray: str | None) -> dict[str, Any]:
    started = time.perf_counter()
    result = core.run(suite, out=out, cache=core.CacheOptions(use=False), ray=ray)
    wall = time.perf_counter() - started
    if result.status != "complete":
        raise SystemExit(f"{out}: run {result.status}")
    manifest = json.loads((out / "manifest.json").read_text())
    (record,) = manifest["models"]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return {
        "wall_s": wall,
        "gen_s": record["generation"]["wall_ms"] / 1000,
        "actors": record.get("ray", {}).get("actors", 1),
        "outputs": {r["cell_id"]: r["output"] for r in rows},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tests", type=int, default=16, help="cells in the suite")
    ap.add_argument("--tokens", type=int, default=32, help="max_tokens per cell")
    ap.add_argument("--model", default="smollm2", help="bundled alias")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first (page cache)")
    args = ap.parse_args()
    import ray  # noqa: PLC0415 - an optional extra: only this benchmark needs it

    model = BUNDLED[args.model].locate()
    if model is None:
        raise SystemExit(f"{args.model} is not installed: {BUNDLED[args.model].install}")
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level=logging.ERROR)
    samples: dict[str, list[dict[str, Any]]] = {"local": [], "ray": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / ".git").mkdir()  # the project root: run folders and notes stay in here
            local_suite = write_suite(root, model, args.tests, args.tokens, threads=args.cpus)
            ray_suite = write_suite(root, model, args.tests, args.tokens, threads=1)
            for n in range(-args.warmup, args.rounds):
                local = one_run(local_suite, root / f"local{n}", None)
                remote = one_run(ray_suite, root / f"ray{n}", "auto")
                if n < 0:
                    continue
                samples["local"].append(local)
                samples["ray"].append(remote)
                same = samples["local"][-1]["outputs"] == samples["ray"][-1]["outputs"]
                print(f"round {n + 1}: outputs {'equal' if same else 'DIFFER'}", file=sys.stderr)
    finally:
        ray.shutdown()
    print(f"{args.tests} cells × {args.tokens} tokens, {args.model}, {args.rounds} round(s)")
    print(f"{'config':<28} {'wall s':>8} {'gen s':>8}")
    medians = {}
    for name, label in (
        ("local", f"local, 1 process × {args.cpus} thr"),
        ("ray", f"ray, {samples['ray'][0]['actors']} actors × 1 thr"),
    ):
        wall = statistics.median(s["wall_s"] for s in samples[name])
        gen = statistics.median(s["gen_s"] for s in samples[name])
        medians[name] = (wall, gen)
        print(f"{label:<28} {wall:>8.2f} {gen:>8.2f}")
    (lw, lg), (rw, rg) = medians["local"], medians["ray"]
    print(f"ray / local: wall {rw / lw:.2f}x, generation {rg / lg:.2f}x (below 1: ray faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
