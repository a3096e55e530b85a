"""The run folder of `promptlab optimize`: manifest, candidates.csv/.json, summary.json and one
self-contained HTML page (leaderboard with intervals, the winner's diff against the original,
the score over the budget as inline SVG). Every user-supplied text on the page is escaped; the
page runs no script.
"""

from __future__ import annotations

import csv
import difflib
import html
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptlab.engine.store import MANIFEST, atomic_write
from promptlab.optimize.search import CandidateRecord, SearchResult, Verdict
from promptlab.optimize.space import Space
from promptlab.optimize.template import optimized_text, original_source

if TYPE_CHECKING:
    from promptlab.optimize.evaluate import Evaluator
    from promptlab.optimize.run import OptimizeResult

CANDIDATE_COLUMNS = (
    "rank",
    "label",
    "text",
    "status",
    "tests",
    "passed",
    "pass_rate",
    "pass_rate_lo",
    "pass_rate_hi",
    "mean_score",
    "trials",
    "first_trial",
    "calls_at_end",
    "demos",
    "vars",
    "params",
)


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    atomic_write(folder / MANIFEST, dumps(manifest))


def space_record(space: Space) -> dict[str, Any]:
    """What was searched, for the manifest."""
    return {
        "dimensions": space.dimensions(),
        "size": space.size(),
        "demos": None
        if space.spec.demos is None
        else {
            "var": space.spec.demos.var,
            "pool": space.pool_mode,
            "pool_size": len(space.pool),
            "k": space.ks,
            "sets": [[d.ref for d in s] for s in space.demo_sets],
        },
        "instructions": space.instructions,
        "proposed": space.proposed,
        "vars": space.grid_vars,
        "params": space.grid_params,
        "minibatch": space.spec.minibatch,
        "eta": space.spec.eta,
        "candidates": space.spec.candidates,
    }


def ranked(result: SearchResult) -> list[CandidateRecord]:
    """Full-validation candidates first (by pass rate, then score), then the pruned ones."""
    records = [r for r in result.records.values() if r.tests > 0]
    return sorted(records, key=lambda r: (-r.tests, -r.pass_rate, -r.mean_score, r.first_trial))


def summary(
    space: Space,
    result: SearchResult,
    verdict: Verdict,
    manifest: dict[str, Any],
    run: OptimizeResult,
) -> dict[str, Any]:
    best = result.candidates[result.best.label]
    return {
        "verdict": {"better": verdict.better, "text": verdict.text, **verdict.as_dict()},
        "baseline": result.baseline.as_dict(),
        "best": {
            "label": best.label,
            "text": best.text,
            "vars": best.vars,
            "params": best.params,
            "demos": [d.ref for d in best.demos],
            "validation": result.records[best.label].as_dict(),
        },
        "split": {k: len(v) for k, v in manifest["split"].items()},
        "calls": {
            "budget": run.budget,
            "used": run.used,
            "model": run.ran,
            "cache": run.from_cache,
            "stored_earlier": run.reused,
        },
        "search": {
            "trials": result.trials,
            "candidates": result.tried,
            "stop": result.stop,
            "rungs": result.rungs,
        },
        "written": str(run.written) if run.written else None,
        "prompt": space.prompt.label,
        "seed": manifest.get("seed"),
        "model": manifest.get("model"),
    }


def write_outputs(
    folder: Path,
    space: Space,
    ev: Evaluator,
    result: SearchResult,
    verdict: Verdict,
    data: dict[str, Any],
) -> None:
    rows = []
    for rank, r in enumerate(ranked(result), 1):
        row = {"rank": rank, **r.as_dict()}
        rows.append(row)
    atomic_write(folder / "candidates.json", dumps(rows))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CANDIDATE_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                k: json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v
                for k, v in row.items()
            }
        )
    atomic_write(folder / "candidates.csv", buf.getvalue())
    atomic_write(folder / "summary.json", dumps(data))
    trace = _read_trace(folder / "trace.jsonl")
    atomic_write(folder / "report.html", render_page(space, ev, result, verdict, data, trace))


