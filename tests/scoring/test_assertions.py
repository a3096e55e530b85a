"""Every check type, its `not-` form, pass and fail, with the reason shown in reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import pytest

from promptlab import scoring
from promptlab.errors import InputError
from promptlab.scoring import BASE_TYPES, apply, prepare

AGE_SCHEMA = {
    "type": "object",
    "properties": {
        "age": {"type": "integer"},
        "people": {"type": "array", "items": {"type": "object", "properties": {"age": {}}}},
    },
    "required": ["age"],
}
NESTED_SCHEMA = {
    "type": "object",
    "properties": {
        "people": {
            "type": "array",
            "items": {"type": "object", "properties": {"age": {"type": "integer"}}},
        }
    },
}


@dataclass(frozen=True)
class Example:
    type: str
    value: Any
    output: str
    passed: bool
    reason: str  # a substring of the reason
    threshold: float | None = None
    latency_ms: float = 10.0


EXAMPLES = [
    pytest.param(Example("equals", "Paris", "Paris", True, 'output equals "Paris"'), id="equals"),
    pytest.param(
        Example("equals", "Paris", "Paris.", False, 'output does not equal "Paris"'),
        id="equals-fail",
    ),
    pytest.param(Example("equals", 42, "42", True, 'output equals "42"'), id="equals-number"),
    pytest.param(
        Example(
            "equals", {"a": 1, "b": [1, 2]}, '{"b": [1, 2], "a": 1}', True, 'equals {"a": 1, "b"'
        ),
        id="equals-json-object",
    ),
    pytest.param(
        Example("equals", {"a": 1}, '{"a": 2}', False, 'output does not equal {"a": 1}'),
        id="equals-json-object-fail",
    ),
    pytest.param(
        Example("equals", {"a": 1}, "a=1", False, 'output is not JSON, expected {"a": 1}'),
        id="equals-json-object-not-json",
    ),
    pytest.param(Example("contains", "ari", "Paris", True, 'output contains "ari"'), id="contains"),
    pytest.param(
        Example("contains", "ARI", "Paris", False, 'output does not contain "ARI"'),
        id="contains-is-case-sensitive",
    ),
    pytest.param(
        Example("icontains", "ARI", "Paris", True, 'output contains "ARI"'), id="icontains"
    ),
    pytest.param(
        Example("icontains", "Rome", "Paris", False, 'output does not contain "Rome"'),
        id="icontains-fail",
    ),
    pytest.param(
        Example("contains-any", ["Rome", "Par"], "Paris", True, 'output contains "Par"'),
        id="contains-any",
    ),
    pytest.param(
        Example("contains-any", ["par", "Rome"], "Paris", False, "contains none of the values"),
        id="contains-any-fail",
    ),
    pytest.param(
        Example("contains-all", "Par, is", "Paris", True, "output contains all values"),
        id="contains-all-comma-string",
    ),
    pytest.param(
        Example("contains-all", ["Par", "IS"], "Paris", False, 'output lacks ["IS"]'),
        id="contains-all-fail",
    ),
    pytest.param(
        Example("icontains-any", ["ROME", "PAR"], "Paris", True, 'output contains "PAR"'),
        id="icontains-any",
    ),
    pytest.param(
        Example("icontains-any", ["Rome", "Oslo"], "Paris", False, "none of the values"),
        id="icontains-any-fail",
    ),
    pytest.param(
        Example("icontains-all", ["PAR", "is"], "Paris", True, "output contains all values"),
        id="icontains-all",
    ),
    pytest.param(
        Example("icontains-all", ["PAR", "Rome"], "Paris", False, 'output lacks ["Rome"]'),
        id="icontains-all-fail",
    ),
    pytest.param(
        Example("starts-with", "Pa", "Paris", True, 'output starts with "Pa"'), id="starts-with"
    ),
    pytest.param(
        Example("starts-with", "aris", "Paris", False, 'output does not start with "aris"'),
        id="starts-with-fail",
    ),
    pytest.param(
        Example("regex", r"^P\w+s$", "Paris", True, r"output matches /^P\w+s$/"), id="regex"
    ),
    pytest.param(
        Example("regex", r"^\d+$", "Paris", False, r"output does not match /^\d+$/"),
        id="regex-fail",
    ),
    pytest.param(Example("is-json", None, '{"a": 1}', True, "output is valid JSON"), id="is-json"),
    pytest.param(
        Example("is-json", None, "{'a': 1}", False, "output is not valid JSON"),
        id="is-json-fail",
    ),
    pytest.param(
        Example("is-json", AGE_SCHEMA, '{"age": 3}', True, "valid JSON matching the schema"),
        id="is-json-schema",
    ),
    pytest.param(
        Example("is-json", AGE_SCHEMA, '{"age": "three"}', False, "schema violation at $.age:"),
        id="is-json-schema-fail",
    ),
    pytest.param(
        Example("is-json", AGE_SCHEMA, '{"name": "x"}', False, "schema violation at $: 'age'"),
        id="is-json-schema-missing-required",
    ),
    pytest.param(
        Example(
            "is-json",
            NESTED_SCHEMA,
            '{"people": [{"age": 1}, {"age": "x"}]}',
            False,
            "schema violation at $.people[1].age:",
        ),
        id="is-json-schema-nested-path",
    ),
    pytest.param(
        Example("is-json", AGE_SCHEMA, "not json", False, "output is not valid JSON"),
        id="is-json-schema-not-json",
    ),
    pytest.param(
        Example("json-schema", AGE_SCHEMA, '{"age": 3}', True, "matching the schema"),
        id="json-schema",
    ),
    pytest.param(
        Example("json-schema", AGE_SCHEMA, '{"age": "3"}', False, "schema violation at $.age"),
        id="json-schema-fail",
    ),
    pytest.param(
        Example("contains-json", None, 'Sure: {"a": [1, 2]} hope it helps', True, "embedded JSON"),
        id="contains-json",
    ),
    pytest.param(
        Example("contains-json", AGE_SCHEMA, 'x {"age": "old"} y', False, "schema violation"),
        id="contains-json-schema-fail",
    ),
    pytest.param(
        Example("contains-json", None, "no json {here", False, "contains no JSON"),
        id="contains-json-fail",
    ),
    pytest.param(
        Example("latency", None, "x", True, "latency 50ms <= 100ms", threshold=100, latency_ms=50),
        id="latency-threshold",
    ),
    pytest.param(
        Example(
            "latency", None, "x", False, "latency 150ms > 100ms", threshold=100, latency_ms=150
        ),
        id="latency-threshold-fail",
    ),
    pytest.param(
        Example("latency", 200, "x", True, "latency 199ms <= 200ms", latency_ms=199),
        id="latency-value",
    ),
    pytest.param(
        Example("latency", "200", "x", False, "latency 201ms > 200ms", latency_ms=201),
        id="latency-value-fail",
    ),
]


@pytest.mark.parametrize("negate", [False, True], ids=["plain", "not"])
@pytest.mark.parametrize("ex", EXAMPLES)
def test_check(ex: Example, negate: bool) -> None:
    type_ = f"not-{ex.type}" if negate else ex.type
    check = prepare(type_, ex.value, ex.threshold, "s.yaml:3")
    result = apply(check, ex.output, ex.latency_ms)
    assert result.type == type_
    assert result.passed is (ex.passed != negate)
    assert ex.reason in result.reason
    # Pass/fail checks score 1 or 0; `not-` flips both.
    assert result.score == (1.0 if result.passed else 0.0)
    assert result.as_dict() == {
        "type": type_,
        "pass": result.passed,
        "score": result.score,
        "reason": result.reason,
    }


def test_examples_cover_every_type_passing_and_failing() -> None:
    examples = [cast(Example, p.values[0]) for p in EXAMPLES]
    seen = {(ex.type, ex.passed) for ex in examples}
    # Output-only checks; those needing a model, code or tokens are in tests/scoring/test_scoring.py.
    simple = scoring.TEXT_TYPES | scoring.LIST_TYPES | scoring.JSON_TYPES | {"latency"}
    assert seen == {(t, ok) for t in simple for ok in (True, False)}
    negatable = set(BASE_TYPES) - scoring.UNNEGATABLE
    assert {f"not-{t}" for t in negatable} <= scoring.ALL_TYPES


def test_values_are_prepared() -> None:
    assert prepare("contains-any", "a, b ,, c", None, "w").value == ["a", "b", "c"]
    assert prepare("icontains-all", [1, "x"], None, "w").value == ["1", "x"]
    assert prepare("contains", 3.5, None, "w").value == "3.5"
    assert prepare("equals", [1, 2], None, "w").value == [1, 2]  # JSON compared as data
    latency = prepare("latency", None, 5000, "w")
    assert (latency.threshold, latency.value) == (5000.0, None)


@pytest.mark.parametrize(
    ("type_", "value", "threshold", "message"),
    [
        ("contains", None, None, "'contains' needs a text value"),
        ("not-starts-with", None, None, "'not-starts-with' needs a text value"),
        ("icontains", {"a": 1}, None, "'icontains' needs a text value"),
        ("regex", "([a-z]", None, "invalid regex '([a-z]'"),
        ("contains-any", None, None, "needs a list of values"),
        ("icontains-all", [], None, "needs a list of values"),
        ("contains-all", " , ", None, "needs a list of values"),
        ("is-json", "object", None, "optional JSON schema object"),
        ("is-json", {"type": "nonsense"}, None, "invalid JSON schema"),
        ("latency", None, None, "needs a threshold in milliseconds"),
        ("latency", "soon", None, "needs a threshold in milliseconds"),
        ("latency", None, 0, "must be positive"),
        ("icontain", "x", None, "unknown assertion type 'icontain'; did you mean 'icontains'?"),
        ("not-regx", "x", None, "did you mean 'not-regex'?"),
        (
            "javascript",
            "x",
            None,
            "'javascript' is not supported by promptlab; promptlab runs Python",
        ),
        ("not-choice", "x", None, "'choice' has no not- form"),
        ("not-assert-set", None, None, "'assert-set' has no not- form"),
        ("json-schema", None, None, "'json-schema' needs a schema"),
        ("zzzzzzzz", "x", None, "use one of: bleu, contains"),
    ],
)
def test_prepare_refuses_bad_checks(
    type_: str, value: Any, threshold: float | None, message: str
) -> None:
    with pytest.raises(InputError, match=r"^s\.yaml:9: ") as exc:
        prepare(type_, value, threshold, "s.yaml:9")
    assert message in exc.value.one_line()
    assert "\n" not in exc.value.one_line()


def test_describe() -> None:
    assert prepare("not-icontains", "I don't know", None, "w").describe() == (
        'not-icontains "I don\'t know"'
    )
    assert prepare("latency", None, 30000, "w").describe() == "latency 30000ms"
    assert prepare("is-json", None, None, "w").describe() == "is-json"
    assert prepare("not-contains", "\n", None, "w").describe() == 'not-contains "\\n"'
    assert prepare("contains-all", ["a", "b"], None, "w").describe() == 'contains-all ["a", "b"]'
    assert prepare("equals", {"k": 1}, None, "w").describe() == 'equals {"k": 1}'
    long = prepare("contains", "x" * 100, None, "w").describe()
    assert long.endswith('…"') and len(long) < 80


def test_apply_never_raises_on_odd_output() -> None:
    check = prepare("is-json", AGE_SCHEMA, None, "w")
    for output in ["", "null", "[]", '{"age": 1e400}', "\x00"]:
        result = apply(check, output, 1.0)
        assert result.passed is False, output
