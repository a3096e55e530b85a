"""The HTML report: one self-contained, offline page that people want to open.

Takes plain rows, summary records and comparisons (no pandas here);
promptlab/reports/tables.py builds them. This module assembles the page, which has three parts:

- a summary in HTML, so it reads without JavaScript (page_summary.py): the variants (model ×
  prompt × setting) ranked with their intervals, the verdicts of the paired comparisons
  (significant ones first), and a chart of pass rates with error bars as inline SVG;
- the side-by-side grid (tests × variants) with its filters, pagination, details panel and token
  view, drawn by a small inline script (promptlab/builtin/report.js) from the cells embedded as
  JSON (page_data.py), one page of tests at a time, so 5,000 cells open as fast as 50;
- the run's manifest in a footer (here).

Safety: every piece of text that reaches the HTML goes through `html.escape`; the cells reach the
script as JSON inside `<script type="application/json">` with `<`, `>`, `&`, U+2028 and U+2029
written as \\u escapes (so no text can close the element), and the script builds the DOM with
`textContent` only. A Content-Security-Policy allows nothing but the page's own styles and the
one inline script (by its hash): no network, and no injected handler could run even if escaping
failed somewhere.
"""

from __future__ import annotations

import base64
import hashlib
from functools import cache
from importlib import resources
from pathlib import PurePosixPath
from typing import Any

from promptlab.engine.store import GENERIC_STEMS
from promptlab.reports.page_data import UNCHECKED, as_text, embed_json, esc, grid_data, number, pct
from promptlab.reports.page_summary import chart_svg, kpis_html, summary_html, verdicts_html

# --- assets ------------------------------------------------------------------------------------


@cache
def _asset(name: str) -> str:
    return (resources.files("promptlab") / "builtin" / name).read_text(encoding="utf-8")


def _csp(script: str) -> str:
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    )


# --- the manifest footer -----------------------------------------------------------------------


def _counts(value: Any) -> str:
    if not isinstance(value, dict):
        return as_text(value)
    return " · ".join(
        f"{str(k).replace('_', ' ')} {as_text(v)}" for k, v in value.items() if k != "path"
    )


def _footer_html(manifest: dict[str, Any]) -> str:
    git = manifest.get("git") or {}
    suite = manifest.get("suite") or {}
    commit = git.get("commit")
    git_text = "not a git repository"
    if git:
        git_text = f"{commit or 'n/a'}" + (" (dirty)" if git.get("dirty") else "")
        if commit and git.get("branch"):
            git_text += f" · branch {git['branch']}"
    items: list[tuple[str, Any]] = [
        ("promptlab", manifest.get("promptlab_version")),
        ("suite", f"{suite.get('path')} (sha256 {str(suite.get('sha256', ''))[:12]})"),
        ("git", git_text),
        ("started", manifest.get("started_at")),
        ("finished", manifest.get("finished_at")),
        ("status", "complete" if manifest.get("status") == "reporting" else manifest.get("status")),
    ]
    if manifest.get("error"):
        items.append(("error", manifest["error"]))
    engines: list[str] = []
    builds: list[str] = []
    for m in manifest.get("models", []):
        rt = m.get("runtime") or {}
        if rt.get("engine_version") and rt["engine_version"] not in engines:
            engines.append(str(rt["engine_version"]))
        if rt.get("system_info") and rt["system_info"] not in builds:
            builds.append(str(rt["system_info"]))
        load = m.get("load_settings") or {}
        gpu = (
            f"GPU offload {'supported' if rt.get('gpu_offload_supported') else 'not supported'}, "
            f"{rt.get('layers_offloaded', 0)}/{rt.get('layers_total') or rt.get('n_layer', '?')} layers on {rt.get('device', 'CPU')}"
        )
        parts = [
            m.get("file_name", m.get("path")),
            f"{m.get('architecture', '')} {m.get('quantization', '')}".strip(),
            f"sha256 {str(m['sha256'])[:12]}" if m.get("sha256") else "",
            f"chat template: {m.get('chat_template_source')}",
            f"n_ctx {load['n_ctx']}" if load.get("n_ctx") else "",
            rt.get("engine_version", ""),
            gpu,
        ]
        role = m.get("role")
        key = f"model {m.get('label')}" + (f" ({role})" if role not in (None, "under test") else "")
        items.append((key, " · ".join(str(p) for p in parts if p)))
    if engines:
        items.append(("llama.cpp", ", ".join(engines)))
    if builds:
        items.append(("llama.cpp build", " / ".join(builds)))
    if manifest.get("params"):
        items.append(("params", _counts(manifest["params"])))
    grid = manifest.get("grid") or {}
    if grid:
        items.append(
            (
                "grid",
                f"{grid.get('settings', 1)} setting(s)"
                + (f" varying {', '.join(map(str, grid['varied']))}" if grid.get("varied") else "")
                + f" · repeat {grid.get('repeat', 1)}",
            )
        )
    cache_stats = manifest.get("cache")
    items.append(("cache", _counts(cache_stats) if cache_stats else "off"))
    reuse = manifest.get("prefix_reuse") or {}
    if reuse:
        share = number(reuse.get("reused_share"))
        items.append(
            (
                "prefix reuse",
                f"{as_text(reuse.get('reused', 0))} of {as_text(reuse.get('prompt_tokens', 0))} prompt tokens "
                f"reused from the KV cache ({pct(share) or '0%'}), {as_text(reuse.get('evaluated', 0))} evaluated",
            )
        )
    sources = manifest.get("template_sources") or {}
    for name, digest in (manifest.get("templates") or {}).items():
        source = sources.get(name)
        items.append((f"template {name}", str(digest)[:12] + (f" · {source}" if source else "")))
    host = manifest.get("host") or {}
    if host:
        items.append(("host", f"{host.get('platform', '')} · Python {host.get('python', '')}"))
    if manifest.get("command"):
        command = manifest["command"]
        items.append(
            ("command", " ".join(map(str, command)) if isinstance(command, list) else command)
        )
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in items)
    return f'<footer><h2>Manifest</h2><table class="manifest">{body}</table></footer>'


