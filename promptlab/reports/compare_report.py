"""The files a comparison writes: compare.csv (every cell pair) and compare.html (one page).

No pandas here; the CSV is written with the csv module and the HTML page by hand, every piece of
text escaped, no script and no external resource. Only the types come from
promptlab.reports.compare, which calls `write_files`.
"""

from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptlab.engine.store import atomic_write
from promptlab.errors import InputError

if TYPE_CHECKING:
    from promptlab.reports.compare import CellDiff, Comparison, Run, VariantDelta

CSV_COLUMNS = (
    "kind",
    "model",
    "prompt",
    "setting",
    "test",
    "repeat",
    "vars",
    "matched_by",
    "a_cell_id",
    "b_cell_id",
    "a_status",
    "b_status",
    "a_score",
    "b_score",
    "score_delta",
    "a_failed_checks",
    "b_failed_checks",
    "a_output",
    "b_output",
)


def csv_row(d: CellDiff) -> dict[str, Any]:
    """One line of compare.csv: the pair's identity, both sides' status, score and output."""
    a, b, r = d.a or {}, d.b or {}, d.row
    return {
        "kind": d.kind,
        "model": r.get("model"),
        "prompt": r.get("prompt"),
        "setting": r.get("setting") or "",
        "test": r.get("test"),
        "repeat": r.get("repeat", 0),
        "vars": json.dumps(r.get("vars") or {}, ensure_ascii=False, default=str),
        "matched_by": d.matched_by,
        "a_cell_id": a.get("cell_id", ""),
        "b_cell_id": b.get("cell_id", ""),
        "a_status": a.get("status", ""),
        "b_status": b.get("status", ""),
        "a_score": a.get("score", ""),
        "b_score": b.get("score", ""),
        "score_delta": "" if d.score_delta is None else d.score_delta,
        "a_failed_checks": d.a_failed_checks,
        "b_failed_checks": d.b_failed_checks,
        "a_output": d.a_output,
        "b_output": d.b_output,
    }


def write_files(result: Comparison, folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"-o {folder}: cannot create the folder: {exc.strerror or exc}",
            hint="choose a writable folder",
        ) from None
    result.csv_path, result.html_path = folder / "compare.csv", folder / "compare.html"
    atomic_write(result.csv_path, to_csv(result))
    atomic_write(result.html_path, to_html(result))


def to_csv(result: Comparison) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for d in result.cells:
        writer.writerow(csv_row(d))
    return buf.getvalue()


