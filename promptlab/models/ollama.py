"""Ollama's local model store: `ollama:NAME[:TAG]` → the GGUF blob its manifest points at.

Ollama keeps one JSON manifest per model tag under
`<models>/manifests/<registry>/<namespace>/<name>/<tag>`, whose `layers[]` name content-addressed
blobs (`sha256:<hex>` → `<models>/blobs/sha256-<hex>`). The `application/vnd.ollama.image.model`
layer is a plain GGUF file, so llama.cpp loads it in-process with no Ollama server running.

The template layer is a Go template for Ollama's own server. promptlab never applies it: the
GGUF's Jinja `tokenizer.chat_template` is what promptlab renders. The template, system prompt and
parameters are recorded in the run manifest and shown by `promptlab models`, so a difference
between the two is visible rather than silent.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptlab.errors import InputError
from promptlab.models.gguf import MAGIC

PREFIX = "ollama:"
DEFAULT_REGISTRY = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

MODEL = "application/vnd.ollama.image.model"
TEMPLATE = "application/vnd.ollama.image.template"
PARAMS = "application/vnd.ollama.image.params"
SYSTEM = "application/vnd.ollama.image.system"
# Models imported from safetensors by Ollama's newer engine store tensors, not one GGUF file.
TENSOR = "application/vnd.ollama.image.tensor"

# Names reach file paths: one conservative alphabet keeps `..` and separators out.
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_DIGEST = re.compile(r"sha256[:-]([0-9a-f]{64})")
_SMALL_LAYER = 1 << 20  # templates, params and system prompts are a few KB


def models_dir() -> Path:
    """Where Ollama keeps models: $OLLAMA_MODELS, else ~/.ollama/models (or the Linux service's)."""
    env = os.environ.get("OLLAMA_MODELS")
    if env:
        return Path(env).expanduser()
    home = Path.home() / ".ollama" / "models"
    service = Path("/usr/share/ollama/.ollama/models")  # the systemd unit runs as user `ollama`
    return service if not home.is_dir() and service.is_dir() else home


@dataclass(frozen=True)
class Ref:
    registry: str
    namespace: str
    name: str
    tag: str

    @property
    def display(self) -> str:
        """The name as `ollama list` shows it (default registry and namespace left out)."""
        if self.registry != DEFAULT_REGISTRY:
            base = f"{self.registry}/{self.namespace}/{self.name}"
        elif self.namespace != DEFAULT_NAMESPACE:
            base = f"{self.namespace}/{self.name}"
        else:
            base = self.name
        return f"{base}:{self.tag}"

    def manifest(self, root: Path) -> Path:
        return root / "manifests" / self.registry / self.namespace / self.name / self.tag


def parse(spec: str, where: str) -> Ref:
    """`ollama:NAME[:TAG]`, NAME being `name`, `namespace/name` or `registry/namespace/name`."""
    text = spec.removeprefix(PREFIX)
    parts = text.split("/")
    last = parts[-1]
    name, colon, tag = last.partition(":")
    parts[-1] = name
    tag = tag if colon else DEFAULT_TAG  # `name:` with an empty tag is a typo, not `latest`
    if len(parts) > 3 or not all(_PART.fullmatch(p) for p in [*parts, tag]):
        raise InputError(
            f"{where}: {spec!r} is not an Ollama model name",
            hint="write ollama:NAME[:TAG], e.g. ollama:llama3.2:1b or ollama:namespace/name:tag",
        )
    if len(parts) == 1:
        return Ref(DEFAULT_REGISTRY, DEFAULT_NAMESPACE, parts[0], tag)
    if len(parts) == 2:
        return Ref(DEFAULT_REGISTRY, parts[0], parts[1], tag)
    return Ref(parts[0], parts[1], parts[2], tag)


@dataclass
class Layer:
    media_type: str
    digest: str
    size: int | None

    @property
    def kind(self) -> str:
        return self.media_type.rsplit(".", 1)[-1]


@dataclass
class OllamaModel:
    """One manifest: the GGUF blob and what Ollama stores beside it."""

    ref: Ref
    manifest: Path
    layers: list[Layer]
    root: Path
    template: str | None = None  # Ollama's Go template (recorded, never applied)
    system: str | None = None
    params: dict[str, Any] | None = None  # stop, temperature, num_ctx, ...
    problems: list[str] = field(default_factory=list)  # unreadable side layers

    def blob(self, layer: Layer) -> Path:
        m = _DIGEST.fullmatch(layer.digest)
        assert m is not None  # checked when the manifest was read
        hexdigest = m.group(1)
        path = self.root / "blobs" / f"sha256-{hexdigest}"
        old = self.root / "blobs" / f"sha256:{hexdigest}"  # Ollama before 0.1.3x
        return old if not path.exists() and old.exists() else path

    @property
    def model_layer(self) -> Layer | None:
        return next((la for la in self.layers if la.media_type == MODEL), None)

    @property
    def tensor_layers(self) -> int:
        return sum(la.media_type == TENSOR for la in self.layers)

    @property
    def extra_layers(self) -> list[str]:
        """Layers promptlab does not use (adapter, projector, license, ...), by kind."""
        used = {MODEL, TEMPLATE, PARAMS, SYSTEM}
        return sorted({la.kind for la in self.layers if la.media_type not in used})

    def facts(self) -> dict[str, Any]:
        """What the run manifest records about where the model came from."""
        layer = self.model_layer
        return {
            "source": "ollama",
            "ollama": {
                "name": self.ref.display,
                "manifest": str(self.manifest),
                "digest": layer.digest if layer else None,
                "template": self.template,
                "template_applied": False,  # the GGUF's own Jinja template is used
                "system": self.system,
                "params": self.params,
                "unused_layers": self.extra_layers,
            },
        }


def read_manifest(ref: Ref, path: Path, root: Path) -> OllamaModel:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(
            f"Ollama manifest {path} is unreadable: {exc}",
            hint=f"run `ollama pull {ref.display}` again",
        ) from None
    raw = data.get("layers") if isinstance(data, dict) else None
    if not isinstance(raw, list):
        raise InputError(
            f"Ollama manifest {path} has no layers list",
            hint=f"run `ollama pull {ref.display}` again",
        )
    layers: list[Layer] = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        media, digest = item.get("mediaType"), item.get("digest")
        if isinstance(media, str) and isinstance(digest, str) and _DIGEST.fullmatch(digest):
            size = item.get("size")
            layers.append(Layer(media, digest, size if isinstance(size, int) else None))
    model = OllamaModel(ref, path, layers, root)
    for layer in layers:
        if layer.media_type not in (TEMPLATE, SYSTEM, PARAMS):
            continue
        text = _small_text(model.blob(layer))
        if text is None:
            model.problems.append(f"{layer.kind} blob {layer.digest[:19]}… missing or too large")
        elif layer.media_type == TEMPLATE:
            model.template = text
        elif layer.media_type == SYSTEM:
            model.system = text
        else:
            try:
                params = json.loads(text)
            except ValueError:
                model.problems.append("params blob is not JSON")
                continue
            if isinstance(params, dict):
                model.params = params
    return model


def _small_text(path: Path) -> str | None:
    try:
        with path.open("rb") as f:
            data = f.read(_SMALL_LAYER + 1)
    except OSError:
        return None
    return data.decode("utf-8", "replace") if len(data) <= _SMALL_LAYER else None


def installed(root: Path) -> list[tuple[Ref, Path]]:
    """Every manifest under `root`, sorted by name, as (ref, manifest path)."""
    base = root / "manifests"
    found: list[tuple[Ref, Path]] = []
    if not base.is_dir():
        return found
    for path in sorted(base.glob("*/*/*/*")):
        registry, namespace, name, tag = path.relative_to(base).parts
        if path.is_file() and all(_PART.fullmatch(p) for p in (registry, namespace, name, tag)):
            found.append((Ref(registry, namespace, name, tag), path))
    return found


def find(spec: str, where: str) -> OllamaModel:
    """The manifest of `ollama:NAME[:TAG]`, or one clear error naming what is installed."""
    ref = parse(spec, where)
    root = models_dir()
    if not root.is_dir():
        env = "OLLAMA_MODELS" in os.environ
        raise InputError(
            f"{where}: no Ollama models folder at {root}"
            + (" (from OLLAMA_MODELS)" if env else ""),
            hint="install Ollama and `ollama pull` the model, or set OLLAMA_MODELS to its models folder",
        )
    path = ref.manifest(root)
    if not path.is_file():
        # Ollama matches names case-insensitively; so do we, before giving up.
        known = installed(root)
        same = [(r, p) for r, p in known if r.display.lower() == ref.display.lower()]
        if not same:
            names = [r.display for r, _ in known]
            close = difflib.get_close_matches(ref.display, names, n=5, cutoff=0.5)
            close += [n for n in names if n.split(":")[0] == ref.name and n not in close]
            hint = (
                f"did you mean {', '.join(close[:5])}?"
                if close
                else f"installed: {', '.join(names[:8])}"
                if names
                else "no models are installed there"
            )
            raise InputError(
                f"{where}: Ollama model {ref.display} not found in {root}",
                hint=f"{hint} (`ollama pull {ref.display}` fetches it)",
            )
        ref, path = same[0]
    return read_manifest(ref, path, root)


def resolve(spec: str, where: str) -> tuple[Path, OllamaModel]:
    """The GGUF blob of `ollama:NAME[:TAG]` and its manifest."""
    model = find(spec, where)
    layer = model.model_layer
    name = model.ref.display
    if layer is None:
        if model.tensor_layers:
            raise InputError(
                f"{where}: Ollama model {name} stores {model.tensor_layers} safetensors tensor "
                "layers, not a GGUF file",
                hint="llama.cpp runs GGUF only: pull a GGUF build of it, or convert it with "
                "llama.cpp's convert_hf_to_gguf.py",
            )
        raise InputError(
            f"{where}: Ollama manifest {model.manifest} has no model layer",
            hint=f"run `ollama pull {name}` again",
        )
    blob = model.blob(layer)
    if not blob.is_file():
        raise InputError(
            f"{where}: Ollama model {name}'s blob {blob.name} is missing from {blob.parent}",
            hint=f"run `ollama pull {name}` again",
        )
    with blob.open("rb") as f:
        magic = f.read(4)
    if magic != MAGIC:
        raise InputError(
            f"{where}: Ollama model {name}'s blob {blob} is not a GGUF file",
            hint="llama.cpp runs GGUF only: pull a GGUF build of this model",
        )
    return blob, model
