# Over 600 lines: every terminal view in one place, so that only it and cli/ import rich.
"""Terminal views (rich). Presentation only: no decisions about runs live here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape as _markup_escape
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from promptlab.termsafe import json_visible, visible

if TYPE_CHECKING:
    from promptlab.core import RunResult
    from promptlab.engine.tune import TuneResult
    from promptlab.models.catalog import ModelRow
    from promptlab.plan import Plan
    from promptlab.reports.compare import Comparison
    from promptlab.reports.gates import Outcome
    from promptlab.reports.history import History, Rate, TemplateRow
    from promptlab.reports.tables import ReportFiles


class _Console(Console):
    """A rich Console that wraps text only on a terminal. Piped into a file, a pager or a CI log,
    rich would fold every line at 80 columns mid-sentence; there a line stays one line (tables
    and panels keep their layout)."""

    @property
    def soft_wrap(self) -> bool:
        return self._soft_wrap or not self.is_terminal

    @soft_wrap.setter
    def soft_wrap(self, value: bool) -> None:
        self._soft_wrap = value


out = _Console(highlight=False, soft_wrap=False)
err = _Console(stderr=True, highlight=False)


def escape(text: str) -> str:
    """Text from a suite, a model or a file, ready for rich: control characters shown as escapes
    (termsafe.visible) and rich markup escaped. Every such string printed here goes through it."""
    return _markup_escape(visible(text))


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


def _rate_style(rate: float) -> str:
    return "green" if rate >= 0.8 else "yellow" if rate >= 0.5 else "red"


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
            "[dim]no checks[/]" if rate is None else f"[{_rate_style(rate)}]{rate:.0%}[/]",
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


def print_notes(notes: list[str]) -> None:
    for note in notes:
        err.print(f"[cyan]note:[/] {escape(note)}")


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


def print_validate(plan: Plan, path: Path) -> None:
    s = plan.suite
    out.print(
        f"[green]✓[/] {escape(str(path))}: {len(s.prompts)} prompt(s) × {len(s.tests)} test(s) × "
        f"{len(plan.models)} model(s) = {plan.total_cells} cells"
    )
    skipped = skipped_summary(s.skipped)
    if skipped is not None:
        out.print(f"[yellow]{escape(skipped.replace('skipped', 'would be skipped', 1))}[/]")
    for m in plan.models:
        where = m.path.name if isinstance(m.path, Path) else m.path
        out.print(
            f"  model {escape(m.label)}: {escape(str(where))} · chat template: {escape(m.chat_source)}"
        )


def print_render(plan: Plan, as_json: bool) -> None:
    if as_json:
        cells = [
            {
                "cell_id": c.id,
                "model": c.model.label,
                "prompt": c.prompt.label,
                "test": c.test.name,
                "vars": c.test.vars,
                "messages": [m.as_dict() for m in c.messages],
                "chat_template": c.model.chat_source if c.chat_applied else None,
                "text": c.text,
                "add_bos": c.add_bos,
                "checks": [k.describe() for k in c.checks],
            }
            for c in plan.cells
        ]
        print(json_visible(json.dumps(cells, ensure_ascii=False, indent=2, default=str)))
        return
    for c in plan.cells:
        title = f"{escape(c.prompt.label)} × {escape(c.test.name)} × {escape(c.model.label)}"
        body = []
        if c.chat_applied:
            for m in c.messages:
                body.append(f"[bold cyan]{m.role}[/]: {escape(m.content)}")
            body.append(f"[dim]── chat template: {escape(c.model.chat_source)} ──[/]")
        body.append(escape(c.text))
        if c.checks:
            body.append("[dim]checks: " + escape("; ".join(k.describe() for k in c.checks)) + "[/]")
        # soft_wrap off: a panel's text must wrap inside it, piped or not
        out.print(
            Panel("\n".join(body), title=title, title_align="left", expand=True), soft_wrap=False
        )
    out.print(f"{len(plan.cells)} of {plan.total_cells} cells rendered")


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if n < 10 * scale else f"{n / scale:.0f} {unit}"
    return f"{n} B"


def print_models(rows: list[ModelRow], as_json: bool = False) -> None:
    if as_json:
        data = [r.as_dict() for r in rows]
        print(json_visible(json.dumps(data, ensure_ascii=False, indent=2, default=str)))
        return
    # One block per model rather than a table: the name is what a suite's `path:` takes and the
    # path is long, so neither may be cut or folded mid-word at 80 columns.
    for r in rows:
        facts = [r.source]
        if r.size_bytes:
            facts.append(_size(r.size_bytes))
        facts += [x for x in (r.quantization, r.architecture) if x]
        if r.n_layer:
            facts.append(f"{r.n_layer} layers")
        if r.chat_template is not None:
            facts.append(f"chat {r.template_name or 'yes'}" if r.chat_template else "chat no")
        facts.append("in-process yes" if r.runnable else "in-process no")
        out.print(f"[bold]{escape(r.name)}[/]  " + escape(" · ".join(facts)), soft_wrap=True)
        for line in (r.path, r.note, f"cannot run in-process: {r.why_not}" if r.why_not else None):
            if line:
                out.print(f"  [dim]{escape(line)}[/]", soft_wrap=True)
    if not rows:
        out.print("no models found")


class TuneProgress:
    """A progress bar on stderr while `tune` measures; callable as (done, total)."""

    def __init__(self) -> None:
        self.bar = Progress(
            TextColumn("[bold]measuring"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            refresh_per_second=4,  # the bar must not compete with llama.cpp for the CPUs
        )
        self.task = self.bar.add_task("measuring", total=None)
        self.started = False

    def __enter__(self) -> TuneProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            self.bar.stop()

    def __call__(self, done: int, total: int) -> None:
        if not self.started:
            self.started = True
            self.bar.start()
        self.bar.update(self.task, completed=done, total=total)


def print_tune(result: TuneResult) -> None:
    best_t, best_b = result.best_prompt
    best_gen = result.best_gen_threads
    s = result.settings
    table = Table(
        title=(
            f"{escape(result.model)}: tokens/s, medians of {result.repeats} round(s); "
            f"prompt {result.prompt_tokens} tokens, generation {result.gen_tokens} tokens"
        ),
        title_justify="left",
        header_style="bold",
    )
    table.add_column("threads", justify="right")
    for b in result.batches:
        table.add_column(f"prompt\nn_batch {b}", justify="right")
    table.add_column("generate", justify="right")
    for t in result.threads:
        cells = []
        for b in result.batches:
            text = f"{result.pp_median(t, b):.1f}"
            cells.append(f"[bold green]{text}[/]" if (t, b) == (best_t, best_b) else text)
        gen = f"{result.tg_median(t):.1f}"
        cells.append(f"[bold green]{gen}[/]" if t == best_gen else gen)
        table.add_row(str(t), *cells)
    out.print(table)
    if result.skipped_batches:
        skipped = ", ".join(str(b) for b in result.skipped_batches)
        out.print(
            f"[dim]n_batch {skipped} not measured: larger than the {result.prompt_tokens}-token "
            "prompt (raise --prompt-tokens)[/]"
        )
    out.print(
        f"[dim]engine time from the perf counters; model loaded once (flash_attn "
        f"{'on' if s.flash_attn else 'off'}, n_gpu_layers "
        f"{'auto' if s.n_gpu_layers is None else s.n_gpu_layers})[/]"
    )
    if result.others_share is not None:
        busy = result.others_share > 0.1
        out.print(
            f"[{'yellow' if busy else 'dim'}]other processes used {result.others_share:.0%} of "
            "the CPUs meanwhile"
            + ("; rerun on a quieter machine to trust these numbers" if busy else "")
            + "[/]"
        )
    out.print(f"best for generation: n_threads {best_gen} ({result.tg_median(best_gen):.1f} tok/s)")
    out.print(
        f"best for prompts: n_threads_batch {best_t}, n_batch {best_b} "
        f"({result.pp_median(best_t, best_b):.1f} tok/s; the largest n_batch within 5% of the "
        "fastest)"
    )
    out.print("paste into the suite:")
    out.print(escape(result.snippet()), soft_wrap=True)


# --- compare, history, baseline, gates ---------------------------------------------------

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
    return f"[{_rate_style(value)}]{value:.0%}[/]"


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
