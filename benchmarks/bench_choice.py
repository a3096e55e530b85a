"""Multiple-choice scoring: one shared context vs. one continuation at a time vs. generating.

For a 4-option question after a few-shot block, on each bundled model (in one process):

  (i)   shared:  `LlamaBackend.score_choices(context, add_bos, choices)`: the context is decoded
                 once, each choice's tokens after it, logits read straight from llama.cpp.
  (ii)  scratch: the same call once per choice with the KV cache reset before each, so every
                 choice pays for the whole context again (no prefix sharing), as lm-eval style
                 loglikelihood requests do without a cache.
  (iv)  apart:   (i) with each continuation in a decode of its own (engine.choice_rows = 0),
                 where (i) decodes equal-length continuations together, one stream each (what
                 `parallel: auto` does on the CPU when the load-time self-test allows it).
  (iii) gen:     greedy `generate(context, max_tokens=16)` and a case-insensitive substring check
                 for each option (the first option found is the pick).

Every timed call starts from an empty KV cache (reset untimed), so no method inherits another's
prefix. After one untimed warm-up of each, the methods run interleaved, rotating their order every
round, for --repeats rounds; the table shows medians, minimums and each median's ratio to (i).

    .venv/bin/python benchmarks/bench_choice.py --repeats 7 [--models smollm2,gemma3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from promptlab.backends import ChoiceScore, LoadSettings, Sampling
from promptlab.backends.llama import LlamaBackend
from promptlab.models import BUNDLED

FEW_SHOT = """The following are multiple choice questions about general knowledge. Answer with the
full text of the correct option.

Question: Which gas do plants absorb from the air for photosynthesis?
Options: Oxygen; Carbon dioxide; Nitrogen; Helium
Answer: Carbon dioxide

Question: Who wrote the play Romeo and Juliet?
Options: Charles Dickens; Jane Austen; William Shakespeare; Mark Twain
Answer: William Shakespeare

Question: What is the largest ocean on Earth?
Options: Atlantic Ocean; Indian Ocean; Arctic Ocean; Pacific Ocean
Answer: Pacific Ocean

Question: Which planet is known as the Red Planet?
Options: Venus; Mars; Jupiter; Saturn
Answer: Mars

