"""`promptlab models`: every model in sight, from every source, with header facts only.

Sources, in the order listed: the bundled models, Ollama's store, the Hugging Face hub cache, LM
Studio's folders, then any other .gguf file under the project, $PROMPTLAB_MODEL_DIRS and
promptlab's cache. Each row says whether the model can run in-process: its GGUF header reads and
names an architecture this install's llama.cpp knows. Nothing is loaded, so the listing is fast
(headers are cached per file version by `models.gguf_info`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from promptlab.errors import PromptlabError
from promptlab.models import BUNDLED, find_gguf_files, gguf_info, ollama, search_dirs, split
from promptlab.models.gguf import GGUFInfo

# `LLM_ARCH_NAMES` of the llama.cpp inside llama-cpp-python 0.3.36 (read from libllama.so's
# strings; tests/models/test_model_catalog.py checks each name is still there). `clip` is left
# out: it names vision projectors (mmproj files), which are not models of their own.
_ARCHITECTURES = """
    llama llama4 deci falcon grok gpt2 gptj gptneox mpt baichuan starcoder refact bert
    modern-bert nomic-bert nomic-bert-moe neo-bert jina-bert-v2 jina-bert-v3 eurobert bloom
    stablelm qwen qwen2 qwen2moe qwen2vl qwen3 qwen3moe qwen3next qwen3vl qwen3vlmoe qwen35
    qwen35moe qwen4exp phi2 phi3 phimoe plamo plamo2 plamo3 codeshell orion internlm2 minicpm
    minicpm3 gemma gemma2 gemma3 gemma3n gemma4 gemma4-assistant gemma-embedding starcoder2 mamba
    mamba2 maple jamba falcon-h1 xverse command-r cohere2 cohere2moe dbrx olmo olmo2 olmoe
    muse-glimmer openelm arctic deepseek deepseek2 deepseek2-ocr deepseek32 deepseek4 chatglm glm4
    glm4moe glm-dsa bitnet t5 t5encoder jais jais2 nemotron nemotron_h nemotron_h_moe exaone
    exaone4 exaone-moe rwkv6 rwkv6qwen2 rwkv7 arwkv7 granite granitemoe granitehybrid
    graniteswitch granite_swa chameleon wavtokenizer-dec plm bailingmoe bailingmoe2 bailingmoe3
    dots1 dots3note arcee afmoe laguna ernie4_5 ernie4_5-moe hunyuan-moe hunyuan-dense hunyuan_vl
    hy_v3 hy_v4 smollm3 gpt-oss lfm2 lfm2moe dream smallthinker llada llada-moe seed_oss grovemoe
    apertus minimax-01 hrm_text minimax-m2 minimax-m3 cogvlm rnd1 pangu-embedded mistral3 eagle3
    dflash mistral4 paddleocr mimo2 step35 spark2_5 llama-embed maincoder kimi-linear kimi-k3
    glm5-next talkie mellum nanbeige qwen3tts pockettts
"""
KNOWN_ARCHITECTURES = frozenset(_ARCHITECTURES.split())

# A chat template's family, told by the special tokens it writes (first match wins).
_TEMPLATE_FAMILIES = [
    ("<|im_start|>", "chatml"),
    ("<|start_header_id|>", "llama3"),
    ("<start_of_turn>", "gemma"),
    ("<|channel|>", "harmony"),
    ("<|START_OF_TURN_TOKEN|>", "command-r"),
    ("<｜User｜>", "deepseek"),
    ("[gMASK]", "glm"),
    ("<|end|>", "phi3"),
    ("<|user|>", "zephyr"),
    ("[INST]", "mistral"),
]
_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
LMSTUDIO_DIRS = (Path(".lmstudio") / "models", Path(".cache") / "lm-studio" / "models")


@dataclass
class ModelRow:
    """One model file: where it lives and what its header says."""

    name: str  # what to write as a model's `path:` (an alias, ollama:…, hf://…) or the file stem
    path: str | None
    size_bytes: int | None
    quantization: str | None
    architecture: str | None
    n_layer: int | None
    chat_template: bool | None  # the GGUF has tokenizer.chat_template
    note: str = ""
    source: str = "file"  # bundled, ollama, hf, lmstudio or file
    template_name: str | None = None  # chatml, llama3, gemma, ... or custom
    runnable: bool = False  # can run in-process here
    why_not: str | None = None  # why it cannot
    extra: dict[str, Any] = field(default_factory=dict)  # Ollama's params, the hub commit, ...

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def template_name(template: str | None) -> str | None:
    if template is None:
        return None
    return next((name for marker, name in _TEMPLATE_FAMILIES if marker in template), "custom")


def _row(name: str, path: Path, source: str, note: str = "", **extra: Any) -> ModelRow:
    try:
        size: int | None = path.stat().st_size
    except OSError:
        size = None
    try:
        info: GGUFInfo | None = gguf_info(path)
        problem = None
    except PromptlabError as exc:
        info, problem = None, exc.one_line()
    except OSError as exc:
        info, problem = None, f"{path}: unreadable: {exc.strerror or exc}"
    if info is None:
        return ModelRow(
            name,
            str(path),
            size,
            None,
            None,
            None,
            None,
            problem or "",
            source,
            why_not="not a readable GGUF file",
            extra=extra,
        )
    why_not = _why_not(path, info)
    if info.split_count > 1 and info.split_no == 0:  # listed once, as its first part
        try:
            parts = split.parts(path, path.name, info)
        except PromptlabError as exc:
            why_not = why_not or exc.message.removeprefix(f"{path.name}: ")
        else:
            size = sum(p.stat().st_size for p in parts)
            extra["parts"] = len(parts)
            note = ", ".join(bit for bit in (note, f"split in {len(parts)} parts") if bit)
    named = sorted(
        k.removeprefix("tokenizer.chat_template.")
        for k in info.metadata
        if k.startswith("tokenizer.chat_template.")
    )
    if named:
        extra["named_chat_templates"] = named
    return ModelRow(
        name,
        str(path),
        size,
        info.quantization,
        info.architecture,
        info.n_layer,
        info.chat_template is not None,
        note,
        source,
        template_name(info.chat_template),
        why_not is None,
        why_not,
        extra,
    )


def _why_not(path: Path, info: GGUFInfo) -> str | None:
    arch = info.architecture
    shard = _SHARD.search(path.name)
    if shard and int(shard.group(1)) != 1:
        return f"part {int(shard.group(1))} of {int(shard.group(2))} of a split GGUF: load part 1"
    if arch == "clip":
        return "a vision projector (mmproj), not a model"
    if arch not in KNOWN_ARCHITECTURES:
        return f"architecture {arch!r} is unknown to this llama.cpp"
    return None


def _later_part(path: Path) -> bool:
    """A later part of a split model whose first part is beside it: that part's row lists it."""
    shard = split.shard_of(path.name)
    return shard is not None and shard.number > 1 and path.with_name(shard.name(1)).is_file()


