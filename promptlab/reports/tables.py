"""Reports from a run folder: results.csv, summary.csv, comparisons.csv and a self-contained
report.html (rendered by promptlab/reports/html.py). The statistics come from
promptlab/reports/stats/.

The only module that imports pandas. Everything here is rebuilt from results.jsonl and
manifest.json, so `promptlab report DIR` reproduces the files of a finished or interrupted run.
All text that reaches the HTML is escaped.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import pandas as pd

from promptlab.engine.store import StoreError, atomic_write, read_manifest, read_results
from promptlab.reports import stats
from promptlab.reports.html import render_html

# For annotations elsewhere (promptlab.api): only reports/ imports pandas, even for type checking.
DataFrame: TypeAlias = pd.DataFrame

UNCHECKED = "unchecked"  # a row's status when no check gated its output ("no checks")

# The generation parameters, in the order results.csv carries them: parameter -> column. The row's
# own `seed` column comes first with the cell's identity, so the parameter's column is `param_seed`
# (one name twice in a CSV header reads in pandas as `seed` and `seed.1`).
PARAM_COLUMNS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "max_tokens": "max_tokens",
    "seed": "param_seed",
    "repeat_penalty": "repeat_penalty",
    "stop": "stop",
}


@dataclass
class ReportFiles:
    folder: Path
    results_csv: Path
    summary_csv: Path
    html: Path
    summary: list[dict[str, Any]]  # one dict per prompt × model × setting, for the terminal
    totals: dict[str, int]
    comparisons: list[dict[str, Any]] = field(default_factory=list)  # paired tests, verdicts
    comparisons_csv: Path | None = None
    spreadsheets: list[Path] = field(default_factory=list)  # formula-safe copies (--spreadsheet)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def results_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    var_names: list[str] = []
    metric_names: list[str] = []
    for row in rows:
        for key in row.get("vars", {}):
            if key not in var_names:
                var_names.append(key)
        for key in row.get("named_scores") or {}:
            if key not in metric_names:
                metric_names.append(key)
    records = []
    for row in rows:
        rec: dict[str, Any] = {
            "cell_id": row["cell_id"],
            "model": row["model"],
            "prompt": row["prompt"],
            "test_index": row["test_index"],
            "test": row["test"],
            "setting": row.get("setting") or "",
            "repeat": row.get("repeat", 0),
            "seed": row.get("seed", (row.get("params") or {}).get("seed")),
        }
        for name in var_names:
            rec[f"var_{name}"] = _text(row.get("vars", {}).get(name))
        rec.update(
            {
                "status": row["status"],
                "pass": row["pass"],
                "score": row.get("score"),
                "failed_checks": " | ".join(
                    f"{c['check']}: {c['reason']}" for c in row.get("checks", []) if not c["pass"]
                ),
                "checks": " | ".join(
                    f"{'PASS' if c['pass'] else 'FAIL'} {c['check']}: {c['reason']}"
                    for c in row.get("checks", [])
                ),
                "output": row.get("output"),
                "error": row.get("error"),
                "rendered_prompt": row.get("rendered_prompt"),
                "latency_ms": row.get("latency_ms"),
                "prompt_tokens": row.get("prompt_tokens"),
                "completion_tokens": row.get("completion_tokens"),
                "tokens_per_s": row.get("tokens_per_s"),
                "prompt_eval_tokens": row.get("prompt_eval_tokens"),
                "finish_reason": row.get("finish_reason"),
                "cached": bool(row.get("cached")),
                "prompt_source": row.get("prompt_source"),
            }
        )
        for name in metric_names:
            rec[f"metric_{name}"] = (row.get("named_scores") or {}).get(name)
        rec["grammar"] = row.get("grammar")
        params = row.get("params", {})
        for name, column in PARAM_COLUMNS.items():
            rec[column] = _text(params.get(name)) if name == "stop" else params.get(name)
        records.append(rec)
    head = [
        "cell_id",
        "model",
        "prompt",
        "setting",
        "test_index",
        "test",
        "repeat",
        "seed",
        *(f"var_{v}" for v in var_names),
    ]
    tail = [
        "status",
        "pass",
        "score",
        "failed_checks",
        "checks",
        "output",
        "error",
        "rendered_prompt",
        "latency_ms",
        "prompt_tokens",
        "completion_tokens",
        "tokens_per_s",
        "prompt_eval_tokens",
        "finish_reason",
        "cached",
        "prompt_source",
        *(f"metric_{m}" for m in metric_names),
        "grammar",
        *PARAM_COLUMNS.values(),
    ]
    # Explicit columns: a run that finished no cell still gets a CSV with its header.
    frame: pd.DataFrame = pd.DataFrame.from_records(records, columns=head + tail)
    # Error rows have no token counts; keep the others integers instead of floats in the CSV.
    for name in ("prompt_tokens", "completion_tokens", "prompt_eval_tokens"):
        if name in frame:
            frame[name] = frame[name].astype("Int64")
    return frame


# Per-variant statistics (promptlab.reports.stats.variant_stats) that summary.csv carries.
STAT_COLUMNS = (
    "pass_rate_lo",
    "pass_rate_hi",
    "mean_score_lo",
    "mean_score_hi",
    "tests",
    "repeats",
    "flake_rate",
    "pass_at_k",
    "pass_pow_k",
    "k",
    "rank",
)


def _stat_rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows promptlab.reports.stats needs, from results_frame's columns. Outputs no check gated
    are left out: they are neither passes nor failures, so they have no place in a pass rate,
    an interval or a verdict."""
    cols = ["model", "prompt", "setting", "test_index", "status", "score"]
    checked = df[df["status"] != UNCHECKED]
    rows: list[dict[str, Any]] = checked[cols].to_dict(orient="records")
    return rows


