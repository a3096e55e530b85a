"""promptfoo configs run unchanged on a local model.

tests/promptfoo_examples/ holds minimal adapted copies of promptfoo's own example configs (each
credits its source). Every one is validated and run with a fake model; those that use something
promptlab refuses (JavaScript, cost) must stop with exit 2 and a one-line message saying what to
use instead. The rest of this file pins the promptfoo features those configs rely on.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from conftest import CliResult, Project

from promptlab.errors import InputError
from promptlab.plan import build_plan
from promptlab.suite import LoadedSuite, load_suite

EXAMPLES = Path(__file__).parents[1] / "promptfoo_examples"
# Fake models have no chat template; message-list prompts get this one (their config is
# otherwise unchanged).
CHAT = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"

Cli = Callable[..., CliResult]


@dataclass(frozen=True)
class Example:
    config: str  # path under tests/promptfoo_examples
    reply: str | None  # what the fake model says; None: echo the prompt
    cells: int
    code: int | tuple[int, ...]  # `promptlab run`'s exit code (a tuple: any of them)
    allow_code: bool = False
    chat: bool = False

    @property
    def model(self) -> str:
        return "fake://echo" if self.reply is None else f"fake://reply?text={quote(self.reply)}"


RUNNABLE = [
    Example("getting-started/promptfooconfig.yaml", "Bonjour le monde! Dónde está la biblioteca?", 4, 0),
    Example("simple-csv/promptfooconfig.yaml", "Bonjour! Ahoy, where's the grub?", 4, 0),
    Example("eval-self-grading/promptfooconfig-csv.yaml", "Happy to help!", 4, (0, 100)),
    Example("python-assert/promptfooconfig-external.yaml", "banana pineapple guava", 3, 0, allow_code=True),
    Example("python-assert/promptfooconfig-inline.yaml", "I love bananas", 2, 100, allow_code=True),
    Example("csv-metadata/promptfooconfig.yaml", "An algorithm, quantum too", 2, (0, 100)),
    Example("eval-customer-support-rubric/promptfooconfig.yaml", None, 2, (0, 100)),
    Example("gemma-vs-llama/promptfooconfig.yaml", "  The mysterious figure approached the sea ice  ", 6, (0, 100)),
    Example("mistral-llama-comparison/promptfooconfig.yaml", None, 4, (0, 100)),
    Example("claude-vs-gpt/promptfooconfig-local.yaml", "An echo. Or fire!", 2, 0, chat=True),
    Example("ollama-comparison/promptfooconfig.yaml", "Doing well, thanks", 4, 0, chat=True),
    Example("docs-vars-arrays/promptfooconfig.yaml", "Hello world", 9, (0, 100)),
    Example("eval-bert-score/promptfooconfig-advanced.yaml", "An optimization algorithm that adjusts parameters to minimize error", 1, 0, allow_code=True),
    Example("docs-assert-set/promptfooconfig.yaml", "hello world", 2, 100),
    Example("simple-test/promptfooconfig-local.yaml", "Yarr", 10, 100, allow_code=True),
]  # fmt: skip

REFUSED = [
    ("eval-self-grading/promptfooconfig.yaml", ("defaultTest.assert[1]", "'javascript'", "use type: python")),
    ("simple-test/promptfooconfig.yaml", ("tests[3].assert[0]", "'javascript'", "use type: python")),
    # Both problems at once, each on its own line, then the count (issue 12).
    ("claude-vs-gpt/promptfooconfig.yaml", ("defaultTest.assert[0]", "'cost'", "latency", "defaultTest.assert[2]", "'javascript'", "2 problems in promptfooconfig.yaml", "--skip-unsupported")),
]  # fmt: skip


def _copy(project: Project, example: Example | str, chat: bool = False) -> tuple[Path, str | None]:
    """Copy an example's folder into the project; return the config and the --model to pass."""
    config = example if isinstance(example, str) else example.config
    folder = Path(config).parent
    shutil.copytree(EXAMPLES / folder, project.root / folder)
    path = project.root / config
    if isinstance(example, Example) and example.chat:
        # The only change: a fake model with a chat template, since fake models have none.
        path.write_text(
            path.read_text(encoding="utf-8")
            + f"\nmodels:\n  - path: {json.dumps(example.model)}\n    label: fake\n"
            f"    chat_template: {json.dumps(CHAT)}\n",
            encoding="utf-8",
        )
        return path, None
    return path, example.model if isinstance(example, Example) else None