Question: Who painted the Mona Lisa?
Options: Vincent van Gogh; Pablo Picasso; Leonardo da Vinci; Claude Monet
Answer:"""
CHOICES = [" Vincent van Gogh", " Pablo Picasso", " Leonardo da Vinci", " Claude Monet"]
GEN_TOKENS = 16


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
        n_ctx=1024,
        n_batch=512,
        n_threads=n,
        n_threads_batch=n,
        flash_attn=False,
        seed=0,
    )


def reset(backend: LlamaBackend) -> None:
    assert backend.engine is not None
    backend.engine.clear()


def pick(scores: list[ChoiceScore]) -> int:
    return max(range(len(scores)), key=lambda i: scores[i].logprob)


class Methods:
    def __init__(self, backend: LlamaBackend, add_bos: bool) -> None:
        self.backend = backend
        self.add_bos = add_bos
        self.sampling = Sampling(0.0, 1.0, 0, 0.0, GEN_TOKENS, (), 0, 1.0)
        self.last: dict[str, Any] = {}

    def shared(self) -> None:
        scores = self.backend.score_choices(FEW_SHOT, self.add_bos, CHOICES)
        self.last["shared"] = scores

    def apart(self) -> None:
        engine: Any = self.backend.engine
        rows, engine.choice_rows = engine.choice_rows, 0
        try:
            self.last["apart"] = self.backend.score_choices(FEW_SHOT, self.add_bos, CHOICES)
        finally:
            engine.choice_rows = rows

    def scratch(self) -> None:
        scores: list[ChoiceScore] = []
        for choice in CHOICES:
            reset(self.backend)
            scores.extend(self.backend.score_choices(FEW_SHOT, self.add_bos, [choice]))
        self.last["scratch"] = scores

    def gen(self) -> None:
        g = self.backend.generate(FEW_SHOT, self.add_bos, self.sampling)
        found = [i for i, c in enumerate(CHOICES) if c.strip().lower() in g.text.lower()]
        self.last["gen"] = (g.text, found[0] if found else None, g.completion_tokens)


def run_model(alias: str, repeats: int) -> dict[str, Any]:
    path = BUNDLED[alias].locate()
    if path is None:
        raise SystemExit(f"{alias} is not installed: {BUNDLED[alias].install}")
    add_bos = alias == "gemma3"  # the GGUF flags: Gemma adds BOS, SmolLM2 does not
    backend = LlamaBackend(Path(path), settings())
    try:
        m = Methods(backend, add_bos)
        methods: dict[str, Callable[[], None]] = {
            "shared": m.shared,
            "apart": m.apart,
            "scratch": m.scratch,
            "gen": m.gen,
        }
        names = list(methods)
        for name in names:  # warm-up, untimed
            reset(backend)
            methods[name]()
        times: dict[str, list[float]] = {name: [] for name in names}
        for r in range(repeats):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                reset(backend)
                t0 = time.perf_counter()
                methods[name]()
                times[name].append((time.perf_counter() - t0) * 1000)
        n_ctx_tokens = backend.count_tokens(FEW_SHOT, add_bos)
        n_choice_tokens = [s.n_tokens for s in m.last["shared"]]
        diff = max(
            abs(a.logprob - b.logprob)
            for a, b in zip(m.last["shared"], m.last["scratch"], strict=True)
        )
        return {
            "alias": alias,
            "times": times,
            "context_tokens": n_ctx_tokens,
            "choice_tokens": n_choice_tokens,
            "shared_pick": pick(m.last["shared"]),
            "scratch_pick": pick(m.last["scratch"]),
            "gen": m.last["gen"],
            "max_abs_diff": diff,
            "apart_equal": m.last["apart"] == m.last["shared"],
            "choice_rows": backend.info.facts["choice_rows"],
            "scores": [round(s.logprob, 3) for s in m.last["shared"]],
        }
    finally:
        backend.close()


def report(res: dict[str, Any], repeats: int) -> None:
    times: dict[str, list[float]] = res["times"]
    base = statistics.median(times["shared"])
    print(
        f"\n{res['alias']}: context {res['context_tokens']} tokens, choices "
        f"{res['choice_tokens']} tokens, {repeats} interleaved rounds"
    )
    print(f"{'method':<34} {'median ms':>10} {'min ms':>9} {'× (i)':>7}")
    print("-" * 63)
    labels = {
        "shared": "(i) score_choices, shared context",
        "apart": "(iv) (i), one continuation a decode",
        "scratch": "(ii) one choice at a time, scratch",
        "gen": f"(iii) generate {GEN_TOKENS} + substring",
    }
    for name, label in labels.items():
        med = statistics.median(times[name])
        print(f"{label:<34} {med:>10.1f} {min(times[name]):>9.1f} {med / base:>7.2f}")
    text, found, n_gen = res["gen"]
    print(
        f"picks: (i) {CHOICES[res['shared_pick']].strip()!r}, (ii) "
        f"{CHOICES[res['scratch_pick']].strip()!r}, (iii) "
        f"{CHOICES[found].strip() if found is not None else None!r} from {n_gen} tokens "
        f"{text[:40]!r}"
    )
    print(f"(i) logprobs {res['scores']}; max |(i) - (ii)| = {res['max_abs_diff']:.2e}")
    print(
        f"continuations decoded together: up to {res['choice_rows']} rows; "
        f"(i) == (iv) bit for bit: {res['apart_equal']}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--models", default="smollm2,gemma3", help="comma-separated bundled aliases")
    args = ap.parse_args()
    print(f"settings: {settings()}")
    for alias in args.models.split(","):
        # Other processes on these 2-vCPU machines slow llama.cpp's spinning threads a lot
        # (measured: 10x and worse): show how much CPU others used while each model ran.
        before = cpu_snapshot()
        report(run_model(alias.strip(), args.repeats), args.repeats)
        print(f"other processes used {others_pct(before)} of the CPUs meanwhile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
