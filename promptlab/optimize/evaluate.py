"""Evaluate candidates on tests through the same plan, runner and cache as `promptlab run`.

A candidate on some tests becomes a small suite (the prompt under the candidate's label, the
tests with the candidate's vars, its params) that `plan.build_plan` renders and
`runner.execute` runs, so cells are scheduled for prefix reuse and batched like any run, served
from the result cache when seen before, and stored as rows in the run folder's results.jsonl.

The budget counts calls the search asks for, one per cell, whether the model or the cache
answers them: that keeps a resumed search, whose earlier cells come back from results.jsonl,
spending exactly what the uninterrupted one would. How many cells the model actually ran is
reported beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
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
from promptlab.consent import CodeMode
from promptlab.engine.cache import Cache
from promptlab.engine.runner import NoProgress, Stats, execute
from promptlab.engine.store import RunWriter
from promptlab.optimize.space import Candidate
from promptlab.plan import Plan, build_plan
from promptlab.suite import LoadedSuite, Params, PromptDef, TestDef

# (passed, score) of each repeat of one test
Outcomes = list[tuple[bool, float]]


class BudgetExceeded(Exception):
    """Raised before any call that would take the search past its budget."""


class _Kept:
    """A loaded backend whose close() is deferred: each racing step runs `execute` again, and
    without this every step would load the model anew."""

    def __init__(self, backend: Backend) -> None:
        self._b = backend
        self.info = backend.info

    def count_tokens(self, text: str, add_bos: bool) -> int:
        return self._b.count_tokens(text, add_bos)

    def generate(
        self,
        text: str,
        add_bos: bool,
        sampling: Sampling,
        *,
        grammar: str | None = None,
        logprobs: int | None = None,
    ) -> Generation:
        return self._b.generate(text, add_bos, sampling, grammar=grammar, logprobs=logprobs)

    def generate_batch(
        self, requests: Sequence[GenRequest]
    ) -> Iterator[tuple[GenRequest, Generation | CellError]]:
        return self._b.generate_batch(requests)

    def score_choices(
        self, context: str, add_bos: bool, choices: Sequence[str], *, reuse_prefix: bool = True
    ) -> list[ChoiceScore]:
        return self._b.score_choices(context, add_bos, choices, reuse_prefix=reuse_prefix)

    def check_grammar(self, gbnf: str) -> str | None:
        return self._b.check_grammar(gbnf)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return self._b.embed(texts)

    def measure(
        self, prompt_tokens: int, gen_tokens: int, *, n_threads: int, n_batch: int
    ) -> dict[str, float]:
        return self._b.measure(prompt_tokens, gen_tokens, n_threads=n_threads, n_batch=n_batch)

    def close(self) -> None:
        pass  # SharedModels.close() does it, once the whole optimization is done


class SharedModels:
    """An opener for `runner.execute` that loads each model once for the whole optimization."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, LoadSettings, bool], Backend] = {}
        self.loads = 0

    def __call__(self, path: Any, settings: LoadSettings, embedding: bool) -> Backend:
        key = (str(path), settings, embedding)
        if key not in self._open:
            self._open[key] = open_backend(path, settings, embedding=embedding)
            self.loads += 1
        return _Kept(self._open[key])

    def close(self) -> None:
        for backend in self._open.values():
            backend.close()
        self._open.clear()


class _Recorder(RunWriter):
    """results.jsonl as usual, and each row handed to the evaluator as it is written."""

    def __init__(self, path: Path, sink: Callable[[dict[str, Any]], None]) -> None:
        super().__init__(path)
        self._sink = sink

    def append(self, row: dict[str, Any]) -> None:
        super().append(row)
        self._sink(row)


def outcome(row: dict[str, Any]) -> tuple[bool, float]:
    """A row as promptlab's stats count it: an error is a fail with score 0."""
    score = row.get("score")
    value = 0.0 if row.get("status") == "error" or score is None else float(score)
    return row.get("status") == "pass", value


@dataclass
class EvalEvents:
    """What the evaluator reports as it goes (the terminal's progress, the manifest)."""

    cell_done: Callable[[dict[str, Any]], None] = lambda row: None
    model_loaded: Callable[[dict[str, Any]], None] = lambda record: None
    calls: Callable[[int], None] = lambda used: None


