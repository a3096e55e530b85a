"""The seeded, stratified split of a suite's tests into train, validation and held-out.

Stratified by expected answer (the value of a test's first equals/choice/contains check), so
each split sees the labels in about the suite's proportions: a random split of 40 tests can
otherwise put every "negative" in train and leave validation unable to tell a prompt that
always answers "positive" from a good one. Tests with identical vars are dealt as one unit, so
a duplicated test can never sit in train (a demo) and in held-out (the verdict) at once.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from promptlab.errors import InputError
from promptlab.suite import CheckDef, TestDef
from promptlab.templates import TemplateEnv

# Check types whose value is the answer a test expects, in the order they are looked for.
ANSWER_TYPES = ("equals", "choice", "icontains", "contains", "starts-with")
SPLITS = ("train", "validation", "held_out")


def expected_answer(test: TestDef, env: TemplateEnv) -> str | None:
    """The answer a test expects, rendered with its vars (None when no check names one)."""
    return _answer(test.checks, test, env)


def _answer(checks: Sequence[CheckDef], test: TestDef, env: TemplateEnv) -> str | None:
    for check in checks:
        if check.type not in ANSWER_TYPES or check.value is None:
            continue
        value: Any = check.value
        if isinstance(value, str) and ("{{" in value or "{%" in value):
            try:
                value = env.render(env.from_string(value, check.where), test.vars, check.where)
            except InputError:
                return None  # the plan reports it; the split just does without
        if check.type == "choice" and isinstance(value, int) and not isinstance(value, bool):
            options = check.extra.get("choices")
            if isinstance(options, str):
                options = test.vars.get(options.strip("{} "))
            if isinstance(options, list) and 0 <= value < len(options):
                value = options[value]
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return None


def content_key(variables: dict[str, Any], ignore: Sequence[str] = ()) -> str:
    """What makes two tests the same test: their vars (less the ones the search sets)."""
    kept = {k: v for k, v in variables.items() if k not in ignore}
    return json.dumps(kept, sort_keys=True, ensure_ascii=False, default=str)


@dataclass(frozen=True)
class Split:
    """Test indices (into the suite's tests) of each part; validation in racing order."""

    train: tuple[int, ...]
    validation: tuple[int, ...]
    held_out: tuple[int, ...]
    strata: dict[int, str | None]  # test index -> expected answer

    def record(self, tests: Sequence[TestDef]) -> dict[str, Any]:
        """The split as the manifest and split.json record it."""
        by_index = {t.index: t for t in tests}

        def rows(indices: Sequence[int]) -> list[dict[str, Any]]:
            return [
                {"test_index": i, "test": by_index[i].name, "expected": self.strata.get(i)}
                for i in indices
            ]

        return {
            "train": rows(self.train),
            "validation": rows(self.validation),
            "held_out": rows(self.held_out),
        }


def make_split(
    tests: Sequence[TestDef],
    strata: dict[int, str | None],
    shares: tuple[float, float, float],
    seed: int,
    ignore_vars: Sequence[str] = (),
) -> Split:
    """Deal `tests` into train / validation / held-out by `shares`, stratified by `strata`.

    Each stratum is shuffled with the seed and the strata are dealt one after another by
    largest deficit (each next unit goes to the split furthest below its share), so every split
    gets its share of every stratum to within one test. Validation comes back interleaved
    across strata, so each racing minibatch (a prefix of it) holds every label."""
    rng = random.Random(f"promptlab-optimize-split:{seed}")
    units: dict[str, list[int]] = {}
    for t in tests:
        units.setdefault(content_key(t.vars, ignore_vars), []).append(t.index)
    groups: dict[str, list[list[int]]] = {}
    for members in units.values():
        key = strata.get(members[0])
        groups.setdefault("" if key is None else f"={key}", []).append(members)
    order: list[list[int]] = []
    for key in sorted(groups):
        group = groups[key]
        rng.shuffle(group)
        order += group
    total = sum(len(u) for u in order)
    counts = [0, 0, 0]
    parts: list[list[int]] = [[], [], []]
    dealt = 0
    for unit in order:
        dealt += len(unit)
        deficit = [
            shares[s] * dealt - counts[s] if shares[s] > 0 else float("-inf") for s in range(3)
        ]
        pick = max(range(3), key=lambda s: (deficit[s], shares[s], -s))
        parts[pick] += unit
        counts[pick] += len(unit)
    assert sum(counts) == total
    validation = _interleave(parts[1], strata, rng)
    return Split(tuple(sorted(parts[0])), tuple(validation), tuple(sorted(parts[2])), strata)


def _interleave(indices: list[int], strata: dict[int, str | None], rng: random.Random) -> list[int]:
    """A seeded order that takes one test of each stratum in turn."""
    groups: dict[str, list[int]] = {}
    for i in sorted(indices):
        key = strata.get(i)
        groups.setdefault("" if key is None else f"={key}", []).append(i)
    queues = []
    for key in sorted(groups):
        group = groups[key]
        rng.shuffle(group)
        queues.append(group)
    rng.shuffle(queues)
    out: list[int] = []
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out
