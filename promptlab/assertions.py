"""Checks on a model output, in promptfoo's vocabulary so existing configs carry over.

A check is prepared once per test (its value rendered with the test's variables and validated,
e.g. a regex compiled) and then applied to each output. Preparation raises `InputError` before
any model loads; application never raises.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from promptlab.errors import InputError

LIST_TYPES = frozenset({"contains-any", "contains-all", "icontains-any", "icontains-all"})
TEXT_TYPES = frozenset({"equals", "contains", "icontains", "starts-with", "regex"})
BASE_TYPES = (*sorted(TEXT_TYPES | LIST_TYPES), "is-json", "latency")
ALL_TYPES = frozenset(BASE_TYPES) | {f"not-{t}" for t in BASE_TYPES}

# promptfoo types we recognise but do not run (yet), so the message says "unsupported" rather
# than "unknown" and does not suggest a wrong near-miss.
PROMPTFOO_ONLY = frozenset(
    {
        "javascript",
        "python",
        "similar",
        "llm-rubric",
        "model-graded-closedqa",
        "factuality",
        "answer-relevance",
        "context-faithfulness",
        "context-recall",
        "context-relevance",
        "levenshtein",
        "rouge-n",
        "bleu",
        "perplexity",
        "perplexity-score",
        "cost",
        "webhook",
        "contains-json",
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
        "json-schema",
        "guardrails",
        "finish-reason",
        "word-count",
    }
)


@dataclass(frozen=True)
class Check:
    """A prepared check: its value is rendered and validated."""

    type: str  # as written, e.g. "not-icontains"
    value: Any
    threshold: float | None
    where: str  # "evals/x.yaml:14" for messages

    @property
    def negated(self) -> bool:
        return self.type.startswith("not-")

    @property
    def base(self) -> str:
        return self.type[4:] if self.negated else self.type

    def describe(self) -> str:
        if self.base == "latency":
            return f"{self.type} {self.threshold:g}ms"
        if self.value is None:
            return self.type
        return f"{self.type} {_short(self.value)}"


@dataclass(frozen=True)
class CheckResult:
    type: str
    passed: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type, "pass": self.passed, "reason": self.reason}


def _short(value: Any, limit: int = 60) -> str:
    """Text as a quoted JSON string, other values as JSON (not quoted twice), cut at `limit`."""
    if isinstance(value, str):
        return json.dumps(value[:limit] + ("…" if len(value) > limit else ""), ensure_ascii=False)
    text = json.dumps(value, ensure_ascii=False)
    return text[:limit] + ("…" if len(text) > limit else "")


def check_type(name: str, where: str) -> str:
    """Validate an assertion type name, suggesting the closest valid one."""
    if name in ALL_TYPES:
        return name
    base = name[4:] if name.startswith("not-") else name
    if base in PROMPTFOO_ONLY:
        raise InputError(
            f"{where}: assertion type '{name}' is not supported by promptlab yet",
            hint=f"supported types: {', '.join(BASE_TYPES)} (each also as not-…)",
        )
    close = difflib.get_close_matches(name, sorted(ALL_TYPES), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else f"use one of: {', '.join(BASE_TYPES)}"
    raise InputError(f"{where}: unknown assertion type '{name}'", hint=hint)


def split_list(value: Any) -> list[str]:
    """contains-any and friends take a list, or a comma-separated string as promptfoo does."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list):
        return [item if isinstance(item, str) else json.dumps(item) for item in value]
    return [str(value)]


def prepare(type_: str, value: Any, threshold: float | None, where: str) -> Check:
    """Validate a check whose value has already been rendered with the test's variables."""
    type_ = check_type(type_, where)
    base = type_.removeprefix("not-")
    if base in TEXT_TYPES:
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
    elif base in LIST_TYPES:
        items = split_list(value) if value is not None else []
        if not items:
            raise InputError(f"{where}: '{type_}' needs a list of values", hint="value: [a, b]")
        value = items
    elif base == "is-json":
        if value is not None and not isinstance(value, dict):
            raise InputError(
                f"{where}: 'is-json' takes an optional JSON schema object as value",
                hint="remove value, or give a schema mapping",
            )
        if value is not None:
            _schema_validator(value, where)
    elif base == "latency":
        limit = threshold if threshold is not None else value
        try:
            threshold = float(limit)
        except (TypeError, ValueError):
            raise InputError(
                f"{where}: 'latency' needs a threshold in milliseconds",
                hint="add threshold: 5000",
            ) from None
        if threshold <= 0:
            raise InputError(f"{where}: latency threshold must be positive, got {threshold:g}")
        value = None
    return Check(type=type_, value=value, threshold=threshold, where=where)


