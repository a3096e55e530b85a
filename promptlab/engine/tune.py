"""`promptlab tune MODEL`: measure prompt and generation speed by thread count and batch size.

For each thread count t (1..usable CPUs, at most 4 values, or --threads) and each batch size b
(64, 128, 256, 512, up to --prompt-tokens), the model decodes a fixed prompt of --prompt-tokens
tokens from an empty KV cache in chunks of b tokens with t threads (what a model loaded with
`n_threads_batch: t, n_batch: b` does), and for the largest b it then generates --gen-tokens
tokens greedily with t threads. Times are llama.cpp's own perf counters (`Backend.measure`), so
Python, tokenizing and sampling are left out. Every configuration runs once per round, rounds
rotate the order (so slow drift on the machine hits all alike), and the medians are reported
with the best setting for each and a `models:` snippet.

The model is loaded once (n_batch = the largest batch measured, n_threads set per measurement
with llama_set_n_threads); flash_attn off and n_gpu_layers automatic, as suites default.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from promptlab.backends import DEFAULT_PREFIX_CHUNK, LoadSettings, is_fake, open_backend
from promptlab.errors import InputError
from promptlab.models import resolve
from promptlab.plan import usable_cpus

BATCHES = (64, 128, 256, 512)
MAX_THREAD_CHOICES = 4
# The suggested n_batch is the largest within this share of the best prompt speed: a larger
# n_batch costs nothing else, a smaller one also caps prefix_chunk and the length `embed` takes.
NEAR_BEST = 0.95

# (done, total) after each measurement.
ProgressFn = Callable[[int, int], None]


def default_threads(cpus: int) -> list[int]:
    """1..cpus, at most 4 values: all of them up to 4 CPUs, else 1, a quarter, half and all."""
    if cpus <= MAX_THREAD_CHOICES:
        return list(range(1, cpus + 1))
    return sorted({1, cpus // 4, cpus // 2, cpus})


def _cpu_snapshot() -> tuple[float, float, float] | None:
    """(busy CPU seconds of the machine, CPU seconds of this process, wall seconds); Linux only."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            first = f.readline().split()
        tick = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    v = [int(x) for x in first[1:9]]
    busy = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / tick  # user nice system irq softirq steal
    t = os.times()
    return busy, t.user + t.system, time.perf_counter()


def _others_share(before: tuple[float, float, float] | None) -> float | None:
    """Share of all CPUs that other processes (and hypervisor steal) used since `before`."""
    after = _cpu_snapshot()
    if before is None or after is None or after[2] <= before[2]:
        return None
    other = (after[0] - before[0]) - (after[1] - before[1])
    return max(0.0, other / ((after[2] - before[2]) * (os.cpu_count() or 1)))


