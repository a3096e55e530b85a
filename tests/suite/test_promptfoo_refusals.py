"""Issue 12: every problem of a suite at once, --skip-unsupported, stray top-level keys,
promptfoo's echo provider and evaluateOptions.repeat."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import CliResult, Project

from promptlab.errors import InputError, Problems, Unsupported
from promptlab.suite import load_suite

Cli = Callable[..., CliResult]

TWO_UNSUPPORTED = """
prompts:
  - "Say {{word}}"
models: [fake://echo]
defaultTest:
  assert:
    - type: cost
      threshold: 0.01
tests:
  - vars: {word: hi}
    assert:
      - type: icontains
        value: say hi
      - type: javascript
        value: output.length > 1
  - vars: {word: there}
    providerOutput: fixed
"""


def _errors(result: CliResult) -> list[str]:
    return [" ".join(line.split()) for line in result.err.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("command", ["validate", "run"])
def test_every_problem_is_reported_at_once(project: Project, cli: Cli, command: str) -> None:
    project.write("evals/s.yaml", TWO_UNSUPPORTED)
    out = ["-o", project.root / "out"] if command == "run" else []
    result = cli(command, "evals/s.yaml", *out)
    assert result.code == 2, result.err
    errors = _errors(result)
    assert len(errors) == 4, result.err
    assert "evals/s.yaml:6: defaultTest.assert[0]: assertion type 'cost'" in errors[0]
    assert "evals/s.yaml:13: tests[0].assert[1]: assertion type 'javascript'" in errors[1]
    assert "evals/s.yaml:16: tests[1]: promptfoo's 'providerOutput'" in errors[2]
    assert errors[3].startswith("error: 3 problems in s.yaml"), errors[3]
    assert "--skip-unsupported" in errors[3]
    assert not (project.root / "out").exists()


def test_problems_of_several_kinds_and_files(project: Project) -> None:
    project.write("evals/tests.yaml", "- vars: {word: a}\n  asert: []\n- vars: {word: b}\n")
    path = project.write(
        "evals/s.yaml",
        """
        prompts: ["Say {{word}}", "file://missing.txt"]
        models: [{path: fake://echo, n_ctxx: 10, label: a, labl: b}]
        tests:
          - file://tests.yaml
          - vars: {word: c}
            assert: [{type: icontain, value: x}]
        """,
    )
    with pytest.raises(Problems) as exc:
        load_suite(path)
    lines = exc.value.lines()
    text = "\n".join(lines)
    # two unknown keys of one mapping are both named, each with its own suggestion
    assert "models[0]: unknown key 'n_ctxx'; did you mean 'n_ctx'?" in text
    assert "models[0]: unknown key 'labl'; did you mean 'label'?" in text
    assert "missing.txt" in text
    assert "evals/tests.yaml:2: [0]: unknown key 'asert'; did you mean 'assert'?" in text
    assert "tests[1].assert[0]: unknown assertion type 'icontain'" in text
    assert lines[-1] == f"{len(lines) - 1} problems in s.yaml"  # nothing unsupported: no hint
    assert all(isinstance(p, InputError) for p in exc.value.problems)


def test_one_problem_reads_as_before_and_points_at_the_flag(project: Project, cli: Cli) -> None:
    project.write(
        "evals/s.yaml",
        'prompts: ["Hi"]\nmodels: [fake://echo]\ntests:\n  - assert: [{type: cost}]\n',
    )
    result = cli("validate", "evals/s.yaml")
    assert result.code == 2
    (error,) = _errors(result)
    assert error.startswith("error: evals/s.yaml:4: tests[0].assert[0]: assertion type 'cost'")
    assert error.endswith("or leave it out and run the rest with --skip-unsupported"), error
    project.write("evals/t.yaml", 'prompts: ["Hi"]\nmodles: [fake://echo]\n')
    result = cli("validate", "evals/t.yaml")
    assert _errors(result) == [
        "error: evals/t.yaml:2: top level: unknown key 'modles'; did you mean 'models'?"
    ]


def test_skip_unsupported_runs_the_rest_and_says_so(project: Project, cli: Cli) -> None:
    path = Path("evals/s.yaml")
    project.write(str(path), TWO_UNSUPPORTED)
    preview = cli("validate", path, "--skip-unsupported")
    assert preview.code == 0, preview.err
    assert "1 prompt(s) × 1 test(s)" in preview.out
    assert "2 checks, 1 test would be skipped" in " ".join(preview.out.split())
    result = cli("run", path, "--skip-unsupported", "-o", project.root / "out")
    assert result.code == 0, result.err
    err = " ".join(result.err.split())
    assert "evals/s.yaml:6: defaultTest.assert[0]: check left out (--skip-unsupported)" in err
    assert "evals/s.yaml:13: tests[0].assert[1]: check left out" in err
    assert "evals/s.yaml:15: tests[1]: test left out" in err
    assert "2 checks, 1 test skipped (--skip-unsupported): a partial run" in " ".join(
        result.out.split()
    )
    manifest = json.loads((project.root / "out" / "manifest.json").read_text())
    assert [(s["what"], s["where"]) for s in manifest["skipped"]] == [
        ("check", "evals/s.yaml:6: defaultTest.assert[0]"),
        ("check", "evals/s.yaml:13: tests[0].assert[1]"),
        ("test", "evals/s.yaml:15: tests[1]"),
    ]
    assert "local models cost nothing" in manifest["skipped"][0]["why"]
    assert manifest["run_args"]["skip_unsupported"] is True
    rows = [
        json.loads(x) for x in (project.root / "out" / "results.jsonl").read_text().splitlines()
    ]
    assert [c["type"] for c in rows[0]["checks"]] == ["icontains"]
    assert (
        "3 skipped (--skip-unsupported): a partial run"
        in (project.root / "out" / "report.html").read_text()
    )


def test_skip_unsupported_is_in_the_json_summary(project: Project, cli: Cli) -> None:
    path = Path("evals/s.yaml")
    project.write(str(path), TWO_UNSUPPORTED)
    out = project.root / "out"
    result = cli("run", path, "--skip-unsupported", "-o", out, "--format", "json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert [s["what"] for s in data["skipped"]] == ["check", "check", "test"]
    full = cli("run", path, "-o", project.root / "o2", "--format", "json")
    assert full.code == 2  # without the flag it is refused, and there is no summary at all


def test_skip_unsupported_still_refuses_other_problems(project: Project) -> None:
    path = project.write(
        "evals/s.yaml",
        'prompts: ["Hi"]\nmodels: [fake://echo]\ntests:\n'
        "  - assert: [{type: cost}, {type: regex, valu: x}]\n",
    )
    with pytest.raises(InputError, match="unknown key 'valu'") as exc:
        load_suite(path, skip_unsupported=True)
    assert not isinstance(exc.value, Unsupported)


def test_skip_unsupported_with_nothing_left_is_refused(project: Project) -> None:
    path = project.write(
        "evals/s.yaml",
        'prompts: ["Hi"]\nmodels: [fake://echo]\ndefaultTest:\n  options: {prefix: "x"}\n'
        "tests:\n  - vars: {a: b}\n",
    )
    with pytest.raises(InputError, match="left nothing to run"):
        load_suite(path, skip_unsupported=True)


def test_skip_unsupported_leaves_out_a_refused_top_level_key(project: Project) -> None:
    path = project.write(
        "evals/s.yaml",
        'prompts: ["Hi"]\nmodels: [fake://echo]\nscenarios: [{config: []}]\n',
    )
    suite = load_suite(path, skip_unsupported=True)
    assert suite.skipped[0]["what"] == "key 'scenarios'"
    assert any("key 'scenarios' left out (--skip-unsupported)" in n for n in suite.notes)


def test_a_javascript_transform_is_skippable(project: Project) -> None:
    path = project.write(
        "evals/s.yaml",
        """
        prompts: ["Hi"]
        models: [fake://echo]
        tests:
          - assert:
              - {type: equals, value: hi, transform: "JSON.parse(output).a"}
              - {type: icontains, value: hi, transform: "output.trim()"}
          - options: {transform: "output.split(',')"}
        """,
    )
    with pytest.raises(Problems, match="promptfoo's JavaScript transforms don't run here"):
        load_suite(path)
    suite = load_suite(path, skip_unsupported=True)
    assert [s["what"] for s in suite.skipped] == ["check", "test"]
    (test,) = suite.tests
    assert [c.type for c in test.checks] == ["icontains"]  # the built-in one-liner stays


def test_stray_top_level_keys(project: Project) -> None:
    path = project.write(
        "evals/s.yaml", 'prompts: ["Hi"]\nmodels: [fake://echo]\noutputs: [x.json]\n'
    )
    suite = load_suite(path)
    assert any(
        "evals/s.yaml:3: unknown top-level key 'outputs' is ignored" in n for n in suite.notes
    )
    wrong = project.write(
        "evals/t.yaml", 'prompts: ["Hi"]\nmodels: [fake://echo]\ntemperature: 1\n'
    )
    with pytest.raises(InputError, match="'temperature'; it belongs under params:"):
        load_suite(wrong)


def test_echo_provider_returns_the_rendered_prompt(project: Project, cli: Cli) -> None:
    path = project.write(
        "evals/s.yaml",
        """
        prompts: ["Say {{word}}"]
        providers: [echo]
        tests:
          - vars: {word: hi}
            assert: [{type: equals, value: Say hi}]
        """,
    )
    result = cli("run", path, "-o", project.root / "out")
    assert result.code == 0, result.err
    assert "providers: promptfoo's echo runs as the fake://echo model" in " ".join(
        result.err.split()
    )
    (row,) = [
        json.loads(x) for x in (project.root / "out" / "results.jsonl").read_text().splitlines()
    ]
    assert (row["model"], row["output"], row["status"]) == ("echo", "Say hi", "pass")


def test_echo_next_to_other_providers(project: Project) -> None:
    path = project.write(
        "evals/s.yaml",
        """
        prompts: ["Hi"]
        providers:
          - id: echo
            label: mirror
          - openai:gpt-4o-mini
        """,
    )
    suite = load_suite(path)
    assert [(m.label, m.spec.path) for m in suite.models] == [
        ("mirror", "fake://echo"),
        ("smollm2", "smollm2"),
    ]
    note = suite.notes[0]
    assert "echo runs as the fake://echo model" in note
    assert "openai:gpt-4o-mini is ignored, running the local model smollm2 in its place" in note
    # models: wins over providers:, echo included
    path.write_text(path.read_text() + "models: ['fake://reply?text=x']\n")
    suite = load_suite(path)
    assert [m.spec.path for m in suite.models] == ["fake://reply?text=x"]
    assert "providers: is ignored; running the local model" in suite.notes[0]


def test_evaluate_options_repeat_repeats_and_says_so(project: Project, cli: Cli) -> None:
    path = project.write(
        "evals/s.yaml",
        'prompts: ["Hi"]\nmodels: [fake://echo]\nevaluateOptions: {repeat: 3, maxConcurrency: 4}\n',
    )
    result = cli("validate", path)
    assert result.code == 0, result.err
    assert "= 3 cells" in result.out
    err = " ".join(result.err.split())
    assert "evaluateOptions.repeat: each cell runs 3 times" in err
    assert "promptfoo's evaluateOptions is ignored (evaluateOptions (maxConcurrency)" in err


def test_problems_error_keeps_one_line_for_str(tmp_path: Path) -> None:
    exc = Problems([InputError("a.yaml:1: x: bad"), Unsupported("a.yaml:2: y: cost")], "a.yaml")
    assert exc.lines() == [
        "a.yaml:1: x: bad",
        "a.yaml:2: y: cost",
        "2 problems in a.yaml; 1 unsupported: --skip-unsupported leaves it out and runs the rest",
    ]
    assert "\n" not in str(exc)
