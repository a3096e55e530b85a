# Over 600 lines: one self-contained page; its HTML, its data and its script stay together.
"""The HTML report: one self-contained, offline page that people want to open.

Takes plain rows, summary records and comparisons (no pandas here);
promptlab/reports/tables.py builds them. The page has three parts:

- a summary rendered here, in HTML, so it reads without JavaScript: the variants (model × prompt ×
  setting) ranked with their intervals, the verdicts of the paired comparisons (significant ones
  first), and a chart of pass rates with error bars as inline SVG;
- the side-by-side grid (tests × variants) with its filters, pagination, details panel and token
  view, drawn by a small inline script (promptlab/builtin/report.js) from the cells embedded as
  JSON, one page of tests at a time, so 5,000 cells open as fast as 50;
- the run's manifest in a footer.

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
import html
import json
import math
from functools import cache
from importlib import resources
from pathlib import PurePosixPath
from typing import Any

from promptlab.engine.store import GENERIC_STEMS

PAGE_SIZE = 50  # tests per grid page (the reader can pick 25-500)
GOOD_RATE = 0.8  # the top variant is tinted green from this pass rate (the terminal's green too)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _e(value: Any) -> str:
    return html.escape(_text(value), quote=True)


def _num(value: Any) -> float | None:
    """A finite number, or None (missing, NaN, a bool, a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _pct(value: Any, digits: int = 0) -> str:
    x = _num(value)
    return "" if x is None else f"{x * 100:.{digits}f}%"


# --- assets and safe embedding -----------------------------------------------------------------


@cache
def _asset(name: str) -> str:
    return (resources.files("promptlab") / "builtin" / name).read_text(encoding="utf-8")


def _csp(script: str) -> str:
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    )


def _finite(value: Any) -> Any:
    """JSON has no NaN or Infinity: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


_JSON_ESCAPES = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def embed_json(data: Any) -> str:
    """JSON that is safe as the text of a <script type="application/json"> element.

    `<`, `>` and `&` only occur inside JSON strings, where their \\u escapes mean the same
    characters, so nothing can close the element or open a comment; U+2028/2029 are escaped for
    old JavaScript parsers."""
    try:
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (ValueError, TypeError):
        text = json.dumps(
            _finite(data), ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str
        )
    return text.translate(_JSON_ESCAPES)


# --- variants ----------------------------------------------------------------------------------


def _variant_key(rec: dict[str, Any]) -> tuple[str, str, str]:
    return (str(rec.get("model", "")), str(rec.get("prompt", "")), str(rec.get("setting") or ""))


def _variant_label(key: tuple[str, str, str], with_model: bool) -> str:
    model, prompt, setting = key
    label = f"{prompt} [{setting}]" if setting else prompt
    return f"{model} · {label}" if with_model else label


def _columns(rows: list[dict[str, Any]], prompt_order: list[str]) -> list[tuple[str, str, str]]:
    """Grid columns: every model × prompt × setting that ran, in suite order, plus every prompt of
    the suite that did not run for a model (an interrupted run shows what is missing)."""
    rank = {p: i for i, p in enumerate(prompt_order)}
    columns: list[tuple[str, str, str]] = []
    for model in dict.fromkeys(str(r["model"]) for r in rows):
        seen = list(dict.fromkeys(_variant_key(r) for r in rows if r["model"] == model))
        ran = {k[1] for k in seen}
        seen += [(model, p, "") for p in prompt_order if p not in ran]
        first = {k: i for i, k in enumerate(seen)}
        seen.sort(key=lambda k: (rank.get(k[1], len(rank)), first[k]))
        columns += seen
    return columns


# --- the grid's data ---------------------------------------------------------------------------


class _Pool:
    """Values many cells share (rendered prompts across repeats, params, messages), stored once."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self._index: dict[str, int] = {}

    def add(self, value: Any) -> int | None:
        if value is None:
            return None
        key = value if isinstance(value, str) else "\0" + _text(value)
        index = self._index.get(key)
        if index is None:
            index = self._index[key] = len(self.values)
            self.values.append(value)
        return index


