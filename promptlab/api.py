"""The Python API: run a suite, or open a run folder, and read its reports as pandas DataFrames.

    import promptlab

    run = promptlab.run("evals/example.yaml", model="fake://echo")
    run.summary                      # summary.csv, as a DataFrame
    run.results[run.results["status"] == "fail"]
    before = promptlab.load_run("results/example-20250101-120000")
    before.compare(run).variants     # pass-rate deltas and verdicts, per variant

Everything goes through `promptlab.core`, as the CLI does, and the tables are the ones
`promptlab.reports.tables` writes: `Run.results`, `.summary` and `.comparisons` are exactly what
`pandas.read_csv` gives for results.csv, summary.csv and comparisons.csv (same columns, same
dtypes), computed from results.jsonl so that a folder whose reports were never written reads the
same. Errors are PromptlabError subclasses with the CLI's one-line messages; nothing here exits.

pandas is imported when a table is first built (by promptlab.reports.tables, the module that owns
pandas), never by `import promptlab`.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptlab.errors import InputError

if TYPE_CHECKING:  # for annotations only (pandas's DataFrame through reports/, which owns pandas)
    from promptlab.engine.runner import Progress
    from promptlab.reports import compare as cmp
    from promptlab.reports.tables import DataFrame, Tables

PathLike = str | os.PathLike[str]

# Statuses of a run folder whose cells are all on disk: done, or stopped and resumable.
READABLE = ("complete", "interrupted", "failed", "reporting")


def _read_csv(text: str) -> DataFrame:
    from promptlab.reports.tables import read_back  # noqa: PLC0415 - pandas only once a table is asked for

    return read_back(text)


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


class Run:
    """A run folder, read back: its manifest, its rows and its three report tables.

    Made by `promptlab.run` or `promptlab.load_run`; the tables are computed once, when the
    object is made, from the folder's results.jsonl."""

    def __init__(self, folder: Path, tables: Tables) -> None:
        self.folder = folder
        self._tables = tables

    @property
    def manifest(self) -> dict[str, Any]:
        """manifest.json: settings, models, files and cache counts of the run."""
        return self._tables.manifest

    @property
    def status(self) -> str:
        """complete, interrupted, failed, or reporting (killed while writing its reports)."""
        return str(self.manifest.get("status"))

    @property
    def rows(self) -> list[dict[str, Any]]:
        """results.jsonl's rows as stored (in suite order): every field, nothing lost to CSV."""
        return self._tables.rows

    @property
    def notes(self) -> list[str]:
        """What the CLI prints as `note:` lines (skipped features, code consent, the cache)."""
        return [str(n) for n in self.manifest.get("notes") or []]

    @cached_property
    def _csv(self) -> dict[str, str]:
        return self._tables.csv()

    @cached_property
    def results(self) -> DataFrame:
        """results.csv: one row per cell (prompt x test x model x setting x repeat)."""
        return _read_csv(self._csv["results.csv"])

    @cached_property
    def summary(self) -> DataFrame:
        """summary.csv: one row per prompt x model x setting, with intervals and ranks."""
        return _read_csv(self._csv["summary.csv"])

    @cached_property
    def comparisons(self) -> DataFrame:
        """comparisons.csv: the paired tests between variants, with their verdicts."""
        return _read_csv(self._csv["comparisons.csv"])

    @property
    def totals(self) -> dict[str, int]:
        counts = {"cells": len(self.rows), "pass": 0, "fail": 0, "error": 0, "unchecked": 0}
        for row in self.rows:
            status = str(row.get("status"))
            counts[status] = counts.get(status, 0) + 1
        return counts

    def compare(self, other: Run | PathLike) -> Comparison:
        """What changed from this run (A, the earlier) to `other` (B, the later), cell by cell
        and per variant, as `promptlab compare A B` reports it (no files are written)."""
        from promptlab.reports import compare as cmp  # noqa: PLC0415

        b = other if isinstance(other, Run) else load_run(other)
        if _same(self.folder, b.folder):
            raise InputError(
                f"compare: {self.folder} and {b.folder} are the same run",
                hint="pass two different run folders",
            )
        result = cmp.compare_runs(
            cmp.Run(self.folder, self.manifest, self.rows), cmp.Run(b.folder, b.manifest, b.rows)
        )
        return Comparison(self, b, result)

    def __repr__(self) -> str:
        t = self.totals
        return (
            f"<promptlab.Run {self.folder} {self.status}: {t['cells']} cells, {t['pass']} passed, "
            f"{t['fail']} failed, {t['error']} errors>"
        )

    def _repr_html_(self) -> str:
        """Jupyter's view: the summary table and the verdicts; every piece of text escaped."""
        t = self.totals
        suite = (self.manifest.get("suite") or {}).get("path", "")
        parts = [
            '<div class="promptlab-run">',
            f"<p><b>promptlab run</b> <code>{_e(self.folder)}</code> · {_e(self.status)} · "
            f"suite <code>{_e(suite)}</code><br>{t['cells']} cells: {t['pass']} passed, "
            f"{t['fail']} failed, {t['error']} errors"
            + (f", {t['unchecked']} with no checks" if t["unchecked"] else "")
            + "</p>",
            _summary_html(
                [
                    {str(k): v for k, v in rec.items()}
                    for rec in self._tables.summary.to_dict(orient="records")
                ]
            ),
            _verdicts_html(self._tables.comparison_records),
        ]
        parts += [f"<p><small>note: {_e(n)}</small></p>" for n in self.notes]
        parts.append("</div>")
        return "\n".join(parts)


