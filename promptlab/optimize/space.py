"""The search space of `promptlab optimize`, checked against the suite before anything runs.

A candidate is the original prompt with some of its inputs replaced: the demos variable (k
examples from the pool, in an order), the instruction variable, other listed variables, and
generation params. The template itself never changes, so every candidate renders through the
same plan code as `promptlab run`, and the optimized template is the original with the winning
values set at its top.

Optuna sees only indices into these lists (its categorical distributions hold plain values),
and a candidate is named by a hash of what it changes, so the same choice made twice (TPE does
repeat itself on small spaces) is the same candidate, evaluated once.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from promptlab.errors import InputError, Problems, location
from promptlab.optimize.split import (
    Split,
    expected_answer,
    make_split,
)
from promptlab.reports.stats import MIN_TESTS
from promptlab.suite import (
    OPTIMIZE_PARAMS,
    LoadedOptimize,
    LoadedSuite,
    OptimizeSpec,
    Params,
    PromptDef,
    TestDef,
)
from promptlab.yamlio import dotted


@dataclass(frozen=True)
class Demo:
    """One few-shot example: the vars of a pool test plus its expected answer."""

    ref: str  # where it came from, for people: "test 12 (France)", "demos.csv row 3"
    vars: dict[str, Any]
    expected: str | None

    def value(self) -> dict[str, Any]:
        return {**self.vars, "expected": self.expected}


@dataclass(frozen=True)
class Candidate:
    label: str
    choice: dict[str, int]  # optuna's parameters (indices); {} for the baseline
    vars: dict[str, Any]  # replaces these vars in every test
    params: dict[str, Any]  # replaces these generation settings
    demos: tuple[Demo, ...] = ()
    text: str = ""  # what it changes, in a few words

    @property
    def is_baseline(self) -> bool:
        return not self.choice


@dataclass
class Space:
    suite: LoadedSuite
    prompt: PromptDef
    spec: OptimizeSpec
    tests: list[TestDef]  # eligible tests (those in the split)
    split: Split
    pool: list[Demo]
    pool_mode: str
    ks: list[int] = field(default_factory=list)
    demo_sets: list[tuple[Demo, ...]] = field(default_factory=list)
    instructions: list[str] = field(default_factory=list)  # [original, variants..., proposals...]
    proposed: int = 0  # how many of `instructions` a model proposed (at the end)
    grid_vars: dict[str, list[Any]] = field(default_factory=dict)
    grid_params: dict[str, list[Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def demo_var(self) -> str | None:
        return self.spec.demos.var if self.spec.demos is not None else None

    @property
    def instruction_var(self) -> str | None:
        return self.spec.instructions.var if self.spec.instructions is not None else None

    @property
    def controlled(self) -> list[str]:
        """The variables the search sets (left out of demos and of test identity)."""
        names = [self.demo_var, self.instruction_var, *self.grid_vars]
        return [n for n in names if n is not None]

    def dimensions(self) -> dict[str, int]:
        """Optuna parameter name -> number of choices (only dimensions with a choice to make)."""
        dims: dict[str, int] = {}
        if self.ks:
            dims["k"] = len(self.ks)
            if max(self.ks) > 0:
                dims["demo_set"] = len(self.demo_sets)
        if len(self.instructions) > 1:
            dims["instruction"] = len(self.instructions)
        for name, values in self.grid_vars.items():
            dims[f"var:{name}"] = len(values)
        for name, values in self.grid_params.items():
            dims[f"param:{name}"] = len(values)
        return {k: n for k, n in dims.items() if n > 1}

    def size(self) -> int:
        """How many distinct candidates the space holds (k=0 ignores the demo set)."""
        n = 1
        if self.ks:
            n = sum(1 if k == 0 else len(self.demo_sets) for k in self.ks)
        n *= max(1, len(self.instructions))
        for values in (*self.grid_vars.values(), *self.grid_params.values()):
            n *= len(values)
        return n

    def baseline(self) -> Candidate:
        return Candidate(self.prompt.label, {}, {}, {}, (), "the original prompt")

    def candidate(self, choice: dict[str, int]) -> Candidate:
        overrides: dict[str, Any] = {}
        params: dict[str, Any] = {}
        demos: tuple[Demo, ...] = ()
        words: list[str] = []
        if self.ks and self.demo_var is not None:
            k = self.ks[choice.get("k", 0)]
            if k > 0:
                chosen_set = choice.get("demo_set", 0)
                demos = self.demo_sets[chosen_set][:k]
                words.append(f"{k} demos (set {chosen_set + 1})")
            else:
                words.append("no demos")
            overrides[self.demo_var] = [d.value() for d in demos]
        if self.instructions and self.instruction_var is not None:
            i = choice.get("instruction", 0)
            overrides[self.instruction_var] = self.instructions[i]
            first_proposed = len(self.instructions) - self.proposed
            kind = "original" if i == 0 else "proposed" if i >= first_proposed else "variant"
            words.append(f"instruction {i} ({kind})")
        for name, values in self.grid_vars.items():
            overrides[name] = values[choice.get(f"var:{name}", 0)]
            words.append(f"{name}={_short(overrides[name])}")
        for name, values in self.grid_params.items():
            params[name] = values[choice.get(f"param:{name}", 0)]
            words.append(f"{name}={_short(params[name])}")
        content = json.dumps(
            {"vars": overrides, "params": params}, sort_keys=True, ensure_ascii=False, default=str
        )
        label = "c-" + hashlib.sha256(content.encode()).hexdigest()[:8]
        if self._same_as_baseline(overrides, params):
            return self.baseline()
        return Candidate(label, dict(choice), overrides, params, demos, ", ".join(words))

    def _same_as_baseline(self, overrides: dict[str, Any], params: dict[str, Any]) -> bool:
        """Whether a choice renders exactly as the original (then it is the baseline)."""
        base = self.suite.params
        if any(getattr(base, k) != v for k, v in params.items()):
            return False
        return all(t.vars.get(k) == v for t in self.tests for k, v in overrides.items())


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 24 else text[:23] + "…"


class _Checker:
    """Collects the problems with the optimize: section, each naming its field and line."""

    def __init__(self, suite: LoadedSuite, loaded: LoadedOptimize | None) -> None:
        self.suite = suite
        self.loaded = loaded
        self.problems: list[InputError] = []

    def where(self, *loc: int | str) -> str:
        full = ("optimize", *loc)
        line = self.loaded.doc.line_of(full) if self.loaded is not None else None
        return location(self.suite.path, line, dotted(full))

    def fail(self, message: str, hint: str | None = None) -> None:
        self.problems.append(InputError(message, hint=hint))

    def raise_any(self) -> None:
        if len(self.problems) == 1:
            raise self.problems[0]
        if self.problems:
            raise Problems(self.problems, self.suite.path.name)


def choose_prompt(suite: LoadedSuite, label: str | None, spec: OptimizeSpec) -> PromptDef:
    """The prompt to optimize: --prompt, else optimize.prompt, else the suite's only prompt."""
    wanted = label if label is not None else spec.prompt
    labels = [p.label for p in suite.prompts]
    if wanted is None:
        if len(suite.prompts) == 1:
            return suite.prompts[0]
        raise InputError(
            f"{suite.path}: the suite has {len(labels)} prompts ({', '.join(labels)})",
            hint="name the one to optimize: --prompt LABEL (or optimize.prompt:)",
        )
    for p in suite.prompts:
        if p.label == wanted:
            return p
    flag = "--prompt" if label is not None else "optimize.prompt"
    raise InputError(
        f"{flag} {wanted!r}: no prompt of {suite.path.name} has that label",
        hint=f"use one of: {', '.join(labels)}",
    )


