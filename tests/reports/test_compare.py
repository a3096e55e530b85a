"""`promptlab compare`, `baseline` and `history` on crafted runs (fake backend, fast)."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import CliResult, Project

from promptlab.reports import compare as cmp
from promptlab.reports import history as hist

Cli = Callable[..., CliResult]

# Run A and run B answer from these rules. Per prompt (two prompts behave alike):
#   France  pass -> fail   regression
#   Spain   pass -> pass   changed output ("Madrid" -> "Madrid!")
#   Italy   fail -> pass   fix (A's answer carries a <script> that must stay inert)
#   Japan   pass -> pass   same
#   Peru    pass -> error  regression (fail_on=Peru in B)
RULES_A = {
    "France": "Paris",
    "Spain": "Madrid",
    "Italy": "Rome <script>alert(1)</script>",
    "Japan": "Tokyo",
    "Peru": "Lima",
}
RULES_B = {
    "France": "Lyon",
    "Spain": "Madrid!",
    "Italy": "Rome",
    "Japan": "Tokyo",
    "Peru": "Lima",
}
EXPECTED = {
    "France": "regression",
    "Spain": "changed",
    "Italy": "fix",
    "Japan": "same",
    "Peru": "regression",
}

SUITE = """
description: capitals
prompts:
  - raw: "Capital of {{ country }}?"
    label: plain
  - raw: "Q: the capital of {{ country }}\\nA:"
    label: qa
models:
  - path: "MODEL"
    label: fake
tests:
  - vars: {country: France, capital: Paris}
    assert: [{type: icontains, value: "{{ capital }}"}]
  - vars: {country: Spain, capital: Madrid}
    assert: [{type: icontains, value: "{{ capital }}"}]
  - vars: {country: Italy, capital: Rome}
    assert: [{type: equals, value: "{{ capital }}"}]
  - vars: {country: Japan, capital: Tokyo}
    assert: [{type: icontains, value: "{{ capital }}"}]
  - vars: {country: Peru, capital: Lima}
    assert: [{type: icontains, value: "{{ capital }}"}]
