"""The Ray actor: one model, loaded once, and the jobs the driver sends it."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptlab.backends import (
    Backend,
    CellError,
    ChoiceScore,
    Generation,
    GenRequest,
    LoadSettings,
    Sampling,
    open_backend,
)
from promptlab.engine.handles import model_identity
from promptlab.errors import BackendError, PromptlabError


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
        self.path = path
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
            "identity": model_identity(self.path),
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