class Evaluator:
    """Runs candidates on tests, remembers every outcome, and keeps the call count."""

    def __init__(
        self,
        suite: LoadedSuite,
        prompt: PromptDef,
        folder: Path,
        *,
        code: CodeMode,
        cache: Cache | None,
        budget: int,
        cells: dict[int, int],
        stored: dict[tuple[str, int], list[dict[str, Any]]] | None = None,
        events: EvalEvents | None = None,
    ) -> None:
        self.suite = suite
        self.prompt = prompt
        self.code = code
        self.cache = cache
        self.budget = budget
        self.used = 0  # calls counted against the budget
        self.stats = Stats()  # cells this session actually executed (the model or the cache)
        self.reused = 0  # cells answered from an earlier session's results.jsonl
        self.models = SharedModels()
        self.model_records: list[dict[str, Any]] = []
        self.events = events or EvalEvents()
        # Earlier sessions' rows (a resume), keyed by candidate label and test index.
        self._stored = stored or {}
        self._results: dict[tuple[str, int], Outcomes] = {}
        self._rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self.cells = cells
        self.writer = _Recorder(folder, self._take)

    def has(self, cand: Candidate, test: int) -> bool:
        return (cand.label, test) in self._results

    def cost(self, cand: Candidate, tests: Sequence[int]) -> int:
        """Calls that evaluating `cand` on `tests` adds (outcomes already known are free)."""
        return sum(self.cells[t] for t in dict.fromkeys(tests) if not self.has(cand, t))

    def evaluate(self, cand: Candidate, tests: Sequence[int]) -> None:
        """Evaluate `cand` on every test not yet done; BudgetExceeded (before any call) when
        that would take the count past the budget."""
        todo = [t for t in dict.fromkeys(tests) if not self.has(cand, t)]
        need = self.cost(cand, todo)
        if not todo:
            return
        if self.used + need > self.budget:
            raise BudgetExceeded(f"{need} more calls would exceed the budget of {self.budget}")
        fresh = []
        for t in todo:
            rows = self._stored.get((cand.label, t))
            if rows is not None and len(rows) >= self.cells[t]:
                rows = sorted(rows, key=lambda r: int(r.get("repeat") or 0))[: self.cells[t]]
                self._rows[(cand.label, t)] = rows
                self._results[(cand.label, t)] = [outcome(r) for r in rows]
                self.reused += len(rows)
            else:
                fresh.append(t)
        if fresh:
            for t in fresh:
                self._rows.pop((cand.label, t), None)
            plan = self.plan(cand, fresh)
            execute(
                plan,
                self.writer,
                _Progress(self.events.cell_done),
                self._model_loaded,
                opener=self.models,
                cache=self.cache,
                stats=self.stats,
            )
            for t in fresh:
                rows = sorted(
                    self._rows.get((cand.label, t), []), key=lambda r: int(r.get("repeat") or 0)
                )
                if len(rows) != self.cells[t]:
                    raise RuntimeError(f"{len(rows)} results for test {t} of {cand.label}")
                self._results[(cand.label, t)] = [outcome(r) for r in rows]
        self.used += need
        self.events.calls(self.used)

    def _take(self, row: dict[str, Any]) -> None:
        self._rows.setdefault((str(row["prompt"]), int(row["test_index"])), []).append(row)

    def _model_loaded(self, record: dict[str, Any]) -> None:
        if not any(r.get("label") == record.get("label") for r in self.model_records):
            self.model_records.append(record)
            self.events.model_loaded(record)

    def plan(self, cand: Candidate, tests: Sequence[int]) -> Plan:
        return build_plan(suite_for(self.suite, self.prompt, cand, tests), code=self.code)

    def outcomes(self, cand: Candidate, tests: Sequence[int]) -> list[Outcomes]:
        return [self._results[(cand.label, t)] for t in tests]

    def rows(self, cand: Candidate, test: int) -> list[dict[str, Any]]:
        return self._rows.get((cand.label, test), [])

    def pass_rate(self, cand: Candidate, tests: Sequence[int]) -> tuple[float, float]:
        """(mean pass rate, mean score) over `tests`, each test weighted once."""
        per = self.outcomes(cand, tests)
        if not per:
            return 0.0, 0.0
        rate = sum(sum(p for p, _ in o) / len(o) for o in per) / len(per)
        score = sum(sum(s for _, s in o) / len(o) for o in per) / len(per)
        return rate, score

    def close(self) -> None:
        self.writer.close()
        self.models.close()


def suite_for(
    suite: LoadedSuite, prompt: PromptDef, cand: Candidate, tests: Sequence[int]
) -> LoadedSuite:
    """The suite that renders `cand` on `tests`: the same prompt under the candidate's label,
    its vars over each test's, and its params over the suite's."""
    params = suite.params
    if cand.params:
        params = Params.model_validate({**params.model_dump(), **cand.params})
    by_index = {t.index: t for t in suite.tests}
    chosen: list[TestDef] = [
        replace(by_index[t], vars={**by_index[t].vars, **cand.vars}) for t in tests
    ]
    # A candidate's params win over a model's own (a promptfoo provider's config), as the
    # suite's params: do.
    models = [
        replace(m, params={k: v for k, v in m.params.items() if k not in cand.params})
        for m in suite.models
    ]
    return replace(
        suite,
        prompts=[replace(prompt, label=cand.label)],
        tests=chosen,
        models=models,
        params=params,
        settings=[params],
        varied=[],
        notes=[],  # planning may add notes; the real suite's list stays as it was
    )


def count_cells(suite: LoadedSuite, prompt: PromptDef, code: CodeMode) -> dict[int, int]:
    """Cells per test: `repeat` for generations, 1 for choice-only tests (which never sample).
    Planning the original prompt on every test also surfaces render errors before anything
    is written."""
    base = Candidate(prompt.label, {}, {}, {})
    cells: dict[int, int] = {}
    plan = build_plan(suite_for(suite, prompt, base, [t.index for t in suite.tests]), code=code)
    for cell in plan.cells:
        cells[cell.test.index] = cells.get(cell.test.index, 0) + 1
    return cells


class _Progress(NoProgress):
    """The runner's progress hooks, of which the search needs only the finished cells."""

    def __init__(self, cell_done: Callable[[dict[str, Any]], None]) -> None:
        self._cell_done = cell_done

    def cell_done(self, row: dict[str, Any]) -> None:
        self._cell_done(row)
