"""CI gates on `run` and `report`: --fail-under, --max-regression, --junit, --format json."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import CliResult, Project

from promptlab.reports import gates

Cli = Callable[..., CliResult]

# Rules: France right, Spain right, Italy wrong, Peru an error (fail_on), Japan right but its
# answer is full of things XML and HTML must survive.
NASTY = 'Tokyo <script>alert("x")</script> ]]> & \x1b[31m \x00 end'
RULES = {
    "France": "Paris",
    "Spain": "Madrid",
    "Italy": "Milan",
    "Peru": "Lima",
    "Japan": NASTY,
}

SUITE = """
description: gates
prompts:
  - raw: "Capital of {{ country }}?"
    label: plain
models:
  - path: "fake://rules?file=../rules.json&fail_on=Peru"
    label: fake
tests:
  - vars: {country: France, capital: Paris}
    assert: [{type: icontains, value: "{{ capital }}", metric: accuracy}]
  - vars: {country: Spain, capital: Madrid}
    assert:
      - {type: icontains, value: "{{ capital }}", metric: accuracy}
      - {type: max-tokens, threshold: 1, metric: brevity}
  - description: Italy <b>bold</b>
    vars: {country: Italy, capital: Rome}
    assert: [{type: icontains, value: "{{ capital }}", metric: accuracy}]
  - vars: {country: Peru, capital: Lima}
    assert: [{type: icontains, value: "{{ capital }}", metric: accuracy}]
  - vars: {country: Japan, capital: Tokyo}
    assert: [{type: icontains, value: "{{ capital }}", metric: accuracy}]
