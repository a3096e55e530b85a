# Over 600 lines: every command's arguments, in one module that imports nothing heavy.
"""The command line. Thin: parse arguments, call one function in `promptlab.core`, print.

Imports stay light at module level so `promptlab --help` answers fast; the core (and through it
pydantic, jinja2, pandas, llama_cpp) is imported inside each command.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from promptlab.reports.gates import GateOptions, Outcome
    from promptlab.reports.tables import ReportFiles

app = typer.Typer(
    name="promptlab",
    help="A lab for prompt engineering on local quantized models (llama.cpp).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_state = {"debug": False}
_argv: list[str] = []  # the command line as given to main(), recorded in the run manifest

SuiteArg = Annotated[Path, typer.Argument(help="Suite file, e.g. evals/example.yaml")]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Model label from the suite, bundled alias, .gguf path, ollama:NAME or hf://…",
    ),
]
FilterOpt = Annotated[
    str | None, typer.Option("--filter", help="Regex on prompt label, test description and vars")
]
AllowCodeOpt = Annotated[
    bool,
    typer.Option(
        "--allow-code",
        help="Run the suite's python checks and Python transforms (or PROMPTLAB_ALLOW_CODE=1, "
        "or `promptlab trust`); a suite cannot allow itself",
    ),
]
NoCacheOpt = Annotated[
    bool, typer.Option("--no-cache", help="Neither read nor write the result cache")
]
CacheDbOpt = Annotated[
    Path | None,
    typer.Option("--cache-db", help="Cache database (default: .promptlab/cache.sqlite)"),
]
SkipOpt = Annotated[
    bool,
    typer.Option(
        "--skip-unsupported",
        help="Leave out each check, test or prompt that uses a promptfoo feature promptlab does "
        "not run (cost, javascript, …) and run the rest; each is named in a note and recorded "
        "in the manifest",
    ),
]
LimitOpt = Annotated[
    int | None, typer.Option("--limit", help="Only the first N tests (after --filter)")
]


class OutputFormat(str, Enum):
    text = "text"
    json = "json"


FailUnderOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--fail-under",
        metavar="[METRIC=]RATE",
        help="Gate: exit 100 when the pass rate (or METRIC's mean) is below RATE; repeatable",
    ),
]
MaxRegressionOpt = Annotated[
    float | None,
    typer.Option(
        "--max-regression",
        metavar="POINTS",
        help="Gate: exit 100 when a variant's pass rate drops more than POINTS vs the baseline",
    ),
]
BaselineOpt = Annotated[
    Path | None,
    typer.Option("--baseline", help="Baseline run for --max-regression (default: baseline set)"),
]
JunitOpt = Annotated[
    Path | None, typer.Option("--junit", help="Write JUnit XML (one test case per cell) here")
]
FormatOpt = Annotated[
    OutputFormat,
    typer.Option("--format", help="text, or json: the summary as JSON on stdout, nothing else"),
]


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors")] = False,
) -> None:
    _state["debug"] = debug


@app.command()
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


@app.command()
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


@app.command()
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


@app.command()
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

    argv = ["promptlab", *_argv]
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

            return watch.watch(path, one_pass, debug=_state["debug"] or "--debug" in _argv)
        result = one_pass()
    console.print_notes(result.notes[result.notes_shown :])  # any the run itself added
    as_json = output_format is OutputFormat.json
    if not as_json:
        console.print_run(result)
    if result.reports is not None:
        outcome = _conclude(
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


def _conclude(
    folder: Path,
    status: str,
    reports: ReportFiles,
    gate_opts: GateOptions,
    junit: Path | None,
    as_json: bool,
    error: Exception | None = None,
) -> Outcome:
    """Gates, JUnit and the JSON summary, shared by `run` and `report`."""
    from promptlab import console
    from promptlab.engine.store import read_manifest, read_results
    from promptlab.reports import gates
    from promptlab.termsafe import json_visible

    rows = read_results(folder)
    manifest = read_manifest(folder)
    outcome = gates.conclude(folder, rows, gate_opts, junit=junit, manifest=manifest)
    console.print_gates(outcome, to_stderr=as_json)
    if as_json:
        paths: dict[str, Path | None] = {
            "results_csv": reports.results_csv,
            "summary_csv": reports.summary_csv,
            "html": reports.html,
            "comparisons_csv": reports.comparisons_csv,
            "junit": junit,
        }
        if outcome.comparison is not None:
            paths["compare_csv"] = outcome.comparison.csv_path
            paths["compare_html"] = outcome.comparison.html_path
        print(
            json_visible(
                gates.summary_json(
                    folder=folder,
                    status=status,
                    totals=reports.totals,
                    summary=reports.summary,
                    comparisons=reports.comparisons,
                    outcome=outcome,
                    reports=paths,
                    error=str(error) if error is not None else None,
                    skipped=(manifest or {}).get("skipped"),
                )
            )
        )
    return outcome


# promptfoo's name for the same command, so `promptfoo eval` habits (and scripts) carry over.
app.command("eval", help="promptfoo's name for `run`: the same command, the same options.")(run)


@app.command()
def report(
    folder: Annotated[Path, typer.Argument(help="A run folder")],
    fail_under: FailUnderOpt = None,
    max_regression: MaxRegressionOpt = None,
    baseline: BaselineOpt = None,
    junit: JunitOpt = None,
    output_format: FormatOpt = OutputFormat.text,
    spreadsheet: Annotated[
        bool,
        typer.Option(
            "--spreadsheet",
            help="Also write formula-safe copies of the CSVs to spreadsheet/ for Excel and co.",
        ),
    ] = False,
) -> int:
    """Rebuild results.csv, summary.csv and report.html from a run's stored results."""
    from promptlab import console, core
    from promptlab.engine.store import read_manifest
    from promptlab.reports import gates
    from promptlab.reports.baseline import project_of

    gate_opts = gates.prepare(fail_under, max_regression, baseline, project_of(folder))
    reports = core.report(folder, spreadsheet=spreadsheet)
    as_json = output_format is OutputFormat.json
    if not as_json:
        console.print_report(reports)
    if not (gate_opts.active or gate_opts.baseline or junit or as_json):
        return 0
    status = str(read_manifest(folder).get("status") or "unknown")
    outcome = _conclude(folder, status, reports, gate_opts, junit, as_json)
    return outcome.exit_code if gate_opts.active else 0


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="The earlier run (or the only one: vs baseline)")],
    run_b: Annotated[Path | None, typer.Argument(help="The later run")] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Folder for compare.csv/html (default: newer run)"),
    ] = None,
    fail_on_regression: Annotated[
        bool, typer.Option("--fail-on-regression", help="Exit 100 when any cell regressed")
    ] = False,
) -> int:
    """Compare two runs cell by cell: regressions, fixes, changed outputs, paired tests."""
    from promptlab import console
    from promptlab.errors import ExitCode
    from promptlab.reports import compare as cmp

    a, b = (None, run_a) if run_b is None else (run_a, run_b)
    result = cmp.compare(a, b, out=output)
    console.print_compare(result)
    if fail_on_regression and result.regressions:
        return ExitCode.ASSERTIONS_FAILED
    return 0


