"""Run a plan on a Ray cluster (`promptlab run --ray auto|local|HOST:PORT`).

The split of work keeps a Ray run's rows equal to a local run's:
- Ray actors only compute: each loads one model once (num_cpus = its n_threads, one GPU where
  layers are offloaded) and answers generations and choice scorings for chunks of cells.
- The driver does everything else with the runner's own code: it looks each cell up in the
  result cache, scores every row (make_row), and alone writes results.jsonl, the manifest and
  the cache. Checks that call the model (choice) find the actor's answers waiting for them;
  a judge that uses the model under test asks a live actor.

Sharding: a model's cells, in run order (plan.schedule puts prefix-sharing cells back to back),
are cut into one contiguous shard per actor, each cut moved to where neighbouring prompts share
the least text, so prefix reuse is lost only at the cuts. An idle actor takes the last queued
chunk of the busiest one.

Faults: a chunk is a unit: its rows are written only once it comes back whole. When an actor
dies, its unfinished chunks go back to its queue and a new actor takes its place (up to
MAX_RESPAWNS per slot), so no cell is lost and none is written twice.

Ray is an optional extra and is imported only here, only when --ray is given.
"""

from __future__ import annotations

import importlib
import itertools
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from promptlab.backends import (
    Backend,
    CellError,
    ChoiceScore,
    Generation,
    GenRequest,
    LoadSettings,
    RuntimeInfo,
    Sampling,
    open_backend,
)
from promptlab.cache import Cache
from promptlab.errors import BackendError, InputError, PromptlabError
from promptlab.plan import Cell, Plan, PlannedModel, schedule
from promptlab.runner import (
    ModelHandle,
    NoProgress,
    Progress,
    RunServices,
    Stats,
    _check_grammars,
    _request,
    cached_generation,
    choices_key,
    make_row,
    model_record,
    remember_generation,
)
from promptlab.store import RunWriter

INSTALL_HINT = "install it with: pip install 'promptlab[ray]'"
MAX_RESPAWNS = 3  # per actor slot; a model that keeps killing its actors fails the run
IN_FLIGHT = 2  # chunks queued per actor, so it never waits while the driver scores
CHUNK_MAX = 16  # cells per chunk: rows stream back at least this often
START_TIMEOUT_S = 900.0  # for the first actor of a model to load it (remote disks can be slow)
WAIT_S = 1.0  # ray.wait slices: Ctrl-C is seen within a second


def import_ray() -> Any:
    """The ray module, or InputError (exit 2) saying how to install it."""
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise InputError("--ray needs Ray, which is not installed", hint=INSTALL_HINT) from None


def check_address(address: str) -> str:
    """`address` if it is one --ray accepts (auto, local, HOST:PORT, ray://HOST:PORT)."""
    if address in ("auto", "local"):
        return address
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(
            f"--ray {address!r}: not auto, local, HOST:PORT or ray://HOST:PORT",
            hint="--ray auto joins the cluster `ray start --head` started on this machine",
        )
    return address


@dataclass
class Cluster:
    """A connection to Ray for one run; `close` disconnects only what `connect` opened."""

    ray: Any
    address: str
    owned: bool
    max_actors: int | None = None

    def describe(self) -> dict[str, Any]:
        nodes = _nodes(self.ray)
        return {
            "address": self.address,
            "nodes": len(nodes),
            "cpus": sum(n["CPU"] for n in nodes),
            "gpus": sum(n["GPU"] for n in nodes),
            "max_actors": self.max_actors,
        }

    def close(self) -> None:
        if self.owned and self.ray.is_initialized():
            self.ray.shutdown()


def connect(address: str, max_actors: int | None = None) -> Cluster:
    """Join (or with `local`, start) a Ray cluster. Reuses a connection the caller already made
    with ray.init (a notebook, the tests) and leaves it open afterwards."""
    check_address(address)
    if max_actors is not None and max_actors < 1:
        raise InputError(f"--ray-actors must be at least 1, got {max_actors}")
    ray = import_ray()
    if ray.is_initialized():
        return Cluster(ray, address, owned=False, max_actors=max_actors)
    quiet: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    try:
        if address == "local":
            ray.init(include_dashboard=False, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"--ray {address}: cannot reach a Ray cluster ({first})",
            hint="start one with `ray start --head` (then --ray auto, or HOST:PORT from "
            "another machine), or use --ray local",
        ) from None
    return Cluster(ray, address, owned=True, max_actors=max_actors)