def parse_threads(text: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4] (sorted, without repeats); InputError on anything else."""
    try:
        values = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        values = []
    if not values or values[0] < 1:
        raise InputError(
            f"--threads {text!r}: expected positive whole numbers separated by commas",
            hint="e.g. --threads 1,2,4",
        )
    return values


@dataclass
class TuneResult:
    model: str  # as given on the command line
    path: str
    settings: LoadSettings  # what the model was loaded with
    threads: list[int]
    batches: list[int]
    skipped_batches: list[int]  # larger than the prompt: they would decode the same one chunk
    prompt_tokens: int
    gen_tokens: int
    repeats: int
    # tokens/s per round: prompts by (threads, n_batch), generation by threads
    pp: dict[tuple[int, int], list[float]] = field(default_factory=dict)
    tg: dict[int, list[float]] = field(default_factory=dict)
    # Share of the CPUs other processes used while measuring (None where unknown): llama.cpp's
    # spinning threads slow down a lot under contention, so above ~10% the numbers mislead.
    others_share: float | None = None

    def pp_median(self, threads: int, batch: int) -> float:
        return statistics.median(self.pp[(threads, batch)])

    def tg_median(self, threads: int) -> float:
        return statistics.median(self.tg[threads])

    @property
    def best_gen_threads(self) -> int:
        # Highest median; on an exact tie the fewer threads.
        return max(self.threads, key=lambda t: (self.tg_median(t), -t))

    @property
    def best_prompt(self) -> tuple[int, int]:
        """(n_threads_batch, n_batch): the thread count of the highest median prompt speed, and
        the largest n_batch within NEAR_BEST of that speed at that thread count."""
        threads, _ = max(self.pp, key=lambda k: (self.pp_median(*k), -k[0], -k[1]))
        top = max(self.pp_median(threads, b) for b in self.batches)
        batch = max(b for b in self.batches if self.pp_median(threads, b) >= NEAR_BEST * top)
        return threads, batch

    def snippet(self) -> str:
        threads_batch, batch = self.best_prompt
        lines = [
            "models:",
            f"  - path: {self.model}",
            f"    n_threads: {self.best_gen_threads}",
            f"    n_threads_batch: {threads_batch}",
            f"    n_batch: {batch}",
        ]
        # promptlab decodes prompts in chunks of min(prefix_chunk, n_batch), so n_batch alone
        # does not buy the speed measured for it when it is above prefix_chunk.
        used = min(DEFAULT_PREFIX_CHUNK, batch)
        if used < batch and (threads_batch, used) in self.pp:
            gain = self.pp_median(threads_batch, batch) / self.pp_median(threads_batch, used) - 1
            if gain > 1 - NEAR_BEST:
                lines += [
                    f"    # prompts are decoded in chunks of min(prefix_chunk, n_batch) = {used};",
                    f"    # prefix_chunk: {batch} would decode new prompts ~{gain:.0%} faster, but",
                    f"    # reuse shared prefixes only in whole chunks of {batch} tokens",
                ]
        return "\n".join(lines)


def tune(
    model: str,
    *,
    prompt_tokens: int = 256,
    gen_tokens: int = 64,
    repeats: int = 3,
    threads: Sequence[int] | None = None,
    batches: Sequence[int] = BATCHES,
    progress: ProgressFn | None = None,
) -> TuneResult:
    """Load `model` (bundled alias, .gguf path or fake://...) once and measure it; see module doc."""
    if prompt_tokens < 1 or gen_tokens < 1 or repeats < 1:
        raise InputError(
            "--prompt-tokens, --gen-tokens and --repeats must be at least 1",
            hint="e.g. promptlab tune smollm2 --prompt-tokens 256 --gen-tokens 64 --repeats 3",
        )
    thread_list = sorted(set(threads)) if threads else default_threads(usable_cpus())
    if thread_list[0] < 1:
        raise InputError("--threads: thread counts must be at least 1")
    ordered = sorted(set(batches))
    measured = [b for b in ordered if b <= prompt_tokens] or ordered[:1]
    skipped = [b for b in ordered if b not in measured]
    path: Path | str = model if is_fake(model) else resolve(model, Path.cwd(), "tune")
    top_batch = max(measured)
    need = prompt_tokens + gen_tokens + 1
    settings = LoadSettings(
        n_gpu_layers=None,
        n_ctx=max(512, top_batch, -(-need // 256) * 256),
        n_batch=top_batch,
        n_threads=max(thread_list),
        n_threads_batch=max(thread_list),
        flash_attn=False,
        seed=0,
    )
    result = TuneResult(
        model=model,
        path=str(path),
        settings=settings,
        threads=thread_list,
        batches=measured,
        skipped_batches=skipped,
        prompt_tokens=prompt_tokens,
        gen_tokens=gen_tokens,
        repeats=repeats,
        pp={(t, b): [] for t in thread_list for b in measured},
        tg={t: [] for t in thread_list},
    )
    # One job per (threads, batch); the largest batch's job also generates.
    jobs = [(t, b) for t in thread_list for b in measured]
    total = len(jobs) * repeats + 1
    backend = open_backend(path, settings)
    before = _cpu_snapshot()
    try:
        # Warm-up, untimed: page in the weights, start the thread pool.
        backend.measure(
            prompt_tokens, min(gen_tokens, 8), n_threads=max(thread_list), n_batch=top_batch
        )
        done = 1
        if progress is not None:
            progress(done, total)
        for r in range(repeats):
            shift = r * len(jobs) // repeats
            for t, b in jobs[shift:] + jobs[:shift]:
                gen = gen_tokens if b == top_batch else 0
                m = backend.measure(prompt_tokens, gen, n_threads=t, n_batch=b)
                result.pp[(t, b)].append(m["pp_tps"])
                if gen:
                    result.tg[t].append(m["tg_tps"])
                done += 1
                if progress is not None:
                    progress(done, total)
    finally:
        backend.close()
    result.others_share = _others_share(before)
    return result
