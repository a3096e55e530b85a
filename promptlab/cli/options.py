"""The options several commands share, declared once so each reads and behaves the same in
every command that takes it."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

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
