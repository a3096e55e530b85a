"""Check names -> checks: which types exist, how each is prepared and how it is evaluated.

Every check has promptfoo's shape `{type, value, threshold, weight, metric, transform, ...}` and
yields a verdict and a score in [0, 1]. A check is prepared once per test (its value rendered with
the test's variables and validated: a regex compiled, a schema checked, a Python file loaded) and
then evaluated per output. Preparation raises `InputError` before any model loads; evaluation
never raises: a failure inside a check (user code, the judge) becomes a failed check with its
reason.

Each family of checks lives in its own module (text, structured, runtime, similarity, choice,
graded, code); adding a check means writing its preparer and evaluator there and naming them in
the type sets and the two tables below. Checks that need the model (choice, llm-rubric, similar
with embeddings) reach it through `Services`, which the runner provides; see
promptlab/engine/services.py.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from promptlab.errors import InputError
from promptlab.scoring import transforms
from promptlab.scoring.checks import (
    Check,
    CheckContext,
    CheckResult,
    PrepareEnv,
    Verdict,
    _Preparer,
)
from promptlab.scoring.choice import _choice, _prep_choice
from promptlab.scoring.code import _prep_python, _python
from promptlab.scoring.graded import _judge, _prep_judge
from promptlab.scoring.runtime import _latency, _max_tokens, _perplexity, _prep_number
from promptlab.scoring.similarity import _prep_similarity, _similar
from promptlab.scoring.structured import _contains_json, _is_json, _prep_json
from promptlab.scoring.text import (
    _contains,
    _contains_list,
    _equals,
    _prep_list,
    _prep_text,
    _regex,
    _starts_with,
)

LIST_TYPES = frozenset({"contains-any", "contains-all", "icontains-any", "icontains-all"})
TEXT_TYPES = frozenset({"equals", "contains", "icontains", "starts-with", "regex"})
JSON_TYPES = frozenset({"is-json", "contains-json", "json-schema"})
RUNTIME_TYPES = frozenset({"latency", "max-tokens", "perplexity", "perplexity-score"})
SIMILARITY_TYPES = frozenset({"similar", "levenshtein", "rouge-n", "rouge-l", "bleu"})
JUDGE_TYPES = frozenset({"llm-rubric", "model-graded-closedqa"})
# No `not-` form: negating a multiple-choice verdict or a group has no clear meaning.
UNNEGATABLE = frozenset({"choice", "assert-set"})
BASE_TYPES = (
    *sorted(TEXT_TYPES | LIST_TYPES | JSON_TYPES | RUNTIME_TYPES | SIMILARITY_TYPES | JUDGE_TYPES),
    "python",
    "choice",
    "assert-set",
)
ALL_TYPES = frozenset(BASE_TYPES) | {f"not-{t}" for t in BASE_TYPES if t not in UNNEGATABLE}
# Checks that need the generated tokens' logprobs.
NEEDS_LOGPROBS = frozenset({"perplexity", "perplexity-score"})
# Checks that score the prompt itself and need no generated output.
NO_OUTPUT = frozenset({"choice"})

# promptfoo types we recognise but do not run, so the message says "unsupported" rather than
# "unknown" and does not suggest a wrong near-miss.
PROMPTFOO_ONLY = frozenset(
    {
        "javascript",
        "factuality",
        "answer-relevance",
        "context-faithfulness",
        "context-recall",
        "context-relevance",
        "cost",
        "webhook",
        "is-xml",
        "contains-xml",
        "is-sql",
        "contains-sql",
        "classifier",
        "moderation",
        "select-best",
        "g-eval",
        "max-score",
        "is-valid-function-call",
        "is-valid-openai-function-call",
        "is-valid-openai-tools-call",
        "trace-span-count",
        "guardrails",
        "finish-reason",
        "word-count",
        "is-refusal",
        "pi",
        "ruby",
        "gleu",
        "meteor",
        "is-html",
        "contains-html",
        "tool-call-f1",
        "trace-error-spans",
        "trace-span-duration",
        "skill-used",
        "search-rubric",
        "human",
        "rouge-s",
    }
)
_UNSUPPORTED_HINTS = {
    "javascript": "promptlab runs Python, not JavaScript: use type: python",
    "cost": "local models cost nothing; use latency or max-tokens",
}


def check_type(name: str, where: str) -> str:
    """Validate an assertion type name, suggesting the closest valid one."""
    if name in ALL_TYPES:
        return name
    base = name[4:] if name.startswith("not-") else name
    if base in PROMPTFOO_ONLY:
        hint = _UNSUPPORTED_HINTS.get(base, f"supported types: {', '.join(BASE_TYPES)}")
        raise InputError(
            f"{where}: assertion type '{name}' is not supported by promptlab", hint=hint
        )
    if base in UNNEGATABLE:
        raise InputError(f"{where}: '{base}' has no not- form", hint=f"use {base}")
    close = difflib.get_close_matches(name, sorted(ALL_TYPES), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else f"use one of: {', '.join(BASE_TYPES)}"
    raise InputError(f"{where}: unknown assertion type '{name}'", hint=hint)


def prepare(
    type_: str,
    value: Any,
    threshold: float | None,
    where: str,
    *,
    weight: float = 1.0,
    metric: str | None = None,
    transform: Any = None,
    children: Sequence[Check] = (),
    options: Mapping[str, Any] | None = None,
    env: PrepareEnv | None = None,
) -> Check:
    """Validate a check whose value has already been rendered with the test's variables."""
    type_ = check_type(type_, where)
    base = type_.removeprefix("not-")
    env = env or PrepareEnv(base=Path(), root=Path().resolve())
    opts: dict[str, Any] = dict(options or {})
    if weight < 0 or not math.isfinite(weight):
        raise InputError(
            f"{where}: weight must be a number >= 0, got {weight}",
            hint="use 0 to report without gating",
        )
    if threshold is not None and (threshold < 0 or not math.isfinite(threshold)):
        # Every threshold is a pass mark on a non-negative scale (score, ms, tokens, distance).
        raise InputError(f"{where}: threshold must be a finite number >= 0, got {threshold}")
    parsed_transform = transforms.parse(
        transform,
        where=where,
        base=env.base,
        root=env.root,
        code=env.code,
        code_used=env.code_used,
    )
    if base == "assert-set":
        if not children:
            raise InputError(f"{where}: assert-set needs a non-empty assert: list")
        if threshold is not None and not 0 <= threshold <= 1:
            raise InputError(
                f"{where}: an assert-set threshold is a score in [0, 1], got {threshold:g}"
            )
    elif children:
        raise InputError(f"{where}: only assert-set takes a nested assert: list")
    preparer = _PREPARE.get(base)
    if preparer is not None:
        value, threshold = preparer(type_, value, threshold, where, opts, env)
    return Check(
        type=type_,
        value=value,
        threshold=threshold,
        where=where,
        weight=float(weight),
        metric=metric,
        transform=parsed_transform,
        children=tuple(children),
        options=opts,
    )


