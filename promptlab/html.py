"""The HTML report: one self-contained, offline page. Every piece of text is escaped.

Takes plain rows and summary records (no pandas here); promptlab/report.py builds them.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# --- HTML ----------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2430;background:#fafbfc}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px} .muted{color:#667085}
table{border-collapse:collapse;background:#fff} th,td{border:1px solid #e3e7ee;padding:6px 8px;vertical-align:top;text-align:left}
th{background:#f2f4f7;position:sticky;top:0} td.num{text-align:right;font-variant-numeric:tabular-nums}
.bar{display:inline-block;height:8px;background:#2e7d32;border-radius:2px;vertical-align:middle;margin-right:6px}
.pass{background:#eaf6ec} .fail{background:#fdecec} .error{background:#fff4e0}
.badge{font-size:11px;font-weight:600;padding:1px 6px;border-radius:8px;color:#fff}
.badge.pass{background:#2e7d32} .badge.fail{background:#c62828} .badge.error{background:#b26a00}
pre{white-space:pre-wrap;word-break:break-word;margin:4px 0;font:12px/1.4 ui-monospace,Menlo,Consolas,monospace;max-height:16em;overflow:auto}
ul.checks{margin:4px 0;padding-left:18px;font-size:12px} ul.checks li.bad{color:#a11}
details summary{cursor:pointer;color:#475467;font-size:12px} .grid td{min-width:220px;max-width:420px}
footer{margin-top:32px;font-size:12px;color:#475467} footer td,footer th{font-size:12px}
"""


def _e(value: Any) -> str:
    return html.escape(_text(value), quote=True)


def _cell_html(row: dict[str, Any] | None) -> str:
    if row is None:
        return '<td class="muted">not run</td>'
    status = row["status"]
    parts = [f'<td class="{status}"><span class="badge {status}">{status.upper()}</span> ']
    meta = []
    if row.get("latency_ms") is not None:
        meta.append(f"{row['latency_ms']:.0f} ms")
    if row.get("completion_tokens") is not None:
        meta.append(f"{row['completion_tokens']} tok")
    if row.get("score") is not None and row.get("checks"):
        meta.append(f"score {row['score']:.2f}")
    parts.append(f'<span class="muted">{_e(" · ".join(meta))}</span>')
    if row.get("error"):
        parts.append(f"<pre>{_e(row['error'])}</pre>")
    else:
        parts.append(f"<pre>{_e(row.get('output'))}</pre>")
    failed = [c for c in row.get("checks", []) if not c["pass"]]
    if failed:
        parts.append('<ul class="checks">')
        parts += [f'<li class="bad">✗ {_e(c["check"])}: {_e(c["reason"])}</li>' for c in failed]
        parts.append("</ul>")
    parts.append("<details><summary>prompt &amp; checks</summary>")
    parts.append(f"<pre>{_e(row.get('rendered_prompt'))}</pre>")
    if row.get("checks"):
        parts.append(_checks_html(row["checks"]))
    parts.append(
        f'<div class="muted">finish: {_e(row.get("finish_reason"))} · prompt tokens: {_e(row.get("prompt_tokens"))}</div>'
    )
    parts.append("</details></td>")
    return "".join(parts)


def _checks_html(checks: list[dict[str, Any]]) -> str:
    """Every check with its score, details (choice probabilities, the judge's reasoning) and
    the children of an assert-set, nested."""
    items = []
    for c in checks:
        mark = "✓" if c["pass"] else "✗"
        label = c.get("check", c["type"])
        score = f" [{c['score']:.2f}]" if "score" in c else ""
        extra = ""
        details = c.get("details")
        if details:
            extra = f"<pre>{_e(json.dumps(details, ensure_ascii=False, indent=1))}</pre>"
        if c.get("children"):
            extra += _checks_html(c["children"])
        items.append(
            f'<li class="{"" if c["pass"] else "bad"}">{mark} {_e(label)}{_e(score)}: {_e(c["reason"])}{extra}</li>'
        )
    return '<ul class="checks">' + "".join(items) + "</ul>"


def _summary_html(summary: list[dict[str, Any]]) -> str:
    metrics = sorted({str(k) for rec in summary for k in rec if str(k).startswith("metric_")})
    out = [
        "<table><tr><th>model</th><th>prompt</th><th>pass rate</th><th>mean score</th>"
        "<th>passed</th><th>failed</th><th>errors</th><th>mean latency</th><th>tokens/s</th>"
        + "".join(f"<th>{_e(m.removeprefix('metric_'))}</th>" for m in metrics)
        + "</tr>"
    ]
    for rec in summary:
        rate = float(rec["pass_rate"])
        lat = rec["mean_latency_ms"]
        tps = rec["mean_tokens_per_s"]
        score = rec.get("mean_score")
        out.append(
            f"<tr><td>{_e(rec['model'])}</td><td>{_e(_variant(rec))}</td>"
            f'<td class="num"><span class="bar" style="width:{rate * 80:.0f}px"></span>{rate:.0%}</td>'
            f'<td class="num">{"" if score is None or _missing(score) else f"{score:.3f}"}</td>'
            f'<td class="num">{rec["passed"]}</td><td class="num">{rec["failed"]}</td><td class="num">{rec["errors"]}</td>'
            f'<td class="num">{"" if _missing(lat) else f"{lat:.0f} ms"}</td>'
            f'<td class="num">{"" if _missing(tps) else f"{tps:.1f}"}</td>'
            + "".join(
                f'<td class="num">{"" if _missing(rec.get(m)) else f"{rec.get(m):.3f}"}</td>'
                for m in metrics
            )
            + "</tr>"
        )
    out.append("</table>")
    return "".join(out)


