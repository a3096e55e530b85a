"""Racing candidates on validation (optuna: TPE proposes, successive halving prunes), then the
one verdict that counts: the best candidate against the original on the held-out tests.

Racing: every candidate runs on the same validation tests in the same order, in rungs of
minibatch × eta^r tests; at each rung optuna's SuccessiveHalvingPruner (asynchronous successive
halving) keeps a candidate only if its pass rate so far is in the top 1/eta of what the
candidates before it scored at that rung. Candidates are paired on the same tests at every
rung, so the comparison is as fair as the minibatch allows.

Honesty: selection happens on validation only. The held-out tests are touched twice at the
end (original and best) and the paired test (stats.paired: exact McNemar, or a permutation
test with repeats) is corrected for every candidate tried (Bonferroni, which is Holm's step for
the smallest p-value): picking the best of m candidates is m chances to be lucky, and a winner
is declared only when the corrected p-value is below 0.05 and the difference favours it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from promptlab.optimize.evaluate import BudgetExceeded, Evaluator
from promptlab.optimize.space import Candidate, Space
from promptlab.reports import stats

MAX_FREE_TRIALS = 20  # proposals in a row that were all already tried: the space is spent


class Trace:
    """The search trace, one JSON object per line, flushed as each event happens."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f = path.open("w", encoding="utf-8")  # a resume replays the search from the top

    def write(self, event: str, **data: Any) -> None:
        self._f.write(json.dumps({"event": event, **data}, ensure_ascii=False, default=str) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


@dataclass
class CandidateRecord:
    """One candidate's standing, for the leaderboard and candidates.csv."""

    label: str
    text: str
    choice: dict[str, int]
    vars: dict[str, Any]
    params: dict[str, Any]
    demos: list[str]
    first_trial: int  # -1 for the baseline
    trials: int = 0  # how often the sampler proposed it
    tests: int = 0  # validation tests it ran on
    passed: float = 0.0  # validation tests passed (fractional with repeats)
    pass_rate: float = 0.0
    mean_score: float = 0.0
    pass_rate_lo: float | None = None
    pass_rate_hi: float | None = None
    status: str = "running"  # complete | pruned | budget
    calls_at_end: int = 0  # the budget used when it stopped

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchResult:
    records: dict[str, CandidateRecord]
    baseline: CandidateRecord
    best: Candidate
    candidates: dict[str, Candidate]
    trials: int
    stop: str
    rungs: list[int]

    @property
    def tried(self) -> int:
        """Distinct candidates tried besides the original: the multiplicity to correct for."""
        return sum(1 for r in self.records.values() if r.first_trial >= 0 and r.tests > 0)


class SearchEvents:
    """Hooks for live progress."""

    def __init__(
        self,
        phase: Callable[[str], None] = lambda text: None,
        candidate: Callable[[CandidateRecord], None] = lambda record: None,
    ) -> None:
        self.phase = phase
        self.candidate = candidate


def rung_ends(n: int, minibatch: int, eta: int) -> list[int]:
    """Validation prefixes at which racing decides: minibatch × eta^r, then all n."""
    ends: list[int] = []
    step = min(minibatch, n)
    while step < n:
        ends.append(step)
        step *= eta
    return [*ends, n]


def _standing(rec: CandidateRecord, ev: Evaluator, cand: Candidate, tests: list[int]) -> None:
    rec.tests = len(tests)
    rec.pass_rate, rec.mean_score = ev.pass_rate(cand, tests)
    rec.passed = round(rec.pass_rate * len(tests), 6)
    interval = stats.wilson(round(rec.passed), len(tests)) if tests else None
    if interval is not None:
        rec.pass_rate_lo, rec.pass_rate_hi = round(interval[0], 4), round(interval[1], 4)
    rec.calls_at_end = ev.used


def race(
    space: Space,
    ev: Evaluator,
    trace: Trace,
    *,
    seed: int,
    events: SearchEvents | None = None,
) -> SearchResult:
    import optuna  # noqa: PLC0415 - only optimize needs it, and it takes ~0.5 s to import

    events = events or SearchEvents()
    spec = space.spec
    val = list(space.split.validation)
    ends = rung_ends(len(val), spec.minibatch, spec.eta)
    base = space.baseline()
    events.phase("the original prompt on validation")
    ev.evaluate(base, val)  # reserved in the budget: it always fits
    baseline = CandidateRecord(base.label, base.text, {}, {}, {}, [], -1, status="complete")
    _standing(baseline, ev, base, val)
    trace.write(
        "baseline",
        label=base.label,
        tests=len(val),
        pass_rate=baseline.pass_rate,
        mean_score=baseline.mean_score,
        calls_used=ev.used,
    )
    records: dict[str, CandidateRecord] = {base.label: baseline}
    candidates: dict[str, Candidate] = {base.label: base}

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.SuccessiveHalvingPruner(
            min_resource=ends[0], reduction_factor=spec.eta, min_early_stopping_rate=0
        ),
    )
    dims = space.dimensions()
    distributions: dict[str, optuna.distributions.BaseDistribution] = {
        name: optuna.distributions.CategoricalDistribution(list(range(n)))
        for name, n in dims.items()
    }
    size = space.size()
    trials = free = 0
    stop = "candidates"
    while sum(1 for r in records.values() if r.first_trial >= 0) < spec.candidates:
        if len(records) >= size + (0 if _baseline_in_space(space) else 1):
            stop = "exhausted"
            break
        if free >= MAX_FREE_TRIALS:
            stop = "repeats"
            break
        trial = study.ask(distributions)
        cand = space.candidate({k: int(v) for k, v in trial.params.items()})
        trials += 1
        before = ev.used
        rec = records.get(cand.label)
        if rec is None:
            rec = CandidateRecord(
                cand.label,
                cand.text,
                cand.choice,
                cand.vars,
                cand.params,
                [d.ref for d in cand.demos],
                trials - 1,
            )
            records[cand.label] = rec
            candidates[cand.label] = cand
            events.phase(f"candidate {len(records) - 1}: {cand.text}")
        rec.trials += 1
        trace.write(
            "candidate",
            trial=trial.number,
            label=cand.label,
            choice=cand.choice,
            text=cand.text,
            repeat=rec.trials > 1,
        )
        state = "complete"
        done = 0
        try:
            for end in ends:
                ev.evaluate(cand, val[done:end])
                done = end
                rate, score = ev.pass_rate(cand, val[:done])
                trial.report(rate, step=done)
                pruned = done < len(val) and trial.should_prune()
                trace.write(
                    "rung",
                    trial=trial.number,
                    label=cand.label,
                    step=done,
                    pass_rate=rate,
                    mean_score=score,
                    calls_used=ev.used,
                    pruned=pruned,
                )
                if pruned:
                    state = "pruned"
                    break
        except BudgetExceeded:
            state = "budget"
        if done > rec.tests:
            _standing(rec, ev, cand, val[:done])
        if rec.status != "complete":
            rec.status = state
        if state == "complete":
            study.tell(trial, ev.pass_rate(cand, val)[0])
        elif state == "pruned":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        if rec.trials == 1 and not cand.is_baseline and rec.tests:
            events.candidate(rec)
        free = free + 1 if ev.used == before else 0
        if state == "budget":
            stop = "budget"
            break
    trace.write("stop", reason=stop, trials=trials, calls_used=ev.used)
    best = _best(records, candidates, len(val))
    return SearchResult(records, baseline, best, candidates, trials, stop, ends)