# --- HTML ----------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2430;background:#fafbfc}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px} .muted{color:#667085}
table{border-collapse:collapse;background:#fff} th,td{border:1px solid #e3e7ee;padding:6px 8px;vertical-align:top;text-align:left}
th{background:#f2f4f7} td.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{background:#eaf6ec} .fail{background:#fdecec} .error{background:#fff4e0}
.regression{color:#a11;font-weight:600} .fix{color:#1b5e20;font-weight:600}
pre{white-space:pre-wrap;word-break:break-word;margin:0;font:12px/1.4 ui-monospace,Menlo,Consolas,monospace;max-height:14em;overflow:auto;max-width:520px}
.counts span{display:inline-block;margin-right:14px}
"""

# Beyond this many cells per section, the page points to compare.csv (which has them all).
HTML_LIMIT = 1000


def _e(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return html.escape(text, quote=True)


def _num(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def _run_html(tag: str, run: Run) -> str:
    m = run.manifest
    suite = (m.get("suite") or {}).get("path", "")
    return (
        f"<tr><th>{tag}</th><td>{_e(str(run.folder))}</td><td>{_e(m.get('started_at'))}</td>"
        f"<td>{_e(suite)}</td><td>{_e(run.commit)}</td><td>{_e(m.get('status'))}</td>"
        f'<td class="num">{len(run.rows)}</td></tr>'
    )


def _variants_html(variants: list[VariantDelta]) -> str:
    head = (
        "<tr><th>variant</th><th>cells</th><th>A pass</th><th>B pass</th><th>Δ points</th>"
        "<th>regressions</th><th>fixes</th><th>changed</th><th>Δ score</th><th>p (Holm)</th>"
        "<th>verdict</th></tr>"
    )
    body = []
    for v in variants:
        c = v.comparison
        interval = (
            f" [{c.diff_lo:.0f}, {c.diff_hi:.0f}]"
            if c.diff_lo is not None and c.diff_hi is not None
            else ""
        )
        body.append(
            f"<tr><td>{_e(v.label)}</td><td class='num'>{v.cells}</td>"
            f"<td class='num'>{v.a_rate:.0%}</td><td class='num'>{v.b_rate:.0%}</td>"
            f"<td class='num'>{v.points:+.0f}{_e(interval)}</td>"
            f"<td class='num'>{v.regressions}</td><td class='num'>{v.fixes}</td>"
            f"<td class='num'>{v.changed}</td><td class='num'>{_num(c.score_diff, '+.3f')}</td>"
            f"<td class='num'>{_num(c.p_holm, '.3g')}</td><td>{_e(c.verdict)}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def _cells_html(diffs: list[CellDiff], what: str) -> str:
    if not diffs:
        return '<p class="muted">none</p>'
    head = (
        "<tr><th>variant</th><th>test</th><th>A</th><th>B</th><th>Δ score</th>"
        "<th>A output</th><th>B output</th><th>B failed checks</th></tr>"
    )
    body = []
    for d in diffs[:HTML_LIMIT]:
        a_status, b_status = (d.a or {}).get("status", ""), (d.b or {}).get("status", "")
        body.append(
            f"<tr><td>{_e(d.label)}</td><td>{_e(d.test)}</td>"
            f'<td class="{_e(a_status)}">{_e(a_status)}</td>'
            f'<td class="{_e(b_status)}">{_e(b_status)}</td>'
            f"<td class='num'>{_num(d.score_delta, '+.3f')}</td>"
            f"<td><pre>{_e(d.a_output)}</pre></td><td><pre>{_e(d.b_output)}</pre></td>"
            f"<td><pre>{_e(d.b_failed_checks)}</pre></td></tr>"
        )
    more = ""
    if len(diffs) > HTML_LIMIT:
        more = f'<p class="muted">{len(diffs) - HTML_LIMIT} more {_e(what)} in compare.csv</p>'
    return f"<table>{head}{''.join(body)}</table>{more}"


def to_html(result: Comparison) -> str:
    c = result.counts
    counts = "".join(
        f"<span>{_e(label)}: <b>{c.get(kind, 0)}</b></span>"
        for kind, label in (
            ("matched", "matched cells"),
            ("regression", "regressions"),
            ("fix", "fixes"),
            ("changed", "changed outputs"),
            ("same", "unchanged"),
            ("only_a", "only in A"),
            ("only_b", "only in B"),
        )
    )
    sections = [
        ("Regressions (passed in A, fail or error in B)", "regression", "regressions"),
        ("Fixes (fail or error in A, passed in B)", "fix", "fixes"),
        ("Changed outputs (same outcome, different text)", "changed", "changed outputs"),
        ("Only in A", "only_a", "cells"),
        ("Only in B", "only_b", "cells"),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # No script may run on this page, whatever a model wrote.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>promptlab compare: {_e(result.a.name)} → {_e(result.b.name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Compare {_e(result.a.name)} → {_e(result.b.name)}</h1>",
        "<table><tr><th></th><th>run</th><th>started</th><th>suite</th><th>commit</th>"
        "<th>status</th><th>cells</th></tr>",
        _run_html("A", result.a),
        _run_html("B", result.b),
        "</table>",
        f'<p class="counts">{counts}</p>',
        "<h2>Variants</h2>",
        '<p class="muted">Pass rates over the cells both runs have; Δ = B − A with a 95% '
        "paired-bootstrap interval; exact McNemar (a permutation test with repeats), "
        "Holm-adjusted across variants.</p>",
        _variants_html(result.variants),
    ]
    for title, kind, what in sections:
        parts.append(f"<h2>{_e(title)}</h2>")
        parts.append(_cells_html(result.of(kind), what))
    parts.append("</body></html>\n")
    return "\n".join(parts)
