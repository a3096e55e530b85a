"""What each command does, as plain functions. The CLI parses arguments, calls one of these once
and prints the result; tests call them directly.

`run` and `resume` (`run --resume`) are promptlab.running's: they own a run folder from its
lock to its reports, which is most of the work and has its own module.

Data flow: suite (load_suite) → render (build_plan) → run (runner.execute) → store → report.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptlab import consent
from promptlab.consent import CodeMode
from promptlab.engine.cache import CacheOptions as CacheOptions  # run's argument: core.CacheOptions
from promptlab.errors import InputError
from promptlab.models import catalog as model_catalog
from promptlab.models.catalog import ModelRow
from promptlab.plan import Plan, Selection, build_plan
from promptlab.running import NotesFn as NotesFn
from promptlab.running import RunResult as RunResult
from promptlab.running import resume as resume
from promptlab.running import run as run
from promptlab.suite import Suite, load_suite

if TYPE_CHECKING:
    from promptlab.reports.tables import ReportFiles


def prepare(
    path: Path,
    *,
    model: str | None = None,
    filter_pattern: str | None = None,
    limit: int | None = None,
    selection: Selection | None = None,
    allow_code: bool = False,
    skip_unsupported: bool = False,
) -> Plan:
    """Load, check and render a suite without loading any model or executing any user code
    (validate, render). Python checks are parsed; a note says whether `run` would execute them
    (with `allow_code`: as if --allow-code were passed to run). `skip_unsupported` previews
    what `run --skip-unsupported` would leave out."""
    suite = load_suite(path, model_override=model, skip_unsupported=skip_unsupported)
    plan = build_plan(
        suite, filter_pattern=filter_pattern, limit=limit, code=CodeMode.CHECK, selection=selection
    )
    if plan.code:
        granted = consent.for_run(allow_code, suite.root)
        more = f" (and {len(plan.code) - 1} more)" if len(plan.code) > 1 else ""
        if granted.granted:
            why = f"`promptlab run` will execute it: consent from {granted.source}"
        else:
            why = f"`promptlab run` will refuse it until you consent: {consent.HOW}"
        suite.notes.append(f"{plan.code[0]}{more} names Python code; {why}")
    return plan


def find_suite(folder: Path) -> Path:
    """The suite `promptlab run` with no file means: ./promptfooconfig.yaml as promptfoo's
    `eval` does, else the one suite in ./evals; InputError naming the candidates otherwise."""
    for name in ("promptfooconfig.yaml", "promptfooconfig.yml"):
        if (folder / name).is_file():
            return folder / name
    evals = folder / "evals"
    found = (
        sorted(p for p in evals.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        if evals.is_dir()
        else []
    )
    if len(found) == 1:
        return found[0]
    if not found:
        raise InputError(
            "no suite file given, and there is no ./promptfooconfig.yaml and no evals/*.yaml here",
            hint="name one: promptlab run path/to/suite.yaml (or promptlab init to start one)",
        )
    shown = ", ".join(p.as_posix() for p in found[:5]) + (" …" if len(found) > 5 else "")
    raise InputError(
        f"no suite file given, and evals/ holds {len(found)} suites ({shown})",
        hint=f"name one: promptlab run {found[0].as_posix()}",
    )


def failing_cells(folder: Path) -> frozenset[str]:
    """Cell ids that failed or errored in an earlier run (for --failing)."""
    from promptlab.engine.store import read_results  # noqa: PLC0415

    rows = read_results(folder)
    if not rows:
        raise InputError(f"--failing {folder}: that run has no results yet")
    # Cells with no checks did not fail: there is nothing to rerun them for.
    return frozenset(r["cell_id"] for r in rows if r.get("status") in ("fail", "error"))


def report(folder: Path, *, spreadsheet: bool = False) -> ReportFiles:
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder", hint="pass the output folder of a run")
    from promptlab.reports.tables import build_reports  # noqa: PLC0415 - pandas only when reporting

    return build_reports(folder, spreadsheet=spreadsheet)


# --- models --------------------------------------------------------------------------------


def list_models(project: Path) -> list[ModelRow]:
    """Every model in sight: bundled, Ollama, the hub cache, LM Studio, GGUF files around."""
    return model_catalog.list_models(project)


# --- init ----------------------------------------------------------------------------------


def init(folder: Path, force: bool = False) -> list[Path]:
    """Copy the starter project (prompts/, evals/) into `folder`; never overwrite without force."""
    scaffold = resources.files("promptlab") / "scaffold"
    files: list[tuple[str, bytes]] = []

    def walk(node: Any, prefix: str) -> None:
        for child in node.iterdir():
            name = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, name + "/")
            elif child.name != "__init__.py":
                files.append((name, child.read_bytes()))

    walk(scaffold, "")
    # Editors validate and complete suites against this file (see the starter's first line).
    files.append(("suite.schema.json", (json.dumps(suite_schema(), indent=2) + "\n").encode()))
    targets = [(folder / name, data) for name, data in sorted(files)]
    clashes = [p for p, _ in targets if p.exists()]
    if clashes and not force:
        raise InputError(
            f"{clashes[0]}: already exists",
            hint="run init in an empty folder, or pass --force to overwrite",
        )
    for path, data in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return [p for p, _ in targets]


def suite_schema() -> dict[str, Any]:
    schema = Suite.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "promptlab suite"
    return schema


# --- tune ----------------------------------------------------------------------------------

if TYPE_CHECKING:
    from promptlab.engine.tune import ProgressFn, TuneResult


def tune(
    model: str,
    *,
    prompt_tokens: int = 256,
    gen_tokens: int = 64,
    repeats: int = 3,
    threads: str | None = None,
    progress: ProgressFn | None = None,
) -> TuneResult:
    """Measure prompt and generation speed of `model` by thread count and batch size.

    threads: comma-separated thread counts ("1,2"); default 1..usable CPUs, at most 4 values.
    """
    from promptlab.engine import tune as tuning  # noqa: PLC0415 - loads a model; only for this command

    return tuning.tune(
        model,
        prompt_tokens=prompt_tokens,
        gen_tokens=gen_tokens,
        repeats=repeats,
        threads=tuning.parse_threads(threads) if threads is not None else None,
        progress=progress,
    )
