"""The views of `compare`, `history` and the CI gates (`--fail-under`, `--max-regression`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from promptlab.console.terminal import err, escape, out, rate_style

if TYPE_CHECKING:
    from promptlab.reports.compare import Comparison
    from promptlab.reports.gates import Outcome
    from promptlab.reports.history import History, Rate, TemplateRow

_STATUS_STYLE = {"pass": "green", "fail": "red", "error": "yellow", "unchecked": "dim"}


def _status(value: str | None) -> str:
    if not value:
        return "[dim]—[/]"
    return f"[{_STATUS_STYLE.get(value, 'white')}]{escape(value)}[/]"


def _clip(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def print_compare(result: Comparison, limit: int = 30) -> None:
    c = result.counts
    out.print(
        f"[bold]A[/] {escape(str(result.a.folder))} [dim]({escape(result.a.commit or 'no git')}, "
        f"{escape(str(result.a.manifest.get('started_at', '?')))})[/]"
    )
    out.print(
        f"[bold]B[/] {escape(str(result.b.folder))} [dim]({escape(result.b.commit or 'no git')}, "
        f"{escape(str(result.b.manifest.get('started_at', '?')))})[/]"
    )
    for kind, title, style in (
        ("regression", "Regressions: passed in A, not in B", "red"),
        ("fix", "Fixes: passed in B, not in A", "green"),
    ):
        cells = result.of(kind)
        if not cells:
            continue
        table = Table(title=title, title_justify="left", title_style=f"bold {style}")
        table.add_column("variant", overflow="fold")
        table.add_column("test", overflow="fold")
        table.add_column("A → B", no_wrap=True)
        table.add_column("B output / failed checks", overflow="fold")
        for d in cells[:limit]:
            a_status = (d.a or {}).get("status")
            b_status = (d.b or {}).get("status")
            b = d.b or {}
            if b.get("status") == "pass":
                detail = _clip(str(b.get("output") or ""))
            else:
                failed = [c for c in b.get("checks") or [] if not c.get("pass")]
                detail = (
                    _clip(str(b.get("error") or ""))
                    if b.get("status") == "error"
                    else _clip("; ".join(f"{x.get('check')}: {x.get('reason')}" for x in failed))
                )
            table.add_row(
                escape(d.label),
                escape(d.test),
                f"{_status(a_status)} → {_status(b_status)}",
                escape(detail),
            )
        out.print(table)
        if len(cells) > limit:
            out.print(f"[dim]… {len(cells) - limit} more in compare.csv[/]")
    if result.variants:
        table = Table(title="Variants (cells in both runs)", title_justify="left")
        table.add_column("variant", overflow="fold")
        for name in ("A", "B", "Δ pts", "Δ score"):
            table.add_column(name, justify="right", no_wrap=True)
        table.add_column("verdict", overflow="fold")
        for v in result.variants:
            cmp = v.comparison
            delta = f"{v.points:+.0f}"
            if v.points < 0:
                delta = f"[red]{delta}[/]"
            elif v.points > 0:
                delta = f"[green]{delta}[/]"
            table.add_row(
                escape(v.label),
                f"{v.a_rate:.0%}",
                f"{v.b_rate:.0%}",
                delta,
                f"{cmp.score_diff:+.3f}" if cmp.score_diff is not None else "",
                escape(cmp.verdict),
            )
        out.print(table)
    out.print(
        f"{c.get('matched', 0)} matched cells: [red]{c.get('regression', 0)} regressions[/], "
        f"[green]{c.get('fix', 0)} fixes[/], {c.get('changed', 0)} changed outputs, "
        f"{c.get('same', 0)} unchanged; only in A: {c.get('only_a', 0)}, "
        f"only in B: {c.get('only_b', 0)}"
    )
    for path in (result.csv_path, result.html_path):
        if path is not None:
            out.print(f"wrote {escape(str(path))}")


def _rate(rate: Rate) -> str:
    value = rate.rate
    if value is None:
        return "[dim]—[/]"
    return f"[{rate_style(value)}]{value:.0%}[/]"


def print_history(hist: History) -> None:
    """One entry per run, oldest first, like `git log`: a line of facts, a line of rates."""
    if not hist.runs:
        out.print("no runs found")
    suites = len({r.suite for r in hist.runs}) > 1
    for r in hist.runs:
        status = r.status if not r.problem else f"{r.status}, no results"
        style = {
            "complete": "green",
            "interrupted": "yellow",
            "reporting": "yellow",  # killed while writing its reports: --resume finishes it
            "failed": "red",
        }.get(r.status, "")
        facts = [
            f"[bold]{escape(r.date)}[/]",
            escape(str(r.folder.name)),
            *([f"[cyan]{escape(r.suite)}[/]"] if suites else []),
            escape(r.commit or "no git"),
            f"[{style}]{escape(status)}[/]" if style else escape(status),
            f"{r.overall.cells} cells",
            _rate(r.overall),
        ]
        out.print("  ".join(facts))
        prompts = " · ".join(
            f"{escape(label)} {_rate(rate)}" for label, rate in r.per_prompt.items()
        )
        changed = "—" if r.changed is None else (", ".join(r.changed) or "none")
        out.print(
            f"    {prompts or '[dim]no cells[/]'}  [dim]templates changed:[/] {escape(changed)}",
            soft_wrap=True,
        )
    for line in hist.skipped:
        err.print(f"[yellow]skipped[/] {escape(line)}")


def print_template_history(label: str, rows: list[TemplateRow]) -> None:
    table = Table(title=f"template {escape(label)}", title_justify="left", header_style="bold")
    for name in ("date", "run", "commit", "sha256", "changed", "cells", "pass"):
        table.add_column(name, justify="right" if name in ("cells", "pass") else "left")
    for row in rows:
        changed = "" if row.changed is None else ("[yellow]yes[/]" if row.changed else "no")
        table.add_row(
            escape(row.run.date),
            escape(row.run.folder.name),
            escape(row.run.commit or "—"),
            row.sha256[:12],
            changed,
            str(row.rate.cells),
            _rate(row.rate),
        )
    out.print(table)


def print_gates(outcome: Outcome, *, to_stderr: bool = False) -> None:
    """One line per gate; failures always go to stderr as well, so CI logs show the reason."""
    for gate in outcome.gates:
        mark = "[green]✓[/]" if gate.passed else "[red]✗[/]"
        line = f"{mark} gate {escape(gate.reason)}"
        # soft_wrap: one line per reason whatever the terminal width, for CI logs and grep
        if gate.passed:
            (err if to_stderr else out).print(line, soft_wrap=True)
        else:
            err.print(line, soft_wrap=True)
    if outcome.comparison is not None and not to_stderr:
        c = outcome.comparison.counts
        out.print(
            f"vs baseline {escape(str(outcome.comparison.a.folder))}: "
            f"{c.get('regression', 0)} regressions, {c.get('fix', 0)} fixes, "
            f"{c.get('changed', 0)} changed outputs "
            f"({escape(str(outcome.comparison.html_path))})"
        )
    if outcome.junit is not None and not to_stderr:
        out.print(f"junit: {escape(str(outcome.junit))}")
