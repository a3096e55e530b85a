"""`promptlab run SUITE --watch`, driven as a user drives it: a real process on the fake backend,
files edited under it, its stdout read, and Ctrl-C (SIGINT) at the end. Every wait is bounded, so a
watch that hangs fails the test instead of blocking it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from conftest import CliResult, Project

from promptlab.watch import in_project, suite_files

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 60  # per step; a pass on the fake backend takes about a second on a busy machine

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

# Prompt a = its include + the word; prompt b is inline. The `please` test fails for `Say`.
SUITE = """
prompts:
  - file://../prompts/a.j2
  - raw: "Please repeat {{ word }}"
    label: b
models:
  - path: fake://echo
    label: echo
tests:
  - description: greet
    vars: {word: hello}
    assert: [{type: icontains, value: hello}]
  - description: please
    vars: {word: world}
    assert: [{type: icontains, value: please}]
"""


class Watch:
    """A `promptlab run --watch` process whose stdout and stderr are collected as they come."""

    def __init__(self, cwd: Path, *args: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "promptlab", "run", *args, "--watch"],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _pump(stream: IO[str], into: list[str]) -> None:
        for line in stream:
            into.append(line)

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def wait_for(self, check: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if check():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(
            f"gave up waiting for {what} (exit {self.proc.poll()})\n"
            f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        )

    def wait_watching(self, times: int) -> None:
        self.wait_for(lambda: self.stdout.count("watching ") >= times, f"watch #{times}")

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=WAIT_S)
        for t in self._threads:
            t.join(timeout=WAIT_S)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=WAIT_S)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),  # this checkout, whatever is installed
        "PYTHONUNBUFFERED": "1",
        "PROMPTLAB_CACHE": str(tmp_path / "cache"),
        "PROMPTLAB_CONFIG": str(tmp_path / "config"),
    }


@pytest.fixture
def watch(env: dict[str, str]) -> Iterator[Callable[..., Watch]]:
    started: list[Watch] = []

    def start(cwd: Path, *args: str) -> Watch:
        started.append(Watch(cwd, *args, env=env))
        return started[-1]

    yield start
    for w in started:
        w.kill()


def runs(root: Path) -> list[dict[str, Any]]:
    """The manifests of the run folders under results/, oldest first, with their folder."""
    found = []
    for manifest in (root / "results").glob("*/manifest.json"):
        data = json.loads(manifest.read_text(encoding="utf-8"))
        found.append(data | {"folder": manifest.parent})
    return sorted(found, key=lambda m: (m["started_at"], str(m["folder"])))


def edit(path: Path, text: str) -> None:
    # A save that surely changes the mtime, even on a file system with coarse timestamps.
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text, encoding="utf-8")
    if path.stat().st_mtime_ns == before:
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


def test_edit_bad_edit_fix_and_ctrl_c(project: Project, watch: Callable[..., Watch]) -> None:
    part = project.write("prompts/_part.j2", "Say")
    template = project.write("prompts/a.j2", '{% include "prompts/_part.j2" %} {{ word }}')
    project.write("evals/s.yaml", SUITE)
    w = watch(project.root, "evals/s.yaml")

    w.wait_watching(1)
    assert "── pass 1" in w.stdout
    assert "watching 3 files of the suite" in w.stdout  # the suite, a.j2 and its include
    (first,) = runs(project.root)
    assert first["cache"]["rows_from_cache"] == 0

    # An edit to the included file: prompt a now passes `please`; prompt b is untouched.
    edit(part, "Please say")
    w.wait_watching(2)
    report = w.stdout.split("── pass 2", 1)[1]
    assert "changed: prompts/_part.j2" in w.stdout
    assert "changes since pass 1: 0 new failures, 1 fix, 1 other changed output" in report
    assert "fixed echo · a · please" in report
    assert "pass rate echo · a: 50% → 100% (+50 points)" in report
    second = runs(project.root)[1]
    assert second["cache"]["rows_from_cache"] == 2  # prompt b's two cells
    assert second["cache"]["misses"] == 2  # prompt a's, recomputed

    # A bad edit: the CLI's error lines (one per test, and the count), no traceback, and the
    # watch goes on.
    edit(template, "{{ nope }} {{ word }}")
    w.wait_watching(3)
    assert "watching the project for a fix" in w.stdout
    errors = [line.rstrip("\n") for line in w.err if line.startswith("error:")]
    assert errors[-1] == "error: 2 problems in s.yaml", w.stderr
    assert len(errors) == 3
    assert all("prompts/a.j2:1: 'nope' is undefined" in e for e in errors[:2])
    assert "Traceback" not in w.stderr
    assert len(runs(project.root)) == 2  # bad input writes nothing

    # The fix: prompt a no longer says please, so `please` fails again.
    edit(template, "Hi {{ word }}")
    w.wait_watching(4)
    report = w.stdout.split("── pass 4", 1)[1]
    assert "changes since pass 2: 1 new failure, 0 fixes, 1 other changed output" in report
    assert "new failure echo · a · please: icontains" in report
    assert "pass rate echo · a: 100% → 50% (-50 points)" in report

    assert w.interrupt() == 130
    assert "stopped watching; the last complete pass is" in w.stderr
    assert "Traceback" not in w.stderr
    done = runs(project.root)
    assert len(done) == 3
    for m in done:
        assert m["status"] == "complete"
        for name in ("results.jsonl", "results.csv", "summary.csv", "report.html"):
            assert (m["folder"] / name).is_file()
    assert str(done[-1]["folder"].name) in w.stderr
    assert done[-1]["cache"]["rows_from_cache"] == 2
    # The include is one of the suite's files, so `--resume` would see it change too.
    assert "prompts/_part.j2" in done[0]["files"]


def test_ctrl_c_during_a_pass_leaves_a_resumable_run(
    project: Project, watch: Callable[..., Watch], env: dict[str, str]
) -> None:
    project.write("prompts/a.j2", "Say {{ word }}")
    tests = "".join(
        f"  - vars: {{word: w{i}}}\n    assert: [{{type: icontains, value: w{i}}}]\n"
        for i in range(10)
    )
    project.write(
        "evals/s.yaml",
        "prompts: [file://../prompts/a.j2]\nmodels: ['fake://echo?sleep_ms=300']\ntests:\n" + tests,
    )
    w = watch(project.root, "evals/s.yaml")

    def started() -> bool:
        found = list((project.root / "results").glob("*/results.jsonl"))
        return bool(found) and found[0].read_text(encoding="utf-8").count("\n") >= 2

    w.wait_for(started, "the first cells")
    assert w.interrupt() == 130
    assert "Traceback" not in w.stderr
    assert "was interrupted: `promptlab run --resume" in w.stderr
    (m,) = runs(project.root)
    assert m["status"] == "interrupted"
    assert (m["folder"] / "report.html").is_file()
    resumed = subprocess.run(
        [sys.executable, "-m", "promptlab", "run", "--resume", str(m["folder"])],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert resumed.returncode == 0, resumed.stderr
    (m,) = runs(project.root)
    assert m["status"] == "complete"
    lines = (m["folder"] / "results.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 10


def test_editing_a_python_check_file_runs_again(
    project: Project, watch: Callable[..., Watch]
) -> None:
    """A check file is one of the suite's files, and the pass after an edit runs the new code
    (the process is the same, so a module imported by the first pass must not be reused)."""
    checks = project.write("evals/checks.py", "def ok(output, context):\n    return False\n")
    project.write(
        "evals/s.yaml",
        "prompts: ['Say {{ w }}']\nmodels: ['fake://echo']\ntests:\n"
        "  - vars: {w: hi}\n    assert: [{type: python, value: 'file://checks.py:ok'}]\n",
    )
    w = watch(project.root, "evals/s.yaml", "--allow-code")
    w.wait_watching(1)
    assert "watching 2 files of the suite" in w.stdout  # the suite and checks.py
    edit(checks, "def ok(output, context):\n    return 'hi' in output\n")
    w.wait_watching(2)
    assert "changed: evals/checks.py" in w.stdout
    assert "changes since pass 1: 0 new failures, 1 fix" in w.stdout.split("── pass 2", 1)[1]
    assert w.interrupt() == 130
    assert [m["cache"]["rows_from_cache"] for m in runs(project.root)] == [0, 1]


def test_watch_refuses_options_of_a_single_run(
    project: Project, cli: Callable[..., CliResult]
) -> None:
    project.write("evals/s.yaml", SUITE)
    r = cli("run", "evals/s.yaml", "--watch", "-o", "out", "--fail-under", "0.5")
    assert r.code == 2
    assert r.err.strip() == (
        "error: --watch starts a new run folder for every pass and prints its own report; "
        "drop -o, --fail-under; or run once without --watch"
    )
    assert not (project.root / "out").exists()


def test_which_files_are_watched(project: Project, tmp_path: Path) -> None:
    root = project.root.resolve()
    assert in_project(root / "prompts" / "a.j2", root)
    assert in_project(root / "tests.csv", root)
    assert not in_project(root / "results" / "s-1" / "results.csv", root)
    assert not in_project(root / ".promptlab" / "cache.sqlite", root)
    assert not in_project(root / "evals" / ".a.j2.swp", root)
    assert not in_project(root / "prompts" / "__pycache__" / "x.pyc", root)
    assert not in_project(tmp_path / "elsewhere.j2", root)
    assert not in_project(root, root)
    run = project.write(
        "run/manifest.json",
        json.dumps({"project_root": str(root), "files": {"evals/s.yaml": "x", "p/a.j2": "y"}}),
    ).parent
    assert suite_files(run) == {root / "evals" / "s.yaml", root / "p" / "a.j2"}
