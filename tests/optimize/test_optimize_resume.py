"""promptlab optimize is resumable after Ctrl-C and after kill -9, and it does not invent
winners: on a null suite it finds none in at least 95% of 100 seeds (fake backend)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Project
from optimize_suites import demo_suite, null_suite, read_jsonl

from promptlab import core
from promptlab.optimize import optimize, resume

NO_CACHE = core.CacheOptions(use=False)
REPO = Path(__file__).resolve().parents[2]


def _outcome(folder: Path) -> dict[str, Any]:
    """What a finished optimization decided, without timings or the session's own counts."""
    summary = json.loads((folder / "summary.json").read_text())
    summary["calls"] = {k: summary["calls"][k] for k in ("budget", "used")}
    summary.pop("model")
    candidates = json.loads((folder / "candidates.json").read_text())
    trace = read_jsonl(folder / "trace.jsonl")
    return {
        "summary": summary,
        "candidates": candidates,
        "trace": trace,
        "split": (folder / "split.json").read_text(),
        "best": (folder / "best.j2").read_text() if (folder / "best.j2").exists() else None,
    }


def test_ctrl_c_then_resume_ends_exactly_where_an_uninterrupted_run_does(project: Project) -> None:
    whole = demo_suite(project, name="evals/whole.yaml")
    reference = optimize(whole, out=project.root / "whole", cache=NO_CACHE, seed=4)
    assert reference.status == "complete"
    # the same suite on a model that raises KeyboardInterrupt (as Ctrl-C) every 37 calls
    cut = demo_suite(project, name="evals/cut.yaml", model="fake://echo?interrupt_after=37")
    folder = project.root / "cut"
    result = optimize(cut, out=folder, cache=NO_CACHE, seed=4)
    sessions = 1
    while result.status == "interrupted":
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["status"] == "interrupted"
        result = resume(folder)
        sessions += 1
        assert sessions < 20
    assert sessions > 2  # it really was cut, several times
    assert result.status == "complete"
    got = _outcome(folder)
    got["best"] = got["best"].replace("cut.yaml", "whole.yaml")  # the suites' only difference
    assert got == _outcome(project.root / "whole")
    # every cell ran once over all the sessions: resuming repeats no model call
    rows = read_jsonl(folder / "results.jsonl")
    assert len(rows) == len({(r["prompt"], r["test_index"]) for r in rows}) == reference.ran


def test_kill_9_then_resume_ends_exactly_where_an_uninterrupted_run_does(project: Project) -> None:
    model = "fake://echo?sleep_ms=15"
    suite = demo_suite(project, model=model)
    folder = project.root / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "promptlab",
            "optimize",
            str(suite),
            "-o",
            str(folder),
            "--no-cache",
            "--seed",
            "6",
        ],
        cwd=project.root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results = folder / "results.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if results.exists() and results.read_bytes().count(b"\n") >= 70:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert json.loads((folder / "manifest.json").read_text())["status"] == "running"
    done_before = results.read_bytes().count(b"\n")
    result = resume(folder)
    assert result.status == "complete" and result.reused >= done_before - 1
    reference = optimize(suite, out=project.root / "whole", cache=NO_CACHE, seed=6)
    assert _outcome(folder) == _outcome(reference.folder)


def test_resume_refuses_a_finished_run_and_a_changed_suite(project: Project, cli: Any) -> None:
    suite = demo_suite(project)
    folder = project.root / "run"
    optimize(suite, out=folder, cache=NO_CACHE, seed=1)
    finished = cli("optimize", "--resume", folder)
    assert finished.code == 2 and "already complete" in finished.err
    cut = demo_suite(project, name="evals/cut.yaml", model="fake://echo?interrupt_after=30")
    optimize(cut, out=project.root / "cut", cache=NO_CACHE, seed=1)
    cut.write_text(cut.read_text().replace("Answer.", "Reply."))
    changed = cli("optimize", "--resume", project.root / "cut")
    assert changed.code == 2 and "changed since this optimization started" in changed.err


def test_a_null_suite_gives_no_winner_in_at_least_95_of_100_seeds(project: Project) -> None:
    winners = []
    for seed in range(100):
        suite = null_suite(project, seed)
        result = optimize(
            suite, out=project.root / f"null{seed}" / "run", cache=NO_CACHE, seed=seed
        )
        assert result.status == "complete"
        assert result.search.tried >= 1
        if result.verdict.better:
            winners.append((seed, result.verdict.text))
        else:
            assert result.verdict.text.startswith("nothing beat the baseline")
            assert not any((project.root / f"null{seed}").glob("**/*.optimized.j2"))
    assert len(winners) <= 5, winners


@pytest.mark.parametrize("seed", [0])
def test_the_null_suite_really_varies_between_candidates(project: Project, seed: int) -> None:
    # Not a vacuous null: candidates do get different validation scores, so selection happens.
    suite = null_suite(project, seed)
    result = optimize(suite, out=project.root / "run", cache=NO_CACHE, seed=seed)
    rates = {round(r.pass_rate, 3) for r in result.search.records.values() if r.tests}
    assert len(rates) > 2
