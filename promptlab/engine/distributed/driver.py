"""runner.execute on Ray: the driver scores and writes every row; the actors compute."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from promptlab.backends import (
    CellError,
    Generation,
    GenRequest,
    open_backend,
)
from promptlab.engine.cache import Cache
from promptlab.engine.distributed.cluster import Cluster, actors_for
from promptlab.engine.distributed.pool import (
    IN_FLIGHT,
    START_TIMEOUT_S,
    WAIT_S,
    Pool,
    Router,
    Slot,
    chunks,
    get_result,
    shard,
)
from promptlab.engine.distributed.worker import Job, JobResult
from promptlab.engine.handles import (
    ModelHandle,
    cached_generation,
    choices_key,
    model_record,
    remember_generation,
)
from promptlab.engine.runner import (
    NoProgress,
    Progress,
    Stats,
    check_grammars,
    gen_request,
    make_row,
)
from promptlab.engine.services import RunServices
from promptlab.engine.store import RunWriter
from promptlab.errors import BackendError
from promptlab.plan import Cell, Plan, PlannedModel, schedule


def _peek(cache: Cache | None, kind: str, key: str) -> bool:
    """Whether the cache holds `key`, without counting a hit or miss: the counts (in the
    manifest) stay those of the lookups a local run makes."""
    if cache is None:
        return False
    counts = (cache.hits, cache.misses, cache.read_errors)
    try:
        return cache.get(kind, key) is not None
    finally:
        cache.hits, cache.misses, cache.read_errors = counts


def _choice_calls(cell: Cell) -> list[tuple[str, bool, tuple[str, ...]]]:
    calls = []
    for check in cell.checks:
        for c in check.walk():
            if c.base == "choice":  # assertions._choice: the prompt itself is the context
                calls.append((cell.text, cell.add_bos, tuple(c.options["choices"])))
    return list(dict.fromkeys(calls))


def execute_ray(
    plan: Plan,
    writer: RunWriter,
    progress: Progress,
    on_model: Callable[[dict[str, Any]], None],
    cluster: Cluster,
    cache: Cache | None = None,
    stats: Stats | None = None,
) -> Stats:
    """runner.execute on a Ray cluster: the same rows, cache entries and manifest records;
    each model's record also says how many actors ran it and how often one was replaced."""
    stats = stats if stats is not None else Stats()
    progress = progress or NoProgress()

    def remember(record: dict[str, Any]) -> None:
        stats.models.append(record)
        on_model(record)

    # Judges and embedding models with a provider of their own load on the driver, as locally.
    services = RunServices(
        plan,
        lambda path, settings, emb: open_backend(path, settings, embedding=emb),
        remember,
        cache,
    )
    progress.start(len(plan.cells))
    tag = f"promptlab-{os.getpid()}-{time.monotonic_ns()}"
    try:
        for number, model in enumerate(plan.models):
            cells = schedule([c for c in plan.cells if c.model is model])
            if cells:
                run = _ModelRun(plan, model, cluster, services, cache, writer, stats, progress)
                run.run(cells, remember, f"{tag}-{number}")
    finally:
        services.close()
    return stats


@dataclass
class _Pending:
    cell: Cell
    request: GenRequest | None  # a generation the cache lacks
    hit: tuple[Generation, float] | None  # a generation the cache holds
    calls: tuple[tuple[str, bool, tuple[str, ...]], ...]


