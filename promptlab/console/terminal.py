"""What every terminal view prints with: the two consoles (stdout for results, stderr for
progress and notes), the escaping of outside text, and the colours of a pass rate."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape as _markup_escape

from promptlab.termsafe import visible


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


def rate_style(rate: float) -> str:
    """A pass rate's colour: green from 80% (as the report page tints it), yellow from 50%."""
    return "green" if rate >= 0.8 else "yellow" if rate >= 0.5 else "red"


def print_notes(notes: list[str]) -> None:
    for note in notes:
        err.print(f"[cyan]note:[/] {escape(note)}")
