"""The backend protocol: the only seam between promptlab and an inference engine.

`open_backend` picks the fake backend for `fake://` model paths, the OpenAI-compatible server
backend for a `ServerSpec` (backends/server.py), and otherwise imports the real llama.cpp backend
lazily, so commands that never generate (`--help`, `validate`, `render`) never
import llama_cpp or numpy.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from promptlab.errors import PromptlabError

if TYPE_CHECKING:
    from promptlab.backends.server import ServerSpec

# The smallest chunk whose cold-prompt speed stays within 10% of chunk 512 on both bundled models
# (benchmarks/bench_chunk.py; Gemma3 is the sensitive one: 64 ran at 0.87x, 128 at 0.93-0.98x).
# suite.ModelSpec.prefix_chunk defaults to the same number.
DEFAULT_PREFIX_CHUNK = 128
# Part of every result-cache key: bumped whenever decoding can give other results for the same
# cell (here: prompts decoded by llama_engine's fill plans instead of canonical chunks).
DECODE_REVISION = "exact-fill-1"


@dataclass(frozen=True)
class LoadSettings:
    """Every llama.cpp load setting, resolved (no library defaults left to chance)."""

    n_gpu_layers: int | None  # None: all layers if the build can offload, else 0
    n_ctx: int
    n_batch: int
    n_threads: int
    n_threads_batch: int
    flash_attn: bool
    seed: int
    # Canonical chunk size, used only where the load-time self-test finds a model not
    # split-invariant (backends/llama_decode.py): prompts are then decoded in chunks aligned to
    # multiples of min(prefix_chunk, n_batch), and cached KV is reused up to such a multiple.
    prefix_chunk: int = DEFAULT_PREFIX_CHUNK
    # How many cells may generate at once (one KV stream each); None: auto (see the backend).
    # Results do not depend on it where the self-test finds batching exact.
    parallel: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def result_key(self) -> dict[str, Any]:
        """The settings results can depend on: all but `parallel`, which never changes a result
        that is cached (see runner._run_model)."""
        return {k: v for k, v in self.__dict__.items() if k != "parallel"}


@dataclass(frozen=True)
class Sampling:
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    max_tokens: int
    stop: tuple[str, ...]
    seed: int
    repeat_penalty: float


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its text, its log-probability, and the top alternatives."""

    text: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    # From llama.cpp's own perf counters where the backend has them: time spent inside the
    # engine, and prompt tokens actually evaluated (fewer than prompt_tokens on prefix reuse).
    prompt_eval_tokens: int | None = None
    prompt_eval_ms: float | None = None
    eval_ms: float | None = None
    # Per generated token, when generate() was asked for logprobs (plain floats, never numpy).
    tokens: list[TokenLogprob] | None = None
    # Wall time from the start of this cell's prompt to its last token, as the engine saw it;
    # with several cells generating at once, they share the steps.
    wall_ms: float | None = None


@dataclass(frozen=True)
class GenRequest:
    """One generation for `Backend.generate_batch`; `tag` is the caller's own handle."""

    text: str
    add_bos: bool
    sampling: Sampling
    grammar: str | None = None
    logprobs: int | None = None
    tag: Any = None
    # (role, content) turns for a server's chat endpoint, which applies its own chat template;
    # `text` then only shows and keys them (backends/server.py). In-process backends never get it.
    messages: tuple[tuple[str, str], ...] | None = None


@dataclass(frozen=True)
class ChoiceScore:
    """Log-likelihood of one continuation after a shared context, from the model's logits."""

    logprob: float  # sum over the continuation's tokens, natural log
    n_tokens: int
    is_greedy: bool  # every continuation token was the argmax at its position


class CellError(PromptlabError):
    """A problem with one cell (e.g. prompt longer than the context): recorded, run goes on."""


