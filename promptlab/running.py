"""`promptlab run` and `promptlab run --resume`, start to finish: plan the cells, own the run
folder (its lock, its manifest), run them on the engine (here or on a Ray cluster), and build the
reports. `promptlab.core` offers `run` and `resume` as two of its commands.
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptlab import __version__, consent
from promptlab.backends.server import ServerSpec
from promptlab.engine.cache import Cache, CacheOptions, open_cache
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
from promptlab.engine.threads import check_threads
from promptlab.errors import InputError, PromptlabError
from promptlab.plan import Plan, Selection
from promptlab.plan.prepare import prepare_run

if TYPE_CHECKING:
    from promptlab.engine.distributed import Cluster
    from promptlab.reports.tables import ReportFiles


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


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)
