"""Earlier runs, from their manifests: `promptlab history`.

Runs are the folders under `<project>/results/` (and any other folder given) that hold a
manifest.json; a folder given directly may itself be a run. Pass rates come from each run's
results.jsonl, so interrupted and partial runs show what they finished. Runs are listed oldest
first; "templates changed" compares each run's template sha256s with the previous run of the
same suite.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from promptlab.engine.store import MANIFEST, read_results
from promptlab.errors import InputError
from promptlab.reports.compare import describe_commit, parse_time


@dataclass
class Rate:
    passed: int = 0
    cells: int = 0
    unchecked: int = 0  # of the cells: outputs no check gated, left out of the rate

    @property
    def rate(self) -> float | None:
        checked = self.cells - self.unchecked
        return self.passed / checked if checked else None

    def add(self, status: object) -> None:
        self.cells += 1
        self.passed += status == "pass"
        self.unchecked += status == "unchecked"


@dataclass
class RunInfo:
    folder: Path
    manifest: dict[str, Any]
    started: datetime | None
    suite: str
    status: str
    templates: dict[str, str]
    overall: Rate = field(default_factory=Rate)
    per_prompt: dict[str, Rate] = field(default_factory=dict)
    changed: list[str] | None = None  # None: the first run of its suite (nothing to compare)
    problem: str = ""  # results.jsonl missing or unreadable

    @property
    def commit(self) -> str:
        return describe_commit(self.manifest.get("git"))

    @property
    def date(self) -> str:
        return self.started.strftime("%Y-%m-%d %H:%M") if self.started else "?"


@dataclass
class History:
    runs: list[RunInfo]
    skipped: list[str] = field(default_factory=list)  # unreadable manifests


def _candidates(folders: Iterable[Path]) -> list[Path]:
    seen: dict[Path, None] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        if (folder / MANIFEST).is_file():
            seen[folder.resolve()] = None
            continue
        for child in sorted(folder.iterdir()):
            if child.is_dir() and (child / MANIFEST).is_file():
                seen[child.resolve()] = None
    return list(seen)


def _load(folder: Path) -> RunInfo:
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    if not isinstance(manifest, dict):
        raise ValueError("not a JSON object")
    suite = manifest.get("suite") or {}
    templates = manifest.get("templates") or {}
    info = RunInfo(
        folder=folder,
        manifest=manifest,
        started=parse_time(manifest.get("started_at")),
        suite=str(suite.get("path") or "?") if isinstance(suite, dict) else "?",
        status=str(manifest.get("status") or "?"),
        templates={str(k): str(v) for k, v in templates.items()}
        if isinstance(templates, dict)
        else {},
    )
    try:
        rows = read_results(folder)
    except InputError as exc:
        info.problem = exc.one_line()
        return info
    for row in rows:
        status = row.get("status")
        info.overall.add(status)
        info.per_prompt.setdefault(str(row.get("prompt")), Rate()).add(status)
    return info


def suite_matches(info: RunInfo, query: str, project: Path) -> bool:
    """SUITE is a suite file (as a path) or a suite name: the file's stem, or the run name
    (store.run_name: the description's slug for a generic promptfooconfig.yaml)."""
    recorded = info.suite
    if recorded in (query, Path(query).as_posix()) or query in (Path(recorded).stem, _name(info)):
        return True
    path = Path(query)
    args = info.manifest.get("run_args") or {}
    candidates = [project / recorded]
    if isinstance(args, dict) and isinstance(args.get("suite"), str):
        candidates.append(Path(args["suite"]))
    try:
        target = path.resolve()
        return any(c.resolve() == target for c in candidates)
    except OSError:
        return False


def _name(info: RunInfo) -> str | None:
    suite = info.manifest.get("suite")
    name = suite.get("name") if isinstance(suite, dict) else None
    return name if isinstance(name, str) else None


def project_for(suite: str | None, cwd: Path) -> Path:
    """Whose runs `promptlab history SUITE` lists: a SUITE that is a file belongs to the project
    around it (where `promptlab run SUITE` put its runs, wherever it was typed); else the
    project around the current folder."""
    from promptlab.files import find_project_root  # noqa: PLC0415

    if suite is not None:
        path = Path(suite).expanduser()
        if path.suffix in (".yaml", ".yml", ".json") and path.is_file():
            return find_project_root(path.resolve().parent)
    return find_project_root(cwd)


def history(project: Path, suite: str | None = None, runs: Iterable[Path] = ()) -> History:
    runs = list(runs)
    for folder in runs:
        if not folder.is_dir():
            raise InputError(f"--runs {folder}: not a folder", hint="pass a folder that holds runs")
    folders = [project / "results", *runs]
    result = History([])
    for folder in _candidates(folders):
        try:
            result.runs.append(_load(folder))
        except (OSError, ValueError) as exc:
            result.skipped.append(f"{folder}: {exc}")
    result.runs.sort(key=lambda r: (r.started is None, r.started or datetime.min, str(r.folder)))
    previous: dict[str, dict[str, str]] = {}
    for info in result.runs:
        before = previous.get(info.suite)
        if before is not None:
            info.changed = [
                *(label for label, sha in info.templates.items() if before.get(label, sha) != sha),
                *(f"+{label}" for label in info.templates if label not in before),
                *(f"-{label}" for label in before if label not in info.templates),
            ]
        previous[info.suite] = info.templates
    if suite is not None:
        result.runs = [r for r in result.runs if suite_matches(r, suite, project)]
    return result


@dataclass
class TemplateRow:
    run: RunInfo
    sha256: str
    changed: bool | None  # vs the previous listed run that had this template
    rate: Rate


def template_history(hist: History, label: str) -> list[TemplateRow]:
    """One template's pass rate across runs (all its models and settings), oldest first."""
    rows: list[TemplateRow] = []
    last: str | None = None
    for info in hist.runs:
        if label not in info.templates:
            continue
        sha = info.templates[label]
        rows.append(
            TemplateRow(
                info,
                sha,
                None if last is None else sha != last,
                info.per_prompt.get(label, Rate()),
            )
        )
        last = sha
    if not rows:
        known = sorted({t for r in hist.runs for t in r.templates})
        raise InputError(
            f"--template {label}: no listed run has a template with that label",
            hint=f"known labels: {', '.join(known)}" if known else "no runs found",
        )
    return rows