# Bump when promptlab.reports.stats can give other numbers for the same rows.
STATS_REVISION = 2


def run_statistics(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(stats.variant_stats(rows), stats.compare_run(rows)), memoized on disk.

    The statistics are a pure function of these rows (fixed seeds), and the bootstraps and
    permutation tests behind them take a few hundred milliseconds for a handful of variants, a
    good part of a rerun served from the cache. So they are kept in ~/.cache/promptlab/stats/,
    keyed by the rows and the versions of promptlab's statistics and of numpy (whose random
    generator they draw from); an unchanged rerun reads them back.
    """
    from importlib import metadata  # noqa: PLC0415

    from promptlab.models import cache_dir  # noqa: PLC0415

    versions: list[str | None] = []
    for dist in ("numpy",):
        try:
            versions.append(metadata.version(dist))
        except metadata.PackageNotFoundError:
            versions.append(None)
    blob = json.dumps([STATS_REVISION, versions, rows], sort_keys=True, default=str)
    file = cache_dir() / "stats" / f"{hashlib.sha256(blob.encode()).hexdigest()[:32]}.json"
    try:
        memo = json.loads(file.read_text(encoding="utf-8"))
        return list(memo["variants"]), list(memo["comparisons"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    variants, comparisons = stats.variant_stats(rows), stats.compare_run(rows)
    with contextlib.suppress(OSError, StoreError):
        atomic_write(file, json.dumps({"variants": variants, "comparisons": comparisons}))
    return variants, comparisons


def summary_frame(df: pd.DataFrame, variants: list[dict[str, Any]] | None = None) -> pd.DataFrame:
    """summary.csv; `variants` are stats.variant_stats of the same rows (computed if None)."""
    columns = [
        "model",
        "prompt",
        "setting",
        "cells",
        "passed",
        "failed",
        "errors",
        "unchecked",
        "pass_rate",
        "pass_rate_lo",
        "pass_rate_hi",
        "mean_score",
        "mean_score_lo",
        "mean_score_hi",
        "tests",
        "repeats",
        "flake_rate",
        "pass_at_k",
        "pass_pow_k",
        "k",
        "rank",
        "mean_latency_ms",
        "mean_tokens_per_s",
        "completion_tokens",
    ]
    if df.empty:
        empty: pd.DataFrame = pd.DataFrame(columns=columns)
        return empty
    grouped = df.groupby(["model", "prompt", "setting"], sort=False)
    out = grouped.agg(
        cells=("status", "size"),
        passed=("status", lambda s: int((s == "pass").sum())),
        failed=("status", lambda s: int((s == "fail").sum())),
        errors=("status", lambda s: int((s == "error").sum())),
        unchecked=("status", lambda s: int((s == UNCHECKED).sum())),
        mean_score=("score", "mean"),
        mean_latency_ms=("latency_ms", "mean"),
        mean_tokens_per_s=("tokens_per_s", "mean"),
        completion_tokens=("completion_tokens", "sum"),
    ).reset_index()
    # Over the outputs a check gated; a variant without any has no pass rate at all (empty).
    checked = out["cells"] - out["unchecked"]
    out["pass_rate"] = (out["passed"] / checked.where(checked > 0)).astype(float)
    out["mean_latency_ms"] = out["mean_latency_ms"].round(1)
    out["mean_tokens_per_s"] = out["mean_tokens_per_s"].round(1)
    out["pass_rate"] = out["pass_rate"].round(4)
    out["mean_score"] = out["mean_score"].astype(float).round(4)
    out["completion_tokens"] = out["completion_tokens"].fillna(0).astype(int)
    # Intervals, repeat metrics and rank, per variant; same (first-seen) order as the groups.
    if variants is None:
        variants = stats.variant_stats(_stat_rows(df))
    by_key = {(v["model"], v["prompt"], v["setting"]): v for v in variants}
    keys = zip(out["model"], out["prompt"], out["setting"], strict=True)
    extra = pd.DataFrame.from_records(
        [{name: by_key.get(key, {}).get(name) for name in STAT_COLUMNS} for key in keys],
        columns=list(STAT_COLUMNS),
    )
    for name in STAT_COLUMNS:
        out[name] = extra[name].to_numpy()
    for name in ("tests", "repeats", "k", "rank"):
        out[name] = out[name].astype("Int64")  # k is empty without repeats
    # Named metrics (`metric:` on checks) become summary columns: their mean per group.
    metrics = [c for c in df.columns if c.startswith("metric_")]
    for name in metrics:
        out[name] = grouped[name].mean().astype(float).round(4).to_numpy()
    result: pd.DataFrame = out[[*columns, *metrics]]
    return result


def comparisons_frame(comparisons: list[dict[str, Any]]) -> pd.DataFrame:
    """comparisons.csv: one row per paired comparison (promptlab.reports.stats.compare_run)."""
    frame: pd.DataFrame = pd.DataFrame.from_records(
        comparisons, columns=list(stats.COMPARISON_COLUMNS)
    )
    for name in ("n_tests", "unpaired", "a_only", "b_only", "tests_needed"):
        frame[name] = frame[name].astype("Int64")  # tests_needed is empty when significant
    return frame


def _plain(value: Any) -> Any:
    """numpy/pandas scalars and missing values -> plain Python values (None for missing)."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and value != value:  # NaN
        return None
    item = getattr(value, "item", None)
    if callable(item):
        value = item()
        if isinstance(value, float) and value != value:
            return None
    return value