def _rows(folder: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    return sorted(rows, key=lambda r: r["order"])  # suite order; the file is in run order


@pytest.mark.parametrize("example", RUNNABLE, ids=[e.config for e in RUNNABLE])
def test_example_validates_and_runs(project: Project, cli: Cli, example: Example) -> None:
    path, model = _copy(project, example)
    args = [
        *(["--model", model] if model else []),
        *(["--allow-code"] if example.allow_code else []),
    ]
    checked = cli("validate", path, *args)
    assert checked.code == 0, checked.err
    assert f"= {example.cells} cells" in " ".join(checked.out.split())
    if "providers:" in path.read_text(encoding="utf-8"):
        assert "providers: is ignored; running the local model" in " ".join(checked.err.split())
    ran = cli("run", path, "-o", project.root / "out", *args)
    codes = example.code if isinstance(example.code, tuple) else (example.code,)
    assert ran.code in codes, ran.err + ran.out
    rows = _rows(project.root / "out")
    assert len(rows) == example.cells
    # "unchecked": an output with no checks is not a pass (issue 12)
    ok = ("pass", "fail", "unchecked")
    assert all(row["status"] in ok for row in rows), [r["error"] for r in rows]
    assert (project.root / "out" / "report.html").is_file()


@pytest.mark.parametrize(("config", "expect"), REFUSED, ids=[c for c, _ in REFUSED])
def test_refused_example_exits_2_with_one_line(
    project: Project, cli: Cli, config: str, expect: tuple[str, ...]
) -> None:
    path, _ = _copy(project, config)
    for command in ("validate", "run"):
        out = ["-o", project.root / "out"] if command == "run" else []
        result = cli(command, path, "--model", "fake://echo", *out)
        assert result.code == 2, result.err
        lines = [line for line in result.err.splitlines() if line.strip()]
        errors = [" ".join(line.split()) for line in lines if line.startswith("error:")]
        assert errors and lines[-1].startswith("error:"), result.err
        error = " ".join(errors)
        for part in expect:
            assert part in error, error
    assert not (project.root / "out").exists()


@pytest.mark.model
def test_example_runs_unchanged_on_the_bundled_model(project: Project, cli: Cli) -> None:
    path, _ = _copy(project, "getting-started/promptfooconfig.yaml")
    result = cli("run", path, "-o", project.root / "out", "--filter", "Convert", "--limit", "1")
    assert result.code in (0, 100), result.err
    assert "running the local model smollm2 instead" in " ".join(result.err.split())
    (row,) = _rows(project.root / "out")
    assert row["model"] == "smollm2" and row["output"] and row["status"] in ("pass", "fail")


def test_python_checks_need_consent(project: Project, cli: Cli) -> None:
    path, _ = _copy(project, "python-assert/promptfooconfig-inline.yaml")
    checked = cli("validate", path, "--model", "fake://echo")  # parses the code, runs none of it
    assert checked.code == 0, checked.err
    assert "will refuse it until you consent" in " ".join(checked.err.split())
    result = cli("run", path, "--model", "fake://echo", "-o", project.root / "out")
    assert result.code == 2
    assert "--allow-code" in result.err and not (project.root / "out").exists()


# --- the second batch (issue 12): messages, CSV prompts, JSONL tests, echo, per-provider ------


@dataclass(frozen=True)
class Promptfoo:
    """One of promptfoo's examples, run as a promptfoo user would: `promptlab run CONFIG`, with
    no --model where the config's own providers say what runs (`echo`)."""

    config: str
    cells: int  # what promptlab runs
    promptfoo_cells: int  # what promptfoo runs for the same config
    notes: tuple[str, ...]  # parts of the notes `validate` prints (whitespace-normalized)
    model: str | None = None  # --model, when the config's providers are remote
    chat: bool = False  # give the fake model a chat template (the config has chat prompts)
    args: tuple[str, ...] = ()


REPLACED = "providers: is ignored; running the local model"
ECHO = "providers: promptfoo's echo runs as the fake://echo model"
SECOND = [
    # 5 CSV rows x 3 tests on promptfoo's echo; the JSON-list row stays text, as echo shows it.
    Promptfoo("csv-prompts/promptfooconfig.yaml", 15, 15, (ECHO, "prompts.csv:4): this prompt is a JSON chat message list written as text")),
    Promptfoo("jsonl-test-cases/promptfooconfig.yaml", 2, 2, (ECHO,)),
    # promptfoo runs all 3 prompts (prompt.js is a function it executes); promptlab refuses the
    # JavaScript and, with --skip-unsupported, runs the other two.
    Promptfoo("chat-messages-format/promptfooconfig.yaml", 4, 6, (ECHO, "prompts[2]: prompt left out (--skip-unsupported): content file://prompt.js is a prompt function"), args=("--skip-unsupported",)),
    # Remote providers become one local model: promptfoo's count is per provider.
    Promptfoo("compare-llama-vs-gpt/promptfooconfig.yaml", 8, 24, (REPLACED,), model="fake://reply?text=Hippos%20are%20not%20good%20swimmers", chat=True),
    Promptfoo("mmlu/promptfooconfig.yaml", 5, 15, (REPLACED,), model="fake://reply?text=1"),
    Promptfoo("phi-vs-llama/promptfooconfig.yaml", 3, 6, (REPLACED,), model="fake://reply?text=%F0%9F%8D%8C"),
    Promptfoo("gemma-vs-mistral/promptfooconfig.yaml", 3, 9, (REPLACED,), model="fake://reply?text=%20%20An%20echo%20%20"),
    # Each provider runs only its own prompts: promptfoo 3 providers x 1 prompt x 3 tests; here
    # both prompts run on the one local model.
    Promptfoo("docs-llama2-uncensored/promptfooconfig.yaml", 6, 9, (REPLACED,), model="fake://reply?text=I%20am%20well", chat=True),
]  # fmt: skip


def _copy_second(project: Project, example: Promptfoo) -> tuple[Path, list[str]]:
    folder = Path(example.config).parent
    shutil.copytree(EXAMPLES / folder, project.root / folder)
    path = project.root / example.config
    args = list(example.args)
    if example.chat:
        # The only change: fake models have no chat template, so the model is named in the
        # suite with one (and stands in for the providers, as --model would).
        assert example.model is not None
        path.write_text(
            path.read_text(encoding="utf-8")
            + f"\nmodels:\n  - path: {json.dumps(example.model)}\n    label: fake\n"
            f"    chat_template: {json.dumps(CHAT)}\n",
            encoding="utf-8",
        )
    elif example.model is not None:
        args += ["--model", example.model]
    return path, args


def _notes(err: str) -> str:
    return " ".join(err.split())


@pytest.mark.parametrize("example", SECOND, ids=[e.config for e in SECOND])
def test_second_batch_validates_and_runs(project: Project, cli: Cli, example: Promptfoo) -> None:
    path, args = _copy_second(project, example)
    checked = cli("validate", path, *args)
    assert checked.code == 0, checked.err
    assert f"= {example.cells} cells" in " ".join(checked.out.split())
    notes = _notes(checked.err)
    for part in example.notes:
        assert part in notes, notes
    if example.cells != example.promptfoo_cells:
        # the difference is always explained: providers replaced, or a prompt left out
        assert REPLACED in notes or "left out (--skip-unsupported)" in notes, notes
    ran = cli("run", path, "-o", project.root / "out", *args)
    assert ran.code in (0, 100), ran.err + ran.out
    rows = _rows(project.root / "out")
    assert len(rows) == example.cells
    assert all(r["status"] in ("pass", "fail", "unchecked") for r in rows), [
        r["error"] for r in rows
    ]


# H1's part of issue 12 maps `providers: [echo]` onto fake://echo; these two check what the issue
# asks of it on promptfoo's own echo examples: each output is the rendered prompt.
def test_echo_examples_return_the_rendered_prompt(project: Project, cli: Cli) -> None:
    for example in SECOND[:2]:
        path, args = _copy_second(project, example)
        out = project.root / f"out-{path.parent.name}"
        cli("run", path, "-o", out, *args)
        rows = _rows(out)
        assert rows and all(r["output"] == r["rendered_prompt"] for r in rows)
    jsonl = _rows(project.root / "out-jsonl-test-cases")
    assert [r["status"] for r in jsonl] == ["pass", "pass"]  # promptfoo: 100% on echo


def test_csv_prompts_rows_and_labels(project: Project, cli: Cli) -> None:
    path, args = _copy_second(project, SECOND[0])
    cli("run", path, "-o", project.root / "out", *args)
    rows = _rows(project.root / "out")
    assert [r["prompt"] for r in rows[:5]] == ["Basic Query", "ELI5", "Academic", "Poetry", "Facts"]
    assert {r["prompt_source"] for r in rows} == {"csv-prompts/prompts.csv"}
    eli5 = rows[1]
    assert eli5["rendered_prompt"] == (
        "Explain artificial intelligence in simple terms as if I'm 5 years old"
    )
    facts = rows[4]  # the last row ends in `"Facts" ` and no newline
    assert facts["rendered_prompt"].endswith("about artificial intelligence")


@pytest.mark.parametrize(
    ("csv", "labels"),
    [
        ("two-column.csv", ["Basic Query", "Simple Explanation", "Poetry Generator", "Fact Listing", "Impact Assessment"]),
        ("single-column.csv", [f"single-column:{k}" for k in range(1, 6)]),
        ("no-header.csv", [f"no-header:{k}" for k in range(1, 6)]),
    ],
)  # fmt: skip
def test_csv_prompt_file_shapes(project: Project, csv: str, labels: list[str]) -> None:
    shutil.copytree(EXAMPLES / "csv-prompts", project.root / "evals" / "c")
    suite = load(project, f"prompts: [file://c/{csv}]\nvars: {{topic: tea}}\n")
    assert [p.label for p in suite.prompts] == labels
    # quoted cells lose their quotes (promptfoo keeps them in a one-column file: a quirk)
    assert build_plan(suite).cells[0].text == "Tell me about tea"


def test_csv_prompts_entry_label_and_errors(project: Project) -> None:
    project.write("evals/p.csv", "prompt,label\nA {{ x }},\n,skipped\nB {{ x }},own\n")
    suite = load(project, "prompts:\n  - {id: file://p.csv, label: grp}\nvars: {x: 1}\n")
    assert [p.label for p in suite.prompts] == ["grp:1", "own"]
    assert [c.text for c in build_plan(suite).cells] == ["A 1", "B 1"]
    project.write("evals/wide.csv", "A, b\nC\n")
    with pytest.raises(InputError, match=r"wide.csv:1: .*without a `prompt` header has one column"):
        load(project, "prompts: [file://wide.csv]\n")
    project.write("evals/empty.csv", "prompt,label\n,x\n")
    with pytest.raises(InputError, match="no prompts in the CSV"):
        load(project, "prompts: [empty.csv]\n")  # the bare path is a file too


def test_messages_entry_renders_per_test(project: Project, cli: Cli) -> None:
    path, args = _copy_second(project, SECOND[2])
    cli("run", path, "-o", project.root / "out", *args)
    rows = _rows(project.root / "out")
    chat = [r for r in rows if r["prompt"] == "Chat with System and User (J2 Templates)"]
    assert [r["messages"][1] for r in chat] == [
        {"role": "user", "content": "Explain neural networks in simple terms."},
        {"role": "user", "content": "Explain REST APIs in simple terms."},
    ]
    assert chat[0]["messages"][0]["content"].startswith(
        "You are a helpful assistant specialized in machine learning.\n"
    )
    # promptfoo's echo gives a chat back as its messages in JSON
    assert json.loads(chat[0]["output"]) == chat[0]["messages"]


def test_messages_entry_inline_and_bare_list(project: Project) -> None:
    project.write("evals/sys.j2", "Be {{ tone }}.\n")
    suite = load(
        project,
        """
        prompts:
          - label: chat
            messages:
              - {role: system, content: file://sys.j2}
              - {role: user, content: 'Hi {{ name }}'}
          - - {role: user, content: '{{ name }}?'}
        vars: {tone: terse, name: Ann}
        """,
    )
    chat, bare = suite.prompts
    assert (chat.label, chat.kind, bare.label, bare.kind) == (
        "chat",
        "messages",
        "chat 2",
        "messages",
    )
    assert chat.variables == {"tone", "name"} and "evals/sys.j2" in suite.files


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{label: x, messages: []}", "messages: is empty"),
        ("{raw: hi, messages: [{role: user, content: a}]}", "not several"),
        ("{messages: [{role: robot, content: a}]}", "unknown role 'robot'"),
        ("{messages: [{role: user, text: a}]}", "exactly `role` and `content`"),
        ("{messages: [{role: user, content: 'file://gone.j2'}]}", "gone.j2"),
        ("{messages: [{role: user, content: 'file://make.py'}]}", "is a prompt function"),
    ],
)
def test_messages_entry_errors_name_the_message(project: Project, entry: str, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)) as info:
        load(project, f"prompts:\n  - {entry}\n")
    assert "s.yaml:2" in info.value.one_line()


