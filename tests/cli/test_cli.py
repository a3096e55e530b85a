"""The command line: startup cost, init, validate, render, models, schema and error handling."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import CliResult, Project

from promptlab import core
from promptlab.cli import main

Cli = Callable[..., CliResult]

HEAVY = ("pandas", "llama_cpp", "numpy", "jinja2", "pydantic")

SUITE = """
prompts:
  - raw: "Say {{ word }}"
    label: say
  - file://../prompts/repeat.j2
models:
  - path: fake://echo
    label: fake
params:
  max_tokens: 8
tests:
  - description: greet
    vars: {word: hello}
    assert:
      - type: icontains
        value: "{{ word }}"
  - vars: {word: world}
"""

CHAT = """
{% system %}Be brief.{% endsystem %}
{% user %}Repeat {{ word }}{% enduser %}
"""


def python(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


@pytest.fixture
def suite(project: Project) -> Path:
    project.write("prompts/repeat.j2", "Repeat {{ word }}, {{ word }}!")
    return project.write("evals/suite.yaml", SUITE)


# --- startup -------------------------------------------------------------------------------


def test_help_is_fast_in_a_subprocess() -> None:
    exe = Path(sys.executable).with_name("promptlab")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "promptlab"]
    start = time.perf_counter()
    r = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=60, check=False)
    elapsed = time.perf_counter() - start
    assert r.returncode == 0, r.stderr
    for command in ("init", "validate", "render", "run", "report", "models", "schema"):
        assert command in r.stdout
    assert elapsed < 3.0, f"promptlab --help took {elapsed:.2f}s"


def test_importing_the_cli_stays_light() -> None:
    r = python(
        "-c",
        "import promptlab.cli, sys, json; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []


@pytest.mark.parametrize(
    ("argv", "allowed"),
    [
        (["--help"], set()),
        # typer itself imports pydantic to inspect a command's parameter types
        (["run", "--help"], {"pydantic"}),
    ],
)
def test_help_does_not_import_the_core(argv: list[str], allowed: set[str]) -> None:
    core_and_heavy = (*HEAVY, "promptlab.core", "promptlab.running")
    code = (
        "import sys, json\n"
        "from promptlab.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        f"print(json.dumps([m for m in {core_and_heavy!r} if m in sys.modules]))\n"
    )
    r = python("-c", code)
    assert r.returncode == 0, r.stderr
    assert set(json.loads(r.stdout.splitlines()[-1])) <= allowed


def test_python_dash_m_promptlab() -> None:
    r = python("-m", "promptlab", "--help")
    assert r.returncode == 0, r.stderr
    assert "Usage: promptlab" in r.stdout


def test_every_command_in_the_group_modules_is_registered() -> None:
    """promptlab/cli/__init__.py registers the commands in one list (it sets --help's order), so
    a command written in a group's module but left out of that list would silently not exist."""
    import inspect

    from promptlab.cli import app, optimize, project, reports, run

    registered = {
        info.callback
        for typer_app in (app, reports.baseline_app)
        for info in typer_app.registered_commands
    }
    defined = {
        f"{module.__name__}.{name}": function
        for module in (optimize, project, reports, run)
        for name, function in inspect.getmembers(module, inspect.isfunction)
        if function.__module__ == module.__name__ and not name.startswith("_")
    }
    assert {"promptlab.cli.run.run", "promptlab.cli.reports.baseline_set"} <= defined.keys()
    assert sorted(name for name, f in defined.items() if f not in registered) == []


def test_no_arguments_shows_help_and_bad_option_is_usage_error(cli: Cli) -> None:
    r = cli()
    assert r.code in (0, 2)
    assert "Usage" in r.out + r.err
    r = cli("run", "--no-such-option")
    assert r.code == 2
    assert "--no-such-option" in r.err


# --- init ----------------------------------------------------------------------------------


def test_init_scaffolds_a_project(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "fresh"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setenv("PROMPTLAB_CACHE", str(tmp_path / "cache"))
    r = cli("init")
    assert r.code == 0, r.err
    created = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert created == [
        "evals/starter.yaml",
        "promptlab.toml",
        "prompts/sentiment.j2",
        "suite.schema.json",
    ]
    assert "promptlab run evals/starter.yaml" in r.out
    schema = json.loads((folder / "suite.schema.json").read_text())
    assert schema == core.suite_schema()
    # The starter suite is valid and renders without a model load.
    r = cli("render", "evals/starter.yaml", "--json")
    assert r.code == 0, r.err
    cells = json.loads(r.out)
    assert len(cells) == 6  # 2 prompts × 3 tests on the bundled smollm2
    assert {c["chat_template"] for c in cells} == {"gguf:tokenizer.chat_template"}


def test_init_refuses_to_overwrite_without_force(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli("init", "proj").code == 0
    starter = tmp_path / "proj" / "evals" / "starter.yaml"
    original = starter.read_text()
    starter.write_text("# mine\n")
    r = cli("init", "proj")
    assert r.code == 2
    assert r.err.count("\n") == 1
    assert "already exists" in r.err
    assert "--force" in r.err
    assert starter.read_text() == "# mine\n"
    r = cli("init", "proj", "--force")
    assert r.code == 0, r.err
    assert starter.read_text() == original


# --- validate and render ---------------------------------------------------------------------


def test_validate(suite: Path, cli: Cli) -> None:
    r = cli("validate", suite)
    assert r.code == 0, r.err
    text = " ".join(r.out.split())  # rich wraps long lines at the terminal width
    assert "2 prompt(s) × 2 test(s) × 1 model(s) = 4 cells" in text
    assert "model fake: fake://echo" in text
    assert "chat template: none (raw completion)" in text


def test_validate_reports_bad_input_with_exit_2(project: Project, cli: Cli) -> None:
    path = project.write("evals/bad.yaml", 'prompts:\n  - raw: "{{ missing }}"\ntests:\n  - {}\n')
    r = cli("validate", path, "--model", "fake://echo")
    assert r.code == 2
    assert r.err.startswith("error: ")
    assert r.err.count("\n") == 1
    assert "missing" in r.err


def test_render_text(suite: Path, cli: Cli) -> None:
    r = cli("render", suite)
    assert r.code == 0, r.err
    assert "Say hello" in r.out
    assert "say × greet × fake" in r.out
    assert 'checks: icontains "hello"' in r.out
    assert "4 of 4 cells rendered" in r.out


def test_render_json(suite: Path, cli: Cli) -> None:
    r = cli("render", suite, "--json")
    assert r.code == 0, r.err
    cells = json.loads(r.out)
    assert len(cells) == 4
    first = cells[0]
    assert first["prompt"] == "say"
    assert first["test"] == "greet"
    assert first["model"] == "fake"
    assert first["text"] == "Say hello"
    assert first["vars"] == {"word": "hello"}
    assert first["add_bos"] is True
    assert first["chat_template"] is None
    assert first["checks"] == ['icontains "hello"']
    repeat = next(c for c in cells if c["prompt"] == "repeat" and c["test"] == "test 2")
    assert repeat["text"] == "Repeat world, world!"
    assert repeat["messages"] == [{"role": "user", "content": "Repeat world, world!"}]
    assert repeat["checks"] == []
    assert len({c["cell_id"] for c in cells}) == 4


def test_render_json_of_long_text_is_not_wrapped(suite: Path, cli: Cli) -> None:
    long_word = "x" * 300
    text = suite.read_text().replace("{word: world}", f"{{word: {long_word}}}")
    suite.write_text(text)
    r = cli("render", suite, "--json", "--filter", "xxx")
    assert r.code == 0, r.err
    cells = json.loads(r.out)
    assert {c["text"] for c in cells if c["prompt"] == "say"} == {f"Say {long_word}"}


def test_render_filter_and_limit(suite: Path, cli: Cli) -> None:
    r = cli("render", suite, "--json", "--filter", "world")
    assert {c["test"] for c in json.loads(r.out)} == {"test 2"}
    r = cli("render", suite, "--json", "--limit", "1")
    assert {c["test"] for c in json.loads(r.out)} == {"greet"}


INLINE_TEMPLATE_SUITE = """
prompts:
  - file://../prompts/chat.j2
models:
  - path: fake://echo
    label: templated
    chat_template: "{% for m in messages %}<<{{ m.role }}>>{{ m.content }}|{% endfor %}{% if add_generation_prompt %}<<assistant>>{% endif %}"
params:
  max_tokens: 8
tests:
  - vars: {word: Bob}
"""


def test_render_shows_the_chat_template_text(project: Project, cli: Cli) -> None:
    project.write("prompts/chat.j2", CHAT)
    path = project.write("evals/tpl.yaml", INLINE_TEMPLATE_SUITE)
    expected = "<<system>>Be brief.|<<user>>Repeat Bob|<<assistant>>"
    r = cli("render", path, "--json")
    assert r.code == 0, r.err
    (cell,) = json.loads(r.out)
    assert cell["text"] == expected
    assert cell["chat_template"] == "inline"
    assert cell["add_bos"] is False
    r = cli("render", path)
    assert r.code == 0, r.err
    assert expected in r.out
    assert "chat template: inline" in r.out
    assert "system: Be brief." in r.out
    r = cli("validate", path)
    assert "chat template: inline" in r.out


# --- models and schema ----------------------------------------------------------------------


def tiny_gguf(path: Path) -> Path:
    """A header-only GGUF v3 file: enough metadata for `promptlab models`."""

    def s(text: str) -> bytes:
        return struct.pack("<Q", len(text.encode())) + text.encode()

    kv = [
        ("general.architecture", 8, s("qwen2")),
        ("general.file_type", 4, struct.pack("<I", 15)),  # Q4_K_M
        ("qwen2.block_count", 4, struct.pack("<I", 3)),
    ]
    body = b"".join(s(k) + struct.pack("<I", t) + v for k, t, v in kv)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kv)) + body)
    return path