_PREPARE: dict[str, _Preparer] = {
    **dict.fromkeys(TEXT_TYPES, _prep_text),
    **dict.fromkeys(LIST_TYPES, _prep_list),
    **dict.fromkeys(JSON_TYPES, _prep_json),
    **dict.fromkeys(RUNTIME_TYPES, _prep_number),
    **dict.fromkeys(SIMILARITY_TYPES, _prep_similarity),
    **dict.fromkeys(JUDGE_TYPES, _prep_judge),
    "python": _prep_python,
    "choice": _prep_choice,
}


_EVALUATE: dict[str, Callable[[Check, CheckContext], Verdict]] = {
    "equals": _equals,
    "contains": lambda c, x: _contains(c, x, fold=False),
    "icontains": lambda c, x: _contains(c, x, fold=True),
    "contains-any": lambda c, x: _contains_list(c, x, fold=False, need_all=False),
    "contains-all": lambda c, x: _contains_list(c, x, fold=False, need_all=True),
    "icontains-any": lambda c, x: _contains_list(c, x, fold=True, need_all=False),
    "icontains-all": lambda c, x: _contains_list(c, x, fold=True, need_all=True),
    "starts-with": _starts_with,
    "regex": _regex,
    "is-json": _is_json,
    "json-schema": _is_json,
    "contains-json": _contains_json,
    "latency": _latency,
    "max-tokens": _max_tokens,
    "perplexity": _perplexity,
    "perplexity-score": _perplexity,
    **dict.fromkeys(SIMILARITY_TYPES, _similar),
    **dict.fromkeys(JUDGE_TYPES, _judge),
    "python": _python,
    "choice": _choice,
}