# --- the actor ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One cell's model work: its generation (None: cached or not generating) and the choice
    scorings its checks will ask for (context, add_bos, choices)."""

    index: int
    request: GenRequest | None
    choices: tuple[tuple[str, bool, tuple[str, ...]], ...] = ()


@dataclass
class JobResult:
    index: int
    generation: Generation | CellError | None
    # Per Job.choices entry: the scores, or the exception score_choices raised (a check fails
    # with it on the driver, as it would in a local run).
    choices: list[list[ChoiceScore] | Exception] = field(default_factory=list)


class ModelWorker:
    """A Ray actor's body: one model, loaded once, used for every chunk sent to it."""

    def __init__(self, path: Path | str, settings: LoadSettings) -> None:
        self.backend: Backend | None = None
        self.error: PromptlabError | None = None
        started = time.perf_counter()
        try:
            self.backend = open_backend(path, settings)
        except PromptlabError as exc:  # reported by facts(), so the driver shows it as one line
            self.error = exc
        self.load_ms = (time.perf_counter() - started) * 1000

    def _model(self) -> Backend:
        if self.backend is None:
            raise self.error or BackendError("the model did not load")
        return self.backend

    def facts(self) -> dict[str, Any]:
        backend = self._model()
        import socket  # noqa: PLC0415 - only where the manifest asks

        return {
            "load_ms": round(self.load_ms, 1),
            "runtime": {"backend": backend.info.backend, **backend.info.facts},
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }

    def run(self, jobs: list[Job]) -> list[JobResult]:
        backend = self._model()
        requests = [j.request for j in jobs if j.request is not None]
        generations: dict[int, Generation | CellError] = {}
        for request, result in backend.generate_batch(requests):
            generations[request.tag] = result
        out = []
        for job in jobs:
            scores: list[list[ChoiceScore] | Exception] = []
            for context, add_bos, choices in job.choices:
                try:
                    scores.append(backend.score_choices(context, add_bos, choices))
                except Exception as exc:  # the check fails with it, as in a local run
                    scores.append(exc)
            out.append(JobResult(job.index, generations.get(job.index), scores))
        return out

    def generate(
        self,
        text: str,
        add_bos: bool,
        sampling: Sampling,
        grammar: str | None,
        logprobs: int | None,
    ) -> Generation:
        return self._model().generate(text, add_bos, sampling, grammar=grammar, logprobs=logprobs)

    def score_choices(self, context: str, add_bos: bool, choices: tuple[str, ...]) -> Any:
        return self._model().score_choices(context, add_bos, choices)

    def check_grammar(self, gbnf: str) -> str | None:
        return self._model().check_grammar(gbnf)

    def count_tokens(self, text: str, add_bos: bool) -> int:
        return self._model().count_tokens(text, add_bos)


# --- the driver -----------------------------------------------------------------------------


def shard(texts: Sequence[str], n: int) -> list[range]:
    """`n` contiguous, non-empty slices of run order (n <= len(texts)), near-equal in length;
    each cut goes, within a quarter slice of the even cut, where neighbours share the least
    leading text, so prefix groups stay on one actor."""
    total = len(texts)
    if n <= 1 or total <= 1:
        return [range(total)]
    target = total / n
    window = max(0, int(target / 4))
    cuts = [0]
    for k in range(1, n):
        ideal = round(k * target)
        lo = max(cuts[-1] + 1, ideal - window)
        hi = min(total - (n - k), ideal + window)
        candidates = range(lo, max(lo, hi) + 1)
        cuts.append(
            min(
                candidates,
                key=lambda i: (_shared(texts[i - 1], texts[i]), abs(i - ideal)),
            )
        )
    cuts.append(total)
    return [range(a, b) for a, b in itertools.pairwise(cuts)]


