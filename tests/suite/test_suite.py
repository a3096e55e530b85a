"""Loading suites: promptfoo's vocabulary, test files, vars, defaults, models and the schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from conftest import Project

from promptlab import core
from promptlab.errors import InputError
from promptlab.plan import Cell, build_plan
from promptlab.suite import LoadedSuite, load_suite

REPO = Path(__file__).resolve().parents[2]
SUITE = "evals/s.yaml"
# A chat template for fake models, so chat prompts can be planned without a GGUF.
CHAT = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"


def load(project: Project, text: str, model: str | None = None) -> LoadedSuite:
    project.write(SUITE, text)
    return load_suite(project.root / SUITE, model_override=model)


def cells(suite: LoadedSuite) -> list[Cell]:
    return build_plan(suite).cells


# --- prompts -------------------------------------------------------------------------------


def test_prompt_forms(project: Project) -> None:
    project.write("prompts/plain.j2", "Q: {{ q }}\nA:")
    project.write("prompts/other.j2", "Other {{ q }}")
    suite = load(
        project,
        """
        prompts:
          - "Inline {{ q }}"
          - file://../prompts/plain.j2
          - id: file://../prompts/other.j2
            label: labelled_file
          - raw: "Raw {{ q }}"
            label: labelled_raw
          - id: "Id text {{ q }}"
            label: labelled_id_text
        models: [fake://echo]
        tests:
          - vars: {q: x}
        """,
    )
    got = [(p.label, p.source, p.kind) for p in suite.prompts]
    assert got == [
        ("Inline {{ q }}", "inline", "text"),
        ("plain", "prompts/plain.j2", "text"),
        ("labelled_file", "prompts/other.j2", "text"),
        ("labelled_raw", "inline", "text"),
        ("labelled_id_text", "inline", "text"),
    ]
    assert [c.text for c in cells(suite)] == [
        "Inline x",
        "Q: x\nA:",
        "Other x",
        "Raw x",
        "Id text x",
    ]
    assert {"evals/s.yaml", "prompts/plain.j2", "prompts/other.j2"} <= set(suite.files)


def test_prompts_as_a_single_string(project: Project) -> None:
    suite = load(project, "prompts: 'Only {{ q }}'\nmodels: [fake://echo]\nvars: {q: one}\n")
    assert [c.text for c in cells(suite)] == ["Only one"]


def test_long_inline_label_is_shortened(project: Project) -> None:
    suite = load(project, f"prompts: ['{'word ' * 20}']\nmodels: [fake://echo]\n")
    assert len(suite.prompts[0].label) == 40
    assert suite.prompts[0].label.endswith("…")


def test_duplicate_prompt_labels_are_refused(project: Project) -> None:
    with pytest.raises(InputError, match="two prompts are labelled 'same'"):
        load(
            project,
            """
            prompts:
              - {raw: a, label: same}
              - {raw: b, label: same}
            models: [fake://echo]
            """,
        )


def test_prompt_mapping_without_source_is_refused(project: Project) -> None:
    with pytest.raises(InputError, match=r"s\.yaml:2: prompts\[0\]: .*needs `raw:`"):
        load(project, "prompts:\n  - label: nothing\nmodels: [fake://echo]\n")


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_chat_message_list_prompt_file(project: Project, suffix: str) -> None:
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of {{ country }}?"},
        {"role": "assistant", "content": "{{ example }}"},
        {"role": "user", "content": "And {{ other }}?"},
    ]
    text = yaml.safe_dump(chat) if suffix == ".yaml" else json.dumps(chat)
    project.write(f"prompts/chat{suffix}", text)
    suite = load(
        project,
        f"""
        prompts: [file://../prompts/chat{suffix}]
        models:
          - path: fake://echo
            chat_template: "{CHAT}"
        tests:
          - vars: {{country: France, example: Paris, other: Spain}}
        """,
    )
    (prompt,) = suite.prompts
    assert prompt.kind == "messages"
    assert prompt.label == "chat"
    assert [role for role, _ in prompt.parts] == ["system", "user", "assistant", "user"]
    assert prompt.variables == {"country", "example", "other"}
    (cell,) = cells(suite)
    assert [m.as_dict() for m in cell.messages] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris"},
        {"role": "user", "content": "And Spain?"},
    ]
    assert cell.chat_applied
    assert cell.text == (
        "<system>Be brief.<user>Capital of France?<assistant>Paris<user>And Spain?<assistant>"
    )


def test_chat_message_list_rejects_unknown_role(project: Project) -> None:
    project.write("prompts/chat.yaml", "- role: user\n  content: hi\n- role: robot\n  content: x\n")
    with pytest.raises(InputError, match=r"chat\.yaml:3: \[1\]: unknown role 'robot'"):
        load(project, "prompts: [file://../prompts/chat.yaml]\nmodels: [fake://echo]\n")


# --- vars, defaultTest and tests -----------------------------------------------------------


def test_vars_and_default_test_merge_into_every_test(project: Project) -> None:
    suite = load(
        project,
        """
        prompts: ["{{ a }} {{ b }} {{ c }}"]
        models: [fake://echo]
        vars: {a: suite, b: suite, c: suite}
        defaultTest:
          vars: {b: default, c: default}
          assert:
            - type: contains
              value: "{{ a }}"
        tests:
          - description: first
            vars: {c: test}
            assert:
              - type: icontains
                value: x
          - description: second
        """,
    )
    first, second = suite.tests
    assert first.vars == {"a": "suite", "b": "default", "c": "test"}
    assert second.vars == {"a": "suite", "b": "default", "c": "default"}
    assert [c.type for c in first.checks] == ["contains", "icontains"]
    assert [c.type for c in second.checks] == ["contains"]
    assert [c.text for c in cells(suite)] == ["suite default test", "suite default default"]
    assert [t.name for t in suite.tests] == ["first", "second"]


def _test_files(project: Project) -> None:
    project.write("evals/t.csv", "q,__expected\ncsv1,contains: csv1\ncsv2,contains: csv2\n")
    project.write(
        "evals/t.jsonl",
        '{"vars": {"q": "jsonl1"}}\n\n{"vars": {"q": "jsonl2"}, "description": "J2"}\n',
    )
    project.write(
        "evals/t.yaml",
        """
        - vars: {q: yaml1}
          assert:
            - type: equals
              value: yaml1
        """,
    )


def test_tests_from_csv_string(project: Project) -> None:
    _test_files(project)
    suite = load(project, "prompts: ['{{ q }}']\nmodels: [fake://echo]\ntests: file://t.csv\n")
    assert [t.vars["q"] for t in suite.tests] == ["csv1", "csv2"]
    assert [t.index for t in suite.tests] == [0, 1]
    assert suite.tests[1].where.endswith("t.csv:3")
    assert "evals/t.csv" in suite.files


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("file://t.jsonl", ["jsonl1", "jsonl2"]),
        ("file://t.yaml", ["yaml1"]),
        ("file://t.*", ["csv1", "csv2", "jsonl1", "jsonl2", "yaml1"]),  # sorted by name
    ],
    ids=["jsonl", "yaml", "glob"],
)
def test_tests_from_files(project: Project, ref: str, expected: list[str]) -> None:
    _test_files(project)
    suite = load(project, f"prompts: ['{{{{ q }}}}']\nmodels: [fake://echo]\ntests: [{ref}]\n")
    assert [t.vars["q"] for t in suite.tests] == expected


def test_tests_mix_inline_and_files(project: Project) -> None:
    _test_files(project)
    suite = load(
        project,
        """
        prompts: ["{{ q }}"]
        models: [fake://echo]
        tests:
          - vars: {q: inline1}
          - file://t.jsonl
          - vars: {q: inline2}
          - file://t.yaml
        """,
    )
    assert [t.vars["q"] for t in suite.tests] == ["inline1", "jsonl1", "jsonl2", "inline2", "yaml1"]
    assert [t.index for t in suite.tests] == [0, 1, 2, 3, 4]
    assert suite.tests[2].name == "J2"
    assert [c.type for c in suite.tests[4].checks] == ["equals"]


def test_glob_matching_nothing_is_refused(project: Project) -> None:
    with pytest.raises(InputError, match=r"no files match nothing\*\.csv"):
        load(project, "prompts: [hi]\nmodels: [fake://echo]\ntests: [file://nothing*.csv]\n")


def test_csv_special_columns(project: Project) -> None:
    project.write(
        "evals/t.csv",
        "q,__expected,__expected1,__expected2,__description\n"
        'a,Paris,"contains-any: x, y",is-json,first row\n'
        "b,not-icontains: Rome,regex: ^b$,,\n"
        "c,,,,\n",
    )
    suite = load(project, "prompts: ['{{ q }}']\nmodels: [fake://echo]\ntests: file://t.csv\n")
    a, b, c = suite.tests
    assert a.description == "first row"
    assert b.description is None  # empty cell → no description
    assert [(k.type, k.value) for k in a.checks] == [
        ("equals", "Paris"),  # a plain value means equals
        ("contains-any", "x, y"),
        ("is-json", None),  # bare name
    ]
    assert [(k.type, k.value) for k in b.checks] == [
        ("not-icontains", "Rome"),
        ("regex", "^b$"),
    ]
    assert c.checks == []
    assert a.vars == {"q": "a"}  # special columns are not variables
    prepared = {cell.test.index: cell.checks for cell in cells(suite)}
    assert prepared[0][1].value == ["x", "y"]  # contains-any splits on commas
    assert a.checks[0].where.endswith("t.csv:2: __expected")


def test_csv_value_that_only_looks_like_a_type_is_equals(project: Project) -> None:
    project.write("evals/t.csv", "q,__expected\na,note: this is plain text\n")
    suite = load(project, "prompts: ['{{ q }}']\nmodels: [fake://echo]\ntests: file://t.csv\n")
    assert [(k.type, k.value) for k in suite.tests[0].checks] == [
        ("equals", "note: this is plain text")
    ]


def test_csv_unknown_special_column_is_refused(project: Project) -> None:
    project.write("evals/t.csv", "q,__expectd\na,b\n")
    with pytest.raises(InputError, match=r"t\.csv:1: unsupported column '__expectd'.*__expected"):
        load(project, "prompts: ['{{ q }}']\nmodels: [fake://echo]\ntests: file://t.csv\n")


def test_providers_accepted_with_a_note(project: Project) -> None:
    suite = load(
        project,
        """
        prompts: [hi]
        providers:
          - openai:gpt-4o
        models: [fake://echo]
        """,
    )
    (note,) = suite.notes
    assert "s.yaml:2" in note
    assert "providers: is ignored" in note


def test_var_values_from_files(project: Project) -> None:
    project.write("evals/ctx.txt", "Some context.\n")
    project.write("evals/data.json", '{"k": [1, 2]}')
    suite = load(
        project,
        """
        prompts: ["{{ text }}|{{ data.k[1] }}"]
        models: [fake://echo]
        tests:
          - vars:
              text: file://ctx.txt
              data: file://data.json
        """,
    )
    assert suite.tests[0].vars == {"text": "Some context.\n", "data": {"k": [1, 2]}}
    assert [c.text for c in cells(suite)] == ["Some context.\n|2"]
    assert {"evals/ctx.txt", "evals/data.json"} <= set(suite.files)


def test_python_check_and_transform_files_are_the_suites_files(project: Project) -> None:
    """Every place a Python file can be named counts it among the suite's files (the manifest's,
    so --resume and --watch see it change); it is read, not run, so no consent is needed to
    load, and a file that is missing is left to the planner to report."""
    for name in ("test", "check", "nested", "default", "csv", "step"):
        project.write(f"evals/{name}.py", f"def f(output, context):\n    return True  # {name}\n")
    project.write("evals/t.csv", "w,__expected\nhi,file://csv.py:f\n")
    suite = load(
        project,
        """
        prompts: ["Say {{ w }}"]
        models: [fake://echo]
        defaultTest:
          transform: file://default.py:f
        tests:
          - vars: {w: hi}
            transform: [strip, " file://step.py:f"]
            assert:
              - {type: python, value: "file://test.py:f", transform: file://check.py:f}
              - type: assert-set
                assert: [{type: python, value: "file://nested.py:f"}]
              - {type: python, value: "file://missing.py:f"}
              - {type: python, value: "'file://inline.py' in output"}
          - file://t.csv
        """,
    )
    names = {"test", "check", "nested", "default", "csv", "step"}
    assert set(suite.files) == {SUITE, "evals/t.csv"} | {f"evals/{n}.py" for n in names}
    with pytest.raises(InputError, match=r"missing\.py"):
        build_plan(suite)


def test_var_file_outside_project_is_refused(project: Project) -> None:
    (project.root.parent / "secret.txt").write_text("x")
    with pytest.raises(InputError, match="outside the project"):
        load(
            project,
            "prompts: ['{{ s }}']\nmodels: [fake://echo]\nvars: {s: file://../../secret.txt}\n",
        )


def test_assert_values_are_rendered_per_test(project: Project) -> None:
    suite = load(
        project,
        """
        prompts: ["Capital of {{ country }}?"]
        models: [fake://echo]
        defaultTest:
          assert:
            - type: icontains
              value: "{{ answer }}"
            - type: contains-all
              value: ["{{ country }}", "of"]
        tests:
          - vars: {country: France, answer: Paris}
          - vars: {country: Japan, answer: Tokyo}
        """,
    )
    assert suite.tests[0].checks[0].value == "{{ answer }}"  # rendered at plan time
    got = [[(k.type, k.value) for k in cell.checks] for cell in cells(suite)]
    assert got == [
        [("icontains", "Paris"), ("contains-all", ["France", "of"])],
        [("icontains", "Tokyo"), ("contains-all", ["Japan", "of"])],
    ]


def test_no_tests_runs_each_prompt_once(project: Project) -> None:
    suite = load(project, "prompts: [one, two]\nmodels: [fake://echo]\n")
    assert len(suite.tests) == 1
    assert suite.tests[0].vars == {}
    assert [(c.prompt.label, c.text) for c in cells(suite)] == [("one", "one"), ("two", "two")]


def test_invalid_var_name_is_refused(project: Project) -> None:
    with pytest.raises(InputError, match="variable name 'bad-name' is not a valid identifier"):
        load(project, "prompts: [hi]\nmodels: [fake://echo]\ntests:\n  - vars: {bad-name: 1}\n")


# --- models and --model --------------------------------------------------------------------


MODELS = """
prompts: [hi]
models:
  - fake://echo
  - path: fake://reply?text=Paris
    label: paris
"""


def test_models_labels(project: Project) -> None:
    suite = load(project, MODELS)
    assert [(m.label, m.spec.path) for m in suite.models] == [
        ("echo", "fake://echo"),  # a path's label is its stem
        ("paris", "fake://reply?text=Paris"),
    ]


def test_default_model_is_bundled_smollm2(project: Project) -> None:
    suite = load(project, "prompts: [hi]\n")
    assert [(m.label, m.spec.path) for m in suite.models] == [("smollm2", "smollm2")]


def test_model_override_picks_a_suite_model_by_label(project: Project) -> None:
    suite = load(project, MODELS, model="paris")
    assert [(m.label, m.spec.path) for m in suite.models] == [("paris", "fake://reply?text=Paris")]


@pytest.mark.parametrize(
    ("override", "label"),
    [("gemma3", "gemma3"), ("models/tiny.gguf", "tiny"), ("fake://echo?x=1", "echo?x=1")],
)
def test_model_override_takes_an_alias_or_path(project: Project, override: str, label: str) -> None:
    suite = load(project, MODELS, model=override)
    (model,) = suite.models
    assert (model.label, model.spec.path, model.where) == (label, override, "--model")


def test_duplicate_model_labels_are_refused(project: Project) -> None:
    with pytest.raises(InputError, match="two models are labelled 'x'"):
        load(
            project,
            "prompts: [hi]\nmodels:\n  - {path: fake://echo, label: x}\n  - {path: fake://reply, label: x}\n",
        )


# --- the JSON schema -----------------------------------------------------------------------


def _schema() -> dict[str, Any]:
    data = json.loads((REPO / "promptlab/schema/suite.schema.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_shipped_schema_is_in_sync() -> None:
    # If this fails, regenerate: promptlab schema > promptlab/schema/suite.schema.json
    assert _schema() == core.suite_schema()


@pytest.mark.parametrize(
    "suite_file", ["evals/example.yaml", "promptlab/scaffold/evals/starter.yaml"]
)
def test_schema_validates_shipped_suites(suite_file: str) -> None:
    data = yaml.safe_load((REPO / suite_file).read_text(encoding="utf-8"))
    jsonschema.validate(data, _schema())


@pytest.mark.parametrize(
    "bad",
    [
        {"prompts": ["hi"], "promtps": ["typo"]},
        {"prompts": ["hi"], "tests": [{"vars": {}, "assert": [{"type": "equals", "valeu": 1}]}]},
        {"prompts": ["hi"], "params": {"temperature": -1}},
    ],
    ids=["unknown-top-level-key", "unknown-assert-key", "out-of-range"],
)
def test_schema_rejects_bad_suites(bad: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, _schema())


def test_example_suite_loads() -> None:
    suite = load_suite(REPO / "evals/example.yaml", model_override="fake://echo")
    assert [p.label for p in suite.prompts] == ["plain", "chat_system", "few_shot"]
    assert len(suite.tests) == 8  # six CSV rows and two inline tests
    assert all(t.checks[0].type == "not-icontains" for t in suite.tests)