def test_mmlu_prompt_keeps_its_trailing_newline(project: Project, cli: Cli) -> None:
    path, args = _copy_second(project, SECOND[4])
    cli("run", path, "-o", project.root / "out", *args)
    rows = _rows(project.root / "out")
    # the YAML `|` block ends in a newline, and the model gets it, as with promptfoo
    assert all(r["rendered_prompt"].endswith("text in your response.\n") for r in rows)
    rendered = cli("render", path, *args, "--limit", "1", "--json")
    assert rendered.code == 0, rendered.err
    assert "text in your response.\\n" in rendered.out


@pytest.mark.parametrize(
    "cell",
    ["['True, True', 'False, False', 'True, False', 'False, True']", '["0", "4", "2", "6"]'],
)
def test_choice_from_a_list_written_as_a_string(project: Project, cell: str) -> None:
    project.write(
        "evals/q.csv", f'question,choices,answer\n"Q?","{cell.replace(chr(34), 2 * chr(34))}",1\n'
    )
    suite = load(
        project,
        "prompts: ['{{ question }}\\n']\ntests: file://q.csv\n"
        "defaultTest:\n  assert: [{type: choice, choices: choices, value: 1}]\n",
    )
    (cell_,) = build_plan(suite).cells
    (check,) = cell_.checks
    assert len(check.options["choices"]) == 4
    assert check.value == check.options["choices"][1]  # value: 1 is the 0-based index


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("'[A, B]'", "the variable 'choices' holds a string, not a list"),
        ("'[__import__(\"os\")]'", "the variable 'choices' holds a string, not a list"),
    ],
)
def test_choice_list_string_that_does_not_parse(project: Project, value: str, message: str) -> None:
    refused(
        project,
        f"prompts: [q]\ntests:\n  - vars: {{choices: {value}}}\n"
        "    assert: [{type: choice, choices: choices, value: A}]\n",
        message,
        '["A", "B"]',
    )


