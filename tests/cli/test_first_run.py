"""The first run, from any folder (issue 12): where runs and the cache go, what runs are called,
notes before the first cell, `eval` and the default suite, unwrapped piped output, outputs with
no checks, the busy-machine thread note, the run-folder lock, the status while reports are
written, file modes and the HTML report's tint and title. All on the fake backend."""

from __future__ import annotations

import csv
import json
import os
import re
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CliResult, Project

from promptlab import core
from promptlab.engine import threads
from promptlab.engine.store import MANIFEST, RunLock, read_manifest, run_name, slug
from promptlab.files import find_project_root

Cli = Callable[..., CliResult]

FEWSHOT = "Say {{ word }}\n"

# A promptfoo config as promptfoo users write them: a generic file name, a file prompt.
CONFIG = """
description: {description}
prompts:
  - file://fewshot.j2
providers:
  - openai:gpt-4o-mini
tests:
  - vars: {{word: hello}}
    assert:
      - type: icontains
        value: hello
  - vars: {{word: world}}
    assert:
      - type: icontains
        value: planet
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def rows_of(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def outside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder outside every project and outside git (checked, not assumed)."""
    monkeypatch.delenv("PROMPTLAB_CACHE_DB", raising=False)
    monkeypatch.setenv("PROMPTLAB_CACHE", str(tmp_path / "cache"))
    for folder in (tmp_path, *tmp_path.parents):
        if (folder / ".git").exists() or (folder / "promptlab.toml").is_file():
            pytest.skip(f"{folder} is a project; the test needs a folder outside any")
    return tmp_path


# --- 1. from any folder ----------------------------------------------------------------------


def test_without_a_marker_the_project_is_the_suites_own_folder(outside: Path) -> None:
    suite_dir = outside / "x" / "deep"
    suite_dir.mkdir(parents=True)
    assert find_project_root(suite_dir) == suite_dir.resolve()


