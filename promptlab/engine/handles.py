"""A model as the engine holds it: loaded on first use, keyed for the result cache, and its
generations served from that cache when they can be (so a rerun the cache answers never loads it).

The Ray driver (distributed/driver.py) uses the same handle, keys and cache calls, so a
distributed run reads and writes the entries a local one does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from promptlab.backends import (
    DECODE_REVISION,
    Backend,
    Generation,
    GenRequest,
    LoadSettings,
    Sampling,
    TokenLogprob,
)
from promptlab.backends.server import ServerSpec, server_identity
from promptlab.engine.cache import Cache, make_key
from promptlab.models import describe, engine_id
from promptlab.models.sources import source_record
from promptlab.plan import PlannedModel

# (path, settings, embedding) -> a loaded backend; tests substitute their own.
Opener = Callable[[Any, LoadSettings, bool], Backend]


def model_record(model: PlannedModel) -> dict[str, Any]:
    """Static facts about a model for the manifest (file facts, settings, chat template)."""
    record: dict[str, Any] = {"label": model.label, "spec": model.spec_path}
    if model.gguf is not None and isinstance(model.path, Path):
        record.update(describe(model.path, model.gguf))
        record.update(source_record(model.spec_path, model.path))
    else:
        record["path"] = str(model.path)
    record["chat_template_source"] = model.chat_source
    record["load_settings"] = model.settings.as_dict()
    return record


class ModelHandle:
    """A model that loads on first use: a rerun served from the cache never loads it."""

    def __init__(
        self,
        model: PlannedModel,
        opener: Opener,
        *,
        embedding: bool = False,
        before_load: Callable[[], None] | None = None,
        after_load: Callable[[Backend, float], None] | None = None,
    ) -> None:
        self.model = model
        self.opener = opener
        self.embedding = embedding
        self.before_load = before_load
        self.after_load = after_load
        self._backend: Backend | None = None
        self._identity: str | None = None
        # False for a server model its server does not list: nothing identifies its results.
        self.cacheable = True

    @property
    def loaded(self) -> bool:
        return self._backend is not None

    def get(self) -> Backend:
        if self._backend is None:
            if self.before_load:
                self.before_load()
            t0 = time.perf_counter()
            self._backend = self.opener(self.model.path, self.model.settings, self.embedding)
            if self.after_load:
                self.after_load(self._backend, (time.perf_counter() - t0) * 1000)
        return self._backend

    def identity(self) -> dict[str, Any]:
        """What the cache keys on for this model: file and build, and the load settings."""
        if self._identity is None:
            path = self.model.path
            if isinstance(path, ServerSpec):  # asks the server what it serves
                server = server_identity(path)
                self._identity, self.cacheable = server.key, server.cacheable
            else:
                self._identity = model_identity(path)
        return {
            "model": self._identity,
            "load": self.model.settings.result_key(),
            "decode": DECODE_REVISION,
            "embedding": self.embedding,
        }

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None


def model_identity(path: Path | str) -> str:
    """The model part of every cache key: file sha256 and llama.cpp build (the spec for fake://
    models). Ray actors report theirs, so a node with another file or build is refused."""
    if isinstance(path, str):
        return path
    return f"{describe_sha(path)}|{engine_id()}"


def describe_sha(path: Path) -> str:
    from promptlab.models import model_sha256  # noqa: PLC0415 - covers every part of a split

    return model_sha256(path)


# --- generations and choice scorings through the result cache ----------------------------


def _gen_to_json(gen: Generation, latency_ms: float) -> dict[str, Any]:
    data = asdict(gen)
    data["latency_ms"] = latency_ms
    return data


def _gen_from_json(data: dict[str, Any]) -> tuple[Generation, float]:
    data = dict(data)
    latency = float(data.pop("latency_ms", 0.0))
    tokens = data.pop("tokens", None)
    gen = Generation(**data)
    if tokens is not None:
        gen.tokens = [
            TokenLogprob(t["text"], t["logprob"], tuple((a, lp) for a, lp in t["top"]))
            for t in tokens
        ]
    return gen, latency


def _generation_key(handle: ModelHandle, request: GenRequest) -> str:
    # Chat requests to a server key on their messages; other keys stay as they were.
    chat = {"messages": request.messages} if request.messages is not None else {}
    return make_key(
        kind="generate",
        **handle.identity(),
        text=request.text,
        add_bos=request.add_bos,
        sampling=asdict(request.sampling),
        grammar=request.grammar,
        logprobs=request.logprobs,
        **chat,
    )


def choices_key(
    identity: dict[str, Any], context: str, add_bos: bool, choices: Sequence[str]
) -> str:
    """The cache key of one choice scoring (shared with distributed/driver.py, which looks it
    up before sending the scoring to a Ray actor)."""
    return make_key(
        kind="choices", **identity, text=context, add_bos=add_bos, choices=list(choices)
    )


def cached_generation(
    cache: Cache | None, handle: ModelHandle, request: GenRequest
) -> tuple[Generation, float] | None:
    """(generation, latency ms) from the result cache, without loading the model."""
    if cache is None:
        return None
    key = _generation_key(handle, request)
    if not handle.cacheable:
        return None
    hit = cache.get("generate", key)
    if hit is None:
        return None
    try:
        return _gen_from_json(hit)
    except (TypeError, KeyError, ValueError, AttributeError):
        return None  # an entry of the wrong shape (another version?) is a miss: regenerate


def remember_generation(
    cache: Cache | None, handle: ModelHandle, request: GenRequest, gen: Generation, latency: float
) -> None:
    if cache is not None and handle.cacheable:
        cache.put("generate", _generation_key(handle, request), _gen_to_json(gen, latency))


def generate_cached(
    cache: Cache | None,
    handle: ModelHandle,
    text: str,
    add_bos: bool,
    sampling: Sampling,
    grammar: str | None,
    logprobs: int | None,
) -> tuple[Generation, float, bool]:
    """(generation, latency ms, served from the cache). CellError propagates and is not cached."""
    request = GenRequest(text, add_bos, sampling, grammar, logprobs)
    hit = cached_generation(cache, handle, request)
    if hit is not None:
        return hit[0], hit[1], True
    backend = handle.get()
    start = time.perf_counter()
    gen = backend.generate(text, add_bos, sampling, grammar=grammar, logprobs=logprobs)
    latency = (time.perf_counter() - start) * 1000
    remember_generation(cache, handle, request, gen, latency)
    return gen, latency, False
