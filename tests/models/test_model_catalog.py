"""`promptlab models`: every source laid out in tmp folders as its own tool lays it out."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from model_stores import OLLAMA_PARAMS, header_gguf, ollama_blob, ollama_model

from promptlab.models import cache_dir, file_sha256
from promptlab.models.catalog import KNOWN_ARCHITECTURES, template_name

COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
CHATML = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>{% endfor %}"


def libllama() -> Path:
    spec = importlib.util.find_spec("llama_cpp")
    assert spec is not None and spec.submodule_search_locations
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
    return sorted(lib.glob("libllama.so*") or lib.glob("libllama.*"))[0]


def test_every_known_architecture_is_named_in_this_llama_cpp() -> None:
    """The list is copied from libllama's LLM_ARCH_NAMES; a name it lacks would claim a model
    runs when it does not. (The linker merges a name into a longer one ending with it, so
    `bert` sits inside `modern-bert`: a name is there when `name\\0` is.)"""
    data = libllama().read_bytes()
    missing = sorted(a for a in KNOWN_ARCHITECTURES if a.encode() + b"\0" not in data)
    assert missing == []
    assert {"llama", "gemma3", "qwen2"} <= KNOWN_ARCHITECTURES
    assert "clip" not in KNOWN_ARCHITECTURES  # vision projectors are not models


@pytest.mark.parametrize(
    ("template", "name"),
    [
        (CHATML, "chatml"),
        ("<|start_header_id|>{{ role }}<|end_header_id|>", "llama3"),
        ("<start_of_turn>user\n{{ x }}<end_of_turn>", "gemma"),
        ("[INST] {{ x }} [/INST]", "mistral"),
        ("{{ x }}", "custom"),
        (None, None),
    ],
)
def test_template_names(template: str | None, name: str | None) -> None:
    assert template_name(template) == name


def hub_cache(hub: Path, repo: str, files: dict[str, Path], commit: str = COMMIT) -> None:
    """A repo in the hub cache exactly as huggingface_hub leaves it: content-addressed blobs,
    one snapshot folder per commit of relative symlinks, and refs/main."""
    base = hub / f"models--{repo.replace('/', '--')}"
    for name, src in files.items():
        blob = base / "blobs" / file_sha256(src)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(src.read_bytes())
        link = base / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (base / "refs").mkdir(exist_ok=True)
    (base / "refs" / "main").write_text(commit)


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, str]:
    """Ollama, hub cache, LM Studio and project folders holding header-only GGUF files."""
    home = tmp_path / "home"
    src = tmp_path / "src"
    qwen = header_gguf(src / "qwen.gguf", chat_template=CHATML)
    store = tmp_path / "ollama"
    ollama_model(store, "qwen2.5", "0.5b", gguf=qwen)
    tensor = {"mediaType": "application/vnd.ollama.image.tensor", **ollama_blob(store, b"\0" * 8)}
    ollama_model(store, "imported", gguf=None, extra_layers=[tensor])
    gone = header_gguf(src / "gone.gguf", arch="llama")
    ollama_model(store, "gone", gguf=gone)
    (store / "blobs" / f"sha256-{file_sha256(gone)}").unlink()

    hub_cache(
        tmp_path / "hf" / "hub",
        "acme/tiny-GGUF",
        {
            "tiny-Q8_0.gguf": header_gguf(src / "q8.gguf", file_type=7),
            "README.md": qwen,
            "sub/tiny-Q5_K_M-00001-of-00002.gguf": header_gguf(src / "p1.gguf", split=(0, 2)),
            "sub/tiny-Q5_K_M-00002-of-00002.gguf": header_gguf(src / "p2.gguf", split=(1, 2)),
        },
    )
    lms = home / ".lmstudio" / "models" / "lmstudio-community" / "Gemma-GGUF"
    header_gguf(lms / "gemma-Q4_K_M.gguf", arch="gemma3", layers=18)
    header_gguf(lms / "mmproj-gemma-F16.gguf", arch="clip", file_type=1)
    header_gguf(home / ".cache" / "lm-studio" / "models" / "old" / "m" / "old.gguf", arch="llama")

    project = tmp_path / "proj"
    (project / ".git").mkdir(parents=True)
    header_gguf(project / "weights" / "alien.gguf", arch="notanarch")
    header_gguf(project / "weights" / "big-00002-of-00003.gguf", arch="llama")
    for i in (1, 2, 3):
        header_gguf(project / "weights" / f"three-0000{i}-of-00003.gguf", split=(i - 1, 3))
    header_gguf(project / "weights" / "half-00001-of-00002.gguf", split=(0, 2))
    (project / "weights" / "broken.gguf").write_bytes(b"GGUF\x03\x00")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "OLLAMA_"))}
    env.update(
        HOME=str(home),
        OLLAMA_MODELS=str(store),
        HF_HOME=str(tmp_path / "hf"),
        # The user's cache: listing gemma3 assembles its 253 MB file once, not once per test.
        PROMPTLAB_CACHE=str(cache_dir()),
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),  # the repository root
    )
    env.pop("PROMPTLAB_MODEL_DIRS", None)
    return env


def models(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    # A subprocess: huggingface_hub reads HF_HOME when it is first imported.
    return subprocess.run(
        [sys.executable, "-m", "promptlab", "models", *args],
        cwd=Path(env["HOME"]).parent / "proj",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_json_lists_every_source(sources: dict[str, str], tmp_path: Path) -> None:
    r = models(sources, "--format", "json")
    assert r.returncode == 0, r.stderr
    rows: dict[str, dict[str, Any]] = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["smollm2"]["source"] == "bundled"
    assert rows["smollm2"]["runnable"] is True

    qwen = rows["ollama:qwen2.5:0.5b"]
    assert qwen["source"] == "ollama"
    assert qwen["path"].startswith(str(tmp_path / "ollama" / "blobs" / "sha256-"))
    assert (qwen["quantization"], qwen["architecture"], qwen["n_layer"]) == ("Q4_K_M", "qwen2", 3)
    assert (qwen["chat_template"], qwen["template_name"], qwen["runnable"]) == (
        True,
        "chatml",
        True,
    )
    assert qwen["extra"]["ollama_params"] == OLLAMA_PARAMS
    assert qwen["extra"]["ollama_template"] == "chatml"  # Ollama's Go template, recorded
    imported = rows["ollama:imported:latest"]
    assert imported["runnable"] is False
    assert imported["why_not"] == "1 safetensors tensor layers, not GGUF"
    assert rows["ollama:gone:latest"]["why_not"] == "blob missing"

    hf = rows["hf://acme/tiny-GGUF/tiny-Q8_0.gguf"]
    assert hf["source"] == "hf"
    assert (hf["quantization"], hf["runnable"], hf["extra"]["commit"]) == ("Q8_0", True, COMMIT)
    assert "hf://acme/tiny-GGUF/README.md" not in rows
    # A split model is one row, its first part's, with every part's size.
    split = rows["hf://acme/tiny-GGUF/sub/tiny-Q5_K_M-00001-of-00002.gguf"]
    parts = [tmp_path / "src" / f"p{i}.gguf" for i in (1, 2)]
    assert split["size_bytes"] == sum(p.stat().st_size for p in parts)
    assert (split["runnable"], split["extra"]["parts"]) == (True, 2)
    assert split["note"] == f"commit {COMMIT[:12]} (main), split in 2 parts"
    assert not [n for n in rows if "00002-of-00002" in n]

    gemma = rows["lmstudio-community/Gemma-GGUF/gemma-Q4_K_M"]
    assert (gemma["source"], gemma["architecture"], gemma["runnable"]) == (
        "lmstudio",
        "gemma3",
        True,
    )
    mmproj = rows["lmstudio-community/Gemma-GGUF/mmproj-gemma-F16"]
    assert mmproj["why_not"] == "a vision projector (mmproj), not a model"
    assert rows["old/m/old"]["source"] == "lmstudio"  # ~/.cache/lm-studio/models too

    assert rows["alien"]["source"] == "file"
    assert rows["alien"]["why_not"] == "architecture 'notanarch' is unknown to this llama.cpp"
    assert rows["big-00002-of-00003"]["why_not"] == ("part 2 of 3 of a split GGUF: load part 1")
    assert rows["broken"]["why_not"] == "not a readable GGUF file"
    three = rows["three-00001-of-00003"]
    assert (three["runnable"], three["note"], three["extra"]["parts"]) == (
        True,
        "split in 3 parts",
        3,
    )
    assert not [n for n in rows if n.startswith("three-0000") and n != "three-00001-of-00003"]
    assert rows["half-00001-of-00002"]["why_not"] == (
        "half-00001-of-00002.gguf is part 1 of 2 of a split GGUF model, and part 2 "
        "(half-00002-of-00002.gguf) is not beside it"
    )
    assert "truncated" in rows["broken"]["note"]
    # The hub cache and LM Studio folders are also GGUF search dirs: each file is listed once.
    assert len([n for n in rows if "tiny-Q8_0" in n]) == 1


def test_text_lists_each_model_with_where_it_lives(sources: dict[str, str], tmp_path: Path) -> None:
    r = models(sources)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    size = (tmp_path / "src" / "qwen.gguf").stat().st_size
    i = lines.index(
        f"ollama:qwen2.5:0.5b  ollama · {size} B · Q4_K_M · qwen2 · 3 layers · chat chatml · "
        "in-process yes"
    )
    assert lines[i + 1].startswith(f"  {tmp_path / 'ollama' / 'blobs'}/sha256-")
    assert lines[i + 2] == (
        '  ollama params {"stop":["<|im_start|>","<|im_end|>"],"temperature":0.2}; '
        "Go template recorded, not applied"
    )
    i = lines.index("ollama:imported:latest  ollama · in-process no")
    assert lines[i + 2] == "  cannot run in-process: 1 safetensors tensor layers, not GGUF"