# --- sources ---------------------------------------------------------------------------------


def _bundled() -> Iterator[ModelRow]:
    for alias, bundled in BUNDLED.items():
        path = bundled.locate()
        if path is None:
            yield ModelRow(
                alias,
                None,
                None,
                None,
                None,
                None,
                None,
                f"not installed: {bundled.install}",
                "bundled",
                why_not="not installed",
            )
        else:
            yield _row(alias, path, "bundled", bundled.description)


def _ollama() -> Iterator[ModelRow]:
    root = ollama.models_dir()
    for ref, manifest in ollama.installed(root):
        name = f"{ollama.PREFIX}{ref.display}"
        try:
            model = ollama.read_manifest(ref, manifest, root)
        except PromptlabError as exc:
            yield ModelRow(
                name,
                str(manifest),
                None,
                None,
                None,
                None,
                None,
                exc.one_line(),
                "ollama",
                why_not="unreadable manifest",
            )
            continue
        extra: dict[str, Any] = {
            "ollama_template": template_name(model.template) if model.template else None,
            "ollama_params": model.params,
            "ollama_system": model.system is not None,
        }
        layer = model.model_layer
        if layer is None:
            why = (
                f"{model.tensor_layers} safetensors tensor layers, not GGUF"
                if model.tensor_layers
                else "no model layer"
            )
            yield ModelRow(
                name,
                str(manifest),
                None,
                None,
                None,
                None,
                None,
                "",
                "ollama",
                why_not=why,
                extra=extra,
            )
            continue
        blob = model.blob(layer)
        if not blob.is_file():
            yield ModelRow(
                name,
                str(blob),
                layer.size,
                None,
                None,
                None,
                None,
                f"run `ollama pull {ref.display}` again",
                "ollama",
                why_not="blob missing",
                extra=extra,
            )
            continue
        yield _row(name, blob, "ollama", _ollama_note(model), **extra)


def _ollama_note(model: ollama.OllamaModel) -> str:
    bits = []
    if model.params:
        bits.append("params " + json.dumps(model.params, separators=(",", ":"))[:120])
    if model.template:
        bits.append("Go template recorded, not applied")
    if model.extra_layers:
        bits.append("unused layers: " + ", ".join(model.extra_layers))
    return "ollama " + "; ".join(bits) if bits else ""


def _hub() -> Iterator[ModelRow]:
    from huggingface_hub import scan_cache_dir  # noqa: PLC0415 - costs ~0.25 s to import
    from huggingface_hub.errors import CacheNotFound  # noqa: PLC0415

    try:
        cache = scan_cache_dir()
    except (CacheNotFound, OSError):
        return
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for rev in sorted(repo.revisions, key=lambda r: r.commit_hash):
            pinned = "" if "main" in rev.refs else f"@{rev.commit_hash}"
            for f in sorted(rev.files, key=lambda f: str(f.file_path)):
                if not f.file_name.lower().endswith(".gguf") or _later_part(f.file_path):
                    continue
                inside = f.file_path.relative_to(rev.snapshot_path).as_posix()
                name = f"hf://{repo.repo_id}/{inside}{pinned}"
                refs = ", ".join(sorted(rev.refs)) or "no ref"
                yield _row(
                    name,
                    f.file_path,
                    "hf",
                    f"commit {rev.commit_hash[:12]} ({refs})",
                    commit=rev.commit_hash,
                    refs=sorted(rev.refs),
                )


def _lmstudio() -> Iterator[ModelRow]:
    for rel in LMSTUDIO_DIRS:
        root = Path.home() / rel
        for path in find_gguf_files([root], max_depth=4):
            if _later_part(path):
                continue
            yield _row(path.relative_to(root).with_suffix("").as_posix(), path, "lmstudio")


def list_models(project: Path) -> list[ModelRow]:
    """Every model promptlab can see, from every source."""
    rows: list[ModelRow] = []
    seen: set[Path] = set()
    for source in (_bundled, _ollama, _hub, _lmstudio):
        for row in source():
            rows.append(row)
            if row.path is not None:
                seen.add(Path(row.path).resolve())
    for path in find_gguf_files(search_dirs(project)):
        if path.resolve() not in seen and not _later_part(path):
            seen.add(path.resolve())
            rows.append(_row(path.stem, path, "file"))
    return rows
