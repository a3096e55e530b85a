"""Every kind of bad input ends the same way: exit 2, one `error:` line naming file, line and
field with a hint at the fix, and (for `run`) nothing written."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import CliResult, Project

SUITE = "evals/s.yaml"


@dataclass(frozen=True)
class Case:
    files: dict[str, str | bytes]
    expect: tuple[str, ...]  # substrings the error line must contain (file:line, field, hint)
    commands: tuple[str, ...] = ("validate", "run")
    args: tuple[str, ...] = ()
    prior_run: bool = False  # run the suite into the output folder first


def _params(setting: str) -> dict[str, str | bytes]:
    return {
        SUITE: f"""
        prompts:
          - "Hi"
        models: [fake://echo]
        params:
          {setting}
        """
    }


HI_ECHO = {SUITE: 'prompts:\n  - "Hi"\nmodels: [fake://echo]\n'}

CASES = [
    pytest.param(
        Case(
            {
                SUITE: """
                prompts:
                  - "Hi"
                models: [fake://echo
                tests: []
                """
            },
            ("evals/s.yaml:4:", "invalid YAML", "fix the syntax"),
        ),
        id="invalid-yaml",
    ),
    pytest.param(
        Case(
            {
                SUITE: """
                prompts:
                  - "Hi"
                models: [fake://echo]
                descripton: typo
                """
            },
            ("evals/s.yaml:4:", "unknown key 'descripton'", "did you mean 'description'?"),
        ),
        id="unknown-key-top-level",
    ),
    pytest.param(
        Case(
            {
                SUITE: """
                prompts:
                  - "Hi {{ name }}"
                models: [fake://echo]
                tests:
                  - varz: {name: Ada}
                """
            },
            ("evals/s.yaml:5:", "tests[0]", "unknown key 'varz'", "did you mean 'vars'?"),
        ),
        id="unknown-key-in-test",
    ),
    pytest.param(
        Case(
            {
                SUITE: """
                prompts:
                  - "Hi {{ name }}"
                models: [fake://echo]
                tests:
                  - vars: {name: Ada}
                    assert:
                      - type: icontains
                        valeu: Ada
                """
            },
            (
                "evals/s.yaml:8:",
                "tests[0].assert[0]",
                "unknown key 'valeu'",
                "did you mean 'value'?",
            ),
        ),
        id="unknown-key-in-assert",
    ),
    pytest.param(
        Case(
            {
                SUITE: """
                prompts:
                  - "Hi"
                models: [fake://echo]
                prompts:
                  - "Bye"
                """
            },
            (
                "evals/s.yaml:4:",
                "duplicate key 'prompts'",
                "first defined on line 1",
                "remove or merge",
            ),
        ),
        id="duplicate-key",
    ),
    pytest.param(
        Case({SUITE: ""}, ("evals/s.yaml:", "suite file is empty", "promptlab init")),
        id="empty-file",
    ),
    pytest.param(
        Case(
            {SUITE: "- a\n- b\n"},
            ("evals/s.yaml:1:", "must be a mapping", "got list", "prompts:"),
        ),
        id="top-level-list",
    ),
    pytest.param(
        Case(
            {SUITE: "just some text\n"},
            ("evals/s.yaml:1:", "must be a mapping", "got str", "prompts:"),
        ),
        id="top-level-scalar",
    ),
    pytest.param(
        Case(
            {
                SUITE: """
                prompts:
                  - file://../prompts/nope.j2
                models: [fake://echo]
                """
            },
            ("evals/s.yaml:2:", "prompts[0]", "nope.j2 not found", "check the path"),
        ),
        id="missing-template-file",
    ),
    pytest.param(
        Case(
            {
                SUITE: """
                prompts:
                  - "Hi"
                models: [fake://echo]
                tests:
                  - file://nope.csv
                """
            },
            ("evals/s.yaml:5:", "tests[0]", "nope.csv not found", "check the path"),
        ),
        id="missing-test-file",
    ),
    pytest.param(
        Case(
            {
                SUITE: """
                prompts:
                  - file://../prompts/bin.j2
                models: [fake://echo]
                """,
                "prompts/bin.j2": b"Hi \x00\x01\x02 {{ name }}",
            },
            ("prompts/bin.j2", "binary file", "point at a text file"),
        ),
        id="binary-template",
    ),
    pytest.param(
        Case(
            {
                SUITE: """
                prompts:
                  - file://../prompts/t.j2
                models: [fake://echo]
                tests:
                  - vars: {name: Ada}
                """,
                "prompts/t.j2": """
                Line one.
                Line two, {{ name }}.
                Line three, {{ name ) }}.
                """,
            },
            ("prompts/t.j2:3:", "Jinja syntax error", "fix the template syntax"),
        ),
        id="jinja-syntax-error-file",
    ),
    pytest.param(
        Case(
            {
                SUITE: """
                prompts:
                  - raw: "Hi {{ name"
                    label: broken
                models: [fake://echo]
                """
            },
            ("evals/s.yaml:2:", "prompts[0]", "Jinja syntax error", "fix the template syntax"),
        ),
        id="jinja-syntax-error-inline",
    ),
    pytest.param(
        Case(
            {
                SUITE: """
                prompts:
                  - "Hi {{ nmae }}"
                models: [fake://echo]
                tests:
                  - vars: {name: Ada}
                """
            },
            ("evals/s.yaml:5:", "'nmae' is undefined", "define the variable in vars:"),
        ),
        id="undefined-template-variable",
    ),
    pytest.param(
        Case(
            {
                SUITE: """
                prompts:
                  - "Hi"
                models: [fake://echo]
                tests:
                  - assert:
                      - type: icontain
                        value: hi
                """
            },
            (
                "evals/s.yaml:6:",
                "tests[0].assert[0]",
                "unknown assertion type 'icontain'",
                "did you mean 'icontains'?",
            ),
        ),
        id="unknown-assertion-type",
    ),
    pytest.param(
        Case(
            {
                SUITE: """
                prompts:
                  - "Hi"
                models: [fake://echo]
                defaultTest:
                  assert:
                    - type: javascript
                      value: output.length > 3
                """
            },
            (
                "evals/s.yaml:6:",
                "defaultTest.assert[0]",
                "'javascript' is not supported",
                "use type: python",
            ),
        ),
        id="unsupported-promptfoo-assertion",
    ),
    pytest.param(
        Case(
            {
                SUITE: """
                prompts:
                  - "Hi"
                models: [fake://echo]
                tests:
                  - assert:
                      - type: regex
                        value: '(unclosed'
                """
            },
            ("evals/s.yaml:6:", "invalid regex '(unclosed'", "fix the pattern"),
        ),
        id="invalid-regex",
    ),
    pytest.param(
        Case(
            {SUITE: "prompts: []\nmodels: [fake://echo]\n"},
            ("evals/s.yaml:1:", "prompts", "add at least one prompt"),
        ),
        id="empty-prompts",
    ),
    pytest.param(
        Case(
            {SUITE: "description: no prompts here\nmodels: [fake://echo]\n"},
            ("evals/s.yaml:1:", "prompts", "missing required key", "add prompts:"),
        ),
        id="missing-prompts",
    ),
    pytest.param(
        Case(
            _params("temperature: -1"),
            ("evals/s.yaml:5:", "params.temperature", "greater than or equal to 0"),
        ),
        id="temperature-negative",
    ),
    pytest.param(
        Case(
            _params("top_p: 0"),
            ("evals/s.yaml:5:", "params.top_p", "greater than or equal to 0.000001"),
        ),
        id="top-p-zero",
    ),
    pytest.param(
        Case(
            _params("top_p: 1.5"),
            ("evals/s.yaml:5:", "params.top_p", "less than or equal to 1"),
        ),
        id="top-p-above-one",
    ),
    pytest.param(
        Case(
            _params("max_tokens: 0"),
            ("evals/s.yaml:5:", "params.max_tokens", "greater than or equal to 1"),
        ),
        id="max-tokens-zero",
    ),
    pytest.param(
        Case(
            {
                SUITE: """
                prompts:
                  - "Hi"
                models:
                  - path: fake://echo
                    n_ctx: 64
                    n_batch: 64
                params:
                  max_tokens: 64
                """
            },
            ("evals/s.yaml:8:", "max_tokens (64)", "n_ctx (64)", "lower max_tokens"),
        ),
        id="max-tokens-not-below-n-ctx",
    ),
    pytest.param(
        Case(
            {
                SUITE: """
                prompts:
                  - "Hi"
                models:
                  - path: fake://echo
                    n_ctx: 128
                    n_batch: 256
                """
            },
            ("evals/s.yaml:4:", "models[0]", "n_batch (256)", "lower n_batch"),
        ),
        id="n-batch-above-n-ctx",
    ),
    pytest.param(
        Case(_params("seed: -1"), ("evals/s.yaml:5:", "params.seed", "greater than or equal to 0")),
        id="seed-negative",
    ),
    pytest.param(
        Case(
            _params("repeat_penalty: 0"),
            ("evals/s.yaml:5:", "params.repeat_penalty", "greater than or equal to 0.01"),
        ),
        id="repeat-penalty-zero",
    ),
    pytest.param(
        Case(_params('stop: [""]'), ("evals/s.yaml:5:", "params.stop", "empty", "remove")),
        id="empty-stop-string",
    ),
    pytest.param(
        Case(
            {
                SUITE: """
                prompts:
                  - "Hi"
                models:
                  - ./nope.gguf
                """
            },
            ("evals/s.yaml:4:", "models[0]", "nope.gguf not found", "bundled alias"),
        ),
        id="model-missing",
    ),
    pytest.param(
        Case(
            {
                SUITE: """
                prompts:
                  - "Hi"
                models:
                  - x.gguf
                """,
                "evals/x.gguf": "this is text, not a model\n",
            },
            ("evals/s.yaml:4:", "models[0]", "is not a GGUF model file", "convert"),
        ),
        id="model-not-gguf",
    ),
    pytest.param(
        Case(
            {
                SUITE: """
                prompts:
                  - "The capital of {{ country }} is {{ city }}?"
                models: [fake://echo]
                tests: file://t.csv
                """,
                "evals/t.csv": "country\nFrance\n",
            },
            ("evals/t.csv:2:", "don't provide 'city'", "add a column named city"),
        ),
        id="csv-missing-column",
    ),
    pytest.param(
        Case(
            {
                SUITE: """
                prompts:
                  - file://../prompts/chat.yaml
                models: [fake://echo]
                tests: file://t.csv
                """,
                "prompts/chat.yaml": """
                - role: system
                  content: Answer in one word.
                - role: user
                  content: "Capital of {{ country }}, near {{ city }}?"
                """,
                "evals/t.csv": "country\nFrance\n",
            },
            ("evals/t.csv:2:", "don't provide 'city'", "add a column named city"),
        ),
        id="csv-missing-column-chat-file",
    ),
    pytest.param(
        Case(
            {
                SUITE: """
                prompts:
                  - file://../prompts/t.j2
                models: [fake://echo]
                """,
                "prompts/t.j2": "Read this:\n{% include '../../etc/passwd' %}\n",
            },
            ("prompts/t.j2:2", "outside the project", "move it inside the project"),
        ),
        id="include-outside-project-relative",
    ),
    pytest.param(
        Case(
            {
                SUITE: """
                prompts:
                  - "{% include '/etc/passwd' %}"
                models: [fake://echo]
                """
            },
            ("evals/s.yaml:", "'/etc/passwd' is outside the project", "move it inside"),
        ),
        id="include-absolute-path",
    ),
    pytest.param(
        Case(
            {
                SUITE: """
                prompts:
                  - "{{ ''.__class__.__mro__ }}"
                models: [fake://echo]
                """
            },
            ("evals/s.yaml:", "refused", "not Python internals"),
        ),
        id="python-internals",
    ),
    pytest.param(
        Case(
            {
                SUITE: """
                prompts:
                  - "{% user %}Hi{% enduser %}"
                models: [fake://echo]
                """
            },
            ("evals/s.yaml:2:", "prompts[0]", "has chat roles", "set chat_template:"),
        ),
        id="chat-roles-without-chat-template",
    ),
    pytest.param(
        Case(
            HI_ECHO,
            ("--filter", "invalid regex '('", "fix the pattern"),
            commands=("render", "run"),
            args=("--filter", "("),
        ),
        id="filter-invalid-regex",
    ),
    pytest.param(
        Case(
            HI_ECHO,
            ("--limit", "at least 1", "got 0"),
            commands=("render", "run"),
            args=("--limit", "0"),
        ),
        id="limit-zero",
    ),
    pytest.param(
        Case(
            HI_ECHO,
            ("-o ", "already holds a run", "choose another folder"),
            commands=("run",),
            prior_run=True,
        ),
        id="output-folder-holds-a-run",
    ),
]


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _assert_one_error_line(result: CliResult, expect: tuple[str, ...]) -> str:
    assert result.code == 2, (result.code, result.err)
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    line = lines[0]
    assert line.startswith("error: "), line
    for piece in expect:
        assert piece in line, f"{piece!r} not in {line!r}"
    return line


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_one_line(
    case: Case, project: Project, cli: Callable[..., CliResult]
) -> None:
    for rel, text in case.files.items():
        project.write(rel, text)
    out = project.root / "out"
    before: dict[str, bytes] = {}
    if case.prior_run:
        first = cli("run", SUITE, "-o", out)
        assert first.code == 0, first.err
        before = _tree(out)
        assert "results.jsonl" in before
    for command in case.commands:
        argv: list[str | Path] = [command, SUITE, *case.args]
        if command == "run":
            argv += ["-o", out]
        result = cli(*argv)
        _assert_one_error_line(result, case.expect)
        if command == "run":
            assert not (project.root / "results").exists()
            if case.prior_run:
                assert _tree(out) == before  # the earlier run is untouched
            else:
                assert not out.exists()


def test_planning_problems_are_reported_all_at_once(
    project: Project, cli: Callable[..., CliResult]
) -> None:
    # Problems found while rendering (undefined variables, chat roles on a model without a
    # chat template) come together, one line each, like the loader's; nothing is written.
    suite = project.write(
        "evals/s.yaml",
        'prompts: ["hi {{ x }}", "yo {{ y }}",'
        " [{role: system, content: s}, {role: user, content: u}]]\n"
        "models: [fake://echo]\n"
        "tests:\n  - vars: {x: 1}\n  - vars: {y: 2}\n",
    )
    for command in ("validate", "run"):
        result = cli(command, suite)
        lines = result.err.strip().splitlines()
        assert result.code == 2, result.err
        assert len(lines) == 4, lines
        assert sum("'y' is undefined" in line for line in lines) == 1, lines
        assert sum("'x' is undefined" in line for line in lines) == 1, lines
        # The same problem in two cells (two tests of the chat prompt) is said once.
        assert sum("has chat roles" in line for line in lines) == 1, lines
        assert lines[-1] == "error: 3 problems in s.yaml"
        assert "Traceback" not in result.err
    assert not (project.root / "evals" / "results").exists()
    assert not (project.root / "results").exists()
