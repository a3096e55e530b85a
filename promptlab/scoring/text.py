"""Text checks: equals, contains (and the -any/-all lists), starts-with, regex."""

from __future__ import annotations

import json
import re
from typing import Any

from promptlab.errors import InputError
from promptlab.scoring.checks import (
    Check,
    CheckContext,
    PrepareEnv,
    Verdict,
    _bool,
    _short,
    split_list,
)


def _prep_text(
    type_: str, value: Any, threshold: float | None, where: str, _o: dict[str, Any], _e: PrepareEnv
) -> tuple[Any, float | None]:
    base = type_.removeprefix("not-")
    if value is None or (isinstance(value, (dict, list)) and base != "equals"):
        raise InputError(f"{where}: '{type_}' needs a text value", hint="add value: …")
    if base == "regex":
        try:
            re.compile(str(value))
        except re.error as exc:
            raise InputError(
                f"{where}: invalid regex {str(value)!r}: {exc}",
                hint="fix the pattern (remember YAML needs single quotes for backslashes)",
            ) from None
    if not isinstance(value, (dict, list)):
        value = value if isinstance(value, str) else json.dumps(value)
    return value, threshold


def _prep_list(
    type_: str, value: Any, threshold: float | None, where: str, _o: dict[str, Any], _e: PrepareEnv
) -> tuple[Any, float | None]:
    items = split_list(value) if value is not None else []
    if not items:
        raise InputError(f"{where}: '{type_}' needs a list of values", hint="value: [a, b]")
    return items, threshold


def _equals(check: Check, ctx: CheckContext) -> Verdict:
    output = ctx.output
    if isinstance(check.value, (dict, list)):
        try:
            ok = json.loads(output) == check.value
        except ValueError:
            return _bool(False, "output is not JSON, expected " + _short(check.value))
        return _bool(
            ok, ("output equals " if ok else "output does not equal ") + _short(check.value)
        )
    ok = output == check.value
    return _bool(ok, ("output equals " if ok else "output does not equal ") + _short(check.value))


def _contains(check: Check, ctx: CheckContext, fold: bool) -> Verdict:
    needle = str(check.value)
    ok = needle.lower() in ctx.output.lower() if fold else needle in ctx.output
    return _bool(ok, ("output contains " if ok else "output does not contain ") + _short(needle))


def _contains_list(check: Check, ctx: CheckContext, fold: bool, need_all: bool) -> Verdict:
    hay = ctx.output.lower() if fold else ctx.output
    found = [v for v in check.value if (v.lower() if fold else v) in hay]
    missing = [v for v in check.value if v not in found]
    if need_all:
        ok = not missing
        return _bool(ok, "output contains all values" if ok else f"output lacks {_short(missing)}")
    ok = bool(found)
    return _bool(
        ok, f"output contains {_short(found[0])}" if ok else "output contains none of the values"
    )


def _starts_with(check: Check, ctx: CheckContext) -> Verdict:
    ok = ctx.output.startswith(str(check.value))
    return _bool(
        ok, ("output starts with " if ok else "output does not start with ") + _short(check.value)
    )


def _regex(check: Check, ctx: CheckContext) -> Verdict:
    ok = re.search(str(check.value), ctx.output) is not None
    return _bool(ok, ("output matches /" if ok else "output does not match /") + f"{check.value}/")