def _compact(row: dict[str, Any], pool: _Pool) -> dict[str, Any]:
    """One repeat of one cell, with short keys (5,000 of these make up most of the page)."""
    cell: dict[str, Any] = {
        "s": row["status"],
        "o": row.get("output"),
        "r": row.get("repeat", 0),
        "sd": row.get("seed", (row.get("params") or {}).get("seed")),
        "sc": _num(row.get("score")),
        "c": row.get("checks") or [],
        "p": pool.add(row.get("rendered_prompt")),
        "lat": _num(row.get("latency_ms")),
        "pt": row.get("prompt_tokens"),
        "ct": row.get("completion_tokens"),
        "pe": row.get("prompt_eval_tokens"),
        "tps": _num(row.get("tokens_per_s")),
        "fin": row.get("finish_reason"),
        "pa": pool.add(row.get("params")),
        "id": row.get("cell_id"),
    }
    messages = row.get("messages")
    if messages:
        cell["m"] = pool.add(messages)
        cell["chat"] = bool(row.get("chat_applied"))
    optional = {
        "e": row.get("error"),
        "ca": bool(row.get("cached")) or None,
        "lp": row.get("logprobs") or None,
        "g": row.get("grammar"),
        "ns": row.get("named_scores") or None,
        "md": row.get("metadata") or None,
    }
    cell.update({k: v for k, v in optional.items() if v is not None})
    return cell


UNCHECKED = "unchecked"  # no check gated the output: shown as "no checks", never as a pass
_NOT_FAILED = ("pass", UNCHECKED)


def _outcome(statuses: list[str]) -> str:
    if all(s == UNCHECKED for s in statuses):
        return UNCHECKED
    checked = [s for s in statuses if s != UNCHECKED]
    passed = sum(s == "pass" for s in checked)
    return "pass" if passed == len(checked) else "fail" if passed == 0 else "mixed"


def grid_data(
    rows: list[dict[str, Any]], summary: list[dict[str, Any]], prompt_order: list[str]
) -> dict[str, Any]:
    """What the grid script draws: variants (columns), tests (rows) with their filter flags, and
    each cell as the list of its repeats."""
    columns = _columns(rows, prompt_order)
    col_index = {k: i for i, k in enumerate(columns)}
    several_models = len({k[0] for k in columns}) > 1
    by_variant = {_variant_key(r): r for r in summary}
    variants = []
    for key in columns:
        rec = by_variant.get(key, {})
        variants.append(
            {
                "model": key[0],
                "prompt": key[1],
                "setting": key[2],
                "label": _variant_label(key, several_models),
                "rate": _num(rec.get("pass_rate")),
                "lo": _num(rec.get("pass_rate_lo")),
                "hi": _num(rec.get("pass_rate_hi")),
            }
        )
    pool = _Pool()
    tests: dict[Any, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: (r["test_index"], r.get("repeat", 0))):
        test = tests.get(row["test_index"])
        if test is None:
            test = tests[row["test_index"]] = {
                "i": row["test_index"],
                "name": row.get("test", ""),
                "vars": row.get("vars") or {},
                "cells": [None] * len(columns),
            }
        index = col_index[_variant_key(row)]
        if test["cells"][index] is None:
            test["cells"][index] = []
        test["cells"][index].append(_compact(row, pool))
    for test in tests.values():
        ran = [[rep["s"] for rep in cell] for cell in test["cells"] if cell]
        outcomes = {_outcome(statuses) for statuses in ran}
        test["failing"] = any(s not in _NOT_FAILED for statuses in ran for s in statuses)
        test["disagree"] = len(outcomes) > 1
        test["flaky"] = "mixed" in outcomes
    return {
        "variants": variants,
        "tests": sorted(tests.values(), key=lambda t: t["i"]),
        "pool": pool.values,
        "logprobs": any(r.get("logprobs") for r in rows),
        "repeats": max((int(r.get("repeat", 0)) + 1 for r in rows), default=1),
        "pageSize": PAGE_SIZE,
    }


# --- the summary (HTML, works without JavaScript) ---------------------------------------------


