"""The Typer app, its root callback, and `main`: the one place where errors become messages and
exit codes. The commands live in their group's module and are registered on `app` by
`promptlab/cli/__init__.py`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

app = typer.Typer(
    name="promptlab",
    help="A lab for prompt engineering on local quantized models (llama.cpp).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# Module-level because Typer, not main(), calls the commands: what main() was given and what the
# root callback parsed, for the commands that record the command line or honour --debug.
_state = {"debug": False}
_argv: list[str] = []  # the command line as given to main(), recorded in the run manifest


def command_line() -> list[str]:
    """The command line as typed, for the run manifest."""
    return ["promptlab", *_argv]


def debug_requested() -> bool:
    return _state["debug"] or "--debug" in _argv


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors")] = False,
) -> None:
    _state["debug"] = debug


def main(argv: list[str] | None = None) -> None:
    """Entry point: the one place where errors become messages and exit codes."""
    from typer.exceptions import TyperException

    from promptlab.errors import PromptlabError
    from promptlab.termsafe import error_lines

    args = sys.argv[1:] if argv is None else argv
    _argv[:] = args
    try:
        command = typer.main.get_command(app)
        code = command.main(args=args, prog_name="promptlab", standalone_mode=False)
    except TyperException as exc:  # usage errors: bad option, missing argument
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            print(f"error: {exc.format_message()}", file=sys.stderr)
        code = 2 if exc.exit_code == 1 else exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        code = 130
    except PromptlabError as exc:
        if _state["debug"] or "--debug" in args:
            raise
        for line in error_lines(exc):  # one line per problem (several when a suite has several)
            print(line, file=sys.stderr)
        code = int(exc.exit_code)
    except Exception as exc:
        if _state["debug"] or "--debug" in args:
            raise
        print(*error_lines(exc), file=sys.stderr)
        code = 1
    sys.exit(int(code or 0))