def _fmt(value: Any, spec: str) -> str:
    return "" if _missing(value) else format(float(value), spec)


def _pct(value: Any) -> str:
    return _fmt(value, ".0%")


def _summary_html(records: Sequence[dict[str, Any]]) -> str:
    grid = any(rec.get("setting") for rec in records)  # the column only where a grid has one
    names = ["model", "prompt", *(["setting"] * grid), "cells", "passed", "failed", "errors"]
    head = "".join(f"<th>{n}</th>" for n in [*names, "pass rate", "95% CI", "mean score"])
    body = []
    for rec in records:
        lo, hi = rec.get("pass_rate_lo"), rec.get("pass_rate_hi")
        interval = "" if _missing(lo) or _missing(hi) else f"{_pct(lo)}–{_pct(hi)}"
        rate = rec.get("pass_rate")
        cells = [_e(rec.get(n)) for n in names]
        cells += [
            "no checks" if _missing(rate) else _pct(rate),
            interval,
            _fmt(rec.get("mean_score"), ".3f"),
        ]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _verdicts_html(comparisons: Sequence[dict[str, Any]]) -> str:
    if not comparisons:
        return "<p><b>Verdicts</b>: none (one variant, nothing to compare)</p>"
    items = []
    for c in sorted(comparisons, key=lambda c: not c.get("significant")):
        mark = "✓" if c.get("significant") else "·"
        group = f" ({_e(c['group'])})" if c.get("group") else ""
        items.append(f"<li>{mark} {_e(c.get('verdict'))}{group}</li>")
    return f"<p><b>Verdicts</b> (paired over tests, Holm-adjusted p)</p><ul>{''.join(items)}</ul>"


class Comparison:
    """Two runs compared cell by cell (promptlab.reports.compare's result, as `details`)."""

    def __init__(self, a: Run, b: Run, details: cmp.Comparison) -> None:
        self.a, self.b, self.details = a, b, details

    @property
    def counts(self) -> dict[str, int]:
        """Cells per kind: regression, fix, changed, same, only_a, only_b; and matched."""
        return dict(self.details.counts)

    def to_frame(self) -> DataFrame:
        """compare.csv: one row per cell pair, read back as pandas reads that file."""
        from promptlab.reports.compare_report import to_csv  # noqa: PLC0415

        return _read_csv(to_csv(self.details))

    @property
    def variants(self) -> DataFrame:
        """One row per variant in both runs: pass rates, delta in points, paired test, verdict."""
        from promptlab.reports.tables import records_frame  # noqa: PLC0415

        return records_frame([v.as_dict() for v in self.details.variants])

    def __repr__(self) -> str:
        c = self.counts
        return (
            f"<promptlab.Comparison {self.a.folder} -> {self.b.folder}: {c.get('matched', 0)} "
            f"matched, {c.get('regression', 0)} regressions, {c.get('fix', 0)} fixes, "
            f"{c.get('changed', 0)} changed>"
        )

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{_e(v.label)}</td><td>{v.cells}</td><td>{v.a_rate:.0%}</td>"
            f"<td>{v.b_rate:.0%}</td><td>{v.points:+.0f}</td><td>{v.regressions}</td>"
            f"<td>{v.fixes}</td><td>{_e(v.comparison.verdict)}</td></tr>"
            for v in self.details.variants
        )
        return (
            f"<p><b>promptlab compare</b> <code>{_e(self.a.folder)}</code> → "
            f"<code>{_e(self.b.folder)}</code></p><p>{_e(repr(self))}</p>"
            "<table><tr><th>variant</th><th>cells</th><th>A pass</th><th>B pass</th>"
            f"<th>Δ points</th><th>regressions</th><th>fixes</th><th>verdict</th></tr>{rows}"
            "</table>"
        )


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def load_run(folder: PathLike) -> Run:
    """A finished or interrupted run folder (InputError for anything else)."""
    from promptlab.engine.store import read_manifest  # noqa: PLC0415
    from promptlab.reports.tables import tables  # noqa: PLC0415 - pandas only when reading a run

    path = Path(folder)
    if not path.is_dir():
        raise InputError(f"{path}: not a folder", hint="pass the output folder of a run")
    status = read_manifest(path).get("status")  # InputError without a readable manifest
    if status not in READABLE:
        raise InputError(
            f"{path}: this run has not finished (status {status})",
            hint="wait for it to finish; if it was killed, "
            f"`promptlab run --resume {path}` finishes it",
        )
    return Run(path, tables(path))  # InputError when results.jsonl is missing or corrupt