# --- what the examples exercise --------------------------------------------------------------


def _run(project: Project, cli: Cli, example: Example) -> list[dict[str, Any]]:
    path, model = _copy(project, example)
    args = [
        *(["--model", model] if model else []),
        *(["--allow-code"] if example.allow_code else []),
    ]
    cli("run", path, "-o", project.root / "out", *args)
    return _rows(project.root / "out")


def test_txt_prompt_file_with_separators_and_load_filter(project: Project, cli: Cli) -> None:
    rows = _run(project, cli, RUNNABLE[1])
    assert sorted({r["prompt"] for r in rows}) == ["prompts:1", "prompts:2"]
    first = next(r for r in rows if r["prompt"] == "prompts:1")
    assert "- Tone: formal" in first["rendered_prompt"]  # {{ (style_config | load).tone }}
    assert all(r["status"] == "pass" for r in rows)


def test_csv_grade_prefix_is_llm_rubric(project: Project, cli: Cli) -> None:
    rows = _run(project, cli, RUNNABLE[2])
    assert {c["type"] for r in rows for c in r["checks"]} == {"llm-rubric"}


def test_csv_metadata_columns(project: Project, cli: Cli) -> None:
    rows = _run(project, cli, RUNNABLE[5])
    assert rows[0]["metadata"] == {
        "category": "technology",
        "tags": ["ai", "data science", "algorithms"],
    }
    assert rows[1]["metadata"]["tags"] == ["physics", "advanced,theory", "quantum"]
    rubric = next(c for c in rows[0]["checks"] if c["type"] == "llm-rubric")
    assert "machine learning" in rubric["check"]  # {{topic}} rendered in the CSV check