# --- the page ----------------------------------------------------------------------------------

_TOOLBAR = """
<div class="toolbar" id="toolbar" hidden>
  <div class="seg" role="radiogroup" aria-label="which tests">
    <label><input type="radio" name="view" value="all" checked><span>All <b data-count="all"></b></span></label>
    <label><input type="radio" name="view" value="failing"><span>Failures <b data-count="failing"></b></span></label>
    <label><input type="radio" name="view" value="disagree"><span>Disagreements <b data-count="disagree"></b></span></label>
    <label><input type="radio" name="view" value="flaky"><span>Flaky <b data-count="flaky"></b></span></label>
  </div>
  <input type="search" id="search" placeholder="Search tests, vars, outputs…" aria-label="search">
  <label class="check" id="tokens-toggle" hidden><input type="checkbox" id="tokens"> token probabilities</label>
  <div class="pager">
    <span id="shown" class="muted"></span>
    <button type="button" id="prev" aria-label="previous page">‹ Prev</button>
    <span id="page"></span>
    <button type="button" id="next" aria-label="next page">Next ›</button>
    <select id="size" aria-label="tests per page">
      <option value="10">10 / page</option><option value="25">25 / page</option>
      <option value="50" selected>50 / page</option><option value="100">100 / page</option>
      <option value="500">500 / page</option>
    </select>
  </div>
</div>
"""


def page_title(manifest: dict[str, Any]) -> str:
    """The suite's description, else the run's name (store.run_name), else the suite file's
    name: never promptfooconfig.yaml when something better is known."""
    suite = manifest.get("suite") or {}
    for value in (suite.get("description"), suite.get("name")):
        if isinstance(value, str) and value.strip():
            return value.strip()
    path = suite.get("path")
    if isinstance(path, str) and path:
        file = PurePosixPath(path.replace("\\", "/"))
        if file.stem.lower() in GENERIC_STEMS and file.parent.name:
            return file.parent.name
        return file.stem or path
    return "promptlab run"


def render_html(
    manifest: dict[str, Any],
    rows: list[dict[str, Any]],
    summary: list[dict[str, Any]],
    comparisons: list[dict[str, Any]] | None = None,
) -> str:
    suite = manifest.get("suite") or {}
    title = page_title(manifest)
    checked = sum(r["status"] != UNCHECKED for r in rows)
    passed = sum(r["status"] == "pass" for r in rows)
    status = manifest.get("status", "")
    # This page is written while the run says "reporting"; it ends "complete" once the page is
    # on disk, so that is what the page says.
    note = "" if status in ("complete", "reporting", "") else f" · <b>{esc(status)}</b>"
    git = manifest.get("git") or {}
    commit = str(git.get("commit") or "")[:10]
    sub = [esc(suite["path"])] if suite.get("path") else []
    unchecked = len(rows) - checked
    sub.append(
        f"{passed}/{checked} cells passed"
        + (f", {unchecked} with no checks" if unchecked else "")
        + note
    )
    skipped = manifest.get("skipped")
    if isinstance(skipped, list) and skipped:
        # --skip-unsupported: a partial run must not read as a full one.
        sub.append(f"<b>{len(skipped)} skipped (--skip-unsupported): a partial run</b>")
    if manifest.get("started_at"):
        sub.append(esc(str(manifest["started_at"]).replace("T", " ")[:19]))
    if commit:
        sub.append(
            f'<span class="mono">{esc(commit)}</span>' + (" (dirty)" if git.get("dirty") else "")
        )
    data = grid_data(rows, summary, list(manifest.get("templates") or {}))
    script = _asset("report.js")
    chart = chart_svg(summary)
    chart_card = (
        '<div class="card chart-card"><h3>Pass rate <span class="muted">with 95% intervals</span></h3>'
        f"{chart}</div>"
        if chart
        else ""
    )
    side = chart_card + verdicts_html(comparisons)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{esc(_csp(script))}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)} · promptlab</title><style>{_asset('report.css')}</style></head><body>"
        f'<header class="top"><div class="brand">promptlab report</div><h1>{esc(title)}</h1>'
        f'<div class="sub">{" · ".join(sub)}</div></header><main>'
        f'<section id="summary"><h2>Summary</h2>{kpis_html(rows, data)}'
        f'<div class="card"><h3>Variants, ranked</h3><div class="scroll">{summary_html(summary)}</div></div>'
        f'<div class="pair">{side}</div></section>'
        '<section id="outputs"><h2>Outputs <span class="muted" id="grid-note">tests × variants · '
        "click a cell for the prompt, every check and each repeat</span></h2>"
        f"{_TOOLBAR}"
        '<noscript><p class="muted">The output grid needs JavaScript; results.csv holds every cell.</p></noscript>'
        '<div class="gridwrap" id="gridwrap" hidden><table class="grid" id="grid"><thead></thead>'
        "<tbody></tbody></table></div></section>"
        '<aside id="details" class="drawer" hidden aria-label="cell details" tabindex="-1"></aside>'
        f"{_footer_html(manifest)}</main>"
        f'<script type="application/json" id="promptlab-data">{embed_json(data)}</script>'
        f"<script>{script}</script></body></html>\n"
    )
