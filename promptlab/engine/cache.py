"""The content-addressed result cache: a SQLite database in the project.

A key is the sha256 of everything that can change a result: the model file's sha256, the
llama.cpp build (llama-cpp-python's version and its shared libraries' sha256), every load and
generation setting, the exact text the model receives, the grammar and the seed. So an
unchanged rerun is served from here without loading the model, a changed template misses only
for its own cells, and repeats (different seeds) never share an answer.

Concurrency: WAL mode and a busy timeout let two runs read and write at once; every write is
its own short transaction, and entries are immutable (same key, same value), so the last writer
winning is harmless. results.jsonl stays the source of truth; losing a cache write loses nothing.

Damage: a database that cannot be opened at all stops the run before anything is written. Damage
further in (one bad table page) shows only when a lookup reaches it; such an entry is a miss,
recomputed like any other, counted in `read_errors` and named once in a note, so a run (and its
--resume) never stops midway over a cache that is only an optimisation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptlab.errors import PromptlabError

SCHEMA_VERSION = 1


class CacheError(PromptlabError):
    """The cache database cannot be used (corrupt, not SQLite, unwritable)."""


def default_path(root: Path) -> Path:
    env = os.environ.get("PROMPTLAB_CACHE_DB")
    return Path(env).expanduser() if env else root / ".promptlab" / "cache.sqlite"


def make_key(**parts: Any) -> str:
    blob = json.dumps(
        {"v": SCHEMA_VERSION, **parts}, sort_keys=True, ensure_ascii=False, default=str
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class Cache:
    def __init__(self, path: Path, *, read: bool = True, write: bool = True) -> None:
        self.path = path
        self.read = read
        self.write = write
        self.hits = 0
        self.misses = 0
        self.writes = 0
        self.write_errors = 0
        self.read_errors = 0
        self.first_read_error = ""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(path), timeout=30, isolation_level=None)
            self.db.execute("PRAGMA busy_timeout = 30000")
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute(
                "PRAGMA synchronous = NORMAL"
            )  # WAL: durable enough, no fsync per write
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS entries ("
                " key TEXT PRIMARY KEY, kind TEXT NOT NULL, value TEXT NOT NULL, created REAL NOT NULL)"
            )
            self.db.execute("SELECT count(*) FROM entries WHERE key = ''").fetchone()
        except (sqlite3.DatabaseError, OSError) as exc:
            raise self._error(exc) from None

    def _error(self, exc: BaseException) -> CacheError:
        return CacheError(
            f"{self.path}: the result cache cannot be used ({type(exc).__name__}: {exc})",
            hint=f"run with --no-cache, or delete {self.path} to start a fresh cache",
        )

    def get(self, kind: str, key: str) -> Any:
        if not self.read:
            return None
        try:
            row = self.db.execute(
                "SELECT value FROM entries WHERE key = ? AND kind = ?", (key, kind)
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            self.read_errors += 1
            if self.read_errors == 1:
                self.first_read_error = f"{type(exc).__name__}: {exc}"
            self.misses += 1
            return None
        if row is None:
            self.misses += 1
            return None
        try:
            value = json.loads(row[0])
        except ValueError:
            self.misses += 1  # a damaged entry is a miss; the new result replaces it
            return None
        self.hits += 1
        return value

    def put(self, kind: str, key: str, value: Any) -> None:
        if not self.write:
            return
        blob = json.dumps(value, ensure_ascii=False, default=float)
        try:
            self.db.execute(
                "INSERT OR REPLACE INTO entries (key, kind, value, created) VALUES (?, ?, ?, ?)",
                (key, kind, blob, time.time()),
            )
            self.writes += 1
        except sqlite3.DatabaseError as exc:
            # Disk full or a lock held too long: the run goes on, it just caches less.
            self.write_errors += 1
            if self.write_errors == 1:
                self.first_write_error = f"{type(exc).__name__}: {exc}"

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": str(self.path),
            "read": self.read,
            "write": self.write,
            "hits": self.hits,
            "misses": self.misses,
            "writes": self.writes,
        }
        if self.write_errors:
            out["write_errors"] = self.write_errors
            out["first_write_error"] = getattr(self, "first_write_error", "")
        if self.read_errors:
            out["read_errors"] = self.read_errors
            out["first_read_error"] = self.first_read_error
        return out

    def note(self) -> str | None:
        """What the person should hear about this session's damaged entries, if any."""
        if not self.read_errors:
            return None
        return (
            f"{self.path}: {self.read_errors} cache lookup(s) failed ({self.first_read_error}); "
            f"those results were computed again. The cache is damaged: delete {self.path} to "
            "start a fresh one"
        )

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.close()


@dataclass(frozen=True)
class CacheOptions:
    use: bool = True  # --no-cache turns it off: neither read nor written
    refresh: bool = False  # --refresh: run everything again and overwrite the cached results
    path: Path | None = None  # --cache-db; default <project>/.promptlab/cache.sqlite


def open_cache(opts: CacheOptions, root: Path) -> Cache | None:
    """The cache a run (or an optimization) uses under these options; None with --no-cache."""
    if not opts.use:
        return None
    return Cache(opts.path or default_path(root), read=not opts.refresh, write=True)