# What makes Excel, LibreOffice and Google Sheets read a cell as a formula (OWASP's list, plus the
# full-width forms some of them accept).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
SPREADSHEET_DIR = "spreadsheet"


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells cannot run as formulas: a cell that starts like one gets a leading
    apostrophe, which spreadsheets hide and read as "this is text". Numbers stay numbers.

    The machine CSVs (results.csv, ...) are never changed: a model's answer "=2+2" or "-3" is the
    answer, and pandas, jq or a diff must see it exactly."""

    def neutral(value: Any) -> Any:
        return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_START) else value

    out: pd.DataFrame = frame.copy()
    for column in out.columns:
        # object or pandas' string dtype alike; numeric and bool columns hold no text
        if not (
            pd.api.types.is_numeric_dtype(out[column]) or pd.api.types.is_bool_dtype(out[column])
        ):
            out[column] = out[column].map(neutral)
    return out


def _spreadsheet_copies(folder: Path, frames: dict[str, pd.DataFrame]) -> list[Path]:
    paths = []
    for name, frame in frames.items():
        path = folder / SPREADSHEET_DIR / name
        # utf-8-sig: Excel reads a CSV without the BOM as the local code page.
        atomic_write(path, spreadsheet_safe(frame).to_csv(index=False).encode("utf-8-sig"))
        paths.append(path)
    return paths


@dataclass
class Tables:
    """A run folder's tables, computed from results.jsonl and written by nothing yet: what
    build_reports writes as CSV, and what the Python API (promptlab.api) reads back."""

    manifest: dict[str, Any]
    rows: list[dict[str, Any]]  # in suite order
    results: pd.DataFrame
    summary: pd.DataFrame
    comparisons: pd.DataFrame
    comparison_records: list[dict[str, Any]]

    def csv(self) -> dict[str, str]:
        """File name -> the exact text of results.csv, summary.csv and comparisons.csv."""
        return {
            "results.csv": self.results.to_csv(index=False),
            "summary.csv": self.summary.to_csv(index=False),
            "comparisons.csv": self.comparisons.to_csv(index=False),
        }


def read_back(csv_text: str) -> pd.DataFrame:
    """A CSV text as `pandas.read_csv` reads it, so that the Python API's frames equal those a
    user reads from the files (same columns, same dtypes)."""
    frame: pd.DataFrame = pd.read_csv(io.StringIO(csv_text))
    return frame


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    frame: pd.DataFrame = pd.DataFrame.from_records(records)
    return frame


def tables(folder: Path) -> Tables:
    manifest = read_manifest(folder)
    # Rows are stored in run order (prefix-aware, resumable); reports follow the suite's order.
    rows = sorted(read_results(folder), key=lambda r: r.get("order", 0))
    df = results_frame(rows)
    variants, comparisons = run_statistics(_stat_rows(df))
    summary = summary_frame(df, variants)
    return Tables(manifest, rows, df, summary, comparisons_frame(comparisons), comparisons)


def build_reports(folder: Path, *, spreadsheet: bool = False) -> ReportFiles:
    """Every report of a run folder; with `spreadsheet`, also formula-safe copies of the CSVs in
    spreadsheet/ for opening in Excel, LibreOffice or Google Sheets."""
    t = tables(folder)
    manifest, rows, df, summary = t.manifest, t.rows, t.results, t.summary
    comparisons, comparisons_df = t.comparison_records, t.comparisons
    results_csv, summary_csv, comparisons_csv, page = (
        folder / "results.csv",
        folder / "summary.csv",
        folder / "comparisons.csv",
        folder / "report.html",
    )
    for name, text in t.csv().items():
        atomic_write(folder / name, text)
    sheets = (
        _spreadsheet_copies(
            folder,
            {"results.csv": df, "summary.csv": summary, "comparisons.csv": comparisons_df},
        )
        if spreadsheet
        else []
    )
    records = [
        {str(k): _plain(v) for k, v in rec.items()} for rec in summary.to_dict(orient="records")
    ]
    atomic_write(page, render_html(manifest, rows, records, comparisons))
    totals = {
        "cells": len(rows),
        "passed": sum(r["status"] == "pass" for r in rows),
        "failed": sum(r["status"] == "fail" for r in rows),
        "errors": sum(r["status"] == "error" for r in rows),
        "unchecked": sum(r["status"] == UNCHECKED for r in rows),
    }
    return ReportFiles(
        folder,
        results_csv,
        summary_csv,
        page,
        records,
        totals,
        comparisons,
        comparisons_csv,
        spreadsheets=sheets,
    )
