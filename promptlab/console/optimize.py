"""The terminal side of `promptlab optimize`: a progress bar over the budget on stderr, one line
per candidate as racing settles it, and the result (cli/ imports it; it is the rich side of
the optimize stage, as the rest of console/ is of core's)."""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from promptlab.console.terminal import err, escape, out
from promptlab.optimize.run import OptimizeProgress, OptimizeResult
from promptlab.optimize.search import CandidateRecord


class OptimizeBar:
    def __init__(self) -> None:
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("calls"),
            TimeElapsedColumn(),
            console=err,
            transient=False,
            refresh_per_second=4,  # the bar must not compete with llama.cpp for two cores
        )
        self.task = self.bar.add_task("starting", total=None)
        self.started = False

    def __enter__(self) -> OptimizeBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            self.bar.stop()

    def callbacks(self) -> OptimizeProgress:
        return OptimizeProgress(
            start=self.start,
            phase=self.phase,
            calls=self.calls,
            candidate=self.candidate,
            model_loaded=self.model_loaded,
        )

    def start(self, budget: int) -> None:
        self.started = True
        self.bar.start()
        self.bar.update(self.task, total=budget)

    def phase(self, text: str) -> None:
        shown = text if len(text) <= 60 else text[:59] + "…"
        self.bar.update(self.task, description=escape(shown))

    def calls(self, used: int) -> None:
        self.bar.update(self.task, completed=used)

    def model_loaded(self, record: dict[str, Any]) -> None:
        self.bar.console.print(
            f"[dim]model[/] [bold]{escape(str(record.get('label')))}[/] loaded in "
            f"{float(record.get('load_ms') or 0):.0f} ms"
        )

    def candidate(self, rec: CandidateRecord) -> None:
        mark = {"complete": "[green]●[/]", "pruned": "[dim]○[/]", "budget": "[yellow]·[/]"}
        self.bar.console.print(
            f" {mark.get(rec.status, '·')} {escape(rec.label)}  {escape(rec.text)}: "
            f"{rec.passed:g}/{rec.tests} validation tests ({100 * rec.pass_rate:.0f}%)"
            + ("" if rec.status == "complete" else f" [dim]{escape(rec.status)}[/]"),
            soft_wrap=True,
        )


def print_result(result: OptimizeResult) -> None:
    v = result.verdict
    if v is not None:
        style = "bold green" if v.better else "bold"
        out.print(f"[{style}]{escape(v.text)}[/]", soft_wrap=True)
    if result.search is not None:
        base = result.search.baseline
        out.print(
            escape(
                f"validation: the original {100 * base.pass_rate:.0f}% on {base.tests} tests; "
                f"{result.search.tried} candidates in {result.search.trials} trials"
            ),
            soft_wrap=True,
        )
    out.print(
        escape(
            f"calls: {result.used} of budget {result.budget} ({result.ran} ran on the model, "
            f"{result.from_cache} from the cache, {result.reused} stored earlier)"
        ),
        soft_wrap=True,
    )
    if result.written is not None:
        out.print(escape(f"winner written: {result.written}"), soft_wrap=True)
    elif result.best_template is not None:
        out.print(escape(f"best candidate (not a winner): {result.best_template}"), soft_wrap=True)
    if result.html is not None:
        out.print(escape(f"report: {result.html}"), soft_wrap=True)
    if result.status == "interrupted":
        err.print(
            escape(f"interrupted; resume with: promptlab optimize --resume {result.folder}"),
            soft_wrap=True,
        )
