"""The load-time self-test: measure, on this model, build and settings, the facts the engine relies on.

Bit-for-bit comparisons of logits (see `llama_decode.py` for the facts and
`benchmarks/probe_exactness.py` for the full measurements behind them). The backend caches each
verdict on disk, keyed by everything that could change it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from promptlab.backends.native import make_libstdcxx_global

# Before llama_cpp loads its libraries: see promptlab.backends.native.
make_libstdcxx_global()

import llama_cpp.llama_cpp as lib
import numpy as np

from promptlab.backends import LoadSettings
from promptlab.backends.llama_context import Context

PROBE_REVISION = 3  # bump when the probe changes, so cached verdicts are measured again


@dataclass(frozen=True)
class Verdict:
    """What the self-test found for one model, build and set of load settings."""

    split_invariant: bool  # chunks of >= MIN_CHUNK agree, reuse and stream copies included
    # The widest generation step (sequences decoded together) at which every narrower one too
    # gives each sequence the logits it gets alone; 1 when even two do not.
    batch_width: int
    checks: dict[str, bool]

    @property
    def batch_invariant(self) -> bool:
        return self.batch_width > 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "split_invariant": self.split_invariant,
            "batch_width": self.batch_width,
            "checks": self.checks,
            "probe_revision": PROBE_REVISION,
        }


def self_test(
    model: Any, settings: Any, tokens: list[int], other: list[int], widths: int
) -> Verdict:
    """Measure, on this model and build, the facts the engine relies on (module docstrings),
    with `tokens` (at least 40 + 8 * widths) and `other` (at least 12) as probe text, in a small
    context of its own; bit-for-bit comparisons of logits.

    Splits: one prompt decoded whole, in chunks of 8 and 16, after a prefix decoded next to other
    tokens, and after a stream copy. Batching: `widths` streams, each holding its own 8-token
    prompt; a generation step of each alone, then steps of 2, 3, ... `widths` of them together,
    every row compared with the one alone. The kernels' row count is what matters: measured on
    Gemma 3 (CPU), steps of up to 7 rows were exact and 4 rows of 8 were not, while SmolLM2 was
    exact at 16. About 40 + 9 * widths decoded tokens and `widths` steps.
    """
    x, z = tokens[:40], other[:12]
    widths = max(2, widths)
    # The decodes below are at most 40 tokens; what llama.cpp computes depends on those, not on
    # the batch capacity.
    ctx = Context(model, replace(settings, n_batch=max(64, settings.n_batch)), max(3, widths), 256)
    n_vocab = int(lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(model)))

    def row(i: int = -1) -> Any:
        ptr = lib.llama_get_logits_ith(ctx.ptr, i)
        return np.ctypeslib.as_array(ptr, shape=(n_vocab,)).copy()

    def run(seq: int, start: int, sizes: list[int], toks: list[int]) -> Any:
        for size in sizes:
            end = start + size
            ctx.decode([(toks[p], p, seq, p == end - 1) for p in range(start, end)])
            start = end
        return row()

    checks: dict[str, bool] = {}
    width = 1
    try:
        ref = run(0, 0, [40], x)
        checks["split 8+16+16"] = bool(np.array_equal(run(1, 0, [8, 16, 16], x), ref))
        # Reuse a prefix decoded next to other tokens, in another stream.
        run(2, 0, [32], x[:20] + z)
        ctx.rm(2, 20)
        checks["reuse after another prompt"] = bool(np.array_equal(run(2, 20, [20], x), ref))
        ctx.rm(1, 0)
        ctx.copy(0, 1)
        ctx.rm(1, 24)
        checks["copied stream"] = bool(np.array_equal(run(1, 24, [16], x), ref))
        # Generation steps: each stream alone, then 2..widths streams together.
        prompts = [tokens[8 * s : 8 * s + 8] for s in range(widths)]
        nexts = [int(t) for t in tokens[8 * widths : 9 * widths]]
        alone = []
        for s, prompt in enumerate(prompts):
            ctx.rm(s, 0)
            run(s, 0, [8], prompt)
            ctx.decode([(nexts[s], 8, s, True)])
            alone.append(row())
            ctx.rm(s, 8)
        for w in range(2, widths + 1):
            ctx.decode([(nexts[s], 8, s, True) for s in range(w)])
            same = all(np.array_equal(row(s), alone[s]) for s in range(w))
            for s in range(w):
                ctx.rm(s, 8)
            if not same:
                break
            width = w
        checks[f"batched steps up to {widths}"] = width == widths
        # Choice continuations: equal-length tails of two streams (each still holding its
        # 8-token prompt) decoded together, every row compared with the tail decoded alone.
        tails = [nexts[:1] + tokens[40:42], nexts[1:2] + tokens[42:44]]
        apart: list[Any] = []
        for s, tail in enumerate(tails):
            ctx.decode([(t, 8 + j, s, True) for j, t in enumerate(tail)])
            apart.extend(row(j) for j in range(len(tail)))
            ctx.rm(s, 8)
        ctx.decode(
            [(t, 8 + j, s, True) for s, tail in enumerate(tails) for j, t in enumerate(tail)]
        )
        together = [row(j) for j in range(len(apart))]
        checks["batched continuations"] = all(
            np.array_equal(a, b) for a, b in zip(apart, together, strict=True)
        )
    finally:
        ctx.free()
    split = all(v for k, v in checks.items() if not k.startswith("batched"))
    return Verdict(split, width, checks)


# --- the cached verdicts -----------------------------------------------------------------------

# The prompt `measure` (promptlab tune) repeats to length, and the self-test's probe text:
# ordinary prose, so the tokens are typical of a real prompt.
MEASURE_TEXT = (
    " The committee met on a grey Tuesday morning to review the quarterly figures. Sales in the"
    " northern region had risen for the third time in a row, while the coastal stores reported"
    " a small decline that the manager attributed to the unusually wet summer. After a short"
    " discussion, the members agreed to postpone the new advertising campaign until spring,"
    " to hire two additional staff for the warehouse, and to publish a summary of the meeting"
    " on the company website before the end of the week."
)
OTHER_TEXT = " Meanwhile, far to the south, a fishing boat came home late with an empty hold."


def verdict_file(path: Path, settings: LoadSettings, n_gpu_layers: int, widths: int) -> Path:
    # engine_id hashes the shared libraries once
    from promptlab.models import cache_dir, engine_id, model_file_identity  # noqa: PLC0415

    key = json.dumps(
        [
            PROBE_REVISION,
            model_file_identity(path),  # every part of a split model
            engine_id(),
            n_gpu_layers,
            settings.flash_attn,
            settings.n_threads,
            settings.n_threads_batch,
            settings.n_batch,
            widths,
        ]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return cache_dir() / "exactness" / f"{digest}.json"


def load_verdict(file: Path) -> Verdict | None:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        return Verdict(
            bool(data["split_invariant"]), int(data["batch_width"]), dict(data["checks"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_verdict(file: Path, verdict: Verdict) -> None:
    with contextlib.suppress(OSError):
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=".exact-")
        with os.fdopen(fd, "w") as f:
            json.dump(verdict.as_dict(), f)
        Path(tmp).replace(file)
