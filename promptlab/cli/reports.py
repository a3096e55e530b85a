"""The commands that read finished runs: `report`, `compare`, `history`, and the `baseline`
group (the run that compare and --max-regression use by default).

Registered on the app, in help order, by promptlab/cli/__init__.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from promptlab.cli.options import (
    BaselineOpt,
    FailUnderOpt,
    FormatOpt,
    JunitOpt,
    MaxRegressionOpt,
    OutputFormat,
)
from promptlab.cli.outcome import conclude


def report(
    folder: Annotated[Path, typer.Argument(help="A run folder")],
    fail_under: FailUnderOpt = None,
    max_regression: MaxRegressionOpt = None,
    baseline: BaselineOpt = None,
    junit: JunitOpt = None,
    output_format: FormatOpt = OutputFormat.text,
    spreadsheet: Annotated[
        bool,
        typer.Option(
            "--spreadsheet",
            help="Also write formula-safe copies of the CSVs to spreadsheet/ for Excel and co.",
        ),
    ] = False,
) -> int:
    """Rebuild results.csv, summary.csv and report.html from a run's stored results."""
    from promptlab import console, core
    from promptlab.engine.store import read_manifest
    from promptlab.reports import gates
    from promptlab.reports.baseline import project_of

    gate_opts = gates.prepare(fail_under, max_regression, baseline, project_of(folder))
    reports = core.report(folder, spreadsheet=spreadsheet)
    as_json = output_format is OutputFormat.json
    if not as_json:
        console.print_report(reports)
    if not (gate_opts.active or gate_opts.baseline or junit or as_json):
        return 0
    status = str(read_manifest(folder).get("status") or "unknown")
    outcome = conclude(folder, status, reports, gate_opts, junit, as_json)
    return outcome.exit_code if gate_opts.active else 0


def compare(
    run_a: Annotated[Path, typer.Argument(help="The earlier run (or the only one: vs baseline)")],
    run_b: Annotated[Path | None, typer.Argument(help="The later run")] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Folder for compare.csv/html (default: newer run)"),
    ] = None,
    fail_on_regression: Annotated[
        bool, typer.Option("--fail-on-regression", help="Exit 100 when any cell regressed")
    ] = False,
) -> int:
    """Compare two runs cell by cell: regressions, fixes, changed outputs, paired tests."""
    from promptlab import console
    from promptlab.errors import ExitCode
    from promptlab.reports import compare as cmp

    a, b = (None, run_a) if run_b is None else (run_a, run_b)
    result = cmp.compare(a, b, out=output)
    console.print_compare(result)
    if fail_on_regression and result.regressions:
        return ExitCode.ASSERTIONS_FAILED
    return 0


def history(
    suite: Annotated[
        str | None, typer.Argument(help="Only runs of this suite (a file or its name)")
    ] = None,
    runs: Annotated[
        list[Path] | None,
        typer.Option("--runs", help="Also look for runs in this folder (repeatable)"),
    ] = None,
    template: Annotated[
        str | None, typer.Option("--template", help="One template's pass rate across runs")
    ] = None,
) -> int:
    """List earlier runs from their manifests: date, commit, templates changed, pass rates."""
    from promptlab import console
    from promptlab.reports import history as hist

    found = hist.history(hist.project_for(suite, Path.cwd()), suite, runs or [])
    if template is not None:
        console.print_template_history(template, hist.template_history(found, template))
    else:
        console.print_history(found)
    return 0


baseline_app = typer.Typer(
    help="The baseline run that compare and --max-regression use by default.",
    no_args_is_help=True,
)


@baseline_app.command("set")
def baseline_set(run_folder: Annotated[Path, typer.Argument(help="A run folder")]) -> int:
    """Make RUN the project's baseline (.promptlab/baseline.json)."""
    from promptlab import console
    from promptlab.files import find_project_root
    from promptlab.reports.baseline import set_baseline

    file = set_baseline(run_folder, find_project_root(Path.cwd()))
    console.out.print(console.escape(f"baseline: {run_folder} (stored in {file})"))
    return 0


@baseline_app.command("show")
def baseline_show() -> int:
    """Print the baseline run."""
    from promptlab import console
    from promptlab.files import find_project_root
    from promptlab.reports.baseline import get_baseline, read_baseline

    root = find_project_root(Path.cwd())
    path = get_baseline(root)
    if path is None:
        console.err.print("no baseline set (promptlab baseline set RUN)", markup=False)
        return 0
    record = read_baseline(root) or {}
    console.out.print(console.escape(str(path)))
    console.err.print(
        console.escape(
            f"set {record.get('set_at', '?')}; run started {record.get('started_at', '?')}"
        )
    )
    return 0


@baseline_app.command("clear")
def baseline_clear() -> int:
    """Forget the baseline."""
    from promptlab import console
    from promptlab.files import find_project_root
    from promptlab.reports.baseline import clear_baseline

    removed = clear_baseline(find_project_root(Path.cwd()))
    console.out.print("baseline cleared" if removed else "no baseline was set")
    return 0