def _shared(a: str, b: str) -> int:
    """Length of the leading text `a` and `b` share (characters: a stand-in for tokens)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _chunks(indices: range) -> deque[list[int]]:
    size = max(1, min(CHUNK_MAX, math.ceil(len(indices) / 4)))
    items = list(indices)
    return deque(items[i : i + size] for i in range(0, len(items), size))


@dataclass
class _Slot:
    queue: deque[list[int]]
    actor: Any = None
    ready: Any = None  # the facts() ref while the actor loads; None once it answered
    facts: dict[str, Any] | None = None
    respawns: int = 0
    cells: int = 0  # rows this slot's actors computed
    in_flight: dict[Any, list[int]] = field(default_factory=dict)


class _Pool:
    """The actors of one model: spawning, respawning and synchronous calls."""

    def __init__(self, cluster: Cluster, model: PlannedModel, tag: str) -> None:
        self.ray = cluster.ray
        self.model = model
        self.tag = tag
        self.slots: list[_Slot] = []
        self.respawned = 0
        self.retried_cells = 0
        self._cls: Any = None

    def options(self) -> dict[str, Any]:
        """Ray resources per actor: its threads' CPUs, and a GPU where layers are offloaded."""
        settings = self.model.settings
        opts: dict[str, Any] = {"num_cpus": settings.n_threads, "max_restarts": 0}
        if _uses_gpu(self.ray, self.model):
            opts["num_gpus"] = 1
        return opts

    def add(self, queue: deque[list[int]]) -> _Slot:
        slot = _Slot(queue)
        self.slots.append(slot)
        self.spawn(slot)
        return slot

    def spawn(self, slot: _Slot) -> None:
        if self._cls is None:
            self._cls = self.ray.remote(ModelWorker)
        # Named, so a person (or a test) can find and stop one: ray.get_actor(name).
        name = f"{self.tag}-{self.slots.index(slot)}-{slot.respawns}"
        slot.actor = self._cls.options(name=name, **self.options()).remote(
            self.model.path, self.model.settings
        )
        slot.ready = slot.actor.facts.remote()
        slot.facts = None

    def died(self, slot: _Slot, why: BaseException) -> None:
        """Put the slot's unfinished chunks back first in its queue and start a new actor."""
        for chunk in reversed(list(slot.in_flight.values())):
            slot.queue.appendleft(chunk)
            self.retried_cells += len(chunk)
        slot.in_flight.clear()
        self.ray.kill(slot.actor)
        if slot.respawns >= MAX_RESPAWNS:
            raise BackendError(
                f"model '{self.model.label}': its Ray actors died {slot.respawns + 1} times "
                f"(last: {_one_line(why)})",
                hint="check the workers' memory and logs (`ray logs`); "
                "`promptlab run --resume` finishes the run",
            )
        slot.respawns += 1
        self.respawned += 1
        self.spawn(slot)

    def loaded(self, slot: _Slot) -> None:
        """Wait for the slot's actor to load its model (facts, or its load error)."""
        if slot.ready is not None:
            slot.facts = _get(self.ray, slot.ready, START_TIMEOUT_S)
            slot.ready = None

    def call(self, method: str, *args: Any) -> Any:
        """One synchronous call on a live actor (judges, grammar checks), on a new actor if
        that one dies. It queues behind the chunks that actor already holds."""
        if not self.slots:
            self.add(deque())
        for _ in range(MAX_RESPAWNS + 1):
            slot = next((s for s in self.slots if s.facts is not None), self.slots[0])
            try:
                self.loaded(slot)
                return _get(self.ray, getattr(slot.actor, method).remote(*args), None)
            except self.ray.exceptions.RayActorError as exc:
                self.died(slot, exc)
        raise BackendError(f"model '{self.model.label}': no Ray actor stayed alive")

    def close(self) -> None:
        for slot in self.slots:
            if slot.actor is not None:
                self.ray.kill(slot.actor)
                slot.actor = None


def _uses_gpu(ray: Any, model: PlannedModel) -> bool:
    if isinstance(model.path, str) or model.settings.n_gpu_layers == 0:
        return False  # fake models, and models kept on the CPU by n_gpu_layers: 0
    return any(n["GPU"] for n in _nodes(ray))