def test_remote_grader_is_ignored_with_a_note(project: Project, cli: Cli) -> None:
    path, model = _copy(project, RUNNABLE[6])
    result = cli("validate", path, "--model", model)
    err = " ".join(result.err.split())
    assert "provider openai:gpt-4.1-mini is ignored; graders run on the local model" in err
    rows = _run_again(project, cli, path, model)
    by_name = {r["test"]: r for r in rows}
    medium = by_name["ES tariff reply mixing languages"]
    assert medium["status"] == "pass"  # __threshold 0: scored, never gating
    assert medium["metadata"] == {"severity": "medium"}
    assert {c.get("metric") for c in medium["checks"]} == {"correct", "language_fit"}


def _run_again(project: Project, cli: Cli, path: Path, model: str | None) -> list[dict[str, Any]]:
    cli("run", path, "-o", project.root / "out", *(["--model", model] if model else []))
    return _rows(project.root / "out")


def test_javascript_trim_transform_runs_as_strip(project: Project, cli: Cli) -> None:
    rows = _run(project, cli, RUNNABLE[7])
    story = rows[-1]
    assert story["output"].startswith("  ")
    assert story["status"] == "pass"  # starts-with after output.trim()


def test_prompt_map_with_bare_paths(project: Project, cli: Cli) -> None:
    rows = _run(project, cli, RUNNABLE[8])
    texts = {
        r["prompt"]: r["rendered_prompt"] for r in rows if r["vars"]["message"] == "hello world"
    }
    assert texts == {
        "mistral_prompt": "<s>[INST]hello world[/INST]",
        "llama_prompt": "[INST] hello world [/INST]",
    }


