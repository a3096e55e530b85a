"""Execute a plan: load each model once, run its cells in order, score, and stream rows to disk."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from promptlab import assertions
from promptlab.backends import Backend, CellError, Generation, LoadSettings, open_backend
from promptlab.models import describe
from promptlab.plan import Cell, Plan, PlannedModel
from promptlab.store import RunWriter


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


def score(
    cell: Cell, gen: Generation | None, latency_ms: float, error: str | None
) -> tuple[str, list[dict[str, Any]]]:
    if error is not None or gen is None:
        return "error", []
    results = [assertions.apply(c, gen.text, latency_ms) for c in cell.checks]
    status = "pass" if all(r.passed for r in results) else "fail"
    return status, [
        {"check": c.describe(), **r.as_dict()} for c, r in zip(cell.checks, results, strict=True)
    ]


def make_row(
    cell: Cell, plan: Plan, gen: Generation | None, latency_ms: float, error: str | None
) -> dict[str, Any]:
    status, checks = score(cell, gen, latency_ms, error)
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
        "output": gen.text if gen else None,
        "status": status,
        "pass": status == "pass",
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
        "params": asdict(plan.sampling),
    }


def execute(
    plan: Plan,
    writer: RunWriter,
    progress: Progress,
    on_model: Callable[[dict[str, Any]], None],
    opener: Callable[[Any, LoadSettings], Backend] = open_backend,
) -> Stats:
    """Run every cell. KeyboardInterrupt propagates after the current cell; rows so far are on disk."""
    stats = Stats()
    progress.start(len(plan.cells))
    for model in plan.models:
        cells = [c for c in plan.cells if c.model is model]
        if not cells:
            continue
        record = model_record(model)
        progress.model_loading(model.label)
        t0 = time.perf_counter()
        backend = opener(model.path, model.settings)
        try:
            record["load_ms"] = round((time.perf_counter() - t0) * 1000, 1)
            record["runtime"] = {"backend": backend.info.backend, **backend.info.facts}
            stats.models.append(record)
            on_model(record)
            progress.model_loaded(model.label, record)
            for cell in cells:
                gen: Generation | None = None
                error: str | None = None
                start = time.perf_counter()
                try:
                    gen = backend.generate(cell.text, cell.add_bos, plan.sampling)
                except CellError as exc:
                    error = exc.one_line()
                latency_ms = (time.perf_counter() - start) * 1000
                row = make_row(cell, plan, gen, latency_ms, error)
                writer.append(row)
                stats.add(row)
                progress.cell_done(row)
        finally:
            backend.close()
    return stats