def _nodes(ray: Any) -> list[dict[str, float]]:
    return [
        {"CPU": float(n["Resources"].get("CPU", 0)), "GPU": float(n["Resources"].get("GPU", 0))}
        for n in ray.nodes()
        if n.get("Alive")
    ]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _get(ray: Any, ref: Any, timeout: float | None) -> Any:
    """ray.get in short slices (so Ctrl-C is seen), raising a task's own PromptlabError."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        ready, _ = ray.wait([ref], timeout=WAIT_S)
        if ready:
            try:
                return ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, PromptlabError):
                    raise cause from None
                raise
        if deadline is not None and time.monotonic() > deadline:
            raise BackendError(
                f"no Ray actor started within {timeout:.0f} s",
                hint="check that the cluster has the CPUs (and GPUs) one actor needs",
            )


class _Router:
    """The driver's stand-in for the model under test (a Backend for ModelHandle): choice
    scores the actors already computed, else a call to a live actor."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.info = RuntimeInfo("ray", {})
        self.scores: dict[tuple[str, bool, tuple[str, ...]], list[ChoiceScore] | Exception] = {}

    def count_tokens(self, text: str, add_bos: bool) -> int:
        return int(self.pool.call("count_tokens", text, add_bos))

    def generate(
        self,
        text: str,
        add_bos: bool,
        sampling: Sampling,
        *,
        grammar: str | None = None,
        logprobs: int | None = None,
    ) -> Generation:
        gen: Generation = self.pool.call("generate", text, add_bos, sampling, grammar, logprobs)
        return gen

    def generate_batch(
        self, requests: Sequence[GenRequest]
    ) -> Iterator[tuple[GenRequest, Generation | CellError]]:
        for r in requests:
            try:
                yield r, self.generate(r.text, r.add_bos, r.sampling, grammar=r.grammar)
            except CellError as exc:
                yield r, exc

    def score_choices(
        self, context: str, add_bos: bool, choices: Sequence[str], *, reuse_prefix: bool = True
    ) -> list[ChoiceScore]:
        hit = self.scores.get((context, add_bos, tuple(choices)))
        if hit is None:
            scores: list[ChoiceScore] = self.pool.call(
                "score_choices", context, add_bos, tuple(choices)
            )
            return scores
        if isinstance(hit, Exception):
            raise hit
        return hit

    def check_grammar(self, gbnf: str) -> str | None:
        problem: str | None = self.pool.call("check_grammar", gbnf)
        return problem

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        raise BackendError("embeddings are computed on the driver, not through the Ray actors")

    def measure(
        self, prompt_tokens: int, gen_tokens: int, *, n_threads: int, n_batch: int
    ) -> dict[str, float]:
        raise BackendError("promptlab tune measures one machine; run it there, without --ray")

    def close(self) -> None:
        pass


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


def actors_for(cluster: Cluster, model: PlannedModel, work: int) -> int:
    """How many actors a model gets: as many as the nodes' CPUs (GPUs) hold at n_threads each,
    at most one per cell of work and at most --ray-actors."""
    nodes = _nodes(cluster.ray)
    need = model.settings.n_threads
    if not any(n["CPU"] >= need for n in nodes):
        biggest = max((int(n["CPU"]) for n in nodes), default=0)
        raise InputError(
            f"{model.where}: model '{model.label}' runs with n_threads {need}, but no Ray node "
            f"has that many CPUs (the largest has {biggest})",
            hint=f"set n_threads: {max(1, biggest)} on the model, or add a bigger node",
        )
    fits = sum(int(n["CPU"] // need) for n in nodes)
    if _uses_gpu(cluster.ray, model):
        fits = min(fits, sum(int(n["GPU"]) for n in nodes))
    limit = cluster.max_actors or fits
    return max(1, min(fits, limit, work))


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
        pool = _Pool(self.cluster, self.model, tag)
        self.pool = pool
        self.router = _Router(pool)
        self.handle = ModelHandle(self.model, lambda path, settings, embedding: self.router)
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
            request = _request(cell, self.plan) if cell.generate else None
            hit = cached_generation(self.cache, self.handle, request) if request else None
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
                pool.slots[i].queue.extend(_chunks(indices))
            else:
                pool.add(_chunks(indices))
        first = self._first_loaded()
        self._loaded(record, first)
        remember(record)
        self.progress.model_loaded(record["label"], record)
        _check_grammars(self.router, cells)
        if not first["runtime"].get("batch_exact", True):
            self.store = None  # results may depend on which cells shared a step: never cached
        started = time.perf_counter()
        self._drain(jobs, pending)
        wall_ms = (time.perf_counter() - started) * 1000
        record["ray"] = {
            "actors": len(pool.slots),
            "actors_replaced": pool.respawned,
            "cells_retried": pool.retried_cells,
            "cells_per_actor": [s.cells for s in pool.slots],
            "hosts": sorted({s.facts["host"] for s in pool.slots if s.facts is not None}),
        }
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

    def _settle_ready(self, slot: _Slot, ref: Any) -> None:
        try:
            slot.facts = _get(self.ray, ref, 0)
            slot.ready = None
        except self.ray.exceptions.RayActorError as exc:
            self.pool.died(slot, exc)

    def _feed(self, slot: _Slot) -> None:
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
            owners: dict[Any, _Slot] = {}
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
                    results: list[JobResult] = _get(self.ray, ref, 0)
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
