"""A minimal GGUF metadata reader: the header key/values only, never the tensors.

Why not the `gguf` package? Its GGUFReader maps and indexes every tensor and every vocabulary
string as numpy views, which is slow for 262k-token vocabularies and pulls numpy into commands
like `validate` that should start instantly. We need a handful of scalars plus two token strings.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from promptlab.errors import InputError

MAGIC = b"GGUF"

# llama_ftype from llama.h: what `general.file_type` means.
FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
}

# GGUF value types: (struct format, size) for fixed-width scalars.
_SCALARS = {
    0: ("<B", 1),
    1: ("<b", 1),
    2: ("<H", 2),
    3: ("<h", 2),
    4: ("<I", 4),
    5: ("<i", 4),
    6: ("<f", 4),
    7: ("<?", 1),
    10: ("<Q", 8),
    11: ("<q", 8),
    12: ("<d", 8),
}
_STRING, _ARRAY = 8, 9


@dataclass
class GGUFInfo:
    path: Path
    version: int
    n_tensors: int
    metadata: dict[str, Any]
    token_text: dict[int, str] = field(default_factory=dict)  # only the ids we asked for

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    @property
    def name(self) -> str | None:
        name = self.metadata.get("general.name")
        return str(name) if name is not None else None

    @property
    def quantization(self) -> str:
        ftype = self.metadata.get("general.file_type")
        if ftype is None:
            return "unknown"
        number = _int(ftype)
        return FILE_TYPES.get(number, f"type {number}") if number is not None else "unknown"

    def arch_value(self, key: str) -> Any:
        return self.metadata.get(f"{self.architecture}.{key}")

    @property
    def n_layer(self) -> int | None:
        return _int(self.arch_value("block_count"))

    @property
    def n_ctx_train(self) -> int | None:
        return _int(self.arch_value("context_length"))

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) and value else None

    @property
    def split_count(self) -> int:
        """How many files the model is split into (llama.cpp's gguf-split): 1 for a whole file."""
        count = _int(self.metadata.get("split.count"))
        return count if count is not None and count > 1 else 1

    @property
    def split_no(self) -> int | None:
        """Which part of a split model this file is, from 0 (the part that holds the model's
        metadata, and the one llama.cpp is given); None for a whole file."""
        return _int(self.metadata.get("split.no")) if self.split_count > 1 else None

    def token(self, key: str) -> str | None:
        token_id = _int(self.metadata.get(f"tokenizer.ggml.{key}_token_id"))
        return self.token_text.get(token_id) if token_id is not None else None

    @property
    def add_bos(self) -> bool:
        value = self.metadata.get("tokenizer.ggml.add_bos_token")
        # llama.cpp's default depends on the tokenizer model; SPM adds BOS, BPE does not.
        if value is None:
            return self.metadata.get("tokenizer.ggml.model") in ("llama", "gemma", "t5")
        return bool(value)


class _Reader:
    """Reads a header whose every length is checked against the bytes left in the file, so a
    corrupt count (2^62 items) is one InputError, never a 2^62-step loop or a huge allocation."""

    def __init__(self, f: BinaryIO, path: Path) -> None:
        self.f = f
        self.path = path
        self.size = path.stat().st_size

    def corrupt(self, what: str) -> InputError:
        return InputError(
            f"{self.path}: corrupt GGUF header ({what})",
            hint="re-download or re-convert the model",
        )

    def left(self) -> int:
        return self.size - self.f.tell()

    def beyond_end(self, n_bytes: int, what: str) -> InputError:
        # A length no real model reaches is damage; a plausible one that ends past the last
        # byte is a download cut short.
        if n_bytes > 1 << 40:
            return self.corrupt(what)
        return InputError(f"{self.path}: truncated GGUF file", hint="re-download the model")

    def count(self, n: int, item_bytes: int, what: str) -> int:
        """`n` items of at least `item_bytes` each must fit in what is left of the file."""
        if n * item_bytes > self.left():
            raise self.beyond_end(n * item_bytes, f"{what} of {n} items")
        return n

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise InputError(f"{self.path}: truncated GGUF file", hint="re-download the model")
        return data

    def scalar(self, kind: int) -> Any:
        fmt, size = _SCALARS[kind]
        return struct.unpack(fmt, self.read(size))[0]

    def string(self) -> str:
        (length,) = struct.unpack("<Q", self.read(8))
        if length > 1 << 28:
            raise self.corrupt(f"string of {length} bytes")
        if length > self.left():
            raise self.beyond_end(length, f"string of {length} bytes")
        return self.read(length).decode("utf-8", "replace")

    def skip_string(self) -> None:
        (length,) = struct.unpack("<Q", self.read(8))
        if length > self.left():
            raise self.beyond_end(length, f"string of {length} bytes")
        self.f.seek(length, 1)

    def value(
        self,
        kind: int,
        keep_ids: set[int] | None = None,
        out: dict[int, str] | None = None,
        depth: int = 0,
    ) -> Any:
        if kind in _SCALARS:
            return self.scalar(kind)
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            if depth >= 4:  # llama.cpp writes flat arrays; deeper nesting is damage
                raise self.corrupt("arrays nested too deep")
            (item_kind,) = struct.unpack("<I", self.read(4))
            (count,) = struct.unpack("<Q", self.read(8))
            if item_kind in _SCALARS:
                size = _SCALARS[item_kind][1]
                self.count(count, size, "array")
                if count <= 64:
                    return [self.scalar(item_kind) for _ in range(count)]
                self.f.seek(size * count, 1)  # long numeric arrays (scores, types): skip
                return f"<array of {count}>"
            if item_kind == _STRING:
                self.count(count, 8, "string array")  # each string has an 8-byte length
                if keep_ids is not None and out is not None:
                    for i in range(count):
                        if i in keep_ids:
                            out[i] = self.string()
                        else:
                            self.skip_string()
                    return f"<array of {count} strings>"
                if count <= 64:
                    return [self.string() for _ in range(count)]
                for _ in range(count):
                    self.skip_string()
                return f"<array of {count} strings>"
            if item_kind != _ARRAY:
                raise self.corrupt(f"array of value type {item_kind}")
            self.count(count, 12, "array of arrays")  # each inner array has a 12-byte header
            for _ in range(count):
                self.value(item_kind, depth=depth + 1)
            return f"<array of {count}>"
        raise self.corrupt(f"value type {kind}")


def _int(value: Any) -> int | None:
    """A metadata value used as a number: a damaged header may hold text or a list there."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def is_gguf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False


def read_gguf(path: Path) -> GGUFInfo:
    """Read the header of a GGUF file. Raises InputError for anything that is not GGUF."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise InputError(f"{path}: model file not found", hint="check models[].path") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot open model file: {exc.strerror}") from None
    with f:
        r = _Reader(f, path)
        if f.read(4) != MAGIC:
            raise InputError(
                f"{path}: not a GGUF model file (bad magic bytes)",
                hint="llama.cpp needs a .gguf file; convert or download one",
            )
        (version,) = struct.unpack("<I", r.read(4))
        if version < 2:
            raise InputError(f"{path}: GGUF version {version} is too old for llama.cpp")
        n_tensors, n_kv = struct.unpack("<QQ", r.read(16))
        metadata: dict[str, Any] = {}
        token_text: dict[int, str] = {}
        for _ in range(n_kv):  # no bound needed: each entry reads 13 bytes or more, or fails
            key = r.string()
            (kind,) = struct.unpack("<I", r.read(4))
            if key == "tokenizer.ggml.tokens":
                # Special token ids come after the vocabulary in practice, but not by contract:
                # remember where the array starts and come back if needed.
                tokens_at = f.tell()
                r.value(kind)
                metadata[key] = tokens_at
            else:
                metadata[key] = r.value(kind)
        if f.tell() > path.stat().st_size:  # long arrays are skipped by seeking, which never fails
            raise InputError(f"{path}: truncated GGUF file", hint="re-download the model")
        tokens_at = metadata.pop("tokenizer.ggml.tokens", None)
        if tokens_at is not None:
            wanted = {
                int(v)
                for k, v in metadata.items()
                if k.startswith("tokenizer.ggml.")
                and k.endswith("_token_id")
                and isinstance(v, int)
            }
            if wanted:
                f.seek(tokens_at - 4)
                (kind,) = struct.unpack("<I", r.read(4))
                r.value(kind, keep_ids=wanted, out=token_text)
    return GGUFInfo(
        path=path, version=version, n_tensors=n_tensors, metadata=metadata, token_text=token_text
    )
