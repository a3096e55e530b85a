"""The scoring features end to end through `promptlab run`, on the fake backend: scores and
named metrics in the CSVs, choice-only cells that never generate, a judge model, constrained
generation, logprobs, python checks behind --allow-code."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import CliResult, Project

Cli = Callable[..., CliResult]

VERDICT = json.dumps({"reason": "names Paris", "pass": True, "score": 0.75})


def run(
    project: Project, cli: Cli, suite: str, *args: str
) -> tuple[CliResult, list[dict[str, Any]], Path]:
    project.write("evals/s.yaml", suite)
    out = project.root / "out"
    result = cli("run", "evals/s.yaml", "-o", out, *args)
    rows = []
    if (out / "results.jsonl").exists():
        rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        rows.sort(key=lambda r: r["order"])  # suite order; the file is in run order
    return result, rows, out


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_weights_threshold_and_metrics_reach_the_reports(project: Project, cli: Cli) -> None:
    result, rows, out = run(
        project,
        cli,
        """
        prompts: ["{{ q }}"]
        models: ["fake://reply?text=The capital is Paris"]
        tests:
          - vars: {q: capital}
            threshold: 0.7
            assert:
              - {type: icontains, value: paris, weight: 3, metric: correct}
              - {type: contains, value: Rome, metric: correct}
              - {type: contains, value: capital, weight: 0, metric: style}
          - vars: {q: other}
            assert:
              - {type: contains, value: Rome, metric: correct}
        """,
    )
    assert result.code == 100, result.err
    first, second = rows
    assert first["status"] == "pass" and first["score"] == 0.75
    assert first["named_scores"] == {"correct": 0.75, "style": 1.0}
    assert second["status"] == "fail" and second["score"] == 0.0
    summary = read_csv(out / "summary.csv")[0]
    assert summary["mean_score"] == "0.375"
    assert summary["metric_correct"] == "0.375" and summary["metric_style"] == "1.0"
    results = read_csv(out / "results.csv")
    assert results[0]["metric_correct"] == "0.75" and results[0]["score"] == "0.75"
    html = (out / "report.html").read_text()
    assert '<th class="num">correct</th>' in html and "mean score" in html


def test_choice_only_cells_do_not_generate(project: Project, cli: Cli) -> None:
    result, rows, _out = run(
        project,
        cli,
        """
        prompts: ["Q: {{ question }} The answer is Paris. A:"]
        models: ["fake://echo?fail_on=NEVER"]
        tests:
          - vars: {question: "Capital of France?", options: [" Rome", " Paris", " Oslo"]}
            assert:
              - {type: choice, value: " Paris", choices: options, metric: p}
        """,
    )
    assert result.code == 0, result.err
    (row,) = rows  # the list var named by `choices:` is not expanded into tests
    assert row["output"] == " Paris"
    assert row["completion_tokens"] is None  # nothing was generated
    details = row["checks"][0]["details"]
    assert (
        details["chosen"] == " Paris"
        and details["acc"]
        and set(details["probs"]) == {" Rome", " Paris", " Oslo"}
    )
    assert row["named_scores"]["p"] == row["score"] > 0.5


def test_judge_model_from_provider(project: Project, cli: Cli) -> None:
    result, rows, out = run(
        project,
        cli,
        f"""
        prompts: ["Capital of {{{{ country }}}}?"]
        models: ["fake://reply?text=Paris"]
        tests:
          - vars: {{country: France}}
            assert:
              - type: llm-rubric
                value: Names the capital of {{{{ country }}}}
                provider: 'fake://reply?text={VERDICT}'
        """,
    )
    assert result.code == 0, result.err
    (row,) = rows
    check = row["checks"][0]
    assert check["score"] == 0.75 and check["details"]["judge_reason"] == "names Paris"
    manifest = json.loads((out / "manifest.json").read_text())
    roles = [m.get("role") for m in manifest["models"]]
    assert roles == ["under test", "judge"]


def test_judge_that_returns_no_json_fails_the_check_not_the_run(project: Project, cli: Cli) -> None:
    result, rows, _ = run(
        project,
        cli,
        """
        prompts: ["hi"]
        models: ["fake://reply?text=hello"]
        tests:
          - assert:
              - {type: llm-rubric, value: is friendly}
              - {type: contains, value: hello}
        """,
    )
    assert result.code == 100
    judge, contains = rows[0]["checks"]
    assert not judge["pass"] and "no complete JSON verdict" in judge["reason"]
    assert contains["pass"]


def test_constrained_generation_and_bad_grammar(project: Project, cli: Cli) -> None:
    project.write("prompts/yn.gbnf", 'root ::= "yes" | "no"\n')
    suite = """
        prompts:
          - id: "Is it? {{ x }}"
            label: yn
            config: {grammar: file://../prompts/yn.gbnf}
          - id: "Data {{ x }}"
            label: js
            config:
              response_format: {type: json_schema, schema: {type: object, properties: {a: {type: integer}}}}
        models: ["fake://reply?text=yes"]
        tests:
          - vars: {x: 1}
        """
    result, rows, _ = run(project, cli, suite)
    assert result.code == 0, result.err
    assert [r["grammar"] for r in rows] == [
        "grammar file://../prompts/yn.gbnf",
        "response_format json_schema",
    ]
    project.write("prompts/yn.gbnf", "root ::= INVALID\n")
    (project.root / "out").rename(project.root / "out-1")
    bad, _, _ = run(project, cli, suite)
    assert bad.code == 2
    # Checked right after the model loads (llama.cpp parses GBNF against the vocabulary).
    last = bad.err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "not a grammar llama.cpp accepts" in last


def test_response_format_errors_before_loading(project: Project, cli: Cli) -> None:
    project.write(
        "evals/s.yaml",
        """
        prompts: ["x"]
        models: ["fake://echo"]
        params:
          response_format: {type: text}
        """,
    )
    result = cli("validate", "evals/s.yaml")
    assert (
        result.code == 2 and "response_format type must be json_schema or json_object" in result.err
    )


def test_logprobs_are_stored_compactly_and_feed_perplexity(project: Project, cli: Cli) -> None:
    result, rows, _out = run(
        project,
        cli,
        """
        prompts: ["x"]
        models: ["fake://reply?text=one two three"]
        tests:
          - assert:
              - {type: perplexity, threshold: 2}
        """,
    )
    assert result.code == 0, result.err
    lp = rows[0]["logprobs"]
    assert lp["tokens"] == ["one", " two", " three"]
    assert lp["logprobs"] == [-0.3, -0.3, -0.5]
    assert rows[0]["checks"][0]["details"]["tokens"] == 3


def test_top_logprobs_when_asked(project: Project, cli: Cli) -> None:
    result, rows, _ = run(
        project,
        cli,
        """
        prompts: ["x"]
        models: ["fake://reply?text=one two"]
        params: {logprobs: 2}
        """,
    )
    assert result.code == 0, result.err
    assert rows[0]["logprobs"]["top"][0] == [["one", -0.3], ["one~1", -0.8]]


def test_python_checks_need_allow_code(project: Project, cli: Cli) -> None:
    project.write("evals/checks.py", "def short(output, context):\n    return len(output) < 10\n")
    suite = """
        prompts: ["x"]
        models: ["fake://reply?text=Paris"]
        tests:
          - assert:
              - {type: python, value: "file://checks.py:short"}
              - {type: python, value: "output == 'Paris'"}
        """
    refused, rows, out = run(project, cli, suite)
    assert refused.code == 2 and not out.exists()
    assert "pass --allow-code" in refused.err and refused.err.count("\n") == 1
    allowed, rows, _ = run(project, cli, suite, "--allow-code")
    assert allowed.code == 0, allowed.err
    assert [c["pass"] for c in rows[0]["checks"]] == [True, True]


def test_transforms_apply_before_python_checks(project: Project, cli: Cli) -> None:
    result, rows, _ = run(
        project,
        cli,
        """
        prompts: ["x"]
        models: ["fake://reply?text=  PARIS  "]
        tests:
          - transform: [strip, lower]
            assert:
              - {type: python, value: "output == 'paris'"}
              - {type: equals, value: paris}
        """,
        "--allow-code",
    )
    assert result.code == 0, result.err
    assert rows[0]["output"] == "  PARIS  "  # the raw output is kept; checks see the transform


def test_embedding_similarity_opens_an_embedding_model(project: Project, cli: Cli) -> None:
    result, rows, out = run(
        project,
        cli,
        """
        prompts: ["x"]
        models: ["fake://reply?text=a red apple"]
        tests:
          - assert:
              - {type: similar, value: red apples, threshold: 0.5}
              - {type: similar, value: red apples, method: rouge-l, threshold: 0.1}
        """,
    )
    assert result.code == 0, result.err
    emb, rouge = rows[0]["checks"]
    assert emb["details"]["method"] == "embedding" and rouge["details"]["method"] == "rouge-l"
    manifest = json.loads((out / "manifest.json").read_text())
    assert [m.get("role") for m in manifest["models"]] == ["under test", "embedding"]