def combine(results: Sequence[CheckResult], threshold: float | None) -> tuple[bool, float]:
    """promptfoo's rule: the score is the weighted mean of the check scores (weight 0 reports
    without counting); without a threshold every weighted check must pass, with one the score
    must reach it."""
    gating = [r for r in results if r.weight > 0]
    total = sum(r.weight for r in gating)
    score = sum(r.score * r.weight for r in gating) / total if total else 1.0
    passed = score >= threshold - 1e-12 if threshold is not None else all(r.passed for r in gating)
    return passed, score


def evaluate(check: Check, ctx: CheckContext) -> CheckResult:
    """Evaluate one prepared check. Never raises (except KeyboardInterrupt)."""
    if check.transform is not None:
        try:
            ctx = replace(ctx, output=check.transform(ctx.output, ctx.for_code()))
        except Exception as exc:  # user transform code
            return CheckResult(
                check.type,
                False,
                f"transform failed: {type(exc).__name__}: {exc}",
                0.0,
                check.weight,
                check.metric,
            )
    if check.base == "assert-set":
        children = tuple(evaluate(c, ctx) for c in check.children)
        ok, score = combine(children, check.threshold)
        passed_n = sum(c.passed for c in children)
        reason = f"{passed_n}/{len(children)} passed, score {score:.3f}"
        if check.threshold is not None:
            reason += f" {'>=' if ok else '<'} {check.threshold:g}"
        return CheckResult(
            check.type, ok, reason, score, check.weight, check.metric, None, children
        )
    try:
        ok, score, reason, details = _EVALUATE[check.base](check, ctx)
    except Exception as exc:  # user code, the judge, a model call: the check fails, the run goes on
        ok, score, reason, details = False, 0.0, f"{type(exc).__name__}: {exc}", None
        if check.negated:  # an error is never a pass, not even for not-…
            return CheckResult(check.type, False, reason, 0.0, check.weight, check.metric)
    if check.negated:
        ok, score = not ok, 1.0 - score
    return CheckResult(
        check.type, ok, reason, max(0.0, min(1.0, score)), check.weight, check.metric, details
    )


def apply(check: Check, output: str, latency_ms: float) -> CheckResult:
    """Evaluate a check on a bare output (no model services): for tests and simple uses."""
    return evaluate(check, CheckContext(output=output, latency_ms=latency_ms))


def named_scores(results: Sequence[CheckResult]) -> dict[str, float]:
    """Weighted mean score per `metric:` name, over every check (nested ones included)."""
    sums: dict[str, list[float]] = {}

    def visit(result: CheckResult) -> None:
        if result.metric:
            acc = sums.setdefault(result.metric, [0.0, 0.0])
            w = result.weight if result.weight > 0 else 1.0
            acc[0] += result.score * w
            acc[1] += w
        for child in result.children:
            visit(child)

    for r in results:
        visit(r)
    return {name: s / w for name, (s, w) in sums.items()}
