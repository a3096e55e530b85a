"""Applying a model's chat template, in promptlab rather than inside llama-cpp-python.

Rendering the template here means `promptlab render` shows the exact text the model receives,
the result cache can key on it, and prefix-sharing is visible as plain text. It is a separate Jinja
environment from the user-template one on purpose: model chat templates are HuggingFace-style
(trim_blocks, lstrip_blocks, loop controls, `raise_exception`) and must render exactly as
llama-cpp-python's Jinja2ChatFormatter would, while user templates follow promptlab's rules.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from promptlab.errors import InputError
from promptlab.templates import Message


class _IgnoreGeneration(jinja2.ext.Extension):
    # HuggingFace's `{% generation %}` marks assistant spans for training; it renders as-is.
    tags = {"generation"}  # noqa: RUF012 - jinja reads it as a class attribute

    def parse(self, parser: Any) -> Any:
        parser.stream.skip(1)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _raise(message: str) -> None:
    raise ValueError(message)


_ENV = ImmutableSandboxedEnvironment(
    loader=jinja2.BaseLoader(),
    trim_blocks=True,
    lstrip_blocks=True,
    extensions=[_IgnoreGeneration, jinja2.ext.loopcontrols],
)
_ENV.filters["tojson"] = _tojson


@functools.lru_cache(maxsize=32)
def _compiled(template: str) -> jinja2.Template:
    # Compiling a chat template costs ~2.5 ms; a run applies it once per cell.
    return _ENV.from_string(template)


@dataclass(frozen=True)
class ChatTemplate:
    source: str  # "gguf:tokenizer.chat_template", "file:…" or "inline"
    template: str
    bos_token: str
    eos_token: str

    def compile(self, where: str) -> jinja2.Template:
        try:
            return _compiled(self.template)
        except jinja2.TemplateSyntaxError as exc:
            raise InputError(
                f"{where}: chat template ({self.source}) line {exc.lineno}: {exc.message}",
                hint="fix chat_template, or set chat: false to send raw text",
            ) from None

    def apply(self, messages: Sequence[Message], where: str) -> str:
        try:
            return self.compile(where).render(
                messages=[m.as_dict() for m in messages],
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                add_generation_prompt=True,
                raise_exception=_raise,
                strftime_now=lambda f: datetime.now().strftime(f),
                tools=None,
                functions=None,
                function_call=None,
                tool_choice=None,
            )
        except (jinja2.TemplateError, ValueError, TypeError) as exc:
            raise InputError(
                f"{where}: the model's chat template ({self.source}) refused these messages: {exc}",
                hint="check the roles your prompt uses (some templates reject a system role)",
            ) from None