def _schema_validator(schema: dict[str, Any], where: str) -> Any:
    import jsonschema  # noqa: PLC0415 - only suites with schemas pay for the import

    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InputError(f"{where}: invalid JSON schema: {exc.message}") from None
    return cls(schema)


def _equals(check: Check, output: str) -> tuple[bool, str]:
    if isinstance(check.value, (dict, list)):
        try:
            ok = json.loads(output) == check.value
        except ValueError:
            return False, "output is not JSON, expected " + _short(check.value)
        return ok, ("output equals " if ok else "output does not equal ") + _short(check.value)
    ok = output == check.value
    return ok, ("output equals " if ok else "output does not equal ") + _short(check.value)


def _contains(check: Check, output: str, fold: bool) -> tuple[bool, str]:
    needle = str(check.value)
    ok = needle.lower() in output.lower() if fold else needle in output
    return ok, ("output contains " if ok else "output does not contain ") + _short(needle)


def _contains_list(check: Check, output: str, fold: bool, need_all: bool) -> tuple[bool, str]:
    hay = output.lower() if fold else output
    found = [v for v in check.value if (v.lower() if fold else v) in hay]
    missing = [v for v in check.value if v not in found]
    if need_all:
        ok = not missing
        return ok, "output contains all values" if ok else f"output lacks {_short(missing)}"
    ok = bool(found)
    return ok, f"output contains {_short(found[0])}" if ok else "output contains none of the values"


def _regex(check: Check, output: str) -> tuple[bool, str]:
    ok = re.search(str(check.value), output) is not None
    return ok, ("output matches /" if ok else "output does not match /") + f"{check.value}/"


def _is_json(check: Check, output: str) -> tuple[bool, str]:
    try:
        data = json.loads(output)
    except json.JSONDecodeError as exc:
        return False, f"output is not valid JSON ({exc.msg} at char {exc.pos})"
    if check.value is None:
        return True, "output is valid JSON"
    validator = _schema_validator(check.value, check.where)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if not errors:
        return True, "output is valid JSON matching the schema"
    err = errors[0]
    path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
    return False, f"schema violation at {path}: {err.message}"


_APPLY: dict[str, Callable[[Check, str], tuple[bool, str]]] = {
    "equals": _equals,
    "contains": lambda c, o: _contains(c, o, fold=False),
    "icontains": lambda c, o: _contains(c, o, fold=True),
    "contains-any": lambda c, o: _contains_list(c, o, fold=False, need_all=False),
    "contains-all": lambda c, o: _contains_list(c, o, fold=False, need_all=True),
    "icontains-any": lambda c, o: _contains_list(c, o, fold=True, need_all=False),
    "icontains-all": lambda c, o: _contains_list(c, o, fold=True, need_all=True),
    "starts-with": lambda c, o: (
        o.startswith(str(c.value)),
        ("output starts with " if o.startswith(str(c.value)) else "output does not start with ")
        + _short(c.value),
    ),
    "regex": _regex,
    "is-json": _is_json,
}


def apply(check: Check, output: str, latency_ms: float) -> CheckResult:
    """Apply one prepared check. `not-` inverts the verdict and keeps the reason readable."""
    if check.base == "latency":
        assert check.threshold is not None
        ok = latency_ms <= check.threshold
        reason = f"latency {latency_ms:.0f}ms {'<=' if ok else '>'} {check.threshold:g}ms"
    else:
        ok, reason = _APPLY[check.base](check, output)
    if check.negated:
        ok = not ok
    return CheckResult(type=check.type, passed=ok, reason=reason)
