"""`promptlab run` and `promptlab report` end to end on the fake backend (fast, no model)."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import CliResult, Project

from promptlab import __version__

Cli = Callable[..., CliResult]

# Two prompts × two tests × two models = 8 cells; every check passes.
SUITE = """
description: fake run
prompts:
  - raw: "Say {{ word }}"
    label: say
  - raw: "Please repeat {{ word }} now"
    label: repeat
models:
  - path: fake://echo
    label: echo
    n_ctx: 64
  - path: fake://reply?text=hello%20world
    label: reply
    n_ctx: 64
params:
  max_tokens: 16
tests:
  - description: greet
    vars: {word: hello}
    assert:
      - type: icontains
        value: "{{ word }}"
  - description: planet
    vars: {word: world}
    assert:
      - type: icontains
        value: world
"""

ROW_KEYS = {
    "cell_id",
    "model",
    "prompt",
    "test",
    "vars",
    "rendered_prompt",
    "output",
    "status",
    "checks",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "tokens_per_s",
    "error",
}


def read_jsonl(folder: Path) -> list[dict[str, Any]]:
    """Rows in suite order (the file holds them in run order)."""
    lines = (folder / "results.jsonl").read_text(encoding="utf-8").splitlines()
    return sorted((json.loads(line) for line in lines), key=lambda r: r["order"])


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def read_manifest(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    return data


def one_suite(project: Project, text: str = SUITE, name: str = "evals/suite.yaml") -> Path:
    return project.write(name, text)


def single_model_suite(model: str, tests: str, prompts: str | None = None) -> str:
    prompts = prompts or '  - raw: "Say {{ word }}"\n    label: say\n'
    return (
        f"prompts:\n{prompts}models:\n  - path: {model}\n    label: m\n    n_ctx: 64\n"
        f"params:\n  max_tokens: 16\ntests:\n{tests}"
    )


LONG_WORDS = " ".join(["w"] * 80)
LONG_TESTS = f"""\
  - description: short one
    vars: {{word: alpha}}
    assert:
      - type: icontains
        value: alpha
  - description: too long
    vars: {{word: "{LONG_WORDS}"}}
  - description: short two
    vars: {{word: omega}}
    assert:
      - type: icontains
        value: omega
