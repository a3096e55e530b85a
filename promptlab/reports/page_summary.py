"""The report page's summary, in HTML that reads without JavaScript: the key numbers, the
variants ranked with their intervals, a chart of pass rates with error bars as inline SVG, and
the verdicts of the paired comparisons (significant ones first)."""

from __future__ import annotations

import math
from typing import Any

from promptlab.reports.page_data import (
    UNCHECKED,
    as_text,
    esc,
    number,
    pct,
    variant_key,
    variant_label,
)

GOOD_RATE = 0.8  # the top variant is tinted green from this pass rate (the terminal's green too)


def _ranked(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def key(rec: dict[str, Any]) -> tuple[float, float, float]:
        rank = number(rec.get("rank"))
        return (
            rank if rank is not None else math.inf,
            -(number(rec.get("pass_rate")) or 0.0),
            -(number(rec.get("mean_score")) or 0.0),
        )

    return sorted(summary, key=key)


def _interval(lo: Any, hi: Any, fmt: str) -> str:
    a, b = number(lo), number(hi)
    if a is None or b is None:
        return ""
    if fmt == "pct":
        return f' <span class="ci">[{a * 100:.0f}–{b * 100:.0f}%]</span>'
    return f' <span class="ci">[{a:.2f}–{b:.2f}]</span>'


def _has(summary: list[dict[str, Any]], key: str) -> bool:
    return any(number(rec.get(key)) is not None for rec in summary)


def summary_html(summary: list[dict[str, Any]]) -> str:
    if not summary:
        return '<p class="muted">No cells ran.</p>'
    ranked = _ranked(summary)
    metrics = sorted({str(k) for rec in summary for k in rec if str(k).startswith("metric_")})
    settings = any(rec.get("setting") for rec in summary)
    ks = {int(k) for rec in summary if (k := number(rec.get("k"))) is not None}
    k_label = str(ks.pop()) if len(ks) == 1 else "k"
    repeats = any((number(rec.get("k")) or 1) > 1 for rec in summary)
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
    head_html = "".join(f"<th>{esc(h)}</th>" for h in head)
    unchecked = any(rec.get("unchecked") for rec in summary)
    head_html += (
        '<th title="with its 95% Wilson interval">pass rate</th>'
        '<th title="with its bootstrap interval">mean score</th>'
        '<th class="num">passed</th><th class="num">failed</th><th class="num">errors</th>'
    )
    if unchecked:
        head_html += '<th class="num" title="outputs no check gated: not passes">no checks</th>'

    head_html += "".join(f'<th class="num" title="{esc(tip)}">{esc(t)}</th>' for _, t, tip in extra)
    head_html += '<th class="num">latency</th><th class="num">tok/s</th>'
    head_html += "".join(f'<th class="num">{esc(m.removeprefix("metric_"))}</th>' for m in metrics)
    out = [f'<table class="summary"><thead><tr>{head_html}</tr></thead><tbody>']
    for position, rec in enumerate(ranked, 1):
        rank = number(rec.get("rank"))
        shown = int(rank) if rank is not None else position
        rate = number(rec.get("pass_rate"))
        score = number(rec.get("mean_score"))
        lat, tps = number(rec.get("mean_latency_ms")), number(rec.get("mean_tokens_per_s"))
        cells = [
            f'<td class="rank">{shown}</td>',
            f"<td>{esc(rec.get('model'))}</td>",
            f'<td class="strong">{esc(rec.get("prompt"))}</td>',
        ]
        if settings:
            cells.append(f'<td class="mono">{esc(rec.get("setting"))}</td>')
        bar = f'<span class="minibar"><i style="width:{(rate or 0) * 100:.1f}%"></i></span>'
        if rate is None:  # no check gated any of its outputs: no rate, least of all 100%
            cells.append('<td class="num rate muted">no checks</td>')
        else:
            cells.append(
                f'<td class="num rate">{bar}<b>{pct(rate)}</b>'
                f"{_interval(rec.get('pass_rate_lo'), rec.get('pass_rate_hi'), 'pct')}</td>"
            )
        cells.append(
            f'<td class="num">{"" if score is None else f"{score:.3f}"}'
            f"{_interval(rec.get('mean_score_lo'), rec.get('mean_score_hi'), 'score')}</td>"
        )
        cells += [f'<td class="num">{esc(rec.get(k, ""))}</td>' for k in ("passed", "failed")]
        errors = rec.get("errors", "")
        cells.append(f'<td class="num{" warn" if errors else ""}">{esc(errors)}</td>')
        if unchecked:
            cells.append(f'<td class="num">{esc(rec.get("unchecked") or 0)}</td>')
        cells += [f'<td class="num">{pct(rec.get(k))}</td>' for k, _, _ in extra]
        cells.append(f'<td class="num">{"" if lat is None else f"{lat:,.0f} ms"}</td>')
        cells.append(f'<td class="num">{"" if tps is None else f"{tps:,.1f}"}</td>')
        for m in metrics:
            value = number(rec.get(m))
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


def chart_svg(summary: list[dict[str, Any]]) -> str:
    """Pass rate per variant as horizontal bars, with the Wilson interval as an error bar."""
    ranked = [r for r in _ranked(summary) if number(r.get("pass_rate")) is not None]
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
        label = variant_label(variant_key(rec), several_models)
        short = label if len(label) <= 30 else label[:29] + "…"
        rate = number(rec.get("pass_rate")) or 0.0
        lo, hi = number(rec.get("pass_rate_lo")), number(rec.get("pass_rate_hi"))
        y = top + i * row
        mid = y + row / 2
        tip = f"{label}: {rate * 100:.0f}% pass"
        if lo is not None and hi is not None:
            tip += f", 95% interval {lo * 100:.0f}–{hi * 100:.0f}%"
        tip += f" ({as_text(rec.get('passed'))}/{as_text(rec.get('cells'))} cells)"
        parts.append(
            f'<g class="row"><title>{esc(tip)}</title>'
            f'<text class="label" x="{left}" y="{mid + 4:.1f}" text-anchor="end">{esc(short)}</text>'
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


def verdicts_html(comparisons: list[dict[str, Any]] | None) -> str:
    if not comparisons:
        return ""

    def order(item: tuple[int, dict[str, Any]]) -> tuple[int, float, int]:
        i, c = item
        p = number(c.get("p_holm"))
        if p is None:
            p = number(c.get("p_value"))
        return (0 if c.get("significant") else 1, p if p is not None else math.inf, i)

    items = []
    for _, c in sorted(enumerate(comparisons), key=order):
        significant = bool(c.get("significant"))
        diff, lo, hi = number(c.get("diff")), number(c.get("diff_lo")), number(c.get("diff_hi"))
        verdict = c.get("verdict")
        if not verdict:
            verdict = f"{as_text(c.get('b'))} vs {as_text(c.get('a'))}"
        meta = [str(c.get("dimension") or "")]
        if c.get("group"):
            meta.append(as_text(c.get("group")))
        if c.get("n_tests") is not None:
            meta.append(f"{as_text(c.get('n_tests'))} paired tests")
        if diff is not None:  # pass-rate points (B - A), as promptlab.reports.stats reports them
            text = f"Δ {diff:+.1f} pts"
            if lo is not None and hi is not None:
                text += f" [{lo:+.1f}, {hi:+.1f}]"
            meta.append(text)
        p, holm = number(c.get("p_value")), number(c.get("p_holm"))
        if p is not None:
            meta.append(f"p={p:.3g}")
        if holm is not None:
            meta.append(f"Holm p={holm:.3g}")
        score_diff = number(c.get("score_diff"))
        if score_diff is not None:
            meta.append(f"score Δ {score_diff:+.3f}")
        pill = (
            '<span class="pill sig">significant</span>'
            if significant
            else '<span class="pill ns">not significant</span>'
        )
        items.append(
            f'<li class="{"sig" if significant else "ns"}">{pill}'
            f'<span class="vtext">{esc(verdict)}</span>'
            f'<div class="vmeta">{esc(" · ".join(m for m in meta if m))}</div></li>'
        )
    return (
        '<div class="card verdicts-card"><h3>Verdicts</h3>'
        f'<ol class="verdicts">{"".join(items)}</ol></div>'
    )


def kpis_html(rows: list[dict[str, Any]], data: dict[str, Any]) -> str:
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
            f'<div class="kpi {cls}"><div class="kv">{esc(value)}</div><div class="kl">{esc(label)}</div></div>'
            for label, value, cls in tiles
        )
        + "</div>"
    )
