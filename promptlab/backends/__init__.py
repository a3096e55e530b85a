"""The backend protocol: the only seam between promptlab and an inference engine.

`open_backend` picks the fake backend for `fake://` model paths and otherwise imports the real
llama.cpp backend lazily, so commands that never generate (`--help`, `validate`, `render`) never
import llama_cpp or numpy.
"""

from __future__ import annotations

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

    def generate(self, text: str, add_bos: bool, sampling: Sampling) -> Generation: ...

    def close(self) -> None: ...


def is_fake(spec: str) -> bool:
    return spec.startswith("fake://")


def open_backend(path: Path | str, settings: LoadSettings) -> Backend:
    """Load a model once; the caller keeps it resident for every cell and closes it at the end."""
    if isinstance(path, str) and is_fake(path):
        from promptlab.backends.fake import FakeBackend  # noqa: PLC0415

        return FakeBackend(path, settings)
    from promptlab.backends.llama import LlamaBackend  # noqa: PLC0415 - heavy, import on demand

    return LlamaBackend(Path(path), settings)
