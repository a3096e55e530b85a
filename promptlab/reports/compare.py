"""Compare two runs cell by cell.

`compare(a, b)` matches the cells of two run folders by test identity and sorts every pair into
regressions (passed in A, fail or error in B), fixes, changed outputs (same status, different
text, or fail <-> error) and unchanged cells; cells found in one run only are listed as such. Per
variant (model x prompt x setting) it compares pass rates and scores with the paired tests of
`promptlab.reports.stats` (exact McNemar, or a permutation test with repeats; Holm across variants).

Matching: first by `cell_id` (a hash of prompt label, test index, description, vars, model label,
grid setting and repeat). Cells left over on both sides are then matched by (model, prompt,
setting, test description, vars, repeat), so inserting a test (which shifts test indexes and
therefore ids) still pairs the tests that did not change.

Without a run A, `compare` takes the project's baseline (promptlab.reports.baseline); the files
it writes, compare.csv and compare.html, come from promptlab.reports.compare_report. No pandas.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptlab.engine.store import MANIFEST, read_manifest, read_results
from promptlab.errors import InputError
from promptlab.reports.baseline import get_baseline, project_of
from promptlab.reports.compare_report import write_files

if TYPE_CHECKING:
    from promptlab.reports import stats

KINDS = ("regression", "fix", "changed", "same", "only_a", "only_b")


# --- runs ----------------------------------------------------------------------------------


@dataclass
class Run:
    folder: Path
    manifest: dict[str, Any]
    rows: list[dict[str, Any]]

    @property
    def name(self) -> str:
        return self.folder.name or str(self.folder)

    @property
    def started(self) -> datetime | None:
        return parse_time(self.manifest.get("started_at"))

    @property
    def commit(self) -> str:
        return describe_commit(self.manifest.get("git"))


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def describe_commit(git: Any) -> str:
    """`abc1234`, `abc1234+dirty`, or `` outside git."""
    if not isinstance(git, dict) or not git.get("commit"):
        return ""
    return str(git["commit"])[:7] + ("+dirty" if git.get("dirty") else "")


def load_run(folder: Path) -> Run:
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder", hint="pass the output folder of a run")
    manifest = read_manifest(folder)
    rows = sorted(read_results(folder), key=lambda r: r.get("order", 0))
    return Run(folder, manifest, rows)


# --- matching ------------------------------------------------------------------------------


def _identity(row: dict[str, Any]) -> str:
    return json.dumps(
        [
            row.get("model"),
            row.get("prompt"),
            row.get("setting") or "",
            row.get("test"),
            row.get("vars"),
            row.get("repeat", 0),
        ],
        sort_keys=True,
        default=str,
    )


def _passed(row: dict[str, Any]) -> bool:
    return row.get("status") == "pass"


def _checked(row: dict[str, Any]) -> bool:
    """False for an output no check gates ("unchecked"): neither a pass nor a failure."""
    return row.get("status") != "unchecked"


def _score(row: dict[str, Any]) -> float:
    """A cell's score for paired tests: errors count as 0, as in promptlab.reports.stats."""
    value = row.get("score")
    if row.get("status") == "error" or not isinstance(value, (int, float)):
        return 0.0
    return float(value)


def _failed_checks(row: dict[str, Any] | None) -> str:
    if row is None:
        return ""
    if row.get("status") == "error":
        return f"error: {row.get('error') or ''}"
    return " | ".join(
        f"{c.get('check')}: {c.get('reason')}" for c in row.get("checks") or [] if not c.get("pass")
    )


@dataclass
class CellDiff:
    kind: str  # one of KINDS
    a: dict[str, Any] | None
    b: dict[str, Any] | None
    matched_by: str = ""  # "cell_id", "identity", or "" when only one run has the cell

    @property
    def row(self) -> dict[str, Any]:
        row = self.b if self.b is not None else self.a
        assert row is not None
        return row

    @property
    def variant(self) -> tuple[str, str, str]:
        r = self.row
        return str(r.get("model")), str(r.get("prompt")), str(r.get("setting") or "")

    @property
    def label(self) -> str:
        return variant_label(*self.variant)

    @property
    def test(self) -> str:
        r = self.row
        name = str(r.get("test"))
        return name if not r.get("repeat") else f"{name} (repeat {r['repeat']})"

    @property
    def score_delta(self) -> float | None:
        if self.a is None or self.b is None:
            return None
        return round(_score(self.b) - _score(self.a), 6)

    # What compare.csv and compare.html show of each side ("" for a side without the cell).
    @property
    def a_output(self) -> str:
        return _out(self.a)

    @property
    def b_output(self) -> str:
        return _out(self.b)

    @property
    def a_failed_checks(self) -> str:
        return _failed_checks(self.a)

    @property
    def b_failed_checks(self) -> str:
        return _failed_checks(self.b)


