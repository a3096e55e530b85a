"""A llama_context with its KV streams: the thin layer over llama.cpp's decode and memory calls.

`Context` owns one `llama_context` of `slots` separate (non-unified) streams and one reusable
`llama_batch`; `Stream` is what the engine knows about one of them. See `llama_engine.py` for why
the streams are separate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from promptlab.backends.native import make_libstdcxx_global

# Before llama_cpp loads its libraries: see promptlab.backends.native.
make_libstdcxx_global()

import llama_cpp.llama_cpp as lib


class DecodeError(RuntimeError):
    """llama_decode failed (no KV slot, a backend error)."""


def context_params(settings: Any, slots: int, slot_ctx: int, *, embeddings: bool = False) -> Any:
    cp = lib.llama_context_default_params()
    cp.n_ctx = slots * slot_ctx
    cp.n_batch = settings.n_batch
    cp.n_ubatch = settings.n_batch
    cp.n_seq_max = slots
    cp.n_threads = settings.n_threads
    cp.n_threads_batch = settings.n_threads_batch
    cp.flash_attn_type = (
        lib.LLAMA_FLASH_ATTN_TYPE_ENABLED
        if settings.flash_attn
        else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
    )
    cp.kv_unified = False  # one stream per sequence: see the module docstring
    cp.embeddings = embeddings
    cp.offload_kqv = True
    cp.no_perf = False  # `measure` (promptlab tune) reads llama.cpp's perf counters
    return cp


def tokenize(vocab: Any, text: str, add_bos: bool) -> list[int]:
    """`text` as the model's tokens. parse_special: control tokens written in a template
    (<|im_start|>) are real tokens, as in llama-cpp-python's own chat and completion paths."""
    raw = text.encode("utf-8")
    size = len(raw) + 16
    while True:
        buf = (lib.llama_token * size)()
        n = lib.llama_tokenize(vocab, raw, len(raw), buf, size, add_bos, True)
        if n >= 0:
            return list(buf[:n])
        size = -n


class Context:
    """A llama_context with `slots` streams of `slot_ctx` cells and one reusable batch."""

    def __init__(self, model: Any, settings: Any, slots: int, slot_ctx: int) -> None:
        self.slots = slots
        self.slot_ctx = slot_ctx
        self.n_batch = settings.n_batch
        self.ptr = lib.llama_init_from_model(model, context_params(settings, slots, slot_ctx))
        if not self.ptr:
            raise DecodeError(
                f"llama.cpp could not create a context of {slots} x {slot_ctx} tokens"
            )
        self.mem = lib.llama_get_memory(self.ptr)
        self.batch = lib.llama_batch_init(max(self.n_batch, slots), 0, 1)

    def decode(self, items: Sequence[tuple[int, int, int, bool]]) -> None:
        """One llama_decode of (token, position, sequence, wants logits) items."""
        b = self.batch
        b.n_tokens = len(items)
        for j, (token, pos, seq, logits) in enumerate(items):
            b.token[j] = token
            b.pos[j] = pos
            b.n_seq_id[j] = 1
            b.seq_id[j][0] = seq
            b.logits[j] = logits
        rc = lib.llama_decode(self.ptr, b)
        if rc != 0:
            raise DecodeError(f"llama_decode returned {rc}")

    def rm(self, seq: int, start: int) -> bool:
        return bool(lib.llama_memory_seq_rm(self.mem, seq, start, -1))

    def copy(self, src: int, dst: int) -> None:
        lib.llama_memory_seq_cp(self.mem, src, dst, -1, -1)

    def free(self) -> None:
        if self.ptr:
            lib.llama_batch_free(self.batch)
            lib.llama_free(self.ptr)
            self.ptr = None


@dataclass
class Stream:
    seq: int
    tokens: list[int] = field(default_factory=list)  # what its KV cells hold, positions 0..
    reusable: int = 0  # leading positions a later fill may keep (llama_decode.plan_fill)
    # The last position's logits while the stream holds exactly a scored context.
    row: Any = None
