"""The views of the project commands: `validate`, `render`, `models` and `tune`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from promptlab.console.run import skipped_summary
from promptlab.console.terminal import err, escape, out
from promptlab.termsafe import json_visible

if TYPE_CHECKING:
    from promptlab.engine.tune import TuneResult
    from promptlab.models.catalog import ModelRow
    from promptlab.plan import Plan


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
