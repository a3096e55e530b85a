"""Why did two runs' temperature-0 outputs differ? For each differing cell of two promptlab runs
(e.g. gpu_check's n_gpu_layers -1 and 0), regenerate it with both layer settings in one process
and print the two most likely tokens, with their log-probabilities, where the two first part.

    python benchmarks/gpu_ties.py MODEL.gguf RUN_GPU RUN_CPU [--threads 16]

Generations stop at a newline, as evals/example.yaml's do.

It regenerates with logits_all=True (to read every position's top tokens), which itself changes
the GPU's numerics a little, so the parting token may differ from the runs'; the size of the
log-probability gaps is the point.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import llama_cpp

from promptlab.reports.compare import load_run, match


def top2(step: dict[str, float]) -> list[tuple[str, float]]:
    return [(t, round(float(v), 3)) for t, v in sorted(step.items(), key=lambda kv: -kv[1])[:2]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("gpu_run", type=Path)
    ap.add_argument("cpu_run", type=Path)
    ap.add_argument("--threads", type=int, default=16)
    args = ap.parse_args()
    differ = [
        d.a
        for d in match(load_run(args.gpu_run).rows, load_run(args.cpu_run).rows)
        if d.a is not None and d.b is not None and d.a.get("output") != d.b.get("output")
    ]
    models: dict[int, Any] = {
        n: llama_cpp.Llama(
            model_path=args.model,
            n_gpu_layers=n,
            n_ctx=2048,
            n_threads=args.threads,
            logits_all=True,
            verbose=False,
        )
        for n in (-1, 0)
    }
    for row in differ:
        key = (row["prompt"], row["test_index"])
        tokens = models[-1].tokenize(row["rendered_prompt"].encode(), add_bos=False, special=True)
        steps = {}
        for n, llm in models.items():
            llm.reset()
            out = llm.create_completion(
                tokens, max_tokens=24, temperature=0, logprobs=3, stop=["\n"]
            )
            steps[n] = out["choices"][0]["logprobs"]
        a, b = steps[-1], steps[0]
        i = next(
            (j for j, (x, y) in enumerate(zip(a["tokens"], b["tokens"], strict=False)) if x != y),
            None,
        )
        if i is None:
            print(*key, "no parting in the regeneration")
            continue
        print(
            *key, "token", i, "GPU", top2(a["top_logprobs"][i]), "CPU", top2(b["top_logprobs"][i])
        )


if __name__ == "__main__":
    main()
