"""The one door through which a suite reaches the file system.

A suite can come from anywhere (a colleague, a pull request, a promptfoo example off the web), so
every file it names is opened here and nowhere else: prompt and template files and their
`{% include %}`s, test files, var files, check values, JSON schemas, grammars, chat templates,
rubric prompts, fake-backend rule files and Python files. `confine` is the check they all pass:

- the path is resolved with every symlink followed, and the *real* file must lie inside the
  project root (a link inside the project that points at /etc/passwd is refused);
- it must be a regular file (a FIFO would hang the read, /dev/zero would never end) of at most
  `MAX_FILE_BYTES`;
- a path that is outside the project on its face is refused before the file system is asked,
  so an error never tells whether a file outside the project exists.

Model weights are the one exception: GGUF files live in ~/models, the Hugging Face cache or LM
Studio's folder, so `models.resolve` reads them from anywhere, but only as regular files with
GGUF's magic bytes, and nothing of them reaches the output but their header facts.

The project root is the nearest folder above the suite that holds `.git` or `promptlab.toml`;
without one it is the suite's own folder. The search never climbs to the home folder or the
file-system root, so a suite saved in ~/Downloads cannot make all of ~ its project.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path, PurePosixPath

from promptlab.errors import InputError

MAX_FILE_BYTES = 64 * 1024 * 1024
PROJECT_MARKER = "promptlab.toml"
_GLOB_MAGIC = frozenset("*?[")


class FileRefused(InputError):
    """A file a suite named that promptlab will not read. `reason` says why, for callers (the
    template loader) that translate it into their own error type."""

    def __init__(self, message: str, *, reason: str, hint: str | None = None) -> None:
        self.reason = reason  # outside | missing | not-regular | too-big | unreadable
        super().__init__(message, hint=hint)


def find_project_root(start: Path) -> Path:
    """The nearest folder at or above `start` holding `.git` or promptlab.toml, else `start`."""
    here = start.resolve()
    stops = {Path(here.anchor)}
    with contextlib.suppress(RuntimeError, KeyError, OSError):  # no home (a bare container user)
        stops.add(Path.home().resolve())
    for folder in (here, *here.parents):
        if folder in stops and folder != here:
            break
        if (folder / ".git").exists() or (folder / PROJECT_MARKER).is_file():
            return folder
    return here


_OUTSIDE_HINT = (
    "move it inside the project (the git work tree or the folder holding promptlab.toml, "
    "else the suite's own folder)"
)


def _outside(where: str, shown: str, root: Path, real: Path | None = None) -> FileRefused:
    via = f" (a link to {real})" if real is not None else ""
    return FileRefused(
        f"{where}: {shown}{via} is outside the project {root}", reason="outside", hint=_OUTSIDE_HINT
    )


def confine(path: Path, root: Path, *, what: str, where: str, shown: str | None = None) -> Path:
    """The real path of `path` when it is a regular file inside `root`; FileRefused otherwise.

    `shown` is how the file is named in messages (the reference as written in the suite).
    """
    shown = shown or str(path)
    root = root.resolve()
    # Non-strict first: symlinks that exist are followed, the rest is normalized, and a path that
    # lands outside is refused without saying whether it exists.
    try:
        loose = path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, a permission problem
        raise FileRefused(
            f"{where}: cannot resolve {shown}: {getattr(exc, 'strerror', None) or exc}",
            reason="unreadable",
        ) from None
    if not loose.is_relative_to(root):
        raise _outside(where, shown, root, loose if path.is_symlink() else None)
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        raise FileRefused(
            f"{where}: {what} {shown} not found (looked at {loose})",
            reason="missing",
            hint="check the path; it is relative to the suite file",
        ) from None
    except (OSError, RuntimeError) as exc:
        raise FileRefused(
            f"{where}: cannot resolve {shown}: {getattr(exc, 'strerror', None) or exc}",
            reason="unreadable",
        ) from None
    if not real.is_relative_to(root):  # a link swapped in between the two resolves
        raise _outside(where, shown, root, real)
    check_regular(real, what, where, shown)
    return real


def check_regular(
    path: Path,
    what: str,
    where: str,
    shown: str | None = None,
    *,
    max_bytes: int | None = MAX_FILE_BYTES,
) -> os.stat_result:
    """Refuse directories, devices, FIFOs and sockets, and files over `max_bytes`."""
    shown = shown or str(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise FileRefused(
            f"{where}: {what} {shown} not found", reason="missing", hint="check the path"
        ) from None
    except OSError as exc:
        raise FileRefused(
            f"{where}: cannot read {shown}: {exc.strerror or exc}", reason="unreadable"
        ) from None
    if stat.S_ISDIR(st.st_mode):
        raise FileRefused(
            f"{where}: {shown} is a directory, expected a {what}", reason="not-regular"
        )
    if not stat.S_ISREG(st.st_mode):
        raise FileRefused(
            f"{where}: {shown} is not a regular file (a device, pipe or socket), expected a {what}",
            reason="not-regular",
            hint="point at a plain file",
        )
    if max_bytes is not None and st.st_size > max_bytes:
        raise FileRefused(
            f"{where}: {shown} is {st.st_size / 2**20:.0f} MiB; a {what} may hold at most "
            f"{max_bytes // 2**20} MiB",
            reason="too-big",
            hint="split it into smaller files",
        )
    return st


def read_text(path: Path, what: str = "file", *, where: str | None = None) -> str:
    """Read a regular UTF-8 text file of bounded size, refusing binaries with a message that says
    so. No confinement: for files named on the command line, or already passed through confine."""
    at = where or str(path)
    check_regular(path, what, at if where else str(path), str(path))
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)  # the file may have grown since the stat
    except OSError as exc:
        raise FileRefused(
            f"{path}: cannot read {what}: {exc.strerror or exc}", reason="unreadable"
        ) from None
    if len(raw) > MAX_FILE_BYTES:
        raise FileRefused(f"{path}: grew past {MAX_FILE_BYTES // 2**20} MiB", reason="too-big")
    if b"\x00" in raw[:8192]:
        raise InputError(
            f"{path}: is a binary file, not a text {what}", hint="point at a text file"
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: byte {exc.start} is not valid UTF-8",
            hint="save the file as UTF-8 text",
        ) from None


def read_confined(
    path: Path, root: Path, *, what: str, where: str, shown: str | None = None
) -> str:
    """`confine`, then `read_text` of the real file."""
    return read_text(confine(path, root, what=what, where=where, shown=shown), what)


def ref_target(ref: str, base: Path) -> Path:
    """The path a `file://` reference (or a bare path) names, relative to `base`, normalized so
    messages say prompts/x.j2 rather than evals/../prompts/x.j2."""
    target = Path(ref.removeprefix("file://")).expanduser()
    if not target.is_absolute():
        target = base / target
    return Path(os.path.normpath(target))


def resolve_ref(
    ref: str, *, base: Path, root: Path, what: str, where: str, globs: bool = True
) -> list[Path]:
    """The files a `file://` reference names, each passed through `confine`: one file, or (with
    globs) every file a pattern matches, sorted. Paths come back as named (normalized, links not
    followed) so labels and suffixes are the user's. Matches are found under the pattern's
    literal prefix, which must itself lie inside the project, and never by following a symlinked
    folder."""
    raw = ref.removeprefix("file://")
    if not globs or not any(ch in raw for ch in _GLOB_MAGIC):
        target = ref_target(raw, base)
        confine(target, root, what=what, where=where, shown=raw)
        return [target]
    parts = PurePosixPath(raw).parts
    literal: list[str] = []
    for part in parts:
        if any(ch in part for ch in _GLOB_MAGIC):
            break
        literal.append(part)
    rest = parts[len(literal) :]
    if ".." in rest:
        raise FileRefused(
            f"{where}: {raw}: '..' after a wildcard could leave the project",
            reason="outside",
            hint="put the .. parts before the first wildcard",
        )
    anchor = ref_target(str(PurePosixPath(*literal)) if literal else ".", base)
    root = root.resolve()
    if not anchor.resolve().is_relative_to(root):
        raise _outside(where, raw, root)
    # pathlib's glob (unlike glob.glob) never descends through a symlinked folder, so `**` cannot
    # loop or wander out; hidden files are skipped, as glob.glob and promptfoo's glob do.
    matches = sorted(
        p
        for p in anchor.glob(str(PurePosixPath(*rest)))
        if not any(name.startswith(".") for name in p.relative_to(anchor).parts)
    )
    if not matches:
        raise FileRefused(
            f"{where}: no files match {raw}", reason="missing", hint="check the glob pattern"
        )
    for p in matches:
        confine(p, root, what=what, where=where, shown=str(p))
    return matches
