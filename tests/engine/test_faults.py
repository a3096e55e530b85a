"""Faults around a run (issue 4): kill -9 and Ctrl-C then --resume, a corrupt cache database,
an unwritable or full results folder, two runs sharing one cache, and --resume refusals.

Fake backend only (fast). The kill/Ctrl-C/concurrency tests start real `python -m promptlab`
processes; the others run the CLI in-process.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import CliResult, Project

from promptlab.engine import store

Cli = Callable[..., CliResult]

POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

# 2 prompts × 10 tests = 20 cells; every third test fails its check (so the reports hold passes
# and failures), and the `boom` test is a cell error (fail_on) under both prompts.
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "boom"]


def fault_suite(query: str = "sleep_ms=40", words: list[str] = WORDS) -> str:
    model = f"fake://echo?fail_on=boom&{query}" if query else "fake://echo?fail_on=boom"
    tests = ""
    for i, w in enumerate(words):
        expected = '"{{ word }}"' if i % 3 else "zulu"  # every third test fails its check
        tests += (
            f"  - description: t{i} {w}\n    vars: {{word: {w}}}\n"
            f"    assert:\n      - type: icontains\n        value: {expected}\n"
        )
    return (
        "description: faults\n"
        "prompts:\n"
        '  - raw: "Say {{ word }}"\n'
        "    label: say\n"
        '  - raw: "Please repeat {{ word }} now"\n'
        "    label: repeat\n"
        "models:\n"
        f"  - path: {model}\n"
        "    label: m\n"
        "    n_ctx: 64\n"
        "params:\n"
        "  max_tokens: 16\n"
        f"tests:\n{tests}"
    )


N_CELLS = 2 * len(WORDS)

# Columns that measure time, not results: they differ between any two runs.
TIMING = {"latency_ms", "tokens_per_s", "mean_latency_ms", "mean_tokens_per_s"}


def read_manifest(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    return data


def jsonl_rows(folder: Path) -> list[dict[str, Any]]:
    """Every line must be a whole JSON row (no torn line left)."""
    data = (folder / "results.jsonl").read_text(encoding="utf-8")
    assert data == "" or data.endswith("\n"), "results.jsonl ends in a partial line"
    return [json.loads(line) for line in data.splitlines()]


def csv_without(path: Path, ignore: set[str]) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in row.items() if k not in ignore} for row in rows]


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def promptlab_process(project: Project, *args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "promptlab", *(str(a) for a in args)],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_rows(proc: subprocess.Popen[str], folder: Path, n: int, timeout: float = 60) -> None:
    """Until results.jsonl holds n lines (the run is mid-way); fails if the process ends first."""
    results = folder / "results.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if results.exists() and results.read_bytes().count(b"\n") >= n:
            return
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the run ended (exit {proc.returncode}) before {n} rows: {err}")
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"no {n} rows in {results} after {timeout}s")


def assert_same_reports(folder: Path, reference: Path, ignore: set[str] = TIMING) -> None:
    """results.csv and summary.csv are equal, but for the timing (or other ignored) columns."""
    for name in ("results.csv", "summary.csv"):
        assert csv_without(folder / name, ignore) == csv_without(reference / name, ignore), name


# --- kill -9 and Ctrl-C, then --resume -------------------------------------------------------


@POSIX
def test_kill_9_mid_run_then_resume_matches_an_uninterrupted_run(
    project: Project, cli: Cli
) -> None:
    suite = project.write("evals/faults.yaml", fault_suite())
    reference = project.root / "reference"
    r = cli("run", suite, "-o", reference, "--no-cache")
    assert r.code == 100, r.err  # some checks fail by design

    out = project.root / "killed"
    proc = promptlab_process(project, "run", suite, "-o", out, "--no-cache")
    wait_for_rows(proc, out, 2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert read_manifest(out)["status"] == "running"  # killed: nobody wrote the end
    done_before = (out / "results.jsonl").read_bytes().count(b"\n")
    assert 2 <= done_before < N_CELLS
    with (out / "results.jsonl").open("ab") as f:  # a torn write: half a row, no newline
        f.write(b'{"cell_id": "0123456789abcdef", "model": "m", "outp')

    r = cli("run", "--resume", out)
    assert r.code in (0, 100), r.err
    assert "Traceback" not in r.err

    rows = jsonl_rows(out)  # the torn line is gone: every line parses
    ids = [row["cell_id"] for row in rows]
    assert len(ids) == len(set(ids)) == N_CELLS, "every cell exactly once"
    assert set(ids) == {row["cell_id"] for row in jsonl_rows(reference)}
    assert "0123456789abcdef" not in ids
    m = read_manifest(out)
    assert m["status"] == "complete"
    assert m["resumed"][-1]["dropped_partial_line"] is True
    assert m["resumed"][-1]["cells_done"] == done_before
    assert m["resumed"][-1]["cells_left"] == N_CELLS - done_before
    assert_same_reports(out, reference)


@POSIX
def test_ctrl_c_exits_130_with_partial_reports_then_resume_completes(
    project: Project, cli: Cli
) -> None:
    suite = project.write("evals/faults.yaml", fault_suite())
    reference = project.root / "reference"
    assert cli("run", suite, "-o", reference, "--no-cache").code == 100

    out = project.root / "interrupted"
    proc = promptlab_process(project, "run", suite, "-o", out, "--no-cache")
    wait_for_rows(proc, out, 3)
    proc.send_signal(signal.SIGINT)
    stdout, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted" in stdout
    m = read_manifest(out)
    assert m["status"] == "interrupted"
    assert m["finished_at"] is not None
    partial = jsonl_rows(out)
    assert 3 <= len(partial) < N_CELLS
    with (out / "results.csv").open(encoding="utf-8", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(partial)
    assert (out / "summary.csv").is_file()
    assert "interrupted" in (out / "report.html").read_text(encoding="utf-8")

    r = cli("run", "--resume", out)
    assert r.code == 100, r.err
    rows = jsonl_rows(out)
    assert len(rows) == len({row["cell_id"] for row in rows}) == N_CELLS
    assert rows[: len(partial)] == partial  # the earlier rows stay as they were
    m = read_manifest(out)
    assert m["status"] == "complete"
    assert m["resumed"][-1]["dropped_partial_line"] is False
    assert_same_reports(out, reference)


# --- a corrupt cache database --------------------------------------------------------------


def test_corrupt_cache_is_one_line_error_and_no_cache_is_the_way_out(project: Project) -> None:
    suite = project.write("evals/faults.yaml", fault_suite(""))
    garbage = os.urandom(4096)
    db = project.write(".promptlab/cache.sqlite", garbage)
    out = project.root / "out"
    proc = promptlab_process(project, "run", suite, "-o", out)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    assert str(db) in err
    assert "--no-cache" in err
    assert not out.exists(), "nothing is written when the cache cannot be opened"

    proc = promptlab_process(project, "run", suite, "-o", out, "--no-cache")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 100, err
    assert len(jsonl_rows(out)) == N_CELLS
    assert "cache" not in read_manifest(out)
    assert db.read_bytes() == garbage, "--no-cache leaves the database alone"


def test_damaged_pages_in_a_valid_cache_fail_cleanly(project: Project, cli: Cli) -> None:
    """A real SQLite file whose pages were overwritten (not just a garbage header): either the
    run stops with one clear line (exit 1), or it is correct; never a traceback or wrong rows."""
    suite = project.write("evals/faults.yaml", fault_suite(""))
    assert cli("run", suite, "-o", project.root / "first").code == 100
    db = project.root / ".promptlab" / "cache.sqlite"
    assert not db.with_name(db.name + "-wal").exists()  # checkpointed when the run closed it
    data = bytearray(db.read_bytes())
    assert len(data) >= 4 * 4096
    data[4096:] = random.Random(4).randbytes(len(data) - 4096)  # keep the header page only
    db.write_bytes(bytes(data))

    out = project.root / "second"
    r = cli("run", suite, "-o", out)
    assert "Traceback" not in r.err
    if r.code == 1:
        lines = error_lines(r.err)
        assert len(lines) == 1, r.err
        assert str(db) in lines[0] and "--no-cache" in lines[0]
        if out.exists():
            assert read_manifest(out)["status"] == "failed"
    else:
        assert r.code == 100, r.err
        assert_same_reports(out, project.root / "first", TIMING | {"cached"})


def test_damaged_cache_entry_is_a_miss_not_a_wrong_answer(project: Project, cli: Cli) -> None:
    suite = project.write("evals/faults.yaml", fault_suite(""))
    first = project.root / "first"
    assert cli("run", suite, "-o", first).code == 100
    db = project.root / ".promptlab" / "cache.sqlite"
    with sqlite3.connect(db) as conn:
        (n,) = conn.execute("SELECT count(*) FROM entries").fetchone()
        assert n == N_CELLS - 2  # the two `boom` cell errors are not cached
        damaged = conn.execute(
            'UPDATE entries SET value = \'{"text": "Sa\' WHERE rowid % 2 = 0'
        ).rowcount
    conn.close()
    assert 0 < damaged < n
    second = project.root / "second"
    assert cli("run", suite, "-o", second).code == 100
    m = read_manifest(second)
    assert m["cache"]["hits"] == n - damaged
    assert m["cache"]["misses"] == damaged + 2
    assert sum(row["cached"] for row in jsonl_rows(second)) == n - damaged
    assert_same_reports(second, first, TIMING | {"cached"})


# --- a results folder that cannot be created or written ------------------------------------


def test_output_under_a_regular_file_is_a_clear_error(project: Project, cli: Cli) -> None:
    suite = project.write("evals/faults.yaml", fault_suite(""))
    project.write("file.txt", "not a folder\n")
    r = cli("run", suite, "-o", "file.txt/run", "--no-cache")
    assert r.code in (1, 2), r.err
    assert "Traceback" not in r.err
    assert error_lines(r.err) == [r.err.strip()], r.err
    assert "file.txt/run" in r.err
    assert (project.root / "file.txt").read_text() == "not a folder\n"

    r = cli("run", suite, "-o", "file.txt", "--no-cache")  # -o is itself a file
    assert r.code == 2
    assert "not a folder" in r.err
    assert (project.root / "file.txt").read_text() == "not a folder\n"


@pytest.mark.skipif(
    sys.platform == "win32" or os.geteuid() == 0, reason="root ignores folder permissions"
)
def test_read_only_results_folder_is_a_clear_error(project: Project, cli: Cli) -> None:
    suite = project.write("evals/faults.yaml", fault_suite(""))
    locked = project.root / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        r = cli("run", suite, "-o", locked / "run", "--no-cache")
    finally:
        locked.chmod(0o755)
    assert r.code == 1
    assert "Traceback" not in r.err
    assert len(error_lines(r.err)) == 1
    assert "Permission denied" in r.err
    assert not (locked / "run").exists()


def test_existing_folder_that_refuses_writes_is_a_clear_error(
    project: Project, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only folder as seen by a non-root user (root ignores the permission bits, so
    opening files in it is refused here by patching os.open)."""
    suite = project.write("evals/faults.yaml", fault_suite(""))
    locked = project.root / "locked"
    locked.mkdir()
    real_open = os.open

    def refuse(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if Path(path).parent == locked and flags & (os.O_WRONLY | os.O_RDWR):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(os, "open", refuse)
        r = cli("run", suite, "-o", locked, "--no-cache")
    assert r.code == 1, r.err
    assert "Traceback" not in r.err and "internal error" not in r.err
    assert error_lines(r.err) == [r.err.strip()], r.err
    assert str(locked) in r.err and os.strerror(errno.EACCES) in r.err
    assert list(locked.iterdir()) == []


def fill_disk_after(
    monkeypatch: pytest.MonkeyPatch, target: Path, whole_rows: int
) -> dict[str, int]:
    """From row `whole_rows + 1` on, writes to `target` (results.jsonl) hit a full disk: the
    first failing row gets half written (a short write), then ENOSPC, as on a real full disk."""
    real_write = os.write
    state = {"rows": 0}

    def write(fd: int, data: Any) -> int:
        try:
            is_target = target.exists() and os.path.samestat(os.fstat(fd), target.stat())
        except OSError:
            is_target = False
        if not is_target:
            return real_write(fd, data)
        state["rows"] += 1
        if state["rows"] <= whole_rows:
            return real_write(fd, data)
        if state["rows"] == whole_rows + 1:
            return real_write(fd, bytes(data)[: max(1, len(data) // 2)])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", write)
    return state


def test_disk_full_mid_run_fails_cleanly_and_resume_finishes(
    project: Project, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decided behaviour: exit 1, one line naming results.jsonl and the cause, manifest status
    "failed" with the error, results.jsonl holding only whole rows (the half-written one is cut),
    reports for those rows; `--resume` finishes the run once there is space again."""
    suite = project.write("evals/faults.yaml", fault_suite(""))
    reference = project.root / "reference"
    assert cli("run", suite, "-o", reference, "--no-cache").code == 100

    out = project.root / "out"
    with monkeypatch.context() as patch:
        fill_disk_after(patch, out / "results.jsonl", whole_rows=5)
        r = cli("run", suite, "-o", out, "--no-cache")
    assert r.code == 1, r.err
    assert "Traceback" not in r.err and "internal error" not in r.err
    lines = error_lines(r.err)
    assert len(lines) == 1, r.err
    assert "results.jsonl" in lines[0]
    assert os.strerror(errno.ENOSPC) in lines[0]
    m = read_manifest(out)
    assert m["status"] == "failed"
    assert os.strerror(errno.ENOSPC) in m["error"]
    rows = jsonl_rows(out)  # whole rows only: the short write was cut back
    assert len(rows) == 5
    with (out / "results.csv").open(encoding="utf-8", newline="") as f:
        assert len(list(csv.DictReader(f))) == 5

    r = cli("run", "--resume", out)
    assert r.code == 100, r.err
    rows = jsonl_rows(out)
    assert len(rows) == len({row["cell_id"] for row in rows}) == N_CELLS
    assert read_manifest(out)["status"] == "complete"
    assert_same_reports(out, reference)


def test_atomic_write_on_a_full_disk_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "report.html"
    target.write_text("old", encoding="utf-8")

    class FullFile(io.BytesIO):
        def write(self, data: Any) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    real_fdopen = os.fdopen

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        os.close(fd)
        return FullFile()

    monkeypatch.setattr(os, "fdopen", fdopen)
    with pytest.raises(store.StoreError) as exc:
        store.atomic_write(target, "new")
    monkeypatch.setattr(os, "fdopen", real_fdopen)
    assert str(target) in exc.value.one_line()
    assert os.strerror(errno.ENOSPC) in exc.value.one_line()
    assert target.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"], "no temp file left"


def test_unexpected_error_mid_run_marks_the_run_failed(
    project: Project, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    from promptlab.engine import runner

    suite = project.write("evals/faults.yaml", fault_suite(""))
    real_make_row = runner.make_row
    calls = {"n": 0}

    def make_row(*args: Any, **kwargs: Any) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated bug")
        return real_make_row(*args, **kwargs)

    monkeypatch.setattr(runner, "make_row", make_row)
    out = project.root / "out"
    r = cli("run", suite, "-o", out, "--no-cache")
    assert r.code == 1
    assert "Traceback" not in r.err
    assert read_manifest(out)["status"] == "failed"


def test_wrong_shaped_cache_entry_is_a_miss(project: Project, cli: Cli) -> None:
    suite = project.write("evals/faults.yaml", fault_suite(""))
    first = project.root / "first"
    assert cli("run", suite, "-o", first).code == 100
    db = project.root / ".promptlab" / "cache.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE entries SET value = '{}' WHERE rowid = 1")
    conn.close()
    second = project.root / "second"
    r = cli("run", suite, "-o", second)
    assert r.code == 100, r.err
    assert_same_reports(second, first, TIMING | {"cached"})


# --- two runs writing one cache at once ----------------------------------------------------


def test_two_runs_share_one_cache_at_once(project: Project, cli: Cli) -> None:
    words = [f"w{i}" for i in range(30)]
    suite = project.write("evals/faults.yaml", fault_suite("sleep_ms=10", words))
    cells = 2 * len(words)
    db = project.root / "shared" / "cache.sqlite"
    procs = [
        promptlab_process(project, "run", suite, "-o", project.root / f"run{i}", "--cache-db", db)
        for i in (1, 2)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 100, err
        assert "Traceback" not in err
    manifests = [read_manifest(project.root / f"run{i}") for i in (1, 2)]
    for m in manifests:
        assert m["status"] == "complete"
        assert "write_errors" not in m["cache"], m["cache"]
        assert m["cache"]["hits"] + m["cache"]["misses"] == cells
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT count(*) FROM entries").fetchone() == (cells,)
    conn.close()

    third = project.root / "run3"
    r = cli("run", suite, "-o", third, "--cache-db", db)
    assert r.code == 100, r.err
    m = read_manifest(third)
    assert m["cache"]["hits"] == cells
    assert m["cache"]["misses"] == 0
    rows = jsonl_rows(third)
    assert len(rows) == cells
    assert all(row["cached"] for row in rows)
    assert_same_reports(third, project.root / "run1", TIMING | {"cached"})


# --- --resume refusals ---------------------------------------------------------------------


def interrupted_run(project: Project, cli: Cli) -> tuple[Path, Path]:
    suite = project.write("evals/faults.yaml", fault_suite("interrupt_after=3"))
    out = project.root / "out"
    assert cli("run", suite, "-o", out, "--no-cache").code == 130
    return suite, out


def assert_refused(r: CliResult, *words: str) -> None:
    assert r.code == 2, r.err
    assert "Traceback" not in r.err
    assert len(r.err.splitlines()) == 1, r.err
    for word in words:
        assert word in r.err


def test_resume_refuses_a_complete_run(project: Project, cli: Cli) -> None:
    suite = project.write("evals/faults.yaml", fault_suite(""))
    out = project.root / "out"
    assert cli("run", suite, "-o", out, "--no-cache").code == 100
    before = (out / "results.jsonl").read_bytes()
    assert_refused(cli("run", "--resume", out), "already complete")
    assert (out / "results.jsonl").read_bytes() == before


def test_resume_refuses_a_changed_suite(project: Project, cli: Cli) -> None:
    suite, out = interrupted_run(project, cli)
    before = (out / "results.jsonl").read_bytes()
    suite.write_text(suite.read_text().replace("Say {{ word }}", "Now say {{ word }}"))
    assert_refused(cli("run", "--resume", out), "changed")
    assert (out / "results.jsonl").read_bytes() == before
    assert read_manifest(out)["status"] == "interrupted"


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["SUITE"], "SUITE"),
        (["--filter-test", "alpha"], "--filter-test"),
        (["--filter-prompt", "say"], "--filter-prompt"),
        (["--filter", "alpha"], "--filter"),
        (["--limit", "2"], "--limit"),
        (["--sample", "2"], "--sample"),
        (["-o", "elsewhere"], "-o"),
    ],
)
def test_resume_refuses_other_selection_arguments(
    project: Project, cli: Cli, extra: list[str], named: str
) -> None:
    suite, out = interrupted_run(project, cli)
    args = [str(suite) if a == "SUITE" else a for a in extra]
    assert_refused(cli("run", "--resume", out, *args), named)
    assert read_manifest(out)["status"] == "interrupted"


def test_resume_of_a_folder_without_a_run(project: Project, cli: Cli) -> None:
    (project.root / "empty").mkdir()
    assert_refused(cli("run", "--resume", project.root / "empty"), "manifest.json")
