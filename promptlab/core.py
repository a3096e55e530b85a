"""What each command does, as plain functions. The CLI parses arguments, calls one of these once
and prints the result; tests call them directly.

Data flow: suite (load_suite) → render (build_plan) → run (runner.execute) → store → report.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptlab import __version__
from promptlab.errors import InputError, PromptlabError
from promptlab.models import BUNDLED, find_gguf_files, gguf_info, search_dirs
from promptlab.plan import Plan, build_plan
from promptlab.runner import NoProgress, Progress, Stats, execute
from promptlab.store import RunWriter, check_run_dir, default_run_dir
from promptlab.suite import Suite, load_suite

if TYPE_CHECKING:
    from promptlab.report import ReportFiles


def _now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def prepare(
    path: Path,
    *,
    model: str | None = None,
    filter_pattern: str | None = None,
    limit: int | None = None,
    allow_code: bool = False,
) -> Plan:
    """Load, check and render a suite without loading any model."""
    suite = load_suite(path, model_override=model)
    return build_plan(suite, filter_pattern=filter_pattern, limit=limit, allow_code=allow_code)


def git_state(root: Path) -> dict[str, Any] | None:
    if shutil.which("git") is None or not (root / ".git").exists():
        return None

    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=False
        )
        return out.stdout.strip() if out.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    return {
        "commit": commit or None,
        "branch": git("rev-parse", "--abbrev-ref", "HEAD") or None,
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


@dataclass
class RunResult:
    folder: Path
    status: str  # complete | interrupted | failed
    stats: Stats
    reports: ReportFiles | None
    notes: list[str] = field(default_factory=list)
    error: PromptlabError | None = None


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
) -> RunResult:
    plan = prepare(
        path, model=model, filter_pattern=filter_pattern, limit=limit, allow_code=allow_code
    )
    if not plan.cells:
        raise InputError(
            f"--filter {filter_pattern!r} matched none of the {plan.total_cells} cells",
            hint="loosen the pattern",
        )
    suite = plan.suite
    folder = out if out is not None else default_run_dir(suite.root, suite.path)
    check_run_dir(folder)
    # Everything above can fail with exit 2 and nothing written; from here on we own a run folder.
    writer = RunWriter(folder)
    manifest: dict[str, Any] = {
        "promptlab_version": __version__,
        "status": "running",
        "started_at": _now(),
        "finished_at": None,
        "command": argv if argv is not None else sys.argv,
        "suite": {
            "path": _rel(suite.path, suite.root),
            "sha256": suite.sha256,
            "description": suite.description,
        },
        "project_root": str(suite.root),
        "git": git_state(suite.root),
        "templates": {p.label: p.sha256 for p in suite.prompts},
        "template_sources": {p.label: p.source for p in suite.prompts},
        "files": suite.files,
        "params": plan.sampling.__dict__ | {"stop": list(plan.sampling.stop)},
        "models": [],
        "selection": {
            "filter": filter_pattern,
            "limit": limit,
            "cells": len(plan.cells),
            "cells_in_suite": plan.total_cells,
        },
        "host": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
        "notes": suite.notes,
    }
    writer.write_manifest(manifest)

    def on_model(record: dict[str, Any]) -> None:
        manifest["models"].append(record)
        writer.write_manifest(manifest)

    stats = Stats()
    status, error = "complete", None
    try:
        stats = execute(plan, writer, progress or NoProgress(), on_model)
    except KeyboardInterrupt:
        status = "interrupted"
    except PromptlabError as exc:
        status, error = "failed", exc
    finally:
        writer.close()
        manifest["status"] = status
        manifest["finished_at"] = _now()
        if error is not None:
            manifest["error"] = error.one_line()
        writer.write_manifest(manifest)
    from promptlab.report import build_reports  # noqa: PLC0415 - pandas only when reporting

    reports = build_reports(folder)
    if stats.cells == 0:
        stats.cells = reports.totals["cells"]
        stats.passed, stats.failed, stats.errors = (
            reports.totals[k] for k in ("passed", "failed", "errors")
        )
    return RunResult(folder, status, stats, reports, suite.notes, error)


def report(folder: Path) -> ReportFiles:
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder", hint="pass the output folder of a run")
    from promptlab.report import build_reports  # noqa: PLC0415 - pandas only when reporting

    return build_reports(folder)


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)


# --- models --------------------------------------------------------------------------------


@dataclass
class ModelRow:
    name: str
    path: str | None
    size_bytes: int | None
    quantization: str | None
    architecture: str | None
    n_layer: int | None
    chat_template: bool | None
    note: str = ""


def list_models(project: Path) -> list[ModelRow]:
    rows: list[ModelRow] = []
    seen: set[Path] = set()
    for alias, bundled in BUNDLED.items():
        path = bundled.locate()
        if path is None:
            rows.append(
                ModelRow(
                    alias, None, None, None, None, None, None, f"not installed: {bundled.install}"
                )
            )
            continue
        seen.add(path.resolve())
        rows.append(_row(alias, path, gguf_info, bundled.description))
    for path in find_gguf_files(search_dirs(project)):
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        rows.append(_row(path.stem, path, gguf_info, ""))
    return rows


def _row(name: str, path: Path, reader: Any, note: str) -> ModelRow:
    try:
        info = reader(path)
    except PromptlabError as exc:
        return ModelRow(
            name, str(path), path.stat().st_size, None, None, None, None, exc.one_line()
        )
    return ModelRow(
        name,
        str(path),
        path.stat().st_size,
        info.quantization,
        info.architecture,
        info.n_layer,
        info.chat_template is not None,
        note,
    )


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
