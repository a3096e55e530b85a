"""Hugging Face hub models: `hf://OWNER/REPO/FILE.gguf` and `hf://OWNER/REPO:QUANT`.

Everything goes through `huggingface_hub` itself, so the user's hub cache, token (HF_TOKEN or
`hf auth login`), endpoint (HF_ENDPOINT) and offline switch (HF_HUB_OFFLINE) apply unchanged, and
downloads show the library's own progress bar. The cache is always asked first
(`local_files_only=True`): a model that is already there resolves without a network call, so a
run is reproducible on a plane. The commit the file came from is pinned in the run manifest.

A split model (NAME-00001-of-00003.gguf, see split.py) resolves to its first part once every
part is in the cache: the shorthand picks the split as one model, naming the first part fetches
the others, and they all come from the first part's commit.

`huggingface_hub` is imported only in models/ (here, and by catalog.py to list the hub cache) and
only when an `hf://` model is resolved or listed: it costs ~0.25 s of start-up that
`promptlab --help`, and any run without an hf:// model, must not pay.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptlab.errors import BackendError, InputError
from promptlab.models import split
from promptlab.models.gguf import read_gguf

if TYPE_CHECKING:
    from huggingface_hub import HfApi

PREFIX = "hf://"
DEFAULT_REVISION = "main"

# hf://OWNER/REPO[@REV]/PATH.gguf[@REV]  or  hf://OWNER/REPO[@REV]:QUANT[@REV]
_REF = re.compile(
    r"(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)"
    r"(?:@(?P<rev1>[^/:@]+))?"
    r"(?:/(?P<file>[^@:]+\.gguf)|:(?P<quant>[A-Za-z0-9_]+))"
    r"(?:@(?P<rev2>[^@]+))?",
    re.IGNORECASE,
)
_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class Ref:
    repo: str
    file: str | None  # a path inside the repo, or None for a quant shorthand
    quant: str | None
    revision: str

    @property
    def display(self) -> str:
        tail = f"/{self.file}" if self.file else f":{self.quant}"
        rev = f"@{self.revision}" if self.revision != DEFAULT_REVISION else ""
        return f"{PREFIX}{self.repo}{tail}{rev}"


def parse(spec: str, where: str) -> Ref:
    m = _REF.fullmatch(spec.removeprefix(PREFIX))
    if m is None or (m["rev1"] and m["rev2"]) or (m["file"] and ".." in m["file"].split("/")):
        raise InputError(
            f"{where}: {spec!r} is not a hub model reference",
            hint="write hf://OWNER/REPO/FILE.gguf, hf://OWNER/REPO:Q4_K_M, "
            "optionally with @REVISION at the end",
        )
    return Ref(m["repo"], m["file"], m["quant"], m["rev1"] or m["rev2"] or DEFAULT_REVISION)


def quant_matches(filename: str, quant: str) -> bool:
    """Whether a file's name carries `quant` as a whole token: Q4_K matches model-Q4_K.gguf but
    not model-Q4_K_M.gguf (case-insensitive, as repos spell quants both ways)."""
    name = filename.rsplit("/", 1)[-1]
    pattern = rf"(?:^|[^A-Za-z0-9]){re.escape(quant)}(?:[.-][^/]*)?\.gguf"
    return re.search(pattern + "$", name, re.IGNORECASE) is not None


def _pick(ref: Ref, files: list[str], where: str, place: str) -> str | None:
    """The one model carrying the quant: its .gguf file, or the first part's name when it is
    split in parts (NAME-00001-of-00003.gguf); None when there is none (error if several)."""
    assert ref.quant is not None
    models: dict[str, list[str]] = {}  # a model's file (a split's first part) → its files
    for f in sorted(files):
        if f.lower().endswith(".gguf") and quant_matches(f, ref.quant):
            shard = split.shard_of(f)
            models.setdefault(shard.name(1) if shard else f, []).append(f)
    if len(models) > 1:
        names = [
            n + (f" ({len(fs)} parts)" if split.shard_of(n) else "") for n, fs in models.items()
        ]
        raise InputError(
            f"{where}: {len(models)} models in {ref.repo} {place} carry {ref.quant}: "
            + ", ".join(names[:8]),
            hint=f"name one: hf://{ref.repo}/{next(iter(models))}",
        )
    return next(iter(models), None)


def _count(filename: str) -> int:
    shard = split.shard_of(filename)
    return shard.count if shard else 1


def _missing(filename: str, files: list[str]) -> list[str]:
    """The parts of a split model's first part `filename` that `files` lacks (none for a file
    not named as a part: the first part's header decides once it is here)."""
    shard = split.shard_of(filename)
    present = set(files)
    return [n for n in shard.names if n not in present] if shard else []


