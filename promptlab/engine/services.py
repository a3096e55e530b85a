"""The model access the engine lends to checks (scoring.Services): choice scoring with the model
under test, judges and embeddings, every answer through the result cache."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from promptlab import scoring
from promptlab.backends import Backend, ChoiceScore, Sampling, json_schema_to_grammar
from promptlab.engine.cache import Cache, make_key
from promptlab.engine.handles import ModelHandle, Opener, choices_key, generate_cached, model_record
from promptlab.plan import Plan, PlannedModel
from promptlab.templates import Message


class RunServices:
    """Model access for checks (scoring.Services): choices, judges and embeddings.

    Judge and embedding models named by `provider:` are opened on first use and stay resident
    until the run ends; without a provider, checks use the model under test (its embedding-mode
    twin for embeddings). Every answer goes through the result cache.
    """

    def __init__(
        self,
        plan: Plan,
        opener: Opener,
        on_model: Callable[[dict[str, Any]], None],
        cache: Cache | None = None,
    ) -> None:
        self.plan = plan
        self.opener = opener
        self.on_model = on_model
        self.cache = cache
        self.handle: ModelHandle | None = None
        self._aux: dict[tuple[str, bool], ModelHandle] = {}
        self._judge_grammar: str | None = None
        self.judge_sampling = Sampling(0.0, 0.95, 40, 0.05, 320, (), plan.sampling.seed, 1.0)

    def use(self, handle: ModelHandle) -> None:
        self.handle = handle

    def same_model(self, provider: str) -> bool:
        """Whether a check's `provider:` names the model under test (it then shares its backend)."""
        model = self.plan.aux_models.get(provider)
        return (
            model is not None and self.handle is not None and model.path == self.handle.model.path
        )

    def _resolve(self, provider: str | None) -> PlannedModel:
        if provider is None:
            assert self.handle is not None
            return self.handle.model
        return self.plan.aux_models[provider]

    def _handle(self, model: PlannedModel, embedding: bool, role: str) -> ModelHandle:
        if not embedding and self.handle is not None and model.path == self.handle.model.path:
            return self.handle  # judging with the model under test: reuse the loaded one
        key = (str(model.path), embedding)
        if key not in self._aux:

            def loaded(backend: Backend, load_ms: float) -> None:
                record = model_record(model)
                record["role"] = role
                record["load_ms"] = round(load_ms, 1)
                record["runtime"] = {"backend": backend.info.backend, **backend.info.facts}
                self.on_model(record)

            self._aux[key] = ModelHandle(model, self.opener, embedding=embedding, after_load=loaded)
        return self._aux[key]

    def choices(self, context: str, add_bos: bool, choices: Sequence[str]) -> list[ChoiceScore]:
        assert self.handle is not None
        key = None
        identity = self.handle.identity() if self.cache is not None else {}
        cache = self.cache if self.handle.cacheable else None
        if cache is not None:
            key = choices_key(identity, context, add_bos, choices)
            hit = cache.get("choices", key)
            if hit is not None:
                try:
                    return [ChoiceScore(**c) for c in hit]
                except (TypeError, KeyError):
                    pass  # wrong shape: a miss
        # The backend reuses a cached prefix only where that cannot change the scores
        # (backends/llama_decode.py), so the previous cell's prefix is kept.
        scores = self.handle.get().score_choices(context, add_bos, choices)
        if cache is not None and key is not None:
            cache.put("choices", key, [asdict(c) for c in scores])
        return scores

    def judge(self, provider: str | None, messages: Sequence[Message]) -> dict[str, Any]:
        model = self._resolve(provider)
        handle = self._handle(model, embedding=False, role="judge")
        if self._judge_grammar is None:
            self._judge_grammar = json_schema_to_grammar(scoring.JUDGE_SCHEMA, "judge verdict")
        if model.chat is not None:
            text, add_bos = model.chat.apply(messages, f"judge {model.label}"), False
        else:  # a base model: the turns as plain text
            text, add_bos = "\n\n".join(m.content for m in messages) + "\n\n", True
        gen, _latency, _cached = generate_cached(
            self.cache, handle, text, add_bos, self.judge_sampling, self._judge_grammar, None
        )
        try:
            verdict = json.loads(gen.text)
        except ValueError:
            raise ValueError(
                f"judge {model.label} returned no complete JSON verdict (ran out at {gen.completion_tokens} tokens?)"
            ) from None
        if not isinstance(verdict, dict) or not {"reason", "pass", "score"} <= set(verdict):
            raise ValueError(f"judge {model.label} returned {gen.text[:80]!r}, not a verdict")
        return verdict

    def embed(self, provider: str | None, texts: Sequence[str]) -> list[list[float]]:
        model = self._resolve(provider)
        handle = self._handle(model, embedding=True, role="embedding")
        out: list[list[float] | None] = [None] * len(texts)
        keys = []
        for i, text in enumerate(texts):
            key = make_key(kind="embed", **handle.identity(), text=text) if self.cache else ""
            keys.append(key)
            if self.cache is not None and handle.cacheable:
                hit = self.cache.get("embed", key)
                if isinstance(hit, list) and all(isinstance(x, (int, float)) for x in hit):
                    out[i] = [float(x) for x in hit]
        missing = [i for i, v in enumerate(out) if v is None]
        if missing:
            vectors = handle.get().embed([texts[i] for i in missing])
            for i, vector in zip(missing, vectors, strict=True):
                out[i] = vector
                if self.cache is not None and handle.cacheable:
                    self.cache.put("embed", keys[i], vector)
        return [v for v in out if v is not None]

    def close(self) -> None:
        for handle in self._aux.values():
            handle.close()
        self._aux.clear()
