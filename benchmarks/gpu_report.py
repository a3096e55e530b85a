"""The table benchmarks/gpu_check.sh prints: promptlab runs with and without GPU offload, side by
side, against llama-bench on the same model and settings.

    python benchmarks/gpu_report.py --run "example ngl=-1" DIR WALL_S --run ... \
        [--pair LABEL_A LABEL_B] [--bench llama-bench.json] [--json OUT.json]

Speeds come from each run's results.jsonl (cells served from the cache are left out):
- prompt tok/s: prompt tokens llama.cpp evaluated / its prompt-eval time;
- gen tok/s: generated tokens / (cell latency - prompt-eval time). This is wall time in Python,
  so it includes llama-cpp-python's per-token sampling and promptlab's stop checks: the number a
  user gets, not llama.cpp's internal decode timer (printed as "engine gen tok/s" beside it).
A pair compares two runs' outputs cell by cell (same prompt, test, setting and repeat).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from promptlab.reports.compare import load_run, match


@dataclass
class RunFacts:
    label: str
    suite: str
    cells: int
    supported: bool
    requested: int | None
    offloaded: int
    layers: int | None
    device: str
    pp_tps: float
    gen_tps: float
    engine_gen_tps: float
    gen_tokens: int
    wall_s: float
    n_threads: int | None
    n_batch: int | None
    flash_attn: bool
    rows: list[dict[str, Any]]


def read_run(label: str, folder: Path, wall_s: float) -> RunFacts:
    run = load_run(folder)
    manifest, rows = run.manifest, run.rows
    model = manifest["models"][0]
    rt = model.get("runtime", {})
    load = model.get("load_settings", {})
    fresh = [r for r in rows if not r.get("cached") and r.get("status") != "error"]
    pp_tokens = sum(r.get("prompt_eval_tokens") or 0 for r in fresh)
    pp_ms = sum(r.get("prompt_eval_ms") or 0.0 for r in fresh)
    gen_tokens = sum(r.get("completion_tokens") or 0 for r in fresh)
    gen_ms = sum(max(0.0, r["latency_ms"] - (r.get("prompt_eval_ms") or 0.0)) for r in fresh)
    eval_ms = sum(r.get("eval_ms") or 0.0 for r in fresh)
    return RunFacts(
        label=label,
        suite=str(manifest["suite"]["path"]),
        cells=len(rows),
        supported=bool(rt.get("gpu_offload_supported")),
        requested=rt.get("n_gpu_layers_requested"),
        offloaded=int(rt.get("layers_offloaded") or 0),
        layers=rt.get("layers_total") or rt.get("n_layer"),
        device=str(rt.get("device", "?")),
        pp_tps=pp_tokens / pp_ms * 1000 if pp_ms else 0.0,
        gen_tps=gen_tokens / gen_ms * 1000 if gen_ms else 0.0,
        engine_gen_tps=gen_tokens / eval_ms * 1000 if eval_ms else 0.0,
        gen_tokens=gen_tokens,
        wall_s=wall_s,
        n_threads=load.get("n_threads"),
        n_batch=load.get("n_batch"),
        flash_attn=bool(load.get("flash_attn")),
        rows=rows,
    )


def compare_outputs(
    a: RunFacts, b: RunFacts
) -> tuple[int, int, list[tuple[str, dict[str, Any], dict[str, Any]]]]:
    """(identical cells, cells in both, (name, A's row, B's row) of the differing ones)."""
    shared = [(d.a, d.b) for d in match(a.rows, b.rows) if d.a is not None and d.b is not None]
    differ = [
        (
            f"{rb['prompt']}|{rb['test_index']}|{rb.get('setting') or ''}|{rb.get('repeat', 0)}",
            ra,
            rb,
        )
        for ra, rb in shared
        if ra.get("output") != rb.get("output")
    ]
    return len(shared) - len(differ), len(shared), differ


def first_difference(x: str, y: str) -> int:
    for i, (p, q) in enumerate(zip(x, y, strict=False)):
        if p != q:
            return i
    return min(len(x), len(y))


def read_bench(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [
        {
            "ngl": e.get("n_gpu_layers"),
            "test": f"pp{e['n_prompt']}" if e.get("n_prompt") else f"tg{e['n_gen']}",
            "tps": float(e["avg_ts"]),
            "stddev": float(e.get("stddev_ts") or 0.0),
            "threads": e.get("n_threads"),
            "n_batch": e.get("n_batch"),
            "flash_attn": e.get("flash_attn"),
            "gpu": e.get("gpu_info", ""),
            "build": e.get("build_commit", ""),
        }
        for e in data
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--run", nargs=3, action="append", metavar=("LABEL", "DIR", "WALL_S"))
    ap.add_argument("--pair", nargs=2, action="append", default=[], metavar=("A", "B"))
    ap.add_argument("--bench", type=Path, help="llama-bench -o json output")
    ap.add_argument("--tg-run", help="the run whose gen tok/s is set against llama-bench's tg")
    ap.add_argument("--tg-run-cpu", help="the same at n_gpu_layers 0")
    ap.add_argument("--json", type=Path, help="also write every figure here")
    args = ap.parse_args(argv)

    runs = {label: read_run(label, Path(folder), float(w)) for label, folder, w in args.run or []}
    print(
        "| run | offload supported | layers offloaded | device | prompt tok/s | gen tok/s "
        "| engine gen tok/s | wall s |"
    )
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: |")
    for r in runs.values():
        print(
            f"| {r.label} ({r.cells} cells) | {'yes' if r.supported else 'no'} "
            f"| {r.offloaded}/{r.layers} | {r.device} | {r.pp_tps:.0f} | {r.gen_tps:.0f} "
            f"| {r.engine_gen_tps:.0f} | {r.wall_s:.1f} |"
        )

    pairs: list[dict[str, Any]] = []
    if args.pair:
        print("\n| outputs at temperature 0 | identical cells |")
        print("| --- | ---: |")
    for a_label, b_label in args.pair:
        a, b = runs[a_label], runs[b_label]
        same, total, differ = compare_outputs(a, b)
        print(f"| {a_label} vs {b_label} | {same}/{total} |")
        for name, ra, rb in differ:
            x, y = str(ra.get("output")), str(rb.get("output"))
            i = first_difference(x, y)
            print(
                f"  differs: {name} at character {i}: "
                f"{x[max(0, i - 20) : i + 40]!r} vs {y[max(0, i - 20) : i + 40]!r}"
            )
        pairs.append(
            {
                "a": a_label,
                "b": b_label,
                "identical": same,
                "cells": total,
                "differ": [name for name, _, _ in differ],
            }
        )

    bench = read_bench(args.bench) if args.bench and args.bench.is_file() else []
    ratios: list[dict[str, Any]] = []
    if bench:
        print("\n| llama-bench | ngl | threads | n_batch | flash_attn | tok/s |")
        print("| --- | ---: | ---: | ---: | --- | ---: |")
        for e in bench:
            print(
                f"| {e['test']} | {e['ngl']} | {e['threads']} | {e['n_batch']} | {e['flash_attn']} "
                f"| {e['tps']:.0f} ± {e['stddev']:.0f} |"
            )
        for label, gpu in ((args.tg_run, True), (args.tg_run_cpu, False)):
            if not label or label not in runs:
                continue
            ref = [e for e in bench if e["test"].startswith("tg") and (e["ngl"] > 0) == gpu]
            if not ref:
                continue
            r = runs[label]
            ratio = r.gen_tps / ref[0]["tps"]
            ratios.append({"run": label, "llama_bench": ref[0], "ratio": ratio})
            print(
                f"\npromptlab gen tok/s / llama-bench {ref[0]['test']} ({'GPU' if gpu else 'CPU'}): "
                f"{r.gen_tps:.0f} / {ref[0]['tps']:.0f} = {ratio:.2f}"
                f" (engine-only: {r.engine_gen_tps / ref[0]['tps']:.2f})"
            )
    if args.json:
        facts = {
            "runs": [{k: v for k, v in asdict(r).items() if k != "rows"} for r in runs.values()],
            "pairs": pairs,
            "llama_bench": bench,
            "ratios": ratios,
        }
        args.json.write_text(json.dumps(facts, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