"""


# --- a complete run ------------------------------------------------------------------------


def test_run_writes_results_reports_and_manifest(project: Project, cli: Cli) -> None:
    suite = one_suite(project)
    out = project.root / "out"
    r = cli("run", suite, "-o", out)
    assert r.code == 0, r.err
    assert "8 cells: 8 passed" in r.out

    rows = read_jsonl(out)
    assert len(rows) == 8  # 2 prompts × 2 tests × 2 models
    assert {(r["model"], r["prompt"], r["test"]) for r in rows} == {
        (m, p, t) for m in ("echo", "reply") for p in ("say", "repeat") for t in ("greet", "planet")
    }
    for row in rows:
        assert row.keys() >= ROW_KEYS
        assert row["status"] == "pass"
        assert row["error"] is None
        assert isinstance(row["latency_ms"], float)
        assert row["latency_ms"] >= 0
        assert isinstance(row["prompt_tokens"], int)
        assert row["prompt_tokens"] > 0
        assert isinstance(row["completion_tokens"], int)
        assert row["completion_tokens"] > 0
        assert row["tokens_per_s"] is None or row["tokens_per_s"] > 0
        assert row["checks"], "every test has a check"
        for check in row["checks"]:
            assert check["pass"] is True
            assert check["reason"]
            assert check["check"].startswith("icontains")
    say_greet = next(
        r for r in rows if (r["model"], r["prompt"], r["test"]) == ("echo", "say", "greet")
    )
    assert say_greet["vars"] == {"word": "hello"}
    assert say_greet["rendered_prompt"] == "Say hello"
    assert say_greet["output"] == "Say hello"
    assert say_greet["prompt_tokens"] == 3  # two words + BOS
    assert say_greet["completion_tokens"] == 2
    reply = next(r for r in rows if r["model"] == "reply")
    assert reply["output"] == "hello world"

    results = read_csv(out / "results.csv")
    assert len(results) == 8
    assert "var_word" in results[0]
    assert {r["var_word"] for r in results} == {"hello", "world"}
    assert all(r["failed_checks"] == "" for r in results)
    assert all(r["status"] == "pass" for r in results)
    assert {r["prompt_tokens"] for r in results if r["model"] == "echo"} <= {"3", "4", "5"}

    summary = read_csv(out / "summary.csv")
    assert len(summary) == 4  # prompt × model
    assert {(s["model"], s["prompt"]) for s in summary} == {
        (m, p) for m in ("echo", "reply") for p in ("say", "repeat")
    }
    for s in summary:
        assert float(s["pass_rate"]) == 1.0
        assert (s["cells"], s["passed"], s["failed"], s["errors"]) == ("2", "2", "0", "0")
        assert float(s["mean_latency_ms"]) >= 0
        assert float(s["mean_tokens_per_s"]) > 0

    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>")
    assert "fake run" in html


def test_manifest_records_everything_needed_to_reproduce(project: Project, cli: Cli) -> None:
    suite = one_suite(project)
    out = project.root / "out"
    assert cli("run", suite, "-o", out, "--limit", "1").code == 0
    m = read_manifest(out)
    assert m["status"] == "complete"
    assert m["promptlab_version"] == __version__
    assert m["suite"]["path"] == "evals/suite.yaml"
    assert m["suite"]["sha256"] == _sha256(suite)
    assert re.fullmatch(r"[0-9a-f]{64}", m["templates"]["say"])
    assert re.fullmatch(r"[0-9a-f]{64}", m["templates"]["repeat"])
    assert m["templates"]["say"] != m["templates"]["repeat"]
    assert m["command"] == ["promptlab", "run", str(suite), "-o", str(out), "--limit", "1"]
    assert set(m["git"]) >= {"commit", "dirty"}
    assert m["started_at"] <= m["finished_at"]
    assert m["params"]["max_tokens"] == 16
    assert m["params"]["temperature"] == 0.0
    assert m["params"]["seed"] == 0
    assert m["params"]["stop"] == []
    assert m["selection"] == {"limit": 1, "cells": 4, "cells_in_suite": 8}
    assert [x["label"] for x in m["models"]] == ["echo", "reply"]
    for model in m["models"]:
        settings = model["load_settings"]
        assert settings["n_ctx"] == 64
        assert settings["n_batch"] == 64  # the default batch (512) follows a small context down
        assert isinstance(settings["n_threads"], int)
        assert settings["n_threads"] >= 1
        assert "n_gpu_layers" in settings
        assert model["runtime"]["backend"] == "fake"
        assert model["runtime"]["gpu_offload_supported"] is False
        assert isinstance(model["load_ms"], float)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_manifest_git_commit_and_dirty_flag(project: Project, cli: Cli) -> None:
    shutil.rmtree(project.root / ".git")
    suite = one_suite(project)

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
            cwd=project.root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "suite")
    head = git("rev-parse", "HEAD")
    assert cli("run", suite, "-o", project.root / "clean").code == 0
    assert read_manifest(project.root / "clean")["git"]["commit"] == head
    # The run folders themselves are untracked and do not make the tree dirty.
    assert read_manifest(project.root / "clean")["git"]["dirty"] is False

    suite.write_text(suite.read_text() + "\n# edited\n")
    assert cli("run", suite, "-o", project.root / "dirty").code == 0
    dirty = read_manifest(project.root / "dirty")
    assert dirty["git"]["dirty"] is True
    assert f"{head} (dirty)" in (project.root / "dirty" / "report.html").read_text()


def test_failed_assertion_exits_100_and_lists_the_check(project: Project, cli: Cli) -> None:
    text = single_model_suite(
        "fake://echo",
        """\
  - description: passes
    vars: {word: apple}
    assert:
      - type: contains
        value: apple
  - description: fails
    vars: {word: pear}
    assert:
      - type: contains
        value: banana
""",
    )
    out = project.root / "out"
    r = cli("run", one_suite(project, text), "-o", out)
    assert r.code == 100, r.err
    rows = {r["test"]: r for r in read_csv(out / "results.csv")}
    assert rows["passes"]["status"] == "pass"
    assert rows["passes"]["failed_checks"] == ""
    assert rows["fails"]["status"] == "fail"
    assert rows["fails"]["pass"] == "False"
    assert "banana" in rows["fails"]["failed_checks"]
    assert "FAIL" in rows["fails"]["checks"]
    (summary,) = read_csv(out / "summary.csv")
    assert (summary["passed"], summary["failed"], summary["errors"]) == ("1", "1", "0")
    assert float(summary["pass_rate"]) == 0.5
    assert read_manifest(out)["status"] == "complete"


# --- cell errors do not stop the run ---------------------------------------------------------


def test_prompt_longer_than_n_ctx_is_an_error_row(project: Project, cli: Cli) -> None:
    out = project.root / "out"
    r = cli("run", one_suite(project, single_model_suite("fake://echo", LONG_TESTS)), "-o", out)
    assert r.code == 100, r.err
    rows = read_jsonl(out)
    assert [r["test"] for r in rows] == ["short one", "too long", "short two"]
    short1, long_, short2 = rows
    assert long_["status"] == "error"
    # "Say" + 80 words + BOS, counted by the fake backend as words
    assert long_["error"].startswith("prompt is 82 tokens but n_ctx is 64")
    assert long_["output"] is None
    assert long_["checks"] == []
    assert long_["rendered_prompt"].startswith("Say w w")
    for ok in (short1, short2):
        assert ok["status"] == "pass"
        assert ok["output"]
    (summary,) = read_csv(out / "summary.csv")
    assert (summary["cells"], summary["passed"], summary["errors"]) == ("3", "2", "1")
    csv_rows = read_csv(out / "results.csv")
    assert csv_rows[1]["error"].startswith("prompt is 82 tokens but n_ctx is 64")
    assert csv_rows[1]["prompt_tokens"] == ""
    assert csv_rows[0]["prompt_tokens"] == "3"  # integers stay integers next to an error row
    assert read_manifest(out)["status"] == "complete"
    assert "1 errors" in r.out


def test_fail_on_cell_error_is_recorded_and_the_run_goes_on(project: Project, cli: Cli) -> None:
    tests = """\
  - vars: {word: fine}
  - vars: {word: BOOM}
  - vars: {word: good}
