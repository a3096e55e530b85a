"""promptlab optimize on the fake backend: the split, racing, the budget, the verdict, the
written template, and bad input (exit 2, nothing written)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CliResult, Project
from hypothesis import given, settings
from hypothesis import strategies as st
from optimize_suites import DEMO_TEMPLATE, demo_suite, demo_tests, read_jsonl

from promptlab import core
from promptlab.optimize import optimize
from promptlab.optimize.search import rung_ends
from promptlab.optimize.split import make_split
from promptlab.optimize.template import jinja_literal
from promptlab.suite import TestDef as SuiteTest
from promptlab.suite import load_suite
from promptlab.templates import TemplateEnv

Cli = Callable[..., CliResult]
NO_CACHE = core.CacheOptions(use=False)


# --- the split -------------------------------------------------------------------------------


def _tests(labels: list[str]) -> list[SuiteTest]:
    return [SuiteTest(i, f"t{i}", {"q": f"q{i}"}, [], "here") for i in range(len(labels))]


def test_the_split_is_seeded_disjoint_complete_and_stratified() -> None:
    labels = ["a"] * 30 + ["b"] * 12 + ["c"] * 6
    tests = _tests(labels)
    strata: dict[int, str | None] = dict(enumerate(labels))
    one = make_split(tests, strata, (0.2, 0.4, 0.4), seed=3)
    assert one == make_split(tests, strata, (0.2, 0.4, 0.4), seed=3)
    assert one != make_split(tests, strata, (0.2, 0.4, 0.4), seed=4)
    parts = [set(one.train), set(one.validation), set(one.held_out)]
    assert sum(len(p) for p in parts) == len(tests) == len(set().union(*parts))
    for share, part in zip((0.2, 0.4, 0.4), parts, strict=True):
        got = Counter(labels[i] for i in part)
        for label, total in Counter(labels).items():
            # every stratum is dealt in proportion, to within one test
            assert abs(got[label] - share * total) <= 1, (label, share, got)
    # racing minibatches are prefixes of validation: the first one holds every label
    assert {labels[i] for i in one.validation[:3]} == {"a", "b", "c"}


def test_identical_tests_always_land_in_the_same_part() -> None:
    tests = [SuiteTest(i, f"t{i}", {"q": f"q{i % 10}"}, [], "here") for i in range(40)]
    strata: dict[int, str | None] = dict.fromkeys(range(40))
    for seed in range(20):
        split = make_split(tests, strata, (0.2, 0.4, 0.4), seed=seed)
        where = {
            i: n
            for n, part in enumerate((split.train, split.validation, split.held_out))
            for i in part
        }
        for i in range(40):
            assert where[i] == where[i % 10]


def test_rungs_grow_by_eta_and_end_at_every_validation_test() -> None:
    assert rung_ends(24, 8, 2) == [8, 16, 24]
    assert rung_ends(20, 8, 2) == [8, 16, 20]
    assert rung_ends(5, 8, 3) == [5]
    assert rung_ends(30, 2, 3) == [2, 6, 18, 30]


# --- finding a real improvement, and writing it -----------------------------------------------


def _run(suite: Path, out: Path, **kw: Any) -> Any:
    return optimize(suite, out=out, cache=NO_CACHE, **kw)


@pytest.mark.parametrize("seed", [1, 2])
def test_demos_that_matter_are_found_and_proved_on_held_out(project: Project, seed: int) -> None:
    suite = demo_suite(project)
    result = _run(suite, project.root / f"run{seed}", seed=seed)
    assert result.status == "complete"
    v = result.verdict
    assert v.better, v.text
    assert v.baseline_rate == 0.0 and v.best_rate == 1.0
    assert v.p_adjusted < 0.05 and v.candidates_tried == result.search.tried > 1
    # the correction is Bonferroni over the candidates tried
    assert v.p_adjusted == pytest.approx(min(1.0, v.p_value * v.candidates_tried))
    assert "beats the original 'zero'" in v.text and "corrected for" in v.text
    written = project.root / "prompts" / "label.optimized.j2"
    assert result.written == written
    assert (project.root / "prompts" / "label.j2").read_text() == DEMO_TEMPLATE
    folder = result.folder
    for name in (
        "manifest.json",
        "results.jsonl",
        "trace.jsonl",
        "split.json",
        "candidates.csv",
        "candidates.json",
        "summary.json",
        "report.html",
        "best.j2",
    ):
        assert (folder / name).is_file(), name
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert {len(manifest["split"][k]) for k in ("validation", "held_out")} == {24}
    assert manifest["calls"]["used"] <= manifest["budget"]


def test_the_written_template_renders_exactly_what_the_winner_sent(project: Project) -> None:
    suite = demo_suite(project)
    result = _run(suite, project.root / "run", seed=1)
    assert result.verdict.better
    best = result.verdict.best
    rows = [r for r in read_jsonl(result.folder / "results.jsonl") if r["prompt"] == best]
    assert rows
    loaded = load_suite(suite)
    env = TemplateEnv(loaded.root)
    template = env.load_file(result.written, "test")
    by_index = {t.index: t for t in loaded.tests}
    for row in rows:
        # the file, given only what the suite gives each test, renders the winner's prompt
        text = env.render(template, by_index[row["test_index"]].vars, "test")
        assert text == row["rendered_prompt"]
    # and `promptlab run` with it as the prompt passes what the winner passed
    data = yaml.safe_load(suite.read_text())
    data["prompts"] = [{"id": "file://../prompts/label.optimized.j2", "label": "opt"}]
    data.pop("optimize")
    plain = project.write("evals/plain.yaml", yaml.safe_dump(data))
    run = core.run(plain, out=project.root / "plain-run", cache=NO_CACHE)
    assert run.stats.passed == run.stats.cells == 60


@settings(max_examples=60, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_jinja_literals_evaluate_to_the_value(value: Any) -> None:
    env = TemplateEnv(Path("/nonexistent-root"))
    tpl = env.env.from_string("{% set v = " + jinja_literal(value) + " %}{{ v | tojson }}")
    assert json.loads(tpl.render()) == json.loads(json.dumps(value))


def test_nasty_demo_text_survives_the_written_template(project: Project) -> None:
    tests = demo_tests()
    for i, t in enumerate(tests):
        t["vars"]["q"] = (
            f'q{i} "quoted" {{{{ not a var }}}} %}} \\ end #}} é 😀 <script>x</script>\n'
        )
    suite = demo_suite(project, tests=tests)
    result = _run(suite, project.root / "run", seed=1)
    assert result.verdict.better  # write_optimized checks the render itself; it would raise
    page = (result.folder / "report.html").read_text()
    assert "<script" not in page and "&lt;script&gt;x&lt;/script&gt;" in page


def test_the_winners_params_are_named_in_the_file(project: Project) -> None:
    suite = demo_suite(
        project,
        optimize={"demos": {"k": [0, 2], "sets": 2}, "params": {"max_tokens": [64, 32]}},
    )
    result = _run(suite, project.root / "run", seed=1)
    assert result.verdict.better
    text = result.written.read_text()
    assert "{% set demos = [" in text
    if result.search.candidates[result.verdict.best].params:
        assert "set them in params:" in text


# --- racing and the budget ---------------------------------------------------------------------


def test_racing_prunes_on_shared_minibatches(project: Project) -> None:
    suite = demo_suite(project, optimize={"demos": {"k": [0, 1, 2], "sets": 6}, "candidates": 12})
    result = _run(suite, project.root / "run", seed=5, budget=2000)
    trace = read_jsonl(result.folder / "trace.jsonl")
    ends = rung_ends(24, 8, 2)
    steps = [e["step"] for e in trace if e["event"] == "rung"]
    assert set(steps) <= set(ends)
    records = json.loads((result.folder / "candidates.json").read_text())
    pruned = [r for r in records if r["status"] == "pruned"]
    complete = [r for r in records if r["status"] == "complete"]
    assert pruned and complete
    assert all(r["tests"] < 24 for r in pruned) and all(r["tests"] == 24 for r in complete)
    # every candidate ran on the same validation tests, in the same order (a prefix of it)
    rows = read_jsonl(result.folder / "results.jsonl")
    val = [
        t["test_index"]
        for t in json.loads((result.folder / "split.json").read_text())["validation"]
    ]
    by_label: dict[str, set[int]] = {}
    for r in rows:
        by_label.setdefault(r["prompt"], set()).add(r["test_index"])
    for r in records:
        assert set(val[: r["tests"]]) <= by_label[r["label"]]


@pytest.mark.parametrize("budget", [80, 97, 150, 400])
def test_the_budget_is_never_exceeded(project: Project, budget: int) -> None:
    suite = demo_suite(project)
    result = _run(suite, project.root / "run", seed=2, budget=budget)
    assert result.status == "complete"
    rows = read_jsonl(result.folder / "results.jsonl")
    assert result.used <= budget
    assert len(rows) == result.ran <= result.used  # no cache: every counted call ran once
    summary = json.loads((result.folder / "summary.json").read_text())
    assert summary["calls"]["used"] == result.used and summary["calls"]["budget"] == budget


def test_repeated_candidates_are_free(project: Project) -> None:
    # two demo sets and k in {0, 1}: TPE keeps proposing the same few candidates
    suite = demo_suite(project, optimize={"demos": {"k": [0, 1], "sets": 2}, "candidates": 50})
    result = _run(suite, project.root / "run", seed=1, budget=5000)
    assert result.search.stop == "exhausted"
    labels = [r["prompt"] for r in read_jsonl(result.folder / "results.jsonl")]
    cells = Counter(
        zip(
            labels,
            [r["test_index"] for r in read_jsonl(result.folder / "results.jsonl")],
            strict=True,
        )
    )
    assert max(cells.values()) == 1  # no cell ran twice


# --- honest verdicts ----------------------------------------------------------------------------


def test_a_check_no_prompt_can_influence_gives_no_winner(project: Project, cli: Cli) -> None:
    tests = demo_tests()
    for t in tests:
        t["assert"] = [{"type": "contains", "value": "question"}]  # every prompt shows it
    suite = demo_suite(project, tests=tests, extra={"defaultTest": {}})
    result = cli("optimize", suite, "-o", project.root / "run", "--no-cache", "--seed", "3")
    assert result.code == 0, result.err
    assert "nothing beat the baseline" in result.out
    assert not (project.root / "prompts" / "label.optimized.j2").exists()


# --- bad input: one line naming the field, exit 2, nothing written ------------------------------

BAD = {
    "unknown --prompt": (
        {},
        ["--prompt", "nope"],
        "--prompt 'nope': no prompt of demo.yaml has that label",
    ),
    "k larger than the pool": (
        {"demos": {"k": [0, 30]}},
        [],
        "optimize.demos.k: k=30 is larger than the pool (12 tests in the train split)",
    ),
    "a var the template never reads": (
        {"vars": {"style": ["a", "b"]}},
        [],
        "optimize.vars.style: prompt 'zero' never reads {{ style }}",
    ),
    "an unknown param": (
        {"params": {"temprature": [0, 1]}},
        [],
        "optimize.params.temprature: 'temprature' is not a setting",
    ),
    "a bad param value": (
        {"params": {"temperature": [0, -1]}},
        [],
        "optimize.params.temperature[1]: -1",
    ),
    "an unknown key": (
        {"demo": {"k": 2}},
        [],
        "optimize: unknown key 'demo'; did you mean 'demos'?",
    ),
    "too few held-out tests": (
        {"demos": {"k": [0, 1]}, "split": {"train": 0.5, "validation": 0.45, "held_out": 0.05}},
        [],
        "optimize.split.held_out: 3 held-out test(s) of 60",
    ),
    "nothing to search": ({}, [], "leaves nothing to search"),
    "a budget too small": ({"demos": {"k": [0, 1]}}, ["--budget", "40"], "--budget 40: too small"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    project: Project, cli: Cli, case: str
) -> None:
    spec, args, expected = BAD[case]
    suite = demo_suite(
        project, optimize=spec or ({"demos": {"k": [0, 1]}} if case != "nothing to search" else {})
    )
    out = project.root / "out"
    result = cli("optimize", suite, "-o", out, "--no-cache", *args)
    assert result.code == 2, result.err
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert errors and expected in errors[0], result.err
    assert "Traceback" not in result.err
    assert not out.exists() and not (project.root / "results").exists()
    assert not (project.root / "prompts" / "label.optimized.j2").exists()


def test_a_pool_that_overlaps_the_held_out_tests_is_refused(project: Project, cli: Cli) -> None:
    tests = demo_tests(30)
    project.write("evals/pool.yaml", yaml.safe_dump(tests[:20]))
    suite = demo_suite(
        project, tests=tests, optimize={"demos": {"k": [0, 2], "pool": "file://pool.yaml"}}
    )
    result = cli("optimize", suite, "-o", project.root / "out", "--no-cache")
    assert result.code == 2
    assert "optimize.demos.pool: demo" in result.err and "is also a held-out test" in result.err
    assert not (project.root / "out").exists()


def test_validate_checks_the_optimize_section(project: Project, cli: Cli) -> None:
    suite = demo_suite(project, optimize={"eta": 1, "split": {"train": 0.5}})
    result = cli("validate", suite)
    assert result.code == 2
    assert (
        "optimize.eta" in result.err
        and "optimize.split: train + validation + held_out must be 1" in result.err
    )


# --- instructions a model proposes ----------------------------------------------------------------


def test_a_proposer_writes_instructions_from_train_examples_only(project: Project) -> None:
    suite = demo_suite(
        project,
        optimize={
            "instructions": {
                "var": "instruction",
                "propose": 3,
                "proposer": "fake://reply?text=Reply with the label in brackets.",
            },
            "demos": {"k": [0, 2], "sets": 2},
        },
    )
    result = _run(suite, project.root / "run", seed=1)
    assert result.status == "complete"
    manifest = json.loads((result.folder / "manifest.json").read_text())
    assert manifest["space"]["instructions"] == ["Answer.", "Reply with the label in brackets."]
    assert manifest["space"]["proposed"] == 1  # three proposals, one distinct text
    trace = read_jsonl(result.folder / "trace.jsonl")
    assert trace[0]["event"] == "proposals" and trace[0]["calls"] == 3
    proposer_rows = read_jsonl(result.folder / "proposals" / "results.jsonl")
    assert [r["seed"] for r in proposer_rows] == [1, 2, 3]  # --seed 1, then one more each
    shown = proposer_rows[0]["rendered_prompt"]
    split = json.loads((result.folder / "split.json").read_text())
    by_name = {t["test"]: t for part in split.values() for t in part}
    for name in by_name:
        question = f"question {name[1:]}."
        if question in shown:
            assert name in {t["test"] for t in split["train"]}, name
    assert sum(f"question {t['test'][1:]}." in shown for t in split["train"]) == 5
    assert result.used <= result.budget


def test_tests_marked_pool_are_the_demos_and_stay_out_of_the_split(project: Project) -> None:
    tests = demo_tests(50)
    for t in tests[:6]:
        t["metadata"] = {"pool": True}
    suite = demo_suite(
        project, tests=tests, optimize={"demos": {"k": [0, 2], "pool": "marked", "sets": 3}}
    )
    result = _run(suite, project.root / "run", seed=1)
    split = json.loads((result.folder / "split.json").read_text())
    in_split = {t["test_index"] for part in split.values() for t in part}
    assert in_split == set(range(6, 50))
    manifest = json.loads((result.folder / "manifest.json").read_text())
    assert manifest["space"]["demos"]["pool_size"] == 6
    demo_refs = {ref for s in manifest["space"]["demos"]["sets"] for ref in s}
    assert demo_refs <= {f"test {i + 1} (t{i})" for i in range(6)}
    assert result.verdict.better
