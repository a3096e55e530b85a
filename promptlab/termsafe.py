"""Text from suites and models, made safe to print on a terminal.

Labels, vars, file names, model outputs and error messages can hold escape sequences (a suite
from the internet, a model that emits `\\x1b]52;…`): printed raw, they can clear the screen, set
the window title, write to the clipboard or hide text. Everything promptlab prints that came
from outside passes through `visible`, which shows such characters as Python-style escapes:
C0 controls other than newline and tab, DEL, C1 controls, and the bidirectional overrides that
can reorder what a reader sees ("Trojan Source").
"""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_ONE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str, *, one_line: bool = False) -> str:
    """`text` with every control and bidi-override character written as an escape; with
    `one_line`, newlines and tabs too."""
    return (_UNSAFE_ONE_LINE if one_line else _UNSAFE).sub(_escape, text)


def json_visible(text: str) -> str:
    """A JSON document with DEL, C1 and bidi characters as \\u escapes (json.dumps leaves them
    raw); still the same JSON value."""
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def error_lines(exc: BaseException) -> list[str]:
    """What the command line prints for an error that reached it, one safe line each: a
    PromptlabError's own lines (several when a suite has several problems), else an internal
    error that names --debug. `promptlab.cli.app.main` and `run --watch` both print these."""
    from promptlab.errors import PromptlabError  # noqa: PLC0415 - errors sits below; no cycle at import

    if isinstance(exc, PromptlabError):
        lines = exc.lines()
    else:
        lines = [
            f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for a traceback)"
        ]
    return [f"error: {visible(line, one_line=True)}" for line in lines]