def test_content_parts_join_into_messages(project: Project, cli: Cli) -> None:
    outs = []
    for example in (RUNNABLE[9], RUNNABLE[10]):
        path, _ = _copy(project, example)
        outs.append(project.root / f"out-{path.parent.name}")
        assert cli("run", path, "-o", outs[-1]).code == 0
    claude = _rows(outs[0])
    assert claude[0]["messages"][0] == {"role": "system", "content": "Be concise"}
    assert claude[0]["messages"][1]["content"].startswith("Answer this riddle:\nI speak")
    ollama = _rows(outs[1])
    system = next(r for r in ollama if r["prompt"] == "openai_prompt")["messages"][0]
    assert system["content"] == "You are a helpful assistant. Answer briefly."


def test_vars_arrays_expand_into_one_test_per_combination(project: Project, cli: Cli) -> None:
    rows = _run(project, cli, RUNNABLE[11])
    assert [r["test"] for r in rows][:4] == [
        "language=French, input=Hello world",
        "language=French, input=Good morning",
        "language=French, input=How are you?",
        "language=German, input=Hello world",
    ]
    assert rows[3]["rendered_prompt"] == "Translate to German: Hello world"


def test_disable_var_expansion_keeps_the_list(project: Project, cli: Cli) -> None:
    (row,) = _run(project, cli, RUNNABLE[12])
    assert len(row["vars"]["reference"]) == 2
    assert row["status"] == "pass"


def test_weights_thresholds_and_assert_sets(project: Project, cli: Cli) -> None:
    weighted, sets = _run(project, cli, RUNNABLE[13])
    assert weighted["status"] == "fail"
    assert weighted["score"] == pytest.approx(1 / 3)  # equals (weight 2) fails, contains passes
    assert sets["status"] == "pass"  # each set reaches its threshold
    assert "quality_checks" in sets["named_scores"]


def test_assertion_templates_ref(project: Project, cli: Cli) -> None:
    path, model = _copy(project, RUNNABLE[14])
    result = cli("validate", path, "--model", model, "--allow-code")
    assert "promptfoo's outputPath is ignored" in " ".join(result.err.split())
    last = load_suite(path, model_override=model).tests[-1]
    assert [(c.type, c.value) for c in last.checks] == [
        ("llm-rubric", "Is spoken like a pirate"),
        ("icontains", "arrr"),
    ]


# --- the rules, one by one ---------------------------------------------------------------------

SUITE = "evals/s.yaml"


def load(project: Project, text: str) -> LoadedSuite:
    project.write(SUITE, text)
    return load_suite(project.root / SUITE, model_override="fake://echo")


def refused(project: Project, text: str, *parts: str) -> None:
    with pytest.raises(InputError) as info:
        build_plan(load(project, text))
    message = info.value.one_line()
    for part in parts:
        assert part in message, message


def test_vars_arrays_cartesian_product_and_exceptions(project: Project) -> None:
    project.write("evals/list.json", '["x", "y"]')
    suite = load(
        project,
        """
        prompts: ["{{ a }} {{ b }} {{ n }} {{ f }}"]
        vars: {b: [one, two]}
        tests:
          - description: combo
            vars:
              a: [p, q]
              n: [1, 2]          # not strings: one list value
              f: file://list.json  # read from a file: one value
        """,
    )
    assert [(t.description, t.vars["a"], t.vars["b"]) for t in suite.tests] == [
        ("combo (b=one, a=p)", "p", "one"),
        ("combo (b=one, a=q)", "q", "one"),
        ("combo (b=two, a=p)", "p", "two"),
        ("combo (b=two, a=q)", "q", "two"),
    ]
    assert [t.index for t in suite.tests] == [0, 1, 2, 3]
    assert all(t.vars["n"] == [1, 2] and t.vars["f"] == ["x", "y"] for t in suite.tests)


@pytest.mark.parametrize("choices", ["options", "'{{ options }}'"])
def test_choice_options_var_is_not_expanded(project: Project, choices: str) -> None:
    suite = load(
        project,
        f"""
        prompts: ["Q: {{{{ q }}}} A:"]
        tests:
          - vars:
              q: [first, second]
              options: [" yes", " no"]
            assert:
              - type: choice
                choices: {choices}
                value: " yes"
        """,
    )
    assert [t.vars["q"] for t in suite.tests] == ["first", "second"]
    assert all(t.vars["options"] == [" yes", " no"] for t in suite.tests)


def test_glob_var_makes_one_test_per_file(project: Project) -> None:
    project.write("evals/docs/a.txt", "alpha")
    project.write("evals/docs/b.txt", "beta")
    suite = load(project, "prompts: ['{{ doc }}']\ntests:\n  - vars: {doc: 'file://docs/*.txt'}\n")
    assert [(t.description, t.vars["doc"]) for t in suite.tests] == [
        ("doc=evals/docs/a.txt", "alpha"),
        ("doc=evals/docs/b.txt", "beta"),
    ]


