"""promptlab optimize on the bundled SmolLM2 (issue 14's proof, as tests): the shipped demo finds
a held-out win on two seeds, and with the labels shuffled no seed declares one.

Each seed takes about a minute on one quiet CPU. The README's table comes from the same command
(`promptlab optimize evals/optimize_demo.yaml --seed N`); benchmarks/optimize_null.py is the
longer null check, whose suite builder these tests reuse.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from promptlab import core
from promptlab.optimize import optimize

ROOT = Path(__file__).resolve().parents[2]


def _null_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "optimize_null", ROOT / "benchmarks/optimize_null.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _demo_project(dest: Path) -> Path:
    """The shipped demo suite in a throwaway project, so the winner is written there."""
    (dest / ".git").mkdir(parents=True)
    shutil.copytree(ROOT / "evals", dest / "evals", ignore=shutil.ignore_patterns("results"))
    shutil.copytree(
        ROOT / "prompts", dest / "prompts", ignore=shutil.ignore_patterns("*.optimized.j2")
    )
    return dest / "evals" / "optimize_demo.yaml"


@pytest.mark.timeout(900)
@pytest.mark.parametrize("seed", [1, 2])
def test_the_demo_finds_a_win_the_held_out_tests_support(tmp_path: Path, seed: int) -> None:
    suite = _demo_project(tmp_path / "project")
    result = optimize(
        suite,
        out=tmp_path / "run",
        seed=seed,
        cache=core.CacheOptions(path=tmp_path / "cache.sqlite"),
    )
    assert result.error is None and result.status == "complete"
    verdict = result.verdict
    assert verdict is not None and result.search is not None
    assert verdict.better, verdict.text
    assert verdict.p_adjusted is not None and verdict.p_adjusted < 0.05, verdict.text
    assert verdict.best_rate is not None and verdict.baseline_rate is not None
    assert verdict.best_rate > verdict.baseline_rate
    assert result.used <= result.budget
    assert result.written == tmp_path / "project" / "prompts" / "topic.optimized.j2"
    assert result.written.is_file()


@pytest.mark.timeout(900)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_shuffled_labels_give_no_winner_on_the_real_model(tmp_path: Path, seed: int) -> None:
    suite = _null_bench().build(tmp_path / "project", seed)
    result = optimize(
        suite,
        out=tmp_path / "run",
        seed=seed,
        budget=150,
        cache=core.CacheOptions(path=tmp_path / "cache.sqlite"),
    )
    assert result.error is None and result.status == "complete"
    verdict = result.verdict
    assert verdict is not None and result.search is not None
    assert result.search.tried >= 2  # it did search: candidates raced on validation
    assert not verdict.better, verdict.text
    assert "nothing beat" in verdict.text
    assert result.written is None