def _cached_files(repo: str, revision: str) -> tuple[str, list[str]] | None:
    """The commit `revision` points at in the local cache, and the files cached for it."""
    from huggingface_hub import constants  # noqa: PLC0415
    from huggingface_hub.file_download import repo_folder_name  # noqa: PLC0415

    storage = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo, repo_type="model")
    commit = revision
    if not _COMMIT.fullmatch(revision):
        try:
            commit = (storage / "refs" / revision).read_text().strip()
        except OSError:
            return None
    snapshot = storage / "snapshots" / commit
    if not snapshot.is_dir():
        return None
    files = [p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()]
    return commit, files


def _api() -> HfApi:
    from huggingface_hub import HfApi  # noqa: PLC0415

    return HfApi()


def _offline() -> bool:
    from huggingface_hub import constants  # noqa: PLC0415

    return constants.is_offline_mode()


def resolve(spec: str, where: str) -> tuple[Path, dict[str, Any]]:
    """The local path of a hub model (downloading it once) and the facts the manifest records."""
    ref = parse(spec, where)
    try:
        with _quiet_library():
            path = _resolve(ref, where)
    except InputError:
        raise
    except Exception as exc:  # huggingface_hub's errors: repository, revision, file, network
        raise _error(ref, exc, where) from None
    return path, facts(ref, path)


@contextlib.contextmanager
def _quiet_library() -> Iterator[None]:
    """Mute huggingface_hub's warnings (each retry of an unreachable endpoint logs a line), so a
    failure is one error line; its progress bars do not depend on this level. HF_HUB_VERBOSITY,
    when set, wins."""
    import huggingface_hub  # noqa: F401, PLC0415 - it sets its logger's level when imported

    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    if "HF_HUB_VERBOSITY" not in os.environ:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _resolve(ref: Ref, where: str) -> Path:
    filename = ref.file
    revision = ref.revision
    if filename is not None:
        shard = split.shard_of(filename)
        # Told by the name, before a download: a later part of a 50 GB model is not fetched
        # only to be refused (llama.cpp loads a split only from its first part).
        if shard is not None and shard.number != 1:
            head = Ref(ref.repo, shard.name(1), None, ref.revision)
            raise InputError(
                f"{where}: {ref.display} is {split.not_first(shard)}",
                hint=f"name its first part, {head.display}: promptlab downloads the others",
            )
    else:
        cached = _cached_files(ref.repo, revision)
        partial = False
        if cached is not None:
            name = _pick(ref, cached[1], where, f"(cached commit {cached[0][:12]})")
            # A split model with parts missing from the cache goes to the hub's listing below.
            partial = name is not None and bool(_missing(name, cached[1]))
            if name is not None and not partial:
                filename, revision = name, cached[0]
        if filename is None:
            if _offline() and partial:
                raise InputError(
                    f"{where}: the hub cache holds only some parts of {ref.display}, and "
                    "HF_HUB_OFFLINE is set",
                    hint="unset HF_HUB_OFFLINE to download the others",
                )
            if _offline():
                raise InputError(
                    f"{where}: no cached file of {ref.repo} carries {ref.quant}, and HF_HUB_OFFLINE is set",
                    hint="unset HF_HUB_OFFLINE to download it, or name a cached file",
                )
            filename = _listed(ref, revision, where)
            # Downloaded at the revision asked for, not the listing's commit, so the library
            # records refs/<revision> and the shorthand resolves offline next time; the commit
            # the file came from is what the manifest pins.
    first = _fetch(ref, filename, revision, where)
    shard = split.shard_of(filename)
    if shard is None:
        return first
    info = read_gguf(first)
    if info.split_count == 1:  # a whole model named like a part: llama.cpp loads it alone
        return first
    split.check_part(first, shard, info, where)
    # The other parts from the commit the first came from, so a push in between never mixes two
    # revisions of one model; they land in the same snapshot folder, beside the first.
    commit = commit_of(first) or revision
    for number, name in enumerate(shard.names[1:], start=2):
        _fetch(ref, name, commit, where, part=(number, shard.count))
    split.parts(first, where, info)  # every part's header says the part its name says
    return first