def _baseline_in_space(space: Space) -> bool:
    """Whether some choice of the space renders as the original (then it counts in size)."""
    return space.candidate({}).is_baseline


def _best(
    records: dict[str, CandidateRecord], candidates: dict[str, Candidate], n_val: int
) -> Candidate:
    """The candidate with the highest validation pass rate over every validation test (then
    mean score; ties go to the earlier, the original first)."""
    full = [r for r in records.values() if r.tests == n_val]
    top = max(full, key=lambda r: (r.pass_rate, r.mean_score, -r.first_trial))
    return candidates[top.label]


@dataclass
class Verdict:
    """The held-out comparison of the best candidate with the original."""

    better: bool
    text: str
    baseline: str
    best: str
    n_tests: int
    candidates_tried: int
    comparison: dict[str, Any] | None = None
    baseline_rate: float | None = None
    best_rate: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    interval_95: tuple[float, float] | None = None
    interval_adjusted: tuple[float, float] | None = None
    adjusted_confidence: float | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def held_out_verdict(
    space: Space, ev: Evaluator, result: SearchResult, events: SearchEvents | None = None
) -> Verdict:
    events = events or SearchEvents()
    held = list(space.split.held_out)
    base = space.baseline()
    events.phase("the original prompt on the held-out tests")
    ev.evaluate(base, held)  # reserved in the budget
    base_rate = ev.pass_rate(base, held)[0]
    m = max(1, result.tried)
    best = result.best
    if best.is_baseline:
        text = (
            "nothing beat the baseline: no candidate passed more validation tests than the "
            f"original prompt '{base.label}' ({result.tried} tried)"
        )
        return Verdict(
            False, text, base.label, base.label, len(held), result.tried, baseline_rate=base_rate
        )
    events.phase(f"the best candidate on the held-out tests: {best.text}")
    ev.evaluate(best, held)  # reserved in the budget
    a, b = ev.outcomes(base, held), ev.outcomes(best, held)
    c = stats.paired(
        [[p for p, _ in o] for o in a],
        [[p for p, _ in o] for o in b],
        [[s for _, s in o] for o in a],
        [[s for _, s in o] for o in b],
        (base.label, best.label),
    )
    assert c.p_value is not None and c.diff is not None
    # Bonferroni over the m candidates tried (Holm's step-down gives the same for the one
    # comparison that is made: the others count with p = 1).
    p_adj = stats.holm_adjust([c.p_value] + [1.0] * (m - 1))[0]
    c.p_holm, c.family = p_adj, m
    c.significant = p_adj < stats.ALPHA
    c.tests_needed = None if c.significant else c.power_tests
    c.verdict = stats.verdict(c)
    level = 1 - stats.ALPHA / m
    adjusted = _interval(a, b, level)
    better = c.significant and c.diff > 0
    diff = f"{c.diff:+.0f} points"
    i95 = (c.diff_lo, c.diff_hi) if c.diff_lo is not None and c.diff_hi is not None else None
    shown = f" [{i95[0]:.0f}, {i95[1]:.0f}] (95%)" if i95 else ""
    if adjusted is not None and m > 1:
        shown += (
            f", [{adjusted[0]:.0f}, {adjusted[1]:.0f}] ({100 * level:.1f}%, for {m} candidates)"
        )
    numbers = (
        f"{100 * (c.b_pass_rate or 0):.0f}% vs {100 * (c.a_pass_rate or 0):.0f}% on "
        f"{len(held)} held-out tests, {diff}{shown}, p={c.p_value:.2g}, "
        f"corrected for {m} candidate{'s' if m != 1 else ''}: p={p_adj:.2g}"
    )
    if better:
        text = f"{best.label} beats the original '{base.label}': {numbers}"
    elif c.significant:
        text = (
            f"nothing beat the baseline: the best validation candidate {best.label} is worse "
            f"on the held-out tests: {numbers}"
        )
    else:
        text = (
            f"nothing beat the baseline: the best validation candidate {best.label} is not "
            f"significantly better on the held-out tests: {numbers}"
        )
    return Verdict(
        better,
        text,
        base.label,
        best.label,
        len(held),
        result.tried,
        c.as_dict(),
        c.a_pass_rate,
        c.b_pass_rate,
        c.p_value,
        p_adj,
        i95,
        adjusted,
        level,
    )


def _interval(
    a: list[list[tuple[bool, float]]], b: list[list[tuple[bool, float]]], confidence: float
) -> tuple[float, float] | None:
    """The paired difference's interval (points) at `confidence`, by the method stats.paired
    uses: Newcombe's for one outcome per test, a bootstrap with repeats."""
    if all(len(o) == 1 for o in a + b):
        pa = [o[0][0] for o in a]
        pb = [o[0][0] for o in b]
        both = sum(x and y for x, y in zip(pa, pb, strict=True))
        a_only = sum(x and not y for x, y in zip(pa, pb, strict=True))
        b_only = sum(y and not x for x, y in zip(pa, pb, strict=True))
        neither = len(pa) - both - a_only - b_only
        ci = stats.newcombe_paired(both, a_only, b_only, neither, confidence)
    else:
        d = [
            sum(p for p, _ in y) / len(y) - sum(p for p, _ in x) / len(x)
            for x, y in zip(a, b, strict=True)
        ]
        ci = stats.bootstrap_mean(d, confidence)
    return None if ci is None else (round(100 * ci[0], 2), round(100 * ci[1], 2))