def build_space(
    suite: LoadedSuite, prompt: PromptDef, seed: int, instructions_extra: Sequence[str] = ()
) -> Space:
    """Check the optimize: section against the suite and the prompt, split the tests and draw
    the demo sets. Raises InputError (or Problems) naming each bad field."""
    loaded = suite.optimize
    spec = loaded.spec if loaded is not None else OptimizeSpec()
    check = _Checker(suite, loaded)
    if prompt.kind != "text":
        raise InputError(
            f"{prompt.where}: optimize rewrites Jinja text templates, and prompt "
            f"'{prompt.label}' is a message list",
            hint="write it as a .j2 file with {% system %}/{% user %} blocks",
        )
    if suite.varied:
        raise InputError(
            f"{suite.path}: params: holds a grid ({', '.join(suite.varied)}); optimize tunes "
            "one setting",
            hint="list the values to try under optimize.params instead",
        )
    uses = prompt.variables
    demos = spec.demos
    pool_mode = demos.pool if demos is not None else "none"
    if demos is not None:
        if demos.var not in uses:
            check.fail(
                f"{check.where('demos', 'var')}: prompt '{prompt.label}' never reads "
                f"{{{{ {demos.var} }}}}",
                hint=f"loop over it in the template: {{% for d in {demos.var} %}}…{{% endfor %}}",
            )
        if not (demos.pool in ("train", "marked") or demos.pool.startswith("file://")):
            check.fail(
                f"{check.where('demos', 'pool')}: {demos.pool!r} is not a pool",
                hint="use train, marked (tests with metadata pool: true) or file://demos.csv",
            )
            pool_mode = "train"
        elif demos.pool.startswith("file://"):
            pool_mode = "file"
    ks = [] if demos is None else ([demos.k] if isinstance(demos.k, int) else list(demos.k))
    if demos is not None and (not ks or any(k < 0 for k in ks) or len(set(ks)) != len(ks)):
        check.fail(
            f"{check.where('demos', 'k')}: k must be distinct whole numbers >= 0, got {demos.k}",
            hint="for example k: [0, 2, 4]",
        )
        ks = [0]
    inst = spec.instructions
    instructions: list[str] = []
    if inst is not None:
        if inst.var not in uses:
            check.fail(
                f"{check.where('instructions', 'var')}: prompt '{prompt.label}' never reads "
                f"{{{{ {inst.var} }}}}",
                hint="put the instruction in a variable the template prints",
            )
        originals = {json.dumps(t.vars.get(inst.var), default=str) for t in suite.tests}
        first = suite.tests[0].vars.get(inst.var) if suite.tests else None
        if not isinstance(first, str) or len(originals) != 1:
            check.fail(
                f"{check.where('instructions', 'var')}: {inst.var} must be one text for every "
                "test (the original instruction)",
                hint=f"set vars: {{{inst.var}: '…'}} at the top of the suite",
            )
        else:
            instructions = list(dict.fromkeys([first, *inst.variants, *instructions_extra]))
        if not inst.variants and not inst.propose and not instructions_extra:
            check.fail(
                f"{check.where('instructions')}: nothing to try besides the original",
                hint="list variants:, or set propose: N for a model to write rewrites",
            )
    if demos is not None and inst is not None and demos.var == inst.var:
        check.fail(f"{check.where('instructions', 'var')}: the demos variable cannot also be it")
    grid_vars: dict[str, list[Any]] = {}
    for name, values in spec.vars.items():
        if name not in uses:
            check.fail(
                f"{check.where('vars', name)}: prompt '{prompt.label}' never reads {{{{ {name} }}}}",
                hint="list only variables the template uses",
            )
        elif name in (demos.var if demos else None, inst.var if inst else None):
            check.fail(
                f"{check.where('vars', name)}: {name} is already searched by "
                f"optimize.{'demos' if demos and name == demos.var else 'instructions'}"
            )
        elif not values:
            check.fail(f"{check.where('vars', name)}: list at least one value to try")
        else:
            grid_vars[name] = list(values)
    grid_params: dict[str, list[Any]] = {}
    base = suite.params.model_dump()
    for name, values in spec.params.items():
        if name not in OPTIMIZE_PARAMS:
            check.fail(
                f"{check.where('params', name)}: '{name}' is not a setting optimize can vary",
                hint="use " + ", ".join(OPTIMIZE_PARAMS),
            )
            continue
        if not values:
            check.fail(f"{check.where('params', name)}: list at least one value to try")
            continue
        good = []
        for i, value in enumerate(values):
            try:
                checked = Params.model_validate({**base, name: value})
            except ValidationError as exc:
                reason = exc.errors()[0]["msg"]
                check.fail(f"{check.where('params', name, i)}: {value!r}: {reason}")
                continue
            good.append(getattr(checked, name))
        grid_params[name] = good
    check.raise_any()

    controlled = [
        n for n in (demos.var if demos else None, inst.var if inst else None, *grid_vars) if n
    ]
    marked = [t for t in suite.tests if (t.metadata or {}).get("pool") is True]
    eligible = [t for t in suite.tests if t not in marked] if pool_mode == "marked" else suite.tests
    unchecked = [t for t in eligible if not t.checks]
    notes: list[str] = []
    if unchecked:
        notes.append(
            f"{len(unchecked)} test(s) without checks left out of the split (nothing to score): "
            f"{unchecked[0].where} first"
        )
        eligible = [t for t in eligible if t.checks]
    strata = {t.index: expected_answer(t, suite.env) for t in eligible}
    sp = spec.split
    split = make_split(eligible, strata, (sp.train, sp.validation, sp.held_out), seed, controlled)
    if len(split.held_out) < MIN_TESTS:
        check.fail(
            f"{check.where('split', 'held_out')}: {len(split.held_out)} held-out test(s) of "
            f"{len(eligible)}; no paired test can be significant with fewer than {MIN_TESTS}",
            hint="add tests or raise held_out",
        )
    if not split.validation:
        check.fail(f"{check.where('split', 'validation')}: no validation tests", hint="add tests")

    pool: list[Demo] = []
    if pool_mode == "train":
        pool = [_demo(t, suite, controlled) for t in suite.tests if t.index in set(split.train)]
    elif pool_mode == "marked":
        pool = [_demo(t, suite, controlled) for t in marked]
        if not marked:
            check.fail(
                f"{check.where('demos', 'pool')}: pool: marked, but no test has metadata pool: true",
                hint="mark the demo tests (metadata: {pool: true}, or a __metadata:pool column)",
            )
    elif pool_mode == "file" and loaded is not None:
        for i, t in enumerate(loaded.pool or []):
            name = t.description or f"{t.where} (entry {i + 1})"
            pool.append(Demo(name, _public(t.vars, controlled), expected_answer(t, suite.env)))
    if demos is not None and ks and max(ks) > len(pool):
        what = {"train": "tests in the train split", "marked": "marked tests"}.get(
            pool_mode, "tests in the pool file"
        )
        check.fail(
            f"{check.where('demos', 'k')}: k={max(ks)} is larger than the pool ({len(pool)} {what})",
            hint="lower k, or give the pool more tests"
            + (" (raise split.train)" if pool_mode == "train" else ""),
        )
    if pool_mode in ("file", "marked"):
        by_index = {t.index: t for t in eligible}
        for part, indices in (("held_out", split.held_out), ("validation", split.validation)):
            clash = next(
                (
                    (d, by_index[i])
                    for d in pool
                    for i in indices
                    if d.vars and all(by_index[i].vars.get(k) == v for k, v in d.vars.items())
                ),
                None,
            )
            if clash is None:
                continue
            demo, test = clash
            if part == "held_out":
                check.fail(
                    f"{check.where('demos', 'pool')}: demo {demo.ref} is also a held-out test "
                    f"({test.name}); the verdict would be tested on its own examples",
                    hint="remove the overlap from the pool or from the tests",
                )
            else:
                notes.append(
                    f"{check.where('demos', 'pool')}: demo {demo.ref} is also a validation "
                    f"test ({test.name}), which flatters candidates that show it (the held-out "
                    "verdict is unaffected)"
                )
    check.raise_any()
    space = Space(
        suite,
        prompt,
        spec,
        eligible,
        split,
        pool,
        pool_mode,
        ks=ks,
        instructions=instructions,
        proposed=len([x for x in instructions_extra if x in instructions[1:]]),
        grid_vars=grid_vars,
        grid_params=grid_params,
        notes=notes,
    )
    if demos is not None and ks and max(ks) > 0:
        space.demo_sets = draw_demo_sets(pool, max(ks), demos.sets, seed)
    return space