@app.command()
def history(
    suite: Annotated[
        str | None, typer.Argument(help="Only runs of this suite (a file or its name)")
    ] = None,
    runs: Annotated[
        list[Path] | None,
        typer.Option("--runs", help="Also look for runs in this folder (repeatable)"),
    ] = None,
    template: Annotated[
        str | None, typer.Option("--template", help="One template's pass rate across runs")
    ] = None,
) -> int:
    """List earlier runs from their manifests: date, commit, templates changed, pass rates."""
    from promptlab import console
    from promptlab.reports import history as hist

    found = hist.history(hist.project_for(suite, Path.cwd()), suite, runs or [])
    if template is not None:
        console.print_template_history(template, hist.template_history(found, template))
    else:
        console.print_history(found)
    return 0


baseline_app = typer.Typer(
    help="The baseline run that compare and --max-regression use by default.",
    no_args_is_help=True,
)
app.add_typer(baseline_app, name="baseline")


@baseline_app.command("set")
def baseline_set(run_folder: Annotated[Path, typer.Argument(help="A run folder")]) -> int:
    """Make RUN the project's baseline (.promptlab/baseline.json)."""
    from promptlab import console
    from promptlab.files import find_project_root
    from promptlab.reports.baseline import set_baseline

    file = set_baseline(run_folder, find_project_root(Path.cwd()))
    console.out.print(console.escape(f"baseline: {run_folder} (stored in {file})"))
    return 0


@baseline_app.command("show")
def baseline_show() -> int:
    """Print the baseline run."""
    from promptlab import console
    from promptlab.files import find_project_root
    from promptlab.reports.baseline import get_baseline, read_baseline

    root = find_project_root(Path.cwd())
    path = get_baseline(root)
    if path is None:
        console.err.print("no baseline set (promptlab baseline set RUN)", markup=False)
        return 0
    record = read_baseline(root) or {}
    console.out.print(console.escape(str(path)))
    console.err.print(
        console.escape(
            f"set {record.get('set_at', '?')}; run started {record.get('started_at', '?')}"
        )
    )
    return 0


@baseline_app.command("clear")
def baseline_clear() -> int:
    """Forget the baseline."""
    from promptlab import console
    from promptlab.files import find_project_root
    from promptlab.reports.baseline import clear_baseline

    removed = clear_baseline(find_project_root(Path.cwd()))
    console.out.print("baseline cleared" if removed else "no baseline was set")
    return 0


@app.command()
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


@app.command()
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

    argv = ["promptlab", *_argv]
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


@app.command()
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


@app.command()
def schema() -> int:
    """Print the JSON Schema of suite files (for editor validation and completion)."""
    import json

    from promptlab import core

    print(json.dumps(core.suite_schema(), indent=2))
    return 0


@app.command()
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


def main(argv: list[str] | None = None) -> None:
    """Entry point: the one place where errors become messages and exit codes."""
    from typer.exceptions import TyperException

    from promptlab.errors import PromptlabError
    from promptlab.termsafe import visible

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
        for line in exc.lines():  # one line per problem (several when a suite has several)
            print(f"error: {visible(line, one_line=True)}", file=sys.stderr)
        code = int(exc.exit_code)
    except Exception as exc:
        if _state["debug"] or "--debug" in args:
            raise
        print(
            visible(
                f"error: internal error: {type(exc).__name__}: {exc} "
                "(rerun with --debug for a traceback)",
                one_line=True,
            ),
            file=sys.stderr,
        )
        code = 1
    sys.exit(int(code or 0))
