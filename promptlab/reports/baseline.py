"""The project's baseline run: the record `promptlab baseline set` writes, and its readers.

The record is `.promptlab/baseline.json`: the run folder (relative to the project when it lies
inside it, so the project can move), when it was set, and the run's suite, start time and git
state. `compare` given one run, and `--max-regression` without `--baseline`, compare against it.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from promptlab.engine.store import MANIFEST, atomic_write, read_manifest
from promptlab.errors import InputError


def project_of(run: Path) -> Path:
    """The project a run belongs to: its manifest's project_root, else the one holding it."""
    from promptlab.files import find_project_root  # noqa: PLC0415

    try:
        root = read_manifest(run).get("project_root")
    except InputError:
        root = None
    if isinstance(root, str) and Path(root).is_dir():
        return Path(root)
    return find_project_root(run if run.is_dir() else Path.cwd())


def baseline_file(project: Path) -> Path:
    return project / ".promptlab" / "baseline.json"


def set_baseline(run: Path, project: Path) -> Path:
    """Record `run` as the project's baseline; returns the file written."""
    if not run.is_dir():
        raise InputError(f"baseline set {run}: not a folder", hint="pass the folder of a run")
    manifest = read_manifest(run)
    resolved = run.resolve()
    try:
        stored = resolved.relative_to(project.resolve()).as_posix()
    except ValueError:
        stored = str(resolved)
    record = {
        "run": stored,
        "set_at": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
        "suite": (manifest.get("suite") or {}).get("path"),
        "started_at": manifest.get("started_at"),
        "git": manifest.get("git"),
    }
    file = baseline_file(project)
    file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(file, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return file


def read_baseline(project: Path) -> dict[str, Any] | None:
    file = baseline_file(project)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{file}: unreadable baseline: {exc}", hint="promptlab baseline set RUN (or clear)"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("run"), str):
        raise InputError(f"{file}: not a baseline record", hint="promptlab baseline set RUN")
    return data


def get_baseline(project: Path) -> Path | None:
    """The baseline run folder, or None when none is set. A baseline that vanished is an error."""
    record = read_baseline(project)
    if record is None:
        return None
    path = Path(record["run"])
    if not path.is_absolute():
        path = project / path
    if not (path / MANIFEST).is_file():
        raise InputError(
            f"the baseline {path} (from {baseline_file(project)}) is no longer a run folder",
            hint="promptlab baseline set RUN, or promptlab baseline clear",
        )
    return path


def clear_baseline(project: Path) -> bool:
    file = baseline_file(project)
    try:
        file.unlink()
    except FileNotFoundError:
        return False
    return True
