"""The llama.cpp backend (llama-cpp-python). The only module that imports `llama_cpp` (besides
`llama_grammar.py`, which uses its pure-Python JSON-schema converter).

Everything llama-cpp-python would otherwise default is set explicitly (n_ctx 512, n_gpu_layers 0,
n_threads cpu_count()//2, per-API temperatures, a process-wide fixed seed, flash_attn off), and
its logs go through our own callback because `verbose=False` swallows real load errors.

Beyond plain completion, this module does four things llama-cpp-python has no safe API for:

- Canonical chunking of every prompt evaluation (`_fill`). On this CPU build Gemma3's logits
  depend on how a token sequence was split into decode calls (up to ~0.3 nats), and SmolLM2's
  too when a position is decoded on its own (0.1 nats measured, when llama-cpp-python replays
  the last token of an identical prompt), so llama-cpp-python's own longest-common-prefix reuse
  makes a result depend on what the previous call left in the KV cache. Instead, prompts are decoded in chunks whose
  boundaries sit at absolute positions that are multiples of C = min(prefix_chunk, n_batch), and
  cached KV is reused only up to such a multiple (and only where it was itself decoded in whole
  canonical chunks). Every KV position is then computed in the same chunk as in a from-scratch
  evaluation, and results are bit-identical whatever ran before, while shared prefixes of C
  tokens or more are still reused.

- Token logprobs without `logits_all=True` (which keeps n_ctx x n_vocab floats, 2 GB on Gemma3):
  while `generate(logprobs=k)` runs, the instance's `sample` method is wrapped to read the raw
  logits row llama.cpp is about to sample from, and the token it picked (`_LogprobCapture`).
- Multiple-choice log-likelihood (`score_choices`) straight from the logits, sharing one
  evaluation of the context between all choices and keeping llama-cpp-python's KV-prefix
  bookkeeping (`n_tokens`, `input_ids`) consistent so the next `generate` is unaffected. Not
  `echo=True` + logprobs: that pairs logits with the wrong tokens when there is no BOS
  (SmolLM2) and sorts the whole vocabulary in Python per token (NOTES §5).
- Grammar validation before use: llama.cpp returns NULL for a grammar it cannot parse and
  llama-cpp-python adds that NULL to the sampler chain unchecked, which segfaults on the first
  token (measured); a grammar no token can start aborts the process (GGML_ABORT, measured).
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from promptlab.backends.native import make_libstdcxx_global

# Before llama_cpp loads its libraries: see promptlab.backends.native.
make_libstdcxx_global()

import llama_cpp  # after make_libstdcxx_global, deliberately
import llama_cpp._internals as llama_internals
import llama_cpp.llama_cpp as llama_lib
import llama_cpp.llama_grammar as llama_grammar
import numpy as np

from promptlab.backends import (
    CellError,
    ChoiceScore,
    Generation,
    LoadSettings,
    RuntimeInfo,
    Sampling,
    TokenLogprob,
)
from promptlab.errors import BackendError

# --- logging ---------------------------------------------------------------------------------
# ggml levels: 1 debug, 2 info, 3 warn, 4 error, 5 cont. llama-cpp-python's own mapping is off by
# one, which is why real errors vanish with verbose=False; we keep every line ourselves.
_LOG: list[tuple[int, str]] = []
_LOG_LOCK = threading.Lock()
_LOG_LIMIT = 4000


@llama_lib.llama_log_callback  # type: ignore[untyped-decorator]
def _on_log(level: int, text: bytes, _user: Any) -> None:
    with _LOG_LOCK:
        if len(_LOG) < _LOG_LIMIT:
            _LOG.append((int(level), text.decode("utf-8", "replace")))


def _install_log() -> None:
    llama_lib.llama_log_set(_on_log, ctypes.c_void_p(0))


_install_log()


def _take_log() -> list[tuple[int, str]]:
    with _LOG_LOCK:
        out = list(_LOG)
        _LOG.clear()
    return out


# --- build facts -----------------------------------------------------------------------------


def system_info() -> str:
    return str(llama_lib.llama_print_system_info().decode("utf-8", "replace")).strip()


def build_has_amx(info: str | None = None) -> bool:
    """True when ggml was compiled with AMX kernels (a GGML_NATIVE build on a Sapphire Rapids+ CPU)."""
    info = system_info() if info is None else info
    return re.search(r"\bAMX_INT8 = 1\b", info) is not None


def supports_gpu_offload() -> bool:
    return bool(llama_lib.llama_supports_gpu_offload())


@contextlib.contextmanager
def _without_extra_buffers(active: bool) -> Iterator[None]:
    """Load with `use_extra_bufts=False` (no AMX, no repack buffers).

    ggml's AMX matmul segfaults on the first decode on these Xeons (llama.cpp#20824). The Python
    `Llama` constructor has no parameter for it, but builds its params from
    `llama_cpp.llama_model_default_params()` at call time, so we wrap that function for the
    duration of the load only.
    """
    if not active:
        yield
        return
    original = llama_lib.llama_model_default_params

    def patched() -> Any:
        params = original()
        params.use_extra_bufts = False
        return params

    llama_lib.llama_model_default_params = patched
    try:
        yield
    finally:
        llama_lib.llama_model_default_params = original


# --- grammar validation --------------------------------------------------------------------


@contextlib.contextmanager
def _stderr_to(sink: list[str]) -> Iterator[None]:
    """Redirect file descriptor 2 to a temporary file and append what was written to `sink`.

    llama.cpp's grammar parser reports syntax errors with a bare `fprintf(stderr, …)` (not through
    the log callback), and the library must print nothing. This is process-wide for the few
    microseconds of a parse: another thread's stderr output in that window lands in `sink` too.
    """
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all (a daemon): nothing can be printed anyway
        yield
        return
    try:
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
            tmp.seek(0)
            sink.append(tmp.read().decode("utf-8", "replace"))
    finally:
        os.close(saved)


def _grammar_problem(stderr_text: str, log: list[tuple[int, str]]) -> str:
    """The one-line reason llama.cpp gave for refusing a grammar."""
    # e.g. "parse: error parsing grammar: expecting ')' at <rest of the grammar>"
    m = re.search(r"error parsing grammar: ([^\n]*)", stderr_text)
    errors = [t.strip() for lvl, t in log if lvl == 4 and t.strip()]
    # "failed to parse grammar" only repeats the parser's message; the others (left recursion,
    # missing root) are the real reason.
    specific = [e for e in errors if e != "failed to parse grammar"]
    detail = m.group(1).strip() if m else (specific[0] if specific else "")
    detail = " ".join(detail.split()) or "parse error"
    if len(detail) > 160:
        detail = detail[:157] + "..."
    return detail


# --- logprob capture -------------------------------------------------------------------------


def _log_sum_exp(row: Any, scratch: Any) -> float:
    """log(sum(exp(row))) for one float32 logits row; logprob(i) = row[i] - this.

    Shifted by the max, exponentiated in float32 into a reused scratch row and summed in
    float64: 3x cheaper than converting a 262k-entry Gemma row to float64 first (8 -> 2.6 ms),
    and equal to it within 1e-8 (measured).
    """
    m = float(row.max())
    np.subtract(row, m, out=scratch)
    np.exp(scratch, out=scratch)
    return m + float(np.log(scratch.sum(dtype=np.float64)))


class _LogprobCapture:
    """Records, for every token `Llama.generate` samples, its logprob and the top-k alternatives.

    How: `Llama.generate` calls `self.sample(..., idx=…)` once per generated token, and `sample`
    runs llama.cpp's sampler chain on the logits row of the last decoded position. We shadow
    `sample` on this instance only (an instance attribute, removed in `finally`) with a wrapper
    that copies that row (`llama_get_logits_ith`, the same row the chain reads), calls the real
    `sample`, and records the token it returned. Nothing else in the chain changes, so the output
    is byte-identical to a run without logprobs, and no `logits_all=True` is needed: only one
    row (n_vocab floats) is alive at a time.

    The logprobs are those of the raw model distribution, log_softmax(logits), taken before
    repetition penalties, the grammar, top-k/top-p/min-p and temperature. That makes them
    comparable across sampling settings and meaningful at temperature 0 (where the sampled
    distribution is degenerate); the cost is that under a grammar or a penalty the chosen token
    need not be top[0], and the logprobs are not those of the distribution actually sampled from.
    """

    def __init__(self, llm: Any, k: int) -> None:
        self.llm = llm
        self.k = k
        self.n_vocab = int(llm.n_vocab())
        self.steps: list[tuple[int, float, list[tuple[int, float]]]] = []
        self._scratch = np.empty(self.n_vocab, dtype=np.single)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        llm = self.llm
        real_sample = llm.sample  # the bound method of the class

        def sample(*args: Any, **kwargs: Any) -> Any:
            idx = kwargs.get("idx")
            # The same row index Llama.sample hands to llama_sampler_sample.
            ridx = idx - llm.n_tokens if idx is not None else -1
            ptr = llama_lib.llama_get_logits_ith(llm.ctx, ridx)
            row = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()
            token = real_sample(*args, **kwargs)
            self._record(row, int(token))
            return token

        llm.sample = sample
        try:
            yield
        finally:
            # Removing the instance attribute uncovers the class method again.
            with contextlib.suppress(AttributeError):
                del llm.sample

    def _record(self, row: Any, token: int) -> None:
        lse = _log_sum_exp(row, self._scratch)
        top: list[tuple[int, float]] = []
        if self.k > 0:
            k = min(self.k, self.n_vocab)
            cand = np.argpartition(row, -k)[-k:]
            # Highest logprob first; equal logits by token id, so the order is deterministic.
            cand = cand[np.lexsort((cand, -row[cand]))]
            top = [(int(i), float(row[i]) - lse) for i in cand]
        self.steps.append((token, float(row[token]) - lse, top))


# --- the backend -----------------------------------------------------------------------------

# The prompt `measure` (promptlab tune) repeats to length: ordinary prose, so the tokens are
# typical of a real prompt.
_MEASURE_TEXT = (
    " The committee met on a grey Tuesday morning to review the quarterly figures. Sales in the"
    " northern region had risen for the third time in a row, while the coastal stores reported"
    " a small decline that the manager attributed to the unusually wet summer. After a short"
    " discussion, the members agreed to postpone the new advertising campaign until spring,"
    " to hire two additional staff for the warehouse, and to publish a summary of the meeting"
    " on the company website before the end of the week."
)


class LlamaBackend:
    def __init__(self, path: Path, settings: LoadSettings, *, embedding: bool = False) -> None:
        self.path = path
        self.settings = settings
        self.embedding = embedding
        offload_ok = supports_gpu_offload()
        requested = settings.n_gpu_layers
        n_gpu_layers = (-1 if offload_ok else 0) if requested is None else requested
        amx = build_has_amx()
        # Embedding mode: one pooled vector per sequence. Mean pooling works for any decoder
        # model; the GGUF's own pooling type (often none or last-token for chat models) would
        # make `embed` model-dependent. Otherwise left unspecified, as llama-cpp-python does.
        pooling = (
            llama_cpp.LLAMA_POOLING_TYPE_MEAN
            if embedding
            else llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED
        )
        _take_log()
        try:
            with _without_extra_buffers(amx):
                self.llm = llama_cpp.Llama(
                    model_path=str(path),
                    n_gpu_layers=n_gpu_layers,
                    n_ctx=settings.n_ctx,
                    n_batch=settings.n_batch,
                    n_ubatch=settings.n_batch,
                    n_threads=settings.n_threads,
                    n_threads_batch=settings.n_threads_batch,
                    seed=settings.seed,
                    flash_attn=settings.flash_attn,
                    # Never: it keeps n_ctx x n_vocab floats (NOTES §2). Logprobs and choice
                    # scoring read the rows they need straight from the context instead.
                    logits_all=False,
                    embedding=embedding,
                    pooling_type=pooling,
                    offload_kqv=True,
                    use_mmap=True,
                    use_mlock=False,
                    verbose=False,
                )
        except (ValueError, RuntimeError, OSError) as exc:
            errors = [t.strip() for lvl, t in _take_log() if lvl in (3, 4) and t.strip()]
            detail = errors[-1] if errors else str(exc)
            raise BackendError(
                f"{path}: llama.cpp could not load the model: {detail}",
                hint="check the file is a complete GGUF supported by llama-cpp-python "
                + llama_cpp.__version__,
            ) from None
        log = _take_log()
        self.n_layer = int(llama_lib.llama_model_n_layer(self.llm.model))
        self.n_vocab = int(self.llm.n_vocab())
        # Grammar text -> None (accepted) or the reason llama.cpp refuses it; parsed once each.
        self._grammars: dict[str, str | None] = {}
        # The last context score_choices evaluated and its last logits row, while the KV cache
        # still holds exactly that context (cleared by anything else that decodes).
        self._scored_context: tuple[tuple[int, ...], Any] | None = None
        # Canonical chunk size (module docstring); decodes of more than n_batch tokens would abort.
        self.chunk = max(1, min(settings.prefix_chunk, int(self.llm.n_batch)))
        # How many leading KV positions were decoded in whole canonical chunks (a multiple of
        # `chunk`, never more than llm.n_tokens): the only part of the cache `_fill` reuses.
        self._aligned = 0
        offloaded, layers_total = self._offloaded(log)
        self.info = RuntimeInfo(
            backend="llama.cpp",
            facts={
                "engine_version": f"llama-cpp-python {llama_cpp.__version__}",
                "llama_cpp_python": llama_cpp.__version__,
                "gpu_offload_supported": offload_ok,
                "n_gpu_layers_requested": n_gpu_layers,
                "layers_offloaded": offloaded,
                # llama.cpp counts the output layer too ("offloaded 31/31" for 30 blocks).
                "layers_total": layers_total,
                "n_layer": self.n_layer,
                "device": self._device(log),
                "amx_workaround": amx,
                "embedding": embedding,
                "pooling": "mean" if embedding else None,
                "prefix_chunk": self.chunk,
                "system_info": system_info(),
                "warnings": [t.strip() for lvl, t in log if lvl == 3 and t.strip()][:20],
            },
        )

    def _offloaded(self, log: list[tuple[int, str]]) -> tuple[int, int]:
        """(layers offloaded, layers in all) as llama.cpp's load log reports them."""
        for _, text in log:
            m = re.search(r"offloaded (\d+)/(\d+) layers to GPU", text)
            if m:
                return int(m.group(1)), int(m.group(2))
        # CPU builds print no summary line; count the per-layer device assignments instead.
        offloaded = sum(
            1 for _, t in log if re.search(r"layer\s+\d+ assigned to device (?!CPU)", t)
        )
        return offloaded, self.n_layer + 1

    @staticmethod
    def _device(log: list[tuple[int, str]]) -> str:
        for _, text in log:
            m = re.search(r"using device (\S+) \(([^)]*)\)", text)
            if m:
                return f"{m.group(1)} ({m.group(2)})"
        return "CPU"

    def _require_mode(self, embedding: bool, what: str) -> None:
        if self.embedding == embedding:
            return
        if embedding:
            raise BackendError(
                f"{self.path}: {what} needs the model opened in embedding mode",
                hint="open it with open_backend(path, settings, embedding=True)",
            )
        raise BackendError(
            f"{self.path}: this model was opened in embedding mode, which cannot {what}",
            hint="open a second backend without embedding=True for generation and scoring",
        )

    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        # special=True: control tokens written in a template (e.g. <|im_start|>) are real tokens,
        # matching what llama-cpp-python's own chat and completion paths do.
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    def count_tokens(self, text: str, add_bos: bool) -> int:
        return len(self.tokenize(text, add_bos))

    # --- grammar -------------------------------------------------------------------------------

    def check_grammar(self, gbnf: str) -> str | None:
        """None when llama.cpp accepts the GBNF grammar (start rule `root`), else a one-line reason
        (the parser's own words, e.g. "Undefined rule identifier 'foo'", without a prefix).

        Parses it with `llama_sampler_init_grammar` (NULL on any parse error, left recursion or a
        missing root), then applies it once to the whole vocabulary: a grammar no token can start
        would make llama.cpp abort the process on the first sampled token. Cached per text, so
        callers may check every distinct grammar after load and `generate` re-checks for free.
        Residual risk, not detectable up front: a grammar that dead-ends later (a character no
        token can produce, e.g. NUL, after some valid prefix) still aborts inside llama.cpp.
        """
        if gbnf in self._grammars:
            return self._grammars[gbnf]
        problem = self._parse_grammar(gbnf)
        self._grammars[gbnf] = problem
        return problem

    def _parse_grammar(self, gbnf: str) -> str | None:
        if not gbnf.strip():
            # An empty string makes llama.cpp build a grammar sampler that constrains nothing.
            return "the grammar is empty"
        if "\0" in gbnf:
            return "the grammar contains a NUL character"
        vocab = llama_lib.llama_model_get_vocab(self.llm.model)
        captured: list[str] = []
        _take_log()
        with _stderr_to(captured):
            smpl = llama_lib.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
        log = _take_log()
        if not smpl:  # a NULL pointer is falsy
            return _grammar_problem("".join(captured), log)
        try:
            cands = llama_internals.LlamaTokenDataArray(n_vocab=self.n_vocab)
            cands.copy_logits(np.zeros(self.n_vocab, dtype=np.single))
            llama_lib.llama_sampler_apply(smpl, ctypes.byref(cands.candidates))
            if not bool(np.isfinite(cands.candidates_data.logit).any()):
                return "no token of the model's vocabulary can start it (llama.cpp would abort)"
        finally:
            llama_lib.llama_sampler_free(smpl)
        return None

    # --- generation ----------------------------------------------------------------------------

    def generate(
        self,
        text: str,
        add_bos: bool,
        sampling: Sampling,
        *,
        grammar: str | None = None,
        logprobs: int | None = None,
    ) -> Generation:
        self._require_mode(False, "generate")
        if logprobs is not None and logprobs < 0:
            raise CellError(f"logprobs must be 0 or more, got {logprobs}")
        tokens = self.tokenize(text, add_bos)
        n_ctx = self.settings.n_ctx
        if len(tokens) >= n_ctx:
            raise CellError(
                f"prompt is {len(tokens)} tokens but n_ctx is {n_ctx}",
                hint="raise n_ctx in models: or shorten the prompt",
            )
        if not tokens:
            raise CellError(
                "cannot generate from an empty prompt",
                hint="give a prompt (or a model that adds BOS)",
            )
        grammar_obj = None
        if grammar is not None:
            problem = self.check_grammar(grammar)
            if problem is not None:
                raise CellError(
                    f"llama.cpp refused the grammar: {problem}",
                    hint="fix the GBNF grammar (its start rule is `root`)",
                )
            grammar_obj = llama_grammar.LlamaGrammar.from_string(grammar, verbose=False)
        # No capture object, no wrapper, no numpy when logprobs is None: the plain path is the
        # same create_completion call as before.
        capture = _LogprobCapture(self.llm, logprobs) if logprobs is not None else None
        llm: Any = self.llm
        ctx = llm.ctx
        llama_lib.llama_perf_context_reset(ctx)
        self._scored_context = None
        # The prompt is evaluated here, canonically chunked (module docstring), not by
        # llama-cpp-python. Afterwards the cache holds exactly `tokens`, n_tokens == len(tokens),
        # _requires_eval is False and the last decode's last row is the prompt's last position,
        # so Llama.generate (0.3.36, llama.py:925-933) takes its "exact prompt cached" path: no
        # reset, no eval, and the first token is sampled from row -1 (idx = n_tokens - 1).
        try:
            evaluated = self._fill(tokens)
        except RuntimeError as exc:  # llama_decode failed
            llm.reset()
            self._aligned = 0
            raise CellError(f"llama.cpp: {exc}") from None
        # Counters only update on synchronize (NOTES §6). A prompt eval of a single token counts
        # as an "eval" in llama.cpp's counters, so both go to the prompt here.
        llama_lib.llama_synchronize(ctx)
        prompt_perf = llama_lib.llama_perf_context(ctx)
        prompt_ms = float(prompt_perf.t_p_eval_ms) + float(prompt_perf.t_eval_ms)
        prompt_eval_ms_as_eval = float(prompt_perf.t_eval_ms)
        try:
            with capture.installed() if capture is not None else contextlib.nullcontext():
                # Token ids, so llama-cpp-python adds no BOS of its own: BOS is decided above,
                # from the GGUF flag for raw prompts and by the chat template for chat prompts.
                out: Any = llm.create_completion(
                    prompt=tokens,
                    max_tokens=sampling.max_tokens,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                    top_k=sampling.top_k,
                    min_p=sampling.min_p,
                    typical_p=1.0,
                    repeat_penalty=sampling.repeat_penalty,
                    frequency_penalty=0.0,
                    presence_penalty=0.0,
                    stop=list(sampling.stop),
                    seed=sampling.seed,
                    stream=False,
                    grammar=grammar_obj,
                )
        except ValueError as exc:
            raise CellError(f"llama.cpp: {exc}") from None
        except RuntimeError as exc:  # llama_decode failed while generating
            llm.reset()
            self._aligned = 0
            raise CellError(f"llama.cpp: {exc}") from None
        perf = llama_lib.llama_perf_context(ctx)
        choice = out["choices"][0]
        usage = out["usage"]
        n_completion = int(usage["completion_tokens"])
        return Generation(
            text=choice["text"],
            prompt_tokens=int(usage["prompt_tokens"]),
            completion_tokens=n_completion,
            finish_reason=str(choice.get("finish_reason") or "stop"),
            prompt_eval_tokens=evaluated,
            prompt_eval_ms=prompt_ms,
            eval_ms=float(perf.t_eval_ms) - prompt_eval_ms_as_eval,
            tokens=self._token_logprobs(capture, n_completion) if capture is not None else None,
        )

    def _token_logprobs(self, capture: _LogprobCapture, n_completion: int) -> list[TokenLogprob]:
        """One TokenLogprob per completion token, texts split so that they concatenate to the text.

        `create_completion` samples one token more than it returns when generation ends on an
        end-of-generation token (that token is not part of the completion), so the capture is cut
        to `completion_tokens`. Each token's text is its share of the decoded output: bytes go
        through one incremental UTF-8 decoder (errors ignored, as create_completion decodes), so
        a character split across tokens belongs to the token that completes it and earlier
        tokens get "". Hence "".join(texts) == text, except when a stop string cut the text:
        then the tokens still cover everything generated, stop string (and whatever the last
        token carried past it) included. Control tokens render as "" in the text (special=False,
        as in the output); in `top` they render with their markup (special=True), and a piece
        that is not valid UTF-8 on its own shows U+FFFD there.
        """
        decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        steps = capture.steps[:n_completion]
        pieces: dict[int, str] = {}

        def alternative(token: int) -> str:
            if token not in pieces:
                raw = self.llm.detokenize([token], special=True)
                pieces[token] = bytes(raw).decode("utf-8", "replace")
            return pieces[token]

        result: list[TokenLogprob] = []
        for i, (token, lp, top) in enumerate(steps):
            text = decoder.decode(bytes(self.llm.detokenize([token])), final=i == len(steps) - 1)
            result.append(TokenLogprob(text, lp, tuple((alternative(t), tlp) for t, tlp in top)))
        return result

    # --- multiple choice -------------------------------------------------------------------------

    def score_choices(
        self, context: str, add_bos: bool, choices: Sequence[str], *, reuse_prefix: bool = True
    ) -> list[ChoiceScore]:
        """Sum of log_softmax(logits) over each choice's tokens after `context`, one shared context.

        Tokens: `context + choice` is tokenized jointly and the continuation is the part after the
        context's own tokens when those are a prefix of the joint ones (so " Paris" after "is"
        scores the tokens the model would really see); when they are not (the context ends in a
        way the joint text re-tokenizes, e.g. a trailing space), the choice is tokenized alone
        and scored after the context's tokens. Put separating spaces in the choices.

        KV bookkeeping, sharing llama-cpp-python's prefix cache: `llm.input_ids[:n_tokens]`
        mirrors the KV cache. The context is evaluated by `_fill`, canonically chunked (module
        docstring): cached KV is reused up to the largest multiple of the chunk size within the
        common prefix, and the rest is decoded in chunks aligned to absolute positions, so the
        scores are bit-identical to a from-scratch evaluation whatever the cache held before (on
        this CPU build logits otherwise depend on how a sequence was split into decode calls: up
        to ~0.3 nats on Gemma3, 0.1 on SmolLM2 for a token decoded on its own). For each choice, its tokens but the
        last are decoded after the context at positions n.. with logits for every position, and
        the KV cells from position n on are removed afterwards; `n_tokens`/`input_ids` are never
        advanced for them, so after the call the cache holds exactly the context. `_requires_eval`
        is set so that nothing samples from the last choice's logits as if they were the
        context's.

        Scoring the same context again right after (nothing decoded in between) reuses the saved
        last-context logits instead of re-decoding the context's last chunk.

        reuse_prefix=False empties the cache first. Kept for compatibility: with canonical
        chunking it changes only the time taken, never the scores.
        """
        self._require_mode(False, "score choices")
        ctx_tokens = self.tokenize(context, add_bos)
        if not ctx_tokens:
            raise CellError(
                "cannot score choices after an empty context",
                hint="give a context (or a model that adds BOS)",
            )
        conts = [self._continuation(context, ctx_tokens, c, add_bos) for c in choices]
        n = len(ctx_tokens)
        longest = max((len(c) for c in conts), default=0)
        n_ctx = self.settings.n_ctx
        if n + longest > n_ctx:
            raise CellError(
                f"context is {n} tokens and the longest choice {longest} but n_ctx is {n_ctx}",
                hint="raise n_ctx in models: or shorten the prompt",
            )
        if not conts:
            return []
        llm: Any = self.llm  # llama-cpp-python's methods are partly unannotated
        key = tuple(ctx_tokens)
        saved, self._scored_context = self._scored_context, None
        last: Any = None
        if saved is not None and saved[0] == key and llm.n_tokens == n:
            last = saved[1]
        scores: list[ChoiceScore] = []
        try:
            for cont in conts:
                if last is None:
                    if not reuse_prefix:
                        llm.reset()
                    last = self._eval_context(ctx_tokens)
                score, kv_clean = self._score_continuation(n, last, cont)
                scores.append(score)
                if not kv_clean:
                    # The cache could not drop the continuation (recurrent memory): start over.
                    llm.reset()
                    last = None
        except RuntimeError as exc:  # llama_decode failed
            llm.reset()
            raise CellError(f"llama.cpp: {exc}") from None
        finally:
            # The context's logits are no longer the current ones (see docstring).
            llm._requires_eval = True
        if last is not None:
            self._scored_context = (key, last)
        return scores

    def _continuation(
        self, context: str, ctx_tokens: list[int], choice: str, add_bos: bool
    ) -> list[int]:
        if not choice:
            return []
        joint = self.tokenize(context + choice, add_bos)
        n = len(ctx_tokens)
        if len(joint) > n and joint[:n] == ctx_tokens:
            return joint[n:]
        return self.tokenize(choice, False)

    def _eval_context(self, ctx_tokens: list[int]) -> Any:
        """Make the KV cache hold exactly `ctx_tokens`; return the last position's logits row."""
        self._fill(ctx_tokens)
        row = llama_lib.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(row, shape=(self.n_vocab,)).copy()

    def _fill(self, tokens: list[int]) -> int:
        """Make the KV cache hold exactly `tokens` (non-empty), canonically chunked; return how
        many tokens were decoded. Afterwards the last decode's last row holds the logits of the
        last position, `n_tokens`/`input_ids` mirror the cache and `_requires_eval` is False.

        Canonical chunks end at fixed absolute positions (16, 32, 64, … doubling up to C, then
        every C; see `_boundary_after`), so every KV position is computed in the same batch
        composition as from an empty cache, and results never depend on what was cached.
        Reuse: the common prefix of `tokens` and the cache, counted only over the first
        `_aligned` positions (those decoded in whole canonical chunks: not a prompt's final
        partial chunk, not generated tokens, which were decoded one at a time), rounded down to
        a boundary and kept below len(tokens), because the last position must be decoded again
        for its logits (logits_all=False keeps none). Then the rest is decoded chunk by chunk,
        the last one possibly partial, exactly as from an empty cache.
        """
        llm: Any = self.llm
        c = self.chunk
        n = len(tokens)
        limit = min(self._aligned, int(llm.n_tokens), n - 1)
        common = 0
        if limit > 0:
            same = llm.input_ids[:limit] == np.asarray(tokens[:limit], dtype=llm.input_ids.dtype)
            common = limit if bool(same.all()) else int(np.argmin(same))
        keep = _boundary_at_or_below(common, c)
        # A partial removal fails on recurrent memory; then start from an empty cache.
        if keep > 0 and not llm._ctx.kv_cache_seq_rm(-1, keep, -1):
            keep = 0
        if keep == 0:
            llm.reset()  # clears recurrent memory too
            llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        llm.n_tokens = keep
        llm._requires_eval = True
        self._aligned = keep
        # n_tokens/input_ids/_aligned advance chunk by chunk, so they stay true to the cache if
        # a decode fails or Ctrl-C arrives between chunks.
        start = keep
        while start < n:
            boundary = _boundary_after(start, c)
            chunk = tokens[start:boundary]
            llm._batch.set_batch(batch=chunk, n_past=start, logits_all=False)
            llm._ctx.decode(llm._batch)
            end = start + len(chunk)
            llm.input_ids[start:end] = chunk
            llm.n_tokens = end
            if end == boundary:
                self._aligned = end
            start = end
        llm._requires_eval = False
        return n - keep

    # --- measuring (promptlab tune) ------------------------------------------------------------

    def measure(
        self, prompt_tokens: int, gen_tokens: int, *, n_threads: int, n_batch: int
    ) -> dict[str, float]:
        """See `Backend.measure`. Engine times from llama.cpp's perf counters (reset, decode,
        synchronize, read: NOTES §6). The prompt is fixed English text, tokenized and repeated to
        length; chunks of `n_batch` from position 0 are exactly the decodes a model loaded with
        that n_batch would make. Generation is greedy (numpy argmax, outside the timed part).
        """
        self._require_mode(False, "measure")
        if prompt_tokens < 1 or gen_tokens < 0:
            raise CellError("measure needs prompt_tokens >= 1 and gen_tokens >= 0")
        if prompt_tokens + gen_tokens >= self.settings.n_ctx:
            raise CellError(
                f"{prompt_tokens} prompt + {gen_tokens} generated tokens do not fit n_ctx "
                f"{self.settings.n_ctx}"
            )
        if not 1 <= n_batch <= int(self.llm.n_batch):
            raise CellError(f"n_batch must be 1..{self.llm.n_batch} here, got {n_batch}")
        llm: Any = self.llm
        ctx = llm.ctx
        base = self.tokenize(_MEASURE_TEXT, False)
        tokens = (base * (prompt_tokens // len(base) + 1))[:prompt_tokens]
        self._scored_context = None
        llama_lib.llama_set_n_threads(ctx, n_threads, n_threads)
        try:
            self._clear()
            llama_lib.llama_perf_context_reset(ctx)
            for start in range(0, prompt_tokens, n_batch):
                chunk = tokens[start : start + n_batch]
                llm._batch.set_batch(batch=chunk, n_past=start, logits_all=False)
                llm._ctx.decode(llm._batch)
            llama_lib.llama_synchronize(ctx)
            perf = llama_lib.llama_perf_context(ctx)
            # A single-token prompt counts as an "eval" in llama.cpp's counters.
            pp_ms = float(perf.t_p_eval_ms) + float(perf.t_eval_ms)
            tg_ms = 0.0
            if gen_tokens:
                row = np.ctypeslib.as_array(
                    llama_lib.llama_get_logits_ith(ctx, -1), shape=(self.n_vocab,)
                )
                token = int(row.argmax())
                llama_lib.llama_perf_context_reset(ctx)
                for pos in range(prompt_tokens, prompt_tokens + gen_tokens):
                    llm._batch.set_batch(batch=[token], n_past=pos, logits_all=False)
                    llm._ctx.decode(llm._batch)
                    row = np.ctypeslib.as_array(  # synchronizes, as sampling would
                        llama_lib.llama_get_logits_ith(ctx, -1), shape=(self.n_vocab,)
                    )
                    token = int(row.argmax())
                tg_ms = float(llama_lib.llama_perf_context(ctx).t_eval_ms)
        except RuntimeError as exc:  # llama_decode failed
            raise CellError(f"llama.cpp: {exc}") from None
        finally:
            self._clear()
            llama_lib.llama_set_n_threads(
                ctx, self.settings.n_threads, self.settings.n_threads_batch
            )
        return {
            "pp_tokens": float(prompt_tokens),
            "pp_ms": pp_ms,
            "pp_tps": prompt_tokens / pp_ms * 1000 if pp_ms > 0 else 0.0,
            "tg_tokens": float(gen_tokens),
            "tg_ms": tg_ms,
            "tg_tps": gen_tokens / tg_ms * 1000 if tg_ms > 0 else 0.0,
        }

    def _clear(self) -> None:
        """Empty the KV cache and the bookkeeping that mirrors it."""
        llm: Any = self.llm
        llm.reset()
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        self._aligned = 0
        self._scored_context = None

    def _score_continuation(self, n: int, last: Any, cont: list[int]) -> tuple[ChoiceScore, bool]:
        """(score, whether the KV cache is back to the context only)."""
        if not cont:
            return ChoiceScore(0.0, 0, True), True
        llm = self.llm
        rows = [last[None, :]]
        # Row i predicts token i+1, so the last choice token itself never needs decoding.
        body = cont[:-1]
        clean = True
        try:
            n_batch = llm.n_batch
            for start in range(0, len(body), n_batch):
                chunk = body[start : start + n_batch]
                llm._batch.set_batch(batch=chunk, n_past=n + start, logits_all=True)
                llm._ctx.decode(llm._batch)
                ptr = llama_lib.llama_get_logits(llm.ctx)
                rows.append(np.ctypeslib.as_array(ptr, shape=(len(chunk), self.n_vocab)).copy())
        finally:
            if body:
                clean = bool(llm._ctx.kv_cache_seq_rm(-1, n, -1))
        logits = np.vstack(rows).astype(np.float64)
        m = logits.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
        target = np.asarray(cont, dtype=np.int64)
        lp = logits[np.arange(len(cont)), target] - lse
        greedy = bool((logits.argmax(axis=1) == target).all())
        return ChoiceScore(float(lp.sum()), len(cont), greedy), clean

    # --- embeddings ------------------------------------------------------------------------------

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Mean-pooled, L2-normalized embeddings as plain floats (embedding mode only)."""
        self._require_mode(True, "embed")
        if not texts:
            return []
        # Llama.embed tokenizes like this; check first, because it would silently truncate
        # (truncate=True) or write past an empty sequence's batch slot (no tokens).
        for i, text in enumerate(texts):
            count = len(self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False))
            if count == 0:
                raise CellError(f"cannot embed text {i}: it has no tokens")
            if count > self.llm.n_batch:
                raise CellError(
                    f"text {i} is {count} tokens but n_batch is {self.llm.n_batch}",
                    hint="raise n_batch (and n_ctx) or shorten the text",
                )
        try:
            raw = self.llm.embed(list(texts), normalize=False, truncate=False)
        except (ValueError, RuntimeError) as exc:
            raise CellError(f"llama.cpp: {exc}") from None
        out: list[list[float]] = []
        for vec in raw:
            a = np.asarray(vec, dtype=np.float64)
            norm = float(np.linalg.norm(a))
            if norm > 0.0:
                a = a / norm
            out.append([float(v) for v in a])
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.llm.close()


# Canonical chunk boundaries: 16, 32, 64, … doubling up to C, then every C. The small early
# chunks let cells that share only a chat template's opening (20–60 tokens) reuse it, which a
# flat C-sized grid cannot; past C, whole C-sized chunks keep prompt processing fast.
_FIRST_BOUNDARY = 16


def _boundary_after(pos: int, c: int) -> int:
    """The first canonical boundary strictly after `pos`."""
    if pos >= c:
        return (pos // c + 1) * c
    b = _FIRST_BOUNDARY
    while b <= pos:
        b *= 2
    return min(b, c)


def _boundary_at_or_below(pos: int, c: int) -> int:
    """The last canonical boundary at or before `pos` (0 if none)."""
    if pos >= c:
        return pos // c * c
    b, best = _FIRST_BOUNDARY, 0
    while b <= pos and b < c:
        best = b
        b *= 2
    return best
