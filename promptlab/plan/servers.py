"""Planning for server models (`provider: openai`): the ServerSpec, and which endpoint a cell uses.

Kept apart from plan/cells.py so the server's rules sit in one place; nothing here contacts the
server.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from promptlab import scoring
from promptlab.backends.server import ServerSpec
from promptlab.errors import InputError
from promptlab.suite import ModelSpec, PromptDef


def server_spec(spec: ModelSpec, label: str, where: str) -> ServerSpec:
    """The planned form of a `provider: openai` entry (the schema made sure base_url and model
    are set). The API key comes from api_key or the environment variable api_key_env."""
    assert spec.base_url is not None and spec.model is not None
    if spec.api_key is not None and spec.api_key_env is not None:
        raise InputError(
            f"{where}: api_key and api_key_env are both set", hint="keep api_key_env only"
        )
    if spec.chat_template is not None and spec.endpoint == "chat":
        raise InputError(
            f"{where}: chat_template renders prompts here for the completion endpoint, but "
            "endpoint is chat (the server's own template)",
            hint="remove chat_template:, or set endpoint: completion (or auto)",
        )
    key = spec.api_key
    if spec.api_key_env is not None:
        key = os.environ.get(spec.api_key_env)
        if not key:
            raise InputError(
                f"{where}: api_key_env: environment variable {spec.api_key_env} is not set",
                hint=f"export {spec.api_key_env}=..., or remove api_key_env for a server "
                "without keys",
            )
    return ServerSpec(
        label=label,
        base_url=spec.base_url.rstrip("/"),
        model=spec.model,
        endpoint=spec.endpoint,
        concurrency=spec.concurrency,
        timeout=spec.timeout,
        retries=spec.retries,
        api_key=key,
    )


def server_endpoint(
    server: ServerSpec,
    has_template: bool,
    had_roles: bool,
    prompt: PromptDef,
    leaves: Sequence[scoring.Check],
) -> str:
    """ "chat" or "completion" for one prompt on a server model; InputError where neither fits.

    With a chat_template on the model, promptlab renders every prompt itself, so the text is
    known exactly and goes to /completions."""
    if has_template:
        return "completion"
    if server.uses_chat(had_roles):
        choice = next((c for c in leaves if c.base == "choice"), None)
        if choice is not None:
            raise InputError(
                f"{choice.where}: choice scores the exact prompt text, but prompt "
                f"'{prompt.label}' goes to the chat endpoint of {server.where()}, whose chat "
                "template promptlab cannot see",
                hint="set chat_template: on the model (prompts are then rendered here and sent "
                "as completions), or use a plain-text prompt with endpoint: auto or completion",
            )
        return "chat"
    if had_roles:
        raise InputError(
            f"{prompt.where}: prompt '{prompt.label}' has chat roles but {server.where()} uses "
            "the completion endpoint (endpoint: completion)",
            hint="set endpoint: auto or chat, or chat_template: on the model",
        )
    return "completion"
