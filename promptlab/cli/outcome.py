"""A finished run's verdict on the command line: gates, JUnit and the JSON summary, shared by
`run` and `report` so both judge a run folder the same way."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from promptlab.reports.gates import GateOptions, Outcome
    from promptlab.reports.tables import ReportFiles


def conclude(
    folder: Path,
    status: str,
    reports: ReportFiles,
    gate_opts: GateOptions,
    junit: Path | None,
    as_json: bool,
    error: Exception | None = None,
) -> Outcome:
    """Gates, JUnit and the JSON summary, shared by `run` and `report`."""
    from promptlab import console
    from promptlab.engine.store import read_manifest, read_results
    from promptlab.reports import gates
    from promptlab.termsafe import json_visible

    rows = read_results(folder)
    manifest = read_manifest(folder)
    outcome = gates.conclude(folder, rows, gate_opts, junit=junit, manifest=manifest)
    console.print_gates(outcome, to_stderr=as_json)
    if as_json:
        paths: dict[str, Path | None] = {
            "results_csv": reports.results_csv,
            "summary_csv": reports.summary_csv,
            "html": reports.html,
            "comparisons_csv": reports.comparisons_csv,
            "junit": junit,
        }
        if outcome.comparison is not None:
            paths["compare_csv"] = outcome.comparison.csv_path
            paths["compare_html"] = outcome.comparison.html_path
        print(
            json_visible(
                gates.summary_json(
                    folder=folder,
                    status=status,
                    totals=reports.totals,
                    summary=reports.summary,
                    comparisons=reports.comparisons,
                    outcome=outcome,
                    reports=paths,
                    error=str(error) if error is not None else None,
                    skipped=(manifest or {}).get("skipped"),
                )
            )
        )
    return outcome
