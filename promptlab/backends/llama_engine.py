"""The llama.cpp decoding engine: KV streams, exact prefix reuse, and many cells at once.

One `llama_context` holds `slots` KV streams (llama.cpp's non-unified cache: each sequence its
own cells, laid out exactly as if it ran alone). Each stream remembers the tokens it holds, so a
new prompt keeps whatever prefix `llama_decode.plan_fill` allows and decodes only the rest. Up
to `slots` generations run at once: each step decodes one token of every active cell in a single
`llama_decode`, each cell with its own sampler chain (seed, grammar, penalties), logprob capture
and stop strings, and cells join and leave as they finish (continuous batching). A cell whose
prompt shares more with another stream than with its own copies that stream first
(`llama_memory_seq_cp`, a buffer copy) instead of decoding the prefix again.

Why this is exact (bit for bit, measured in benchmarks/probe_exactness.py and checked for each
model by `self_test` when it loads): a generation step computes one row per sequence whether the
step holds one sequence or sixteen, and with non-unified streams each sequence's attention runs
over its own cells only, so a cell's logits never depend on which other cells share its steps.
With one unified stream instead, cells interleave in the cache and the attention sums run in
another order: not exact (0/4 sequences measured), hence one stream per slot.

Sampling mirrors llama-cpp-python's `Llama._init_sampler` chain (penalties over the last 64
generated tokens, grammar, then greedy at temperature 0, else top-k, typical 1.0, top-p, min-p,
temperature and a seeded dist), and the text follows `create_completion` (see
`llama_decode.TextState`).
"""

from __future__ import annotations

import codecs
import ctypes
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from promptlab.backends.native import make_libstdcxx_global

# Before llama_cpp loads its libraries: see promptlab.backends.native.
make_libstdcxx_global()

import llama_cpp.llama_cpp as lib
import numpy as np

from promptlab.backends import (
    CellError,
    ChoiceScore,
    Generation,
    GenRequest,
    TokenLogprob,
    llama_choice,
)
from promptlab.backends.llama_context import Context, DecodeError, Stream, tokenize
from promptlab.backends.llama_decode import (
    MIN_CHUNK,
    FillMode,
    TextState,
    common_prefix,
    plan_fill,
)

_PENALTY_LAST_N = 64  # llama-cpp-python's last_n_tokens_size
_ALL_LAYERS = 0x7FFFFFFF  # llama-cpp-python's value for n_gpu_layers=-1
# Copy another stream rather than decode when that saves at least this many prompt tokens: a
# copy moves the whole stream buffer, and a copy plus the next step took 4-7 ms more than the
# step alone, against ~9 ms per token of a 36-token fill after a 450-token prefix (SmolLM2,
# 2 CPU threads, measured). At 16, batched few-shot runs re-decoded 3.5% more prompt tokens than
# one stream. Canonical fills keep whole chunks only, so smaller gains there change nothing.
_COPY_GAIN = 2
_COPY_GAIN_CANONICAL = 2 * MIN_CHUNK


@dataclass
class _Job:
    req: GenRequest
    index: int
    tokens: list[int]
    stream: Stream
    chain: Any
    max_tokens: int
    text: TextState
    k_logprobs: int | None
    started: float
    # A greedy chain attached to the stream's sequence (llama_set_sampler), so llama.cpp picks
    # the token on the device and no logits row has to come back to the host; None: sample here.
    device_chain: Any = None
    completion: list[int] = field(default_factory=list)
    steps: list[tuple[int, float, list[tuple[int, float]]]] = field(default_factory=list)
    pending: int | None = None  # sampled, decoded by the next step
    finish: str | None = None
    evaluated: int = 0
    prompt_ms: float = 0.0
    eval_ms: float = 0.0


def log_sum_exp(row: Any, scratch: Any) -> float:
    """log(sum(exp(row))) for one float32 logits row; logprob(i) = row[i] - this.

    Shifted by the max, exponentiated in float32 into a reused scratch row and summed in
    float64: 3x cheaper than converting a 262k-entry Gemma row to float64 first (8 -> 2.6 ms),
    and equal to it within 1e-8 (measured).
    """
    m = float(row.max())
    np.subtract(row, m, out=scratch)
    np.exp(scratch, out=scratch)
    return m + float(np.log(scratch.sum(dtype=np.float64)))


