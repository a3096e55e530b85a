"""Multiple choice scored on the model's logprobs (lm-evaluation-harness's acc and acc_norm)."""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from promptlab.errors import InputError
from promptlab.scoring.checks import Check, CheckContext, PrepareEnv, Verdict, _bool, _short

if TYPE_CHECKING:
    from promptlab.backends import ChoiceScore


def _list_string(text: str, where: str, named: str | None) -> Any:
    """Choices written as one string: a JSON list, a Python-literal list of strings (promptfoo's
    MMLU CSV holds "['True, True', 'False, False']"), or options separated by |. A string that
    looks like a list but is neither is an error that says so, rather than one option."""
    stripped = text.strip()
    if not (stripped.startswith("[") and stripped.endswith("]")):
        return [part for part in text.split("|") if part]
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    try:
        # a literal, never evaluated: only strings, numbers, lists and the like parse
        value = ast.literal_eval(stripped)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        value = None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    holder = f"the variable '{named}' holds" if named else "choices: is"
    raise InputError(
        f"{where}: {holder} a string, not a list: {_short(text)} is neither a JSON list nor a "
        "list of quoted strings",
        hint='write it as a list: ["A", "B"] (in a CSV cell: "[""A"", ""B""]" or "[\'A\', \'B\']")',
    )


def _prep_choice(
    type_: str,
    value: Any,
    threshold: float | None,
    where: str,
    opts: dict[str, Any],
    env: PrepareEnv,
) -> tuple[Any, float | None]:
    raw = opts.get("choices")
    named = raw if isinstance(raw, str) and raw in env.variables else None
    if named is not None:
        raw = env.variables[named]  # `choices: options` names a variable holding the list
    if isinstance(raw, str):
        raw = _list_string(raw, where, named)
    if not isinstance(raw, list) or len(raw) < 2:
        raise InputError(
            f"{where}: 'choice' needs choices: a list of at least two options (or the name of a variable holding one)",
            hint='choices: [" A", " B", " C", " D"]',
        )
    choices = [c if isinstance(c, str) else json.dumps(c) for c in raw]
    if len(set(choices)) != len(choices):
        raise InputError(f"{where}: choices must be distinct, got {choices}")
    opts["choices"] = tuple(choices)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(choices):
        value = choices[value]
    if value not in choices:
        stripped = [c.strip() for c in choices]
        if (
            isinstance(value, str)
            and value.strip() in stripped
            and stripped.count(value.strip()) == 1
        ):
            value = choices[stripped.index(value.strip())]
        else:
            raise InputError(
                f"{where}: the expected answer {_short(value)} is not one of the choices {choices}",
                hint="value: is the correct option's text (or its 0-based index)",
            )
    method = opts.get("method") or "acc"
    if method not in ("acc", "acc_norm"):
        raise InputError(f"{where}: choice method must be acc or acc_norm, got {method!r}")
    opts["method"] = method
    if threshold is not None and not 0 <= threshold <= 1:
        raise InputError(
            f"{where}: a choice threshold is the expected answer's probability in [0, 1], got {threshold:g}"
        )
    return value, threshold


def choice_verdict(check: Check, scores: Sequence[ChoiceScore]) -> Verdict:
    """acc / acc_norm as lm-evaluation-harness defines them, plus normalized probabilities."""
    choices: tuple[str, ...] = check.options["choices"]
    logprobs = [s.logprob for s in scores]
    # acc_norm divides by the continuation's length in bytes, as lm-evaluation-harness does.
    normed = [lp / max(1, len(c.encode("utf-8"))) for lp, c in zip(logprobs, choices, strict=True)]
    top = max(logprobs)
    exps = [math.exp(lp - top) for lp in logprobs]
    probs = [e / sum(exps) for e in exps]
    pick = max(range(len(choices)), key=lambda i: logprobs[i])
    pick_norm = max(range(len(choices)), key=lambda i: normed[i])
    expected = choices.index(check.value)
    chosen = pick_norm if check.options["method"] == "acc_norm" else pick
    ranked = sorted(probs, reverse=True)
    details = {
        "chosen": choices[chosen],
        "expected": check.value,
        "acc": pick == expected,
        "acc_norm": pick_norm == expected,
        "probs": {c: round(p, 6) for c, p in zip(choices, probs, strict=True)},
        "logprobs": {c: round(lp, 6) for c, lp in zip(choices, logprobs, strict=True)},
        "margin": round(
            ranked[0] - ranked[1], 6
        ),  # probability lead of the pick over the runner-up
        "method": check.options["method"],
    }
    ok = chosen == expected
    p_expected = probs[expected]
    if check.threshold is not None:
        ok = ok and p_expected >= check.threshold
    reason = f"picked {_short(choices[chosen])} (p={probs[chosen]:.3f})" + (
        "" if chosen == expected else f", expected {_short(check.value)} (p={p_expected:.3f})"
    )
    return ok, p_expected, reason, details


def _choice(check: Check, ctx: CheckContext) -> Verdict:
    if ctx.services is None:
        return _bool(False, "choice scoring needs a model (run it with promptlab run)")
    scores = ctx.services.choices(ctx.prompt_text, ctx.add_bos, check.options["choices"])
    return choice_verdict(check, scores)
