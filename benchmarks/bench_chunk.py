"""Prompt-processing speed by canonical chunk size (`prefix_chunk`), on each bundled model.

Why: where a model is not split-invariant (backends/llama_decode.py), `LlamaBackend` evaluates
every prompt in chunks aligned to multiples of C = min(prefix_chunk, n_batch), so that results
never depend on what the KV cache held before. This script forces that canonical mode
(PROMPTLAB_FILL_MODE=canonical) on the bundled models to measure it. A small C reuses more of a shared
prefix (reuse is rounded down to a multiple of C, and the last chunk is always decoded again) but
decodes a cold prompt in more, smaller batches, which are slower per token. This measures that
cost, to choose the default: the smallest C whose prompt throughput is within 10% of C = 512.

For each model, one `LlamaBackend` per chunk size (n_ctx 1024, n_batch 512, every usable CPU,
flash_attn off) evaluates the same ~600-token prompt from an empty KV cache through the real
`generate` path (max_tokens 1, greedy). pp tok/s = prompt_eval_tokens / prompt_eval_ms, the
wall time of the prompt's decodes; `wall ms` is the whole `generate` call. One untimed warm-up per
chunk size, then --repeats rounds with the chunk sizes interleaved in rotating order; medians.
`others%` is the share of all CPUs that other processes (and hypervisor steal) used meanwhile,
from /proc/stat minus this process's own CPU time.

    .venv/bin/python benchmarks/bench_chunk.py --repeats 5
    .venv/bin/python benchmarks/bench_chunk.py --repeats 3 --models gemma3 --chunks 64,512
"""

from __future__ import annotations

import argparse
import os

os.environ["PROMPTLAB_FILL_MODE"] = "canonical"  # what this measures; set before any load
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from promptlab.backends import LoadSettings, Sampling
from promptlab.backends.llama import LlamaBackend
from promptlab.models import BUNDLED