def test_disable_default_asserts(project: Project) -> None:
    suite = load(
        project,
        """
        prompts: [hi]
        defaultTest:
          assert: [{type: contains, value: x}]
        tests:
          - options: {disableDefaultAsserts: true}
          - description: keeps them
        """,
    )
    assert [len(t.checks) for t in suite.tests] == [0, 1]


def test_txt_separators_make_several_prompts(project: Project) -> None:
    project.write("evals/p.txt", "---\nOne {{ x }}\n---\n\n---\nTwo\n")
    suite = load(project, "prompts: [file://p.txt]\nvars: {x: 1}\n")
    assert [(p.label, p.source) for p in suite.prompts] == [
        ("p:1", "evals/p.txt"),
        ("p:2", "evals/p.txt"),
    ]
    assert [c.text for c in build_plan(suite).cells] == ["One 1", "Two"]


def test_prompt_glob_and_display(project: Project) -> None:
    project.write("evals/p/a.txt", "A {{ x }}")
    project.write("evals/p/b.j2", "B {{ x }}")
    suite = load(
        project,
        "prompts:\n  - id: 'file://p/*'\n    label: v\n  - {raw: 'C', display: c}\nvars: {x: 1}\n",
    )
    assert [p.label for p in suite.prompts] == ["v:a", "v:b", "c"]


def test_non_text_content_part_is_refused(project: Project) -> None:
    project.write(
        "evals/chat.json",
        '[{"role": "user", "content": [{"type": "text", "text": "Describe"},'
        ' {"type": "image_url", "image_url": {"url": "x.png"}}]}]',
    )
    with pytest.raises(InputError, match=r"content\[1\] is a 'image_url' part.*text only"):
        load(project, "prompts: [file://chat.json]\n")


def test_csv_columns_and_check_syntax(project: Project) -> None:
    project.write(
        "evals/t.csv",
        "q,__expected1,__expected2,__expected3,__metric,__threshold,__config:__expected1:threshold\n"
        'a,"similar:hello","levenshtein(3):abc","python: len(output) > 1",m,0.5,0.9\n'
        "b,grade:be nice,not-icontains:bad,similar(0.6):x,,,\n",
    )
    a, b = load(project, "prompts: ['{{ q }}']\ntests: file://t.csv\n").tests
    assert [(c.type, c.value, c.threshold) for c in a.checks] == [
        ("similar", "hello", 0.9),  # __config:__expected1:threshold
        ("levenshtein", "abc", 3.0),
        ("python", "len(output) > 1", None),
    ]
    assert {c.extra["metric"] for c in a.checks} == {"m"} and a.threshold == 0.5
    assert [(c.type, c.value, c.threshold) for c in b.checks] == [
        ("llm-rubric", "be nice", None),
        ("not-icontains", "bad", None),
        ("similar", "x", 0.6),
    ]
    assert b.threshold is None and "metric" not in b.checks[0].extra


@pytest.mark.parametrize(
    ("cell", "expect"),
    [("fn:output.length < 9", "use type: python"), ("javascript:1", "use type: python")],
)
def test_csv_javascript_is_refused(project: Project, cell: str, expect: str) -> None:
    project.write("evals/t.csv", f"q,__expected\na,{cell}\n")
    with pytest.raises(InputError, match=expect):
        load(project, "prompts: ['{{ q }}']\ntests: file://t.csv\n")


def test_csv_prefix_column_is_refused(project: Project) -> None:
    project.write("evals/t.csv", "q,__prefix\na,Answer:\n")
    with pytest.raises(InputError, match=r"promptfoo's column '__prefix' is not supported"):
        load(project, "prompts: ['{{ q }}']\ntests: file://t.csv\n")


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        (
            "prompts: [hi]\nscenarios: []\n",
            ("s.yaml:2", "promptfoo's 'scenarios' is not supported", "as tests"),
        ),
        ("prompts: [hi]\nnunjucksFilters: {up: up.js}\n", ("'nunjucksFilters'", "Jinja")),
        ("prompts: [hi]\nextensions: [file://h.py:hook]\n", ("'extensions'", "no hooks")),
        (
            "prompts: [hi]\ntests:\n  - options: {prefix: 'Q: '}\n",
            ("s.yaml:3", "tests[0].options", "'prefix'", "template"),
        ),
        (
            "prompts: [hi]\ntests:\n  - prompts: [a]\n",
            ("'prompts' is not supported", "separate suites"),
        ),
        ("prompts: [hi]\ntests:\n  - providerOutput: x\n", ("'providerOutput'", "fake://reply")),
        ("prompts: [hi]\ntests:\n  - path: file://gen.py\n", ("test generator",)),
        ("prompts: [file://make.py:prompt]\n", ("prompt function",)),
        (
            "prompts: [hi]\ntests:\n  - assert: [{$ref: '#/assertionTemplates/nope'}]\n",
            ("points at nothing",),
        ),
        (
            "prompts: [hi]\ntests:\n  - assert: [{$ref: 'other.yaml#/x'}]\n",
            ("only references into this file",),
        ),
        (
            "prompts: [hi]\ndefaultTest:\n  options: {transform: 'output.split(1)'}\n",
            ("unsupported transform", "JavaScript"),
        ),
        (
            "prompts: [hi]\ntests:\n  - assert: [{type: contains, value: file://x.js}]\n",
            ("would run code",),
        ),
        (
            "prompts: [hi]\ntests:\n  - assert: [{type: contains, value: a, contextTransform: x}]\n",
            ("'contextTransform'",),
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 20 else None,
)
def test_refused_promptfoo_keys(project: Project, text: str, parts: tuple[str, ...]) -> None:
    refused(project, text, *parts)


