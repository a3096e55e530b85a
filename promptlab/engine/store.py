"""The run folder: results.jsonl (appended per cell), manifest.json, and atomic file writes.

results.jsonl is the source of truth: every report is rebuilt from it, and each line is flushed
as its cell finishes, so a crash or kill loses nothing already done.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import unicodedata
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from promptlab.errors import InputError, PromptlabError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are not guarded against a second writer
    fcntl = None  # type: ignore[assignment]

RESULTS = "results.jsonl"
MANIFEST = "manifest.json"
LOCK = ".lock"


class StoreError(PromptlabError):
    """A run folder file cannot be written (disk full, read-only, quota): exit 1, one line."""


def _store_error(path: Path, exc: OSError) -> StoreError:
    return StoreError(
        f"{path}: cannot write: {exc.strerror or exc}",
        hint="free some space or choose another folder with -o; "
        "`promptlab run --resume` finishes an interrupted run",
    )


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux), since
    setting it to read it back races with other threads creating files."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write via a temporary file and rename, so readers never see a partial file.

    The file gets the mode any new file would (0666 less the umask), like results.jsonl:
    mkstemp's 0600 would hide reports from the group a project is shared with.

    An OSError (disk full, read-only folder) leaves the old file in place and becomes a
    StoreError."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _store_error(path, exc) from None
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        Path(tmp).replace(path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        if isinstance(exc, OSError):
            raise _store_error(path, exc) from None
        raise


# File names that say nothing about the suite: promptfoo calls every config promptfooconfig.yaml,
# so runs named after them would all be promptfooconfig-<time>, whatever project they belong to.
GENERIC_STEMS = frozenset(
    {
        "promptfooconfig",
        "promptfoo",
        "promptlab",
        "config",
        "suite",
        "eval",
        "evals",
        "evaluation",
        "test",
        "tests",
        "default",
    }
)
_MAX_NAME = 48


def slug(text: str) -> str:
    """Lowercase letters, digits and single dashes: safe in a folder name on every system."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    words = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return words[:_MAX_NAME].rstrip("-")


def run_name(suite: Path, description: str | None = None) -> str:
    """What runs of `suite` are called (run folders, `promptlab history NAME`): the file's stem,
    or where that is generic (promptfooconfig.yaml) a slug of the suite's description, else of
    its folder's name."""
    stem = suite.stem
    if stem.lower() not in GENERIC_STEMS:
        return stem
    folder = suite.resolve().parent.name
    for candidate in (description or "", folder):
        name = slug(candidate)
        if name and name not in GENERIC_STEMS:
            return name
    return stem


def default_run_dir(root: Path, suite: Path, name: str | None = None) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = root / "results" / f"{name or suite.stem}-{stamp}"
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


class RunLocked(PromptlabError):
    """Another promptlab process is writing this run folder: exit 1, nothing written."""


class RunLock:
    """An exclusive lock on a run folder for the whole run or resume, reports included.

    Two `run --resume` of one folder would otherwise both append the cells left (222 rows for
    120 cells). flock is advisory, taken without waiting, and released by the kernel when the
    process dies, so a kill -9 never leaves a stale lock behind; the lock file stays, holding
    the pid of its last holder for the refusal message."""

    def __init__(self, folder: Path) -> None:
        """Raises RunLocked when another process holds it, OSError when the folder cannot be
        created or the lock file opened."""
        self.folder = folder
        self._fd: int | None = None
        folder.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            return
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _lock_holder(fd)
            os.close(fd)
            by = f" (pid {holder})" if holder else ""
            raise RunLocked(
                f"{folder}: another promptlab process{by} is writing this run",
                hint="wait for it to finish, or stop it; then `promptlab run --resume` "
                "picks up what is left",
            ) from None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the last descriptor drops the flock


def _lock_holder(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode("ascii").strip() or "x")
    return None


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


def timestamp() -> str:
    """Now in local time with its UTC offset, to the second (a manifest's started_at and the like)."""
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def git_state(root: Path) -> dict[str, Any] | None:
    """The project's commit, branch and dirtiness for a manifest; None outside a git checkout."""
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