def _public(variables: dict[str, Any], controlled: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in variables.items() if k not in controlled}


def _demo(test: TestDef, suite: LoadedSuite, controlled: Sequence[str]) -> Demo:
    ref = f"test {test.index + 1}"
    return Demo(
        ref if test.name == ref else f"{ref} ({test.name})",
        _public(test.vars, controlled),
        expected_answer(test, suite.env),
    )


def draw_demo_sets(pool: Sequence[Demo], k: int, n_sets: int, seed: int) -> list[tuple[Demo, ...]]:
    """`n_sets` ordered draws of k demos, each taking the expected answers in turn (a random
    order of answers per set) so any prefix of a set is as balanced as the pool allows."""
    out: list[tuple[Demo, ...]] = []
    for s in range(n_sets):
        rng = random.Random(f"promptlab-optimize-demos:{seed}:{s}")
        groups: dict[str, list[Demo]] = {}
        for d in pool:
            groups.setdefault("" if d.expected is None else f"={d.expected}", []).append(d)
        queues = [groups[key] for key in sorted(groups)]
        for q in queues:
            rng.shuffle(q)
        rng.shuffle(queues)
        picked: list[Demo] = []
        while len(picked) < k and any(queues):
            for q in queues:
                if q and len(picked) < k:
                    picked.append(q.pop(0))
        out.append(tuple(picked))
    return out
