"""Split GGUF models: llama.cpp's gguf-split layout, `NAME-00001-of-00003.gguf` and its siblings.

Each part is a GGUF file carrying `split.no` (from 0), `split.count` and `split.tensors.count`;
the first part also holds the model's metadata. llama.cpp is given the first part and opens the
others itself, at names it derives from the first one's (llama_split_path: `%s-%05d-of-%05d.gguf`
beside it). So a split model is valid only when every part sits beside the first under exactly
those names, and the header of the first part, not its name, says whether a file is split: a
whole model named like a part is loaded alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from promptlab.errors import InputError
from promptlab.models.gguf import GGUFInfo, read_gguf

_SHARD = re.compile(r"(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf", re.IGNORECASE)


@dataclass(frozen=True)
class Shard:
    """What a file's name says: part `number` (from 1) of `count` of the model `prefix`."""

    prefix: str  # may include folders, when parsed from a path inside a repo
    number: int
    count: int

    def name(self, number: int) -> str:
        return f"{self.prefix}-{number:05d}-of-{self.count:05d}.gguf"

    @property
    def names(self) -> list[str]:
        return [self.name(i) for i in range(1, self.count + 1)]


def shard_of(name: str) -> Shard | None:
    """The part a file name (or a path inside a repo) names, or None when it names none."""
    m = _SHARD.fullmatch(name)
    if m is None or int(m["count"]) < 1:
        return None
    return Shard(m["prefix"], int(m["no"]), int(m["count"]))


def not_first(shard: Shard) -> str:
    """The one-line reason a later part cannot be loaded on its own."""
    return f"part {shard.number} of {shard.count} of a split GGUF model"


def parts(path: Path, where: str, info: GGUFInfo | None = None) -> list[Path]:
    """Every file llama.cpp reads for `path`, first part first: just `path` for a whole model.

    Raises InputError, naming `where`, for a later part (llama.cpp must be given the first), a
    missing part, or a part whose header does not match its name.
    """
    shard = shard_of(path.name)
    if shard is None:  # llama.cpp cannot find the parts of a split without this naming
        return [path]
    info = info or read_gguf(path)
    if info.split_count == 1:
        return [path]
    check_part(path, shard, info, where)
    if shard.number != 1:
        raise InputError(
            f"{where}: {path.name} is {not_first(shard)}",
            hint=f"name its first part, {shard.name(1)}: llama.cpp loads the others beside it",
        )
    paths = [path.with_name(name) for name in shard.names]
    for number, part in enumerate(paths[1:], start=2):
        if not part.is_file():
            raise InputError(
                f"{where}: {path.name} is part 1 of {shard.count} of a split GGUF model, "
                f"and part {number} ({part.name}) is not beside it",
                hint="download every part into the same folder",
            )
        check_part(part, Shard(shard.prefix, number, shard.count), read_gguf(part), where)
    return paths


def check_part(path: Path, shard: Shard, info: GGUFInfo, where: str) -> None:
    """A part's header must say what its name says, or llama.cpp refuses the model."""
    if info.split_count == shard.count and info.split_no == shard.number - 1:
        return
    if info.split_count == 1:
        said = "a whole model"
    elif info.split_no is None:
        said = f"one of {info.split_count} parts, with no split.no"
    else:
        said = f"part {info.split_no + 1} of {info.split_count}"
    raise InputError(
        f"{where}: {path.name} is named part {shard.number} of {shard.count} of a split GGUF "
        f"model, but its header says {said}",
        hint="re-download the model's parts (or split it again with llama-gguf-split)",
    )
