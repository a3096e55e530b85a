"""Models by name: `ollama:NAME[:TAG]` and `hf://OWNER/REPO/...` resolve to a local GGUF file.

`models.resolve` hands these specs here; everything after resolution (the GGUF header, the cache
key by file content, the in-process llama.cpp backend) is the same as for a plain .gguf path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from promptlab.errors import InputError
from promptlab.models import hub, ollama, split


def is_source(spec: str) -> bool:
    return spec.startswith((ollama.PREFIX, hub.PREFIX))


def resolve(spec: str, where: str) -> Path:
    """The local GGUF file a model name points at (downloaded once for hf://)."""
    if spec.startswith(ollama.PREFIX):
        return ollama.resolve(spec, where)[0]
    return hub.resolve(spec, where)[0]


def source_record(spec: str, path: Path) -> dict[str, Any]:
    """Where a resolved model came from, for the run manifest: Ollama's manifest, template and
    params; the hub repo, file and pinned commit. Empty for a plain path or alias."""
    if spec.startswith(ollama.PREFIX):
        return ollama.find(spec, "model").facts()
    if spec.startswith(hub.PREFIX):
        return hub.facts(hub.parse(spec, "model"), path)
    return {}


def default_label(spec: str) -> str | None:
    """The label reports show for a model name: the name itself, minus the scheme."""
    if spec.startswith(ollama.PREFIX):
        return spec.removeprefix(ollama.PREFIX)
    if spec.startswith(hub.PREFIX):
        try:
            ref = hub.parse(spec, "model")
        except InputError:
            return None  # resolving reports it, naming the suite's line
        if ref.file:
            shard = split.shard_of(Path(ref.file).name)  # a split model is named, not its part
            return shard.prefix if shard else Path(ref.file).stem
        return f"{ref.repo.rsplit('/', 1)[-1]}:{ref.quant}"
    return None
