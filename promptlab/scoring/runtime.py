"""Checks on how the output was made: latency, max-tokens, perplexity and perplexity-score."""

from __future__ import annotations

import math
from typing import Any

from promptlab.errors import InputError
from promptlab.scoring.checks import Check, CheckContext, PrepareEnv, Verdict, _bool


def _prep_number(
    type_: str, value: Any, threshold: float | None, where: str, _o: dict[str, Any], _e: PrepareEnv
) -> tuple[Any, float | None]:
    base = type_.removeprefix("not-")
    unit = {"latency": "milliseconds", "max-tokens": "tokens"}.get(base, "")
    limit = threshold if threshold is not None else value
    if limit is None and base == "perplexity-score":
        return None, None  # promptfoo: without a threshold it only reports the score
    try:
        number = float(limit)
    except (TypeError, ValueError):
        what = f"a threshold in {unit}" if unit else "a numeric threshold"
        raise InputError(
            f"{where}: '{base}' needs {what}", hint="add threshold: <number>"
        ) from None
    if number <= 0 or not math.isfinite(number):
        raise InputError(f"{where}: {base} threshold must be positive, got {number:g}")
    return None, number


def _latency(check: Check, ctx: CheckContext) -> Verdict:
    assert check.threshold is not None
    ok = ctx.latency_ms <= check.threshold
    return _bool(ok, f"latency {ctx.latency_ms:.0f}ms {'<=' if ok else '>'} {check.threshold:g}ms")


def _max_tokens(check: Check, ctx: CheckContext) -> Verdict:
    assert check.threshold is not None
    if ctx.generation is None:
        return _bool(False, "no generation to count tokens of")
    n = ctx.generation.completion_tokens
    ok = n <= check.threshold
    return _bool(ok, f"{n} output tokens {'<=' if ok else '>'} {check.threshold:g}")


def _perplexity(check: Check, ctx: CheckContext) -> Verdict:
    tokens = ctx.generation.tokens if ctx.generation is not None else None
    if not tokens:
        return _bool(False, "no token logprobs for this output (empty output?)")
    ppl = math.exp(-sum(t.logprob for t in tokens) / len(tokens))
    details = {"perplexity": round(ppl, 4), "tokens": len(tokens)}
    if check.base == "perplexity":
        assert check.threshold is not None
        ok = ppl <= check.threshold
        return _bool(ok, f"perplexity {ppl:.3g} {'<=' if ok else '>'} {check.threshold:g}", details)
    score = 1.0 / (1.0 + ppl)  # promptfoo's normalization
    if check.threshold is None:
        return True, score, f"perplexity score 1/(1+{ppl:.3g}) = {score:.3f}", details
    ok = score >= check.threshold
    return (
        ok,
        score,
        f"perplexity score 1/(1+{ppl:.3g}) = {score:.3f} {'>=' if ok else '<'} {check.threshold:g}",
        details,
    )
