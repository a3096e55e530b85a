"""Hostile suites: what a suite from the internet can and cannot do without the user's consent.

Each test plants what an attacker who hands someone a suite would plant (a secret just outside
the project, a symlink, a FIFO, a module that leaves a marker file when imported, escape sequences
in labels) and checks that it never gets through: no secret in any output, no marker file, no raw
escape sequence on the terminal, no hang.
"""

from __future__ import annotations

import csv
import json
import os
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from conftest import CliResult, Project

from promptlab import core, files

Cli = Callable[..., CliResult]
SECRET = "TOPSECRET-9d2c"
PACKAGE = Path(__file__).resolve().parents[2] / "promptlab"


def _evil(marker: Path) -> str:
    """A module that leaves a marker file the moment it is imported."""
    return (
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "def f(output, context):\n    return output\n"
        "get_assert = f\n"
    )


@dataclass
class Lab:
    project: Project
    outside: Path  # the folder holding the project: the attacker's target
    marker: Path

    @property
    def root(self) -> Path:
        return self.project.root

    def suite(self, text: str, name: str = "s.yaml") -> Path:
        return self.project.write(name, text)


@pytest.fixture
def lab(project: Project) -> Lab:
    outside = project.root.parent
    marker = outside / "pwned"
    (outside / "secret.txt").write_text(SECRET)
    (outside / "secret.json").write_text(json.dumps({"type": "object", "title": SECRET}))
    (outside / "secret.csv").write_text(f"x\n{SECRET}\n")
    (outside / "secret.yaml").write_text(f"vars: {{x: {SECRET}}}\n")
    (outside / "evil.py").write_text(_evil(marker))
    return Lab(project, outside, marker)


def _assert_refused(result: CliResult, lab: Lab, *expect: str) -> None:
    text = result.out + result.err
    assert result.code == 2, (result.code, text)
    assert SECRET not in text
    assert not lab.marker.exists(), "user code ran"
    assert result.err.count("\n") == 1 and result.err.startswith("error: "), result.err
    for piece in expect:
        assert piece in result.err, (piece, result.err)


# --- one confinement check for every site that names a file ------------------------------------

