"""A model's actors (spawn, respawn, calls), how cells are cut into their shards, and the
driver-side stand-in for the model under test."""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from promptlab.backends import (
    CellError,
    ChoiceScore,
    Generation,
    GenRequest,
    RuntimeInfo,
    Sampling,
)
from promptlab.engine.distributed.cluster import Cluster, uses_gpu
from promptlab.engine.distributed.worker import ModelWorker
from promptlab.errors import BackendError, PromptlabError
from promptlab.plan import PlannedModel

MAX_RESPAWNS = 3  # per actor slot; a model that keeps killing its actors fails the run
IN_FLIGHT = 2  # chunks queued per actor, so it never waits while the driver scores
CHUNK_MAX = 16  # cells per chunk: rows stream back at least this often
START_TIMEOUT_S = 900.0  # for the first actor of a model to load it (remote disks can be slow)
WAIT_S = 1.0  # ray.wait slices: Ctrl-C is seen within a second


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


def chunks(indices: range) -> deque[list[int]]:
    size = max(1, min(CHUNK_MAX, math.ceil(len(indices) / 4)))
    items = list(indices)
    return deque(items[i : i + size] for i in range(0, len(items), size))


@dataclass
class Slot:
    queue: deque[list[int]]
    actor: Any = None
    ready: Any = None  # the facts() ref while the actor loads; None once it answered
    facts: dict[str, Any] | None = None
    respawns: int = 0
    cells: int = 0  # rows this slot's actors computed
    in_flight: dict[Any, list[int]] = field(default_factory=dict)


class Pool:
    """The actors of one model: spawning, respawning and synchronous calls."""

    def __init__(self, cluster: Cluster, model: PlannedModel, tag: str, identity: str) -> None:
        self.ray = cluster.ray
        self.model = model
        self.identity = identity  # what every actor must load (ModelHandle.identity's model)
        self.tag = tag
        self.slots: list[Slot] = []
        self.respawned = 0
        self.retried_cells = 0
        self._cls: Any = None

    def options(self) -> dict[str, Any]:
        """Ray resources per actor: its threads' CPUs, and a GPU where layers are offloaded."""
        settings = self.model.settings
        opts: dict[str, Any] = {"num_cpus": settings.n_threads, "max_restarts": 0}
        if uses_gpu(self.ray, self.model):
            opts["num_gpus"] = 1
        return opts

    def add(self, queue: deque[list[int]]) -> Slot:
        slot = Slot(queue)
        self.slots.append(slot)
        self.spawn(slot)
        return slot

    def spawn(self, slot: Slot) -> None:
        if self._cls is None:
            self._cls = self.ray.remote(ModelWorker)
        # Named, so a person (or a test) can find and stop one: ray.get_actor(name).
        name = f"{self.tag}-{self.slots.index(slot)}-{slot.respawns}"
        slot.actor = self._cls.options(name=name, **self.options()).remote(
            self.model.path, self.model.settings
        )
        slot.ready = slot.actor.facts.remote()
        slot.facts = None

    def died(self, slot: Slot, why: BaseException) -> None:
        """Put the slot's unfinished chunks back first in its queue and start a new actor."""
        for chunk in reversed(list(slot.in_flight.values())):
            slot.queue.appendleft(chunk)
            self.retried_cells += len(chunk)
        slot.in_flight.clear()
        self.ray.kill(slot.actor)
        if slot.respawns >= MAX_RESPAWNS:
            raise BackendError(
                f"model '{self.model.label}': its Ray actors died {slot.respawns + 1} times "
                f"(last: {one_line(why)})",
                hint="check the workers' memory and logs (`ray logs`); "
                "`promptlab run --resume` finishes the run",
            )
        slot.respawns += 1
        self.respawned += 1
        self.spawn(slot)

    def loaded(self, slot: Slot) -> None:
        """Wait for the slot's actor to load its model (facts, or its load error)."""
        if slot.ready is not None:
            self.settle(slot, get_result(self.ray, slot.ready, START_TIMEOUT_S))

    def settle(self, slot: Slot, facts: dict[str, Any]) -> None:
        """Take a loaded actor into service once it runs what the cache keys say it runs."""
        if facts["identity"] != self.identity:
            raise BackendError(
                f"model '{self.model.label}': the Ray actor on {facts['host']} loaded "
                f"{facts['identity']!r}, but this machine has {self.identity!r} (model file "
                "sha256 | llama.cpp build), so its results would be cached under the wrong key",
                hint="put the same model file at the same path and the same promptlab and "
                "llama-cpp-python install on every node",
            )
        slot.facts = facts
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
                return get_result(self.ray, getattr(slot.actor, method).remote(*args), None)
            except self.ray.exceptions.RayActorError as exc:
                self.died(slot, exc)
        raise BackendError(f"model '{self.model.label}': no Ray actor stayed alive")

    def close(self) -> None:
        for slot in self.slots:
            if slot.actor is not None:
                self.ray.kill(slot.actor)
                slot.actor = None


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def get_result(ray: Any, ref: Any, timeout: float | None) -> Any:
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


class Router:
    """The driver's stand-in for the model under test (a Backend for ModelHandle): choice
    scores the actors already computed, else a call to a live actor."""

    def __init__(self, pool: Pool) -> None:
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
                gen = self.generate(
                    r.text, r.add_bos, r.sampling, grammar=r.grammar, logprobs=r.logprobs
                )
                yield r, gen
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
