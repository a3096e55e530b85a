"""Aggregate generation speed by `parallel`, against llama-bench's single-stream tg128 (issue 11).

    python benchmarks/gpu_parallel.py --run 1 DIR --run 4 DIR ... --bench llama-bench.json \
        [--json OUT.json]

Each DIR is a `promptlab run --no-cache` of the same long-generation suite with `parallel: P`.
Aggregate tok/s is the manifest's models[0].generation: every completion token of the run over
the wall time of its generation phase (all cells generating, P at a time), so it includes the
Python around llama.cpp: sampling, stop strings, scheduling. The ratio divides it by llama-bench's
tg128 at the same offload (-ngl 99), from the same build. Targets (issue 11): >= 0.9x at
parallel 1 and >= 4x at parallel 16. It also reports whether every run gave byte-identical outputs
(batching must not change a result) and what the load-time self-test found.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def tg_reference(bench: Path) -> float | None:
    """llama-bench's tg128 tok/s with every layer offloaded (the -ngl 99 row)."""
    rows = json.loads(bench.read_text())
    for row in rows:
        if (
            int(row.get("n_gen", 0)) > 0
            and int(row.get("n_prompt", 0)) == 0
            and int(row.get("n_gpu_layers", 0)) > 0
        ):
            return float(row["avg_ts"])
    return None


def read(folder: Path) -> dict[str, Any]:
    manifest = json.loads((folder / "manifest.json").read_text())
    model = manifest["models"][0]
    outputs = {}
    for line in (folder / "results.jsonl").read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            outputs[row["cell_id"]] = row["output"]
    return {
        "generation": model.get("generation") or {},
        "runtime": model.get("runtime", {}),
        "outputs": outputs,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--run", nargs=2, action="append", required=True, metavar=("PARALLEL", "DIR"))
    ap.add_argument("--bench", type=Path, required=True)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    ref = tg_reference(args.bench)
    runs = [(int(p), read(Path(d))) for p, d in args.run]
    first = runs[0][1]["outputs"]
    rows = []
    print(
        "| parallel | cells | tokens | generation s | aggregate tok/s | x llama-bench tg128 | outputs as parallel 1 |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for p, run in runs:
        gen = run["generation"]
        tps = gen.get("completion_tokens_per_s") or 0.0
        ratio = tps / ref if ref else None
        same = run["outputs"] == first
        rows.append(
            {
                "parallel": p,
                "runtime_parallel": run["runtime"].get("parallel"),
                **gen,
                "x_llama_bench": ratio,
                "same_outputs": same,
            }
        )
        shown = f"{ratio:.2f}" if ratio is not None else "n/a"
        print(
            f"| {p} | {gen.get('cells')} | {gen.get('completion_tokens')} | "
            f"{gen.get('wall_ms', 0) / 1000:.2f} | {tps:.1f} | {shown} | {'yes' if same else 'NO'} |"
        )
    rt = runs[0][1]["runtime"]
    print()
    print(
        f"llama-bench tg128 (-ngl 99): {ref:.1f} tok/s"
        if ref
        else "llama-bench: no tg row with offload"
    )
    print(
        f"self-test: {json.dumps(rt.get('self_test'))}; device sampling: {rt.get('device_sampling')}; device: {rt.get('device')}"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"llama_bench_tg128": ref, "runs": rows, "runtime": rt}, indent=2)
        )
    return 0 if all(r["same_outputs"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
