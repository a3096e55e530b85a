"""Execute a plan: load each model once, run its cells in order, score, and stream rows to disk.

A model is reached through a handle (engine/handles.py: loaded on first use, generations through
the result cache); checks that need a model get it from RunServices (engine/services.py).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from promptlab import scoring
from promptlab.backends import Backend, CellError, Generation, GenRequest, open_backend
from promptlab.backends.server import ServerSpec
from promptlab.engine.cache import Cache
from promptlab.engine.handles import (
    ModelHandle,
    Opener,
    cached_generation,
    model_record,
    remember_generation,
)
from promptlab.engine.servers import require_choice_support
from promptlab.engine.services import RunServices
from promptlab.engine.store import RunWriter
from promptlab.errors import InputError
from promptlab.plan import Cell, Plan, schedule


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
    unchecked: int = 0  # outputs no check gated: neither passes nor failures
    cached: int = 0
    # Prompt tokens of the generations this run actually ran, and how many of them llama.cpp
    # had to evaluate (the rest came from the KV cache of the previous, prefix-sharing cell).
    prompt_tokens: int = 0
    prompt_eval_tokens: int = 0
    models: list[dict[str, Any]] = field(default_factory=list)

    def add(self, row: dict[str, Any]) -> None:
        self.cells += 1
        if row["status"] == "pass":
            self.passed += 1
        elif row["status"] == "fail":
            self.failed += 1
        elif row["status"] == "unchecked":
            self.unchecked += 1
        else:
            self.errors += 1
        if row.get("cached"):
            self.cached += 1
        elif row.get("prompt_tokens") is not None and row.get("prompt_eval_tokens") is not None:
            self.prompt_tokens += row["prompt_tokens"]
            self.prompt_eval_tokens += row["prompt_eval_tokens"]

    def prefix_reuse(self) -> dict[str, Any]:
        reused = self.prompt_tokens - self.prompt_eval_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "evaluated": self.prompt_eval_tokens,
            "reused": reused,
            "reused_share": round(reused / self.prompt_tokens, 4) if self.prompt_tokens else 0.0,
        }


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
    services: scoring.Services | None,
) -> tuple[bool, float, list[dict[str, Any]], dict[str, float]]:
    ctx = scoring.CheckContext(
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
    results = [scoring.evaluate(c, ctx) for c in cell.checks]
    passed, score = scoring.combine(results, cell.threshold)
    rows = [
        {"check": c.describe(), **r.as_dict()} for c, r in zip(cell.checks, results, strict=True)
    ]
    return passed, score, rows, scoring.named_scores(results)


def make_row(
    cell: Cell,
    plan: Plan,
    gen: Generation | None,
    latency_ms: float,
    error: str | None,
    services: scoring.Services | None = None,
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
        if not any(c.get("weight", 1.0) > 0 for c in checks):
            status = "unchecked"  # nothing gated this output: not a pass (nor a failure)
        if not cell.generate:
            picks = [c.get("details", {}).get("chosen") for c in checks if c["type"] == "choice"]
            output = next((p for p in picks if p is not None), "")
    wall_tps = gen.completion_tokens / (latency_ms / 1000) if gen and latency_ms > 0 else None
    return {
        "cell_id": cell.id,
        "order": cell.order,  # suite order; rows are written in run order
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
        "pass": None if status == "unchecked" else status == "pass",
        "score": None if status == "unchecked" else round(score, 6),
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
        "params": asdict(cell.sampling or plan.sampling),
        "setting": cell.setting,
        "repeat": cell.repeat,
        "seed": (cell.sampling or plan.sampling).seed,
    }


def check_grammars(backend: Backend, cells: Sequence[Cell]) -> None:
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
    cache: Cache | None = None,
    stats: Stats | None = None,
) -> Stats:
    """Run every cell. KeyboardInterrupt propagates after the current cell; rows so far are on disk.

    `stats` is filled in place, so a caller keeps the counts even when the run is interrupted.
    """
    stats = stats if stats is not None else Stats()
    open_model: Opener = opener or (
        lambda path, settings, embedding: open_backend(path, settings, embedding=embedding)
    )

    def remember(record: dict[str, Any]) -> None:
        stats.models.append(record)
        on_model(record)

    services = RunServices(plan, open_model, remember, cache)
    progress.start(len(plan.cells))
    try:
        for model in plan.models:
            cells = schedule([c for c in plan.cells if c.model is model])
            if not cells:
                continue
            record = model_record(model)
            record["role"] = "under test"

            def loaded(
                backend: Backend,
                load_ms: float,
                record: dict[str, Any] = record,
                cells: list[Cell] = cells,
            ) -> None:
                record["load_ms"] = round(load_ms, 1)
                record["runtime"] = {"backend": backend.info.backend, **backend.info.facts}
                remember(record)
                progress.model_loaded(record["label"], record)
                check_grammars(backend, cells)

            handle = ModelHandle(
                model,
                open_model,
                before_load=functools.partial(progress.model_loading, model.label),
                after_load=loaded,
            )
            services.use(handle)
            if isinstance(model.path, ServerSpec):
                # Outside any check, so a refusal stops the run instead of failing each cell.
                require_choice_support(handle, cells)

            def emit(row: dict[str, Any]) -> None:
                writer.append(row)
                stats.add(row)
                progress.cell_done(row)

            try:
                timing = _run_model(cells, plan, handle, services, cache, emit)
                if timing is not None:
                    record["generation"] = timing
            finally:
                handle.close()
            if not handle.loaded and record not in stats.models:
                record["loaded"] = False  # every cell came from the cache
                remember(record)
    finally:
        services.close()
    return stats


def gen_request(cell: Cell, plan: Plan) -> GenRequest:
    """The backend request for one cell (public: the Ray driver builds the same one)."""
    chat = tuple((m.role, m.content) for m in cell.messages) if cell.endpoint == "chat" else None
    return GenRequest(
        cell.text,
        cell.add_bos,
        cell.sampling or plan.sampling,
        cell.grammar.gbnf if cell.grammar else None,
        cell.logprobs,
        tag=cell,
        messages=chat,
    )


def _needs_model(cell: Cell, services: RunServices) -> bool:
    """Whether scoring the cell calls the model under test (choice checks, a judge without a
    provider of its own): such cells are scored after the batch that generated them."""
    for check in cell.checks:
        for c in check.walk():
            if c.base == "choice":
                return True
            if c.base in scoring.JUDGE_TYPES:
                provider = c.options.get("provider")
                if provider is None or services.same_model(provider):
                    return True
    return False


def _run_model(
    cells: list[Cell],
    plan: Plan,
    handle: ModelHandle,
    services: RunServices,
    cache: Cache | None,
    emit: Callable[[dict[str, Any]], None],
) -> dict[str, Any] | None:
    """Every cell of one model: choice-only cells and cache hits first, then every generation
    the cache lacks in one batch (the backend runs several at once where that is exact); rows
    are emitted as cells finish. Returns the batch's wall time and token counts, for the
    manifest (None when nothing was generated)."""
    misses: list[GenRequest] = []
    for cell in cells:
        if not cell.generate:
            # Scored from the prompt alone (choice): the time is the scoring's own.
            start = time.perf_counter()
            hits = cache.hits if cache is not None else 0
            row = make_row(cell, plan, None, 0.0, None, services)
            row["latency_ms"] = round((time.perf_counter() - start) * 1000, 3)
            row["cached"] = cache is not None and cache.hits > hits
            emit(row)
            continue
        request = gen_request(cell, plan)
        hit = cached_generation(cache, handle, request)
        if hit is not None:
            row = make_row(cell, plan, hit[0], hit[1], None, services)
            row["cached"] = True
            emit(row)
        else:
            misses.append(request)
    if not misses:
        return None
    backend = handle.get()
    started = time.perf_counter()
    tokens = prompt_tokens = evaluated = 0
    # Where batching is not exact on this model but parallel > 1 was asked for, results may
    # depend on which cells shared a step: they are reported, never cached.
    store = cache if backend.info.facts.get("batch_exact", True) else None
    deferred: list[tuple[Cell, Generation]] = []
    for request, result in backend.generate_batch(misses):
        cell = request.tag
        if isinstance(result, CellError):
            row = make_row(cell, plan, None, 0.0, result.one_line(), services)
        else:
            latency = result.wall_ms if result.wall_ms is not None else 0.0
            tokens += result.completion_tokens
            prompt_tokens += result.prompt_tokens
            evaluated += result.prompt_eval_tokens or 0
            remember_generation(store, handle, request, result, latency)
            if _needs_model(cell, services):
                deferred.append((cell, result))
                continue
            row = make_row(cell, plan, result, latency, None, services)
        row["cached"] = False
        emit(row)
    wall_ms = (time.perf_counter() - started) * 1000
    for cell, gen in deferred:
        row = make_row(cell, plan, gen, gen.wall_ms or 0.0, None, services)
        row["cached"] = False
        emit(row)
    return {
        "cells": len(misses),
        "wall_ms": round(wall_ms, 1),
        "completion_tokens": tokens,
        "prompt_tokens": prompt_tokens,
        "prompt_eval_tokens": evaluated,
        # Scoring of cells that need no model runs inside this time too.
        "completion_tokens_per_s": round(tokens / wall_ms * 1000, 2) if wall_ms > 0 else None,
    }
