# Over 600 lines: one short function per command (all that cli calls); the stages are packages.
"""What each command does, as plain functions. The CLI parses arguments, calls one of these once
and prints the result; tests call them directly.

Data flow: suite (load_suite) → render (build_plan) → run (runner.execute) → store → report.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptlab import __version__, consent
from promptlab.backends import is_fake
from promptlab.backends.server import ServerSpec
from promptlab.consent import CodeMode
from promptlab.engine.cache import Cache, open_cache
from promptlab.engine.cache import CacheOptions as CacheOptions  # run's argument: core.CacheOptions
from promptlab.engine.runner import NoProgress, Progress, Stats, execute
from promptlab.engine.store import (
    RunLock,
    RunWriter,
    check_run_dir,
    default_run_dir,
    git_state,
    run_name,
    timestamp,
)
from promptlab.errors import InputError, PromptlabError
from promptlab.models import catalog as model_catalog
from promptlab.models.catalog import ModelRow
from promptlab.plan import Plan, Selection, build_plan, usable_cpus
from promptlab.plan.prepare import prepare_run
from promptlab.suite import Suite, load_suite

if TYPE_CHECKING:
    from promptlab.engine.distributed import Cluster
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


# Shows the suite's notes before the first cell runs (the CLI prints them to stderr).
NotesFn = Callable[[list[str]], None]


@dataclass
class RunResult:
    folder: Path
    status: str  # complete | interrupted | failed
    stats: Stats
    reports: ReportFiles | None
    notes: list[str] = field(default_factory=list)
    error: PromptlabError | None = None
    notes_shown: int = 0  # notes[:notes_shown] went to the notes callback before the run


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


def run(
    path: Path,
    *,
    out: Path | None = None,
    model: str | None = None,
    filter_pattern: str | None = None,
    limit: int | None = None,
    progress: Progress | None = None,
    argv: list[str] | None = None,
    allow_code: bool = False,
    selection: Selection | None = None,
    cache: CacheOptions | None = None,
    notes: NotesFn | None = None,
    skip_unsupported: bool = False,
    ray: str | None = None,
    ray_actors: int | None = None,
) -> RunResult:
    """`ray`: run the cells on a Ray cluster (auto, local or HOST:PORT; see engine/distributed)."""
    sel = selection or Selection(pattern=filter_pattern, limit=limit)
    plan, granted = prepare_run(
        path,
        model=model,
        allow_code=allow_code,
        selection=sel,
        skip_unsupported=skip_unsupported,
    )
    if not plan.cells:
        raise InputError(
            f"the selection ({json.dumps(sel.describe())}) matched none of the {plan.total_cells} cells",
            hint="loosen the filters",
        )
    suite = plan.suite
    name = run_name(suite.path, suite.description)
    folder = out if out is not None else default_run_dir(suite.root, suite.path, name)
    check_run_dir(folder)
    cache_opts = cache or CacheOptions()
    result_cache = open_cache(cache_opts, suite.root)
    cluster = _connect_ray(ray, ray_actors, result_cache, plan)
    # Everything above can fail with exit 2 and nothing written; from here on we own a run folder.
    lock: RunLock | None = None
    try:
        lock = RunLock(folder)
        writer = RunWriter(folder)
    except (OSError, PromptlabError) as exc:
        if result_cache is not None:
            result_cache.close()
        if cluster is not None:
            cluster.close()
        if lock is not None:
            lock.release()
        if isinstance(exc, PromptlabError):
            raise
        raise PromptlabError(
            f"{folder}: cannot create the run folder: {exc.strerror or exc}",
            hint="choose a writable folder with -o",
        ) from None
    manifest: dict[str, Any] = {
        "promptlab_version": __version__,
        "status": "running",
        "started_at": timestamp(),
        "finished_at": None,
        "command": argv if argv is not None else sys.argv,
        "suite": {
            "path": _rel(suite.path, suite.root),
            "sha256": suite.sha256,
            "description": suite.description,
            "name": name,  # what the run folder and `promptlab history NAME` call it
        },
        "project_root": str(suite.root),
        "git": git_state(suite.root),
        "templates": {p.label: p.sha256 for p in suite.prompts},
        "template_sources": {p.label: p.source for p in suite.prompts},
        "files": suite.files,
        "params": plan.sampling.__dict__ | {"stop": list(plan.sampling.stop)},
        "grid": {
            "settings": len(suite.settings) or 1,
            "varied": suite.varied,
            "repeat": suite.repeat,
        },
        "models": [],
        "selection": {
            **sel.describe(),
            "cells": len(plan.cells),
            "cells_in_suite": plan.total_cells,
        },
        # What `promptlab run --resume` needs to plan the same cells again.
        "run_args": {
            "suite": str(suite.path.resolve()),
            "model": model,
            "selection": {
                k: (sorted(v) if isinstance(v, frozenset) else v) for k, v in sel.__dict__.items()
            },
            "cache": {
                "use": cache_opts.use,
                "refresh": cache_opts.refresh,
                "path": str(cache_opts.path) if cache_opts.path else None,
            },
            "skip_unsupported": skip_unsupported,
        },
        "host": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
        "notes": suite.notes,
        # What --skip-unsupported left out: a partial run says so, in the reports too.
        "skipped": suite.skipped,
        "code": _code_record(plan, granted),
    }
    return _execute(plan, writer, manifest, result_cache, progress, folder, lock, notes, cluster)


def _connect_ray(
    address: str | None, actors: int | None, cache: Cache | None, plan: Plan
) -> Cluster | None:
    """The Ray cluster for --ray (None without it); on failure the cache is closed first."""
    if address is None:
        return None
    from promptlab.engine.distributed import connect  # noqa: PLC0415 - Ray only with --ray

    try:
        # Ray actors load GGUF files in-process; a server model is remote already, and its
        # concurrency: setting is what spreads its cells.
        served = [m.label for m in plan.models if isinstance(m.path, ServerSpec)]
        if served:
            raise InputError(
                f"--ray runs in-process models on the cluster, but model '{served[0]}' is "
                "served by an OpenAI-compatible server",
                hint="run a suite with server models without --ray (raise their concurrency:)",
            )
        return connect(address, actors)
    except BaseException:
        if cache is not None:
            cache.close()
        raise


def _code_record(plan: Plan, granted: consent.Consent) -> dict[str, Any] | None:
    """Which user code the run may execute, and who allowed it (a person, never the suite)."""
    if not plan.code:
        return None
    return {"consent": granted.source, "used_at": plan.code}


def _cpu_snapshot() -> tuple[float, float, float] | None:
    from promptlab.engine import tune as tuning  # noqa: PLC0415 - its /proc/stat sampler

    return tuning._cpu_snapshot()


# The load window opens when promptlab starts: loading and planning the suite take longer than
# the sample needs, so a run measures the load over that time (minus its own CPU) instead of
# sleeping for it (a cached rerun has no 100 ms to spare).
_STARTED = _cpu_snapshot()
_WINDOW_MAX_S = 5.0  # older than this (a notebook, a long test session): sample afresh


def measure_load(seconds: float = 0.1) -> float | None:
    """How many CPUs' worth of work other processes did over at least `seconds` (Linux:
    /proc/stat, since promptlab started where that is recent), else the 1-minute load average;
    None where neither is known."""
    from promptlab.engine import tune as tuning  # noqa: PLC0415 - its /proc/stat sampler

    before = _STARTED
    if before is None or time.perf_counter() - before[2] > _WINDOW_MAX_S:
        before = _cpu_snapshot()
    if before is not None:
        time.sleep(max(0.0, seconds - (time.perf_counter() - before[2])))
        share = tuning._others_share(before)
        if share is not None:
            return share * (os.cpu_count() or 1)
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


# Other processes' load, in CPUs, above which llama.cpp's spinning threads stop scaling: each
# thread waits for the slowest at every barrier, so one preempted thread stalls them all.
BUSY_CPUS = 0.5


def check_threads(
    plan: Plan, measure: Callable[[], float | None] | None = None
) -> dict[str, Any] | None:
    """When a model's n_threads is promptlab's default (every usable CPU), sample the machine's
    load and, where other processes already keep CPUs busy, add a note that says so and how to
    set n_threads. The thread count itself is left alone: it is part of the cache key, so a
    choice made from a passing load would make reruns miss the cache. Returns what the manifest
    records (None when every model's n_threads comes from the suite or a fake backend)."""
    chosen = {label: spec for label, spec in _user_threads(plan).items() if spec is None}
    models = [
        m
        for m in plan.models
        if m.label in chosen and not is_fake(m.spec_path) and m.settings.n_threads > 1
    ]
    if not models:
        return None
    cpus = usable_cpus()
    busy = (measure or measure_load)()
    record: dict[str, Any] = {
        "cpus": cpus,
        "others_busy_cpus": None if busy is None else round(busy, 2),
        "default_n_threads": {m.label: m.settings.n_threads for m in models},
        "warned": False,
    }
    if busy is None or busy < BUSY_CPUS:
        return record
    over = [m for m in models if m.settings.n_threads + busy > cpus + BUSY_CPUS]
    if not over:
        return record
    advice = max(1, int(cpus - busy + 0.5))
    labels = ", ".join(f"'{m.label}'" for m in over)
    record["warned"] = True
    record["suggested_n_threads"] = advice
    plan.suite.notes.append(
        f"the machine is busy: other processes keep ~{busy:.1f} of its {cpus} CPUs working, and "
        f"model {labels} uses n_threads {over[0].settings.n_threads} (every CPU, the default); "
        "llama.cpp threads that compete for CPUs can make a run several times slower; "
        f"set n_threads: {advice} on the model in the suite, or measure with `promptlab tune`"
    )
    return record


def _user_threads(plan: Plan) -> dict[str, int | None]:
    """n_threads as each model's suite entry sets it (None: promptlab's default)."""
    out: dict[str, int | None] = {m.label: m.spec.n_threads for m in plan.suite.models}
    for pm in plan.models:  # a --model override is not among the suite's entries
        out.setdefault(pm.label, None)
    return out


def _execute(
    plan: Plan,
    writer: RunWriter,
    manifest: dict[str, Any],
    result_cache: Cache | None,
    progress: Progress | None,
    folder: Path,
    lock: RunLock | None,
    show_notes: NotesFn | None,
    cluster: Cluster | None = None,
) -> RunResult:
    try:
        return _execute_locked(
            plan, writer, manifest, result_cache, progress, folder, show_notes, cluster
        )
    finally:
        if cluster is not None:
            cluster.close()
        if lock is not None:
            lock.release()


def _execute_locked(
    plan: Plan,
    writer: RunWriter,
    manifest: dict[str, Any],
    result_cache: Cache | None,
    progress: Progress | None,
    folder: Path,
    show_notes: NotesFn | None,
    cluster: Cluster | None = None,
) -> RunResult:
    try:
        threads = check_threads(plan)
    except BaseException:
        writer.close()
        if result_cache is not None:
            result_cache.close()
        raise
    if threads is not None:
        manifest["threads"] = threads
    if cluster is not None:
        manifest["ray"] = cluster.describe()
    shown = len(plan.suite.notes)
    if show_notes is not None and shown:
        show_notes(list(plan.suite.notes))
    writer.write_manifest(manifest)

    def on_model(record: dict[str, Any]) -> None:
        manifest["models"].append(record)
        writer.write_manifest(manifest)

    stats = Stats()
    status, error = "complete", None
    try:
        if cluster is not None:
            from promptlab.engine.distributed import execute_ray  # noqa: PLC0415 - Ray only with --ray

            execute_ray(
                plan, writer, progress or NoProgress(), on_model, cluster, result_cache, stats
            )
        else:
            execute(
                plan, writer, progress or NoProgress(), on_model, cache=result_cache, stats=stats
            )
    except KeyboardInterrupt:
        status = "interrupted"
    except PromptlabError as exc:
        status, error = "failed", exc
    except BaseException as exc:
        # An internal error: still record the run as failed (not "complete"), so --resume works.
        status = "failed"
        manifest["error"] = f"internal error: {type(exc).__name__}: {exc}"
        raise
    finally:
        writer.close()
        # "complete" only once the reports exist: a run killed while they are written says
        # "reporting", which --resume finishes (no cells left, the reports rebuilt).
        manifest["status"] = "reporting" if status == "complete" else status
        manifest["finished_at"] = timestamp()
        # A resumed run adds this session's counts to the earlier sessions'.
        manifest["prefix_reuse"] = _merge_counts(manifest.get("prefix_reuse"), stats.prefix_reuse())
        if result_cache is not None:
            cache_note = result_cache.note()
            if cache_note:
                plan.suite.notes.append(cache_note)
            session = result_cache.stats() | {"rows_from_cache": stats.cached}
            manifest["cache"] = _merge_counts(manifest.get("cache"), session)
            result_cache.close()
        if error is not None:
            manifest["error"] = error.one_line()
        writer.write_manifest(manifest)
    from promptlab.reports.tables import build_reports  # noqa: PLC0415 - pandas only when reporting

    reports = build_reports(folder)
    if status == "complete":
        manifest["status"] = status
        writer.write_manifest(manifest)
    # The totals cover the whole run folder (a resumed run includes the earlier cells).
    stats.cells = reports.totals["cells"]
    stats.passed, stats.failed, stats.errors = (
        reports.totals[k] for k in ("passed", "failed", "errors")
    )
    stats.unchecked = reports.totals.get("unchecked", 0)
    return RunResult(folder, status, stats, reports, plan.suite.notes, error, shown)


def _merge_counts(before: Any, now: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(before, dict):
        return now
    merged = dict(now)
    for key, value in now.items():
        old = before.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and isinstance(old, int):
            merged[key] = old + value
    if merged.get("prompt_tokens"):
        merged["reused_share"] = round(merged["reused"] / merged["prompt_tokens"], 4)
    return merged


def resume(
    folder: Path,
    *,
    progress: Progress | None = None,
    argv: list[str] | None = None,
    allow_code: bool = False,
    notes: NotesFn | None = None,
    ray: str | None = None,
    ray_actors: int | None = None,
) -> RunResult:
    """Finish an interrupted run in place: plan the same cells, skip those already stored.

    The run folder stays locked from before its results are read until its reports are written,
    so a second resume of the same folder is refused instead of appending the same cells again.

    Consent to run code is asked again (`allow_code`, the environment, a trusted project): a run
    folder is a file like any other, so its manifest cannot grant it."""
    from promptlab.engine.store import read_manifest  # noqa: PLC0415

    read_manifest(folder)  # a folder that holds no run gets no lock file either
    try:
        lock = RunLock(folder)
    except OSError as exc:
        raise PromptlabError(
            f"{folder}: cannot lock the run folder: {exc.strerror or exc}",
            hint="make it writable, then resume again",
        ) from None
    try:
        return _resume_locked(folder, lock, progress, argv, allow_code, notes, ray, ray_actors)
    except BaseException:
        lock.release()
        raise


def _resume_locked(
    folder: Path,
    lock: RunLock,
    progress: Progress | None,
    argv: list[str] | None,
    allow_code: bool,
    notes: NotesFn | None,
    ray: str | None = None,
    ray_actors: int | None = None,
) -> RunResult:
    from promptlab.engine.store import read_manifest, read_results, repair_results  # noqa: PLC0415

    manifest = read_manifest(folder)  # again: a writer that just let go may have changed it
    args = manifest.get("run_args")
    if not isinstance(args, dict):
        raise InputError(
            f"{folder}: this run was made by an older promptlab and cannot be resumed",
            hint="start a new run",
        )
    if manifest.get("status") == "complete":
        raise InputError(
            f"{folder}: this run is already complete",
            hint="use `promptlab report` to rebuild its reports",
        )
    raw_sel = dict(args.get("selection") or {})
    if raw_sel.get("cells") is not None:
        raw_sel["cells"] = frozenset(raw_sel["cells"])
    sel = Selection(**raw_sel)
    plan, granted = prepare_run(
        Path(args["suite"]),
        model=args.get("model"),
        allow_code=allow_code,
        selection=sel,
        skip_unsupported=bool(args.get("skip_unsupported", False)),
    )
    changed = sorted(
        name
        for name, digest in manifest.get("files", {}).items()
        if plan.suite.files.get(name) != digest
    )
    if changed:
        raise InputError(
            f"{folder}: {changed[0]} changed since this run started, so resuming would mix two suites",
            hint="start a new run (unchanged cells come from the cache)",
        )
    dropped = repair_results(folder)  # a half-written last line from a kill -9
    done = {r["cell_id"] for r in read_results(folder)}
    plan.cells = [c for c in plan.cells if c.id not in done]
    cache_args = args.get("cache") or {}
    cache_opts = CacheOptions(
        use=bool(cache_args.get("use", True)),
        refresh=bool(cache_args.get("refresh", False)),
        path=Path(cache_args["path"]) if cache_args.get("path") else None,
    )
    result_cache = open_cache(cache_opts, plan.suite.root)
    cluster = _connect_ray(ray, ray_actors, result_cache, plan)
    try:
        writer = RunWriter(folder)
    except OSError as exc:
        if result_cache is not None:
            result_cache.close()
        if cluster is not None:
            cluster.close()
        raise PromptlabError(
            f"{folder}: cannot write to the run folder: {exc.strerror or exc}",
            hint="make it writable, then resume again",
        ) from None
    manifest.setdefault("resumed", []).append(
        {
            "at": timestamp(),
            "cells_done": len(done),
            "cells_left": len(plan.cells),
            "dropped_partial_line": dropped,
        }
    )
    manifest["status"] = "running"
    manifest["command"] = argv if argv is not None else sys.argv
    manifest["code"] = _code_record(plan, granted)
    return _execute(plan, writer, manifest, result_cache, progress, folder, lock, notes, cluster)


def report(folder: Path, *, spreadsheet: bool = False) -> ReportFiles:
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder", hint="pass the output folder of a run")
    from promptlab.reports.tables import build_reports  # noqa: PLC0415 - pandas only when reporting

    return build_reports(folder, spreadsheet=spreadsheet)


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)


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