class _ModelRun:
    """Every cell of one model under test, on its actors."""

    def __init__(
        self,
        plan: Plan,
        model: PlannedModel,
        cluster: Cluster,
        services: RunServices,
        cache: Cache | None,
        writer: RunWriter,
        stats: Stats,
        progress: Progress,
    ) -> None:
        self.plan = plan
        self.model = model
        self.cluster = cluster
        self.ray = cluster.ray
        self.services = services
        self.cache = cache
        self.writer = writer
        self.stats = stats
        self.progress = progress
        self.store = cache  # None where batching is not exact on this model (runner._run_model)
        self.tokens = self.prompt_tokens = self.evaluated = 0

    def emit(self, row: dict[str, Any]) -> None:
        self.writer.append(row)
        self.stats.add(row)
        self.progress.cell_done(row)

    def run(self, cells: list[Cell], remember: Callable[[dict[str, Any]], None], tag: str) -> None:
        record = model_record(self.model)
        record["role"] = "under test"
        self.handle = ModelHandle(self.model, lambda path, settings, embedding: self.router)
        pool = Pool(self.cluster, self.model, tag, self.handle.identity()["model"])
        self.pool = pool
        self.router = Router(pool)
        self.services.use(self.handle)
        try:
            pending = self._score_cached(cells)
            if pending:
                self._run_remote(pending, cells, record, remember)
        finally:
            pool.close()
        loaded = [s.facts for s in pool.slots if s.facts is not None]
        if record not in self.stats.models:
            if loaded:  # only a judge needed the model: it loaded for that
                self._loaded(record, loaded[0])
                remember(record)
            else:
                record["loaded"] = False  # every cell came from the cache
                remember(record)

    def _row(self, p: _Pending, gen: Generation | CellError | None) -> dict[str, Any]:
        """The row runner._run_model would write for this cell."""
        cell, plan, services = p.cell, self.plan, self.services
        if p.hit is not None:
            row = make_row(cell, plan, p.hit[0], p.hit[1], None, services)
            row["cached"] = True
            return row
        if p.request is None:  # choice-only: the time is the scoring's own
            start = time.perf_counter()
            hits = self.cache.hits if self.cache is not None else 0
            row = make_row(cell, plan, None, 0.0, None, services)
            row["latency_ms"] = round((time.perf_counter() - start) * 1000, 3)
            row["cached"] = self.cache is not None and self.cache.hits > hits
            return row
        if isinstance(gen, CellError):
            row = make_row(cell, plan, None, 0.0, gen.one_line(), services)
        else:
            assert gen is not None, "a generation job came back without its generation"
            latency = gen.wall_ms if gen.wall_ms is not None else 0.0
            self.tokens += gen.completion_tokens
            self.prompt_tokens += gen.prompt_tokens
            self.evaluated += gen.prompt_eval_tokens or 0
            remember_generation(self.store, self.handle, p.request, gen, latency)
            row = make_row(cell, plan, gen, latency, None, services)
        row["cached"] = False
        return row

    def _score_cached(self, cells: list[Cell]) -> list[_Pending]:
        """Rows the cache fully answers are written now, in run order (as runner._run_model
        does); the rest become jobs for the actors."""
        pending = []
        for cell in cells:
            request = gen_request(cell, self.plan) if cell.generate else None
            hit = (
                cached_generation(self.cache, self.handle, request) if request is not None else None
            )
            calls = tuple(
                c
                for c in _choice_calls(cell)
                if not _peek(self.cache, "choices", choices_key(self.handle.identity(), *c))
            )
            p = _Pending(cell, request if hit is None else None, hit, calls)
            if p.request is None and not calls:
                self.emit(self._row(p, None))
            else:
                pending.append(p)
        return pending

    def _loaded(self, record: dict[str, Any], facts: dict[str, Any]) -> None:
        record["load_ms"] = facts["load_ms"]
        record["runtime"] = facts["runtime"]

    def _run_remote(
        self,
        pending: list[_Pending],
        cells: list[Cell],
        record: dict[str, Any],
        remember: Callable[[dict[str, Any]], None],
    ) -> None:
        pool = self.pool
        jobs = [
            Job(i, replace(p.request, tag=i) if p.request is not None else None, p.calls)
            for i, p in enumerate(pending)
        ]
        n = actors_for(self.cluster, self.model, len(jobs))
        self.progress.model_loading(self.model.label)
        known = len(pool.slots)  # a judge may have started one already
        shards = shard([p.cell.text for p in pending], max(n, known) if known else n)
        for i, indices in enumerate(shards):
            if i < known:
                pool.slots[i].queue.extend(chunks(indices))
            else:
                pool.add(chunks(indices))
        first = self._first_loaded()
        self._loaded(record, first)
        remember(record)
        self.progress.model_loaded(record["label"], record)
        check_grammars(self.router, cells)
        if not first["runtime"].get("batch_exact", True):
            self.store = None  # results may depend on which cells shared a step: never cached
        started = time.perf_counter()
        try:
            self._drain(jobs, pending)
        finally:  # an interrupted or failed run says how far its actors got, too
            record["ray"] = {
                "actors": len(pool.slots),
                "actors_replaced": pool.respawned,
                "cells_retried": pool.retried_cells,
                "cells_per_actor": [s.cells for s in pool.slots],
                "hosts": sorted({s.facts["host"] for s in pool.slots if s.facts is not None}),
            }
        wall_ms = (time.perf_counter() - started) * 1000
        if any(p.request is not None for p in pending):
            record["generation"] = {
                "cells": sum(p.request is not None for p in pending),
                "wall_ms": round(wall_ms, 1),
                "completion_tokens": self.tokens,
                "prompt_tokens": self.prompt_tokens,
                "prompt_eval_tokens": self.evaluated,
                "completion_tokens_per_s": round(self.tokens / wall_ms * 1000, 2)
                if wall_ms > 0
                else None,
            }

    def _first_loaded(self) -> dict[str, Any]:
        """The facts of the first actor to load the model (its load error, if it failed)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            for slot in self.pool.slots:
                if slot.facts is not None:
                    return slot.facts
            owners = {s.ready: s for s in self.pool.slots if s.ready is not None}
            done, _ = self.ray.wait(list(owners), num_returns=1, timeout=WAIT_S)
            for ref in done:
                self._settle_ready(owners[ref], ref)
            if time.monotonic() > deadline:
                raise BackendError(
                    f"model '{self.model.label}': no Ray actor loaded it within "
                    f"{START_TIMEOUT_S:.0f} s",
                    hint="check that the cluster has the CPUs (and GPUs) one actor needs",
                )

    def _settle_ready(self, slot: Slot, ref: Any) -> None:
        try:
            self.pool.settle(slot, get_result(self.ray, ref, 0))
        except self.ray.exceptions.RayActorError as exc:
            self.pool.died(slot, exc)

    def _feed(self, slot: Slot) -> None:
        """Keep a loaded actor IN_FLIGHT chunks ahead; an idle one takes the last queued chunk
        of the slot with the most left (the tail: the victim keeps its prefix run)."""
        if slot.facts is None:
            return
        while len(slot.in_flight) < IN_FLIGHT:
            if not slot.queue:
                victims = [
                    s
                    for s in self.pool.slots
                    if s is not slot and (len(s.queue) > 1 or (s.queue and s.facts is None))
                ]
                if not victims or slot.in_flight:
                    return
                slot.queue.append(max(victims, key=lambda s: len(s.queue)).queue.pop())
            chunk = slot.queue.popleft()
            ref = slot.actor.run.remote([self._jobs[i] for i in chunk])
            slot.in_flight[ref] = chunk

    def _drain(self, jobs: list[Job], pending: list[_Pending]) -> None:
        self._jobs = jobs
        done_cells: set[int] = set()
        while True:
            for slot in self.pool.slots:
                self._feed(slot)
            owners: dict[Any, Slot] = {}
            for slot in self.pool.slots:
                owners.update(dict.fromkeys(slot.in_flight, slot))
                if slot.ready is not None:
                    owners[slot.ready] = slot
            if not any(s.in_flight or s.queue for s in self.pool.slots):
                return
            ready, _ = self.ray.wait(list(owners), num_returns=1, timeout=WAIT_S)
            for ref in ready:
                slot = owners[ref]
                if ref is slot.ready:
                    self._settle_ready(slot, ref)
                    continue
                if ref not in slot.in_flight:
                    continue  # dropped when its actor died: its chunk is queued again
                try:
                    results: list[JobResult] = get_result(self.ray, ref, 0)
                except self.ray.exceptions.RayActorError as exc:
                    self.pool.died(slot, exc)
                    continue
                del slot.in_flight[ref]
                for result in results:
                    if result.index in done_cells:
                        continue  # never two rows for one cell
                    done_cells.add(result.index)
                    p = pending[result.index]
                    for call, scores in zip(p.calls, result.choices, strict=True):
                        self.router.scores[call] = scores
                    slot.cells += 1
                    self.emit(self._row(p, result.generation))
