"""The server half of a model entry (`provider: openai`): its settings and which keys belong to
which kind of model. suite/schema.py's ModelSpec inherits it, so a model entry stays one flat
mapping; planning (plan/servers.py) turns it into a backends.server.ServerSpec.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

# provider: openai takes the server settings and none of the llama.cpp load settings (those are
# the server's own); a local model takes none of the server settings.
SERVER_KEYS = (
    "base_url",
    "model",
    "api_key",
    "api_key_env",
    "concurrency",
    "timeout",
    "retries",
    "endpoint",
)
GGUF_KEYS = (
    "path",
    "n_gpu_layers",
    "n_ctx",
    "n_batch",
    "n_threads",
    "n_threads_batch",
    "chat",
    "flash_attn",
    "prefix_chunk",
    "parallel",
)


class ServerFields(BaseModel):
    """The settings of a model behind an OpenAI-compatible server. A plain BaseModel (not Strict,
    which lives in schema.py and imports this): ModelSpec adds Strict's unknown-key check."""

    provider: Literal["local", "openai"] = Field(
        default="local",
        description="local: a GGUF file run in-process by llama.cpp; openai: a model served by an "
        "OpenAI-compatible server (llama-server, llama-cpp-python's server, Ollama, vLLM, LM Studio) at base_url",
    )
    base_url: str | None = Field(
        default=None,
        description="provider: openai: the server's OpenAI API root, e.g. http://127.0.0.1:8080/v1",
    )
    model: str | None = Field(
        default=None,
        description="provider: openai: the server's name for the model (an id from GET base_url/models)",
    )
    api_key: str | None = Field(
        default=None,
        description="provider: openai: sent as a Bearer token; prefer api_key_env, which keeps the "
        "key out of the suite. Never stored in the cache key or the manifest",
    )
    api_key_env: str | None = Field(
        default=None, description="provider: openai: environment variable holding the API key"
    )
    concurrency: int = Field(
        default=4, ge=1, le=256, description="provider: openai: requests in flight at once"
    )
    timeout: float = Field(
        default=120.0,
        gt=0,
        le=86_400,
        allow_inf_nan=False,
        description="provider: openai: seconds to wait for one answer",
    )
    retries: int = Field(
        default=3,
        ge=0,
        le=20,
        description="provider: openai: retries of a request that met 429, 5xx, a timeout or a "
        "connection error, with exponential backoff (Retry-After honoured)",
    )
    endpoint: Literal["auto", "chat", "completion"] = Field(
        default="auto",
        description="provider: openai: chat = /chat/completions (the server applies its chat "
        "template), completion = /completions with promptlab's text; auto = chat for prompts with "
        "chat roles, completion for plain text. With chat_template set, prompts are rendered here "
        "and sent as completions",
    )

    @model_validator(mode="before")
    @classmethod
    def _provider_keys(cls, data: Any) -> Any:
        # Each misplaced key is reported at its own line, naming it and the fix.
        if not isinstance(data, dict):
            return data
        server = data.get("provider") == "openai"
        errors: list[InitErrorDetails] = []
        for key in GGUF_KEYS if server else SERVER_KEYS:
            if key in data:
                msg = (
                    "'{key}' is a llama.cpp setting of in-process models; a server model "
                    "(provider: openai) takes the server's own, so remove it here"
                    if server
                    else "'{key}' is a setting of server models; add provider: openai (with "
                    "base_url and model) or remove it"
                )
                error = PydanticCustomError("provider_key", msg, {"key": key})
                errors.append(InitErrorDetails(type=error, loc=(key,), input=data[key]))
        needed = ("base_url", "model") if server else ("path",)
        for key in needed:
            if key not in data and data.get("provider") in (None, "local", "openai"):
                what = "provider: openai needs" if server else "a local model needs"
                error = PydanticCustomError(
                    "provider_key",
                    "missing required key; {what} {key}:",
                    {"what": what, "key": key},
                )
                errors.append(InitErrorDetails(type=error, loc=(key,), input=None))
        url = data.get("base_url") if server else None
        if isinstance(url, str) and not url.startswith(("http://", "https://")):
            error = PydanticCustomError(
                "provider_key",
                "base_url must start with http:// or https://, e.g. http://127.0.0.1:8080/v1",
            )
            errors.append(InitErrorDetails(type=error, loc=("base_url",), input=None))
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return data
