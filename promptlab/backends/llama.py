"""The llama.cpp backend (llama-cpp-python's ctypes bindings). The `backends/llama*.py` modules
(and `native.py`, which readies the libraries) are the only ones that import `llama_cpp`:

- `llama.py` (this one) loads the model and answers for it: the load settings, all set
  explicitly (no library default left to chance), the facts the manifest records, grammar
  validation before use, and embeddings;
- `llama_runtime.py`: the library's log, the build's facts, the AMX guard;
- `llama_context.py`: one llama_context and its KV streams;
- `llama_engine.py`: decoding (exact prefix reuse, many cells at once), planned by the pure
  `llama_decode.py`; `llama_choice.py`: `choice` scoring on the engine;
- `llama_selftest.py`: the load-time self-test and its cached verdicts;
- `llama_grammar.py`: JSON schema to GBNF.

At load, `llama_selftest.self_test` measures on this very model, build and set of settings whether
decoding is split-invariant and batch-invariant (about 100 tokens; the verdict is cached in
~/.cache/promptlab/exactness/), and the engine is configured from the answer, so a new model or
build cannot silently break exactness: prompts reuse every shared token where it holds and only
whole canonical chunks where it does not, and cells generate together only where that cannot
change a result (unless `parallel:` insists, and then those results are not cached).

Grammar validation: llama.cpp returns NULL for a grammar it cannot parse, and a grammar no token
can start aborts the process (GGML_ABORT, measured), so every grammar is parsed and applied once
to the whole vocabulary before use.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from promptlab.backends.native import make_libstdcxx_global

# Before llama_cpp loads its libraries: see promptlab.backends.native.
make_libstdcxx_global()

import llama_cpp  # after make_libstdcxx_global, deliberately
import llama_cpp._internals as llama_internals
import llama_cpp.llama_cpp as llama_lib
import numpy as np

from promptlab.backends import (
    CellError,
    ChoiceScore,
    Generation,
    GenRequest,
    LoadSettings,
    RuntimeInfo,
    Sampling,
)
from promptlab.backends.llama_context import DecodeError, tokenize
from promptlab.backends.llama_decode import MIN_CHUNK, FillMode
from promptlab.backends.llama_engine import Engine
from promptlab.backends.llama_runtime import (
    build_has_amx,
    grammar_problem,
    stderr_to,
    supports_gpu_offload,
    system_info,
    take_log,
    without_extra_buffers,
)
from promptlab.backends.llama_selftest import (
    MEASURE_TEXT,
    OTHER_TEXT,
    load_verdict,
    save_verdict,
    self_test,
    verdict_file,
)
from promptlab.errors import BackendError

# --- the backend -----------------------------------------------------------------------------
# Streams run at once by default where batching is exact: the CPU gains little past 8 (measured
# 1.4-1.7x aggregate generation at 8 on 2 vCPUs); a GPU keeps gaining to 16 and beyond.
_AUTO_PARALLEL_CPU = 8
_AUTO_PARALLEL_GPU = 16
# KV memory the streams of one model may take together (they are allocated up front).
_KV_BUDGET = 4 << 30


class LlamaBackend:
    def __init__(self, path: Path, settings: LoadSettings, *, embedding: bool = False) -> None:
        self.path = path
        self.settings = settings
        self.embedding = embedding
        offload_ok = supports_gpu_offload()
        requested = settings.n_gpu_layers
        self.n_gpu_layers = (-1 if offload_ok else 0) if requested is None else requested
        self.amx = build_has_amx()
        self._grammars: dict[str, str | None] = {}
        self.llm: Any = None  # embedding mode only: llama-cpp-python's Llama
        self.engine: Engine | None = None
        take_log()
        if embedding:
            llm = self._load_embedding()
            self.llm = llm
            self.model = llm.model
        else:
            self.model = self._load_model()
        log = take_log()
        self.vocab = llama_lib.llama_model_get_vocab(self.model)
        self.n_layer = int(llama_lib.llama_model_n_layer(self.model))
        self.n_vocab = int(llama_lib.llama_vocab_n_tokens(self.vocab))
        offloaded, layers_total = self._offloaded(log)
        facts: dict[str, Any] = {
            "engine_version": f"llama-cpp-python {llama_cpp.__version__}",
            "llama_cpp_python": llama_cpp.__version__,
            "gpu_offload_supported": offload_ok,
            "n_gpu_layers_requested": self.n_gpu_layers,
            "layers_offloaded": offloaded,
            # llama.cpp counts the output layer too ("offloaded 31/31" for 30 blocks).
            "layers_total": layers_total,
            "n_layer": self.n_layer,
            "device": self._device(log),
            "amx_workaround": self.amx,
            # Repacked weight buffers make rows depend on their place in a decode (see
            # llama_decode.py), so they are always off.
            "extra_buffers": False,
            "embedding": embedding,
            "pooling": "mean" if embedding else None,
            "system_info": system_info(),
        }
        if not embedding:
            facts.update(self._start_engine(offloaded))
        facts["warnings"] = [t.strip() for lvl, t in log if lvl == 3 and t.strip()][:20]
        self.info = RuntimeInfo(backend="llama.cpp", facts=facts)

    # --- loading -------------------------------------------------------------------------------

    def _load_model(self) -> Any:
        params = llama_lib.llama_model_default_params()
        params.n_gpu_layers = 0x7FFFFFFF if self.n_gpu_layers < 0 else self.n_gpu_layers
        params.use_mmap = True
        params.use_mlock = False
        # Off on every build: AMX kernels segfault on these Xeons (llama.cpp#20824), and
        # repacked weights make decoding depend on row placement (llama_decode.py).
        params.use_extra_bufts = False
        model = llama_lib.llama_model_load_from_file(str(self.path).encode("utf-8"), params)
        if not model:
            errors = [t.strip() for lvl, t in take_log() if lvl in (3, 4) and t.strip()]
            detail = errors[-1] if errors else "failed to load the model"
            raise BackendError(
                f"{self.path}: llama.cpp could not load the model: {detail}",
                hint="check the file is a complete GGUF supported by llama-cpp-python "
                + llama_cpp.__version__,
            )
        self._own_model = model
        return model

    def _load_embedding(self) -> Any:
        # Embedding mode: llama-cpp-python's own `embed`, one pooled vector per sequence. Mean
        # pooling works for any decoder model; the GGUF's own pooling type (often none or
        # last-token for chat models) would make `embed` model-dependent.
        s = self.settings
        try:
            with without_extra_buffers(True):
                return llama_cpp.Llama(
                    model_path=str(self.path),
                    n_gpu_layers=self.n_gpu_layers,
                    n_ctx=s.n_ctx,
                    n_batch=s.n_batch,
                    n_ubatch=s.n_batch,
                    n_threads=s.n_threads,
                    n_threads_batch=s.n_threads_batch,
                    seed=s.seed,
                    flash_attn=s.flash_attn,
                    logits_all=False,
                    embedding=True,
                    pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                    offload_kqv=True,
                    use_mmap=True,
                    use_mlock=False,
                    verbose=False,
                )
        except (ValueError, RuntimeError, OSError) as exc:
            errors = [t.strip() for lvl, t in take_log() if lvl in (3, 4) and t.strip()]
            detail = errors[-1] if errors else str(exc)
            raise BackendError(
                f"{self.path}: llama.cpp could not load the model: {detail}",
                hint="check the file is a complete GGUF supported by llama-cpp-python "
                + llama_cpp.__version__,
            ) from None

    def _start_engine(self, offloaded: int) -> dict[str, Any]:
        """Measure (or recall) exactness on this model, then create the engine to match."""
        s = self.settings
        # The widest step the engine may take: auto's cap, or what parallel: asks for.
        cap = _AUTO_PARALLEL_GPU if offloaded else _AUTO_PARALLEL_CPU
        widths = min(64, s.parallel) if s.parallel is not None else cap
        file = verdict_file(self.path, s, self.n_gpu_layers, widths)
        verdict = load_verdict(file)
        measured = verdict is None
        if verdict is None:
            probe = self.tokenize(MEASURE_TEXT * 4, False)
            other = self.tokenize(OTHER_TEXT, False)
            try:
                verdict = self_test(self.model, s, probe, other, widths)
            except DecodeError as exc:
                self.close()
                raise BackendError(f"{self.path}: llama.cpp could not decode: {exc}") from None
            save_verdict(file, verdict)
        mode = (
            FillMode.SPLIT_INVARIANT
            if verdict.split_invariant
            and s.n_batch >= 2 * MIN_CHUNK
            # For benchmarks and tests of the fallback; it can only lose reuse, never exactness.
            and os.environ.get("PROMPTLAB_FILL_MODE") != FillMode.CANONICAL.value
            else FillMode.CANONICAL
        )
        # auto: as wide as the self-test found exact, up to the cap.
        parallel = s.parallel if s.parallel is not None else min(cap, verdict.batch_width)
        # Picking greedy tokens on the device saves copying a logits row per token back to the
        # host: only worth it where the output layer is on a GPU. PROMPTLAB_DEVICE_SAMPLING=1/0
        # forces it (tests run it on the CPU backend).
        forced = os.environ.get("PROMPTLAB_DEVICE_SAMPLING")
        device_sampling = bool(offloaded) if forced is None else forced == "1"
        take_log()
        try:
            self.engine = Engine(
                self.model,
                s,
                mode=mode,
                parallel=parallel,
                n_ctx=s.n_ctx,
                device_sampling=device_sampling,
            )
        except DecodeError as exc:
            self.close()
            raise BackendError(
                f"{self.path}: {exc}", hint="lower n_ctx in models: (or free some memory)"
            ) from None
        if verdict.checks.get("batched continuations") and min(parallel, verdict.batch_width) > 1:
            self.engine.choice_rows = verdict.batch_width
        kv = self._kv_bytes(take_log())
        if kv:
            self.engine.kv_budget_cells = max(1, _KV_BUDGET // max(1, kv // max(1, s.n_ctx)))
        return {
            "fill_mode": mode.value,
            "parallel": parallel,
            "parallel_requested": "auto" if s.parallel is None else s.parallel,
            # False only where parallel: asked for more streams than the self-test found exact:
            # then results may depend on which cells shared a step, and are not cached.
            "batch_exact": parallel <= verdict.batch_width,
            "self_test": {**verdict.as_dict(), "measured_now": measured},
            "device_sampling": device_sampling,
            # The most continuation rows `choice` decodes together (0: one at a time).
            "choice_rows": self.engine.choice_rows,
            "prefix_chunk": self.engine.chunk,
            "kv_bytes": kv,
        }

    @staticmethod
    def _kv_bytes(log: list[tuple[int, str]]) -> int:
        """The KV cache's size, from llama.cpp's log of the context it just created."""
        total = 0.0
        for _, text in log:
            m = re.search(r"KV buffer size\s*=\s*([\d.]+) MiB", text)
            if m:
                total += float(m.group(1))
        return int(total * 2**20)

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

    def _require_mode(self, embedding: bool, what: str) -> Engine:
        if self.embedding == embedding and (embedding or self.engine is not None):
            assert embedding or self.engine is not None
            return self.engine  # type: ignore[return-value]
        if embedding:
            raise BackendError(
                f"{self.path}: {what} needs the model opened in embedding mode",
                hint="open it with open_backend(path, settings, embedding=True)",
            )
        raise BackendError(
            f"{self.path}: this model was opened in embedding mode, which cannot {what}",
            hint="open a second backend without embedding=True for generation and scoring",
        )

    # --- tokens --------------------------------------------------------------------------------

    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        return tokenize(self.vocab, text, add_bos)

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
        captured: list[str] = []
        take_log()
        with stderr_to(captured):
            smpl = llama_lib.llama_sampler_init_grammar(self.vocab, gbnf.encode("utf-8"), b"root")
        log = take_log()
        if not smpl:  # a NULL pointer is falsy
            return grammar_problem("".join(captured), log)
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
        ((_, result),) = list(
            self.generate_batch([GenRequest(text, add_bos, sampling, grammar, logprobs)])
        )
        if isinstance(result, CellError):
            raise result
        return result

    def generate_batch(
        self, requests: Sequence[GenRequest]
    ) -> Iterator[tuple[GenRequest, Generation | CellError]]:
        engine = self._require_mode(False, "generate")
        checked: list[GenRequest] = []
        for req in requests:
            if req.grammar is not None:
                problem = self.check_grammar(req.grammar)
                if problem is not None:
                    yield (
                        req,
                        CellError(
                            f"llama.cpp refused the grammar: {problem}",
                            hint="fix the GBNF grammar (its start rule is `root`)",
                        ),
                    )
                    continue
            checked.append(req)
        yield from engine.generate(checked)

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

        The context reuses what the cache holds exactly as a generation's prompt does (see
        llama_decode.py), so the scores never depend on what ran before; it is decoded once for
        all choices, and scoring the same context again right after reuses its last logits.
        Not `echo=True` + logprobs: that pairs logits with the wrong tokens when there is no BOS
        (SmolLM2) and sorts the whole vocabulary in Python per token. reuse_prefix=False
        empties the cache first; the scores are the same.
        """
        engine = self._require_mode(False, "score choices")
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
        return engine.score_choices(ctx_tokens, conts, fresh=not reuse_prefix)

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

    # --- measuring (promptlab tune) ------------------------------------------------------------

    def measure(
        self, prompt_tokens: int, gen_tokens: int, *, n_threads: int, n_batch: int
    ) -> dict[str, float]:
        """See `Backend.measure`. Engine times from llama.cpp's perf counters (reset, decode,
        synchronize, read: NOTES §6). The prompt is fixed English text, tokenized and repeated to
        length; chunks of `n_batch` from position 0 are exactly the decodes a model loaded with
        that n_batch would make. Generation is greedy (numpy argmax, outside the timed part).
        """
        engine = self._require_mode(False, "measure")
        if prompt_tokens < 1 or gen_tokens < 0:
            raise CellError("measure needs prompt_tokens >= 1 and gen_tokens >= 0")
        if prompt_tokens + gen_tokens >= self.settings.n_ctx:
            raise CellError(
                f"{prompt_tokens} prompt + {gen_tokens} generated tokens do not fit n_ctx "
                f"{self.settings.n_ctx}"
            )
        if not 1 <= n_batch <= self.settings.n_batch:
            raise CellError(f"n_batch must be 1..{self.settings.n_batch} here, got {n_batch}")
        base = self.tokenize(MEASURE_TEXT, False)
        tokens = (base * (prompt_tokens // len(base) + 1))[:prompt_tokens]
        return engine.measure(tokens, gen_tokens, n_threads=n_threads, n_batch=n_batch)

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
        if self.engine is not None:
            self.engine.close()
            self.engine = None
        if self.llm is not None:
            with contextlib.suppress(Exception):
                self.llm.close()
            self.llm = None
        own = getattr(self, "_own_model", None)
        if own is not None:
            llama_lib.llama_model_free(own)
            self._own_model = None
