"""`promptlab run` (and `eval`, promptfoo's name for it): one run of a suite, a resumed run, or
pass after pass under --watch; then the reports and the gates' verdict.

Registered on the app, in help order, by promptlab/cli/__init__.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from promptlab.cli.app import command_line, debug_requested
from promptlab.cli.options import (
    AllowCodeOpt,
    BaselineOpt,
    CacheDbOpt,
    FailUnderOpt,
    FilterOpt,
    FormatOpt,
    JunitOpt,
    LimitOpt,
    MaxRegressionOpt,
    ModelOpt,
    NoCacheOpt,
    OutputFormat,
    SkipOpt,
)
from promptlab.cli.outcome import conclude


def run(
    suite: Annotated[
        Path | None, typer.Argument(help="Suite file, e.g. evals/example.yaml (not with --resume)")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Run folder (default: results/<suite>-<time>)"),
    ] = None,
    model: ModelOpt = None,
    filter_pattern: FilterOpt = None,
    filter_prompt: Annotated[
        str | None, typer.Option("--filter-prompt", help="Regex on the prompt label")
    ] = None,
    filter_test: Annotated[
        str | None,
        typer.Option("--filter-test", help="Regex on the test description or its vars"),
    ] = None,
    limit: LimitOpt = None,
    sample: Annotated[
        int | None, typer.Option("--sample", help="N tests drawn at random (see --seed)")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for --sample")] = 0,
    failing: Annotated[
        Path | None,
        typer.Option("--failing", help="Rerun only the cells that failed in this earlier run"),
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Finish this interrupted run in place")
    ] = None,
    no_cache: NoCacheOpt = False,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Run every cell again and overwrite the cache")
    ] = False,
    cache_db: CacheDbOpt = None,
    allow_code: AllowCodeOpt = False,
    skip_unsupported: SkipOpt = False,
    fail_under: FailUnderOpt = None,
    max_regression: MaxRegressionOpt = None,
    baseline: BaselineOpt = None,
    junit: JunitOpt = None,
    output_format: FormatOpt = OutputFormat.text,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="auto|local|HOST:PORT",
            help="Run the cells on Ray actors (pip install 'promptlab[ray]'): auto joins the "
            "cluster `ray start` runs here, local starts one for this run; results and cache "
            "stay on this machine",
        ),
    ] = None,
    ray_actors: Annotated[
        int | None,
        typer.Option(
            "--ray-actors",
            help="At most N Ray actors per model (default: as many "
            "as the cluster's CPUs hold at the model's n_threads)",
        ),
    ] = None,
    watch_mode: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Run again whenever the suite or a file it reads changes (a new run folder per "
            "pass; the cache recomputes only changed cells); print what changed; Ctrl-C stops",
        ),
    ] = False,
) -> int:
    """Run every prompt × test × model, score the outputs and write reports.

    Without SUITE: ./promptfooconfig.yaml, else the only suite in evals/."""
    from promptlab import console, core
    from promptlab.errors import ExitCode, InputError
    from promptlab.files import find_project_root
    from promptlab.plan import Selection
    from promptlab.reports import gates
    from promptlab.reports.baseline import project_of

    argv = command_line()
    if ray is not None:  # before any planning: a missing Ray is one line, exit 2
        from promptlab.engine.distributed import check_address, import_ray

        check_address(ray)
        import_ray()
    elif ray_actors is not None:
        raise InputError("--ray-actors needs --ray", hint="add --ray auto (or local, HOST:PORT)")
    if watch_mode:
        _check_watch(resume, output, fail_under, max_regression, baseline, junit, output_format)
    if resume is None and suite is None:
        suite = core.find_suite(Path())  # ./promptfooconfig.yaml, or the one suite in evals/
    if resume is not None:
        project = project_of(resume)
    else:
        project = find_project_root((suite or Path("x")).resolve().parent)
    gate_opts = gates.prepare(fail_under, max_regression, baseline, project)
    if resume is not None:
        given = [
            name
            for name, value in (
                ("SUITE", suite),
                ("-o", output),
                ("--model", model),
                ("--filter", filter_pattern),
                ("--filter-prompt", filter_prompt),
                ("--filter-test", filter_test),
                ("--limit", limit),
                ("--sample", sample),
                ("--failing", failing),
            )
            if value is not None
        ]
        if given:
            raise InputError(
                f"--resume reuses the interrupted run's own settings; drop {', '.join(given)}",
                hint=f"promptlab run --resume {resume}",
            )
        with console.RichProgress() as progress:
            result = core.resume(
                resume,
                progress=progress,
                argv=argv,
                allow_code=allow_code,
                notes=console.print_notes,
                ray=ray,
                ray_actors=ray_actors,
            )
    else:
        if suite is None:
            raise InputError(
                "missing the suite file", hint="promptlab run evals/x.yaml (or --resume DIR)"
            )
        selection = Selection(
            pattern=filter_pattern,
            prompt=filter_prompt,
            test=filter_test,
            limit=limit,
            sample=sample,
            sample_seed=seed,
            cells=core.failing_cells(failing) if failing is not None else None,
        )
        cache = core.CacheOptions(use=not no_cache, refresh=refresh, path=cache_db)
        path = suite

        def one_pass() -> core.RunResult:
            with console.RichProgress() as progress:
                return core.run(
                    path,
                    out=output,
                    model=model,
                    selection=selection,
                    progress=progress,
                    argv=argv,
                    allow_code=allow_code,
                    cache=cache,
                    notes=console.print_notes,
                    skip_unsupported=skip_unsupported,
                    ray=ray,
                    ray_actors=ray_actors,
                )

        if watch_mode:
            from promptlab import watch

            return watch.watch(path, one_pass, debug=debug_requested())
        result = one_pass()
    console.print_notes(result.notes[result.notes_shown :])  # any the run itself added
    as_json = output_format is OutputFormat.json
    if not as_json:
        console.print_run(result)
    if result.reports is not None:
        outcome = conclude(
            result.folder, result.status, result.reports, gate_opts, junit, as_json, result.error
        )
        code = outcome.exit_code
    else:
        code = ExitCode.ASSERTIONS_FAILED if result.stats.failed + result.stats.errors else 0
    if result.error is not None:
        raise result.error
    if result.status == "interrupted":
        return ExitCode.INTERRUPTED
    return code


def _check_watch(
    resume: Path | None,
    output: Path | None,
    fail_under: list[str] | None,
    max_regression: float | None,
    baseline: Path | None,
    junit: Path | None,
    output_format: OutputFormat,
) -> None:
    """--watch runs pass after pass into new folders and prints its own report, so the options
    that belong to one run's outcome do not apply."""
    from promptlab.errors import InputError

    used = [
        name
        for name, value in (
            ("--resume", resume),
            ("-o", output),
            ("--fail-under", fail_under),
            ("--max-regression", max_regression),
            ("--baseline", baseline),
            ("--junit", junit),
        )
        if value is not None
    ]
    if output_format is OutputFormat.json:
        used.append("--format json")
    if used:
        raise InputError(
            f"--watch starts a new run folder for every pass and prints its own report; "
            f"drop {', '.join(used)}",
            hint="or run once without --watch",
        )
