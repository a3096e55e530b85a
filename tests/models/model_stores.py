"""Model stores laid out exactly as Ollama, the hub cache and LM Studio lay them out, for tests."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import struct
from pathlib import Path
from typing import Any

OLLAMA_TEMPLATE = "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
OLLAMA_PARAMS: dict[str, Any] = {"stop": ["<|im_start|>", "<|im_end|>"], "temperature": 0.2}


def header_gguf(
    path: Path,
    arch: str = "qwen2",
    file_type: int = 15,  # Q4_K_M
    layers: int = 3,
    chat_template: str | None = None,
    split: tuple[int, int] | None = None,  # (split.no, split.count): a part of a split model
) -> Path:
    """A header-only GGUF v3 file: enough for `promptlab models` and `validate`, not to load."""

    def s(text: str) -> bytes:
        return struct.pack("<Q", len(text.encode())) + text.encode()

    kv = [
        ("general.architecture", 8, s(arch)),
        ("general.file_type", 4, struct.pack("<I", file_type)),
        (f"{arch}.block_count", 4, struct.pack("<I", layers)),
    ]
    if chat_template is not None:
        kv.append(("tokenizer.chat_template", 8, s(chat_template)))
    if split is not None:
        kv += [
            ("split.no", 2, struct.pack("<H", split[0])),
            ("split.count", 2, struct.pack("<H", split[1])),
            ("split.tensors.count", 5, struct.pack("<i", 0)),
        ]
    body = b"".join(s(k) + struct.pack("<I", t) + v for k, t, v in kv)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kv)) + body)
    return path


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():  # content-addressed: two models sharing a blob store it once
        return
    try:
        os.link(src, dst)  # no 98 MB copy when tmp and the venv share a file system
    except OSError:
        shutil.copyfile(src, dst)


def ollama_blob(root: Path, data: bytes | None = None, src: Path | None = None) -> dict[str, Any]:
    """Store content under blobs/sha256-<hex> as Ollama does; returns the layer's digest/size."""
    blobs = root / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    if src is not None:
        hexdigest = _digest(src)
        link_or_copy(src, blobs / f"sha256-{hexdigest}")
        return {"digest": f"sha256:{hexdigest}", "size": src.stat().st_size}
    assert data is not None
    hexdigest = hashlib.sha256(data).hexdigest()
    (blobs / f"sha256-{hexdigest}").write_bytes(data)
    return {"digest": f"sha256:{hexdigest}", "size": len(data)}


def ollama_model(
    root: Path,
    name: str,
    tag: str = "latest",
    *,
    gguf: Path | None,
    namespace: str = "library",
    registry: str = "registry.ollama.ai",
    template: str | None = OLLAMA_TEMPLATE,
    params: dict[str, Any] | None = OLLAMA_PARAMS,
    system: str | None = None,
    extra_layers: list[dict[str, Any]] | None = None,
) -> Path:
    """One model as `ollama pull` leaves it: a manifest whose layers point at blobs."""
    layers: list[dict[str, Any]] = []
    if gguf is not None:
        layers.append(
            {"mediaType": "application/vnd.ollama.image.model", **ollama_blob(root, src=gguf)}
        )
    for media, text in (("template", template), ("system", system)):
        if text is not None:
            layers.append(
                {
                    "mediaType": f"application/vnd.ollama.image.{media}",
                    **ollama_blob(root, text.encode()),
                }
            )
    if params is not None:
        layers.append(
            {
                "mediaType": "application/vnd.ollama.image.params",
                **ollama_blob(root, json.dumps(params).encode()),
            }
        )
    layers += extra_layers or []
    config = ollama_blob(root, json.dumps({"model_format": "gguf"}).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", **config},
        "layers": layers,
    }
    path = root / "manifests" / registry / namespace / name / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return path


def split_gguf(src: Path, dest: Path, parts: int = 2) -> list[Path]:
    """A real split of a GGUF model, written by gguf-py's GGUFWriter as convert_hf_to_gguf.py
    writes one (`--split-max-tensors`): `dest`'s stem + `-0000N-of-0000M.gguf`, every tensor
    copied, split.no/split.count/split.tensors.count in each part and the metadata in the first.
    Returns the parts in order."""
    import gguf  # the dev extra; imported here so the other model tests never load it

    reader = gguf.GGUFReader(src)
    arch = reader.get_field("general.architecture")
    assert arch is not None
    per_part = math.ceil(len(reader.tensors) / parts)
    writer = gguf.GGUFWriter(dest, str(arch.contents()), split_max_tensors=per_part)
    for f in reader.fields.values():
        # GGUFWriter writes the architecture itself; GGUF.* are the reader's virtual fields.
        if f.name == "general.architecture" or f.name.startswith("GGUF."):
            continue
        kind = f.types[0]
        sub = f.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(f.name, f.contents(), kind, sub_type=sub)
    for t in reader.tensors:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    dest.parent.mkdir(parents=True, exist_ok=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        writer.write_tensor_data(t.data, tensor_endianess=reader.endianess)
    writer.close()
    names = writer.format_shard_names(dest)
    assert len(names) == parts, names
    return names