class Engine:
    """Generation, choice scoring and speed measurement on one model."""

    def __init__(
        self,
        model: Any,
        settings: Any,
        *,
        mode: FillMode,
        parallel: int,
        n_ctx: int,
        device_sampling: bool = False,
    ) -> None:
        self.model = model
        self.vocab = lib.llama_model_get_vocab(model)
        self.n_vocab = int(lib.llama_vocab_n_tokens(self.vocab))
        self.settings = settings
        self.mode = mode
        self.parallel = max(1, parallel)  # the most streams a batch may use
        self.n_ctx = n_ctx  # the longest sequence a cell may have (the model's n_ctx setting)
        # Greedy cells without grammar, logprobs or penalties pick their token on the device
        # (llama.cpp's experimental backend sampling): worth it where logits live on a GPU.
        self.device_sampling = device_sampling
        # Rows a batch of choice continuations may hold (0: one continuation per decode), set
        # by the backend from the self-test: see `_choice_groups`.
        self.choice_rows = 0
        self.chunk = max(1, min(settings.prefix_chunk, settings.n_batch))
        self._pieces: dict[tuple[int, bool], bytes] = {}
        self._scratch = np.empty(self.n_vocab, dtype=np.single)
        # The most KV cells all streams may take together (None: no cap), set by the backend
        # from the measured size of a cell.
        self.kv_budget_cells: int | None = None
        self.ctx: Context | None = None
        self.streams: list[Stream] = []
        self.ensure(1, n_ctx)

    # --- context ------------------------------------------------------------------------------

    def ensure(self, slots: int, need: int) -> None:
        """A context with at least `slots` streams of at least `need` cells (whole 256s)."""
        slot_ctx = min(self.n_ctx_cells(self.n_ctx), self.n_ctx_cells(need))
        if self.kv_budget_cells is not None:
            slots = max(1, min(slots, self.kv_budget_cells // slot_ctx))
        ctx = self.ctx
        if ctx is not None and ctx.slots >= slots and ctx.slot_ctx >= slot_ctx:
            return
        if ctx is not None:
            ctx.free()
        self.ctx = None
        self.ctx = Context(self.model, self.settings, slots, slot_ctx)
        self.streams = [Stream(seq) for seq in range(slots)]

    @staticmethod
    def n_ctx_cells(tokens: int) -> int:
        return max(256, -(-tokens // 256) * 256)

    def clear(self) -> None:
        """Empty every stream: the next prompt is decoded from scratch."""
        for stream in self.streams:
            self.forget(stream)

    def close(self) -> None:
        if self.ctx is not None:
            self.ctx.free()
            self.ctx = None

    def context(self) -> Context:
        assert self.ctx is not None
        return self.ctx

    # --- tokens -------------------------------------------------------------------------------

    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        return tokenize(self.vocab, text, add_bos)

    def piece(self, token: int, special: bool = False) -> bytes:
        key = (token, special)
        cached = self._pieces.get(key)
        if cached is None:
            buf = ctypes.create_string_buffer(64)
            n = lib.llama_token_to_piece(self.vocab, token, buf, 64, 0, special)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = lib.llama_token_to_piece(self.vocab, token, buf, -n, 0, special)
            cached = buf.raw[:n]
            self._pieces[key] = cached
        return cached

    def row(self, index: int) -> Any:
        ptr = lib.llama_get_logits_ith(self.context().ptr, index)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    # --- filling a stream ---------------------------------------------------------------------

    def fill(self, stream: Stream, tokens: list[int]) -> int:
        """Make `stream` hold exactly `tokens` (non-empty), the last position's logits computed
        by the last decode; returns how many tokens were decoded."""
        ctx = self.context()
        stream.row = None
        plan = plan_fill(
            stream.tokens,
            stream.reusable,
            tokens,
            mode=self.mode,
            n_batch=ctx.n_batch,
            chunk=self.chunk,
        )
        keep = plan.keep
        if len(stream.tokens) > keep and not ctx.rm(stream.seq, keep):
            # A partial removal fails on recurrent memory: start from an empty stream.
            ctx.rm(stream.seq, 0)
            stream.tokens, stream.reusable = [], 0
            plan = plan_fill([], 0, tokens, mode=self.mode, n_batch=ctx.n_batch, chunk=self.chunk)
            keep = 0
        del stream.tokens[keep:]
        stream.reusable = min(stream.reusable, keep)
        start = keep
        last = len(plan.chunks) - 1
        # tokens/reusable advance chunk by chunk, so they stay true to the cache if a decode
        # fails or Ctrl-C arrives between chunks.
        for i, (size, reusable) in enumerate(zip(plan.chunks, plan.reusable_after, strict=True)):
            end = start + size
            ctx.decode(
                [(tokens[p], p, stream.seq, i == last and p == end - 1) for p in range(start, end)]
            )
            stream.tokens.extend(tokens[start:end])
            stream.reusable = reusable
            start = end
        return plan.decoded

    def stream_for(self, tokens: list[int], free: Sequence[Stream]) -> tuple[Stream, int]:
        """The free stream to use for `tokens`, after copying a better one into it if that
        saves enough decoding; and the reusable prefix it then holds."""

        def usable(s: Stream) -> int:
            return common_prefix(s.tokens, tokens, s.reusable)

        def kept(s: Stream) -> int:  # what a fill would really keep (llama_decode.plan_fill)
            if self.mode is FillMode.SPLIT_INVARIANT:
                return min(usable(s), max(0, len(tokens) - MIN_CHUNK))
            return usable(s)

        least = _COPY_GAIN if self.mode is FillMode.SPLIT_INVARIANT else _COPY_GAIN_CANONICAL
        best = max(free, key=kept)
        gain = usable(best)
        donor = max(self.streams, key=kept)
        if donor is not best and kept(donor) - kept(best) >= least:
            ctx = self.context()
            ctx.copy(donor.seq, best.seq)
            best.tokens = list(donor.tokens)
            best.reusable = donor.reusable
            best.row = None
            gain = usable(best)
        return best, gain

    # --- generation ---------------------------------------------------------------------------

    def generate(
        self, requests: Sequence[GenRequest]
    ) -> Iterator[tuple[GenRequest, Generation | CellError]]:
        """Every request's generation, yielded as each finishes (not in request order)."""
        ready: list[tuple[GenRequest, list[int], int]] = []
        for req in requests:
            try:
                tokens, max_tokens = self._check(req)
            except CellError as exc:
                yield req, exc
                continue
            ready.append((req, tokens, max_tokens))
        if not ready:
            return
        need = max(len(t) + m for _, t, m in ready)
        self.ensure(min(self.parallel, len(ready)), need)
        queue = deque(ready)
        jobs: dict[int, _Job] = {}
        index = 0
        try:
            while queue or jobs:
                while queue and len(jobs) < self.context().slots:
                    req, tokens, max_tokens = queue.popleft()
                    free = [s for s in self.streams if s.seq not in jobs]
                    stream, _ = self.stream_for(tokens, free)
                    try:
                        job = self._start(req, tokens, max_tokens, stream, index)
                    except CellError as exc:
                        yield req, exc
                        continue
                    index += 1
                    if job.finish is not None:
                        yield req, self._result(job)
                    else:
                        jobs[stream.seq] = job
                if not jobs:
                    continue
                try:
                    self._step(list(jobs.values()))
                except DecodeError as exc:
                    failed = list(jobs.values())
                    jobs.clear()
                    for job in failed:
                        self._drop(job)
                        self.forget(job.stream)
                        yield job.req, CellError(f"llama.cpp: {exc}")
                    continue
                for seq in [s for s, j in jobs.items() if j.finish is not None]:
                    job = jobs.pop(seq)
                    yield job.req, self._result(job)
        finally:
            for job in jobs.values():
                self._drop(job)

    def _check(self, req: GenRequest) -> tuple[list[int], int]:
        if req.logprobs is not None and req.logprobs < 0:
            raise CellError(f"logprobs must be 0 or more, got {req.logprobs}")
        tokens = self.tokenize(req.text, req.add_bos)
        if len(tokens) >= self.n_ctx:
            raise CellError(
                f"prompt is {len(tokens)} tokens but n_ctx is {self.n_ctx}",
                hint="raise n_ctx in models: or shorten the prompt",
            )
        if not tokens:
            raise CellError(
                "cannot generate from an empty prompt",
                hint="give a prompt (or a model that adds BOS)",
            )
        # As create_completion: max_tokens shrinks to what the context can still hold.
        return tokens, min(req.sampling.max_tokens, self.n_ctx - len(tokens))

    def _chain(self, req: GenRequest) -> Any:
        s = req.sampling
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())

        def add(sampler: Any) -> None:
            lib.llama_sampler_chain_add(chain, sampler)

        add(
            lib.llama_sampler_init_penalties(
                self.n_vocab, _PENALTY_LAST_N, s.repeat_penalty, 0.0, 0.0
            )
        )
        if req.grammar is not None:
            grammar = lib.llama_sampler_init_grammar(
                self.vocab, req.grammar.encode("utf-8"), b"root"
            )
            if not grammar:
                lib.llama_sampler_free(chain)
                raise CellError(
                    "llama.cpp refused the grammar",
                    hint="fix the GBNF grammar (its start rule is `root`)",
                )
            add(grammar)
        if s.temperature == 0.0:
            add(lib.llama_sampler_init_greedy())
        else:
            add(lib.llama_sampler_init_top_k(s.top_k))
            add(lib.llama_sampler_init_typical(1.0, 1))
            add(lib.llama_sampler_init_top_p(s.top_p, 1))
            add(lib.llama_sampler_init_min_p(s.min_p, 1))
            add(lib.llama_sampler_init_temp(s.temperature))
            add(lib.llama_sampler_init_dist(s.seed))
        return chain

    def _start(
        self, req: GenRequest, tokens: list[int], max_tokens: int, stream: Stream, index: int
    ) -> _Job:
        chain = self._chain(req)
        job = _Job(
            req=req,
            index=index,
            tokens=tokens,
            stream=stream,
            chain=chain,
            max_tokens=max_tokens,
            text=TextState(req.sampling.stop),
            k_logprobs=req.logprobs,
            started=time.perf_counter(),
        )
        if self.device_sampling and self._device_eligible(req):
            self._attach_device_chain(job)
        try:
            job.evaluated = self.fill(stream, tokens)
        except DecodeError as exc:
            self._drop(job)
            self.forget(stream)
            raise CellError(f"llama.cpp: {exc}") from None
        job.prompt_ms = (time.perf_counter() - job.started) * 1000
        if max_tokens <= 0:
            job.finish = "length"
        else:
            self._accept(job, self._sample(job, -1))
        return job

    @staticmethod
    def _device_eligible(req: GenRequest) -> bool:
        s = req.sampling
        return (
            s.temperature == 0.0
            and req.grammar is None
            and req.logprobs is None
            and s.repeat_penalty == 1.0
        )

    def _attach_device_chain(self, job: _Job) -> None:
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        if lib.llama_set_sampler(self.context().ptr, job.stream.seq, chain):
            job.device_chain = chain
        else:  # this backend cannot sample on the device: the host chain does it
            lib.llama_set_sampler(self.context().ptr, job.stream.seq, None)
            lib.llama_sampler_free(chain)

    def _sample(self, job: _Job, index: int) -> int:
        if job.device_chain is not None:
            token = int(lib.llama_get_sampled_token_ith(self.context().ptr, index))
            if token >= 0:
                return token
        if job.k_logprobs is not None:
            row = self.row(index)
            lse = log_sum_exp(row, self._scratch)
            token = int(lib.llama_sampler_sample(job.chain, self.context().ptr, index))
            top: list[tuple[int, float]] = []
            if job.k_logprobs > 0:
                k = min(job.k_logprobs, self.n_vocab)
                cand = np.argpartition(row, -k)[-k:]
                # Highest first; equal logits by token id, so the order is deterministic.
                cand = cand[np.lexsort((cand, -row[cand]))]
                top = [(int(i), float(row[i]) - lse) for i in cand]
            job.steps.append((token, float(row[token]) - lse, top))
            return token
        return int(lib.llama_sampler_sample(job.chain, self.context().ptr, index))

    def _accept(self, job: _Job, token: int) -> None:
        if lib.llama_vocab_is_eog(self.vocab, token):
            job.finish = "stop"
            return
        job.completion.append(token)
        if job.text.add(self.piece(token)):
            job.finish = "stop"
        elif len(job.completion) >= job.max_tokens:
            job.finish = "length"
        else:
            job.pending = token

    def _step(self, jobs: list[_Job]) -> None:
        """One decode: the pending token of every job; then sample each."""
        ctx = self.context()
        t0 = time.perf_counter()
        items = []
        for job in jobs:
            assert job.pending is not None
            items.append((job.pending, len(job.stream.tokens), job.stream.seq, True))
        ctx.decode(items)
        for i, job in enumerate(jobs):
            assert job.pending is not None
            job.stream.tokens.append(job.pending)  # in the cache now, but never reusable
            job.stream.row = None
            job.pending = None
            self._accept(job, self._sample(job, i))
        share = (time.perf_counter() - t0) * 1000 / len(jobs)
        for job in jobs:
            job.eval_ms += share

    def forget(self, stream: Stream) -> None:
        """Empty a stream whose cells can no longer be trusted (a failed decode)."""
        self.context().rm(stream.seq, 0)
        stream.tokens, stream.reusable, stream.row = [], 0, None

    def _drop(self, job: _Job) -> None:
        if job.device_chain is not None:
            if self.ctx is not None:
                lib.llama_set_sampler(self.ctx.ptr, job.stream.seq, None)
            lib.llama_sampler_free(job.device_chain)
            job.device_chain = None
        if job.chain is not None:
            lib.llama_sampler_free(job.chain)
            job.chain = None

    def _result(self, job: _Job) -> Generation:
        self._drop(job)
        n = len(job.completion)
        return Generation(
            text=job.text.text,
            prompt_tokens=len(job.tokens),
            completion_tokens=n,
            finish_reason=job.finish or "stop",
            prompt_eval_tokens=job.evaluated,
            prompt_eval_ms=round(job.prompt_ms, 3),
            eval_ms=round(job.eval_ms, 3),
            tokens=self._token_logprobs(job) if job.k_logprobs is not None else None,
            wall_ms=round((time.perf_counter() - job.started) * 1000, 3),
        )

    def _token_logprobs(self, job: _Job) -> list[TokenLogprob]:
        """One TokenLogprob per completion token, texts split so that they concatenate to the
        text. The step that sampled an end-of-generation token is dropped (it is not part of
        the completion). Bytes go through one incremental UTF-8 decoder (errors ignored), so a
        character split across tokens belongs to the token that completes it and earlier
        tokens get "". When a stop string cut the text, the tokens still cover everything
        generated. Control tokens render as "" in the text; in `top` they render with their
        markup, and a piece that is not valid UTF-8 on its own shows U+FFFD there."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        steps = job.steps[: len(job.completion)]
        out: list[TokenLogprob] = []
        for i, (token, lp, top) in enumerate(steps):
            text = decoder.decode(self.piece(token), final=i == len(steps) - 1)
            alternatives = tuple(
                (self.piece(t, special=True).decode("utf-8", "replace"), tlp) for t, tlp in top
            )
            out.append(TokenLogprob(text, lp, alternatives))
        return out

    # --- multiple choice ----------------------------------------------------------------------

    # --- multiple choice (llama_choice.py) -----------------------------------------------------

    def score_choices(
        self, ctx_tokens: list[int], conts: list[list[int]], *, fresh: bool = False
    ) -> list[ChoiceScore]:
        """Log-likelihood of each continuation after the context: `llama_choice.score_choices`."""
        return llama_choice.score_choices(self, ctx_tokens, conts, fresh=fresh)

    # --- measuring (promptlab tune) -----------------------------------------------------------

    def measure(
        self, tokens: list[int], gen_tokens: int, *, n_threads: int, n_batch: int
    ) -> dict[str, float]:
        """Engine time (llama.cpp's perf counters) of one prompt decode in chunks of `n_batch`
        from an empty stream, then `gen_tokens` greedy one-token decodes (argmax outside the
        timed part). Leaves the stream empty and the load thread counts in place."""
        self.ensure(1, len(tokens) + gen_tokens)
        ctx = self.context()
        stream = self.streams[0]
        lib.llama_set_n_threads(ctx.ptr, n_threads, n_threads)
        try:
            ctx.rm(stream.seq, 0)
            lib.llama_perf_context_reset(ctx.ptr)
            for start in range(0, len(tokens), n_batch):
                part = tokens[start : start + n_batch]
                ctx.decode([(t, start + j, 0, j == len(part) - 1) for j, t in enumerate(part)])
            lib.llama_synchronize(ctx.ptr)
            perf = lib.llama_perf_context(ctx.ptr)
            # A single-token prompt counts as an "eval" in llama.cpp's counters.
            pp_ms = float(perf.t_p_eval_ms) + float(perf.t_eval_ms)
            tg_ms = 0.0
            if gen_tokens:
                token = int(self.row(-1).argmax())
                lib.llama_perf_context_reset(ctx.ptr)
                for pos in range(len(tokens), len(tokens) + gen_tokens):
                    ctx.decode([(token, pos, 0, True)])
                    token = int(self.row(-1).argmax())  # synchronizes, as sampling would
                tg_ms = float(lib.llama_perf_context(ctx.ptr).t_eval_ms)
        except DecodeError as exc:
            raise CellError(f"llama.cpp: {exc}") from None
        finally:
            ctx.rm(stream.seq, 0)
            stream.tokens, stream.reusable, stream.row = [], 0, None
            lib.llama_set_n_threads(ctx.ptr, self.settings.n_threads, self.settings.n_threads_batch)
        return {
            "pp_tokens": float(len(tokens)),
            "pp_ms": pp_ms,
            "pp_tps": len(tokens) / pp_ms * 1000 if pp_ms > 0 else 0.0,
            "tg_tokens": float(gen_tokens),
            "tg_ms": tg_ms,
            "tg_tps": gen_tokens / tg_ms * 1000 if tg_ms > 0 else 0.0,
        }
