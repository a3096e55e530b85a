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
from typing import Any

from promptlab.errors import InputError, PromptlabError

RESULTS = "results.jsonl"
MANIFEST = "manifest.json"


class StoreError(PromptlabError):
    """A run folder file cannot be written (disk full, read-only, quota): exit 1, one line."""


def _store_error(path: Path, exc: OSError) -> StoreError:
    return StoreError(
        f"{path}: cannot write: {exc.strerror or exc}",
        hint="free some space or choose another folder with -o; "
        "`promptlab run --resume` finishes an interrupted run",
    )


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write via a temporary file and rename, so readers never see a partial file.

    An OSError (disk full, read-only folder) leaves the old file in place and becomes a
    StoreError."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _store_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        Path(tmp).replace(path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        if isinstance(exc, OSError):
            raise _store_error(path, exc) from None
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
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(
                    f"-o {path}: {parent} is a file, not a folder",
                    hint="choose another output folder",
                )
            break
    if (path / RESULTS).exists() or (path / MANIFEST).exists():
        raise InputError(
            f"-o {path}: already holds a run", hint="choose another folder or delete this one"
        )


class RunWriter:
    def __init__(self, path: Path) -> None:
        """Raises OSError when the folder or results.jsonl cannot be created."""
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self._file = path / RESULTS
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0)
        self._fd: int | None = os.open(self._file, flags, 0o666)
        self._size = os.fstat(self._fd).st_size  # the end of the last whole line

    def append(self, row: dict[str, Any]) -> None:
        # One line per cell, written straight to the file (no buffer): a kill -9 leaves at most
        # a half line at the end, which read_results skips and --resume cuts.
        data = (json.dumps(row, ensure_ascii=False, default=_json_default) + "\n").encode("utf-8")
        assert self._fd is not None, "append after close"
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            # Disk full mid-line: cut the partial line so the file holds whole rows only.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise _store_error(self._file, exc) from None
        self._size += len(data)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write(
            self.path / MANIFEST,
            json.dumps(manifest, indent=2, ensure_ascii=False, default=_json_default) + "\n",
        )

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def _json_default(value: Any) -> Any:
    # numpy scalars (llama.cpp logprobs are float32) and dates from YAML
    for cast in (float, str):
        with contextlib.suppress(TypeError, ValueError):
            return cast(value)
    return repr(value)


def repair_results(path: Path) -> bool:
    """Cut a half-written last line (a run killed mid-write) so appending can resume cleanly.
    Returns whether anything was cut."""
    file = path / RESULTS
    if not file.exists():
        return False
    with file.open("r+b") as f:
        size = f.seek(0, 2)
        if size == 0:
            return False
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return False
        # Walk back block by block to the last newline; rows are small, so this reads little.
        end = size
        while end > 0:
            start = max(0, end - 65536)
            f.seek(start)
            block = f.read(end - start)
            cut = block.rfind(b"\n")
            if cut != -1:
                f.truncate(start + cut + 1)
                return True
            end = start
        f.truncate(0)
        return True


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