def _ranked(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def key(rec: dict[str, Any]) -> tuple[float, float, float]:
        rank = _num(rec.get("rank"))
        return (
            rank if rank is not None else math.inf,
            -(_num(rec.get("pass_rate")) or 0.0),
            -(_num(rec.get("mean_score")) or 0.0),
        )

    return sorted(summary, key=key)


def _interval(lo: Any, hi: Any, fmt: str) -> str:
    a, b = _num(lo), _num(hi)
    if a is None or b is None:
        return ""
    if fmt == "pct":
        return f' <span class="ci">[{a * 100:.0f}–{b * 100:.0f}%]</span>'
    return f' <span class="ci">[{a:.2f}–{b:.2f}]</span>'


def _has(summary: list[dict[str, Any]], key: str) -> bool:
    return any(_num(rec.get(key)) is not None for rec in summary)


def _summary_html(summary: list[dict[str, Any]]) -> str:
    if not summary:
        return '<p class="muted">No cells ran.</p>'
    ranked = _ranked(summary)
    metrics = sorted({str(k) for rec in summary for k in rec if str(k).startswith("metric_")})
    settings = any(rec.get("setting") for rec in summary)
    ks = {int(k) for rec in summary if (k := _num(rec.get("k"))) is not None}
    k_label = str(ks.pop()) if len(ks) == 1 else "k"
    repeats = any((_num(rec.get("k")) or 1) > 1 for rec in summary)
    extra = [
        (key, title, tip)
        for key, title, tip in (
            ("flake_rate", "flaky", "share of tests whose repeats disagree"),
            ("pass_at_k", f"pass@{k_label}", "chance that at least one of k repeats passes"),
            ("pass_pow_k", f"pass^{k_label}", "chance that all k repeats pass"),
        )
        if repeats and _has(summary, key)
    ]
    head = ["#", "model", "prompt", *(["setting"] if settings else [])]
    head_html = "".join(f"<th>{_e(h)}</th>" for h in head)
    unchecked = any(rec.get("unchecked") for rec in summary)
    head_html += (
        '<th title="with its 95% Wilson interval">pass rate</th>'
        '<th title="with its bootstrap interval">mean score</th>'
        '<th class="num">passed</th><th class="num">failed</th><th class="num">errors</th>'
    )
    if unchecked:
        head_html += '<th class="num" title="outputs no check gated: not passes">no checks</th>'

    head_html += "".join(f'<th class="num" title="{_e(tip)}">{_e(t)}</th>' for _, t, tip in extra)
    head_html += '<th class="num">latency</th><th class="num">tok/s</th>'
    head_html += "".join(f'<th class="num">{_e(m.removeprefix("metric_"))}</th>' for m in metrics)
    out = [f'<table class="summary"><thead><tr>{head_html}</tr></thead><tbody>']
    for position, rec in enumerate(ranked, 1):
        rank = _num(rec.get("rank"))
        shown = int(rank) if rank is not None else position
        rate = _num(rec.get("pass_rate"))
        score = _num(rec.get("mean_score"))
        lat, tps = _num(rec.get("mean_latency_ms")), _num(rec.get("mean_tokens_per_s"))
        cells = [
            f'<td class="rank">{shown}</td>',
            f"<td>{_e(rec.get('model'))}</td>",
            f'<td class="strong">{_e(rec.get("prompt"))}</td>',
        ]
        if settings:
            cells.append(f'<td class="mono">{_e(rec.get("setting"))}</td>')
        bar = f'<span class="minibar"><i style="width:{(rate or 0) * 100:.1f}%"></i></span>'
        if rate is None:  # no check gated any of its outputs: no rate, least of all 100%
            cells.append('<td class="num rate muted">no checks</td>')
        else:
            cells.append(
                f'<td class="num rate">{bar}<b>{_pct(rate)}</b>'
                f"{_interval(rec.get('pass_rate_lo'), rec.get('pass_rate_hi'), 'pct')}</td>"
            )
        cells.append(
            f'<td class="num">{"" if score is None else f"{score:.3f}"}'
            f"{_interval(rec.get('mean_score_lo'), rec.get('mean_score_hi'), 'score')}</td>"
        )
        cells += [f'<td class="num">{_e(rec.get(k, ""))}</td>' for k in ("passed", "failed")]
        errors = rec.get("errors", "")
        cells.append(f'<td class="num{" warn" if errors else ""}">{_e(errors)}</td>')
        if unchecked:
            cells.append(f'<td class="num">{_e(rec.get("unchecked") or 0)}</td>')
        cells += [f'<td class="num">{_pct(rec.get(k))}</td>' for k, _, _ in extra]
        cells.append(f'<td class="num">{"" if lat is None else f"{lat:,.0f} ms"}</td>')
        cells.append(f'<td class="num">{"" if tps is None else f"{tps:,.1f}"}</td>')
        for m in metrics:
            value = _num(rec.get(m))
            cells.append(f'<td class="num">{"" if value is None else f"{value:.3f}"}</td>')
        # The first rank is marked; only a rate worth having is tinted green (a ranking of
        # variants that all fail still has a first, and it is no success).
        classes = (["top"] if shown == 1 else []) + (
            ["good"] if shown == 1 and rate is not None and rate >= GOOD_RATE else []
        )
        attr = f' class="{" ".join(classes)}"' if classes else ""
        out.append(f"<tr{attr}>{''.join(cells)}</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _chart_svg(summary: list[dict[str, Any]]) -> str:
    """Pass rate per variant as horizontal bars, with the Wilson interval as an error bar."""
    ranked = [r for r in _ranked(summary) if _num(r.get("pass_rate")) is not None]
    if not ranked:
        return ""
    several_models = len({r.get("model") for r in ranked}) > 1
    width, left, right, top, row = 680, 210, 56, 26, 28
    x0, x1 = left + 10, width - right
    span = x1 - x0
    height = top + row * len(ranked) + 8
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'role="img" aria-label="pass rate per variant, with 95% intervals">'
    ]
    for tick in (0, 25, 50, 75, 100):
        x = x0 + span * tick / 100
        parts.append(
            f'<line class="grid" x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 4}"/>'
            f'<text class="tick" x="{x:.1f}" y="{top - 10}" text-anchor="middle">{tick}%</text>'
        )
    for i, rec in enumerate(ranked):
        label = _variant_label(_variant_key(rec), several_models)
        short = label if len(label) <= 30 else label[:29] + "…"
        rate = _num(rec.get("pass_rate")) or 0.0
        lo, hi = _num(rec.get("pass_rate_lo")), _num(rec.get("pass_rate_hi"))
        y = top + i * row
        mid = y + row / 2
        tip = f"{label}: {rate * 100:.0f}% pass"
        if lo is not None and hi is not None:
            tip += f", 95% interval {lo * 100:.0f}–{hi * 100:.0f}%"
        tip += f" ({_text(rec.get('passed'))}/{_text(rec.get('cells'))} cells)"
        parts.append(
            f'<g class="row"><title>{_e(tip)}</title>'
            f'<text class="label" x="{left}" y="{mid + 4:.1f}" text-anchor="end">{_e(short)}</text>'
            f'<rect class="track" x="{x0}" y="{mid - 7:.1f}" width="{span}" height="14" rx="3"/>'
            f'<rect class="bar" x="{x0}" y="{mid - 7:.1f}" width="{span * rate:.1f}" height="14" rx="3"/>'
        )
        if lo is not None and hi is not None:
            a, b = x0 + span * lo, x0 + span * hi
            parts.append(
                f'<path class="err" d="M{a:.1f} {mid:.1f}H{b:.1f}M{a:.1f} {mid - 6:.1f}V{mid + 6:.1f}'
                f'M{b:.1f} {mid - 6:.1f}V{mid + 6:.1f}"/>'
            )
        parts.append(
            f'<text class="value" x="{x1 + 8}" y="{mid + 4:.1f}">{rate * 100:.0f}%</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _verdicts_html(comparisons: list[dict[str, Any]] | None) -> str:
    if not comparisons:
        return ""

    def order(item: tuple[int, dict[str, Any]]) -> tuple[int, float, int]:
        i, c = item
        p = _num(c.get("p_holm"))
        if p is None:
            p = _num(c.get("p_value"))
        return (0 if c.get("significant") else 1, p if p is not None else math.inf, i)

    items = []
    for _, c in sorted(enumerate(comparisons), key=order):
        significant = bool(c.get("significant"))
        diff, lo, hi = _num(c.get("diff")), _num(c.get("diff_lo")), _num(c.get("diff_hi"))
        verdict = c.get("verdict")
        if not verdict:
            verdict = f"{_text(c.get('b'))} vs {_text(c.get('a'))}"
        meta = [str(c.get("dimension") or "")]
        if c.get("group"):
            meta.append(_text(c.get("group")))
        if c.get("n_tests") is not None:
            meta.append(f"{_text(c.get('n_tests'))} paired tests")
        if diff is not None:  # pass-rate points (B - A), as promptlab.reports.stats reports them
            text = f"Δ {diff:+.1f} pts"
            if lo is not None and hi is not None:
                text += f" [{lo:+.1f}, {hi:+.1f}]"
            meta.append(text)
        p, holm = _num(c.get("p_value")), _num(c.get("p_holm"))
        if p is not None:
            meta.append(f"p={p:.3g}")
        if holm is not None:
            meta.append(f"Holm p={holm:.3g}")
        score_diff = _num(c.get("score_diff"))
        if score_diff is not None:
            meta.append(f"score Δ {score_diff:+.3f}")
        pill = (
            '<span class="pill sig">significant</span>'
            if significant
            else '<span class="pill ns">not significant</span>'
        )
        items.append(
            f'<li class="{"sig" if significant else "ns"}">{pill}'
            f'<span class="vtext">{_e(verdict)}</span>'
            f'<div class="vmeta">{_e(" · ".join(m for m in meta if m))}</div></li>'
        )
    return (
        '<div class="card verdicts-card"><h3>Verdicts</h3>'
        f'<ol class="verdicts">{"".join(items)}</ol></div>'
    )


def _kpis(rows: list[dict[str, Any]], data: dict[str, Any]) -> str:
    total = len(rows)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("pass", "fail", "error", UNCHECKED)}
    checked = total - counts[UNCHECKED]
    tests = data["tests"]
    tiles = [
        ("cells", f"{total:,}", ""),
        (
            f"passed · {counts['pass'] / checked:.0%}" if checked else "passed",
            f"{counts['pass']:,}",
            "pass" if counts["pass"] else "",
        ),
        ("failed", f"{counts['fail']:,}", "fail" if counts["fail"] else ""),
        ("errors", f"{counts['error']:,}", "error" if counts["error"] else ""),
        *([("no checks", f"{counts[UNCHECKED]:,}", "")] if counts[UNCHECKED] else []),
        ("tests", f"{len(tests):,}", ""),
        ("variants", f"{len(data['variants']):,}", ""),
    ]
    if data["repeats"] > 1:
        tiles.append(("repeats", str(data["repeats"]), ""))
        flaky = sum(t["flaky"] for t in tests)
        tiles.append(("flaky tests", f"{flaky:,}", "flaky" if flaky else ""))
    return (
        '<div class="kpis">'
        + "".join(
            f'<div class="kpi {cls}"><div class="kv">{_e(value)}</div><div class="kl">{_e(label)}</div></div>'
            for label, value, cls in tiles
        )
        + "</div>"
    )


# --- the manifest footer -----------------------------------------------------------------------


def _counts(value: Any) -> str:
    if not isinstance(value, dict):
        return _text(value)
    return " · ".join(
        f"{str(k).replace('_', ' ')} {_text(v)}" for k, v in value.items() if k != "path"
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
        share = _num(reuse.get("reused_share"))
        items.append(
            (
                "prefix reuse",
                f"{_text(reuse.get('reused', 0))} of {_text(reuse.get('prompt_tokens', 0))} prompt tokens "
                f"reused from the KV cache ({_pct(share) or '0%'}), {_text(reuse.get('evaluated', 0))} evaluated",
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
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in items)
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
    note = "" if status in ("complete", "reporting", "") else f" · <b>{_e(status)}</b>"
    git = manifest.get("git") or {}
    commit = str(git.get("commit") or "")[:10]
    sub = [_e(suite["path"])] if suite.get("path") else []
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
        sub.append(_e(str(manifest["started_at"]).replace("T", " ")[:19]))
    if commit:
        sub.append(
            f'<span class="mono">{_e(commit)}</span>' + (" (dirty)" if git.get("dirty") else "")
        )
    data = grid_data(rows, summary, list(manifest.get("templates") or {}))
    script = _asset("report.js")
    chart = _chart_svg(summary)
    chart_card = (
        '<div class="card chart-card"><h3>Pass rate <span class="muted">with 95% intervals</span></h3>'
        f"{chart}</div>"
        if chart
        else ""
    )
    side = chart_card + _verdicts_html(comparisons)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(_csp(script))}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)} · promptlab</title><style>{_asset('report.css')}</style></head><body>"
        f'<header class="top"><div class="brand">promptlab report</div><h1>{_e(title)}</h1>'
        f'<div class="sub">{" · ".join(sub)}</div></header><main>'
        f'<section id="summary"><h2>Summary</h2>{_kpis(rows, data)}'
        f'<div class="card"><h3>Variants, ranked</h3><div class="scroll">{_summary_html(summary)}</div></div>'
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
