"""Execute a plan: load each model once, run its cells in order, score, and stream rows to disk."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from promptlab import assertions
from promptlab.backends import (
    Backend,
    CellError,
    ChoiceScore,
    Generation,
    LoadSettings,
    Sampling,
    json_schema_to_grammar,
    open_backend,
)
from promptlab.errors import InputError
from promptlab.models import describe
from promptlab.plan import Cell, Plan, PlannedModel
from promptlab.store import RunWriter
from promptlab.templates import Message

# (path, settings, embedding) -> a loaded backend; tests substitute their own.
Opener = Callable[[Any, LoadSettings, bool], Backend]


class Progress(Protocol):
    def start(self, total: int) -> None: ...
    def model_loading(self, label: str) -> None: ...
    def model_loaded(self, label: str, facts: dict[str, Any]) -> None: ...
    def cell_done(self, row: dict[str, Any]) -> None: ...


class NoProgress:
    def start(self, total: int) -> None:
        pass

    def model_loading(self, label: str) -> None:
        pass

    def model_loaded(self, label: str, facts: dict[str, Any]) -> None:
        pass

    def cell_done(self, row: dict[str, Any]) -> None:
        pass


@dataclass
class Stats:
    cells: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    models: list[dict[str, Any]] = field(default_factory=list)

    def add(self, row: dict[str, Any]) -> None:
        self.cells += 1
        if row["status"] == "pass":
            self.passed += 1
        elif row["status"] == "fail":
            self.failed += 1
        else:
            self.errors += 1


def model_record(model: PlannedModel) -> dict[str, Any]:
    """Static facts about a model for the manifest (file facts, settings, chat template)."""
    record: dict[str, Any] = {"label": model.label, "spec": model.spec_path}
    if model.gguf is not None and not isinstance(model.path, str):
        record.update(describe(model.path, model.gguf))
    else:
        record["path"] = str(model.path)
    record["chat_template_source"] = model.chat_source
    record["load_settings"] = model.settings.as_dict()
    return record


class RunServices:
    """Model access for checks (assertions.Services): choices, judges and embeddings.

    Judge and embedding models named by `provider:` are opened on first use and stay resident
    until the run ends; without a provider, checks use the model under test (its embedding-mode
    twin for embeddings).
    """

    def __init__(
        self, plan: Plan, opener: Opener, on_model: Callable[[dict[str, Any]], None]
    ) -> None:
        self.plan = plan
        self.opener = opener
        self.on_model = on_model
        self.backend: Backend | None = None
        self.model: PlannedModel | None = None
        self._aux: dict[tuple[str, bool], Backend] = {}
        self._judge_grammar: str | None = None
        self.judge_sampling = Sampling(0.0, 0.95, 40, 0.05, 320, (), plan.sampling.seed, 1.0)

    def use(self, model: PlannedModel, backend: Backend) -> None:
        self.model, self.backend = model, backend

    def _resolve(self, provider: str | None) -> PlannedModel:
        if provider is None:
            assert self.model is not None
            return self.model
        return self.plan.aux_models[provider]

    def _open(self, model: PlannedModel, embedding: bool, role: str) -> Backend:
        key = (str(model.path), embedding)
        if key in self._aux:
            return self._aux[key]
        if (
            not embedding
            and self.model is not None
            and model.path == self.model.path
            and self.backend is not None
        ):
            return self.backend  # judging with the model under test: reuse the loaded one
        t0 = time.perf_counter()
        backend = self.opener(model.path, model.settings, embedding)
        record = model_record(model)
        record["role"] = role
        record["load_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        record["runtime"] = {"backend": backend.info.backend, **backend.info.facts}
        self.on_model(record)
        self._aux[key] = backend
        return backend

    def choices(self, context: str, add_bos: bool, choices: Sequence[str]) -> list[ChoiceScore]:
        assert self.backend is not None
        # A fresh context per cell: on Gemma3 (CPU) logits vary with how a sequence was split
        # into decode calls (up to 0.28 nats measured), so reusing the previous cell's prefix
        # would make scores depend on cell order and --filter. The context is still evaluated
        # once for all of a cell's choices.
        return self.backend.score_choices(context, add_bos, choices, reuse_prefix=False)

    def judge(self, provider: str | None, messages: Sequence[Message]) -> dict[str, Any]:
        model = self._resolve(provider)
        backend = self._open(model, embedding=False, role="judge")
        if self._judge_grammar is None:
            self._judge_grammar = json_schema_to_grammar(assertions.JUDGE_SCHEMA, "judge verdict")
        if model.chat is not None:
            text, add_bos = model.chat.apply(messages, f"judge {model.label}"), False
        else:  # a base model: the turns as plain text
            text, add_bos = "\n\n".join(m.content for m in messages) + "\n\n", True
        gen = backend.generate(text, add_bos, self.judge_sampling, grammar=self._judge_grammar)
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
        return self._open(model, embedding=True, role="embedding").embed(texts)

    def close(self) -> None:
        for backend in self._aux.values():
            if backend is not self.backend:
                backend.close()
        self._aux.clear()


def compact_logprobs(gen: Generation | None) -> dict[str, Any] | None:
    """Token logprobs as parallel lists (plain floats, 4 decimals): small in JSONL and CSV."""
    if gen is None or gen.tokens is None:
        return None
    return {
        "tokens": [t.text for t in gen.tokens],
        "logprobs": [round(float(t.logprob), 4) for t in gen.tokens],
        "top": [[[alt, round(float(lp), 4)] for alt, lp in t.top] for t in gen.tokens],
    }


def score_cell(
    cell: Cell,
    gen: Generation | None,
    output: str,
    latency_ms: float,
    services: assertions.Services | None,
) -> tuple[bool, float, list[dict[str, Any]], dict[str, float]]:
    ctx = assertions.CheckContext(
        output=output,
        latency_ms=latency_ms,
        generation=gen,
        vars=cell.test.vars,
        test=cell.test.name,
        prompt=cell.prompt.label,
        model=cell.model.label,
        prompt_text=cell.text,
        add_bos=cell.add_bos,
        services=services,
    )
    if cell.transform is not None:
        try:
            ctx = replace(ctx, output=cell.transform(output, ctx.for_code()))
        except Exception as exc:  # user transform code: every check fails with the reason
            reason = f"test transform failed: {type(exc).__name__}: {exc}"
            failed = [
                {
                    "check": c.describe(),
                    "type": c.type,
                    "pass": False,
                    "score": 0.0,
                    "reason": reason,
                }
                for c in cell.checks
            ]
            return False, 0.0, failed, {}
    results = [assertions.evaluate(c, ctx) for c in cell.checks]
    passed, score = assertions.combine(results, cell.threshold)
    rows = [
        {"check": c.describe(), **r.as_dict()} for c, r in zip(cell.checks, results, strict=True)
    ]
    return passed, score, rows, assertions.named_scores(results)


def make_row(
    cell: Cell,
    plan: Plan,
    gen: Generation | None,
    latency_ms: float,
    error: str | None,
    services: assertions.Services | None = None,
) -> dict[str, Any]:
    output = gen.text if gen is not None else None
    if error is None and not cell.generate:
        output = ""  # choice-only cells: the output is the picked option, filled in below
    checks: list[dict[str, Any]] = []
    named: dict[str, float] = {}
    if error is not None or output is None:
        status, score = "error", 0.0
    else:
        passed, score, checks, named = score_cell(cell, gen, output, latency_ms, services)
        status = "pass" if passed else "fail"
        if not cell.generate:
            picks = [c.get("details", {}).get("chosen") for c in checks if c["type"] == "choice"]
            output = next((p for p in picks if p is not None), "")
    wall_tps = gen.completion_tokens / (latency_ms / 1000) if gen and latency_ms > 0 else None
    return {
        "cell_id": cell.id,
        "model": cell.model.label,
        "prompt": cell.prompt.label,
        "prompt_source": cell.prompt.source,
        "test_index": cell.test.index,
        "test": cell.test.name,
        "vars": cell.test.vars,
        "messages": [m.as_dict() for m in cell.messages],
        "chat_applied": cell.chat_applied,
        "rendered_prompt": cell.text,
        "output": output,
        "status": status,
        "pass": status == "pass",
        "score": round(score, 6),
        "named_scores": {k: round(v, 6) for k, v in named.items()},
        "checks": checks,
        "error": error,
        "latency_ms": round(latency_ms, 3),
        "prompt_tokens": gen.prompt_tokens if gen else None,
        "completion_tokens": gen.completion_tokens if gen else None,
        "tokens_per_s": round(wall_tps, 3) if wall_tps is not None else None,
        "prompt_eval_tokens": gen.prompt_eval_tokens if gen else None,
        "prompt_eval_ms": gen.prompt_eval_ms if gen else None,
        "eval_ms": gen.eval_ms if gen else None,
        "finish_reason": gen.finish_reason if gen else None,
        "grammar": cell.grammar.source if cell.grammar else None,
        "logprobs": compact_logprobs(gen),
        "metadata": cell.test.metadata,
        "params": asdict(plan.sampling),
    }


def _check_grammars(backend: Backend, cells: Sequence[Cell]) -> None:
    """Validate each distinct grammar once, right after load: llama.cpp parses GBNF lazily."""
    seen: set[str] = set()
    for cell in cells:
        if cell.grammar is None or cell.grammar.gbnf in seen:
            continue
        seen.add(cell.grammar.gbnf)
        problem = backend.check_grammar(cell.grammar.gbnf)
        if problem:
            raise InputError(
                f"{cell.prompt.where}: {cell.grammar.source} is not a grammar llama.cpp accepts: {problem}",
                hint="fix the GBNF (see llama.cpp's grammars/README.md)",
            )


def execute(
    plan: Plan,
    writer: RunWriter,
    progress: Progress,
    on_model: Callable[[dict[str, Any]], None],
    opener: Opener | None = None,
) -> Stats:
    """Run every cell. KeyboardInterrupt propagates after the current cell; rows so far are on disk."""
    stats = Stats()
    open_model: Opener = opener or (
        lambda path, settings, embedding: open_backend(path, settings, embedding=embedding)
    )

    def remember(record: dict[str, Any]) -> None:
        stats.models.append(record)
        on_model(record)

    services = RunServices(plan, open_model, remember)
    progress.start(len(plan.cells))
    try:
        for model in plan.models:
            cells = [c for c in plan.cells if c.model is model]
            if not cells:
                continue
            record = model_record(model)
            record["role"] = "under test"
            progress.model_loading(model.label)
            t0 = time.perf_counter()
            backend = open_model(model.path, model.settings, False)
            try:
                record["load_ms"] = round((time.perf_counter() - t0) * 1000, 1)
                record["runtime"] = {"backend": backend.info.backend, **backend.info.facts}
                remember(record)
                progress.model_loaded(model.label, record)
                _check_grammars(backend, cells)
                services.use(model, backend)
                for cell in cells:
                    row = _run_cell(cell, plan, backend, services)
                    writer.append(row)
                    stats.add(row)
                    progress.cell_done(row)
            finally:
                backend.close()
    finally:
        services.close()
    return stats


def _run_cell(cell: Cell, plan: Plan, backend: Backend, services: RunServices) -> dict[str, Any]:
    gen: Generation | None = None
    error: str | None = None
    start = time.perf_counter()
    if cell.generate:
        try:
            gen = backend.generate(
                cell.text,
                cell.add_bos,
                plan.sampling,
                grammar=cell.grammar.gbnf if cell.grammar else None,
                logprobs=cell.logprobs,
            )
        except CellError as exc:
            error = exc.one_line()
        latency_ms = (time.perf_counter() - start) * 1000
        return make_row(cell, plan, gen, latency_ms, error, services)
    # Scored from the prompt alone (choice): the time is the scoring's own.
    row = make_row(cell, plan, None, 0.0, None, services)
    row["latency_ms"] = round((time.perf_counter() - start) * 1000, 3)
    return row