# Ordinary prose, repeated with a counter so no two sentences tokenize identically.
PARAGRAPH = (
    "Report {i}. The committee met on a grey Tuesday morning to review the quarterly figures."
    " Sales in the northern region had risen again, while the coastal stores reported a small"
    " decline that the manager blamed on the unusually wet summer. The members agreed to"
    " postpone the advertising campaign and to hire two more people for the warehouse.\n"
)
TARGET_TOKENS = 600
TOLERANCE = 0.10  # "within 10% of chunk 512"

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_snapshot() -> tuple[float, float, float] | None:
    """(busy CPU seconds of the machine, CPU seconds of this process, wall seconds); Linux only."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    v = [int(x) for x in first[1:9]]
    busy = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / _TICK  # user nice system irq softirq steal
    t = os.times()
    return busy, t.user + t.system, time.perf_counter()


def others_share(before: tuple[float, float, float] | None) -> float | None:
    """Share of all CPUs used by other processes (and steal) since `before`."""
    after = cpu_snapshot()
    if before is None or after is None or after[2] <= before[2]:
        return None
    other = (after[0] - before[0]) - (after[1] - before[1])
    return max(0.0, other / ((after[2] - before[2]) * (os.cpu_count() or 1)))


def pct(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.0f}%"


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def settings(chunk: int) -> LoadSettings:
    n = usable_cpus()
    return LoadSettings(
        n_gpu_layers=None,
        n_ctx=1024,
        n_batch=512,
        n_threads=n,
        n_threads_batch=n,
        flash_attn=False,
        seed=0,
        prefix_chunk=chunk,
    )


def prompt_for(backend: LlamaBackend, add_bos: bool) -> str:
    text = ""
    i = 0
    while backend.count_tokens(text, add_bos) < TARGET_TOKENS:
        i += 1
        text += PARAGRAPH.format(i=i)
    return text


def run_model(alias: str, chunks: list[int], repeats: int) -> dict[str, Any]:
    path = BUNDLED[alias].locate()
    if path is None:
        raise SystemExit(f"{alias} is not installed: {BUNDLED[alias].install}")
    add_bos = alias == "gemma3"  # the GGUF flags: Gemma adds BOS, SmolLM2 does not
    sampling = Sampling(0.0, 1.0, 0, 0.0, 1, (), 0, 1.0)
    backends = {c: LlamaBackend(Path(path), settings(c)) for c in chunks}
    try:
        prompt = prompt_for(backends[chunks[0]], add_bos)
        n_tokens = backends[chunks[0]].count_tokens(prompt, add_bos)
        pp: dict[int, list[float]] = {c: [] for c in chunks}
        wall: dict[int, list[float]] = {c: [] for c in chunks}
        decodes: dict[int, int] = {}
        others: list[float] = []
        texts: set[str] = set()

        def once(c: int) -> tuple[float, float]:
            backend = backends[c]
            assert backend.engine is not None
            backend.engine.clear()  # from scratch: nothing to reuse
            t0 = time.perf_counter()
            g = backend.generate(prompt, add_bos, sampling)
            ms = (time.perf_counter() - t0) * 1000
            assert g.prompt_eval_tokens == n_tokens, (g.prompt_eval_tokens, n_tokens)
            texts.add(g.text)
            return n_tokens / (g.prompt_eval_ms or float("nan")) * 1000, ms

        for c in chunks:  # warm-up, untimed
            once(c)
            decodes[c] = -(-n_tokens // backends[c].info.facts["prefix_chunk"])
        for r in range(repeats):
            order = chunks[r % len(chunks) :] + chunks[: r % len(chunks)]
            before = cpu_snapshot()
            for c in order:
                tps, ms = once(c)
                pp[c].append(tps)
                wall[c].append(ms)
            share = others_share(before)
            if share is not None:
                others.append(share)
        return {
            "alias": alias,
            "tokens": n_tokens,
            "pp": pp,
            "wall": wall,
            "decodes": decodes,
            "others": others,
            "same_output": len(texts) == 1,
        }
    finally:
        for backend in backends.values():
            backend.close()


def report(res: dict[str, Any], chunks: list[int], repeats: int) -> int:
    pp: dict[int, list[float]] = res["pp"]
    wall: dict[int, list[float]] = res["wall"]
    ref_chunk = max(chunks)
    ref = statistics.median(pp[ref_chunk])
    print(
        f"\n{res['alias']}: {res['tokens']}-token prompt from an empty cache, {repeats} "
        f"interleaved rounds, medians (others% per round: "
        f"{', '.join(pct(s) for s in res['others'])})"
    )
    print(
        f"{'chunk':>6} {'decodes':>8} {'pp tok/s':>9} {'min':>7} {'max':>7} "
        f"{'× ' + str(ref_chunk):>7} {'wall ms':>8}"
    )
    print("-" * 58)
    for c in chunks:
        med = statistics.median(pp[c])
        ratio = med / ref
        print(
            f"{c:>6} {res['decodes'][c]:>8} {med:>9.1f} {min(pp[c]):>7.1f} {max(pp[c]):>7.1f} "
            f"{ratio:>7.2f} {statistics.median(wall[c]):>8.0f}"
        )
    within = [c for c in chunks if statistics.median(pp[c]) >= (1 - TOLERANCE) * ref]
    best = min(within)
    print(f"smallest chunk within {TOLERANCE:.0%} of chunk {ref_chunk}: {best}")
    if not res["same_output"]:
        print("note: the one generated token differed between chunk sizes (expected on Gemma3)")
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--models", default="smollm2,gemma3", help="comma-separated bundled aliases")
    ap.add_argument("--chunks", default="32,64,128,256,512", help="comma-separated chunk sizes")
    args = ap.parse_args()
    chunks = sorted(int(c) for c in args.chunks.split(","))
    print(time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime()))
    print(f"settings: {settings(0)} (prefix_chunk varies)")
    picks: list[int] = []
    for alias in args.models.split(","):
        before = cpu_snapshot()
        res = run_model(alias.strip(), chunks, args.repeats)
        picks.append(report(res, chunks, args.repeats))
        print(f"other processes used {pct(others_share(before))} of the CPUs meanwhile")
    print(f"\nsmallest chunk within {TOLERANCE:.0%} of the largest on every model: {max(picks)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