@dataclass
class RuntimeInfo:
    """What the manifest records about the engine once a model is loaded."""

    backend: str
    facts: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    info: RuntimeInfo

    def count_tokens(self, text: str, add_bos: bool) -> int: ...

    def generate(
        self,
        text: str,
        add_bos: bool,
        sampling: Sampling,
        *,
        grammar: str | None = None,
        logprobs: int | None = None,
    ) -> Generation:
        """Generate a completion of `text`.

        grammar: GBNF text constraining the output (llama.cpp's grammar sampler), or None.
        logprobs: None for none; 0 for each chosen token's logprob; k > 0 also the top-k.
        Raises CellError for per-cell problems (prompt too long, grammar refused).
        """
        ...

    def generate_batch(
        self, requests: Sequence[GenRequest]
    ) -> Iterator[tuple[GenRequest, Generation | CellError]]:
        """Every request's generation (or its CellError), yielded as each finishes: several may
        run at once (`LoadSettings.parallel`), so the order is not the requests' order. Each
        result is the one `generate` would give for that request alone."""
        ...

    def score_choices(
        self, context: str, add_bos: bool, choices: Sequence[str], *, reuse_prefix: bool = True
    ) -> list[ChoiceScore]:
        """Log-likelihood of each continuation after `context`, without generating.

        The context is evaluated once and shared by all choices, reusing whatever prefix of it the
        cache already holds; the scores never depend on what earlier calls left there (see
        backends/llama_decode.py). reuse_prefix=False only empties the cache first (the scores are
        the same).
        """
        ...

    def check_grammar(self, gbnf: str) -> str | None:
        """None if llama.cpp accepts the GBNF grammar, else the reason it refuses it."""
        ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """L2-normalized embeddings; only backends opened with embedding=True support it."""
        ...

    def measure(
        self, prompt_tokens: int, gen_tokens: int, *, n_threads: int, n_batch: int
    ) -> dict[str, float]:
        """Time one prompt evaluation and one greedy generation from an empty cache (for `tune`).

        The prompt (`prompt_tokens` tokens of fixed text) is decoded in chunks of `n_batch`, with
        `n_threads` threads for both prompt and generation; then `gen_tokens` tokens are decoded
        one at a time. Returns pp_tokens, pp_ms, pp_tps, tg_tokens, tg_ms, tg_tps (engine time
        where the backend has perf counters; tg_* are 0 when gen_tokens is 0). Leaves the cache
        empty and the load settings' thread counts in place.
        """
        ...

    def close(self) -> None: ...


def is_fake(spec: str) -> bool:
    return spec.startswith("fake://")


def open_backend(
    path: Path | str | ServerSpec, settings: LoadSettings, *, embedding: bool = False
) -> Backend:
    """Load a model once; the caller keeps it resident for every cell and closes it at the end.

    embedding=True opens it in llama.cpp's embedding mode (mean pooling) for `embed()` only.
    """
    if isinstance(path, str) and is_fake(path):
        from promptlab.backends.fake import FakeBackend  # noqa: PLC0415

        return FakeBackend(path, settings, embedding=embedding)
    from promptlab.backends.server import ServerSpec  # noqa: PLC0415

    if isinstance(path, ServerSpec):
        from promptlab.backends.openai import OpenAIBackend  # noqa: PLC0415 - imports httpx

        return OpenAIBackend(path, settings, embedding=embedding)
    from promptlab.backends.llama import LlamaBackend  # noqa: PLC0415 - heavy, import on demand

    return LlamaBackend(Path(path), settings, embedding=embedding)


def json_schema_to_grammar(schema: dict[str, Any], where: str) -> str:
    """GBNF for a JSON schema, via llama-cpp-python's converter (pure Python, no model needed).

    Raises InputError when the schema cannot be converted, instead of llama-cpp-python's silent
    fallback to generic JSON.
    """
    from promptlab.backends.llama_grammar import schema_to_gbnf  # noqa: PLC0415

    return schema_to_gbnf(schema, where)