def _out(row: dict[str, Any] | None) -> str:
    if row is None or row.get("output") is None:
        return ""
    return str(row["output"])


def variant_label(model: str, prompt: str, setting: str) -> str:
    return f"{model} · {prompt}" + (f" [{setting}]" if setting else "")


def _kind(a: dict[str, Any], b: dict[str, Any]) -> str:
    if not (_checked(a) and _checked(b)):
        # Checks added or removed: no verdict to regress or fix, only a difference.
        same = a.get("status") == b.get("status") and _out(a) == _out(b)
        return "same" if same else "changed"
    if _passed(a) and not _passed(b):
        return "regression"
    if _passed(b) and not _passed(a):
        return "fix"
    if a.get("status") != b.get("status") or _out(a) != _out(b):
        return "changed"
    return "same"


def match(rows_a: Sequence[dict[str, Any]], rows_b: Sequence[dict[str, Any]]) -> list[CellDiff]:
    """Pair the cells of two runs (in B's order, then A's leftovers), see the module docstring."""
    a_by_id = {r["cell_id"]: r for r in rows_a}
    b_by_id = {r["cell_id"]: r for r in rows_b}
    pairs: dict[str, tuple[dict[str, Any], str]] = {}  # B's cell id -> (A's row, how)
    for cid in b_by_id:
        if cid in a_by_id:
            pairs[cid] = (a_by_id[cid], "cell_id")
    left_a: dict[str, deque[dict[str, Any]]] = {}
    for cid, row in a_by_id.items():
        if cid not in b_by_id:
            left_a.setdefault(_identity(row), deque()).append(row)
    for cid, row in b_by_id.items():
        if cid in pairs:
            continue
        queue = left_a.get(_identity(row))
        if queue:
            pairs[cid] = (queue.popleft(), "identity")
    diffs: list[CellDiff] = []
    for cid, b in b_by_id.items():
        if cid in pairs:
            a, how = pairs[cid]
            diffs.append(CellDiff(_kind(a, b), a, b, how))
        else:
            diffs.append(CellDiff("only_b", None, b))
    diffs.extend(CellDiff("only_a", row, None) for queue in left_a.values() for row in queue)
    return diffs


# --- per-variant statistics ----------------------------------------------------------------


@dataclass
class VariantDelta:
    model: str
    prompt: str
    setting: str
    cells: int  # matched cells
    a_passed: int
    b_passed: int
    regressions: int
    fixes: int
    changed: int
    a_mean_score: float
    b_mean_score: float
    comparison: stats.Comparison

    @property
    def label(self) -> str:
        return variant_label(self.model, self.prompt, self.setting)

    @property
    def a_rate(self) -> float:
        return self.a_passed / self.cells if self.cells else 0.0

    @property
    def b_rate(self) -> float:
        return self.b_passed / self.cells if self.cells else 0.0

    @property
    def points(self) -> float:
        """Pass-rate change from A to B over the matched cells, in percentage points."""
        return round(100 * (self.b_rate - self.a_rate), 2)

    def as_dict(self) -> dict[str, Any]:
        c = self.comparison
        return {
            "model": self.model,
            "prompt": self.prompt,
            "setting": self.setting,
            "cells": self.cells,
            "a_pass_rate": round(self.a_rate, 4),
            "b_pass_rate": round(self.b_rate, 4),
            "points": self.points,
            "points_lo": c.diff_lo,
            "points_hi": c.diff_hi,
            "regressions": self.regressions,
            "fixes": self.fixes,
            "changed": self.changed,
            "a_mean_score": round(self.a_mean_score, 4),
            "b_mean_score": round(self.b_mean_score, 4),
            "score_delta": c.score_diff,
            "score_delta_lo": c.score_diff_lo,
            "score_delta_hi": c.score_diff_hi,
            "method": c.method,
            "p_value": c.p_value,
            "p_holm": c.p_holm,
            "score_p_value": c.score_p_value,
            "score_p_holm": c.score_p_holm,
            "significant": c.significant,
            "verdict": c.verdict,
        }


