"""The commands around a project and its suites that run no test: `init`, `validate`, `render`,
`trust`, `models`, `schema` and `tune`.

Registered on the app, in help order, by promptlab/cli/__init__.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from promptlab.cli.options import (
    AllowCodeOpt,
    FilterOpt,
    LimitOpt,
    ModelOpt,
    OutputFormat,
    SkipOpt,
    SuiteArg,
)


def init(
    folder: Annotated[Path, typer.Argument(help="Where to scaffold (default: here)")] = Path(),
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files")] = False,
) -> int:
    """Scaffold prompts/, evals/ and an example suite."""
    from promptlab import console, core

    for path in core.init(folder, force):
        console.out.print(f"created {console.escape(str(path))}")
    console.out.print(
        f"next: promptlab run {console.escape(str(folder / 'evals' / 'starter.yaml'))}"
    )
    return 0


def validate(
    suite: SuiteArg,
    model: ModelOpt = None,
    allow_code: AllowCodeOpt = False,
    skip_unsupported: SkipOpt = False,
) -> int:
    """Check a suite without loading a model or running its code: schema, files, templates,
    variables, checks. (--allow-code only changes the note on what `run` would do;
    --skip-unsupported previews what `run --skip-unsupported` leaves out.)"""
    from promptlab import console, core

    plan = core.prepare(
        suite, model=model, allow_code=allow_code, skip_unsupported=skip_unsupported
    )
    console.print_notes(plan.suite.notes)
    console.print_validate(plan, suite)
    return 0


def render(
    suite: SuiteArg,
    model: ModelOpt = None,
    filter_pattern: FilterOpt = None,
    limit: LimitOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print cells as JSON")] = False,
    allow_code: AllowCodeOpt = False,
) -> int:
    """Show the exact prompts (and chat messages) each model would receive; runs no user code."""
    from promptlab import console, core

    plan = core.prepare(
        suite, model=model, filter_pattern=filter_pattern, limit=limit, allow_code=allow_code
    )
    console.print_notes(plan.suite.notes)
    console.print_render(plan, as_json)
    return 0


def trust(
    folder: Annotated[
        Path | None, typer.Argument(help="A folder of the project (default: here)")
    ] = None,
    revoke: Annotated[bool, typer.Option("--revoke", help="Stop trusting the project")] = False,
    list_all: Annotated[bool, typer.Option("--list", help="List the trusted projects")] = False,
) -> int:
    """Let `promptlab run` execute this project's Python checks without --allow-code.

    The trust is kept in your own config folder, outside every project, so no suite or project
    file can grant it.
    """
    from promptlab import consent, console
    from promptlab.errors import InputError
    from promptlab.files import find_project_root

    if list_all:
        if folder is not None or revoke:
            raise InputError(
                "--list takes no folder and no --revoke", hint="promptlab trust --list"
            )
        projects = consent.trusted()
        for name, record in sorted(projects.items()):
            console.out.print(
                console.escape(f"{name}  (since {record.get('trusted_at', '?')})"), soft_wrap=True
            )
        if not projects:
            console.err.print("no trusted projects (promptlab trust [DIR])", markup=False)
        return 0
    start = (folder or Path.cwd()).expanduser()
    if not start.is_dir():
        raise InputError(f"{start}: not a folder", hint="name a folder of the project")
    root = find_project_root(start)
    if revoke:
        removed = consent.revoke(root)
        console.out.print(
            console.escape(f"no longer trusted: {root}" if removed else f"was not trusted: {root}")
        )
        return 0
    file = consent.trust(root)
    console.out.print(
        console.escape(
            f"trusted {root}: `promptlab run` may now execute its Python code (stored in {file}; "
            "undo with promptlab trust --revoke)"
        ),
        soft_wrap=True,
    )
    return 0


def models(
    output_format: Annotated[
        OutputFormat,
        typer.Option("--format", help="text, or json: one object per model on stdout"),
    ] = OutputFormat.text,
) -> int:
    """List every model in sight: bundled, Ollama, the hub cache, LM Studio, GGUF files."""
    from promptlab import console, core
    from promptlab.files import find_project_root

    rows = core.list_models(find_project_root(Path.cwd()))
    console.print_models(rows, as_json=output_format is OutputFormat.json)
    return 0


def schema() -> int:
    """Print the JSON Schema of suite files (for editor validation and completion)."""
    import json

    from promptlab import core

    print(json.dumps(core.suite_schema(), indent=2))
    return 0


def tune(
    model: Annotated[str, typer.Argument(help="Bundled alias (smollm2, gemma3) or .gguf path")],
    prompt_tokens: Annotated[
        int, typer.Option("--prompt-tokens", min=1, help="Prompt length measured")
    ] = 256,
    gen_tokens: Annotated[
        int, typer.Option("--gen-tokens", min=1, help="Tokens generated per measurement")
    ] = 64,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Rounds (medians)")] = 3,
    threads: Annotated[
        str | None,
        typer.Option("--threads", help="Thread counts, e.g. 1,2 (default: 1..usable CPUs, ≤4)"),
    ] = None,
) -> int:
    """Measure prompt and generation speed by thread count and batch size; suggest settings."""
    from promptlab import console, core

    with console.TuneProgress() as progress:
        result = core.tune(
            model,
            prompt_tokens=prompt_tokens,
            gen_tokens=gen_tokens,
            repeats=repeats,
            threads=threads,
            progress=progress,
        )
    console.print_tune(result)
    return 0