# Every schema field marked x-promptlab-file, and every other place a suite names a file, with a
# suite that plants a reference just outside the project there. {D} is "../" (a path that leaves
# the project) or "" (a symlink inside the project that points outside).
HEAD = 'models: ["fake://echo"]\n'
SITE_CASES: dict[str, list[str]] = {
    "Suite.prompts": ['prompts: ["file://{D}secret.txt"]\n' + HEAD],
    "PromptSpec.id": ['prompts: [{id: "file://{D}secret.txt", label: p}]\n' + HEAD],
    "PromptSpec.messages": [
        'prompts: [{messages: [{role: user, content: "file://{D}secret.txt"}]}]\n' + HEAD
    ],
    "Suite.tests": ['prompts: ["{{ x }}"]\n' + HEAD + 'tests: "file://{D}secret.csv"\n'],
    "DemoSpace.pool": [
        'prompts: ["{{ x }}"]\n' + HEAD + 'optimize: {demos: {pool: "file://{D}secret.csv"}}\n'
    ],
    "InstructionSpace.meta_prompt": [
        'prompts: ["{{ x }}"]\n'
        + HEAD
        + 'optimize: {instructions: {var: x, meta_prompt: "file://{D}secret.txt"}}\n'
    ],
    "Suite.vars": ['prompts: ["{{ x }}"]\n' + HEAD + 'vars: {x: "file://{D}secret.txt"}\n'],
    "TestSpec.vars": [
        'prompts: ["{{ x }}"]\n' + HEAD + 'tests: [{vars: {x: "file://{D}secret.txt"}}]\n'
    ],
    "DefaultTestSpec.vars": [
        'prompts: ["{{ x }}"]\n' + HEAD + 'defaultTest: {vars: {x: "file://{D}secret.txt"}}\n'
    ],
    "Suite.defaultTest": [
        'prompts: ["{{ x }}"]\n' + HEAD + 'defaultTest: "file://{D}secret.yaml"\n'
    ],
    "AssertSpec.value": [
        'prompts: ["hi"]\n'
        + HEAD
        + 'tests: [{assert: [{type: contains, value: "file://{D}secret.txt"}]}]\n',
        'prompts: ["hi"]\n'
        + HEAD
        + 'tests: [{assert: [{type: json-schema, value: "file://{D}secret.json"}]}]\n',
        'prompts: ["hi"]\n'
        + HEAD
        + 'tests: [{assert: [{type: python, value: "file://{D}evil.py:f"}]}]\n',
    ],
    "AssertSpec.transform": [
        'prompts: ["hi"]\n'
        + HEAD
        + 'tests: [{assert: [{type: equals, value: hi, transform: "file://{D}evil.py:f"}]}]\n'
    ],
    "AssertSpec.rubricPrompt": [
        'prompts: ["hi"]\n'
        + HEAD
        + 'tests: [{assert: [{type: llm-rubric, value: ok, rubricPrompt: "file://{D}secret.txt"}]}]\n'
    ],
    "TestSpec.transform": [
        'prompts: ["hi"]\n'
        + HEAD
        + 'tests: [{transform: "file://{D}evil.py:f", assert: [{type: equals, value: hi}]}]\n'
    ],
    "DefaultTestSpec.transform": [
        'prompts: ["hi"]\n' + HEAD + 'defaultTest: {transform: "file://{D}evil.py:f"}\n'
    ],
    "TestOptions.transform": [
        'prompts: ["hi"]\n'
        + HEAD
        + 'tests: [{options: {transform: "file://{D}evil.py:f"}, assert: [{type: equals, value: hi}]}]\n'
    ],
    "TestOptions.postprocess": [
        'prompts: ["hi"]\n'
        + HEAD
        + 'tests: [{options: {postprocess: "file://{D}evil.py:f"}, assert: [{type: equals, value: hi}]}]\n'
    ],
    "TestOptions.rubricPrompt": [
        'prompts: ["hi"]\n'
        + HEAD
        + 'tests: [{options: {rubricPrompt: "file://{D}secret.txt"}, assert: [{type: llm-rubric, value: ok}]}]\n'
    ],
    "ModelSpec.path": ['prompts: ["hi"]\nmodels: ["fake://rules?file={D}secret.json"]\n'],
    "ModelSpec.chat_template": [
        'prompts: ["hi"]\nmodels: [{path: "fake://echo", chat_template: "file://{D}secret.txt"}]\n'
    ],
    "ParamsGrid.grammar": [
        'prompts: ["hi"]\n' + HEAD + 'params: {grammar: "file://{D}secret.txt"}\n'
    ],
    "Constraint.grammar": [
        'prompts: [{raw: "hi", config: {grammar: "file://{D}secret.txt"}}]\n' + HEAD
    ],
    # Sites outside the suite schema: templates' own includes, CSV check cells, test files.
    "include": ["prompts: [\"{% include '{D}secret.txt' %}\"]\n" + HEAD],
    "include-relative": ['prompts: ["file://prompts/p.j2"]\n' + HEAD],
    "csv-check-cell": ['prompts: ["{{ x }}"]\n' + HEAD + 'tests: "file://t.csv"\n'],
    "test-file-check": ['prompts: ["hi"]\n' + HEAD + 'tests: "file://t.yaml"\n'],
}
NON_SCHEMA_SITES = {"include", "include-relative", "csv-check-cell", "test-file-check"}


def _schema_sites() -> set[str]:
    """Every (model, field) of the suite's JSON schema that may name a file."""
    schema = core.suite_schema()
    sites = {f"Suite.{k}" for k, v in schema["properties"].items() if "x-promptlab-file" in v}
    for name, definition in schema["$defs"].items():
        for key, prop in definition.get("properties", {}).items():
            if "x-promptlab-file" in prop:
                sites.add(f"{name}.{key}")
    return sites