def variant_deltas(diffs: Iterable[CellDiff]) -> list[VariantDelta]:
    """Paired tests per variant over the matched cells. A test's repeats form one unit."""
    groups: dict[tuple[str, str, str], dict[str, list[CellDiff]]] = {}
    for d in diffs:
        if d.a is None or d.b is None or not (_checked(d.a) and _checked(d.b)):
            continue  # unchecked outputs count in no pass rate or paired test
        b = d.b
        test_key = json.dumps([b.get("test_index"), b.get("test"), b.get("vars")], default=str)
        groups.setdefault(d.variant, {}).setdefault(test_key, []).append(d)
    # numpy loads only here, never on the way to a model load (stats no longer imports scipy or
    # statsmodels, whose import before a CUDA model load crashed it: backends/native.py).
    from promptlab.reports import stats  # noqa: PLC0415

    out: list[VariantDelta] = []
    for (model, prompt, setting), tests in groups.items():
        units = list(tests.values())
        flat = [d for unit in units for d in unit]
        assert all(d.a is not None and d.b is not None for d in flat)
        a_rows = [[d.a for d in unit if d.a is not None] for unit in units]
        b_rows = [[d.b for d in unit if d.b is not None] for unit in units]
        comparison = stats.paired(
            [[_passed(r) for r in unit] for unit in a_rows],
            [[_passed(r) for r in unit] for unit in b_rows],
            [[_score(r) for r in unit] for unit in a_rows],
            [[_score(r) for r in unit] for unit in b_rows],
            ("A", "B"),
        )
        a_all = [r for unit in a_rows for r in unit]
        b_all = [r for unit in b_rows for r in unit]
        out.append(
            VariantDelta(
                model,
                prompt,
                setting,
                cells=len(flat),
                a_passed=sum(map(_passed, a_all)),
                b_passed=sum(map(_passed, b_all)),
                regressions=sum(d.kind == "regression" for d in flat),
                fixes=sum(d.kind == "fix" for d in flat),
                changed=sum(d.kind == "changed" for d in flat),
                a_mean_score=sum(map(_score, a_all)) / len(a_all),
                b_mean_score=sum(map(_score, b_all)) / len(b_all),
                comparison=comparison,
            )
        )
    stats.holm([v.comparison for v in out])
    return out


# --- the comparison ------------------------------------------------------------------------


@dataclass
class Comparison:
    a: Run
    b: Run
    cells: list[CellDiff]
    variants: list[VariantDelta]
    csv_path: Path | None = None
    html_path: Path | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def of(self, kind: str) -> list[CellDiff]:
        return [d for d in self.cells if d.kind == kind]

    @property
    def regressions(self) -> list[CellDiff]:
        return self.of("regression")

    @property
    def fixes(self) -> list[CellDiff]:
        return self.of("fix")

    def as_dict(self) -> dict[str, Any]:
        """For `--format json`: counts, the variants with their verdicts, and the files."""
        return {
            "a": str(self.a.folder),
            "b": str(self.b.folder),
            "counts": self.counts,
            "variants": [v.as_dict() for v in self.variants],
            "regressions": [_brief(d) for d in self.regressions],
            "fixes": [_brief(d) for d in self.fixes],
            "compare_csv": str(self.csv_path) if self.csv_path else None,
            "compare_html": str(self.html_path) if self.html_path else None,
        }


def _brief(d: CellDiff) -> dict[str, Any]:
    r = d.row
    return {
        "model": r.get("model"),
        "prompt": r.get("prompt"),
        "setting": r.get("setting") or "",
        "test": r.get("test"),
        "repeat": r.get("repeat", 0),
        "a_status": (d.a or {}).get("status"),
        "b_status": (d.b or {}).get("status"),
        "b_failed_checks": d.b_failed_checks,
    }


def compare_runs(a: Run, b: Run) -> Comparison:
    cells = match(a.rows, b.rows)
    counts = {kind: sum(d.kind == kind for d in cells) for kind in KINDS}
    counts["matched"] = sum(d.a is not None and d.b is not None for d in cells)
    return Comparison(a, b, cells, variant_deltas(cells), counts=counts)


def _age_key(run: Run) -> tuple[float, float, int]:
    # Manifest times have one-second resolution; the manifest's mtime breaks ties.
    started = run.started
    finished = parse_time(run.manifest.get("finished_at"))
    try:
        mtime = (run.folder / MANIFEST).stat().st_mtime_ns
    except OSError:
        mtime = 0
    return (
        started.timestamp() if started else 0.0,
        finished.timestamp() if finished else 0.0,
        mtime,
    )


def newer(a: Run, b: Run) -> Run:
    """The run that started later (by started_at, then finished_at; B when equal)."""
    return a if _age_key(a) > _age_key(b) else b


def compare(
    run_a: Path | None, run_b: Path, *, out: Path | None = None, project: Path | None = None
) -> Comparison:
    """Compare two run folders and write compare.csv and compare.html (into the newer run's
    folder, or `out`). Without `run_a`, A is the project's baseline."""
    if run_a is None:
        root = project or project_of(run_b)
        run_a = get_baseline(root)
        if run_a is None:
            raise InputError(
                f"compare {run_b}: no second run given and no baseline set in {root}",
                hint="promptlab compare RUN_A RUN_B, or promptlab baseline set RUN",
            )
    if _same(run_a, run_b):
        raise InputError(
            f"compare: {run_a} and {run_b} are the same run", hint="pass two different run folders"
        )
    a, b = load_run(run_a), load_run(run_b)
    result = compare_runs(a, b)
    write_files(result, out if out is not None else newer(a, b).folder)
    return result


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False