def run(
    suite: PathLike | None = None,
    *,
    model: str | None = None,
    filter: str | None = None,  # the CLI's --filter (shadowing the builtin here only)
    filter_prompt: str | None = None,
    filter_test: str | None = None,
    limit: int | None = None,
    sample: int | None = None,
    seed: int = 0,
    failing: PathLike | None = None,
    out: PathLike | None = None,
    resume: PathLike | None = None,
    no_cache: bool = False,
    refresh: bool = False,
    cache_db: PathLike | None = None,
    allow_code: bool = False,
    skip_unsupported: bool = False,
    ray: str | None = None,
    ray_actors: int | None = None,
    progress: Progress | None = None,
) -> Run:
    """Run a suite as `promptlab run` does, and return the run folder read back.

    Args:
        suite: the suite file (default: ./promptfooconfig.yaml, else the one suite in evals/).
        model: a model label from the suite, a bundled alias, a .gguf path or fake://….
        filter: regex on prompt label, test description and vars (--filter).
        filter_prompt: regex on the prompt label (--filter-prompt).
        filter_test: regex on the test description or its vars (--filter-test).
        limit: only the first N tests, after the filters (--limit).
        sample: N tests drawn at random with `seed` (--sample, --seed).
        failing: rerun only the cells that failed in this earlier run folder (--failing).
        out: the run folder (default: results/<suite>-<time>).
        resume: finish this interrupted run folder in place, with its own settings; pass no
            suite or selection with it (--resume).
        no_cache: neither read nor write the result cache (--no-cache).
        refresh: run every cell again and overwrite the cache (--refresh).
        cache_db: the cache database (default: .promptlab/cache.sqlite).
        allow_code: run the suite's Python checks and transforms (--allow-code).
        skip_unsupported: leave out what uses a promptfoo feature promptlab does not run.
        ray: run the cells on a Ray cluster: "auto", "local" or HOST:PORT (--ray; needs
            `pip install promptlab[ray]`). Also with resume=.
        ray_actors: actors per model on that cluster (--ray-actors; default: as many as fit).
        progress: an object with promptlab.engine.runner.Progress's methods (default: silent).

    Returns the Run, also when interrupted (KeyboardInterrupt stops the cells; `run.status` is
    then "interrupted" and `promptlab.run(resume=run.folder)` finishes it). Raises InputError
    for bad input (nothing written), and a failed run's error (the folder can be resumed).
    """
    from promptlab import core  # noqa: PLC0415 - pydantic, jinja2 and the rest, when used
    from promptlab.plan import Selection  # noqa: PLC0415

    argv = ["promptlab.run", *([str(suite)] if suite is not None else [])]
    if ray_actors is not None and ray is None:
        raise InputError("ray_actors= needs ray=", hint='add ray="auto" (or "local", HOST:PORT)')
    if resume is not None:
        given = [
            name
            for name, value in (
                ("suite", suite),
                ("out", out),
                ("model", model),
                ("filter", filter),
                ("filter_prompt", filter_prompt),
                ("filter_test", filter_test),
                ("limit", limit),
                ("sample", sample),
                ("failing", failing),
            )
            if value is not None
        ]
        if given:
            raise InputError(
                f"resume= reuses the interrupted run's own settings; drop {', '.join(given)}",
                hint=f"promptlab.run(resume={str(resume)!r})",
            )
        result = core.resume(
            Path(resume),
            progress=progress,
            argv=[*argv, f"resume={resume}"],
            allow_code=allow_code,
            ray=ray,
            ray_actors=ray_actors,
        )
    else:
        path = Path(suite) if suite is not None else core.find_suite(Path())
        selection = Selection(
            pattern=filter,
            prompt=filter_prompt,
            test=filter_test,
            limit=limit,
            sample=sample,
            sample_seed=seed,
            cells=core.failing_cells(Path(failing)) if failing is not None else None,
        )
        cache = core.CacheOptions(
            use=not no_cache, refresh=refresh, path=Path(cache_db) if cache_db else None
        )
        result = core.run(
            path,
            out=Path(out) if out is not None else None,
            model=model,
            selection=selection,
            progress=progress,
            argv=argv,
            allow_code=allow_code,
            cache=cache,
            skip_unsupported=skip_unsupported,
            ray=ray,
            ray_actors=ray_actors,
        )
    if result.error is not None:
        raise result.error
    return load_run(result.folder)
