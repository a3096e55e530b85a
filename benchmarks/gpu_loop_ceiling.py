"""How fast can a Python loop generate, whatever promptlab does? Greedy tokens/s three ways.

- create_completion: llama-cpp-python's high-level call (what promptlab uses);
- Llama.generate: its token generator, without detokenizing or stop strings;
- ctypes greedy loop: llama_decode + llama_sampler_sample(greedy), nothing else.

Each rate is (tokens - 1) / (time for N tokens - time for 1 token), so prompt processing cancels
out; median of --rounds. llama-bench's tg test is the other reference: it decodes without ever
reading logits back, which any sampler has to do.

    python benchmarks/gpu_loop_ceiling.py MODEL.gguf [--ngl -1] [--threads 16] [--tokens 128]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import llama_cpp
import llama_cpp.llama_cpp as lib

PROMPT = b"<|im_start|>user\nWrite a long story about a robot.<|im_end|>\n<|im_start|>assistant\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--ngl", type=int, default=-1)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    llm: Any = llama_cpp.Llama(
        model_path=args.model,
        n_gpu_layers=args.ngl,
        n_ctx=4096,
        n_batch=512,
        n_ubatch=512,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    prompt = llm.tokenize(PROMPT, special=True)

    def completion(n: int) -> tuple[float, int]:
        llm.reset()
        t = time.perf_counter()
        out = llm.create_completion(prompt, max_tokens=n, temperature=0)
        return time.perf_counter() - t, int(out["usage"]["completion_tokens"])

    def generator(n: int) -> tuple[float, int]:
        llm.reset()
        k = 0
        t = time.perf_counter()
        for _ in llm.generate(prompt, temp=0, top_k=1):
            k += 1
            if k == n:
                break
        return time.perf_counter() - t, k

    def bare(n: int) -> tuple[float, int]:
        llm.reset()
        lib.llama_memory_clear(lib.llama_get_memory(llm.ctx), True)
        sampler = lib.llama_sampler_init_greedy()
        tokens = (lib.llama_token * len(prompt))(*prompt)
        one = (lib.llama_token * 1)()
        t = time.perf_counter()
        lib.llama_decode(llm.ctx, lib.llama_batch_get_one(tokens, len(prompt)))
        k = 0
        while True:
            one[0] = lib.llama_sampler_sample(sampler, llm.ctx, -1)
            k += 1
            if k == n:
                break
            lib.llama_decode(llm.ctx, lib.llama_batch_get_one(one, 1))
        elapsed = time.perf_counter() - t
        lib.llama_sampler_free(sampler)
        return elapsed, k

    ways: list[tuple[str, Callable[[int], tuple[float, int]]]] = [
        ("create_completion", completion),
        ("Llama.generate", generator),
        ("ctypes greedy loop", bare),
    ]
    for name, run in ways:
        run(8)  # warm-up
        rates = []
        k = 0
        for _ in range(args.rounds):
            t1, _ = run(1)
            tn, k = run(args.tokens)
            rates.append((k - 1) / (tn - t1))
        print(
            f"{name}: median {statistics.median(rates):.0f} tok/s over {args.rounds} ({k} tokens)"
        )


if __name__ == "__main__":
    main()