def test_every_file_site_in_the_schema_has_a_hostile_case() -> None:
    assert set(SITE_CASES) - NON_SCHEMA_SITES == _schema_sites()


def test_every_field_that_mentions_files_is_marked() -> None:
    # A new field whose description says file:// but lacks the marker would skip the table above.
    schema = core.suite_schema()
    unmarked = []
    for name, definition in [("Suite", schema), *schema["$defs"].items()]:
        for key, prop in definition.get("properties", {}).items():
            if "file://" in prop.get("description", "") and "x-promptlab-file" not in prop:
                unmarked.append(f"{name}.{key}")
    assert unmarked == []


def _plant(lab: Lab, variant: str) -> str:
    """Prepare the project for a variant; returns the {D} prefix."""
    d = "../" if variant == "dotdot" else ""
    if variant == "symlink":
        for name in ("secret.txt", "secret.json", "secret.csv", "secret.yaml", "evil.py"):
            (lab.root / name).symlink_to(lab.outside / name)
    lab.project.write("prompts/p.j2", "{% include './../" + d + "secret.txt' %}")
    lab.project.write("t.csv", f"x,__expected\nhi,file://{d}evil.py:f\n")
    lab.project.write("t.yaml", f'- assert: [{{type: contains, value: "file://{d}secret.txt"}}]\n')
    return d


CASE_IDS = [(site, i) for site, texts in SITE_CASES.items() for i in range(len(texts))]


@pytest.mark.parametrize("variant", ["dotdot", "symlink"])
@pytest.mark.parametrize(("site", "index"), CASE_IDS, ids=[f"{s}-{i}" for s, i in CASE_IDS])
def test_a_file_outside_the_project_is_refused_everywhere(
    lab: Lab, cli: Cli, site: str, index: int, variant: str
) -> None:
    d = _plant(lab, variant)
    suite = lab.suite(SITE_CASES[site][index].replace("{D}", d))
    # Consent to run code does not widen what may be read.
    for command in ("validate", "render"):
        _assert_refused(cli(command, suite), lab, "outside the project")
    out = lab.root / "out"
    result = cli("run", suite, "-o", out, "--allow-code", "--no-cache")
    _assert_refused(result, lab, "outside the project")
    assert not out.exists()
    if variant == "symlink":
        assert "(a link to " in result.err


@pytest.mark.parametrize(
    "suite",
    [
        'prompts: ["file://x.txt"]\n' + HEAD,
        'prompts: ["{{ v }}"]\n' + HEAD + 'vars: {v: "file://x.txt"}\n',
        'prompts: ["hi"]\n' + HEAD + 'params: {grammar: "file://x.txt"}\n',
        'prompts: ["hi"]\nmodels: [{path: "fake://echo", chat_template: "file://x.txt"}]\n',
        "prompts: [\"{% include 'x.txt' %}\"]\n" + HEAD,
        'prompts: ["{{ x }}"]\n' + HEAD + 'tests: "file://x.txt"\n',
    ],
    ids=["prompt", "var", "grammar", "chat-template", "include", "tests"],
)
@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "too-big"])
@pytest.mark.timeout(30)
def test_only_regular_files_of_bounded_size_are_read(
    lab: Lab, cli: Cli, suite: str, kind: str
) -> None:
    target = lab.root / "x.txt"
    if kind == "dev-zero":
        target.symlink_to("/dev/zero")  # a MemoryError before the fix
        expect = "(a link to /dev/zero) is outside the project"
    elif kind == "fifo":
        os.mkfifo(target)  # a hang before the fix
        expect = "not a regular file"
    else:
        with target.open("wb") as f:
            f.truncate(files.MAX_FILE_BYTES + 1)  # sparse: costs no disk
        expect = "may hold at most 64 MiB"
    path = lab.suite(suite)
    _assert_refused(cli("validate", path), lab, expect)


