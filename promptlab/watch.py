"""`promptlab run SUITE --watch`: run again whenever a file the suite reads changes.

Each pass is a whole `promptlab run` into a run folder of its own, so every pass leaves a complete
folder; the result cache makes a pass after an edit recompute only the cells whose prompt or
settings changed. After each complete pass, what changed since the previous complete pass is
printed from promptlab.reports.compare's cell-by-cell matching: new failures, fixes, changed outputs and
pass-rate deltas per variant.

Which files: those the last suite that loaded read (the manifest's `files`: the suite, its
templates and their includes, test, var, Python check and transform files, and other referenced
files), watched in their own folders, not recursively, and filtered to exactly those files. While the suite does not load (a YAML error,
an undefined variable, a missing file) the error is printed on one line and any file in the
project outside results/ and hidden folders triggers a retry, since the fix may be a file the
suite does not read yet.

Ctrl-C exits 130, as `run` does: between passes the last pass's folder is complete; during a pass
the cells stop and that folder is left as an interrupted `run` leaves it (reports written,
`promptlab run --resume` finishes it).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptlab import console
from promptlab.engine.store import read_manifest
from promptlab.errors import ExitCode, PromptlabError
from promptlab.files import find_project_root
from promptlab.reports import compare as cmp
from promptlab.termsafe import error_lines, visible

if TYPE_CHECKING:
    from promptlab.core import RunResult

# How long one wait inside watchfiles lasts before it hands back an empty set. The first one
# tells us the watcher is in place, so "watching" is printed only once an edit can be seen.
POLL_MS = 250
SHOWN = 20  # cells listed per kind in a change report; compare.csv-style detail is `compare`'s


def suite_files(folder: Path) -> frozenset[Path]:
    """Every file the run's suite read, as absolute resolved paths (from its manifest)."""
    manifest = read_manifest(folder)
    root = Path(str(manifest.get("project_root") or "."))
    return frozenset((root / str(name)).resolve() for name in manifest.get("files") or {})