"""


def write_suite(project: Project, name: str, rules: dict[str, str], extra: str = "") -> Path:
    project.write(f"{name}.json", json.dumps(rules))
    model = f"fake://rules?file=../{name}.json{extra}"
    return project.write(f"evals/{name}.yaml", SUITE.replace("MODEL", model))


@pytest.fixture
def two_runs(project: Project, cli: Cli) -> tuple[Path, Path]:
    suite_a = write_suite(project, "a", RULES_A)
    suite_b = write_suite(project, "b", RULES_B, "&fail_on=Peru")
    run_a, run_b = project.root / "results" / "ra", project.root / "results" / "rb"
    assert cli("run", suite_a, "-o", run_a, "--no-cache").code == 100
    assert cli("run", suite_b, "-o", run_b, "--no-cache").code == 100
    return run_a, run_b


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def country(row: dict[str, str]) -> str:
    return str(json.loads(row["vars"])["country"])


# --- compare -------------------------------------------------------------------------------


def test_compare_lists_regressions_fixes_and_changed_outputs(
    two_runs: tuple[Path, Path], cli: Cli
) -> None:
    run_a, run_b = two_runs
    r = cli("compare", run_a, run_b)
    assert r.code == 0, r.err
    assert "Regressions" in r.out and "Fixes" in r.out
    assert "4 regressions" in r.out and "2 fixes" in r.out and "2 changed outputs" in r.out

    rows = read_csv(run_b / "compare.csv")  # the newer run's folder
    assert len(rows) == 10  # 5 tests x 2 prompts, all matched by cell id
    assert {r["matched_by"] for r in rows} == {"cell_id"}
    for row in rows:
        assert row["kind"] == EXPECTED[country(row)], row
    france = next(r for r in rows if country(r) == "France" and r["prompt"] == "plain")
    assert (france["a_status"], france["b_status"]) == ("pass", "fail")
    assert (france["a_output"], france["b_output"]) == ("Paris", "Lyon")
    assert float(france["score_delta"]) == -1.0
    assert "Paris" in france["b_failed_checks"]
    peru = next(r for r in rows if country(r) == "Peru" and r["prompt"] == "qa")
    assert (peru["a_status"], peru["b_status"]) == ("pass", "error")
    assert peru["b_failed_checks"].startswith("error: simulated failure")
    spain = next(r for r in rows if country(r) == "Spain")
    assert (spain["a_status"], spain["b_status"]) == ("pass", "pass")
    assert (spain["a_output"], spain["b_output"]) == ("Madrid", "Madrid!")


def test_compare_paired_statistics_per_variant(two_runs: tuple[Path, Path]) -> None:
    run_a, run_b = two_runs
    result = cmp.compare(run_a, run_b)
    assert [v.label for v in result.variants] == ["fake · plain", "fake · qa"]
    for v in result.variants:
        # A: 4/5 passed (Italy failed); B: 3/5 (Spain, Italy, Japan)
        assert (v.cells, v.a_passed, v.b_passed) == (5, 4, 3)
        assert (v.regressions, v.fixes, v.changed) == (2, 1, 1)
        assert v.points == -20.0
        c = v.comparison
        assert c.method == "mcnemar-exact"
        assert (c.a_only, c.b_only) == (2, 1)
        # exact McNemar on 2 vs 1 discordant pairs: two-sided binomial p = 1.0
        assert c.p_value == pytest.approx(1.0)
        assert c.score_diff == pytest.approx(-0.2)
        assert c.verdict
    assert result.counts == {
        "regression": 4,
        "fix": 2,
        "changed": 2,
        "same": 2,
        "only_a": 0,
        "only_b": 0,
        "matched": 10,
    }


def test_compare_html_is_self_contained_and_escaped(two_runs: tuple[Path, Path], cli: Cli) -> None:
    run_a, run_b = two_runs
    assert cli("compare", run_a, run_b).code == 0
    page = (run_b / "compare.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page.lower()
    assert not re.search(r"\b(src|href)\s*=", page)  # nothing loaded from anywhere
    assert "http://" not in page and "https://" not in page
    assert "Content-Security-Policy" in page
    assert "Regressions" in page and "Fixes" in page and "Changed outputs" in page
    assert "Lyon" in page and "Madrid!" in page


def test_fail_on_regression_exits_100(two_runs: tuple[Path, Path], cli: Cli) -> None:
    run_a, run_b = two_runs
    assert cli("compare", run_a, run_b, "--fail-on-regression").code == 100
    # B -> A has regressions too (Italy); an identical rerun has none
    assert cli("compare", run_b, run_a, "--fail-on-regression").code == 100


def test_identical_rerun_has_no_regressions(project: Project, cli: Cli) -> None:
    suite = write_suite(project, "a", RULES_A)
    run1, run2 = project.root / "r1", project.root / "r2"
    assert cli("run", suite, "-o", run1).code == 100
    assert cli("run", suite, "-o", run2).code == 100  # from the cache: same outputs
    r = cli("compare", run1, run2, "--fail-on-regression")
    assert r.code == 0, r.out + r.err
    assert {row["kind"] for row in read_csv(run2 / "compare.csv")} == {"same"}
    assert "no difference" in r.out


def test_compare_writes_into_output_folder(two_runs: tuple[Path, Path], cli: Cli) -> None:
    run_a, run_b = two_runs
    out = run_a.parent / "cmp" / "x"
    assert cli("compare", run_a, run_b, "-o", out).code == 0
    assert (out / "compare.csv").is_file() and (out / "compare.html").is_file()
    assert not (run_b / "compare.csv").exists()


def test_compare_writes_into_the_newer_run_whatever_the_order(
    two_runs: tuple[Path, Path], cli: Cli
) -> None:
    run_a, run_b = two_runs
    assert cli("compare", run_b, run_a).code == 0
    assert (run_b / "compare.csv").is_file()
    assert not (run_a / "compare.csv").exists()


def test_cells_in_one_run_only(project: Project, cli: Cli) -> None:
    suite = write_suite(project, "a", RULES_A)
    full, part = project.root / "full", project.root / "part"
    assert cli("run", suite, "-o", full).code == 100
    assert cli("run", suite, "-o", part, "--filter-test", "France|Spain").code == 0
    result = cmp.compare(full, part)
    assert result.counts["only_a"] == 6 and result.counts["only_b"] == 0
    assert result.counts["same"] == 4
    rows = read_csv(part / "compare.csv")
    only = [r for r in rows if r["kind"] == "only_a"]
    assert len(only) == 6 and all(r["b_status"] == "" for r in only)
    assert cli("compare", part, full).code == 0  # only_b cells are no regression


def test_compare_refuses_the_same_run_and_missing_folders(
    two_runs: tuple[Path, Path], cli: Cli, project: Project
) -> None:
    run_a, _ = two_runs
    r = cli("compare", run_a, run_a)
    assert r.code == 2 and "same run" in r.err
    r = cli("compare", run_a, project.root / "nope")
    assert r.code == 2 and "nope" in r.err


def row(cell_id: str, test_index: int, status: str, output: str, **extra: Any) -> dict[str, Any]:
    return {
        "cell_id": cell_id,
        "order": test_index,
        "model": "m",
        "prompt": "p",
        "setting": "",
        "test_index": test_index,
        "test": f"t{extra.pop('name', test_index)}",
        "vars": {"x": extra.pop("x", test_index)},
        "repeat": 0,
        "status": status,
        "pass": status == "pass",
        "score": 1.0 if status == "pass" else 0.0,
        "checks": [],
        "output": output,
        **extra,
    }


def test_matching_falls_back_to_test_identity_when_ids_differ() -> None:
    # B inserted a test at the front: indexes (so ids) shifted, descriptions and vars did not.
    a = [row("a1", 0, "pass", "one", name="A", x=1), row("a2", 1, "pass", "two", name="B", x=2)]
    b = [
        row("b0", 0, "pass", "new", name="N", x=0),
        row("b1", 1, "pass", "one", name="A", x=1),
        row("b2", 2, "fail", "zwei", name="B", x=2),
    ]
    diffs = cmp.match(a, b)
    kinds = {(d.row["test"], d.kind, d.matched_by) for d in diffs}
    assert kinds == {
        ("tN", "only_b", ""),
        ("tA", "same", "identity"),
        ("tB", "regression", "identity"),
    }
    # an id match wins over an identity match
    diffs = cmp.match([row("same", 0, "pass", "x")], [row("same", 5, "pass", "y", name=0, x=9)])
    assert [(d.kind, d.matched_by) for d in diffs] == [("changed", "cell_id")]


def test_fail_to_error_is_a_change_not_a_regression() -> None:
    diffs = cmp.match([row("c", 0, "fail", "x")], [row("c", 0, "error", "x")])
    assert [d.kind for d in diffs] == ["changed"]


# --- baseline ------------------------------------------------------------------------------


def test_baseline_set_show_clear_and_compare_default(
    two_runs: tuple[Path, Path], cli: Cli, project: Project
) -> None:
    run_a, run_b = two_runs
    r = cli("compare", run_b)
    assert r.code == 2 and "baseline" in r.err

    assert cli("baseline", "set", "results/ra").code == 0
    record = json.loads((project.root / ".promptlab" / "baseline.json").read_text())
    assert record["run"] == "results/ra"  # relative to the project, so it survives a move
    r = cli("baseline", "show")
    assert r.code == 0 and r.out.strip() == str(project.root / "results" / "ra")

    r = cli("compare", run_b, "--fail-on-regression")
    assert r.code == 100
    assert "4 regressions" in r.out
    assert (run_b / "compare.csv").is_file()

    r = cli("compare", run_a)
    assert r.code == 2 and "same run" in r.err

    assert cli("baseline", "clear").code == 0
    assert not (project.root / ".promptlab" / "baseline.json").exists()
    r = cli("baseline", "show")
    assert r.code == 0 and r.out == "" and "no baseline" in r.err


def test_baseline_set_refuses_a_folder_without_a_run(project: Project, cli: Cli) -> None:
    (project.root / "empty").mkdir()
    r = cli("baseline", "set", "empty")
    assert r.code == 2 and "manifest.json" in r.err
    assert not (project.root / ".promptlab" / "baseline.json").exists()


def test_a_vanished_baseline_is_a_clear_error(two_runs: tuple[Path, Path], cli: Cli) -> None:
    run_a, run_b = two_runs
    assert cli("baseline", "set", run_a).code == 0
    (run_a / "manifest.json").unlink()
    r = cli("compare", run_b)
    assert r.code == 2 and "no longer a run folder" in r.err and "baseline" in r.err


# --- history -------------------------------------------------------------------------------


def write_run(
    folder: Path,
    *,
    started: str,
    commit: str | None,
    dirty: bool,
    templates: dict[str, str],
    outcomes: dict[str, list[str]],  # prompt label -> statuses
    suite: str = "evals/caps.yaml",
    status: str = "complete",
    partial_line: bool = False,
) -> None:
    folder.mkdir(parents=True)
    manifest = {
        "status": status,
        "started_at": started,
        "suite": {"path": suite, "sha256": "x"},
        "git": None if commit is None else {"commit": commit, "dirty": dirty, "branch": "main"},
        "templates": templates,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    lines = []
    for label, statuses in outcomes.items():
        for i, status_ in enumerate(statuses):
            lines.append(json.dumps(row(f"{label}{i}", i, status_, "out", prompt=label)))
    text = "\n".join(lines) + "\n"
    if partial_line:
        text += '{"cell_id": "half'
    (folder / "results.jsonl").write_text(text, encoding="utf-8")


@pytest.fixture
def runs(project: Project) -> Path:
    results = project.root / "results"
    write_run(
        results / "caps-1",
        started="2026-11-01T10:00:00+00:00",
        commit="1111111aaaa",
        dirty=False,
        templates={"plain": "s1", "qa": "q1"},
        outcomes={"plain": ["pass", "fail"], "qa": ["pass", "pass"]},
    )
    write_run(
        results / "caps-3",  # listed by date, not by name
        started="2026-11-03T10:00:00+00:00",
        commit="3333333cccc",
        dirty=False,
        templates={"plain": "s2", "qa": "q1", "terse": "t1"},
        outcomes={"plain": ["pass", "pass"], "qa": ["pass"], "terse": ["fail"]},
        status="interrupted",
        partial_line=True,
    )
    write_run(
        results / "caps-2",
        started="2026-11-02T10:00:00+00:00",
        commit="2222222bbbb",
        dirty=True,
        templates={"plain": "s2", "qa": "q1"},
        outcomes={"plain": ["fail", "fail"], "qa": ["pass", "fail"]},
    )
    write_run(
        results / "other-1",
        started="2026-11-02T12:00:00+00:00",
        commit="9999999",
        dirty=False,
        templates={"plain": "zz"},
        outcomes={"plain": ["pass"]},
        suite="evals/other.yaml",
    )
    (results / "not-a-run").mkdir()
    (results / "not-a-run" / "results.jsonl").write_text("", encoding="utf-8")
    return results


def test_history_lists_runs_oldest_first_with_changes(
    runs: Path, project: Project, cli: Cli
) -> None:
    found = hist.history(project.root)
    assert [r.folder.name for r in found.runs] == ["caps-1", "caps-2", "other-1", "caps-3"]
    by_name = {r.folder.name: r for r in found.runs}
    assert by_name["caps-1"].changed is None  # the first run of its suite
    assert by_name["caps-2"].changed == ["plain"]
    assert by_name["other-1"].changed is None  # another suite
    assert by_name["caps-3"].changed == ["+terse"]
    assert by_name["caps-3"].overall.cells == 4  # the half-written line is ignored
    assert by_name["caps-2"].per_prompt["qa"].rate == 0.5
    assert by_name["caps-2"].commit == "2222222+dirty"

    r = cli("history")
    assert r.code == 0, r.err
    out = r.out
    assert out.index("caps-1") < out.index("caps-2") < out.index("caps-3")
    assert "not-a-run" not in out
    assert "2222222+dirty" in out and "1111111" in out
    assert "templates changed: plain" in out and "templates changed: +terse" in out
    assert "plain 50% · qa 100%" in out  # per prompt, caps-1
    assert "interrupted" in out


def test_history_filters_by_suite(runs: Path, cli: Cli) -> None:
    r = cli("history", "other")
    assert r.code == 0
    assert "other-1" in r.out and "caps-" not in r.out
    r = cli("history", "evals/caps.yaml")
    assert "caps-1" in r.out and "other-1" not in r.out


def test_history_of_one_template_across_commits(runs: Path, cli: Cli, project: Project) -> None:
    rows = hist.template_history(hist.history(project.root, "caps"), "plain")
    assert [(t.run.folder.name, t.sha256, t.changed, t.rate.rate) for t in rows] == [
        ("caps-1", "s1", None, 0.5),
        ("caps-2", "s2", True, 0.0),
        ("caps-3", "s2", False, 1.0),
    ]
    r = cli("history", "caps", "--template", "plain")
    assert r.code == 0, r.err
    assert r.out.index("1111111") < r.out.index("2222222") < r.out.index("3333333")
    assert "yes" in r.out
    r = cli("history", "--template", "nope")
    assert r.code == 2 and "known labels" in r.err and "plain" in r.err


def test_history_reads_extra_run_folders(runs: Path, cli: Cli, project: Project) -> None:
    elsewhere = project.root / "archive"
    write_run(
        elsewhere / "old",
        started="2026-10-01T10:00:00+00:00",
        commit="0000000",
        dirty=False,
        templates={"plain": "s0"},
        outcomes={"plain": ["pass"]},
    )
    r = cli("history", "--runs", elsewhere)
    assert r.code == 0
    assert r.out.index("old") < r.out.index("caps-1")
    # a run folder given directly counts too
    r = cli("history", "--runs", elsewhere / "old", "caps")
    assert "0000000" in r.out


def test_history_of_real_runs_sees_template_edits(project: Project, cli: Cli) -> None:
    project.write("prompts/p.j2", "Capital of {{ country }}?")
    project.write("a.json", json.dumps(RULES_A))
    suite = project.write(
        "evals/caps.yaml",
        SUITE.replace("MODEL", "fake://rules?file=../a.json").replace(
            '- raw: "Capital of {{ country }}?"\n    label: plain',
            "- id: file://../prompts/p.j2\n    label: plain",
        ),
    )
    assert cli("run", suite).code == 100
    project.write("prompts/p.j2", "Name the capital of {{ country }}.")
    assert cli("run", suite).code == 100
    r = cli("history", "caps")
    assert r.code == 0
    assert "templates changed: —" in r.out and "templates changed: plain" in r.out


def test_unchecked_outputs_are_neither_regressions_nor_fixes() -> None:
    # An output no check gates ("unchecked") is not a pass: losing or gaining checks is a
    # change, and such cells stay out of the variant's pass counts and paired test.
    a = [row("c0", 0, "pass", "x"), row("c1", 1, "unchecked", "y"), row("c2", 2, "pass", "z")]
    b = [row("c0", 0, "unchecked", "x"), row("c1", 1, "pass", "y"), row("c2", 2, "fail", "z")]
    kinds = {d.a["cell_id"]: d.kind for d in cmp.match(a, b) if d.a is not None}
    assert kinds == {"c0": "changed", "c1": "changed", "c2": "regression"}
    (variant,) = cmp.variant_deltas(cmp.match(a, b))
    assert (variant.cells, variant.a_passed, variant.b_passed) == (1, 1, 0)
