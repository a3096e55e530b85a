"""docs/promptfoo.md against what the loader does, claim by claim.

The page's key tables say, for each promptfoo key and assertion type, whether promptlab supports
it, ignores it with a note, or refuses it. This test reads those tables and tries each key in a
tiny suite of its own: a supported key must load, an ignored one must load with a note that
names it, a refused one must stop with exit 2. A row that the page adds without a sample here
fails the test, so the page and the loader cannot drift apart again (issue 12: `repeat` was
documented as refused and tripled the cell count; the page said there was no cache).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Project

from promptlab import core
from promptlab.errors import ExitCode, InputError

DOC = Path(__file__).resolve().parents[2] / "docs" / "promptfoo.md"

Sample = dict[str, Any]

# One sample per documented key: the suite keys that exercise it. Keys of the test tables are
# set on a test; assertion properties on a check; assertion types as the check's type.
TOP: dict[str, Sample] = {
    "description": {"description": "d"},
    "prompts": {},
    "providers": {"providers": ["openai:gpt-4o-mini"]},
    "targets": {"targets": ["openai:gpt-4o-mini"]},
    "tests": {"tests": [{"vars": {"x": "1"}}]},
    "defaultTest": {"defaultTest": {"assert": [{"type": "contains", "value": "a"}]}},
    "assertionTemplates": {
        "assertionTemplates": {"a": {"type": "contains", "value": "a"}},
        "tests": [{"assert": [{"$ref": "#/assertionTemplates/a"}]}],
    },
    "scenarios": {"scenarios": [{"config": [{"vars": {"x": "1"}}]}]},
    "nunjucksFilters": {"nunjucksFilters": {"f": "f.js"}},
    "extensions": {"extensions": ["file://hooks.js:f"]},
    "commandLineOptions": {"commandLineOptions": {"maxConcurrency": 2}},
    "redteam": {"redteam": {"plugins": ["harmful"]}},
    "evaluateOptions.repeat": {"evaluateOptions": {"repeat": 2}},
    "evaluateOptions": {"evaluateOptions": {"maxConcurrency": 2}},
    "maxConcurrency": {"evaluateOptions": {"maxConcurrency": 2}},
    "delay": {"evaluateOptions": {"delay": 10}},
    "cache": {"evaluateOptions": {"cache": False}},
    "timeoutMs": {"evaluateOptions": {"timeoutMs": 100}},
    "maxEvalTimeMs": {"evaluateOptions": {"maxEvalTimeMs": 100}},
    "showProgressBar": {"evaluateOptions": {"showProgressBar": False}},
    "env": {"env": {"OPENAI_API_KEY": "x"}},
    "outputPath": {"outputPath": "out.json"},
    "sharing": {"sharing": False},
    "tags": {"tags": {"env": "ci"}},
    "metadata": {"metadata": {"owner": "me"}},
    "derivedMetrics": {"derivedMetrics": [{"name": "m", "value": "a + b"}]},
    "writeLatestResults": {"writeLatestResults": True},
    "tracing": {"tracing": {"enabled": True}},
    "outputs": {"outputs": ["out.json"]},
    "notes": {"notes": "free text"},
    "modles": {"modles": ["fake://echo"]},
    "test": {"test": [{"vars": {"x": "1"}}]},
    "promtps": {"promtps": ["hi"]},
    "temperature": {"temperature": 0.7},
    "max_tokens": {"max_tokens": 10},
    "n_ctx": {"n_ctx": 512},
}
TEST: dict[str, Sample] = {
    "description": {"description": "d"},
    "vars": {"vars": {"x": "1"}},
    "assert": {"assert": [{"type": "contains", "value": "a"}]},
    "threshold": {"threshold": 0.5},
    "metadata": {"metadata": {"k": "v"}},
    "provider": {"provider": "openai:gpt-4o"},
    "providers": {"providers": ["openai:gpt-4o"]},
    "prompts": {"prompts": ["p1"]},
    "providerOutput": {"providerOutput": "fixed"},
    "assertScoringFunction": {"assertScoringFunction": "file://score.js"},
    "{path: file://gen.py:fn, config}": {"path": "file://gen.py:fn"},
}
OPTIONS: dict[str, Sample] = {
    "transform": {"transform": "strip"},
    "postprocess": {"postprocess": "strip"},
    "provider": {"provider": "fake://echo"},
    "rubricPrompt": {"rubricPrompt": "Grade {{ output }}: {{ rubric }}"},
    "disableVarExpansion": {"disableVarExpansion": True},
    "disableDefaultAsserts": {"disableDefaultAsserts": True},
    "runSerially": {"runSerially": True},
    "disableConversationVar": {"disableConversationVar": True},
    "factuality": {"factuality": {"subset": 1}},
    "prefix": {"prefix": "P: "},
    "suffix": {"suffix": " S"},
    "transformVars": {"transformVars": "vars"},
    "storeOutputAs": {"storeOutputAs": "answer"},
    "response_format": {"response_format": {"type": "json_object"}},
    "temperature": {"temperature": 0.5},
}
PROPERTIES: dict[str, Sample] = {
    "value": {"value": "a"},
    "threshold": {"type": "similar", "value": "a", "threshold": 0.5},
    "weight": {"value": "a", "weight": 2},
    "metric": {"value": "a", "metric": "m"},
    "transform": {"value": "a", "transform": "lower"},
    "config": {"type": "python", "value": "True", "config": {"k": 1}},
    "contextTransform": {"value": "a", "contextTransform": "output"},
    "$ref: '#/assertionTemplates/name'": {"$ref": "#/assertionTemplates/a"},
    "assert-set": {"type": "assert-set", "assert": [{"type": "contains", "value": "a"}]},
}
# Assertion types: the check's keys besides `type` (default: a value).
TYPE_VALUES: dict[str, Sample] = {
    "is-json": {},
    "contains-json": {},
    "latency": {"threshold": 500},
    "perplexity": {"threshold": 20},
    "perplexity-score": {},
    "assert-set": {"assert": [{"type": "contains", "value": "a"}]},
    "python": {"value": "True"},
    "contains-any": {"value": ["a", "b"]},
    "contains-all": {"value": ["a", "b"]},
    "icontains-any": {"value": ["a", "b"]},
    "icontains-all": {"value": ["a", "b"]},
}


def _rows(heading: str) -> list[tuple[str, str]]:
    """(first cell, second cell) of the first table under `heading` in docs/promptfoo.md."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = lines.index(heading)
    rows: list[tuple[str, str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if cells[0] in ("key", "property", "type", "---") or set(cells[0]) <= {"-"}:
                continue
            rows.append((cells[0], cells[1]))
        elif rows:
            break
    assert rows, f"no table under {heading!r}"
    return rows


def _claim(text: str) -> str | None:
    """What a row says promptlab does: supported, ignored or refused, whichever the row says
    first (None: a cross-reference such as "see options")."""
    if text.startswith(("see ", "as in ")):
        return None
    found = re.search(r"\b(supported|ignored|refused)\b", text)
    assert found, f"docs/promptfoo.md: can't tell what this row claims: {text!r}"
    return found.group(1)


def _names(cell: str) -> list[str]:
    names = re.findall(r"`([^`]+)`", cell)
    assert names, f"docs/promptfoo.md: a row names no key: {cell!r}"
    return names


def _cases(
    heading: str, samples: dict[str, Sample], first_only: bool = False
) -> list[tuple[str, str, str]]:
    out = []
    for cell, text in _rows(heading):
        claim = _claim(text)
        if claim is None:
            continue
        for name in _names(cell)[:1] if first_only else _names(cell):
            out.append((name, claim, heading))
    for name, _, _ in out:
        assert name in samples, f"add a sample for {name!r} ({heading}) to {__file__}"
    return out


def _outcome(project: Project, suite: dict[str, Any]) -> tuple[str, list[str], str]:
    """('loads' | 'refused', notes, error) of a suite file made from `suite`."""
    body = {"prompts": ["Answer {{ x | default('') }}"], "models": ["fake://echo"], **suite}
    if "promtps" in body:
        del body["prompts"]
    path = project.write("evals/s.yaml", yaml.safe_dump(body, sort_keys=False))
    try:
        plan = core.prepare(path)
    except InputError as exc:
        assert exc.exit_code == ExitCode.BAD_INPUT
        return "refused", [], exc.one_line()
    return "loads", plan.suite.notes, ""


def _check(project: Project, name: str, claim: str, suite: dict[str, Any], key: str) -> None:
    outcome, notes, error = _outcome(project, suite)
    if claim == "refused":
        assert outcome == "refused", f"{name}: documented as refused, but it loads ({notes})"
        assert key in error, error
    else:
        assert outcome == "loads", f"{name}: documented as {claim}, but: {error}"
        named = [n for n in notes if key in n]
        if claim == "ignored":
            assert named, f"{name}: documented as ignored with a note; notes: {notes}"


TOP_CASES = _cases("## Top-level keys", TOP)
TEST_CASES = _cases("## Tests and test files", TEST, first_only=True)
OPTION_CASES = _cases("### options", OPTIONS)
PROPERTY_CASES = _cases("## Assertion properties", PROPERTIES, first_only=True)
_TYPE_NAMES: dict[str, Sample] = {
    n: {} for cell, _ in _rows("## Assertion types") for n in _names(cell)
}
TYPE_CASES = _cases("## Assertion types", _TYPE_NAMES)


def _ids(cases: list[tuple[str, str, str]]) -> list[str]:
    return [f"{name}={claim}" for name, claim, _ in cases]


@pytest.mark.parametrize(("name", "claim", "heading"), TOP_CASES, ids=_ids(TOP_CASES))
def test_top_level_key_does_what_the_docs_say(
    project: Project, name: str, claim: str, heading: str
) -> None:
    sample = TOP[name]
    key = name.split(".")[-1] if name.startswith("evaluateOptions.") else name
    _check(project, name, claim, sample, key)


@pytest.mark.parametrize(("name", "claim", "heading"), TEST_CASES, ids=_ids(TEST_CASES))
def test_test_key_does_what_the_docs_say(
    project: Project, name: str, claim: str, heading: str
) -> None:
    sample = TEST[name]
    (key,) = sample
    _check(project, name, claim, {"tests": [{"vars": {"x": "1"}, **sample}]}, key)


@pytest.mark.parametrize(("name", "claim", "heading"), OPTION_CASES, ids=_ids(OPTION_CASES))
def test_option_does_what_the_docs_say(
    project: Project, name: str, claim: str, heading: str
) -> None:
    sample = OPTIONS[name]
    (key,) = sample
    _check(project, name, claim, {"tests": [{"vars": {"x": "1"}, "options": sample}]}, key)


@pytest.mark.parametrize(("name", "claim", "heading"), PROPERTY_CASES, ids=_ids(PROPERTY_CASES))
def test_assertion_property_does_what_the_docs_say(
    project: Project, name: str, claim: str, heading: str
) -> None:
    check = {"type": "contains", **PROPERTIES[name]}
    suite: dict[str, Any] = {"tests": [{"vars": {"x": "1"}, "assert": [check]}]}
    if "$ref" in check:
        suite["assertionTemplates"] = {"a": {"type": "contains", "value": "a"}}
        check.pop("type")
    key = name.split(":")[0].split()[0]
    _check(project, name, claim, suite, key)


@pytest.mark.parametrize(("name", "claim", "heading"), TYPE_CASES, ids=_ids(TYPE_CASES))
def test_assertion_type_does_what_the_docs_say(
    project: Project, name: str, claim: str, heading: str
) -> None:
    check = {"type": name, **TYPE_VALUES.get(name, {"value": "a"})}
    suite = {"tests": [{"vars": {"x": "1"}, "assert": [check]}]}
    # model-graded-factuality is promptfoo's other name for factuality, which the error names
    _check(project, name, claim, suite, name.removeprefix("model-graded-"))


def test_every_table_was_read() -> None:
    # A renamed heading must not make the checks above silently vanish.
    counts = {
        "top": len(TOP_CASES),
        "test": len(TEST_CASES),
        "options": len(OPTION_CASES),
        "properties": len(PROPERTY_CASES),
        "types": len(TYPE_CASES),
    }
    assert all(n >= 8 for n in counts.values()), counts
    claims = {claim for _, claim, _ in TOP_CASES + TEST_CASES + OPTION_CASES}
    assert claims == {"supported", "ignored", "refused"}


def test_docs_no_longer_contradict_the_cache_and_repeat() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert "there is none" not in text  # the result cache exists (README: Result cache)
    assert "`repeat` above 1 is refused" not in text


# Prompt forms whose row the page documents, each with the files and `prompts:` that try it.
PROMPT_FORMS: dict[str, tuple[dict[str, str], list[Any]]] = {
    "file://prompts.csv": (
        {"evals/prompts.csv": "prompt,label\nSay {{ x }},a\n"},
        ["file://prompts.csv"],
    ),
    ".jsonl": ({"evals/p.jsonl": '{"prompt": "hi"}\n'}, ["file://p.jsonl"]),
    "{messages: [{role, content}], label}": (
        {},
        [{"messages": [{"role": "user", "content": "Say {{ x }}"}], "label": "m"}],
    ),
    "file://prompt.py:fn": (
        {"evals/prompt.py": "def fn(context):\n    return 'hi'\n"},
        ["file://prompt.py:fn"],
    ),
}


@pytest.mark.parametrize("form", sorted(PROMPT_FORMS))
def test_prompt_form_does_what_the_docs_say(project: Project, form: str) -> None:
    rows = dict(_rows("## Prompts"))
    (row,) = [text for first, text in rows.items() if f"`{form}`" in first]
    claim = _claim(row)
    files, prompts = PROMPT_FORMS[form]
    for rel, text in files.items():
        project.write(rel, text)
    # promptfoo's echo provider: a chat prompt needs a model with a chat template, which the
    # echo mapping has and a bare fake:// model has not.
    body = {"prompts": prompts, "providers": ["echo"], "tests": [{"vars": {"x": "1"}}]}
    path = project.write("evals/s.yaml", yaml.safe_dump(body, sort_keys=False))
    try:
        core.prepare(path)
        outcome, error = "loads", ""
    except InputError as exc:
        outcome, error = "refused", exc.one_line()
    expected = "refused" if claim == "refused" else "loads"
    assert outcome == expected, f"{form}: documented as {claim}, but {outcome}: {error}"