def _variant(row: dict[str, Any]) -> str:
    """A report column: the prompt, plus its grid point when params: has lists."""
    setting = row.get("setting") or ""
    return f"{row['prompt']} [{setting}]" if setting else str(row["prompt"])


def _grid_html(rows: list[dict[str, Any]], prompt_order: list[str]) -> str:
    out = []
    models = list(dict.fromkeys(r["model"] for r in rows))
    for model in models:
        mine = [r for r in rows if r["model"] == model]
        # Every prompt of the suite gets a column, so an interrupted run shows what did not run.
        seen = list(dict.fromkeys(_variant(r) for r in mine))
        variants = seen + [p for p in prompt_order if p not in {r["prompt"] for r in mine}]
        rank = {p: i for i, p in enumerate(prompt_order)}
        variants.sort(key=lambda v: rank.get(v.split(" [", 1)[0], len(rank)))
        tests: dict[int, dict[str, Any]] = {}
        for r in mine:
            tests.setdefault(r["test_index"], r)
        by_key: dict[tuple[int, str], list[dict[str, Any]]] = {}
        for r in mine:
            by_key.setdefault((r["test_index"], _variant(r)), []).append(r)
        out.append(f'<h2>Outputs · model {_e(model)}</h2><table class="grid"><tr><th>test</th>')
        out += [f"<th>{_e(v)}</th>" for v in variants]
        out.append("</tr>")
        for index, first in sorted(tests.items()):
            vars_html = "".join(
                f"<div><b>{_e(k)}</b>: {_e(v)}</div>" for k, v in first.get("vars", {}).items()
            )
            out.append(
                f'<tr><td><b>{_e(first["test"])}</b><div class="muted">{vars_html}</div></td>'
            )
            out += [_repeats_html(by_key.get((index, v), [])) for v in variants]
            out.append("</tr>")
        out.append("</table>")
    return "".join(out)


def _repeats_html(rows: list[dict[str, Any]]) -> str:
    """One grid cell: the first repeat in full, and how many of the repeats passed."""
    if not rows:
        return _cell_html(None)
    rows = sorted(rows, key=lambda r: r.get("repeat", 0))
    html = _cell_html(rows[0])
    if len(rows) > 1:
        passed = sum(r["status"] == "pass" for r in rows)
        seeds = ", ".join(str(r.get("seed")) for r in rows)
        note = f'<div class="muted">{passed}/{len(rows)} repeats passed (seeds {_e(seeds)})</div>'
        html = html.replace("</td>", note + "</td>", 1) if html.endswith("</td>") else html
    return html


def _footer_html(manifest: dict[str, Any]) -> str:
    git = manifest.get("git") or {}
    items = [
        ("promptlab", manifest.get("promptlab_version")),
        (
            "suite",
            f"{manifest.get('suite', {}).get('path')} (sha256 {str(manifest.get('suite', {}).get('sha256', ''))[:12]})",
        ),
        (
            "git",
            f"{git.get('commit') or 'n/a'}{' (dirty)' if git.get('dirty') else ''}"
            if git
            else "not a git repository",
        ),
        ("started", manifest.get("started_at")),
        ("finished", manifest.get("finished_at")),
        ("status", manifest.get("status")),
    ]
    for m in manifest.get("models", []):
        rt = m.get("runtime", {})
        items.append(
            (
                f"model {m.get('label')}",
                f"{m.get('file_name', m.get('path'))} · {m.get('architecture', '')} {m.get('quantization', '')} · "
                f"sha256 {str(m.get('sha256', ''))[:12]} · chat template: {m.get('chat_template_source')} · "
                f"{rt.get('engine_version', '')} · GPU offload {'supported' if rt.get('gpu_offload_supported') else 'not supported'}, "
                f"{rt.get('layers_offloaded', 0)}/{rt.get('n_layer', '?')} layers on {rt.get('device', 'CPU')}",
            )
        )
    for name, digest in manifest.get("templates", {}).items():
        items.append((f"template {name}", str(digest)[:12]))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in items)
    return f"<footer><h2>Manifest</h2><table>{body}</table></footer>"


def render_html(
    manifest: dict[str, Any],
    rows: list[dict[str, Any]],
    summary: list[dict[str, Any]],
    comparisons: list[dict[str, Any]] | None = None,
) -> str:
    suite = manifest.get("suite", {})
    title = suite.get("description") or suite.get("path") or "promptlab run"
    total = len(rows)
    passed = sum(r["status"] == "pass" for r in rows)
    status = manifest.get("status", "")
    note = "" if status == "complete" else f" · <b>{_e(status)}</b>"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)} · promptlab</title><style>{_CSS}</style></head><body>"
        f'<h1>{_e(title)}</h1><div class="muted">{_e(suite.get("path"))} · {passed}/{total} cells passed{note}</div>'
        f"<h2>Summary</h2>{_summary_html(summary)}{_grid_html(rows, list(manifest.get('templates', {})))}{_footer_html(manifest)}</body></html>\n"
    )