def _listed(ref: Ref, revision: str, where: str) -> str:
    """The file of the model the shorthand names, from the hub's listing of the repository."""
    info = _api().model_info(ref.repo, revision=revision)
    files = [s.rfilename for s in info.siblings or []]
    filename = _pick(ref, files, where, f"at {revision}")
    if filename is None:
        ggufs = [f for f in files if f.lower().endswith(".gguf")]
        raise InputError(
            f"{where}: no .gguf file in {ref.repo} at {revision} carries {ref.quant}",
            hint=f"its GGUF files: {', '.join(ggufs[:10])}"
            if ggufs
            else "the repository holds no .gguf files",
        )
    missing = _missing(filename, files)
    if missing:
        raise InputError(
            f"{where}: {ref.display} is a split GGUF model in {_count(filename)} parts, and "
            f"{ref.repo} at {revision} lacks {', '.join(missing)}",
            hint="pick another quant, or ask the repository's owner to upload the missing parts",
        )
    return filename


def _fetch(
    ref: Ref, filename: str, revision: str, where: str, part: tuple[int, int] | None = None
) -> Path:
    """One file from the hub cache, or downloaded into it (`part`: which part of a split)."""
    from huggingface_hub import hf_hub_download  # noqa: PLC0415
    from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError  # noqa: PLC0415

    what = f"part {part[0]} of {part[1]} of {ref.display} ({filename})" if part else ref.display
    try:
        return Path(hf_hub_download(ref.repo, filename, revision=revision, local_files_only=True))
    except LocalEntryNotFoundError:
        if _offline():
            raise InputError(
                f"{where}: {what} is not in the hub cache, and HF_HUB_OFFLINE is set",
                hint="unset HF_HUB_OFFLINE to download it",
            ) from None
    try:
        return Path(hf_hub_download(ref.repo, filename, revision=revision))
    except RemoteEntryNotFoundError:
        if part is None:
            raise  # _error names the file the reference names
        raise InputError(
            f"{where}: {ref.display} is a split GGUF model in {part[1]} parts, and {ref.repo} "
            f"has no {filename} at {revision[:12]}",
            hint="pick another quant or file, or ask the repository's owner to upload it",
        ) from None


def _error(ref: Ref, exc: Exception, where: str) -> Exception:
    from huggingface_hub import constants  # noqa: PLC0415
    from huggingface_hub import errors as hf  # noqa: PLC0415

    name = ref.display
    if isinstance(exc, hf.GatedRepoError):
        return InputError(
            f"{where}: {ref.repo} is gated",
            hint="accept its terms on the hub, then log in (`hf auth login`) or set HF_TOKEN",
        )
    if isinstance(exc, hf.RepositoryNotFoundError):
        return InputError(
            f"{where}: hub repository {ref.repo} not found (or private)",
            hint="check the name; for a private repo log in (`hf auth login`) or set HF_TOKEN",
        )
    if isinstance(exc, hf.RevisionNotFoundError):
        return InputError(
            f"{where}: revision {ref.revision} of {ref.repo} not found",
            hint="use a branch, tag or commit that exists",
        )
    if isinstance(exc, hf.RemoteEntryNotFoundError):
        return InputError(
            f"{where}: {ref.repo} has no file {ref.file} at {ref.revision}",
            hint=f"list its files with `hf models ls {ref.repo}`, or use hf://{ref.repo}:QUANT",
        )
    import httpx2  # noqa: PLC0415 - huggingface_hub's HTTP client

    if isinstance(
        exc, hf.LocalEntryNotFoundError | hf.OfflineModeIsEnabled | httpx2.TransportError
    ):
        return BackendError(
            f"{where}: cannot reach {constants.ENDPOINT} to download {name}, and it is not cached",
            hint="check the network (or HF_ENDPOINT), then run again",
        )
    text = " ".join(str(exc).split())[:200]
    return BackendError(f"{where}: downloading {name} failed: {type(exc).__name__}: {text}")


def commit_of(path: Path) -> str | None:
    """The commit of a file in the hub cache: .../snapshots/<commit>/<file>."""
    parts = path.parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "snapshots" and i + 1 < len(parts) and _COMMIT.fullmatch(parts[i + 1]):
            return parts[i + 1]
    return None


def facts(ref: Ref, path: Path) -> dict[str, Any]:
    commit = commit_of(path)
    file = ref.file
    if file is None and commit is not None:
        after = path.parts[path.parts.index(commit) + 1 :]
        file = "/".join(after)
    record: dict[str, Any] = {
        "repo": ref.repo,
        "file": file,
        "quant": ref.quant,
        "revision": ref.revision,
        "commit": commit,
    }
    if file is not None and split.shard_of(path.name):
        paths = split.parts(path, "model")
        if len(paths) > 1:  # every part came from `commit` (see _resolve)
            folder = file.rpartition("/")[0]
            record["parts"] = [f"{folder}/{p.name}" if folder else p.name for p in paths]
    return {"source": "hf", "hf": record}
