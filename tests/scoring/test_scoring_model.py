"""The model-backed checks on the real bundled models, through the CLI in a subprocess:
log-likelihood choice, JSON-schema constrained generation, and a local judge."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest

pytestmark = pytest.mark.model

REPO = Path(__file__).resolve().parents[2]


def promptlab(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        # --no-cache: these tests are about the model, so every cell must really run.
        [
            sys.executable,
            "-m",
            "promptlab",
            *(str(a) for a in args),
            *(["--no-cache"] if args[:1] == ("run",) else []),
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def rows_of(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def test_choice_example_scores_without_generating(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = promptlab("run", "evals/choice.yaml", "-o", out, "--limit", "4")
    assert r.returncode in (0, 100), r.stderr[-2000:]
    rows = rows_of(out)
    assert len(rows) == 16  # 2 prompts × 4 tests × 2 models
    for row in rows:
        assert row["completion_tokens"] is None  # no generation at all
        details = row["checks"][0]["details"]
        assert row["output"] == details["chosen"]
        assert abs(sum(details["probs"].values()) - 1) < 1e-3
        assert details["margin"] >= 0 and isinstance(details["acc_norm"], bool)
        assert row["named_scores"]["p_correct"] == row["score"]
    # Far above chance (25%) on these easy questions: the scores are real likelihoods.
    assert sum(r["pass"] for r in rows) >= 10
    # Deterministic: a second run picks the same options with the same probabilities.
    again = tmp_path / "again"
    promptlab("run", "evals/choice.yaml", "-o", again, "--limit", "4")
    first = {(r["model"], r["prompt"], r["test"]): r["checks"][0]["details"]["probs"] for r in rows}
    second = {
        (r["model"], r["prompt"], r["test"]): r["checks"][0]["details"]["probs"]
        for r in rows_of(again)
    }
    assert first == second


def test_json_schema_constrained_generation_always_parses(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = promptlab("run", "evals/structured.yaml", "-o", out)
    assert r.returncode in (0, 100), r.stderr[-2000:]
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "city": {"type": "string"},
        },
        "required": ["name", "age", "city"],
    }
    for row in rows_of(out):
        assert row["grammar"] == "response_format json_schema"
        jsonschema.validate(json.loads(row["output"]), schema)
        assert row["named_scores"]["valid_json"] == 1.0


def test_gbnf_grammar_limits_the_answer(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = promptlab("run", "evals/yes_no.yaml", "-o", out)
    assert r.returncode in (0, 100), r.stderr[-2000:]
    constrained = [row for row in rows_of(out) if row["prompt"] == "constrained"]
    assert len(constrained) == 4
    assert all(row["output"] in ("yes", "no") for row in constrained)


def test_local_judge_verdict_always_parses(tmp_path: Path) -> None:
    suite = tmp_path / "judge.yaml"
    suite.write_text(
        textwrap.dedent(
            """
            prompts: ["What is the capital of {{ country }}? Answer in one word."]
            models: [{path: smollm2, n_ctx: 1024}]
            params: {max_tokens: 16}
            tests:
              - vars: {country: France}
                assert:
                  - type: llm-rubric
                    value: The answer names Paris.
                    metric: judged
              - vars: {country: Japan}
                assert:
                  - type: llm-rubric
                    value: The answer names Tokyo.
                    metric: judged
            """
        )
    )
    (tmp_path / ".git").mkdir()
    out = tmp_path / "run"
    r = promptlab("run", suite, "-o", out, cwd=tmp_path)
    assert r.returncode in (0, 100), r.stderr[-2000:]
    for row in rows_of(out):
        (check,) = row["checks"]
        details = check["details"]  # absent if the verdict had not parsed
        assert isinstance(details["judge_pass"], bool)
        assert isinstance(details["judge_reason"], str) and details["judge_reason"]
        assert 0.0 <= check["score"] <= 1.0
        assert check["reason"].startswith("judge: ")
