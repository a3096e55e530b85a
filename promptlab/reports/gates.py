"""CI integration: quality gates, JUnit XML and the JSON summary of `run` and `report`.

Gates decide the exit code when any is given: 0 when all hold (even if some cells failed), 100
when one fails. Without gates the usual rule applies (100 when any cell failed or errored).

Outputs that no check gated ("no checks", status `unchecked`) are neither passes nor failures:
they count in no rate and never fail a run, so a suite without checks exits 0.

- `--fail-under RATE`: the overall pass rate (passed / checked cells, errors count as failures);
  `--fail-under NAME=RATE`: the mean of the named metric NAME (`metric:` on checks) over the cells
  that report it; `score=RATE` is the mean cell score.
- `--max-regression POINTS`: no variant (model x prompt x setting) present in both this run and
  the baseline may lose more than POINTS percentage points of pass rate over their shared cells.
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptlab.engine.store import atomic_write
from promptlab.errors import ExitCode, InputError
from promptlab.reports.baseline import get_baseline
from promptlab.reports.compare import Comparison, compare_runs, load_run
from promptlab.reports.compare_report import write_files

_NAME = re.compile(r"^[A-Za-z_][\w.\-]*$")
UNCHECKED = "unchecked"  # see promptlab.reports.tables.UNCHECKED


@dataclass(frozen=True)
class Threshold:
    metric: str | None  # None: the overall pass rate; "score": the mean score
    value: float

    @property
    def target(self) -> str:
        return self.metric or "pass_rate"


def parse_fail_under(values: list[str] | None) -> list[Threshold]:
    out: list[Threshold] = []
    for raw in values or []:
        name, sep, number = raw.partition("=")
        if not sep:
            name, number = "", raw
        name = name.strip()
        if sep and not _NAME.match(name):
            raise InputError(
                f"--fail-under {raw}: {name!r} is not a metric name",
                hint="use --fail-under 0.8 or --fail-under METRIC=0.8",
            )
        try:
            value = float(number)
        except ValueError:
            raise InputError(
                f"--fail-under {raw}: {number.strip()!r} is not a number",
                hint="a rate between 0 and 1, e.g. --fail-under 0.8 or --fail-under accuracy=0.9",
            ) from None
        if not 0 <= value <= 1 or math.isnan(value):
            raise InputError(
                f"--fail-under {raw}: the rate must be between 0 and 1",
                hint="e.g. 0.8 for 80%",
            )
        out.append(Threshold(None if name in ("", "pass_rate", "pass") else name, value))
    return out


@dataclass
class GateOptions:
    fail_under: list[Threshold] = field(default_factory=list)
    max_regression: float | None = None
    baseline: Path | None = None  # resolved before the run: --baseline, or the project's

    @property
    def active(self) -> bool:
        return bool(self.fail_under) or self.max_regression is not None


def prepare(
    fail_under: list[str] | None,
    max_regression: float | None,
    baseline: Path | None,
    project: Path,
) -> GateOptions:
    """Check the gate options before anything runs (bad input is exit 2, nothing written)."""
    opts = GateOptions(parse_fail_under(fail_under), max_regression, None)
    if max_regression is not None and (max_regression < 0 or math.isnan(max_regression)):
        raise InputError(
            f"--max-regression {max_regression}: must be 0 or more points",
            hint="e.g. --max-regression 5",
        )
    if baseline is not None:
        load_run(baseline)  # a clear error now rather than after the run
        opts.baseline = baseline
    elif max_regression is not None:
        opts.baseline = get_baseline(project)
        if opts.baseline is None:
            raise InputError(
                f"--max-regression needs a baseline and {project} has none",
                hint="promptlab baseline set RUN, or pass --baseline RUN",
            )
    return opts


@dataclass
class GateResult:
    gate: str  # "fail-under" | "max-regression"
    target: str  # pass_rate, score, a metric name, or a variant label
    threshold: float
    value: float | None
    passed: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class Outcome:
    """What `run` / `report` concluded: gate results, the baseline comparison, the exit code."""

    gates: list[GateResult]
    comparison: Comparison | None
    exit_code: int
    junit: Path | None = None

    @property
    def failed(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def check_fail_under(rows: list[dict[str, Any]], threshold: Threshold) -> GateResult:
    metric = threshold.metric
    checked = [r for r in rows if r.get("status") != UNCHECKED]
    if metric is None:
        value = _mean([float(r.get("status") == "pass") for r in checked])
        what = "pass rate"
    elif metric == "score" and not any("score" in (r.get("named_scores") or {}) for r in rows):
        value = _mean([float(r.get("score") or 0.0) for r in checked])
        what = "mean score"
    else:
        value = _mean(
            [
                float(r["named_scores"][metric])
                for r in rows
                if metric in (r.get("named_scores") or {})
            ]
        )
        what = f"metric {metric}"
        if value is None:
            known = sorted({k for r in rows for k in r.get("named_scores") or {}})
            return GateResult(
                "fail-under",
                metric,
                threshold.value,
                None,
                False,
                f"--fail-under {metric}={threshold.value:g}: no cell reports the metric {metric!r}"
                + (f" (metrics: {', '.join(known)})" if known else " (this run has no metrics)"),
            )
    if value is None:
        why = "no cell has a check" if rows else "no cells"
        return GateResult(
            "fail-under",
            threshold.target,
            threshold.value,
            None,
            False,
            f"--fail-under: {why} to measure the {what} on",
        )
    ok = value >= threshold.value
    verb = "is at least" if ok else "is below"
    return GateResult(
        "fail-under",
        threshold.target,
        threshold.value,
        round(value, 4),
        ok,
        f"{what} {value:.1%} {verb} {threshold.value:.1%} (--fail-under)",
    )


def check_regression(comparison: Comparison, points: float) -> list[GateResult]:
    if not comparison.variants:
        return [
            GateResult(
                "max-regression",
                "(no shared cells)",
                points,
                None,
                False,
                f"--max-regression: no cells in common with the baseline {comparison.a.folder}",
            )
        ]
    out = []
    for v in comparison.variants:
        drop = -v.points
        ok = drop <= points + 1e-9
        out.append(
            GateResult(
                "max-regression",
                v.label,
                points,
                round(drop, 2),
                ok,
                f"{v.label}: pass rate {v.a_rate:.0%} → {v.b_rate:.0%} "
                f"({v.points:+.1f} points vs the baseline; at most -{points:g} allowed)",
            )
        )
    return out


def conclude(
    folder: Path,
    rows: list[dict[str, Any]],
    opts: GateOptions,
    *,
    junit: Path | None = None,
    manifest: dict[str, Any] | None = None,
) -> Outcome:
    """Evaluate the gates on a finished run folder and write the JUnit file if asked."""
    results = [check_fail_under(rows, t) for t in opts.fail_under]
    comparison = None
    if opts.baseline is not None:
        comparison = compare_runs(load_run(opts.baseline), load_run(folder))
        write_files(comparison, folder)
        if opts.max_regression is not None:
            results += check_regression(comparison, opts.max_regression)
    if opts.active:
        code = ExitCode.OK if all(g.passed for g in results) else ExitCode.ASSERTIONS_FAILED
    else:
        clean = not any(r.get("status") in ("fail", "error") for r in rows)
        code = ExitCode.OK if clean else ExitCode.ASSERTIONS_FAILED
    if junit is not None:
        write_junit(junit, rows, manifest or {})
    return Outcome(results, comparison, int(code), junit)


# --- JUnit ---------------------------------------------------------------------------------

# XML 1.0 allows tab, newline, carriage return and most of Unicode; ElementTree escapes markup
# but writes other control characters as they are, which no parser accepts.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return _INVALID_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def junit_xml(rows: list[dict[str, Any]], manifest: dict[str, Any]) -> str:
    """One <testsuite> per variant, one <testcase> per cell, in suite order."""
    rows = sorted(rows, key=lambda r: r.get("order", 0))
    repeats = any(r.get("repeat") for r in rows)
    suite_name = (manifest.get("suite") or {}).get("path") or "promptlab"
    root = ET.Element("testsuites", name=_xml(f"promptlab {suite_name}"))
    suites: dict[str, ET.Element] = {}
    counts: dict[str, dict[str, float]] = {}
    for row in rows:
        classname = f"{row.get('model')}.{row.get('prompt')}" + (
            f"[{row['setting']}]" if row.get("setting") else ""
        )
        suite = suites.get(classname)
        if suite is None:
            suite = suites[classname] = ET.SubElement(root, "testsuite", name=_xml(classname))
            counts[classname] = {
                "tests": 0,
                "failures": 0,
                "errors": 0,
                "skipped": 0,
                "time": 0.0,
            }
        name = str(row.get("test"))
        if repeats:
            name += f" (repeat {row.get('repeat', 0)})"
        seconds = float(row.get("latency_ms") or 0.0) / 1000
        case = ET.SubElement(
            suite,
            "testcase",
            classname=_xml(classname),
            name=_xml(name),
            time=f"{seconds:.3f}",
        )
        tally = counts[classname]
        tally["tests"] += 1
        tally["time"] += seconds
        status = row.get("status")
        if status == "error":
            tally["errors"] += 1
            message = str(row.get("error") or "error")
            err = ET.SubElement(case, "error", message=_xml(message), type="error")
            err.text = _xml(message)
        elif status == UNCHECKED:
            tally["skipped"] += 1  # JUnit's word for a case that neither passed nor failed
            ET.SubElement(case, "skipped", message="no checks")
        elif status != "pass":
            tally["failures"] += 1
            failed = [c for c in row.get("checks") or [] if not c.get("pass")]
            lines = [f"{c.get('check')}: {c.get('reason')}" for c in failed]
            message = "; ".join(lines) or "failed"
            fail = ET.SubElement(case, "failure", message=_xml(message), type="assertion")
            fail.text = _xml("\n".join(lines) or "failed")
        out = ET.SubElement(case, "system-out")
        out.text = _xml(row.get("output") or "")
    total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for classname, suite in suites.items():
        tally = counts[classname]
        for key in ("tests", "failures", "errors", "skipped"):
            suite.set(key, str(int(tally[key])))
            total[key] += int(tally[key])
        suite.set("time", f"{tally['time']:.3f}")
    for key, value in total.items():
        root.set(key, str(value))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(path: Path, rows: list[dict[str, Any]], manifest: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--junit {path}: cannot create its folder: {exc}") from None
    atomic_write(path, junit_xml(rows, manifest))


# --- JSON ----------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    for cast in (int, float):  # numpy scalars
        try:
            cast_value = cast(value)
        except (TypeError, ValueError):
            continue
        if cast_value == value:
            return cast_value
    return str(value)


def summary_json(
    *,
    folder: Path,
    status: str,
    totals: dict[str, Any],
    summary: list[dict[str, Any]],
    comparisons: list[dict[str, Any]],
    outcome: Outcome,
    reports: dict[str, Path | None],
    error: str | None = None,
    skipped: list[dict[str, Any]] | None = None,
) -> str:
    checked = (totals.get("cells") or 0) - (totals.get("unchecked") or 0)
    data = {
        "run": str(folder),
        "status": status,
        "error": error,
        "totals": {
            **totals,
            "pass_rate": round(totals.get("passed", 0) / checked, 4) if checked else None,
        },
        "summary": summary,
        "comparisons": comparisons,
        # What --skip-unsupported left out: a partial run must not pass for a full one.
        "skipped": skipped or [],
        "baseline": outcome.comparison.as_dict() if outcome.comparison is not None else None,
        "gates": {
            "active": bool(outcome.gates),
            "passed": all(g.passed for g in outcome.gates),
            "results": [g.as_dict() for g in outcome.gates],
        },
        "exit_code": outcome.exit_code,
        "reports": {k: (str(v) if v is not None else None) for k, v in reports.items()},
    }
    return json.dumps(_plain(data), indent=2, ensure_ascii=False)
