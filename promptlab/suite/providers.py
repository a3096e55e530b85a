"""promptfoo's `providers:` (and `targets:`): which of them run here, and as what model.

- `echo` runs as fake://echo, which returns the rendered prompt as promptfoo's echo does.
- `ollama:chat:NAME`, `ollama:completion:NAME` and `ollama:NAME` run in-process as promptlab's
  `ollama:NAME` model when Ollama's store (models.ollama.models_dir) holds it.
- `openai:chat:NAME`, `openai:completion:NAME` and `openai:NAME` with `config.apiBaseUrl` (or
  `apiHost`), and `localai:[chat:|completion:]NAME`, run as a server model (provider: openai).
- Every other provider (a cloud API, an Ollama model that is not pulled here, …) is replaced by
  the bundled default model, and the note names it and why.

A provider's `config:` generation settings become that model's params (over the suite's
defaults, under its explicit `params:`); keys promptlab has no equivalent for are named in a note.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from promptlab.errors import InputError, location
from promptlab.models import ollama
from promptlab.suite.schema import ModelSpec, Params
from promptlab.yamlio import YamlDoc, dotted

# promptfoo's echo provider returns the prompt it was given. fake://echo does the same; this chat
# template gives a chat prompt back as promptfoo would (its messages as JSON) and a plain prompt
# as the text itself.
ECHO_CHAT = (
    '{%- if messages|length == 1 and messages[0].role == "user" -%}{{ messages[0].content }}'
    "{%- else -%}{{ messages|tojson(separators=(',', ':')) }}{%- endif -%}"
)

# Generation settings in each provider's config, by promptfoo's (and so the server's) names.
_SAMPLING = {k: k for k in ("temperature", "top_p", "top_k", "min_p", "seed", "stop")}
_OLLAMA_PARAMS = {**_SAMPLING, "repeat_penalty": "repeat_penalty", "num_predict": "max_tokens"}
# Ollama's load options; a server model's load settings are the server's own.
_OLLAMA_LOAD = {
    "num_ctx": "n_ctx",
    "num_batch": "n_batch",
    "num_thread": "n_threads",
    "num_gpu": "n_gpu_layers",
}
_OPENAI_PARAMS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "stop": "stop",
    "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens",
}
# Keys that say where the server is and how to reach it: used, so never reported as ignored.
_OPENAI_CONNECTION = ("apiBaseUrl", "apiHost", "apiKey", "apiKeyEnvar")
# promptfoo's own completion models: `openai:NAME` means the completion API only for these.
_OPENAI_COMPLETION_MODELS = ("gpt-3.5-turbo-instruct", "davinci-002", "babbage-002")
# Provider keys beside id/label/config that promptlab does not apply, and why.
_ENTRY_IGNORED = {
    "prompts": "every prompt runs on every model here",
    "transform": "provider transforms are JavaScript; a test's transform: still applies",
    "delay": "promptlab paces no requests",
    "env": "nothing reads API keys here",
}


@dataclass
class Provider:
    """One entry of `providers:` as written: its id, label and config, and where it is."""

    ident: str
    label: str | None
    config: dict[str, Any]
    loc: tuple[int | str, ...]  # YAML path of the entry, for line numbers
    extra: list[str] = field(default_factory=list)  # its other keys (prompts, transform, …)


@dataclass
class Translated:
    """What one provider became: a model that runs here, or replaced by the default model."""

    provider: Provider
    kind: Literal["echo", "local", "replaced"]
    spec: ModelSpec | None = None
    params: dict[str, Any] = field(default_factory=dict)  # promptlab's Params names
    runs_as: str = ""  # for the note: "the Ollama model tiny, in-process"
    why: str | None = None  # why a provider that looks local was replaced
    ignored: list[str] = field(default_factory=list)  # its config keys with no equivalent


def entries(value: Any, key: str, doc: YamlDoc, path: Path) -> list[Provider]:
    """Each provider in promptfoo's forms: `id`, `[id, …]`, `[{id, label, config}]`,
    `[{id: {label, config}}]`, `{id, label, config}` and `{id: {…}}`."""
    if value is None:
        return []
    if isinstance(value, str):
        return [Provider(value, None, {}, (key,))]
    if isinstance(value, dict):
        if "id" in value:
            items: list[tuple[Any, tuple[int | str, ...]]] = [(value, (key,))]
        else:
            items = [({k: v}, (key,)) for k, v in value.items()]
    elif isinstance(value, list):
        items = [(item, (key, i)) for i, item in enumerate(value)]
    else:
        raise _bad(doc, path, (key,), "must be a provider id or a list of providers")
    return [_entry(item, loc, doc, path) for item, loc in items]


def _entry(item: Any, loc: tuple[int | str, ...], doc: YamlDoc, path: Path) -> Provider:
    if isinstance(item, str):
        return Provider(item, None, {}, loc)
    if not isinstance(item, dict):
        raise _bad(doc, path, loc, "must be a provider id or a mapping with id:")
    if "id" not in item and len(item) == 1 and not set(item) & {"label", "config", *_ENTRY_IGNORED}:
        # promptfoo's `{id: {label, config}}`: the options sit under the id.
        ((ident, options),) = item.items()
        options = options if options is not None else {}
        if not isinstance(options, dict):
            raise _bad(
                doc, path, (*loc, ident), "the options under a provider id must be a mapping"
            )
        body, loc = {"id": str(ident), **options}, (*loc, ident)
    else:
        body = item
    ident = body.get("id")
    if "id" not in body:
        raise _bad(doc, path, loc, "a provider needs id:, e.g. id: ollama:chat:llama3.2")
    if not isinstance(ident, str) or not ident.strip():
        raise _bad(
            doc, path, (*loc, "id"), "id must be text, a provider id such as ollama:chat:llama3.2"
        )
    label = body.get("label")
    if label is not None and not isinstance(label, str):
        raise _bad(doc, path, (*loc, "label"), "label must be text")
    config = body.get("config")
    if config is None:
        config = {}
    elif not isinstance(config, dict):
        raise _bad(doc, path, (*loc, "config"), "config must be a mapping of settings")
    extra = [k for k in body if k not in ("id", "label", "config")]
    return Provider(ident.strip(), label, config, loc, extra)


def _bad(doc: YamlDoc, path: Path, loc: tuple[int | str, ...], msg: str) -> InputError:
    return InputError(f"{location(path, doc.line_of(loc), dotted(loc))}: {msg}")


def translate(p: Provider, doc: YamlDoc, path: Path) -> Translated:
    """The model promptfoo provider `p` runs as here. Raises InputError for a bad value."""
    kind, _, rest = p.ident.partition(":")
    if p.ident == "echo":
        spec = ModelSpec(path="fake://echo", label=p.label or "echo", chat_template=ECHO_CHAT)
        return Translated(p, "echo", spec, runs_as="the fake://echo model")
    if kind == "ollama":
        return _ollama(p, rest, doc, path)
    if kind in ("openai", "localai"):
        return _server(p, kind, rest, doc, path)
    if p.ident == "llama" or kind == "llama":
        return Translated(
            p,
            "replaced",
            why="promptfoo's llama provider calls llama-server's own /completion API at "
            "$LLAMA_BASE_URL, for a model it does not name: write a models: entry {provider: "
            "openai, base_url: http://localhost:8080/v1, model: <an id from GET /v1/models>}",
        )
    return Translated(p, "replaced")


def ollama_spec(ident: str) -> str:
    """promptfoo's `ollama:chat:NAME`, `ollama:completion:NAME` and `ollama:embeddings:NAME` as
    promptlab's `ollama:NAME` (for a grader's provider); any other id as it is."""
    kind, _, rest = ident.partition(":")
    mode, _, tail = rest.partition(":")
    if kind == "ollama" and mode in ("chat", "completion", "embedding", "embeddings") and tail:
        return f"{ollama.PREFIX}{tail}"
    return ident


def _ollama(p: Provider, rest: str, doc: YamlDoc, path: Path) -> Translated:
    mode, _, tail = rest.partition(":")
    if mode in ("embedding", "embeddings"):
        return Translated(p, "replaced", why="an embedding model generates no text")
    name = tail if mode in ("chat", "completion") else rest
    where = _where(doc, path, p.loc)
    if not name:
        raise InputError(
            f"{where}: {p.ident!r} names no model",
            hint="write ollama:chat:NAME[:TAG], e.g. ollama:chat:llama3.2",
        )
    ref = ollama.parse(f"{ollama.PREFIX}{name}", where)  # a malformed name is an error
    root = ollama.models_dir()
    # Replaced, not refused: a config that runs anywhere keeps running where Ollama or this
    # model is missing (as for cloud providers), and the results carry the label of the model
    # that did run, so nothing is credited to the model that was named. The note says where
    # promptlab looked; --model ollama:NAME (or models:) makes a missing model an error.
    missing = _ollama_missing(ref, root)
    if missing is not None:
        return Translated(p, "replaced", why=missing)
    config = dict(p.config)
    load: dict[str, Any] = {}
    for key, target in _OLLAMA_LOAD.items():
        if key in config:
            load[target] = config.pop(key)
    chat: bool | None = None
    if "raw" in config and mode != "chat":
        # /api/generate with raw: true sends the prompt without Ollama's template.
        raw = config.pop("raw")
        if not isinstance(raw, bool):
            raise _bad(doc, path, (*p.loc, "config", "raw"), "raw must be true or false")
        chat = False if raw else None
    fields: dict[str, Any] = {"path": f"{ollama.PREFIX}{name}", **load}
    if p.label is not None:
        fields["label"] = p.label
    if chat is False:
        fields["chat"] = False
    spec = _model_spec(fields, {v: k for k, v in _OLLAMA_LOAD.items()}, p, doc, path)
    notes: list[str] = []
    predict = config.get("num_predict")
    if isinstance(predict, int) and not isinstance(predict, bool) and predict < 0:
        # -1 (no limit) and -2 (fill the context) have no equivalent: max_tokens stays.
        config.pop("num_predict")
        notes.append(f"num_predict {predict}")
    params, ignored = _params(config, _OLLAMA_PARAMS, p, doc, path)
    return Translated(
        p,
        "local",
        spec,
        params,
        runs_as=f"the Ollama model {ref.display}, in-process",
        ignored=notes + ignored,
    )


def _ollama_missing(ref: ollama.Ref, root: Path) -> str | None:
    """Why Ollama's store at `root` cannot give `ref`, or None when it holds it (a name that
    differs only in case counts, as in models.ollama.find)."""
    env = " (from OLLAMA_MODELS)" if os.environ.get("OLLAMA_MODELS") else ""
    if not root.is_dir():
        return f"no Ollama models folder at {root}{env} (install Ollama, or set OLLAMA_MODELS)"
    if ref.manifest(root).is_file():
        return None
    if any(r.display.lower() == ref.display.lower() for r, _ in ollama.installed(root)):
        return None
    return (
        f"Ollama model {ref.display} is not in {root}{env}: `ollama pull {ref.display}` fetches it"
    )


def _server(p: Provider, kind: str, rest: str, doc: YamlDoc, path: Path) -> Translated:
    mode, _, tail = rest.partition(":")
    if mode == "chat" or mode == "completion":
        endpoint, name = mode, tail
    elif mode in ("embedding", "embeddings"):
        return Translated(p, "replaced", why="an embedding model generates no text")
    elif kind == "openai" and mode in _OPENAI_OTHER_APIS:
        return Translated(
            p,
            "replaced",
            why=f"promptlab's server models speak /chat/completions and /completions, not {mode}",
        )
    elif kind == "openai":
        # promptfoo reads `openai:NAME` as NAME up to the next colon, on the chat API unless it
        # is one of OpenAI's completion models.
        name = mode
        endpoint = "completion" if name in _OPENAI_COMPLETION_MODELS else "chat"
    else:
        endpoint, name = "chat", rest  # localai:NAME is a chat model
    config = dict(p.config)
    base_url = _base_url(kind, config, p, doc, path)
    if base_url is None:
        return Translated(p, "replaced")  # OpenAI's cloud API
    if not name:
        raise InputError(
            f"{_where(doc, path, p.loc)}: {p.ident!r} names no model",
            hint=f"write {kind}:chat:NAME, NAME being the server's id for the model",
        )
    fields: dict[str, Any] = {
        "provider": "openai",
        "base_url": base_url,
        "model": name,
        "endpoint": endpoint,
    }
    for key, target in (("apiKey", "api_key"), ("apiKeyEnvar", "api_key_env")):
        value = config.get(key)
        if value is not None:
            if not isinstance(value, str):
                raise _bad(doc, path, (*p.loc, "config", key), f"{key} must be text")
            fields[target] = value
    if p.label is not None:
        fields["label"] = p.label
    spec = _model_spec(fields, {}, p, doc, path)
    for key in _OPENAI_CONNECTION:
        config.pop(key, None)
    params, ignored = _params(config, _OPENAI_PARAMS, p, doc, path)
    return Translated(
        p,
        "local",
        spec,
        params,
        runs_as=f"model {name} at {base_url} ({endpoint} endpoint)",
        ignored=ignored,
    )


# promptfoo's other OpenAI provider kinds, none of them a text completion promptlab can call.
_OPENAI_OTHER_APIS = (
    "responses",
    "assistant",
    "image",
    "moderation",
    "realtime",
    "agents",
    "chatkit",
    "transcription",
    "codex-sdk",
)


def _base_url(
    kind: str, config: dict[str, Any], p: Provider, doc: YamlDoc, path: Path
) -> str | None:
    """The server's API root as promptfoo computes it: apiHost (https://HOST/v1) before
    apiBaseUrl, a bare host given /v1. None for OpenAI's own cloud API. promptfoo's
    OPENAI_BASE_URL is not read: an environment left over from another tool must not turn a
    cloud provider into a server call."""
    host, base = config.get("apiHost"), config.get("apiBaseUrl")
    if host is not None:
        if not isinstance(host, str) or not host.strip() or "://" in host or "/" in host.strip("/"):
            raise _bad(
                doc,
                path,
                (*p.loc, "config", "apiHost"),
                f"apiHost must be a host name such as localhost:8080, got {host!r} (promptfoo "
                "calls https://HOST/v1; write a full URL as apiBaseUrl)",
            )
        return f"https://{host.strip('/')}/v1"
    if base is None and kind == "localai":
        base = os.environ.get("LOCALAI_BASE_URL") or "http://localhost:8080/v1"
    if base is None:
        return None
    if not isinstance(base, str) or not base.startswith(("http://", "https://")) or " " in base:
        raise _bad(
            doc,
            path,
            (*p.loc, "config", "apiBaseUrl"),
            f"apiBaseUrl must be an http:// or https:// URL such as http://127.0.0.1:8080/v1, "
            f"got {base!r}",
        )
    scheme, _, rest = base.partition("://")
    if "/" not in rest.rstrip("/"):
        return f"{scheme}://{rest.rstrip('/')}/v1"  # as promptfoo: a bare host means its /v1
    return base.rstrip("/")


def _model_spec(
    fields: dict[str, Any], names: dict[str, str], p: Provider, doc: YamlDoc, path: Path
) -> ModelSpec:
    """ModelSpec(**fields), its errors named by the provider's own keys (`names` maps a
    ModelSpec field back to promptfoo's config key)."""
    try:
        return ModelSpec.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else ""
        msg = str(err["msg"]).removeprefix("Value error, ")
        if name in names:
            raise _bad(doc, path, (*p.loc, "config", names[name]), msg) from None
        raise _bad(doc, path, p.loc, f"{name}: {msg}" if name else msg) from None


