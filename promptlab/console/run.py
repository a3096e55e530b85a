"""The views of `promptlab run` and `promptlab report`: the progress bar, the summary table,
the verdicts and the closing lines."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from promptlab.console.terminal import err, escape, out, rate_style

if TYPE_CHECKING:
    from promptlab.core import RunResult
    from promptlab.reports.tables import ReportFiles


class RichProgress:
    """A progress bar on stderr, so stdout stays clean for scripts."""

    def __init__(self) -> None:
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "[green]✓{task.fields[ok]}[/] [red]✗{task.fields[bad]}[/] [yellow]!{task.fields[errors]}[/]"
                "{task.fields[unchecked]}"
            ),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=False,
            refresh_per_second=4,  # the bar must not compete with llama.cpp for two cores
        )
        self.task = self.bar.add_task("starting", total=None, ok=0, bad=0, errors=0, unchecked="")
        self.counts = {"pass": 0, "fail": 0, "error": 0, "unchecked": 0}
        self.started = False

    def __enter__(self) -> RichProgress:
        # The bar appears in start(), once the suite is checked: an input error prints alone.
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            self.bar.stop()

    def start(self, total: int) -> None:
        self.started = True
        self.bar.start()
        self.bar.update(self.task, total=total)

    def model_loading(self, label: str) -> None:
        self.bar.update(self.task, description=f"loading {escape(label)}")

    def model_loaded(self, label: str, facts: dict[str, Any]) -> None:
        rt = facts.get("runtime", {})
        gpu = (
            f"GPU offload: {rt.get('layers_offloaded', 0)}/{rt.get('layers_total') or rt.get('n_layer', '?')} layers on {rt.get('device', 'CPU')}"
            if rt.get("gpu_offload_supported")
            else "CPU build (no GPU offload)"
        )
        if rt.get("backend") == "openai":  # the server decides where it runs
            gpu = f"served at {rt.get('base_url')}"
        self.bar.console.print(
            f"[dim]model[/] [bold]{escape(label)}[/] {escape(str(facts.get('quantization', '')))} · "
            f"{escape(gpu)} · loaded in {facts.get('load_ms', 0):.0f} ms · chat template: {escape(str(facts.get('chat_template_source')))}"
        )
        requested = rt.get("n_gpu_layers_requested", 0)
        if (
            requested
            and not rt.get("gpu_offload_supported")
            and facts.get("load_settings", {}).get("n_gpu_layers") is not None
        ):
            self.bar.console.print(
                '[yellow]warning:[/] GPU layers requested but this llama-cpp-python build is CPU-only; reinstall with CMAKE_ARGS="-DGGML_CUDA=on" ./dev setup'
            )
        self.bar.update(self.task, description=escape(label))

    def cell_done(self, row: dict[str, Any]) -> None:
        self.counts[row["status"]] += 1
        self.bar.update(
            self.task,
            advance=1,
            ok=self.counts["pass"],
            bad=self.counts["fail"],
            errors=self.counts["error"],
            # outputs with no checks: shown once there are any, as neither ✓ nor ✗
            unchecked=f" [dim]·{n}[/]" if (n := self.counts["unchecked"]) else "",
        )


def _interval(rec: dict[str, Any]) -> str:
    lo, hi = rec.get("pass_rate_lo"), rec.get("pass_rate_hi")
    if lo is None or hi is None:
        return ""
    return f"{float(lo) * 100:.0f}–{float(hi) * 100:.0f}"


def summary_table(reports: ReportFiles) -> Table:
    table = Table(title="Summary", title_justify="left", header_style="bold")
    for name in ("model", "prompt"):
        table.add_column(name, overflow="fold", min_width=8)
    unchecked = any(rec.get("unchecked") for rec in reports.summary)
    numbers = ("pass", "95% CI", "ok", "fail", "err", *(["no checks"] * unchecked))
    for name in (*numbers, "latency", "tok/s"):
        table.add_column(name, justify="right", no_wrap=True)
    for rec in reports.summary:
        rate = rec.get("pass_rate")
        lat = rec.get("mean_latency_ms")
        tps = rec.get("mean_tokens_per_s")
        table.add_row(
            escape(str(rec["model"])),
            escape(str(rec["prompt"]) + (f" [{rec['setting']}]" if rec.get("setting") else "")),
            # No check gated any output: there is no rate to show, least of all 100%.
            "[dim]no checks[/]" if rate is None else f"[{rate_style(rate)}]{rate:.0%}[/]",
            f"[dim]{_interval(rec)}[/]",
            str(rec["passed"]),
            str(rec["failed"]),
            str(rec["errors"]),
            *([str(rec.get("unchecked") or 0)] if unchecked else []),
            f"{lat:.0f} ms" if lat is not None else "",
            f"{tps:.1f}" if tps is not None else "",
        )
    return table


def _counts_line(cells: int, passed: int, failed: int, errors: int, unchecked: int) -> str:
    line = (
        f"{cells} cells: [green]{passed} passed[/], [red]{failed} failed[/], "
        f"[yellow]{errors} errors[/]"
    )
    if unchecked:
        line += f", [dim]{unchecked} with no checks (not counted as passed)[/]"
    return line


MAX_OTHER_VERDICTS = 6  # non-significant verdicts shown in the terminal; the CSV has them all


def print_verdicts(comparisons: list[dict[str, Any]]) -> None:
    """Every significant verdict, then the closest calls among the others (up to six)."""
    if not comparisons:
        return
    significant = [c for c in comparisons if c.get("significant")]
    others = sorted(
        (c for c in comparisons if not c.get("significant")),
        key=lambda c: 1.0 if c.get("p_holm") is None else float(c["p_holm"]),
    )
    shown = others[:MAX_OTHER_VERDICTS]
    groups = {c.get("group") for c in comparisons}
    out.print("[bold]Verdicts[/] [dim](paired over tests, Holm-adjusted p)[/]")
    grid = Table.grid(padding=(0, 1))  # wrapped verdicts keep their indent
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for c in [*significant, *shown]:
        mark = "[green]✓[/]" if c.get("significant") else "[dim]·[/]"
        where = (
            f" [dim]({escape(str(c['group']))})[/]" if len(groups) > 1 and c.get("group") else ""
        )
        grid.add_row(f" {mark}", f"{escape(str(c['verdict']))}{where}")
    out.print(grid)
    hidden = len(others) - len(shown)
    if hidden:
        out.print(f"[dim]   … {hidden} more without a detectable difference: comparisons.csv[/]")


def print_run(result: RunResult) -> None:
    if result.reports is None or (result.stats.cells == 0 and result.error is not None):
        return  # nothing ran: the error line says it all
    out.print(summary_table(result.reports))
    print_verdicts(result.reports.comparisons)
    s = result.stats
    status = {
        "complete": "",
        "interrupted": " [yellow](interrupted)[/]",
        "failed": " [red](failed)[/]",
    }[result.status]
    out.print(_counts_line(s.cells, s.passed, s.failed, s.errors, s.unchecked) + status)
    _print_skipped(result.folder)
    extra = []
    if s.cached:
        extra.append(f"{s.cached} from the cache")
    reuse = s.prefix_reuse()
    if reuse["prompt_tokens"]:
        extra.append(
            f"prompt tokens: {reuse['evaluated']:,} evaluated, {reuse['reused']:,} reused "
            f"({reuse['reused_share']:.0%})"
        )
    if extra:
        out.print("[dim]" + " · ".join(extra) + "[/]")
    out.print(
        f"report: [link=file://{result.reports.html.resolve()}]{escape(str(result.reports.html))}[/link]"
    )


def skipped_summary(items: Any) -> str | None:
    """`2 checks, 1 test skipped (--skip-unsupported): a partial run`, from the manifest's
    `skipped` list; None for a full run."""
    if not isinstance(items, list) or not items:
        return None
    counts: dict[str, int] = {}
    for item in items:
        what = str(item.get("what", "")) if isinstance(item, dict) else ""
        kind = what if what in ("check", "test", "prompt") else "key"
        kind = "test group" if what in ("every test", "tests of the file") else kind
        counts[kind] = counts.get(kind, 0) + 1
    parts = [f"{n} {kind}{'' if n == 1 else 's'}" for kind, n in counts.items()]
    return f"{', '.join(parts)} skipped (--skip-unsupported): a partial run, see the notes"


def _print_skipped(folder: Path) -> None:
    from promptlab.engine.store import read_manifest  # noqa: PLC0415
    from promptlab.errors import PromptlabError  # noqa: PLC0415

    try:
        text = skipped_summary(read_manifest(folder).get("skipped"))
    except PromptlabError:  # the run is stored already; this line only repeats the manifest
        return
    if text is not None:
        out.print(f"[yellow]{escape(text)}[/]")


def print_report(reports: ReportFiles) -> None:
    out.print(summary_table(reports))
    print_verdicts(reports.comparisons)
    t = reports.totals
    out.print(
        _counts_line(t["cells"], t["passed"], t["failed"], t["errors"], t.get("unchecked", 0))
    )
    _print_skipped(reports.html.parent)
    paths = (
        reports.results_csv,
        reports.summary_csv,
        reports.comparisons_csv,
        reports.html,
        *reports.spreadsheets,
    )
    for path in paths:
        if path is not None:
            out.print(f"wrote {escape(str(path))}", soft_wrap=True)  # whole, for copy and paste
