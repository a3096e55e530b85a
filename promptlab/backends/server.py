"""What promptlab knows about a model behind an OpenAI-compatible server, before talking to it.

`ServerSpec` is a planned model's `path` when its suite entry says `provider: openai`: plain data,
cheap to import (planning and `validate` never import httpx or contact the server). The backend
itself lives in backends/openai.py; `server_identity` is what the result cache keys on.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from promptlab.errors import BackendError

if TYPE_CHECKING:
    import httpx

    from promptlab.backends import Backend

Endpoint = Literal["auto", "chat", "completion"]

# /v1/models entry fields that describe the model rather than the request. `created` is kept only
# when it is older than this: vLLM and llama-server put the time of the request there, which
# would make every run miss the cache, while Ollama puts the model's modification time.
IDENTITY_FIELDS = ("id", "owned_by", "root", "parent", "max_model_len", "meta")
STABLE_CREATED_S = 24 * 3600


# Backoff before retry n (0-based): BACKOFF_S * 2**n, at most MAX_BACKOFF_S.
BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0


def backoff(attempt: int) -> float:
    return min(MAX_BACKOFF_S, BACKOFF_S * 2.0**attempt)


@dataclass(frozen=True)
class ServerSpec:
    """A model served over the OpenAI API. The API key is never shown, compared or cached."""

    label: str
    base_url: str  # the API root, without a trailing slash (".../v1")
    model: str
    endpoint: Endpoint = "auto"
    concurrency: int = 4
    timeout: float = 120.0
    retries: int = 3
    api_key: str | None = field(default=None, repr=False, compare=False)

    def __str__(self) -> str:
        return f"{self.model} at {self.base_url}"

    def url(self, route: str) -> str:
        return f"{self.base_url}/{route.lstrip('/')}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def where(self) -> str:
        return f"model '{self.label}' ({self.model} at {self.base_url})"

    def uses_chat(self, has_roles: bool) -> bool:
        """Whether a prompt goes to /chat/completions: always with endpoint chat, never with
        completion, and for auto exactly when the prompt has chat roles (or is a message list)."""
        if self.endpoint == "auto":
            return has_roles
        return self.endpoint == "chat"


def chat_text(messages: list[tuple[str, str]]) -> str:
    """The text promptlab shows, stores and keys on for a chat request: the messages as the
    server receives them (the server applies its own chat template, which promptlab cannot see)."""
    return json.dumps(
        [{"role": role, "content": content} for role, content in messages],
        ensure_ascii=False,
        indent=2,
    )


def unreachable(spec: ServerSpec, exc: BaseException) -> BackendError:
    reason = str(exc).strip() or type(exc).__name__
    return BackendError(
        f"{spec.where()}: cannot reach the server ({type(exc).__name__}: {reason})",
        hint="check that the server is running and that base_url is its OpenAI API root, "
        "e.g. http://127.0.0.1:8080/v1",
    )


def http_client(spec: ServerSpec) -> httpx.Client:
    """An httpx client for the server: its key, timeout and `concurrency` connections."""
    import httpx  # noqa: PLC0415

    return httpx.Client(
        headers=spec.headers(),
        timeout=spec.timeout,
        limits=httpx.Limits(
            max_connections=spec.concurrency, max_keepalive_connections=spec.concurrency
        ),
        # Building the TLS context costs ~0.4 s; plain http:// has no use for it.
        verify=spec.base_url.startswith("https://"),
    )


def list_models(spec: ServerSpec) -> list[dict[str, Any]] | None:
    """GET base_url/models: the server's entries, or None when it has no such route (a 404, or
    an answer that is not an OpenAI model list). Raises BackendError when it cannot be reached
    or refuses the API key."""
    import httpx  # noqa: PLC0415 - only runs and cache lookups of server models need it

    attempt = 0
    with http_client(spec) as client:
        while True:
            try:
                response = client.get(spec.url("models"))
            except httpx.HTTPError as exc:
                if attempt >= spec.retries:
                    raise unreachable(spec, exc) from None
            else:
                if response.status_code < 500 or attempt >= spec.retries:
                    break
            time.sleep(backoff(attempt))
            attempt += 1
    if response.status_code in (401, 403):
        raise BackendError(
            f"{spec.where()}: the server refused the API key (HTTP {response.status_code})",
            hint="set api_key_env: to the environment variable that holds the key",
        )
    if response.status_code != 200:
        return None
    try:
        data = response.json().get("data")
    except (ValueError, AttributeError):
        return None
    if not isinstance(data, list):
        return None
    return [entry for entry in data if isinstance(entry, dict)]


def model_entry(spec: ServerSpec, entries: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """The server's entry for spec.model, reduced to the fields that identify the model."""
    for entry in entries or []:
        if entry.get("id") == spec.model:
            out = {k: entry[k] for k in IDENTITY_FIELDS if k in entry}
            created = entry.get("created")
            if isinstance(created, (int, float)) and time.time() - created > STABLE_CREATED_S:
                out["created"] = created
            return out
    return None


def check_listed(spec: ServerSpec, entries: list[dict[str, Any]] | None) -> None:
    """A server that lists its models but not this one would answer with another model (or an
    error per cell): stop with the names it does serve."""
    if entries and model_entry(spec, entries) is None:
        names = ", ".join(str(e.get("id")) for e in entries[:10])
        raise BackendError(
            f"{spec.where()}: the server does not serve model '{spec.model}'; it lists: {names}",
            hint="set model: to one of those ids",
        )


@dataclass(frozen=True)
class ServerIdentity:
    key: str  # what the result cache keys on (never the API key)
    cacheable: bool  # False when the server does not list the model: nothing identifies it


def server_identity(spec: ServerSpec) -> ServerIdentity:
    """The cache identity of a server model: base_url, model name, endpoint setting and the
    server's own description of the model. Asks the server (GET /models), so a rerun served from
    the cache still needs the server up: without it the cached results could be another
    model's."""
    entries = list_models(spec)
    check_listed(spec, entries)
    entry = model_entry(spec, entries)
    key = json.dumps(
        {
            "provider": "openai",
            "base_url": spec.base_url,
            "model": spec.model,
            "endpoint": spec.endpoint,
            "server_model": entry,
        },
        sort_keys=True,
        default=str,
    )
    return ServerIdentity(key, entry is not None)


def choice_problem(backend: Backend) -> str | None:
    """Why a server model's backend cannot score `choice` checks (backends/openai.py's self-test,
    run once), or None when it can or is not a server's. The engine asks here, so it reaches
    backends/openai.py (and httpx) only through open_backend and this question."""
    from promptlab.backends.openai import OpenAIBackend  # noqa: PLC0415 - imports httpx

    return backend.choice_problem() if isinstance(backend, OpenAIBackend) else None
