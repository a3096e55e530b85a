"""Per-token cost of a JSON-schema grammar (and of token logprobs) on each bundled model.

Same raw prompt, same greedy sampling, same max_tokens, through `LlamaBackend.generate`:

  none      no grammar
  json      grammar=schema_to_gbnf(SCHEMA): a JSON object whose one string field needs at least
            MIN_CHARS characters, so it cannot close (and generation cannot stop) before
            max_tokens: both variants generate the same number of tokens where `none` does not
            hit end-of-text first (the table shows the counts)
  logprobs  no grammar, logprobs=5 (the capture in `_LogprobCapture`: one logits row per token)

Per call: ms/token = (wall - prompt_eval_ms) / completion_tokens. The prompt stays in the KV
cache between calls (prefix reuse), so prompt_eval is a one-token replay and what remains is the
per-token loop: decode + sampling (+ grammar) + Python. `eval ms/tok` is llama.cpp's own decode
time per token (perf counters); the grammar runs in the sampler, outside it, which is why the
two differ. After one untimed warm-up per variant, the variants run interleaved in rotating order
for --repeats rounds; medians are shown. Also printed: the one-off `check_grammar` cost (parse +
one pass of the grammar over the whole vocabulary) that a run pays per distinct grammar.

    .venv/bin/python benchmarks/bench_grammar.py --repeats 5 [--tokens 32] [--models smollm2,gemma3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from promptlab.backends import Generation, LoadSettings, Sampling
from promptlab.backends.llama import LlamaBackend
from promptlab.backends.llama_grammar import schema_to_gbnf
from promptlab.models import BUNDLED

MIN_CHARS = 600
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"description": {"type": "string", "minLength": MIN_CHARS}},
    "required": ["description"],
}
PROMPT = "Paris, the capital of France, is"
VARIANTS = ("none", "json", "logprobs")


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


def others_pct(before: tuple[float, float, float] | None) -> str:
    """Share of all CPUs used by other processes (and steal) since `before`, as text."""
    after = cpu_snapshot()
    if before is None or after is None or after[2] <= before[2]:
        return "n/a"
    other = (after[0] - before[0]) - (after[1] - before[1])
    share = max(0.0, other / ((after[2] - before[2]) * (os.cpu_count() or 1)))
    return f"{100 * share:.0f}%"


def settings() -> LoadSettings:
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    n = threads or 1
    return LoadSettings(
        n_gpu_layers=None,
        n_ctx=512,
        n_batch=512,
        n_threads=n,
        n_threads_batch=n,
        flash_attn=False,
        seed=0,
    )


def call(backend: LlamaBackend, variant: str, gbnf: str, sampling: Sampling, add_bos: bool) -> Any:
    t0 = time.perf_counter()
    g: Generation = backend.generate(
        PROMPT,
        add_bos,
        sampling,
        grammar=gbnf if variant == "json" else None,
        logprobs=5 if variant == "logprobs" else None,
    )
    wall = (time.perf_counter() - t0) * 1000
    n = max(g.completion_tokens, 1)
    return {
        "ms_tok": (wall - (g.prompt_eval_ms or 0.0)) / n,
        "eval_ms_tok": (g.eval_ms or 0.0) / n,
        "tokens": g.completion_tokens,
        "text": g.text,
    }


def run_model(alias: str, repeats: int, tokens: int) -> dict[str, Any]:
    path = BUNDLED[alias].locate()
    if path is None:
        raise SystemExit(f"{alias} is not installed: {BUNDLED[alias].install}")
    add_bos = alias == "gemma3"
    backend = LlamaBackend(Path(path), settings())
    try:
        gbnf = schema_to_gbnf(SCHEMA, "bench_grammar")
        t0 = time.perf_counter()
        problem = backend.check_grammar(gbnf)
        check_ms = (time.perf_counter() - t0) * 1000
        if problem is not None:
            raise SystemExit(f"{alias}: grammar refused: {problem}")
        sampling = Sampling(0.0, 1.0, 0, 0.0, tokens, (), 0, 1.0)
        for v in VARIANTS:  # warm-up; also puts the prompt in the KV cache
            call(backend, v, gbnf, sampling, add_bos)
        rows: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
        for r in range(repeats):
            order = VARIANTS[r % 3 :] + VARIANTS[: r % 3]
            for v in order:
                rows[v].append(call(backend, v, gbnf, sampling, add_bos))
        return {"alias": alias, "rows": rows, "check_ms": check_ms, "vocab": backend.n_vocab}
    finally:
        backend.close()


def report(res: dict[str, Any], repeats: int) -> None:
    rows: dict[str, list[dict[str, Any]]] = res["rows"]

    def med(v: str, key: str) -> float:
        return statistics.median(float(x[key]) for x in rows[v])

    base = med("none", "ms_tok")
    print(
        f"\n{res['alias']} (vocab {res['vocab']}): {repeats} interleaved rounds; "
        f"check_grammar once: {res['check_ms']:.1f} ms"
    )
    print(
        f"{'variant':<10} {'tokens':>6} {'ms/token':>9} {'eval ms/tok':>12} {'overhead':>10} {'×':>6}"
    )
    print("-" * 58)
    for v in VARIANTS:
        ms = med(v, "ms_tok")
        counts = sorted({int(x["tokens"]) for x in rows[v]})
        print(
            f"{v:<10} {'/'.join(map(str, counts)):>6} {ms:>9.2f} {med(v, 'eval_ms_tok'):>12.2f} "
            f"{ms - base:>+10.2f} {ms / base:>6.2f}"
        )
    print(f"json output starts: {json.dumps(rows['json'][-1]['text'][:60])}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=32, help="max_tokens per call")
    ap.add_argument("--models", default="smollm2,gemma3", help="comma-separated bundled aliases")
    args = ap.parse_args()
    print(f"settings: {settings()}; prompt {PROMPT!r}; max_tokens {args.tokens}; greedy")
    for alias in args.models.split(","):
        # Other processes on these 2-vCPU machines slow llama.cpp's spinning threads a lot
        # (measured: 10x and worse): show how much CPU others used while each model ran.
        before = cpu_snapshot()
        report(run_model(alias.strip(), args.repeats, args.tokens), args.repeats)
        print(f"other processes used {others_pct(before)} of the CPUs meanwhile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
