"""Property: for any input, `load_suite` accepts it or raises promptlab's own error, in bounded
time; and a CI-sized run of the mutation fuzzer (tests/fuzz/fuzz_suites.py) finds nothing."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptlab.errors import PromptlabError
from promptlab.suite import load_suite

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = yaml.safe_load((REPO / "evals" / "example.yaml").read_text(encoding="utf-8"))
FIELDS = [
    "prompts", "tests", "models", "params", "defaultTest", "vars", "assert", "type", "value",
    "threshold", "weight", "path", "n_ctx", "n_threads", "temperature", "top_p", "max_tokens",
    "label", "raw", "id", "description", "repeat", "transform", "options", "metadata",
]  # fmt: skip
FUZZ = settings(
    max_examples=70,
    deadline=5000,  # ms per example: a hang or an alias bomb fails the test, not CI's clock
    derandomize=True,  # the same examples on every run, so CI is deterministic
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["file://nope.txt", "fake://echo", "{{ x }}", "{% if %}", "\udc80", "1e30"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), inner, max_size=4),
    ),
    max_leaves=20,
)
FRAGMENTS = [
    "prompts:", "tests:", "models:", "params:", "  - ", "- ", "  ", "\n", ": ", "&a ", "*a",
    "&b [*a, *a]", "<<: *a", "!!binary x", "!!python/object:os.system", "!!set", "!!omap",
    '"\\udc80"', "'", '"', "[", "]", "{", "}", ",", "? ", "|", ">", "#", "---", "...",
    "%YAML 1.1", "1e30", ".nan", "-.inf", "0x1F", "2001-13-45", "fake://echo", "{{ x }}",
    "file://x.csv", "type: contains", "value: 1", "threshold: -1", "[" * 1000 + "]" * 1000,
    "1" + "0" * 5000, "&a [&b [&c [1, 1, 1], *c, *c], *b, *b]", "&l [*l]", "x: &m {k: *m}",
]  # fmt: skip
yamlish = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)


def _load(folder: Path, text: str | bytes) -> None:
    path = folder / "suite.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
    _check(path)


def _check(path: Path) -> None:
    try:
        suite = load_suite(path)
    except PromptlabError:
        return  # promptlab's own error: the contract holds
    # Accepted: then everything it holds can be written as UTF-8 (no lone surrogates), as
    # results.jsonl and the reports will need.
    texts = [p.label for p in suite.prompts] + [m.label for m in suite.models]
    blob = json.dumps([texts, [t.vars for t in suite.tests]], ensure_ascii=False, default=str)
    blob.encode("utf-8")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / ".git").mkdir()
    return tmp_path


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, width=1000)


@FUZZ
@given(data=st.dictionaries(st.sampled_from(FIELDS), values, max_size=6))
def test_any_document_loads_or_raises_promptlab_error(folder: Path, data: Any) -> None:
    _load(folder, _dump(data))


@FUZZ
@given(text=yamlish)
def test_any_yaml_text_loads_or_raises_promptlab_error(folder: Path, text: str) -> None:
    _load(folder, text)


def _paths(data: Any, loc: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [loc] if loc else []
    if isinstance(data, dict):
        for key, value in data.items():
            out += _paths(value, (*loc, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            out += _paths(value, (*loc, i))
    return out


EXAMPLE_PATHS = _paths(EXAMPLE)


@FUZZ
@given(where=st.sampled_from(EXAMPLE_PATHS), value=values)
def test_any_field_of_a_valid_suite_loads_or_raises_promptlab_error(
    folder: Path, where: tuple[Any, ...], value: Any
) -> None:
    """evals/example.yaml with one value (anywhere) replaced by anything of any type."""
    data = yaml.safe_load((REPO / "evals" / "example.yaml").read_text(encoding="utf-8"))
    node = data
    for part in where[:-1]:
        node = node[part]
    node[where[-1]] = value
    # The suite's own files (templates, the CSV) are where it expects them.
    (folder / "evals").mkdir(exist_ok=True)
    for sub in ("evals", "prompts"):
        for file in (REPO / sub).iterdir():
            target = folder / sub / file.name
            target.parent.mkdir(exist_ok=True)
            if file.is_file() and not target.exists():
                target.write_bytes(file.read_bytes())
    path = folder / "evals" / "fuzzed.yaml"
    path.write_text(_dump(data), encoding="utf-8", errors="surrogateescape")
    _check(path)


def _fuzzer() -> Any:
    spec = importlib.util.spec_from_file_location("fuzz_suites", REPO / "tests/fuzz/fuzz_suites.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_suites"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(sys.platform == "win32", reason="the fuzzer forks")
@pytest.mark.timeout(400)
def test_mutation_fuzzer_ci_run_is_clean() -> None:
    """50 mutated suites (fixed seed): every one ends cleanly on validate and a fake run."""
    report = _fuzzer().fuzz(50, seed=12, timeout=20.0)
    found = [f"[{kind}] {case.seed.name}: {case.mutation}" for kind, case, _ in report.findings]
    assert not found, "\n".join(found)
    assert report.tally["clean"] == 50
