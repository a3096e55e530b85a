"""`promptlab optimize`: the search over a prompt's demos, instructions, variables and params,
or the resumption of an interrupted one.

Registered on the app, in help order, by promptlab/cli/__init__.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from promptlab.cli.app import command_line
from promptlab.cli.options import AllowCodeOpt, CacheDbOpt, ModelOpt, NoCacheOpt


def optimize(
    suite: Annotated[
        Path | None, typer.Argument(help="Suite file with an optimize: section (not with --resume)")
    ] = None,
    prompt: Annotated[
        str | None, typer.Option("--prompt", "-p", help="Label of the prompt to optimize")
    ] = None,
    budget: Annotated[
        int | None, typer.Option("--budget", min=1, help="Model calls at most (all included)")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split and the search")] = 0,
    model: ModelOpt = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Run folder (default: results/<suite>-optimize-<time>)"
        ),
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Finish this interrupted optimization")
    ] = None,
    no_cache: NoCacheOpt = False,
    cache_db: CacheDbOpt = None,
    allow_code: AllowCodeOpt = False,
) -> int:
    """Search the prompt's demos, instructions, variables and params (the suite's optimize:
    section) and declare a winner only when held-out tests show it is better."""
    from promptlab import core
    from promptlab import optimize as opt
    from promptlab.console.optimize import OptimizeBar, print_result
    from promptlab.errors import ExitCode, InputError

    argv = command_line()
    with OptimizeBar() as bar:
        if resume is not None:
            given = [
                n
                for n, v in (
                    ("SUITE", suite),
                    ("--prompt", prompt),
                    ("--budget", budget),
                    ("--model", model),
                    ("-o", output),
                )
                if v is not None
            ]
            if given:
                raise InputError(
                    f"--resume reuses the interrupted optimization's settings; drop {', '.join(given)}",
                    hint=f"promptlab optimize --resume {resume}",
                )
            result = opt.resume(resume, allow_code=allow_code, argv=argv, progress=bar.callbacks())
        else:
            if suite is None:
                raise InputError(
                    "missing the suite file", hint="promptlab optimize evals/x.yaml --prompt LABEL"
                )
            result = opt.optimize(
                suite,
                prompt=prompt,
                budget=budget,
                seed=seed,
                model=model,
                out=output,
                cache=core.CacheOptions(use=not no_cache, path=cache_db),
                allow_code=allow_code,
                argv=argv,
                progress=bar.callbacks(),
            )
    print_result(result)
    if result.error is not None:
        raise result.error
    if result.status == "interrupted":
        return ExitCode.INTERRUPTED
    return 0