def _params(
    config: dict[str, Any], table: dict[str, str], p: Provider, doc: YamlDoc, path: Path
) -> tuple[dict[str, Any], list[str]]:
    """The config's generation settings as promptlab's Params (each checked against Params'
    bounds, named by the config key), and the keys with no equivalent."""
    params: dict[str, Any] = {}
    ignored: list[str] = []
    for key, value in config.items():
        target = table.get(key)
        if target is None:
            ignored.append(key)
            continue
        try:
            checked = Params.model_validate({target: value})
        except ValidationError as exc:
            msg = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
            raise _bad(doc, path, (*p.loc, "config", key), msg) from None
        if target in params and params[target] != getattr(checked, target):
            raise _bad(
                doc,
                path,
                (*p.loc, "config", key),
                f"{key} and another key both set {target}; keep one",
            )
        params[target] = getattr(checked, target)
    return params, ignored


def _where(doc: YamlDoc, path: Path, loc: tuple[int | str, ...]) -> str:
    return location(path, doc.line_of(loc), dotted(loc))


def ignored_entry_keys(p: Provider) -> list[tuple[str, str]]:
    """(key, why) for the keys of a provider entry that promptlab does not apply."""
    return [(k, _ENTRY_IGNORED.get(k, "promptlab has no such provider setting")) for k in p.extra]


def note(where: str, key: str, translated: list[Translated], default_label: str | None) -> str:
    """The note for a `providers:` whose entries decided the models: what each runs as, and
    which were replaced by the default model (`default_label`) and why."""
    ran = [t for t in translated if t.kind != "replaced"]
    replaced = [t for t in translated if t.kind == "replaced"]
    parts: list[str] = []
    for t in ran:
        ident = t.provider.ident
        if t.kind == "echo":
            parts.append(
                f"promptfoo's {ident} runs as the fake://echo model, which returns the "
                "rendered prompt as promptfoo's echo does"
            )
        else:
            parts.append(f"{ident} runs as {t.runs_as}")
    if replaced:
        ids = ", ".join(t.provider.ident for t in replaced)
        one = len(replaced) == 1
        if ran:
            parts.append(
                f"{ids} {'is' if one else 'are'} ignored, running the local model "
                f"{default_label} in {'its' if one else 'their'} place (--model picks another)"
            )
        else:
            parts.append(
                f"is ignored; running the local model {default_label} instead (--model picks another)"
            )
        parts += [f"{t.provider.ident}: {t.why}" for t in replaced if t.why]
    return f"{where}: {key}: " + "; ".join(parts)