def test_globs_stay_inside_the_project(lab: Lab, cli: Cli) -> None:
    lab.project.write("tests/a.csv", "x\nalpha\n")
    (lab.root / "tests" / "loop").symlink_to(lab.root)  # would make ** recurse forever
    (lab.root / "tests" / "ext").symlink_to(lab.outside)  # would reach secret.csv
    path = lab.suite('prompts: ["{{ x }}"]\n' + HEAD + 'tests: "file://tests/**/*.csv"\n')
    result = cli("render", path, "--json")
    assert result.code == 0, result.err
    assert [c["test"] for c in json.loads(result.out)] == ["test 1"]
    assert SECRET not in result.out
    for pattern in ("../*.csv", "*/../../*.csv"):
        path = lab.suite('prompts: ["{{ x }}"]\n' + HEAD + f'tests: "file://{pattern}"\n')
        _assert_refused(cli("validate", path), lab)


# --- where the project ends --------------------------------------------------------------------


def _folder_suite(folder: Path, prompt: str) -> Path:
    suite = folder / "s.yaml"
    suite.parent.mkdir(parents=True, exist_ok=True)
    suite.write_text(f'prompts: ["{prompt}"]\nmodels: ["fake://echo"]\n')
    return suite


def test_outside_git_the_root_is_the_suites_folder_not_the_cwd(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    outer = tmp_path / "outer"  # no .git anywhere above
    outer.mkdir()
    (outer / "secret.txt").write_text(SECRET)
    monkeypatch.chdir(outer)
    suite = _folder_suite(outer / "evals", "{% include 'secret.txt' %}")
    result = cli("render", suite)
    assert result.code == 2 and SECRET not in result.out + result.err
    assert "'secret.txt' not found" in result.err


def test_run_from_the_filesystem_root_reads_nothing_outside_the_suite_folder(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    monkeypatch.chdir("/")
    suite = _folder_suite(tmp_path / "dl", "{% include '" + str(secret.relative_to("/")) + "' %}")
    result = cli("render", suite)
    assert result.code == 2 and SECRET not in result.out + result.err


def test_a_home_folder_under_git_is_never_the_project(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / ".git").mkdir(parents=True)  # dotfiles in git
    (home / "secret.txt").write_text(SECRET)
    monkeypatch.setenv("HOME", str(home))
    suite = _folder_suite(home / "Downloads" / "suite", "{% include 'secret.txt' %}")
    result = cli("render", suite)
    assert result.code == 2 and SECRET not in result.out + result.err


def test_promptlab_toml_marks_a_project_outside_git(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    proj = tmp_path / "proj"
    (proj / "prompts").mkdir(parents=True)
    (proj / "prompts" / "p.j2").write_text("Hello {{ name }}")
    (proj / files.PROJECT_MARKER).write_text("")
    suite = proj / "evals" / "s.yaml"
    suite.parent.mkdir()
    suite.write_text(
        'prompts: ["file://../prompts/p.j2"]\nmodels: ["fake://echo"]\nvars: {name: Ada}\n'
    )
    monkeypatch.chdir(tmp_path)
    result = cli("render", suite, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)[0]["text"] == "Hello Ada"
    (proj / files.PROJECT_MARKER).unlink()  # now the project is evals/ alone
    refused = cli("render", suite)
    assert refused.code == 2 and "outside the project" in refused.err


# --- consent to run code comes from the person -------------------------------------------------

CODE_SUITE = """
allow_code: true                  # a suite granting itself consent: ignored
env: {PROMPTLAB_ALLOW_CODE: "1"}  # promptfoo's env: ignored too
prompts: ["hi"]
models: ["fake://echo"]
tests:
  - assert:
      - {type: python, value: "file://checks.py:f"}
      - {type: python, value: "open(MARKER, 'w').write('inline ran') or True"}
    transform: "file://checks.py:f"
  - "file://t.csv"
"""


@pytest.fixture
def code_lab(lab: Lab) -> Path:
    lab.project.write("checks.py", _evil(lab.marker))
    lab.project.write("t.csv", f"__expected\n\"python: open({str(lab.marker)!r}, 'w')\"\n")
    lab.project.write("promptlab.toml", "allow_code = true\n")  # a project file cannot grant it
    return lab.suite(CODE_SUITE.replace("MARKER", repr(str(lab.marker))))


@pytest.mark.parametrize("consent", ["none", "flag", "env", "trust"])
def test_validate_and_render_never_execute_code(
    lab: Lab, code_lab: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch, consent: str
) -> None:
    flag = ["--allow-code"] if consent == "flag" else []
    if consent == "env":
        monkeypatch.setenv("PROMPTLAB_ALLOW_CODE", "1")
    if consent == "trust":
        assert cli("trust", lab.root).code == 0
    for argv in (["validate", code_lab], ["render", code_lab], ["render", code_lab, "--json"]):
        result = cli(*argv, *flag)
        assert result.code == 0, result.err
        assert not lab.marker.exists(), f"{argv[0]} executed user code"
        note = " ".join(result.err.split())
        assert "names Python code" in note
        assert ("will execute it" in note) == (consent != "none")


def test_run_refuses_code_without_consent(lab: Lab, code_lab: Path, cli: Cli) -> None:
    out = lab.root / "out"
    result = cli("run", code_lab, "-o", out)
    assert result.code == 2 and not out.exists() and not lab.marker.exists()
    error = result.err.splitlines()[-1]
    for way in ("--allow-code", "PROMPTLAB_ALLOW_CODE=1", "promptlab trust"):
        assert way in error
    assert "the suite's own allow_code: does not count" in error


@pytest.mark.parametrize("consent", ["flag", "env", "trust"])
def test_run_executes_code_with_the_persons_consent(
    lab: Lab, code_lab: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch, consent: str
) -> None:
    args = []
    if consent == "flag":
        args = ["--allow-code"]
    elif consent == "env":
        monkeypatch.setenv("PROMPTLAB_ALLOW_CODE", "yes")
    else:
        lab.project.write("sub/readme.txt", "any folder of the project will do")
        assert cli("trust", lab.root / "sub").code == 0
    out = lab.root / "out"
    result = cli("run", code_lab, "-o", out, "--no-cache", *args)
    assert result.code in (0, 100), result.err
    assert lab.marker.exists()
    manifest = json.loads((out / "manifest.json").read_text())
    source = {"flag": "--allow-code", "env": "PROMPTLAB_ALLOW_CODE", "trust": "promptlab trust"}
    assert manifest["code"]["consent"] == source[consent]
    assert len(manifest["code"]["used_at"]) >= 3


def test_trust_is_kept_outside_the_project_and_can_be_revoked(
    lab: Lab, code_lab: Path, cli: Cli
) -> None:
    assert cli("trust", lab.root).code == 0
    listed = cli("trust", "--list")
    assert str(lab.root.resolve()) in listed.out
    stored = Path(os.environ["PROMPTLAB_CONFIG"]) / "trusted-projects.json"
    assert str(lab.root.resolve()) in stored.read_text()
    assert cli("trust", "--revoke", lab.root).code == 0
    refused = cli("run", code_lab, "-o", lab.root / "out")
    assert refused.code == 2 and not lab.marker.exists()


def test_a_bad_consent_variable_is_an_error(
    lab: Lab, code_lab: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMPTLAB_ALLOW_CODE", "maybe")
    result = cli("run", code_lab, "-o", lab.root / "out")
    assert result.code == 2 and "PROMPTLAB_ALLOW_CODE" in result.err
    assert not lab.marker.exists()


def test_resume_asks_for_consent_again(lab: Lab, cli: Cli) -> None:
    lab.project.write("checks.py", "def f(output, context):\n    return True\n")
    suite = lab.suite(
        'prompts: ["a", "b"]\nmodels: ["fake://echo"]\n'
        'tests: [{assert: [{type: python, value: "file://checks.py:f"}]}]\n'
    )
    out = lab.root / "out"
    assert cli("run", suite, "-o", out, "--no-cache", "--allow-code").code == 0
    # Make it look interrupted, with a manifest that claims consent (as older runs recorded it).
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["status"] = "interrupted"
    manifest["run_args"]["allow_code"] = True
    (out / "manifest.json").write_text(json.dumps(manifest))
    rows = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text(rows[0] + "\n")
    lab.project.write("checks.py", _evil(lab.marker))
    refused = cli("run", "--resume", out)
    assert refused.code == 2 and "--allow-code" in refused.err
    assert not lab.marker.exists()


# --- terminal injection ------------------------------------------------------------------------

# OSC 0 (window title), clear screen, C1 CSI and a right-to-left override.
INJECT = "\\e]0;pwned\\a\\e[2J\\u009b31m\\u202e"
INJECTED = ("\x1b]0;pwned", "\x1b[2J", "\x9b31m", "\u202e")


def _assert_clean(result: CliResult) -> None:
    text = result.out + result.err
    for raw in INJECTED:
        assert raw not in text, (raw, text)


def test_escape_sequences_are_shown_escaped(lab: Lab, cli: Cli) -> None:
    (lab.root / "prompts").mkdir()
    (lab.root / "prompts" / "p\x1b[2J.j2").write_text("Q: {{ q }}")
    suite = lab.suite(
        f"""
        description: "{INJECT}"
        prompts:
          - {{raw: "Say {{{{ q }}}}", label: "lbl{INJECT}"}}
          - "file://prompts/p\\e[2J.j2"
        models: [{{path: "fake://echo", label: "m{INJECT}"}}]
        outputPath: x
        tests:
          - description: "d{INJECT}"
            vars: {{q: "v{INJECT}"}}
            assert: [{{type: contains, value: "v{INJECT}"}}]
        """.replace("\n        ", "\n")
    )
    for argv in (
        ["validate", suite],
        ["render", suite],
        ["render", suite, "--json"],
        ["run", suite, "-o", lab.root / "out"],
        ["run", suite, "-o", lab.root / "out2", "--format", "json"],
    ):
        result = cli(*argv)
        assert result.code in (0, 100), result.err
        _assert_clean(result)
    shown = cli("render", suite)
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\u202e" in shown.out  # escaped, not dropped
    assert json.loads(cli("render", suite, "--json").out)[0]["vars"]["q"].startswith("v\x1b]0")


@pytest.mark.parametrize(
    "suite",
    [
        f'prompts: ["hi"]\n"k{INJECT}": 1\n',  # an unknown key, named in the error
        f'prompts: ["{{{{ missing{INJECT} }}}}"]\nmodels: ["fake://echo"]\n',
        f'prompts: ["file://nowhere{INJECT}.j2"]\n',
        f'prompts: ["hi"]\nmodels: ["fake://reply?text={quote(chr(27))}[2J&fail_on=hi"]\n',
    ],
    ids=["unknown-key", "template-error", "missing-file", "cell-error"],
)
def test_error_messages_show_escape_sequences_escaped(lab: Lab, cli: Cli, suite: str) -> None:
    path = lab.suite(suite)
    for command in ("validate", "run"):
        result = (
            cli(command, path, "-o", lab.root / "out") if command == "run" else cli(command, path)
        )
        _assert_clean(result)
        assert "\x1b" not in result.err


# --- CSV formula injection ---------------------------------------------------------------------

FORMULAS = ["=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1)", "\uff1d1+1"]


def _read(path: Path, encoding: str = "utf-8") -> list[dict[str, Any]]:
    with path.open(encoding=encoding, newline="") as f:
        return list(csv.DictReader(f))


def test_machine_csv_stays_exact_and_spreadsheet_copies_are_neutralized(lab: Lab, cli: Cli) -> None:
    models = ", ".join(
        f'{{path: "fake://reply?text={quote(f)}", label: m{i}}}' for i, f in enumerate(FORMULAS)
    )
    suite = lab.suite(f'prompts: ["hi"]\nmodels: [{models}]\n')
    out = lab.root / "out"
    assert cli("run", suite, "-o", out).code == 0
    exact = _read(out / "results.csv")
    assert sorted(r["output"] for r in exact) == sorted(FORMULAS)
    assert not (out / "spreadsheet").exists()  # only on request
    report = cli("report", out, "--spreadsheet")
    assert report.code == 0, report.err
    sheet_file = out / "spreadsheet" / "results.csv"
    assert sheet_file.read_bytes().startswith(b"\xef\xbb\xbf")  # Excel needs the BOM for UTF-8
    sheet = _read(sheet_file, "utf-8-sig")
    assert sorted(r["output"] for r in sheet) == sorted("'" + f for f in FORMULAS)
    assert [r["score"] for r in sheet] == [r["score"] for r in exact]  # numbers stay numbers
    assert _read(out / "results.csv") == exact
    for name in ("summary.csv", "comparisons.csv"):
        assert (out / "spreadsheet" / name).is_file()


# --- every suite-named file goes through the one door ------------------------------------------

# Modules that open files a suite does not name, and why. Anything else that opens a file must do
# it through promptlab/files.py.
RAW_READS_ALLOWED = {
    "engine/store.py": "the run folder promptlab itself writes",
    "reports/history.py": "run folders' manifests",
    "reports/baseline.py": "the project's baseline record (.promptlab/baseline.json)",
    "models/__init__.py": "model files (may live anywhere, see files.py), bundled packages, the sha cache",
    "models/gguf.py": "GGUF headers of model files",
    "consent.py": "the user's own trust file",
    "engine/tune.py": "/proc/stat",
    "core.py": "promptlab's packaged scaffold",
    "reports/html.py": "promptlab's packaged report assets",
    "scoring/graded.py": "promptlab's packaged judge prompt",
    "backends/llama_selftest.py": "the exactness self-test's verdict cache in ~/.cache/promptlab",
    "optimize/search.py": "the search trace it writes into the run folder",
    "optimize/report.py": "the run folder's search trace",
    "reports/tables.py": "the statistics memo in ~/.cache/promptlab",
    "models/ollama.py": "Ollama's manifests and small layer blobs (its store lives outside the project)",
    "models/hub.py": "the hub cache's refs, in huggingface_hub's own layout",
    "backends/fake.py": "crash_after's and barrier's empty markers, beside the confined rules file",
}
_RAW_READ = re.compile(
    r"(?<!files)\.read_text\(|\.read_bytes\(|(?<![\w.])open\(|\.open\(|fdopen\(|spec_from_file_location"
)
_RUN_CODE = re.compile(r"(?<![\w.])(exec|eval)\(|import_module\(")


def test_suite_files_are_opened_only_through_files_py() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == "files.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if _RAW_READ.search(code) and rel not in RAW_READS_ALLOWED:
                offenders.append(f"{rel}:{n}: {line.strip()}")
            if _RUN_CODE.search(code) and rel != "scoring/code.py":
                offenders.append(f"{rel}:{n}: runs code: {line.strip()}")
    assert offenders == []


def test_the_readme_says_what_a_suite_can_do_without_consent() -> None:
    readme = textwrap.dedent((PACKAGE.parent / "README.md").read_text())
    section = readme.split("## Security", 1)[1].split("\n## ", 1)[0]
    for piece in (
        "--allow-code",
        "PROMPTLAB_ALLOW_CODE",
        "promptlab trust",
        "promptlab.toml",
        "symlink",
        "escape",
        "--spreadsheet",
    ):
        assert piece in section, piece