def in_project(path: Path, root: Path) -> bool:
    """A project file an edit might fix a broken suite with: not under results/ (the runs
    themselves), hidden folders (.git, .promptlab's cache) or __pycache__."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return False
    if not parts or parts[0] == "results":
        return False
    return not any(p.startswith(".") or p == "__pycache__" for p in parts)


@dataclass
class Changes:
    """What changed between two complete passes."""

    since: int  # the pass compared against
    new_failures: list[cmp.CellDiff]  # passed before and not now, or new cells that fail
    fixes: list[cmp.CellDiff]
    changed: int  # same outcome, different output (or fail <-> error)
    added: int  # cells only in the new pass (a new test or prompt)
    removed: int
    deltas: list[cmp.VariantDelta]  # variants whose pass rate moved, over the matched cells

    @property
    def none(self) -> bool:
        return not (
            self.new_failures
            or self.fixes
            or self.changed
            or self.added
            or self.removed
            or self.deltas
        )


def changes(before: Path, after: Path, since: int) -> Changes:
    result = cmp.compare_runs(cmp.load_run(before), cmp.load_run(after))
    added = result.of("only_b")
    failing = [d for d in added if d.row.get("status") in ("fail", "error")]
    return Changes(
        since,
        [*result.regressions, *failing],
        result.fixes,
        len(result.of("changed")),
        len(added),
        len(result.of("only_a")),
        [v for v in result.variants if v.points],
    )


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _why(d: cmp.CellDiff) -> str:
    row = d.b or {}
    text = str(row.get("error") or "") if row.get("status") == "error" else ""
    if not text:
        text = "; ".join(
            f"{c.get('check')}: {c.get('reason')}" for c in row.get("checks") or [] if not c["pass"]
        )
    text = " ".join(text.split())
    return text if len(text) <= 100 else text[:99] + "…"


def print_changes(ch: Changes) -> None:
    out, esc = console.out, console.escape
    if ch.none:
        out.print(f"no changes since pass {ch.since}: every cell has the same outcome and output")
        return
    parts = [
        _count(len(ch.new_failures), "new failure", "new failures"),
        _count(len(ch.fixes), "fix", "fixes"),
        _count(ch.changed, "other changed output", "other changed outputs"),
    ]
    if ch.added:
        parts.append(_count(ch.added, "cell added", "cells added"))
    if ch.removed:
        parts.append(_count(ch.removed, "cell removed", "cells removed"))
    out.print(f"[bold]changes since pass {ch.since}:[/] " + ", ".join(parts))
    for items, tag in ((ch.new_failures, "[red]new failure[/]"), (ch.fixes, "[green]fixed[/]")):
        for d in items[:SHOWN]:
            why = _why(d) if tag.startswith("[red]") else ""
            out.print(f"  {tag} {esc(d.label)} · {esc(d.test)}" + (f": {esc(why)}" if why else ""))
        if len(items) > SHOWN:
            out.print(f"  [dim]… and {len(items) - SHOWN} more[/]")
    for v in ch.deltas:
        style = "red" if v.points < 0 else "green"
        out.print(
            f"  pass rate {esc(v.label)}: {v.a_rate:.0%} → {v.b_rate:.0%} "
            f"([{style}]{v.points:+.0f} points[/])"
        )


class Watcher:
    """One watchfiles watcher, kept while the watched folders stay the same, so that a file saved
    during a pass is reported by the next wait instead of lost."""

    def __init__(self) -> None:
        self._gen: Generator[set[tuple[Any, str]], None, None] | None = None
        self._key: tuple[frozenset[Path], bool] | None = None
        self.accept: Callable[[Path], bool] = lambda _path: False

    def arm(self, folders: frozenset[Path], recursive: bool) -> set[Path]:
        """Watch `folders` from now on; returns what changed while the watcher started."""
        import watchfiles  # noqa: PLC0415 - only in watch mode

        if (folders, recursive) == self._key:
            return set()
        self.close()
        self._gen = watchfiles.watch(
            *sorted(folders),
            watch_filter=self._filter,
            recursive=recursive,
            rust_timeout=POLL_MS,
            yield_on_timeout=True,
            raise_interrupt=True,
        )
        self._key = (folders, recursive)
        return self._next()  # watchfiles starts watching on the first next()

    def wait(self) -> set[Path]:
        """Block until an accepted file changes (KeyboardInterrupt on Ctrl-C)."""
        while True:
            found = self._next()
            if found:
                return found

    def close(self) -> None:
        if self._gen is not None:
            self._gen.close()
        self._gen, self._key = None, None

    def _filter(self, _change: Any, path: str) -> bool:
        return self.accept(Path(path).resolve())

    def _next(self) -> set[Path]:
        assert self._gen is not None
        return {Path(p).resolve() for _, p in next(self._gen)}


def _print_error(exc: BaseException) -> None:
    for line in error_lines(exc):  # the CLI's own format (promptlab.cli.app.main)
        print(line, file=sys.stderr)


def _one_pass(run_pass: Callable[[], RunResult], debug: bool) -> RunResult | None:
    """One `run`; None when it stopped before it had a run folder (bad input, a bug)."""
    try:
        result = run_pass()
    except PromptlabError as exc:
        if debug:
            traceback.print_exc()
        _print_error(exc)
        return None
    except Exception as exc:  # a bug: reported like the CLI does, and the watch goes on
        if debug:
            traceback.print_exc()
        _print_error(exc)
        return None
    console.print_notes(result.notes[result.notes_shown :])
    console.print_run(result)
    if result.error is not None:
        _print_error(result.error)
    return result


def _fix_filter(known: frozenset[Path], root: Path) -> Callable[[Path], bool]:
    return lambda path: path in known or in_project(path, root)


def _shown(paths: set[Path], root: Path) -> str:
    names = []
    for path in sorted(paths):
        try:
            names.append(path.relative_to(root).as_posix())
        except ValueError:
            names.append(str(path))
    return ", ".join(names)


def watch(suite: Path, run_pass: Callable[[], RunResult], *, debug: bool = False) -> int:
    """Run `run_pass` (one `promptlab run` of `suite`) now and after every change to the files
    it reads, until Ctrl-C; returns the exit code (130)."""
    root = find_project_root(suite.resolve().parent)
    watcher = Watcher()
    known: frozenset[Path] = frozenset({suite.resolve()})
    last: tuple[int, Path] | None = None  # the last complete pass: its number and folder
    n = 0
    try:
        while True:
            n += 1
            console.out.print(f"[bold]── pass {n}[/] [dim]{datetime.now():%H:%M:%S}[/]")
            result = _one_pass(run_pass, debug)
            if result is not None and result.status == "interrupted":
                console.err.print(
                    visible(
                        f"pass {n} was interrupted: `promptlab run --resume {result.folder}` "
                        "finishes it"
                    ),
                    markup=False,
                )
                return ExitCode.INTERRUPTED
            if result is not None:
                known = suite_files(result.folder) or known
                if result.status == "complete":
                    if last is not None:
                        print_changes(changes(last[1], result.folder, last[0]))
                    last = (n, result.folder)
            folders = frozenset(p.parent for p in known if p.parent.is_dir())
            if result is not None and folders:
                watcher.accept = known.__contains__
                pending = watcher.arm(folders, recursive=False)
                what = f"{_count(len(known), 'file', 'files')} of the suite"
            else:
                watcher.accept = _fix_filter(known, root)
                pending = watcher.arm(frozenset({root}), recursive=True)
                what = "the project for a fix"
            console.out.print(f"[dim]watching {what} (Ctrl-C to stop)[/]")
            sys.stdout.flush()
            changed = pending or watcher.wait()
            console.out.print(f"changed: {console.escape(_shown(changed, root))}")
    except KeyboardInterrupt:
        where = f"; the last complete pass is {last[1]}" if last is not None else ""
        console.err.print(visible(f"stopped watching{where}"), markup=False)
        return ExitCode.INTERRUPTED
    finally:
        watcher.close()
