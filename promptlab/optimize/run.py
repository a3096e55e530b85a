"""`promptlab optimize`: check everything, then race candidates, decide on held-out, write.

Everything that can be wrong with the input (the suite, the optimize: section, the prompt
label, the budget, the template to copy) fails with exit 2 before the run folder exists. A
run is deterministic given the suite, the seed and the model outputs, which is what makes it
resumable: `--resume` replays the same search from the top, taking every cell that the
interrupted session stored in results.jsonl (or the result cache holds) instead of calling the
model again, so it ends exactly where an uninterrupted run would.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptlab import __version__
from promptlab.consent import CodeMode
from promptlab.engine.cache import CacheOptions, open_cache
from promptlab.engine.store import (
    RunLock,
    atomic_write,
    check_run_dir,
    default_run_dir,
    git_state,
    read_manifest,
    read_results,
    repair_results,
    run_name,
    timestamp,
)
from promptlab.errors import InputError, PromptlabError
from promptlab.optimize import report, search
from promptlab.optimize.evaluate import EvalEvents, Evaluator, count_cells
from promptlab.optimize.propose import propose
from promptlab.optimize.space import Space, build_space, choose_prompt
from promptlab.optimize.template import original_source, write_optimized
from promptlab.plan import Plan
from promptlab.plan.prepare import prepare_run
from promptlab.suite import OptimizeSpec

DEFAULT_FULL_CANDIDATES = 8  # the default budget pays for this many full validation passes


@dataclass
class OptimizeProgress:
    """Callbacks for live progress (the CLI draws them with rich)."""

    start: Callable[[int], None] = lambda budget: None
    phase: Callable[[str], None] = lambda text: None
    calls: Callable[[int], None] = lambda used: None
    candidate: Callable[[search.CandidateRecord], None] = lambda record: None
    model_loaded: Callable[[dict[str, Any]], None] = lambda record: None


@dataclass
class OptimizeResult:
    folder: Path
    status: str  # complete | interrupted | failed
    budget: int
    used: int = 0  # calls counted against the budget
    ran: int = 0  # cells the model itself ran this session (not the cache, not a resume)
    from_cache: int = 0
    reused: int = 0  # cells an earlier session of this run had stored
    verdict: search.Verdict | None = None
    search: search.SearchResult | None = None
    written: Path | None = None  # prompts/<name>.optimized.j2, when there is a winner
    best_template: Path | None = None  # <run>/best.j2
    html: Path | None = None
    notes: list[str] = field(default_factory=list)
    error: PromptlabError | None = None


@dataclass(frozen=True)
class Args:
    suite: Path
    prompt: str | None
    budget: int | None
    seed: int
    model: str | None
    cache: CacheOptions

    def record(self) -> dict[str, Any]:
        return {
            "suite": str(self.suite.resolve()),
            "prompt": self.prompt,
            "budget": self.budget,
            "seed": self.seed,
            "model": self.model,
            "cache": {
                "use": self.cache.use,
                "refresh": self.cache.refresh,
                "path": str(self.cache.path) if self.cache.path else None,
            },
        }


def optimize(
    path: Path,
    *,
    prompt: str | None = None,
    budget: int | None = None,
    seed: int = 0,
    model: str | None = None,
    out: Path | None = None,
    cache: CacheOptions | None = None,
    allow_code: bool = False,
    argv: list[str] | None = None,
    progress: OptimizeProgress | None = None,
) -> OptimizeResult:
    args = Args(path, prompt, budget, seed, model, cache or CacheOptions())
    return _start(args, out, allow_code, argv, progress, resuming=False)


def resume(
    folder: Path,
    *,
    allow_code: bool = False,
    argv: list[str] | None = None,
    progress: OptimizeProgress | None = None,
) -> OptimizeResult:
    manifest = read_manifest(folder)
    raw = manifest.get("optimize_args")
    if not isinstance(raw, dict):
        raise InputError(
            f"{folder}: not a `promptlab optimize` run",
            hint="resume runs with promptlab run --resume",
        )
    if manifest.get("status") == "complete":
        raise InputError(
            f"{folder}: this optimization is already complete", hint=f"see {folder / 'report.html'}"
        )
    cache_raw = raw.get("cache") or {}
    args = Args(
        Path(raw["suite"]),
        raw.get("prompt"),
        raw.get("budget"),
        int(raw.get("seed", 0)),
        raw.get("model"),
        CacheOptions(
            use=bool(cache_raw.get("use", True)),
            refresh=bool(cache_raw.get("refresh", False)),
            path=Path(cache_raw["path"]) if cache_raw.get("path") else None,
        ),
    )
    return _start(args, folder, allow_code, argv, progress, resuming=True, before=manifest)


def _budget(space: Space, cells: dict[int, int], given: int | None) -> tuple[int, int]:
    """(the budget, the calls reserved for the original on validation and held-out, the best
    on held-out and the proposals). InputError when the budget cannot pay for one minibatch."""
    val, held = space.split.validation, space.split.held_out
    per = sum(cells[t] for t in val)
    reserved = per + 2 * sum(cells[t] for t in held)
    inst = space.spec.instructions
    reserved += inst.propose if inst is not None else 0
    first = sum(cells[t] for t in val[: min(space.spec.minibatch, len(val))])
    budget = given if given is not None else reserved + DEFAULT_FULL_CANDIDATES * per
    if budget < reserved + first:
        raise InputError(
            f"--budget {budget}: too small; the original on the {len(val)} validation tests, "
            f"both finalists on the {len(held)} held-out tests"
            + (" and the proposals" if inst is not None and inst.propose else "")
            + f" take {reserved} calls, and one racing minibatch {first} more",
            hint=f"give at least --budget {reserved + first} (or optimize.budget:)",
        )
    return budget, reserved


def _start(
    args: Args,
    out: Path | None,
    allow_code: bool,
    argv: list[str] | None,
    progress: OptimizeProgress | None,
    *,
    resuming: bool,
    before: dict[str, Any] | None = None,
) -> OptimizeResult:
    progress = progress or OptimizeProgress()
    plan, granted = prepare_run(args.suite, model=args.model, allow_code=allow_code)
    suite = plan.suite
    code = CodeMode.RUN if granted.granted else CodeMode.REFUSE
    if len(plan.models) != 1:
        labels = ", ".join(m.label for m in plan.models)
        raise InputError(
            f"{suite.path}: optimize tunes a prompt for one model, and the suite has "
            f"{len(plan.models)} ({labels})",
            hint=f"pick one: --model {plan.models[0].label}",
        )
    spec_budget = suite.optimize.spec.budget if suite.optimize is not None else None
    chosen = choose_prompt(
        suite, args.prompt, suite.optimize.spec if suite.optimize else OptimizeSpec()
    )
    space = build_space(suite, chosen, args.seed)
    if space.size() <= 1:
        raise InputError(
            f"{suite.path}: the optimize: section leaves nothing to search besides the original",
            hint="add demos:, instructions:, vars: or params: to optimize:",
        )
    _source, target = original_source(suite, chosen)
    if chosen.source != "inline" and target.resolve() == (suite.root / chosen.source).resolve():
        raise InputError(
            f"{chosen.where}: prompt '{chosen.label}' is itself an optimized copy",
            hint="rename it (or optimize the original)",
        )
    cells = count_cells(suite, chosen, code)
    budget, _reserved = _budget(
        space, cells, args.budget if args.budget is not None else spec_budget
    )
    if resuming:
        assert out is not None and before is not None
        folder = out
        changed = sorted(
            n for n, digest in before.get("files", {}).items() if suite.files.get(n) != digest
        )
        if changed:
            raise InputError(
                f"{folder}: {changed[0]} changed since this optimization started",
                hint="start a new one (cells already seen come from the cache)",
            )
    else:
        folder = out or default_run_dir(
            suite.root, suite.path, run_name(suite.path, suite.description) + "-optimize"
        )
        check_run_dir(folder)
    result_cache = open_cache(args.cache, suite.root)
    try:
        lock = RunLock(folder)
    except (OSError, PromptlabError) as exc:
        if result_cache is not None:
            result_cache.close()
        if isinstance(exc, PromptlabError):
            raise
        raise PromptlabError(
            f"{folder}: cannot create the run folder: {exc.strerror or exc}",
            hint="choose a writable folder with -o",
        ) from None
    try:
        return _run_locked(
            args,
            plan,
            space,
            cells,
            budget,
            folder,
            lock,
            result_cache,
            code,
            argv,
            progress,
            before,
        )
    finally:
        lock.release()
        if result_cache is not None:
            result_cache.close()


def _stored_rows(folder: Path) -> dict[tuple[str, int], list[dict[str, Any]]]:
    if not (folder / "results.jsonl").exists():
        return {}
    repair_results(folder)  # a half-written last line from a kill -9
    stored: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in read_results(folder):
        stored.setdefault((str(row["prompt"]), int(row["test_index"])), []).append(row)
    return stored


def _run_locked(
    args: Args,
    plan: Plan,
    space: Space,
    cells: dict[int, int],
    budget: int,
    folder: Path,
    lock: RunLock,
    result_cache: Any,
    code: CodeMode,
    argv: list[str] | None,
    progress: OptimizeProgress,
    before: dict[str, Any] | None,
) -> OptimizeResult:
    suite = space.suite
    stored = _stored_rows(folder) if before is not None else {}
    manifest: dict[str, Any] = dict(before or {})
    manifest.update(
        {
            "promptlab_version": __version__,
            "kind": "optimize",
            "status": "running",
            "started_at": manifest.get("started_at") or timestamp(),
            "finished_at": None,
            "command": argv if argv is not None else sys.argv,
            "suite": {
                "path": str(suite.path),
                "sha256": suite.sha256,
                "description": suite.description,
            },
            "project_root": str(suite.root),
            "git": git_state(suite.root),
            "files": suite.files,
            "optimize_args": args.record(),
            "prompt": {"label": space.prompt.label, "source": space.prompt.source},
            "model": plan.models[0].label,
            "seed": args.seed,
            "budget": budget,
            "space": report.space_record(space),
            "split": space.split.record(space.tests),
            "notes": suite.notes + space.notes,
        }
    )
    if before is not None:
        manifest.setdefault("resumed", []).append(
            {"at": timestamp(), "cells_stored": sum(len(v) for v in stored.values())}
        )
    atomic_write(folder / "split.json", report.dumps(manifest["split"]))
    report.write_manifest(folder, manifest)
    progress.start(budget)
    ev = Evaluator(
        suite,
        space.prompt,
        folder,
        code=code,
        cache=result_cache,
        budget=budget,
        cells=cells,
        stored=stored,
        events=EvalEvents(calls=progress.calls, model_loaded=progress.model_loaded),
    )
    trace = search.Trace(folder / "trace.jsonl")
    result = OptimizeResult(folder, "running", budget, notes=list(manifest["notes"]))
    try:
        inst = space.spec.instructions
        if inst is not None and inst.propose > 0:
            progress.phase(f"{inst.propose} instruction rewrites from the proposer")
            found, calls, rows = propose(
                space,
                folder,
                models=ev.models,
                code=code,
                cache=result_cache,
                seed=args.seed,
                stats=ev.stats,
            )
            ev.used += calls
            progress.calls(ev.used)
            trace.write("proposals", calls=calls, proposed=found, calls_used=ev.used)
            space = build_space(suite, space.prompt, args.seed, found)
            manifest["space"] = report.space_record(space)
            manifest["proposals"] = [
                {"output": r.get("output"), "seed": r.get("seed")} for r in rows
            ]
        events = search.SearchEvents(phase=progress.phase, candidate=progress.candidate)
        # The held-out comparison is paid for up front: racing may spend only the rest.
        final = 2 * sum(cells[t] for t in space.split.held_out)
        ev.budget = budget - final
        found_search = search.race(space, ev, trace, seed=args.seed, events=events)
        ev.budget = budget
        verdict = search.held_out_verdict(space, ev, found_search, events)
        trace.write("verdict", **verdict.as_dict())
        result.search, result.verdict = found_search, verdict
        best = found_search.best
        if not best.is_baseline:
            _text, target = original_source(suite, space.prompt)
            best_path = write_optimized(
                suite, space.prompt, best, folder / "best.j2", seed=args.seed, tests=space.tests
            )
            result.best_template = best_path
            if verdict.better:
                result.written = write_optimized(
                    suite, space.prompt, best, target, seed=args.seed, tests=space.tests
                )
        result.status = "complete"
    except KeyboardInterrupt:
        result.status = "interrupted"
    except PromptlabError as exc:
        result.status, result.error = "failed", exc
        manifest["error"] = exc.one_line()
    except BaseException as exc:
        manifest["status"] = "failed"
        manifest["error"] = f"internal error: {type(exc).__name__}: {exc}"
        report.write_manifest(folder, manifest)
        raise
    finally:
        trace.close()
        ev.close()
    result.used = ev.used
    result.from_cache = ev.stats.cached
    result.ran = ev.stats.cells - ev.stats.cached
    result.reused = ev.reused
    manifest.update(
        {
            "status": result.status,
            "finished_at": timestamp(),
            "calls": {
                "budget": budget,
                "used": ev.used,
                "model": result.ran,
                "cache": result.from_cache,
                "stored_earlier": result.reused,
            },
            "models": ev.model_records,
        }
    )
    if result.search is not None and result.verdict is not None:
        summary = report.summary(space, result.search, result.verdict, manifest, result)
        manifest["verdict"] = summary["verdict"]
        report.write_outputs(folder, space, ev, result.search, result.verdict, summary)
        result.html = folder / "report.html"
    report.write_manifest(folder, manifest)
    del lock
    return result
