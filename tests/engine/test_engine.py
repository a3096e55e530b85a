"""The experiment engine on the fake backend: parameter grids, repeats with seeds, prefix-aware
order, the result cache, resume, and cell selection."""

from __future__ import annotations

import csv
import json
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import CliResult, Project

Cli = Callable[..., CliResult]

SUITE = """
prompts:
  - raw: "Shared system block. Question: {{ q }}"
    label: a
  - raw: "Another head entirely. Question: {{ q }}"
    label: b
models: ["fake://echo"]
tests:
  - description: one
    vars: {q: alpha}
    assert: [{type: contains, value: alpha}]
  - description: two
    vars: {q: beta}
    assert: [{type: contains, value: beta}]
  - description: three
    vars: {q: gamma}
    assert: [{type: contains, value: zeta}]
"""


def rows_in_file_order(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def rows(out: Path) -> list[dict[str, Any]]:
    return sorted(rows_in_file_order(out), key=lambda r: r["order"])


def manifest(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    return data


def write(project: Project, text: str = SUITE) -> Path:
    return project.write("evals/s.yaml", text)


# --- grid and repeats --------------------------------------------------------------------------


def test_params_lists_make_a_grid(project: Project, cli: Cli) -> None:
    write(
        project,
        SUITE.replace(
            'models: ["fake://echo"]',
            'models: ["fake://echo"]\nparams:\n  temperature: [0, 0.7]\n  max_tokens: [4, 16]\n  stop: ["\\n"]',
        ),
    )
    r = cli("run", "evals/s.yaml", "-o", "out")
    assert r.code == 100, r.err
    got = rows(project.root / "out")
    assert len(got) == 2 * 3 * 4
    settings = {row["setting"] for row in got}
    assert settings == {
        "temperature=0.0, max_tokens=4",
        "temperature=0.0, max_tokens=16",
        "temperature=0.7, max_tokens=4",
        "temperature=0.7, max_tokens=16",
    }
    for row in got:
        assert row["params"]["stop"] == ["\n"]  # a list of strings is one setting, not a grid
        assert row["params"]["max_tokens"] == int(row["setting"].split("max_tokens=")[1])
    assert len({row["cell_id"] for row in got}) == len(got)
    with (project.root / "out" / "summary.csv").open() as f:
        summary = list(csv.DictReader(f))
    assert len(summary) == 2 * 4 and {s["setting"] for s in summary} == settings
    html = (project.root / "out" / "report.html").read_text()
    assert "a [temperature=0.7, max_tokens=16]" in html
    m = manifest(project.root / "out")
    assert m["grid"] == {"settings": 4, "varied": ["temperature", "max_tokens"], "repeat": 1}


def test_stop_grid_is_a_list_of_lists(project: Project, cli: Cli) -> None:
    write(
        project,
        SUITE.replace(
            'models: ["fake://echo"]',
            'models: ["fake://echo"]\nparams: {stop: [["x"], ["y", "z"]]}',
        ),
    )
    r = cli("render", "evals/s.yaml", "--json")
    assert r.code == 0, r.err
    r = cli("run", "evals/s.yaml", "-o", "out")
    assert {tuple(row["params"]["stop"]) for row in rows(project.root / "out")} == {
        ("x",),
        ("y", "z"),
    }


def test_repeats_get_their_own_seed_and_cache_entry(project: Project, cli: Cli) -> None:
    write(
        project,
        SUITE.replace(
            'models: ["fake://echo"]', 'models: ["fake://echo"]\nrepeat: 3\nparams: {seed: 10}'
        ),
    )
    r = cli("run", "evals/s.yaml", "-o", "out")
    got = rows(project.root / "out")
    assert len(got) == 2 * 3 * 3
    by_cell: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in got:
        by_cell.setdefault((row["prompt"], row["test"]), []).append(row)
    for group in by_cell.values():
        assert sorted((row["repeat"], row["seed"]) for row in group) == [(0, 10), (1, 11), (2, 12)]
    assert manifest(project.root / "out")["cache"]["writes"] == len(got)  # never one shared answer
    # The report keeps every repeat of a cell, with its seed, for the details panel.
    html = (project.root / "out" / "report.html").read_text()
    m = re.search(r'<script type="application/json" id="promptlab-data">(.*?)</script>', html)
    assert m
    tests = json.loads(m.group(1))["tests"]
    assert len(tests) == 3
    for test in tests:
        for cell in test["cells"]:
            assert [(rep["r"], rep["sd"]) for rep in cell] == [(0, 10), (1, 11), (2, 12)]
            assert len({rep["s"] for rep in cell}) == 1  # the fake backend is deterministic
    assert r.code == 100


def test_promptfoo_repeat_spelling(project: Project, cli: Cli) -> None:
    write(project, SUITE + "evaluateOptions: {repeat: 2}\n")
    cli("run", "evals/s.yaml", "-o", "out")
    assert {row["repeat"] for row in rows(project.root / "out")} == {0, 1}


def test_empty_grid_list_is_refused(project: Project, cli: Cli) -> None:
    write(
        project,
        SUITE.replace(
            'models: ["fake://echo"]', 'models: ["fake://echo"]\nparams: {temperature: []}'
        ),
    )
    r = cli("validate", "evals/s.yaml")
    assert r.code == 2 and "params.temperature is an empty list" in r.err


def test_grid_values_are_validated_one_by_one(project: Project, cli: Cli) -> None:
    write(
        project,
        SUITE.replace(
            'models: ["fake://echo"]', 'models: ["fake://echo"]\nparams: {temperature: [0, -1]}'
        ),
    )
    r = cli("validate", "evals/s.yaml")
    assert r.code == 2 and "s.yaml:" in r.err and "temperature" in r.err


# --- order -------------------------------------------------------------------------------------


def test_cells_run_grouped_by_shared_prefix_and_reports_keep_suite_order(
    project: Project, cli: Cli
) -> None:
    write(project)
    cli("run", "evals/s.yaml", "-o", "out")
    run_order = [row["prompt"] for row in rows_in_file_order(project.root / "out")]
    # "Another head…" sorts before "Shared system…": all of b's cells, then all of a's.
    assert run_order == ["b", "b", "b", "a", "a", "a"]
    with (project.root / "out" / "results.csv").open() as f:
        csv_order = [(r["test"], r["prompt"]) for r in csv.DictReader(f)]
    assert csv_order == [(t, p) for t in ("one", "two", "three") for p in ("a", "b")]
    assert manifest(project.root / "out")["prefix_reuse"]["prompt_tokens"] > 0


# --- cache -------------------------------------------------------------------------------------


def test_unchanged_rerun_is_served_from_the_cache_without_loading(
    project: Project, cli: Cli
) -> None:
    write(project)
    first = cli("run", "evals/s.yaml", "-o", "r1")
    second = cli("run", "evals/s.yaml", "-o", "r2")
    assert first.code == second.code == 100
    assert all(not row["cached"] for row in rows(project.root / "r1"))
    again = rows(project.root / "r2")
    assert all(row["cached"] for row in again)
    assert [row["output"] for row in again] == [row["output"] for row in rows(project.root / "r1")]
    m = manifest(project.root / "r2")
    assert m["cache"]["hits"] == 6 and m["cache"]["misses"] == 0
    assert m["models"][0]["loaded"] is False and "runtime" not in m["models"][0]
    assert "6 from the cache" in second.out
    assert (project.root / ".promptlab" / "cache.sqlite").is_file()


def test_changing_one_template_reruns_only_its_cells(project: Project, cli: Cli) -> None:
    write(project)
    cli("run", "evals/s.yaml", "-o", "r1")
    write(project, SUITE.replace("Another head entirely.", "A new head."))
    cli("run", "evals/s.yaml", "-o", "r2")
    fresh = {(row["prompt"], row["cached"]) for row in rows(project.root / "r2")}
    assert fresh == {("a", True), ("b", False)}


def test_no_cache_and_refresh(project: Project, cli: Cli) -> None:
    write(project)
    cli("run", "evals/s.yaml", "-o", "r0", "--no-cache")
    assert not (project.root / ".promptlab").exists()
    assert "cache" not in manifest(project.root / "r0")
    cli("run", "evals/s.yaml", "-o", "r1")
    cli("run", "evals/s.yaml", "-o", "r2", "--refresh")
    assert not any(row["cached"] for row in rows(project.root / "r2"))
    assert manifest(project.root / "r2")["cache"]["writes"] == 6
    db = project.root / "elsewhere.sqlite"
    cli("run", "evals/s.yaml", "-o", "r3", "--cache-db", db)
    assert db.is_file() and not any(row["cached"] for row in rows(project.root / "r3"))


def test_cache_key_covers_what_changes_output(project: Project, cli: Cli) -> None:
    write(project)
    cli("run", "evals/s.yaml", "-o", "r1")
    for i, change in enumerate(
        [
            ('models: ["fake://echo"]', 'models: [{path: "fake://echo", n_ctx: 2048}]'),
            ('models: ["fake://echo"]', 'models: ["fake://echo"]\nparams: {seed: 7}'),
            ('models: ["fake://echo"]', 'models: ["fake://echo"]\nparams: {max_tokens: 5}'),
            ('models: ["fake://echo"]', 'models: ["fake://echo"]\nparams: {logprobs: 1}'),
        ]
    ):
        write(project, SUITE.replace(*change))
        cli("run", "evals/s.yaml", "-o", f"x{i}")
        assert not any(row["cached"] for row in rows(project.root / f"x{i}")), change


def test_corrupt_cache_is_a_clear_error_with_a_way_out(project: Project, cli: Cli) -> None:
    write(project)
    db = project.root / ".promptlab" / "cache.sqlite"
    db.parent.mkdir()
    db.write_bytes(b"this is not a database" * 100)
    r = cli("run", "evals/s.yaml", "-o", "out")
    assert r.code == 1
    assert r.err.count("\n") == 1 and "cache.sqlite" in r.err and "--no-cache" in r.err
    assert not (project.root / "out").exists()
    assert cli("run", "evals/s.yaml", "-o", "out", "--no-cache").code == 100


def test_cached_entries_survive_in_sqlite(project: Project, cli: Cli) -> None:
    write(project)
    cli("run", "evals/s.yaml", "-o", "out")
    con = sqlite3.connect(project.root / ".promptlab" / "cache.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert con.execute("SELECT count(*), min(kind) FROM entries").fetchone() == (6, "generate")


# --- resume ------------------------------------------------------------------------------------


def test_resume_after_ctrl_c_matches_an_uninterrupted_run(project: Project, cli: Cli) -> None:
    # Same label, so the cells are the same cells as in the uninterrupted run below.
    interrupting = '[{path: "fake://echo?interrupt_after=2", label: fake}]'
    write(project, SUITE.replace('["fake://echo"]', interrupting))
    r = cli("run", "evals/s.yaml", "-o", "out", "--no-cache")
    assert r.code == 130
    assert len(rows(project.root / "out")) == 2
    with (project.root / "out" / "results.jsonl").open("a") as f:
        f.write('{"cell_id": "torn')  # a half-written line, as a kill -9 mid-write leaves
    r = cli("run", "--resume", "out")
    assert r.code == 130  # the fake model interrupts again after 2 more cells
    r = cli("run", "--resume", "out")
    assert r.code == 100, r.err  # the last 2 cells; one test fails its check
    done = rows(project.root / "out")
    assert len(done) == 6 and len({row["cell_id"] for row in done}) == 6
    m = manifest(project.root / "out")
    assert m["status"] == "complete" and len(m["resumed"]) == 2
    assert m["resumed"][0]["dropped_partial_line"] is True
    write(project, SUITE.replace('["fake://echo"]', '[{path: "fake://echo", label: fake}]'))
    cli("run", "evals/s.yaml", "-o", "straight", "--no-cache")
    straight = rows(project.root / "straight")
    strip = ("latency_ms", "tokens_per_s", "prompt_eval_ms", "eval_ms", "cached")
    assert [{k: v for k, v in row.items() if k not in strip} for row in done] == [
        {k: v for k, v in row.items() if k not in strip} for row in straight
    ]


def test_resume_refusals(project: Project, cli: Cli) -> None:
    write(project)
    cli("run", "evals/s.yaml", "-o", "done")
    r = cli("run", "--resume", "done")
    assert r.code == 2 and "already complete" in r.err
    write(project, SUITE.replace("fake://echo", "fake://echo?interrupt_after=1"))
    cli("run", "evals/s.yaml", "-o", "half", "--no-cache")
    write(
        project,
        SUITE.replace("fake://echo", "fake://echo?interrupt_after=1").replace("zeta", "eta"),
    )
    r = cli("run", "--resume", "half")
    assert r.code == 2 and "evals/s.yaml changed since this run started" in r.err
    r = cli("run", "evals/s.yaml", "--resume", "half")
    assert r.code == 2 and "drop SUITE" in r.err
    project.write("evals/t.yaml", SUITE)  # with one suite in evals/, `run` alone would run it
    assert cli("run").code == 2


# A Python check and a Python transform, each in its own file beside the suite.
CODE_SUITE = """
prompts: ["Say {{ q }}"]
models: ["fake://echo?interrupt_after=1"]
defaultTest:
  transform: file://post.py:clean
tests:
  - vars: {q: alpha}
    assert: [{type: python, value: "file://checks.py:ok"}]
  - vars: {q: beta}
    assert: [{type: python, value: "file://checks.py:ok"}]
"""


@pytest.mark.parametrize("edited", ["checks.py", "post.py"])
def test_resume_refuses_after_a_python_file_changed(
    project: Project, cli: Cli, edited: str
) -> None:
    write(project, CODE_SUITE)
    project.write("evals/checks.py", "def ok(output, context):\n    return True\n")
    project.write("evals/post.py", "def clean(output, context):\n    return output.strip()\n")
    assert cli("run", "evals/s.yaml", "-o", "half", "--no-cache", "--allow-code").code == 130
    assert {"evals/checks.py", "evals/post.py"} <= set(manifest(project.root / "half")["files"])
    path = project.root / "evals" / edited
    path.write_text(path.read_text() + "# edited\n")
    r = cli("run", "--resume", "half", "--allow-code")
    assert r.code == 2 and f"evals/{edited} changed since this run started" in r.err


# --- selection ---------------------------------------------------------------------------------


def test_filters_sample_and_failing(project: Project, cli: Cli) -> None:
    write(project)
    cli("run", "evals/s.yaml", "-o", "p", "--filter-prompt", "^a$")
    assert {row["prompt"] for row in rows(project.root / "p")} == {"a"}
    cli("run", "evals/s.yaml", "-o", "t", "--filter-test", "gam")
    assert {row["test"] for row in rows(project.root / "t")} == {"three"}
    cli("run", "evals/s.yaml", "-o", "s1", "--sample", "2", "--seed", "5")
    cli("run", "evals/s.yaml", "-o", "s2", "--sample", "2", "--seed", "5")
    picked = {row["test"] for row in rows(project.root / "s1")}
    assert len(picked) == 2 and picked == {row["test"] for row in rows(project.root / "s2")}
    assert manifest(project.root / "s1")["selection"]["sample"] == 2
    cli("run", "evals/s.yaml", "-o", "all")
    r = cli("run", "evals/s.yaml", "-o", "again", "--failing", "all")
    assert {(row["test"], row["status"]) for row in rows(project.root / "again")} == {
        ("three", "fail")
    }
    assert r.code == 100
    r = cli("run", "evals/s.yaml", "-o", "none", "--filter-test", "nothing-matches")
    assert r.code == 2 and "matched none" in r.err


@pytest.mark.parametrize("flag", ["--filter-prompt", "--filter-test"])
def test_bad_filter_regex(project: Project, cli: Cli, flag: str) -> None:
    write(project)
    r = cli("run", "evals/s.yaml", flag, "(")
    assert r.code == 2 and flag in r.err and r.err.count("\n") == 1
