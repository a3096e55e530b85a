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

    def lines(self) -> list[str]:
        """What the CLI prints, one `error:` line each: a single line unless several problems
        were found at once (see Problems)."""
        return [self.one_line()]


class InputError(PromptlabError):
    """Bad suite, template, test file, model path or argument: exit 2, nothing written."""

    exit_code = ExitCode.BAD_INPUT


class Unsupported(InputError):
    """A promptfoo feature that promptlab does not run (a `cost` or `javascript` check, a
    JavaScript transform, a refused promptfoo key). Unlike other bad input, `--skip-unsupported`
    can leave out what uses it and run the rest."""


SKIP_HINT = "or leave it out and run the rest with --skip-unsupported"


class Problems(InputError):
    """Every problem found in one suite, so a user fixes them all in one round. Each keeps its own
    `file:line: field: problem; fix` line; the last line counts them."""

    def __init__(self, problems: list[InputError], file: str) -> None:
        self.problems = problems
        unsupported = sum(isinstance(p, Unsupported) for p in problems)
        hint = None
        if unsupported:
            what = "all" if unsupported == len(problems) else str(unsupported)
            them = "it" if unsupported == 1 else "them"
            hint = f"{what} unsupported: --skip-unsupported leaves {them} out and runs the rest"
        super().__init__(f"{len(problems)} problems in {file}", hint=hint)

    def one_line(self) -> str:
        # Where one line is all there is room for (str(), the manifest): every problem, in order.
        return " | ".join(self.lines())

    SHOWN = 30  # a thousand tests missing one variable need not print a thousand lines

    def lines(self) -> list[str]:
        shown = [p.one_line() for p in self.problems[: self.SHOWN]]
        if len(self.problems) > self.SHOWN:
            shown.append(f"… and {len(self.problems) - self.SHOWN} more")
        return [*shown, super().one_line()]


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
