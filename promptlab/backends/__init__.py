"""The backend protocol: the only seam between promptlab and an inference engine.

`open_backend` picks the fake backend for `fake://` model paths and otherwise imports the real
llama.cpp backend lazily, so commands that never generate (`--help`, `validate`, `render`) never
import llama_cpp or numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from promptlab.errors import PromptlabError


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

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


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

    def score_choices(
        self, context: str, add_bos: bool, choices: Sequence[str], *, reuse_prefix: bool = True
    ) -> list[ChoiceScore]:
        """Log-likelihood of each continuation after `context`, without generating.

        reuse_prefix=False evaluates the context from an empty cache, so the scores do not depend
        on what earlier calls left there (on some models logits vary with decode batching).

        The context is evaluated once and shared by all choices (prefix reuse).
        """
        ...

    def check_grammar(self, gbnf: str) -> str | None:
        """None if llama.cpp accepts the GBNF grammar, else the reason it refuses it."""
        ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """L2-normalized embeddings; only backends opened with embedding=True support it."""
        ...

    def close(self) -> None: ...


def is_fake(spec: str) -> bool:
    return spec.startswith("fake://")


def open_backend(path: Path | str, settings: LoadSettings, *, embedding: bool = False) -> Backend:
    """Load a model once; the caller keeps it resident for every cell and closes it at the end.

    embedding=True opens it in llama.cpp's embedding mode (mean pooling) for `embed()` only.
    """
    if isinstance(path, str) and is_fake(path):
        from promptlab.backends.fake import FakeBackend  # noqa: PLC0415

        return FakeBackend(path, settings, embedding=embedding)
    from promptlab.backends.llama import LlamaBackend  # noqa: PLC0415 - heavy, import on demand

    return LlamaBackend(Path(path), settings, embedding=embedding)


def json_schema_to_grammar(schema: dict[str, Any], where: str) -> str:
    """GBNF for a JSON schema, via llama-cpp-python's converter (pure Python, no model needed).

    Raises InputError when the schema cannot be converted, instead of llama-cpp-python's silent
    fallback to generic JSON.
    """
    from promptlab.backends.llama_grammar import schema_to_gbnf  # noqa: PLC0415

    return schema_to_gbnf(schema, where)
