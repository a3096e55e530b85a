"""The run folder: results.jsonl (appended per cell), manifest.json, and atomic file writes.

results.jsonl is the source of truth: every report is rebuilt from it, and each line is flushed
as its cell finishes, so a crash or kill loses nothing already done.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from promptlab.errors import InputError

RESULTS = "results.jsonl"
MANIFEST = "manifest.json"


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write via a temporary file and rename, so readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()
        raise


def default_run_dir(root: Path, suite: Path) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = root / "results" / f"{suite.stem}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def check_run_dir(path: Path) -> None:
    """Refuse to mix two runs in one folder (checked before anything is written)."""
    if path.exists() and not path.is_dir():
        raise InputError(
            f"-o {path}: exists and is not a folder", hint="choose another output folder"
        )
    if (path / RESULTS).exists() or (path / MANIFEST).exists():
        raise InputError(
            f"-o {path}: already holds a run", hint="choose another folder or delete this one"
        )


class RunWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self._f: IO[str] = (path / RESULTS).open("a", encoding="utf-8")

    def append(self, row: dict[str, Any]) -> None:
        # One line per cell, flushed at once: a kill -9 leaves at most a half line at the end,
        # which read_results skips.
        self._f.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")
        self._f.flush()

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write(
            self.path / MANIFEST,
            json.dumps(manifest, indent=2, ensure_ascii=False, default=_json_default) + "\n",
        )

    def close(self) -> None:
        self._f.close()


def _json_default(value: Any) -> Any:
    # numpy scalars (llama.cpp logprobs are float32) and dates from YAML
    for cast in (float, str):
        with contextlib.suppress(TypeError, ValueError):
            return cast(value)
    return repr(value)


def read_results(path: Path) -> list[dict[str, Any]]:
    file = path / RESULTS
    if not file.exists():
        raise InputError(f"{path}: no {RESULTS} here", hint="pass the folder of a promptlab run")
    rows = []
    with file.open(encoding="utf-8") as f:
        lines = f.read().split("\n")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if n >= len(lines) - 1:  # the half-written last line of an interrupted run
                continue
            raise InputError(
                f"{file}:{n}: corrupt result line",
                hint="delete the line and rerun `promptlab report`",
            ) from None
    return rows


def read_manifest(path: Path) -> dict[str, Any]:
    file = path / MANIFEST
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            f"{path}: no {MANIFEST} here", hint="pass the folder of a promptlab run"
        ) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{file}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise InputError(f"{file}: manifest must be a JSON object")
    return data
