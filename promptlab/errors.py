"""The single error root. The CLI turns these into one-line messages and exit codes in one place.

Every message is meant to be read alone on one line, so it names where the problem is (file, line,
field) and what to do about it.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    RUNTIME = 1
    BAD_INPUT = 2
    ASSERTIONS_FAILED = 100  # promptfoo's convention, so CI scripts carry over
    INTERRUPTED = 130


class PromptlabError(Exception):
    """Base of every error promptlab reports to users. Subclasses pick the exit code."""

    exit_code: ExitCode = ExitCode.RUNTIME

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = self.message if not self.hint else f"{self.message}; {self.hint}"
        return " ".join(text.split())  # one line, whatever the pieces contained


class InputError(PromptlabError):
    """Bad suite, template, test file, model path or argument: exit 2, nothing written."""

    exit_code = ExitCode.BAD_INPUT


class BackendError(PromptlabError):
    """The model could not be loaded or run."""

    exit_code = ExitCode.RUNTIME


def location(path: object, line: int | None = None, field: str | None = None) -> str:
    """Format `file:line: field` the way editors and terminals can jump to."""
    text = str(path)
    if line is not None:
        text += f":{line}"
    if field:
        text += f": {field}"
    return text