"""
# pass: France, Spain, Japan (3 of 5 = 60%); fail: Italy; error: Peru
# accuracy: mean over the 4 cells that report it = 3/4 = 0.75


@pytest.fixture
def suite(project: Project) -> Path:
    project.write("rules.json", json.dumps(RULES))
    return project.write("evals/gates.yaml", SUITE)


# --- --fail-under --------------------------------------------------------------------------


def test_fail_under_overall_decides_the_exit_code(suite: Path, cli: Cli, project: Project) -> None:
    r = cli("run", suite, "-o", "r1")
    assert r.code == 100  # no gate: any failure is 100

    r = cli("run", suite, "-o", "r2", "--fail-under", "0.6")
    assert r.code == 0, r.err  # 60% reaches 0.6: the gate passes although cells failed
    assert "pass rate 60.0% is at least 60.0%" in r.out

    r = cli("run", suite, "-o", "r3", "--fail-under", "0.61")
    assert r.code == 100
    reasons = [line for line in r.err.splitlines() if "gate" in line]
    assert reasons == ["✗ gate pass rate 60.0% is below 61.0% (--fail-under)"]


def test_fail_under_per_metric(suite: Path, cli: Cli) -> None:
    r = cli("run", suite, "-o", "m1", "--fail-under", "accuracy=0.75", "--fail-under", "0.5")
    assert r.code == 0, r.err
    r = cli("run", suite, "-o", "m2", "--fail-under", "accuracy=0.8", "--fail-under", "0.5")
    assert r.code == 100
    assert "metric accuracy 75.0% is below 80.0%" in r.err
    assert "pass rate" not in r.err  # the passing gate is on stdout
    r = cli("run", suite, "-o", "m3", "--fail-under", "score=0.7")
    assert r.code == 100 and "mean score" in r.err
    r = cli("run", suite, "-o", "m4", "--fail-under", "acuracy=0.1")
    assert r.code == 100
    assert "no cell reports the metric 'acuracy'" in r.err and "accuracy, brevity" in r.err


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1.5", "between 0 and 1"),
        ("abc", "not a number"),
        ("accuracy=", "not a number"),
        ("=0.5", "not a metric name"),
    ],
)
def test_bad_fail_under_is_exit_2_before_anything_runs(
    suite: Path, cli: Cli, project: Project, value: str, message: str
) -> None:
    r = cli("run", suite, "-o", "bad", "--fail-under", value)
    assert r.code == 2
    assert message in r.err
    assert not (project.root / "bad").exists()


def test_parse_fail_under() -> None:
    assert gates.parse_fail_under(["0.8", "accuracy=0.9", "pass_rate=0.5"]) == [
        gates.Threshold(None, 0.8),
        gates.Threshold("accuracy", 0.9),
        gates.Threshold(None, 0.5),
    ]


# --- --max-regression ----------------------------------------------------------------------


def test_max_regression_against_the_baseline(suite: Path, cli: Cli, project: Project) -> None:
    r = cli("run", suite, "-o", "new", "--max-regression", "5")
    assert r.code == 2 and "baseline" in r.err
    assert not (project.root / "new").exists()

    assert cli("run", suite, "-o", "base").code == 100
    assert cli("baseline", "set", "base").code == 0
    # Now Spain and Japan answer wrongly: 60% -> 20%, a 40-point drop.
    project.write("rules.json", json.dumps(RULES | {"Spain": "Seville", "Japan": "Kyoto"}))
    r = cli("run", suite, "-o", "worse", "--max-regression", "39", "--no-cache")
    assert r.code == 100
    assert "fake · plain: pass rate 60% → 20% (-40.0 points vs the baseline" in r.err
    assert (project.root / "worse" / "compare.html").is_file()
    r = cli("run", suite, "-o", "ok", "--max-regression", "40", "--no-cache")
    assert r.code == 0, r.err  # gates decide: a 40-point drop is allowed, failures are not fatal

    # --baseline overrides the project's baseline; comparing with itself drops nothing
    r = cli("report", "worse", "--max-regression", "0", "--baseline", "ok")
    assert r.code == 0, r.err
    r = cli("report", "worse", "--max-regression", "0")
    assert r.code == 100
    r = cli("run", suite, "-o", "x", "--max-regression", "1", "--baseline", "missing")
    assert r.code == 2 and not (project.root / "x").exists()
    r = cli("run", suite, "-o", "y", "--max-regression", "-1")
    assert r.code == 2 and "0 or more" in r.err


def test_max_regression_with_nothing_in_common_fails(
    suite: Path, cli: Cli, project: Project
) -> None:
    assert cli("run", suite, "-o", "base", "--filter-test", "France").code == 0
    r = cli(
        "run",
        suite,
        "-o",
        "b",
        "--filter-test",
        "Spain",
        "--max-regression",
        "5",
        "--baseline",
        "base",
    )
    assert r.code == 100
    assert "no cells in common with the baseline" in r.err


def test_report_accepts_the_gates(suite: Path, cli: Cli) -> None:
    assert cli("run", suite, "-o", "r").code == 100
    assert cli("report", "r").code == 0
    assert cli("report", "r", "--fail-under", "0.5").code == 0
    r = cli("report", "r", "--fail-under", "0.9")
    assert r.code == 100 and "below 90.0%" in r.err


# --- JUnit ---------------------------------------------------------------------------------


def test_junit_xml_one_testcase_per_cell(suite: Path, cli: Cli, project: Project) -> None:
    r = cli("run", suite, "-o", "j", "--junit", "ci/results.xml")
    assert r.code == 100
    tree = ET.parse(project.root / "ci" / "results.xml")  # valid XML despite \x1b and \x00
    root = tree.getroot()
    assert root.tag == "testsuites"
    cases = root.findall(".//testcase")
    assert len(cases) == 5
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("5", "1", "1")
    assert len(root.findall(".//testcase/failure")) == 1
    assert len(root.findall(".//testcase/error")) == 1
    assert {c.get("classname") for c in cases} == {"fake.plain"}
    by_name = {c.get("name"): c for c in cases}
    italy = by_name["Italy <b>bold</b>"]
    failure = italy.find("failure")
    assert failure is not None and "Rome" in (failure.get("message") or "")
    assert (italy.findtext("system-out") or "") == "Milan"
    peru = by_name["test 4"]  # tests without a description are numbered
    error = peru.find("error")
    assert error is not None and "simulated failure" in (error.get("message") or "")
    japan = by_name["test 5"]
    out = japan.findtext("system-out") or ""
    assert '<script>alert("x")</script> ]]> &' in out  # escaped in the file, intact when parsed
    assert "\\x1b" in out and "\\x00" in out  # characters XML cannot hold, spelled out
    suite_el = root.find("testsuite")
    assert suite_el is not None and suite_el.get("name") == "fake.plain"
    assert suite_el.get("tests") == "5"


def test_junit_names_repeats_and_settings(project: Project, cli: Cli) -> None:
    project.write("rules.json", json.dumps({"France": "Paris"}))
    suite = project.write(
        "evals/rep.yaml",
        """
        prompts: ["Capital of {{ country }}?"]
        models: [{path: "fake://rules?file=../rules.json", label: fake}]
        params: {temperature: [0, 0.5]}
        repeat: 2
        tests:
          - description: france
            vars: {country: France}
            assert: [{type: icontains, value: Paris}]
        """,
    )
    r = cli("run", suite, "-o", "rep", "--junit", "rep.xml")
    assert r.code == 0, r.err
    cases = ET.parse(project.root / "rep.xml").getroot().findall(".//testcase")
    assert len(cases) == 4
    assert {c.get("name") for c in cases} == {"france (repeat 0)", "france (repeat 1)"}
    classnames = {c.get("classname") for c in cases}
    assert len(classnames) == 2
    assert all(name and name.endswith("]") and "temperature=" in name for name in classnames)


def test_junit_from_report(suite: Path, cli: Cli, project: Project) -> None:
    assert cli("run", suite, "-o", "r").code == 100
    r = cli("report", "r", "--junit", "r.xml")
    assert r.code == 0
    assert len(ET.parse(project.root / "r.xml").getroot().findall(".//testcase")) == 5


# --- --format json -------------------------------------------------------------------------


def test_format_json_prints_only_json(suite: Path, cli: Cli, project: Project) -> None:
    r = cli("run", suite, "-o", "js", "--format", "json", "--fail-under", "0.5", "--junit", "j.xml")
    assert r.code == 0, r.err
    data = json.loads(r.out)  # the whole of stdout is one JSON document
    assert data["status"] == "complete"
    assert data["totals"] == {
        "cells": 5,
        "passed": 3,
        "failed": 1,
        "errors": 1,
        "unchecked": 0,
        "pass_rate": 0.6,
    }
    assert [s["prompt"] for s in data["summary"]] == ["plain"]
    assert data["summary"][0]["pass_rate"] == 0.6
    assert data["gates"]["passed"] is True
    assert data["gates"]["results"][0]["target"] == "pass_rate"
    assert data["gates"]["results"][0]["value"] == 0.6
    assert data["exit_code"] == 0
    assert isinstance(data["comparisons"], list)
    for key in ("results_csv", "summary_csv", "html", "junit"):
        assert Path(data["reports"][key]).exists(), key
    assert "gate" in r.err  # the human lines went to stderr


def test_format_json_with_a_failing_gate_and_baseline(
    suite: Path, cli: Cli, project: Project
) -> None:
    assert cli("run", suite, "-o", "base").code == 100
    assert cli("baseline", "set", "base").code == 0
    project.write("rules.json", json.dumps(RULES | {"France": "Lyon"}))
    r = cli("run", suite, "-o", "b", "--no-cache", "--format", "json", "--max-regression", "0")
    assert r.code == 100
    data = json.loads(r.out)
    assert data["exit_code"] == 100
    assert data["gates"]["passed"] is False
    baseline = data["baseline"]
    assert baseline["counts"]["regression"] == 1
    assert baseline["regressions"][0]["b_failed_checks"].startswith("icontains")
    assert baseline["variants"][0]["points"] == -20.0
    assert Path(data["reports"]["compare_html"]).is_file()
    r = cli("report", "b", "--format", "json")
    assert r.code == 0
    assert json.loads(r.out)["gates"]["active"] is False


def test_format_json_when_the_model_fails_to_load(project: Project, cli: Cli) -> None:
    suite = project.write(
        "evals/broken.yaml",
        """
        prompts: ["hi {{ x }}"]
        models: [{path: "fake://echo?load_error=1", label: broken}]
        tests: [{vars: {x: 1}}]
        """,
    )
    r = cli("run", suite, "-o", "broken", "--format", "json")
    assert r.code == 1
    data = json.loads(r.out)
    assert data["status"] == "failed" and "simulated load failure" in data["error"]
    assert "error:" in r.err


def test_interrupted_run_keeps_exit_130_with_gates(project: Project, cli: Cli) -> None:
    suite = project.write(
        "evals/int.yaml",
        """
        prompts: ["hi {{ x }}"]
        models: [{path: "fake://echo?interrupt_after=1", label: e}]
        tests: [{vars: {x: 1}}, {vars: {x: 2}}, {vars: {x: 3}}]
        """,
    )
    r = cli("run", suite, "-o", "i", "--fail-under", "0.1", "--junit", "i.xml", "--format", "json")
    assert r.code == 130
    assert json.loads(r.out)["status"] == "interrupted"
    assert len(ET.parse(project.root / "i.xml").getroot().findall(".//testcase")) == 1