def test_models_lists_bundled_and_project_files(
    project: Project, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real cache: listing gemma3 assembles its 253 MB file once, not once per test run.
    monkeypatch.delenv("PROMPTLAB_CACHE")
    monkeypatch.delenv("PROMPTLAB_MODEL_DIRS", raising=False)
    tiny_gguf(project.root / "weights" / "tinyqwen.gguf")
    r = cli("models")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    smol = next(line for line in lines if "smollm2" in line)
    assert "Q4_1" in smol
    assert "llama" in smol
    assert "chat chatml" in smol  # its chat template, by family
    tiny = next(line for line in lines if "tinyqwen" in line)
    assert "Q4_K_M" in tiny
    assert "qwen2" in tiny


def test_models_rows_from_core(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMPTLAB_CACHE")
    tiny_gguf(project.root / "tinyqwen.gguf")
    (project.root / "broken.gguf").write_bytes(b"GGUF\x03\x00")
    rows = {r.name: r for r in core.list_models(project.root)}
    assert rows["smollm2"].quantization == "Q4_1"
    assert rows["smollm2"].architecture == "llama"
    assert rows["smollm2"].chat_template is True
    assert rows["tinyqwen"].n_layer == 3
    assert rows["tinyqwen"].path == str(project.root / "tinyqwen.gguf")
    assert rows["broken"].quantization is None
    assert "truncated" in rows["broken"].note


def test_schema_prints_json(cli: Cli) -> None:
    r = cli("schema")
    assert r.code == 0, r.err
    schema = json.loads(r.out)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert {"prompts", "tests", "models", "params"} <= set(schema["properties"])


# --- unexpected errors ----------------------------------------------------------------------


def _boom(*args: object, **kwargs: object) -> None:
    raise RuntimeError("boom")


def test_internal_error_is_one_line_and_exit_1(
    suite: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core, "prepare", _boom)
    r = cli("validate", suite)
    assert r.code == 1
    assert r.err.count("\n") == 1
    assert r.err.startswith("error: internal error: RuntimeError: boom")
    assert "--debug" in r.err
    assert "Traceback" not in r.err


def test_debug_raises_the_exception(suite: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core, "prepare", _boom)
    with pytest.raises(RuntimeError, match="boom"):
        main(["--debug", "validate", str(suite)])


def test_debug_does_not_stick_between_calls(
    suite: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core, "prepare", _boom)
    with pytest.raises(RuntimeError):
        main(["--debug", "validate", str(suite)])
    assert cli("validate", suite).code == 1


def test_debug_prints_a_traceback_in_a_subprocess(suite: Path) -> None:
    code = (
        "import sys\n"
        "import promptlab.core as core\n"
        "def boom(*a, **k):\n"
        "    raise RuntimeError('boom')\n"
        "core.prepare = boom\n"
        "from promptlab.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    env_cwd = suite.parent.parent
    r = python("-c", code, "validate", str(suite), cwd=env_cwd)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0
    r = python("-c", code, "--debug", "validate", str(suite), cwd=env_cwd)
    assert r.returncode == 1
    assert "Traceback (most recent call last)" in r.stderr
    assert "RuntimeError: boom" in r.stderr


def test_promptlab_errors_are_one_line_with_their_exit_code(project: Project, cli: Cli) -> None:
    r = cli("validate", project.root / "nope.yaml")
    assert r.code == 2
    assert r.err.startswith("error: ")
    assert r.err.count("\n") == 1
    assert "nope.yaml" in r.err