def test_code_var_file_is_refused(project: Project) -> None:
    project.write("evals/fetch.py", "x = 1\n")
    refused(project, "prompts: ['{{ c }}']\nvars: {c: file://fetch.py}\n", "would run code")


def test_type_aliases(project: Project) -> None:
    suite = load(
        project, "prompts: [hi]\ntests:\n  - assert: [{type: not-similar:cosine, value: x}]\n"
    )
    assert suite.tests[0].checks[0].type == "not-similar"
    refused(
        project,
        "prompts: [hi]\ntests:\n  - assert: [{type: model-graded-factuality, value: x}]\n",
        "'factuality' is not supported",
    )


def test_typos_are_still_unknown_keys(project: Project) -> None:
    refused(project, "prompts: [hi]\ntag: {a: b}\n", "unknown key 'tag'", "did you mean 'tags'?")


def test_ignored_keys_make_one_note_each(project: Project) -> None:
    suite = load(
        project,
        """
        prompts: [hi]
        providers: [openai:gpt-4o]
        tags: {env: ci}
        outputPath: out.json
        sharing: false
        evaluateOptions: {maxConcurrency: 2}
        tests:
          - provider: openai:gpt-4o
            options: {runSerially: true}
          - provider: openai:gpt-4o
        """,
    )
    providers, top, *rest = suite.notes
    assert "providers: is ignored; running the local model echo instead" in providers
    assert "promptfoo's tags, outputPath, sharing, evaluateOptions are ignored" in top
    assert any("a test's provider is ignored (and 1 more)" in n for n in rest)
    assert any("options.runSerially is ignored" in n for n in rest)


def test_providers_and_graders(project: Project) -> None:
    project.write("evals/judge.gguf", b"")
    suite = load(
        project,
        """
        prompts: [hi]
        tests:
          - assert:
              - {type: llm-rubric, value: ok, provider: {id: openai:gpt-4o, config: {temperature: 0}}}
              - {type: llm-rubric, value: ok, provider: judge.gguf}
              - {type: similar, value: ok, provider: huggingface:sentence-similarity:x}
        """,
    )
    assert [c.extra.get("provider") for c in suite.tests[0].checks] == [None, "judge.gguf", None]
    assert sum("graders run on the local model" in n for n in suite.notes) == 2


def test_default_test_file_and_check_value_file(project: Project) -> None:
    project.write(
        "evals/defaults.yaml", "assert:\n  - type: contains\n    value: file://needle.txt\n"
    )
    project.write("evals/needle.txt", "needle")
    suite = load(project, "prompts: [hi]\ndefaultTest: file://defaults.yaml\n")
    assert [(c.type, c.value) for c in suite.tests[0].checks] == [("contains", "needle")]


def test_javascript_one_liner_transforms(project: Project) -> None:
    suite = load(
        project,
        """
        prompts: [hi]
        tests:
          - options: {transform: 'output.trim().toLowerCase();'}
            assert: [{type: equals, value: hi, transform: output.toUpperCase()}]
        """,
    )
    (test,) = suite.tests
    assert test.transform == ["strip", "lower"]
    assert test.checks[0].extra["transform"] == "upper"


def test_json_schema_refs_are_left_alone(project: Project) -> None:
    suite = load(
        project,
        """
        prompts: [hi]
        tests:
          - assert:
              - type: is-json
                value:
                  definitions: {name: {type: string}}
                  type: object
                  properties: {a: {$ref: '#/definitions/name'}, b: {$ref: '#'}}
        """,
    )
    schema = suite.tests[0].checks[0].value
    assert schema["properties"] == {"a": {"$ref": "#/definitions/name"}, "b": {"$ref": "#"}}
    build_plan(suite)  # the schema itself is valid