def test_the_project_search_stops_below_home(
    outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = outside / "home"
    (home / ".git").mkdir(parents=True)  # dotfiles in git: ~ must still not become the project
    downloads = home / "Downloads"
    downloads.mkdir()
    monkeypatch.setenv("HOME", str(home))
    assert find_project_root(downloads) == downloads.resolve()


def test_a_suite_outside_git_keeps_its_runs_and_cache_wherever_the_command_is_typed(
    outside: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite_dir = outside / "x"
    write(suite_dir / "fewshot.j2", FEWSHOT)
    suite = write(suite_dir / "promptfooconfig.yaml", CONFIG.format(description="Few shot"))
    # Typed from inside an unrelated git checkout: its root must not become the suite's project
    # (which refused fewshot.j2 as "outside the project").
    checkout = outside / "repo"
    (checkout / ".git").mkdir(parents=True)
    monkeypatch.chdir(checkout)
    first = cli("run", suite, "--model", "fake://echo")
    assert first.code == 100, first.err  # one of the two checks fails
    assert "outside the project" not in first.err
    runs = sorted((suite_dir / "results").iterdir())
    assert [p.name.rsplit("-", 2)[0] for p in runs] == ["few-shot"]
    assert (suite_dir / ".promptlab" / "cache.sqlite").is_file()
    assert sorted(p.name for p in checkout.iterdir()) == [".git"]  # nothing in the cwd
    # A rerun from yet another folder finds the same project and is served from its cache.
    monkeypatch.chdir(outside)
    second = cli("run", suite, "--model", "fake://echo")
    assert second.code == 100, second.err
    runs = sorted((suite_dir / "results").iterdir())
    assert len(runs) == 2
    manifest = read_manifest(runs[-1])
    assert manifest["cache"]["rows_from_cache"] == 2
    assert manifest["project_root"] == str(suite_dir.resolve())
    assert not (outside / "results").exists() and not (outside / ".promptlab").exists()
    # history from elsewhere, given the suite file, lists that project's runs.
    hist = cli("history", suite)
    assert hist.code == 0, hist.err
    assert all(p.name in hist.out for p in runs)


# --- 2. run names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "description", "expected"),
    [
        ("proj/promptfooconfig.yaml", "Translation: EN → DE, v2!", "translation-en-de-v2"),
        ("proj/promptfooconfig.yaml", None, "proj"),
        ("My Project/suite.yml", "", "my-project"),
        ("evals/config.yaml", "   ", "config"),  # evals is generic too: the stem it is
        ("evals/summarize.yaml", "A description", "summarize"),  # a real name stays
    ],
)
def test_run_name(tmp_path: Path, file: str, description: str | None, expected: str) -> None:
    assert run_name(tmp_path / file, description) == expected


def test_slug_is_short_and_safe() -> None:
    assert slug("Über-long " * 20) == ("uber-long-" * 5)[:48].rstrip("-")
    assert slug("../../etc") == "etc"
    assert slug("日本語") == ""


def test_generic_config_runs_are_named_and_found_by_description(project: Project, cli: Cli) -> None:
    for folder, description in (("a", "Alpha checks"), ("b", "Beta checks")):
        write(project.root / folder / "fewshot.j2", FEWSHOT)
        write(
            project.root / folder / "promptfooconfig.yaml",
            CONFIG.format(description=description),
        )
        r = cli("run", project.root / folder / "promptfooconfig.yaml", "-m", "fake://echo")
        assert r.code == 100, r.err
    names = sorted(p.name.rsplit("-", 2)[0] for p in (project.root / "results").iterdir())
    assert names == ["alpha-checks", "beta-checks"]
    alpha = cli("history", "alpha-checks")
    assert alpha.code == 0, alpha.err
    assert "alpha-checks-" in alpha.out and "beta-checks-" not in alpha.out
    manifest = read_manifest(next((project.root / "results").glob("alpha-checks-*")))
    assert manifest["suite"]["name"] == "alpha-checks"


# --- 3. notes before the first cell ----------------------------------------------------------


class Events:
    """A Progress that records what happened in which order."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def start(self, total: int) -> None:
        self.log.append("start")

    def model_loading(self, label: str) -> None:
        self.log.append("loading")

    def model_loaded(self, label: str, facts: dict[str, Any]) -> None:
        self.log.append("loaded")

    def cell_done(self, row: dict[str, Any]) -> None:
        self.log.append("cell")


def test_notes_are_shown_before_the_first_cell_and_only_once(project: Project, cli: Cli) -> None:
    write(project.root / "fewshot.j2", FEWSHOT)
    suite = write(project.root / "promptfooconfig.yaml", CONFIG.format(description="n"))
    events = Events()
    shown: list[list[str]] = []

    def notes(batch: list[str]) -> None:
        shown.append(batch)
        events.log.append("notes")

    result = core.run(suite, model="fake://echo", progress=events, notes=notes)
    assert events.log[0] == "notes" and "cell" in events.log
    assert len(shown) == 1 and any("providers" in n for n in shown[0])
    assert result.notes_shown == len(shown[0])
    # Through the CLI: each note once, and before the model line of the progress output.
    r = cli("run", suite, "-m", "fake://echo", "--no-cache")  # so the model loads
    lines = r.err.splitlines()
    note_lines = [i for i, line in enumerate(lines) if line.startswith("note:")]
    assert len(note_lines) == len({lines[i] for i in note_lines}) >= 1
    model_line = next(i for i, line in enumerate(lines) if line.startswith("model "))
    assert max(note_lines) < model_line


# --- 4. eval and the default suite -----------------------------------------------------------


def test_eval_is_run_and_takes_promptfooconfig_by_default(project: Project, cli: Cli) -> None:
    write(project.root / "fewshot.j2", FEWSHOT)
    write(project.root / "promptfooconfig.yaml", CONFIG.format(description="greetings"))
    r = cli("eval", "-m", "fake://echo")
    assert r.code == 100, r.err
    assert [p.name.rsplit("-", 2)[0] for p in (project.root / "results").iterdir()] == ["greetings"]
    (line,) = [x for x in cli("--help").out.splitlines() if re.match(r"\W*eval\s", x)]
    assert "promptfoo's name for `run`" in line


def test_run_without_a_file_takes_the_one_suite_in_evals(project: Project, cli: Cli) -> None:
    write(
        project.root / "evals" / "only.yaml",
        'prompts: ["Say {{ w }}"]\nmodels: ["fake://echo"]\ntests: [{vars: {w: hi}}]\n',
    )
    r = cli("run")
    assert r.code == 0, r.err
    assert [p.name.rsplit("-", 2)[0] for p in (project.root / "results").iterdir()] == ["only"]


def test_run_without_a_file_lists_the_candidates(project: Project, cli: Cli) -> None:
    r = cli("run")
    assert r.code == 2
    assert "no ./promptfooconfig.yaml" in r.err and "promptlab run" in r.err
    for name in ("a.yaml", "b.yml"):
        write(project.root / "evals" / name, "prompts: [x]\n")
    r = cli("run")
    assert r.code == 2
    (line,) = r.err.strip().splitlines()
    assert "evals/a.yaml" in line and "evals/b.yml" in line and "name one" in line
    assert not (project.root / "results").exists()


# --- 5. no wrapping when piped ---------------------------------------------------------------


def test_piped_notes_and_lines_are_not_wrapped(project: Project) -> None:
    long_id = "openai:" + "-".join(["a-very-long-provider-name"] * 6)
    write(project.root / "fewshot.j2", FEWSHOT)
    suite = write(
        project.root / "promptfooconfig.yaml",
        CONFIG.format(description="piped").replace("openai:gpt-4o-mini", long_id),
    )
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR", "TERM")}
    proc = subprocess.run(
        [sys.executable, "-m", "promptlab", "run", str(suite), "-m", "fake://echo"],
        capture_output=True,
        text=True,
        env=env,
        cwd=project.root,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 100, proc.stderr
    notes = read_manifest(next((project.root / "results").iterdir()))["notes"]
    assert notes and max(map(len, notes)) > 80
    lines = proc.stderr.splitlines()
    for note in notes:
        assert f"note: {note}" in lines  # whole, on one line
    report = next(line for line in proc.stdout.splitlines() if line.startswith("report:"))
    assert report.endswith("report.html")


# --- 6. no checks ----------------------------------------------------------------------------

NO_CHECKS = """
prompts:
  - raw: "Say {{ word }}"
    label: say
  - raw: "Please say {{ word }}"
    label: polite
models:
  - path: fake://echo
    label: echo
tests:
  - vars: {word: hello}
  - vars: {word: world}
  - vars: {word: again}
"""


def test_a_suite_with_no_checks_passes_nothing_and_exits_0(project: Project, cli: Cli) -> None:
    suite = write(project.root / "evals" / "nochecks.yaml", NO_CHECKS)
    out = project.root / "out"
    junit = project.root / "junit.xml"
    r = cli("run", suite, "-o", out, "--junit", junit)
    assert r.code == 0, r.err
    assert "100%" not in r.out and "no checks" in r.out
    assert "6 with no checks" in r.out and "0 passed" in r.out
    assert "Verdicts" not in r.out and "more tests" not in r.out
    rows = read_csv(out / "results.csv")
    assert {(row["status"], row["pass"]) for row in rows} == {("unchecked", "")}
    summary = read_csv(out / "summary.csv")
    assert [(s["pass_rate"], s["unchecked"], s["passed"]) for s in summary] == [("", "3", "0")] * 2
    assert read_csv(out / "comparisons.csv") == []
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "0/0 cells passed, 6 with no checks" in html
    summary_html = html[html.index('<table class="summary">') : html.index("</table>")]
    assert "100%" not in summary_html and "no checks" in summary_html
    assert 'skipped="6"' in junit.read_text(encoding="utf-8")
    # The JSON summary agrees, and a pass-rate gate has nothing to measure.
    data = json.loads(cli("report", out, "--format", "json").out)
    assert data["totals"]["pass_rate"] is None and data["totals"]["unchecked"] == 6
    gate = cli("report", out, "--fail-under", "0.5")
    assert gate.code == 100 and "no cell has a check" in gate.err


def test_unchecked_outputs_stay_out_of_the_pass_rate(project: Project, cli: Cli) -> None:
    suite = write(
        project.root / "evals" / "mixed.yaml",
        NO_CHECKS.replace(
            "  - vars: {word: hello}\n",
            "  - vars: {word: hello}\n    assert: [{type: contains, value: hello}]\n",
        ).replace(
            "  - vars: {word: world}\n",
            "  - vars: {word: world}\n    assert: [{type: contains, value: nope}]\n",
        ),
    )
    out = project.root / "out"
    r = cli("run", suite, "-o", out, "--format", "json")
    assert r.code == 100, r.err
    data = json.loads(r.out)
    assert data["totals"]["pass_rate"] == 0.5  # 2 of 4 checked; the 2 unchecked are left out
    assert [s["pass_rate"] for s in data["summary"]] == [0.5, 0.5]
    assert [s["tests"] for s in data["summary"]] == [2, 2]  # statistics over checked tests only
    assert core.failing_cells(out) == {
        row["cell_id"] for row in rows_of(out) if row["status"] == "fail"
    }


# --- 7. threads on a busy machine ------------------------------------------------------------

THREADS_SUITE = """
prompts: ["Say {{ w }}"]
models:
  - path: fake://echo
    label: m
tests:
  - vars: {w: hi}
    assert: [{type: contains, value: hi}]
"""


@pytest.fixture
def four_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plan models as on a 4-CPU machine, and treat the fake model as a real one here."""
    import promptlab.plan.cells

    monkeypatch.setattr(promptlab.plan.cells, "usable_cpus", lambda: 4)
    monkeypatch.setattr(threads, "usable_cpus", lambda: 4)
    monkeypatch.setattr(threads, "is_fake", lambda spec: False)


@pytest.mark.usefixtures("four_cpus")
def test_a_busy_machine_gets_a_thread_note(project: Project) -> None:
    plan = core.prepare(write(project.root / "s.yaml", THREADS_SUITE))
    record = threads.check_threads(plan, measure=lambda: 3.2)
    assert record is not None and record["warned"] and record["suggested_n_threads"] == 1
    assert record["default_n_threads"] == {"m": 4}
    (note,) = [n for n in plan.suite.notes if "busy" in n]
    assert "~3.2 of its 4 CPUs" in note and "set n_threads: 1" in note


@pytest.mark.usefixtures("four_cpus")
def test_a_quiet_machine_or_a_set_n_threads_gets_no_note(project: Project) -> None:
    plan = core.prepare(write(project.root / "s.yaml", THREADS_SUITE))
    record = threads.check_threads(plan, measure=lambda: 0.2)
    assert record is not None and not record["warned"]
    assert not [n for n in plan.suite.notes if "busy" in n]
    pinned = core.prepare(
        write(
            project.root / "p.yaml", THREADS_SUITE.replace("label: m", "label: m\n    n_threads: 4")
        )
    )

    def never() -> float:
        raise AssertionError("no need to sample the load")

    assert threads.check_threads(pinned, measure=never) is None


@pytest.mark.usefixtures("four_cpus")
def test_the_thread_check_is_noted_first_and_recorded(
    project: Project, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(threads, "measure_load", lambda: 2.5)
    out = project.root / "out"
    r = cli("run", write(project.root / "s.yaml", THREADS_SUITE), "-o", out)
    assert r.code == 0, r.err
    assert r.err.startswith("note: the machine is busy")
    record = read_manifest(out)["threads"]
    assert record["others_busy_cpus"] == 2.5 and record["warned"]


# --- 8. the HTML report ----------------------------------------------------------------------

FAILING = """
prompts:
  - raw: "Say {{ word }}"
    label: say
models: ["fake://echo"]
tests:
  - vars: {word: "%s"}
    assert: [{type: contains, value: nope}]
"""


def test_the_top_row_is_green_only_when_it_is_good(project: Project, cli: Cli) -> None:
    write(project.root / "fail" / "promptfooconfig.yaml", FAILING % "x")
    r = cli("run", project.root / "fail" / "promptfooconfig.yaml", "-o", project.root / "o1")
    assert r.code == 100, r.err
    html = (project.root / "o1" / "report.html").read_text(encoding="utf-8")
    assert '<tr class="top">' in html and "good" not in re.findall(r"<tr class=\"[^\"]*\"", html)[0]
    # No description: the title is the folder's name, not promptfooconfig.yaml.
    assert "<title>fail · promptlab</title>" in html
    passing = FAILING.replace("nope", "Say")
    write(project.root / "ok" / "promptfooconfig.yaml", passing % "x")
    r = cli("run", project.root / "ok" / "promptfooconfig.yaml", "-o", project.root / "o2")
    assert r.code == 0, r.err
    html = (project.root / "o2" / "report.html").read_text(encoding="utf-8")
    assert '<tr class="top good">' in html


def test_long_variable_values_are_wrapped_and_bounded() -> None:
    from promptlab.reports.html import _asset

    css = _asset("report.css")
    rule = re.search(r"\.tvars div\{([^}]*)\}", css)
    assert rule is not None
    assert "overflow-wrap:anywhere" in rule.group(1) and "overflow:auto" in rule.group(1)


# --- 9. file modes follow the umask ----------------------------------------------------------


@pytest.fixture
def umask_027() -> Iterator[None]:
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("umask_027")
def test_every_run_file_gets_the_users_umask(project: Project, cli: Cli) -> None:
    out = project.root / "out"
    r = cli("run", write(project.root / "s.yaml", THREADS_SUITE), "-o", out)
    assert r.code == 0, r.err
    assert cli("report", out, "--spreadsheet").code == 0
    files = [
        out / name
        for name in (
            "results.jsonl",
            MANIFEST,
            "results.csv",
            "summary.csv",
            "comparisons.csv",
            "report.html",
        )
    ] + sorted((out / "spreadsheet").iterdir())
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {oct(0o640)}, modes


# --- 10. the run-folder lock -----------------------------------------------------------------


def interrupted_run(
    project: Project, cli: Cli, suite_text: str = NO_CHECKS, keep: int = 2, *args: str
) -> Path:
    """A run folder as a Ctrl-C after `keep` cells leaves it."""
    out = project.root / "out"
    r = cli("run", write(project.root / "s.yaml", suite_text), "-o", out, *args)
    assert r.code == 0, r.err
    lines = (out / "results.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (out / "results.jsonl").write_text("".join(lines[:keep]), encoding="utf-8")
    manifest = read_manifest(out)
    manifest["status"] = "interrupted"
    (out / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    return out


def test_a_second_writer_of_a_run_folder_is_refused(project: Project, cli: Cli) -> None:
    out = interrupted_run(project, cli)
    before = (out / "results.jsonl").read_bytes()
    holder = RunLock(out)  # as another `promptlab run --resume` would hold it
    try:
        r = cli("run", "--resume", out)
    finally:
        holder.release()
    assert r.code == 1
    (line,) = r.err.strip().splitlines()
    assert str(out) in line and f"pid {os.getpid()}" in line and "--resume" in line
    assert (out / "results.jsonl").read_bytes() == before
    assert read_manifest(out)["status"] == "interrupted"
    # Once the lock is free, the resume runs and ends with every cell once.
    r = cli("run", "--resume", out)
    assert r.code == 0, r.err
    assert len(rows_of(out)) == 6


def test_a_new_run_into_a_folder_being_written_is_refused(project: Project, cli: Cli) -> None:
    out = project.root / "busy"
    holder = RunLock(out)
    try:
        r = cli("run", write(project.root / "s.yaml", NO_CHECKS), "-o", out)
    finally:
        holder.release()
    assert r.code == 1 and "another promptlab process" in r.err
    assert not (out / "results.jsonl").exists() and not (out / MANIFEST).exists()


def test_two_resumes_in_two_processes_never_duplicate_cells(project: Project, cli: Cli) -> None:
    slow = NO_CHECKS.replace("fake://echo", "fake://echo?sleep_ms=400")
    out = interrupted_run(project, cli, slow, 1, "--no-cache")  # so resuming takes its time
    cmd = [sys.executable, "-m", "promptlab", "run", "--resume", str(out)]
    procs = [
        subprocess.Popen(cmd, cwd=project.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=120), p.stderr.read().decode() if p.stderr else "") for p in procs]
    ids = [row["cell_id"] for row in rows_of(out)]
    assert len(ids) == len(set(ids)) == 6
    # One finishes the run; the other is refused: locked out while the first writes, or told
    # the run is complete if it came later.
    assert sorted(code for code, _ in results)[0] == 0, results
    for code, err in results:
        assert code == 0 or "another promptlab process" in err or "already complete" in err


# --- 11. the status while reports are written ------------------------------------------------


def test_a_run_killed_while_reporting_is_not_complete_and_resume_finishes_it(
    project: Project, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    import promptlab.reports.tables

    real = promptlab.reports.tables.build_reports
    seen: list[str] = []

    def dies(folder: Path, **kwargs: Any) -> Any:
        seen.append(read_manifest(folder)["status"])
        raise RuntimeError("killed while writing the reports")

    monkeypatch.setattr(promptlab.reports.tables, "build_reports", dies)
    out = project.root / "out"
    r = cli("run", write(project.root / "s.yaml", THREADS_SUITE), "-o", out)
    assert r.code == 1 and "internal error" in r.err
    assert seen == ["reporting"]
    assert read_manifest(out)["status"] == "reporting"
    assert not (out / "report.html").exists()
    hist = cli("history", "--runs", out)
    assert "reporting" in hist.out
    monkeypatch.setattr(promptlab.reports.tables, "build_reports", real)
    r = cli("run", "--resume", out)
    assert r.code == 0, r.err
    assert read_manifest(out)["status"] == "complete"
    assert (out / "report.html").is_file() and len(rows_of(out)) == 1
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<b>reporting</b>" not in html


def test_load_is_measured_over_the_start_up_without_sleeping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The window opened when promptlab started; once it is 0.1 s old there is nothing to wait
    # for. A window older than a few seconds is replaced by a fresh 0.1 s sample.
    snap = threads._cpu_snapshot()
    if snap is None:
        pytest.skip("no /proc/stat here")
    busy, own, wall = snap
    slept: list[float] = []
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(threads.time, "sleep", sleep)
    monkeypatch.setattr(threads, "_STARTED", (busy, own, wall - 1.0))
    load = threads.measure_load()
    assert load is not None and load >= 0
    assert slept == [0.0]  # the window is already 1 s old: nothing to wait for
    monkeypatch.setattr(threads, "_STARTED", (busy, own, wall - 60.0))
    slept.clear()
    assert threads.measure_load() is not None
    assert len(slept) == 1 and 0.09 <= slept[0] <= 0.1  # a fresh 0.1 s sample
