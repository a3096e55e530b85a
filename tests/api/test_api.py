"""The Python API (promptlab.run, promptlab.load_run, Run, Comparison) as a notebook user meets it:
end to end on the fake backend, the frames checked against the CSVs read with pandas, and a real
notebook executed in a Jupyter kernel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pandas as pd
import pytest
from conftest import Project

import promptlab
from promptlab.errors import InputError, Problems
from promptlab.reports.compare_report import CSV_COLUMNS

ROOT = Path(__file__).resolve().parents[2]

# Two prompts (one of them a file, so it can change between runs) x three tests x one model.
# Prompt `a` fails the `please` test; `b` passes everything. A var carries markup, a label too.
SUITE = """
description: api check
prompts:
  - file://../prompts/a.j2
  - raw: "Please repeat {{ word }}"
    label: "b <i>polite</i>"
models:
  - path: fake://echo
    label: echo
params:
  max_tokens: 16
tests:
  - description: greet
    vars: {word: hello}
    assert: [{type: icontains, value: hello}]
  - description: please
    vars: {word: world}
    assert: [{type: icontains, value: please}]
  - description: markup
    vars: {word: "<script>alert(1)</script>"}
    assert: [{type: icontains, value: script}]
"""


def make_project(project: Project, template: str = "Say {{ word }}") -> Path:
    project.write("prompts/a.j2", template)
    return project.write("evals/api.yaml", SUITE)


def assert_frames_match_csvs(run: promptlab.Run) -> None:
    for name, frame in (
        ("results", run.results),
        ("summary", run.summary),
        ("comparisons", run.comparisons),
    ):
        from_csv = pd.read_csv(run.folder / f"{name}.csv")
        pd.testing.assert_frame_equal(frame, from_csv, check_exact=True)
        header = (run.folder / f"{name}.csv").read_text(encoding="utf-8").splitlines()[0]
        assert len(frame.columns) == len(header.split(","))  # every column, none lost


def test_import_promptlab_stays_light() -> None:
    code = (
        "import sys, promptlab\n"
        "assert 'pandas' not in sys.modules, 'import promptlab loaded pandas'\n"
        "fn = promptlab.run\n"
        "assert callable(fn) and fn is promptlab.api.run\n"
        "heavy = [m for m in ('pandas', 'llama_cpp', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = promptlab.nope  # type: ignore[attr-defined]


def test_run_gives_the_csv_tables_and_load_run_reads_the_same(project: Project) -> None:
    suite = make_project(project)
    out = project.root / "runs" / "first"
    run = promptlab.run(suite, out=out)

    assert run.folder == out
    assert run.status == "complete"
    assert run.manifest == json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert_frames_match_csvs(run)
    assert run.results.shape[0] == 6  # 2 prompts x 3 tests
    assert list(run.summary["prompt"]) == ["a", "b <i>polite</i>"]
    assert list(run.summary["passed"]) == [2, 3]
    assert run.comparisons.shape[0] == 1  # b vs a
    failed = run.results[run.results["status"] == "fail"]
    assert list(failed["test"]) == ["please"]
    assert repr(run) == (f"<promptlab.Run {out} complete: 6 cells, 5 passed, 1 failed, 0 errors>")

    loaded = promptlab.load_run(str(out))
    assert loaded.manifest == run.manifest
    assert loaded.rows == run.rows
    for name in ("results", "summary", "comparisons"):
        pd.testing.assert_frame_equal(getattr(loaded, name), getattr(run, name))


def test_html_view_shows_summary_and_verdicts_escaped(project: Project) -> None:
    run = promptlab.run(make_project(project), out=project.root / "r")
    page = run._repr_html_()
    verdict = str(run.comparisons["verdict"].iloc[0])
    assert "&lt;i&gt;" not in verdict  # a raw label in the CSV, escaped only in the page
    assert verdict.replace("<", "&lt;").replace(">", "&gt;") in page
    assert "b &lt;i&gt;polite&lt;/i&gt;" in page  # the summary row's label, as text
    assert "<i>" not in page and "<script" not in page
    assert "Verdicts" in page and "<table>" in page
    assert "67%" in page  # prompt a: 2 of 3 passed


def test_compare_two_runs(project: Project) -> None:
    suite = make_project(project)
    before = promptlab.run(suite, out=project.root / "before")
    project.write("prompts/a.j2", "Please say {{ word }}")  # fixes `please` for prompt a
    after = promptlab.run(suite, out=project.root / "after")
    # Prompt b did not change: its cells came from the cache.
    assert after.manifest["cache"]["rows_from_cache"] == 3

    diff = before.compare(after)
    assert diff.counts["fix"] == 1
    assert diff.counts["regression"] == 0
    assert diff.counts["matched"] == 6
    frame = diff.to_frame()
    assert list(frame.columns) == list(CSV_COLUMNS)
    fixes = frame[frame["kind"] == "fix"]
    assert list(fixes["test"]) == ["please"]
    assert list(fixes["a_status"]) == ["fail"] and list(fixes["b_status"]) == ["pass"]
    variants = diff.variants.set_index("prompt")
    assert variants.loc["a", "points"] == pytest.approx(33.33, abs=0.01)
    assert variants.loc["b <i>polite</i>", "points"] == 0
    assert "1 fixes" in repr(diff)
    assert "&lt;i&gt;" in diff._repr_html_()
    # A folder path works as well as a Run; a run against itself is refused.
    assert before.compare(str(after.folder)).counts == diff.counts
    with pytest.raises(InputError, match="are the same run"):
        before.compare(before.folder)


def test_load_run_refuses_what_is_not_a_finished_run(project: Project, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a folder"):
        promptlab.load_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no manifest\.json here"):
        promptlab.load_run(tmp_path / "empty")
    (tmp_path / "empty" / "manifest.json").write_text('{"status": "complete"}', encoding="utf-8")
    with pytest.raises(InputError, match=r"no results\.jsonl here"):
        promptlab.load_run(tmp_path / "empty")

    run = promptlab.run(make_project(project), out=project.root / "r")
    manifest = json.loads((run.folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["status"] = "running"
    (run.folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(InputError, match=r"has not finished \(status running\)") as exc:
        promptlab.load_run(run.folder)
    assert "--resume" in str(exc.value)


def test_bad_input_raises_promptlab_errors(project: Project) -> None:
    project.write("evals/bad.yaml", "prompts: [x]\ntests:\n  - vars: {a: 1}\n    bogus: 1\n")
    with pytest.raises(InputError) as exc:
        promptlab.run(project.root / "evals" / "bad.yaml", model="fake://echo")
    assert "bogus" in str(exc.value)
    with pytest.raises(InputError, match="drop suite, model"):
        promptlab.run("evals/api.yaml", model="fake://echo", resume=project.root)
    make_project(project)
    with pytest.raises(InputError, match="matched none"):
        promptlab.run("evals/api.yaml", filter="no-such-test")
    assert not (project.root / "results").exists()
    assert issubclass(Problems, InputError)


def test_an_interrupted_run_is_returned_not_raised(project: Project) -> None:
    suite = make_project(project)
    out = project.root / "r"
    first = promptlab.run(suite, out=out, model="fake://echo?interrupt_after=2", no_cache=True)
    assert first.status == "interrupted"
    assert first.results.shape[0] == 2
    assert_frames_match_csvs(first)
    again = promptlab.load_run(out)
    assert again.status == "interrupted"
    with pytest.raises(InputError, match="drop out"):
        promptlab.run(resume=out, out=project.root / "x")


def test_resume_finishes_a_run(project: Project) -> None:
    suite = make_project(project)
    out = project.root / "r"
    first = promptlab.run(suite, out=out, model="fake://echo", no_cache=True)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    # Make the folder look interrupted after 4 of 6 cells, as a Ctrl-C leaves it.
    lines = (out / "results.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (out / "results.jsonl").write_text("".join(lines[:4]), encoding="utf-8")
    manifest["status"] = "interrupted"
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    done = promptlab.run(resume=out)
    assert done.status == "complete"
    assert done.results.shape[0] == 6
    pd.testing.assert_frame_equal(
        done.results.drop(columns=["latency_ms", "tokens_per_s"]),
        first.results.drop(columns=["latency_ms", "tokens_per_s"]),
    )
    assert done.manifest["resumed"][0]["cells_done"] == 4


# --- a real notebook ---------------------------------------------------------------------


def _no_kernel(why: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{why}: CI must run the notebook test (pip install -e '.[dev]')")
    pytest.skip(why)


def test_a_notebook_runs_the_api(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        import nbformat
        from nbclient import NotebookClient
    except ImportError as exc:
        _no_kernel(f"nbclient/nbformat are not installed ({exc})")
    suite = make_project(project)
    out = project.root / "nb-run"
    # The kernel is a child process: it must import this checkout, and keep out of $HOME.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import promptlab\n"
            f"run = promptlab.run({str(suite)!r}, out={str(out)!r})\n"
            "print(promptlab.__file__)"
        ),
        nbformat.v4.new_code_cell("print('shape', run.summary.shape)"),
        nbformat.v4.new_code_cell("run"),
        nbformat.v4.new_code_cell(
            f"before = promptlab.load_run({str(out)!r})\nprint('same', before.results.equals(run.results))"
        ),
    ]
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=180,
        startup_timeout=120,
        resources={"metadata": {"path": str(project.root)}},
    )
    with ExitStack() as stack:
        try:
            stack.enter_context(client.setup_kernel())
        except Exception as exc:  # no kernel spec, no zmq, a kernel that died at start
            _no_kernel(f"no Jupyter kernel could start: {type(exc).__name__}: {exc}")
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)

    def stdout(cell: int) -> str:
        return "".join(
            o.get("text", "") for o in nb.cells[cell].outputs if o.output_type == "stream"
        )

    assert stdout(0).strip() == str(ROOT / "promptlab" / "__init__.py")  # this checkout's code
    summary = pd.read_csv(out / "summary.csv")
    assert stdout(1).strip() == f"shape {summary.shape}"
    (shown,) = [o for o in nb.cells[2].outputs if o.output_type == "execute_result"]
    page = shown["data"]["text/html"]
    verdict = str(pd.read_csv(out / "comparisons.csv")["verdict"].iloc[0])
    assert verdict.replace("<", "&lt;").replace(">", "&gt;") in page
    assert "<script" not in page
    assert shown["data"]["text/plain"].startswith("<promptlab.Run ")
    assert stdout(3).strip() == "same True"
