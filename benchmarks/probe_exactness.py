"""Which decode schedules give bit-identical logits on llama.cpp's CPU path (issue 11).

    .venv/bin/python benchmarks/probe_exactness.py [--models smollm2,gemma3] [--trials 25]

For each bundled model, with the extra (repacked) weight buffers on and off, through
llama-cpp-python's low-level API (2 threads, flash attention off, n_batch 512), comparing the
last position's logits bit for bit against one decode of the whole prompt:

  final     a 300-token prompt decoded as [300 - m, m]: for which m is it exact (1..69, 96, 128)
  random    --trials prompts of 8..1000 tokens decoded in random chunks of >= 8 tokens
  reused    a prefix decoded next to other tokens (another prompt), cut, then the rest decoded
            in one chunk of >= 8: the prompt-cache case
  small     the cached prefix's last positions decoded in chunks of 1, 2, 5 or 7, then >= 8
  batched   generation steps of 2, 3, ... 16 sequences in one decode against each sequence alone:
            the widest exact step (every narrower one exact too), with one KV stream per
            sequence (kv_unified off) and with one shared stream (on)
  pp        prompt tok/s (a 512-token decode, median of 3) and generation tok/s (64 tokens)

The table these produced is in benchmarks/README.md; backends/llama_decode.py and
backends/llama_engine.py are built on it, and `llama_selftest.self_test` rechecks the rules that
matter on every model when it loads.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time
from typing import Any

import llama_cpp as L
import numpy as np

from promptlab.backends.native import make_libstdcxx_global
from promptlab.models import BUNDLED

make_libstdcxx_global()
L.llama_backend_init()


@L.llama_log_callback  # type: ignore[untyped-decorator]
def _quiet(level: int, text: bytes, _user: Any) -> None:
    """llama.cpp logs every context it creates; the table is what this prints."""


L.llama_log_set(_quiet, ctypes.c_void_p(0))
WORDS = [
    *[
        "the",
        "old",
        "town",
        "stood",
        "by",
        "a",
        "wide",
        "river",
        "and",
        "every",
        "morning",
        "people",
        "walked",
        "down",
        "to",
        "the",
    ],
    *[
        "market",
        "to",
        "sell",
        "bread",
        "fish",
        "and",
        "cloth",
        "while",
        "children",
        "played",
        "near",
        "the",
        "water",
    ],
]


class Ctx:
    def __init__(
        self, model: Any, n_ctx: int = 2048, n_seq: int = 1, unified: bool = False
    ) -> None:
        cp = L.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch = n_ctx, 512, 512
        cp.n_threads = cp.n_threads_batch = 2
        cp.flash_attn_type = 0
        cp.n_seq_max = n_seq
        cp.kv_unified = unified
        self.ctx = L.llama_init_from_model(model, cp)
        self.mem = L.llama_get_memory(self.ctx)
        self.nv = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
        self.batch = L.llama_batch_init(512, 0, 1)

    def decode(self, items: list[tuple[int, int, int, bool]]) -> None:
        b = self.batch
        b.n_tokens = len(items)
        for j, (t, p, s, lg) in enumerate(items):
            b.token[j], b.pos[j], b.n_seq_id[j] = t, p, 1
            b.seq_id[j][0], b.logits[j] = s, lg
        assert L.llama_decode(self.ctx, b) == 0

    def row(self, i: int = -1) -> Any:
        ptr = L.llama_get_logits_ith(self.ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.nv,)).copy()

    def run(self, toks: list[int], start: int, sizes: list[int], seq: int = 0) -> Any:
        i = start
        for m in sizes:
            self.decode([(toks[i + j], i + j, seq, j == m - 1) for j in range(m)])
            i += m
        return self.row()

    def rm(self, seq: int, p0: int) -> None:
        L.llama_memory_seq_rm(self.mem, seq, p0, -1)

    def clear(self) -> None:
        L.llama_memory_clear(self.mem, True)

    def free(self) -> None:
        L.llama_batch_free(self.batch)
        L.llama_free(self.ctx)


def tokens(model: Any, n: int, seed: int) -> list[int]:
    vocab = L.llama_model_get_vocab(model)
    text = " ".join(np.random.default_rng(seed).choice(WORDS, size=n * 2)).encode()
    buf = (L.llama_token * (n * 4))()
    k = L.llama_tokenize(vocab, text, len(text), buf, n * 4, True, True)
    assert k >= n
    return list(buf[:n])


def probe(model: Any, trials: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    c = Ctx(model)
    t = tokens(model, 300, 0)
    ref = c.run(t, 0, [300])
    c.clear()
    exact = []
    for m in [*range(1, 70), 96, 128]:
        if np.array_equal(c.run(t, 0, [300 - m, m]), ref):
            exact.append(m)
        c.clear()
    out["final"] = exact
    rng = np.random.default_rng(5)
    good = 0
    for trial in range(trials):
        n = int(rng.integers(8, 1000))
        x = tokens(model, n, trial + 10)
        base = [min(512, n)] + ([n - 512] if n > 512 else [])
        if n > 512 and n - 512 < 8:
            base = [n - 8, 8]
        r0 = c.run(x, 0, base)
        c.clear()
        sizes, left = [], n
        while left:
            if left <= 512 and (left < 16 or rng.random() < 0.2):
                sizes.append(left)
                break
            k = int(rng.integers(8, min(512, left - 8) + 1))
            sizes.append(k)
            left -= k
        good += bool(np.array_equal(c.run(x, 0, sizes), r0))
        c.clear()
    out["random"] = f"{good}/{trials}"
    other = tokens(model, 600, 2)
    good = 0
    for _ in range(trials):
        k = int(rng.integers(1, 292))
        a = t[:k] + other[: int(rng.integers(1, 200))]
        c.run(a, 0, [len(a)])
        c.rm(0, k)
        good += bool(np.array_equal(c.run(t, k, [300 - k]), ref))
        c.clear()
    out["reused"] = f"{good}/{trials}"
    small = {}
    for size in (1, 2, 5, 7):
        good = 0
        for _ in range(6):
            k = int(rng.integers(40, 280))
            tail = int(rng.integers(size, 20))
            sched = [k - tail] + [size] * (tail // size) + ([tail % size] if tail % size else [])
            c.run(t[:k] + other[:5], 0, [*sched, 5])
            c.rm(0, k)
            good += bool(np.array_equal(c.run(t, k, [300 - k]), ref))
            c.clear()
        small[size] = f"{good}/6"
    out["small"] = small
    c.free()
    # Generation steps of w sequences (distinct prompts) against each alone: the widest w at
    # which every narrower step is exact too, one KV stream per sequence; and with one stream.
    prompts = [tokens(model, 24 + 7 * s, 20 + s) for s in range(16)]
    solo_rows = []
    for p in prompts:
        cs = Ctx(model, n_seq=1)
        cs.run(p, 0, [len(p)])
        cs.decode([(7, len(p), 0, True)])
        solo_rows.append(cs.row())
        cs.free()
    for unified in (False, True):
        cb = Ctx(model, n_ctx=256 * 16, n_seq=16, unified=unified)
        for s, p in enumerate(prompts):
            cb.run(p, 0, [len(p)], seq=s)
        width = 1
        for w in range(2, 17):
            cb.decode([(7, len(prompts[s]), s, True) for s in range(w)])
            same = all(np.array_equal(cb.row(s), solo_rows[s]) for s in range(w))
            for s in range(w):
                cb.rm(s, len(prompts[s]))
            if not same:
                break
            width = w
        cb.free()
        out["batched unified" if unified else "batched streams"] = f"{width}"
    pp, tg = [], []
    x = tokens(model, 512, 3)
    for _ in range(3):
        cs = Ctx(model, n_ctx=1024)
        t0 = time.perf_counter()
        cs.run(x, 0, [512])
        pp.append(512 / (time.perf_counter() - t0))
        tok = int(cs.row().argmax())
        t0 = time.perf_counter()
        for i in range(64):
            cs.decode([(tok, 512 + i, 0, True)])
            tok = int(cs.row().argmax())
        tg.append(64 / (time.perf_counter() - t0))
        cs.free()
    out["pp tok/s"] = round(statistics.median(pp))
    out["tg tok/s"] = round(statistics.median(tg), 1)
    return out


def ranges(values: list[int]) -> str:
    parts, i = [], 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ", ".join(parts) or "none"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", default="smollm2,gemma3")
    ap.add_argument("--trials", type=int, default=25)
    args = ap.parse_args(argv)
    print(f"llama-cpp-python {L.__version__}; {L.llama_print_system_info().decode()[:160]}")
    print(
        "| model | extra buffers | final chunks exact | random >= 8 | reused | cached in chunks of 1/2/5/7 | widest exact step: streams / unified | pp tok/s | tg tok/s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | ---: | ---: |")
    for alias in args.models.split(","):
        path = BUNDLED[alias].locate()
        if path is None:
            print(f"{alias}: not installed", file=sys.stderr)
            continue
        for extra in (True, False):
            mp = L.llama_model_default_params()
            mp.use_extra_bufts = extra
            model = L.llama_model_load_from_file(str(path).encode(), mp)
            r = probe(model, args.trials)
            L.llama_model_free(model)
            small = ", ".join(r["small"][k] for k in (1, 2, 5, 7))
            print(
                f"| {alias} | {'on' if extra else 'off'} | {ranges(r['final'])} | {r['random']} | "
                f"{r['reused']} | {small} | {r['batched streams']} / {r['batched unified']} | "
                f"{r['pp tok/s']} | {r['tg tok/s']} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