def _read_trace(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


# --- the HTML page -------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;padding:0 16px;color:#1d2330}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px}
.verdict{padding:12px 16px;border-radius:6px;margin:14px 0;font-size:15px}
.win{background:#e6f4ea;border:1px solid #9fd3ad} .none{background:#f1f3f6;border:1px solid #cfd5de}
table{border-collapse:collapse;width:100%} th,td{padding:4px 8px;border-bottom:1px solid #e3e7ee;text-align:left;vertical-align:top}
th{background:#f6f8fb;font-weight:600} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.best td{background:#f1f8f3} tr.base td{background:#f6f6fa}
.bar{position:relative;width:160px;height:10px;background:#eef1f5;border-radius:2px}
.bar span{position:absolute;top:0;height:10px;background:#8fb8e8;border-radius:2px}
.bar i{position:absolute;top:-2px;width:2px;height:14px;background:#1f4f8f}
pre{background:#f7f8fa;border:1px solid #e3e7ee;padding:8px;overflow:auto;white-space:pre-wrap;font-size:12.5px}
.add{background:#e6f4ea} .del{background:#fbe9e9} .hunk{color:#6b7380}
.muted{color:#6b7380} .facts span{margin-right:18px}
"""


def _e(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return html.escape(text, quote=True)


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.0f}%"


def _bar(rate: float, lo: float | None, hi: float | None) -> str:
    lo_, hi_ = (lo if lo is not None else rate), (hi if hi is not None else rate)
    return (
        f'<div class="bar"><span style="left:{160 * lo_:.1f}px;width:{160 * (hi_ - lo_):.1f}px">'
        f'</span><i style="left:{160 * rate - 1:.1f}px"></i></div>'
    )


def _leaderboard(result: SearchResult, n_val: int) -> str:
    head = (
        "<tr><th>#</th><th>candidate</th><th>what it changes</th><th>validation tests</th>"
        "<th>pass rate</th><th>95% interval (Wilson)</th><th></th><th>mean score</th>"
        "<th>status</th><th>calls used then</th></tr>"
    )
    body = []
    for rank, r in enumerate(ranked(result), 1):
        cls = "best" if r.label == result.best.label else "base" if r.first_trial < 0 else ""
        status = r.status if r.tests == n_val or r.status != "complete" else "complete"
        interval = (
            f"{_pct(r.pass_rate_lo)}–{_pct(r.pass_rate_hi)}" if r.pass_rate_lo is not None else ""
        )
        demos = "<br><span class=muted>" + _e("; ".join(r.demos)) + "</span>" if r.demos else ""
        body.append(
            f'<tr class="{cls}"><td class=num>{rank}</td><td>{_e(r.label)}</td>'
            f"<td>{_e(r.text)}{demos}</td><td class=num>{r.tests}/{n_val}</td>"
            f"<td class=num>{_pct(r.pass_rate)}</td><td class=num>{interval}</td>"
            f"<td>{_bar(r.pass_rate, r.pass_rate_lo, r.pass_rate_hi)}</td>"
            f"<td class=num>{r.mean_score:.3f}</td><td>{_e(status)}</td>"
            f"<td class=num>{r.calls_at_end}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def chart_svg(trace: list[dict[str, Any]], budget: int, baseline_rate: float) -> str:
    """Validation pass rate at every racing step against the calls spent so far: dots for each
    rung (hollow where the candidate was pruned), a line for the best complete candidate."""
    w, h, left, bottom, top, right = 720, 260, 44, 28, 10, 12
    pw, ph = w - left - right, h - top - bottom
    budget = max(1, budget)

    def x(calls: float) -> float:
        return left + pw * min(calls, budget) / budget

    def y(rate: float) -> float:
        return top + ph * (1 - rate)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" '
        'aria-label="validation pass rate over the budget">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fbfcfd" stroke="#d7dce4"/>',
    ]
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            'stroke="#eceff3"/>'
            f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" font-size="11" text-anchor="end" '
            f'fill="#6b7380">{100 * tick:.0f}%</text>'
        )
    for frac in (0, 0.5, 1.0):
        parts.append(
            f'<text x="{x(frac * budget):.1f}" y="{h - 8}" font-size="11" text-anchor="middle" '
            f'fill="#6b7380">{round(frac * budget)}</text>'
        )
    parts.append(
        f'<line x1="{left}" x2="{left + pw}" y1="{y(baseline_rate):.1f}" y2="{y(baseline_rate):.1f}" '
        'stroke="#8a8fa0" stroke-dasharray="5,4"><title>the original on validation</title></line>'
    )
    n_val = max((ev.get("tests", 0) for ev in trace if ev.get("event") == "baseline"), default=0)
    best = baseline_rate
    line = [(0.0, baseline_rate)]
    for ev in trace:
        if ev.get("event") != "rung":
            continue
        rate, calls = float(ev["pass_rate"]), float(ev["calls_used"])
        fill = "none" if ev.get("pruned") else "#2f6fc0"
        parts.append(
            f'<circle cx="{x(calls):.1f}" cy="{y(rate):.1f}" r="3.2" fill="{fill}" '
            f'stroke="#2f6fc0"><title>{_e(ev["label"])}: {100 * rate:.0f}% on {ev["step"]} '
            f"tests after {ev['calls_used']} calls</title></circle>"
        )
        if ev["step"] == n_val and rate > best:
            line.append((calls, best))
            best = rate
            line.append((calls, best))
    last = max((float(e["calls_used"]) for e in trace if "calls_used" in e), default=0.0)
    line.append((last, best))
    points = " ".join(f"{x(c):.1f},{y(r):.1f}" for c, r in line)
    parts.append(f'<polyline points="{points}" fill="none" stroke="#1e8a4c" stroke-width="2"/>')
    parts.append(
        f'<text x="{left + pw / 2}" y="{h - 8}" font-size="11" text-anchor="middle" dy="-0" '
        'fill="#6b7380"></text></svg>'
    )
    return "".join(parts)


def _diff_html(a: str, b: str, names: tuple[str, str]) -> str:
    lines = difflib.unified_diff(
        a.splitlines(), b.splitlines(), names[0], names[1], lineterm="", n=3
    )
    out = []
    for line in lines:
        cls = (
            "hunk"
            if line.startswith("@@")
            else "add"
            if line.startswith("+") and not line.startswith("+++")
            else "del"
            if line.startswith("-") and not line.startswith("---")
            else ""
        )
        out.append(f'<span class="{cls}">{_e(line)}</span>' if cls else _e(line))
    return "<pre>" + ("\n".join(out) or "(no difference)") + "</pre>"


def render_page(
    space: Space,
    ev: Evaluator,
    result: SearchResult,
    verdict: Verdict,
    data: dict[str, Any],
    trace: list[dict[str, Any]],
) -> str:
    best = result.best
    calls = data["calls"]
    split = data["split"]
    title = f"promptlab optimize · {space.suite.path.name} · prompt {space.prompt.label}"
    facts = (
        f"<span>model <b>{_e(data['model'])}</b></span><span>seed <b>{data['seed']}</b></span>"
        f"<span>split train/validation/held-out <b>{split['train']}/{split['validation']}/"
        f"{split['held_out']}</b></span><span>calls <b>{calls['used']}</b> of {calls['budget']} "
        f"({calls['model']} ran on the model, {calls['cache']} from the cache, "
        f"{calls['stored_earlier']} stored by an earlier session)</span>"
        f"<span>candidates <b>{result.tried}</b> in {result.trials} trials, stopped: "
        f"{_e(_STOPS.get(result.stop, result.stop))}</span>"
    )
    held = ""
    if verdict.comparison is not None:
        c = verdict.comparison
        i95 = verdict.interval_95
        iadj = verdict.interval_adjusted
        held = (
            "<h2>Held-out tests</h2><table><tr><th></th><th>pass rate</th></tr>"
            f"<tr class=base><td>{_e(verdict.baseline)} (original)</td>"
            f"<td class=num>{_pct(verdict.baseline_rate)}</td></tr>"
            f"<tr class=best><td>{_e(verdict.best)} (best on validation)</td>"
            f"<td class=num>{_pct(verdict.best_rate)}</td></tr></table>"
            f"<p>Difference {c['diff']:+.1f} points"
            + (f", 95% interval [{i95[0]:.1f}, {i95[1]:.1f}]" if i95 else "")
            + (
                f", {100 * (verdict.adjusted_confidence or 0):.1f}% interval for "
                f"{verdict.candidates_tried} candidates [{iadj[0]:.1f}, {iadj[1]:.1f}]"
                if iadj
                else ""
            )
            + f"; {_e(c['method'])} p={verdict.p_value:.3g}, corrected for "
            f"{verdict.candidates_tried} candidates p={verdict.p_adjusted:.3g}.</p>"
        )
    diff = ""
    if not best.is_baseline:
        source, _target = original_source(space.suite, space.prompt)
        written = optimized_text(
            source,
            best,
            suite_name=space.suite.path.name,
            seed=int(data["seed"] or 0),
            baseline=space.prompt.label,
        )
        first = space.split.held_out[0] if space.split.held_out else space.tests[0].index
        base_rows = ev.rows(space.baseline(), first)
        best_rows = ev.rows(best, first)
        rendered = ""
        if base_rows and best_rows:
            rendered = "<h3>Rendered for one held-out test</h3>" + _diff_html(
                str(base_rows[0]["rendered_prompt"]),
                str(best_rows[0]["rendered_prompt"]),
                ("original", best.label),
            )
        diff = (
            f"<h2>The best candidate against the original</h2><p>{_e(best.text)}</p>"
            + _diff_html(source, written, (space.prompt.source, "optimized"))
            + rendered
        )
    cls = "win" if verdict.better else "none"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1><div class=facts>{facts}</div>"
        f'<div class="verdict {cls}">{_e(verdict.text)}</div>'
        + held
        + "<h2>Validation pass rate over the budget</h2>"
        + chart_svg(trace, int(calls["budget"]), result.baseline.pass_rate)
        + "<p class=muted>Dots: each racing step (hollow: pruned there). Green: the best "
        "candidate that ran on every validation test. Dashed: the original.</p>"
        + "<h2>Candidates</h2>"
        + _leaderboard(result, len(space.split.validation))
        + diff
        + "</body></html>\n"
    )


_STOPS = {
    "budget": "the budget was spent",
    "candidates": "the candidate limit (optimize.candidates) was reached",
    "exhausted": "every candidate of the space was tried",
    "repeats": "the sampler kept proposing candidates already tried",
}