"""
    out = project.root / "out"
    r = cli(
        "run",
        one_suite(project, single_model_suite("fake://echo?fail_on=BOOM", tests)),
        "-o",
        out,
    )
    assert r.code == 100, r.err
    rows = read_jsonl(out)
    # the tests have no checks: their outputs are "unchecked", and only the error fails the run
    assert [r["status"] for r in rows] == ["unchecked", "error", "unchecked"]
    assert "simulated failure" in rows[1]["error"]
    assert "BOOM" in rows[1]["error"]
    assert [r["output"] for r in rows] == ["Say fine", None, "Say good"]


# --- interruption and load failure -----------------------------------------------------------


def test_ctrl_c_keeps_finished_cells_and_exits_130(project: Project, cli: Cli) -> None:
    suite = one_suite(project)
    out = project.root / "out"
    r = cli("run", suite, "-o", out, "--model", "fake://echo?interrupt_after=2")
    assert r.code == 130, r.err
    m = read_manifest(out)
    assert m["status"] == "interrupted"
    assert m["finished_at"] is not None
    assert len(read_jsonl(out)) == 2
    assert len(read_csv(out / "results.csv")) == 2
    summary = read_csv(out / "summary.csv")
    assert sum(int(s["cells"]) for s in summary) == 2
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "interrupted" in html
    assert "2/2 cells passed" in html
    assert "interrupted" in r.out


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_real_sigint_in_a_subprocess(project: Project) -> None:
    suite = one_suite(project)
    out = project.root / "out"
    argv = ["run", str(suite), "-o", str(out), "--model", "fake://echo?sleep_ms=300"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "promptlab", *argv],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    results = out / "results.jsonl"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if results.exists() and results.read_text(encoding="utf-8").count("\n") >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    m = read_manifest(out)
    assert m["status"] == "interrupted"
    done = read_jsonl(out)
    assert 2 <= len(done) < 8
    assert len(read_csv(out / "results.csv")) == len(done)
    assert (out / "report.html").is_file()
    assert "Traceback" not in err


def test_load_failure_exits_1_with_one_line_error(project: Project, cli: Cli) -> None:
    suite = one_suite(project)
    out = project.root / "out"
    r = cli("run", suite, "-o", out, "--model", "fake://echo?load_error=1")
    assert r.code == 1
    errors = [line for line in r.err.splitlines() if line.startswith("error:")]
    assert errors == ["error: fake://echo?load_error=1: simulated load failure"]
    assert "Traceback" not in r.err
    m = read_manifest(out)
    assert m["status"] == "failed"
    assert "simulated load failure" in m["error"]
    assert read_csv(out / "results.csv") == []


def test_unknown_model_is_bad_input_and_writes_nothing(project: Project, cli: Cli) -> None:
    out = project.root / "out"
    r = cli("run", one_suite(project), "-o", out, "--model", "missing.gguf")
    assert r.code == 2
    assert r.err.count("\n") == 1
    assert "not found" in r.err
    assert not out.exists()


def test_refuses_to_mix_two_runs_in_one_folder(project: Project, cli: Cli) -> None:
    suite = one_suite(project)
    out = project.root / "out"
    assert cli("run", suite, "-o", out).code == 0
    before = (out / "results.jsonl").read_bytes()
    r = cli("run", suite, "-o", out)
    assert r.code == 2
    assert "already holds a run" in r.err
    assert (out / "results.jsonl").read_bytes() == before


# --- selecting cells --------------------------------------------------------------------------


def test_filter_selects_cells(project: Project, cli: Cli) -> None:
    out = project.root / "out"
    r = cli("run", one_suite(project), "-o", out, "--filter", "^repeat")
    assert r.code == 0, r.err
    rows = read_jsonl(out)
    assert len(rows) == 4
    assert {r["prompt"] for r in rows} == {"repeat"}
    assert read_manifest(out)["selection"]["cells"] == 4

    out2 = project.root / "out2"
    assert cli("run", one_suite(project), "-o", out2, "--filter", "world").code == 0
    assert {r["test"] for r in read_jsonl(out2)} == {"planet"}  # matches a var's value


def test_filter_matching_nothing_is_bad_input(project: Project, cli: Cli) -> None:
    out = project.root / "out"
    r = cli("run", one_suite(project), "-o", out, "--filter", "zzz")
    assert r.code == 2
    assert "matched none of the 8 cells" in r.err
    assert not out.exists()


def test_limit_counts_tests_across_prompts_and_models(project: Project, cli: Cli) -> None:
    tests = "".join(f"  - vars: {{word: w{i}}}\n" for i in range(4))
    prompts = '  - raw: "A {{ word }}"\n    label: a\n  - raw: "B {{ word }}"\n    label: b\n'
    suite = one_suite(project, single_model_suite("fake://echo", tests, prompts))
    out = project.root / "out"
    assert cli("run", suite, "-o", out, "--limit", "2").code == 0
    rows = read_jsonl(out)
    assert len(rows) == 4  # 2 tests × 2 prompts
    assert {r["test"] for r in rows} == {"test 1", "test 2"}
    assert {r["prompt"] for r in rows} == {"a", "b"}

    out2 = project.root / "out2"
    assert cli("run", suite, "-o", out2, "--filter", "w[23]", "--limit", "1").code == 0
    assert {r["test"] for r in read_jsonl(out2)} == {"test 3"}  # limit applies after the filter


def test_limit_must_be_positive(project: Project, cli: Cli) -> None:
    r = cli("run", one_suite(project), "--limit", "0")
    assert r.code == 2
    assert "--limit" in r.err
    assert not (project.root / "results").exists()


def test_default_output_folder_is_under_project_results(
    project: Project, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_suite(project)
    (project.root / "evals").mkdir(exist_ok=True)
    # Run from a subfolder: the folder still goes under the project root, not the cwd.
    monkeypatch.chdir(project.root / "evals")
    r = cli("run", "suite.yaml")
    assert r.code == 0, r.err
    folders = list((project.root / "results").iterdir())
    assert len(folders) == 1
    # suite.yaml is a generic name: the run is named after the description ("fake run")
    assert re.fullmatch(r"fake-run-\d{8}-\d{6}", folders[0].name)
    assert (folders[0] / "manifest.json").is_file()
    assert not (project.root / "evals" / "results").exists()
    # A second run never reuses the first one's folder, even within the same second.
    assert cli("run", "suite.yaml").code == 0
    assert len(list((project.root / "results").iterdir())) == 2


# --- rebuilding reports ------------------------------------------------------------------------


def test_report_rebuilds_identical_files(project: Project, cli: Cli) -> None:
    out = project.root / "out"
    assert (
        cli(
            "run", one_suite(project, single_model_suite("fake://echo", LONG_TESTS)), "-o", out
        ).code
        == 100
    )
    names = ("results.csv", "summary.csv", "report.html")
    before = {n: (out / n).read_bytes() for n in names}
    for n in names:
        (out / n).unlink()
    r = cli("report", out)
    assert r.code == 0, r.err
    assert {n: (out / n).read_bytes() for n in names} == before
    assert "3 cells: 2 passed, 0 failed, 1 errors" in r.out


def test_report_ignores_a_half_written_last_line(project: Project, cli: Cli) -> None:
    out = project.root / "out"
    assert cli("run", one_suite(project), "-o", out).code == 0
    before = (out / "results.csv").read_bytes()
    with (out / "results.jsonl").open("a", encoding="utf-8") as f:
        f.write('{"cell_id": "ab')
    r = cli("report", out)
    assert r.code == 0, r.err
    assert (out / "results.csv").read_bytes() == before
    assert "8 cells" in r.out


def test_report_refuses_a_corrupt_middle_line(project: Project, cli: Cli) -> None:
    out = project.root / "out"
    assert cli("run", one_suite(project), "-o", out).code == 0
    lines = (out / "results.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    lines[2] = '{"cell_id": "ab\n'
    (out / "results.jsonl").write_text("".join(lines), encoding="utf-8")
    r = cli("report", out)
    assert r.code == 2
    assert r.err.count("\n") == 1
    assert r.err.startswith("error: ")
    assert "results.jsonl:3: corrupt result line" in r.err


def test_report_on_a_folder_without_a_run(project: Project, cli: Cli) -> None:
    (project.root / "empty").mkdir()
    r = cli("report", project.root / "empty")
    assert r.code == 2
    assert "no manifest.json" in r.err or "no results.jsonl" in r.err
    r = cli("report", project.root / "nowhere")
    assert r.code == 2
    assert "not a folder" in r.err
