"""Read an eval suite: YAML → pydantic models (extra="forbid") → loaded prompts, tests and models.

Vocabulary follows promptfoo (prompts, vars, defaultTest, tests, assert) so its configs carry over.
Everything is checked here, before any model loads; each error names file, line and field.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import difflib
import io
import itertools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import jinja2
import jinja2.meta
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from promptlab import assertions, files, transforms
from promptlab.errors import SKIP_HINT, InputError, Problems, Unsupported, location
from promptlab.files import find_project_root, read_text
from promptlab.models import BUNDLED, DEFAULT_MODEL
from promptlab.templates import TemplateEnv, sha256_text
from promptlab.yamlio import YamlDoc, dotted, field_path, load_json, load_yaml


def _files(what: str) -> dict[str, Any]:
    """Schema marker for a field that may name files (`file://…`). Every such file is read
    through files.confine; tests/test_security.py lists the marked fields from the JSON schema and
    plants a reference outside the project in each, so a new field cannot skip the check."""
    return {"x-promptlab-file": what}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    # promptfoo keys that would change results here: refused with the reason and the alternative
    # (rather than "unknown key", which would suggest a typo).
    promptfoo_refused: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _unknown_keys(cls, data: Any) -> Any:
        # Our own check (instead of pydantic's extra_forbidden) so the message can suggest the
        # closest valid key. Every bad key of the mapping is reported, not just the first.
        if isinstance(data, dict):
            allowed = sorted({f.alias or name for name, f in cls.model_fields.items()})
            errors: list[InitErrorDetails] = []
            for key in data:
                if key in cls.promptfoo_refused:
                    error = PydanticCustomError(
                        "promptfoo_refused",
                        "promptfoo's '{key}' is not supported: {why}",
                        {"key": str(key), "why": cls.promptfoo_refused[key]},
                    )
                elif key not in allowed:
                    close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.5)
                    hint = (
                        f"did you mean '{close[0]}'?"
                        if close
                        else "valid keys: " + ", ".join(allowed)
                    )
                    error = PydanticCustomError(
                        "unknown_key",
                        "unknown key '{key}'; {hint}",
                        {"key": str(key), "hint": hint},
                    )
                else:
                    continue
                # loc () = this mapping; validation_errors appends the key from ctx.
                errors.append(InitErrorDetails(type=error, loc=(), input=data[key]))
            if errors:
                raise ValidationError.from_exception_data(cls.__name__, errors)
        return data


TransformSpec = str | list[str | dict[str, str]]


# What promptfoo's grader `provider:` may be: an id, or `{id, config}`; remote ids are ignored.
ProviderSpec = str | dict[str, Any]


class AssertSpec(Strict):
    """One check on the output, in promptfoo's shape: `{type, value, threshold, weight, metric}`."""

    promptfoo_refused: ClassVar[dict[str, str]] = {
        "contextTransform": "it feeds context-* checks, which promptlab does not run; "
        "compute the context in a python check instead",
    }

    type: str = Field(
        description="Check type, e.g. icontains, regex, json-schema, choice, llm-rubric, similar, python"
    )
    value: Any = Field(
        default=None,
        description="Expected value; Jinja is rendered with the test's vars. file://x.txt reads "
        "it from a file (.json/.yaml parsed); for json-schema a schema file, for python code",
        json_schema_extra=_files("check value, JSON schema or Python file"),
    )
    threshold: float | None = Field(
        default=None,
        ge=0,
        le=1e9,
        allow_inf_nan=False,
        description="Pass mark: a score in [0, 1] for scored checks; ms for latency; tokens for max-tokens; "
        "the largest edit distance for levenshtein; the largest perplexity for perplexity",
    )
    weight: float = Field(
        default=1.0,
        ge=0,
        le=1e6,
        allow_inf_nan=False,
        description="Weight in the test's score; 0 reports without gating",
    )
    metric: str | None = Field(
        default=None, description="Named metric this check's score counts toward"
    )
    transform: TransformSpec | None = Field(
        default=None,
        description="Applied to the output before this check: strip, lower, regex:…, file://x.py:fn",
        json_schema_extra=_files("Python file"),
    )
    provider: ProviderSpec | None = Field(
        default=None,
        description="Judge or embedding model for llm-rubric / similar: a .gguf path or bundled alias "
        "(a remote promptfoo provider such as openai:… is ignored with a note)",
    )
    rubricPrompt: str | list[dict[str, str]] | None = Field(
        default=None,
        description="Judge prompt: Jinja text, file://x.j2 or a message list (vars: rubric, output)",
        json_schema_extra=_files("template"),
    )
    config: dict[str, Any] | None = Field(
        default=None,
        description="Passed to python checks as context['config'] (an assert-set passes its own down)",
    )
    choices: list[Any] | str | None = Field(
        default=None, description="For choice: the options, or the name of a variable holding them"
    )
    method: str | None = Field(
        default=None,
        description="For choice: acc or acc_norm; for similar: embedding, levenshtein, rouge-l, rouge-n, bleu",
    )
    assert_: list[AssertSpec] | None = Field(
        default=None, alias="assert", description="For assert-set: the grouped checks"
    )


_NOTE_ONLY = "promptfoo: no effect here, ignored with a note"


class TestOptions(Strict):
    """promptfoo's test `options`: defaults for the checks of a test."""

    promptfoo_refused: ClassVar[dict[str, str]] = {
        "prefix": "it changes the prompt; put the text in the prompt template (or in a variable)",
        "suffix": "it changes the prompt; put the text in the prompt template (or in a variable)",
        "transformVars": "it runs JavaScript on the vars; compute them in the test file instead",
        "storeOutputAs": "tests run independently here; write the earlier turn into the prompt",
    }

    transform: TransformSpec | None = Field(
        default=None,
        description="Applied to the output before every check of the test (file://x.py:fn runs Python)",
        json_schema_extra=_files("Python file"),
    )
    postprocess: TransformSpec | None = Field(
        default=None,
        description="promptfoo's old name for transform",
        json_schema_extra=_files("Python file"),
    )
    provider: ProviderSpec | None = None
    rubricPrompt: str | list[dict[str, str]] | None = Field(
        default=None,
        description="Judge prompt for the test's checks: Jinja text, file://x.j2 or a message list",
        json_schema_extra=_files("template"),
    )
    disableVarExpansion: bool | None = Field(
        default=None, description="Keep list-valued vars as one value instead of one test each"
    )
    disableDefaultAsserts: bool | None = Field(
        default=None, description="Skip defaultTest's checks for this test"
    )
    runSerially: bool | None = Field(default=None, description=_NOTE_ONLY)
    disableConversationVar: bool | None = Field(default=None, description=_NOTE_ONLY)
    factuality: dict[str, Any] | None = Field(default=None, description=_NOTE_ONLY)


_TEST_REFUSED = {
    "prompts": "every test runs against every prompt here; split the prompts into separate suites",
    "providerOutput": "promptlab always runs the local model; put a fixed reply in a "
    "fake://reply?text=… model if you only want to test the checks",
    "assertScoringFunction": "it runs custom scoring code; use weights, metric and threshold",
    "path": "a test generator runs code to make tests; write the tests to a .csv, .jsonl, .yaml "
    "or .json file",
}


class TestSpec(Strict):
    promptfoo_refused: ClassVar[dict[str, str]] = _TEST_REFUSED

    description: str | None = None
    vars: dict[str, Any] = Field(
        default_factory=dict,
        description="The test's variables; a value file://x.txt is read from the file",
        json_schema_extra=_files("variable file"),
    )
    assert_: list[AssertSpec] = Field(default_factory=list, alias="assert")
    threshold: float | None = Field(
        default=None,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="Pass when the weighted score reaches this",
    )
    transform: TransformSpec | None = Field(
        default=None,
        description="Applied to the output before every check (file://x.py:fn runs Python)",
        json_schema_extra=_files("Python file"),
    )
    options: TestOptions | None = None
    metadata: dict[str, Any] | None = Field(
        default=None, description="Free-form, kept in the results"
    )
    provider: Any = Field(
        default=None, description="promptfoo: the test's own model; ignored with a note"
    )
    providers: Any = Field(
        default=None, description="promptfoo: which providers run the test; ignored with a note"
    )


class DefaultTestSpec(Strict):
    promptfoo_refused: ClassVar[dict[str, str]] = _TEST_REFUSED

    vars: dict[str, Any] = Field(
        default_factory=dict,
        description="Variables for every test; a value file://x.txt is read from the file",
        json_schema_extra=_files("variable file"),
    )
    assert_: list[AssertSpec] = Field(default_factory=list, alias="assert")
    threshold: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    transform: TransformSpec | None = Field(
        default=None,
        description="Applied to every test's output before its checks (file://x.py:fn runs Python)",
        json_schema_extra=_files("Python file"),
    )
    options: TestOptions | None = None
    metadata: dict[str, Any] | None = None
    provider: Any = Field(default=None, description=_NOTE_ONLY)
    providers: Any = Field(default=None, description=_NOTE_ONLY)


class Constraint(Strict):
    """Constrained generation, passed to llama.cpp's grammar sampler."""

    response_format: dict[str, Any] | None = Field(
        default=None,
        description="{type: json_schema, schema: {...}} (or OpenAI's json_schema: {schema: ...}), or {type: json_object}",
    )
    grammar: str | None = Field(
        default=None,
        description="GBNF grammar text, or file://grammar.gbnf",
        json_schema_extra=_files("grammar file"),
    )

    @model_validator(mode="after")
    def _one(self) -> Constraint:
        if self.response_format is not None and self.grammar is not None:
            raise PydanticCustomError(
                "two_constraints", "give response_format or grammar, not both"
            )
        return self


class PromptSpec(Strict):
    id: str | None = Field(
        default=None,
        description="promptfoo style: `file://path` or the template text itself",
        json_schema_extra=_files("prompt file"),
    )
    raw: str | None = Field(default=None, description="Inline Jinja template text")
    messages: list[dict[str, Any]] | None = Field(
        default=None,
        description="promptfoo's chat form: a list of {role, content} messages; each content is "
        "Jinja text or `file://path` to a template file, rendered per test",
        json_schema_extra=_files("template"),
    )
    label: str | None = Field(default=None, description="Name shown in reports")
    display: str | None = Field(default=None, description="promptfoo's old name for label")
    config: Constraint | None = Field(
        default=None, description="Per-prompt constrained generation: response_format or grammar"
    )

    @model_validator(mode="after")
    def _has_source(self) -> PromptSpec:
        given = [k for k in ("raw", "messages") if getattr(self, k) is not None]
        if self.id is None and not given:
            raise PydanticCustomError(
                "prompt_source",
                "a prompt mapping needs `raw:` (inline text), `messages:` (a chat) or "
                "`id: file://…`",
            )
        if len(given) > 1 or (self.messages is not None and self.id is not None):
            raise PydanticCustomError(
                "prompt_source", "give a prompt one of raw:, messages: or id: file://…, not several"
            )
        return self


def _str_to_prompt(value: Any) -> Any:
    if isinstance(value, list):
        return {"messages": value}  # promptfoo sends a bare message list as that chat
    return {"id": value} if isinstance(value, str) else value


# Top-level promptfoo keys that don't apply to a local run: accepted, and named in one note.
_IGNORED_TOP = {
    "tags": "labels for promptfoo's web viewer",
    "env": "environment for remote providers' API keys",
    "outputPath": "promptlab writes its run folder (-o DIR)",
    "sharing": "nothing leaves this machine",
    "evaluateOptions": "concurrency, delay and timeouts of remote calls; the result cache "
    "follows --no-cache and --refresh",
    "derivedMetrics": "computed from named scores after the run; promptlab reports each metric",
    "metadata": "free-form",
    "writeLatestResults": "promptlab always writes its run folder",
    "tracing": "OpenTelemetry tracing of remote calls",
}


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


class ModelSpec(Strict):
    """A local GGUF model and its llama.cpp load settings (all set explicitly, never library
    defaults), or a model behind an OpenAI-compatible server (provider: openai)."""

    provider: Literal["local", "openai"] = Field(
        default="local",
        description="local: a GGUF file run in-process by llama.cpp; openai: a model served by an "
        "OpenAI-compatible server (llama-server, llama-cpp-python's server, Ollama, vLLM, LM Studio) at base_url",
    )
    path: str | None = Field(
        default=None,
        description="A .gguf file (relative to the suite; model files may live outside the "
        "project) or a bundled alias: smollm2, gemma3. fake://rules?file=x.json reads a rules file. "
        "Required for a local model",
        json_schema_extra=_files("fake-backend rules file"),
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
    label: str | None = Field(
        default=None, description="Name shown in reports (default: alias or file stem)"
    )
    n_gpu_layers: int | None = Field(
        default=None,
        ge=-1,
        le=10_000,
        description="Layers to offload; -1 = all. Default: all when the build supports GPU offload, else 0",
    )
    n_ctx: int = Field(default=4096, ge=64, le=1 << 20, description="Context window in tokens")
    n_batch: int = Field(
        default=512,
        ge=1,
        le=1 << 20,
        description="Prompt-processing batch size (default: 512, or n_ctx if smaller)",
    )
    n_threads: int | None = Field(
        default=None, ge=1, le=1024, description="Generation threads (default: usable CPUs)"
    )
    n_threads_batch: int | None = Field(
        default=None, ge=1, le=1024, description="Prompt-processing threads (default: usable CPUs)"
    )
    chat: Literal["auto", True, False] = Field(
        default="auto",
        description="Apply the chat template: auto = when the GGUF has one (or chat_template is set)",
    )
    chat_template: str | None = Field(
        default=None,
        description="Override the GGUF chat template: file://path.jinja or inline Jinja",
        json_schema_extra=_files("chat template"),
    )
    flash_attn: bool = Field(
        default=False, description="llama.cpp flash attention (changes logits slightly)"
    )
    prefix_chunk: int = Field(
        default=128,
        ge=8,
        le=4096,
        description="Only for a model the load-time self-test finds not split-invariant: prompts are then decoded in chunks aligned to multiples of min(prefix_chunk, n_batch) tokens, and a cached prefix is reused in whole chunks only, so results never depend on what ran before. Smaller reuses more of a shared prefix; larger decodes a new prompt a little faster",
    )
    parallel: int | Literal["auto"] = Field(
        default="auto",
        description="How many cells generate at once, each in its own KV stream: auto = 8 on a CPU and 16 with GPU offload where the load-time self-test finds batching exact (results then do not depend on it), else 1. A number forces it; where batching is not exact such results are not cached",
    )

    @field_validator("parallel")
    @classmethod
    def _parallel_range(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 64:
            raise PydanticCustomError(
                "parallel_range", "parallel must be auto or 1..64, got {v}", {"v": value}
            )
        return value

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

    @model_validator(mode="after")
    def _batch_fits(self) -> ModelSpec:
        if "n_batch" not in self.model_fields_set:
            # The default follows a small n_ctx down, as llama.cpp itself does.
            self.n_batch = min(self.n_batch, self.n_ctx)
        if self.n_batch > self.n_ctx:
            raise PydanticCustomError(
                "batch_ctx",
                "n_batch ({b}) cannot exceed n_ctx ({c}); lower n_batch or raise n_ctx",
                {"b": self.n_batch, "c": self.n_ctx},
            )
        return self


def _str_to_model(value: Any) -> Any:
    return {"path": value} if isinstance(value, str) else value


MIN_TEMPERATURE = 0.001


class Params(Constraint):
    """Generation settings. Every one is passed to llama.cpp explicitly."""

    # Floats reach llama.cpp as float32, where 1e-300 is 0 and 1e-40 divides logits into inf:
    # the lower bounds keep every accepted value meaningful there.
    temperature: float = Field(
        default=0.0,
        ge=0.0,
        le=5.0,
        allow_inf_nan=False,
        description="0 = greedy (deterministic); otherwise at least 0.001",
        json_schema_extra={"not": {"exclusiveMinimum": 0, "exclusiveMaximum": MIN_TEMPERATURE}},
    )
    top_p: float = Field(default=0.95, ge=1e-6, le=1.0, allow_inf_nan=False)
    top_k: int = Field(default=40, ge=0, le=1_000_000, description="0 = disabled")
    min_p: float = Field(default=0.05, ge=0.0, le=1.0, allow_inf_nan=False)
    max_tokens: int = Field(default=128, ge=1, le=1 << 20, description="Tokens to generate at most")
    stop: list[str] = Field(default_factory=list, description="Stop strings (excluded from output)")
    seed: int = Field(
        default=0, ge=0, lt=2**32 - 1, description="Sampling seed, passed on every call"
    )
    repeat_penalty: float = Field(
        default=1.0, ge=0.01, le=10.0, allow_inf_nan=False, description="1.0 = off"
    )
    logprobs: int | None = Field(
        default=None,
        ge=0,
        le=20,
        description="Store each generated token's logprob and this many top alternatives (0 = chosen only)",
    )

    @field_validator("temperature")
    @classmethod
    def _temperature_gap(cls, value: float) -> float:
        if 0 < value < MIN_TEMPERATURE:
            raise PydanticCustomError(
                "temperature_gap",
                "temperature {v} is greedy in effect; use 0 (greedy) or at least {m}",
                {"v": value, "m": MIN_TEMPERATURE},
            )
        return value

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("stop")
    @classmethod
    def _non_empty_stop(cls, value: list[str]) -> list[str]:
        if any(s == "" for s in value):
            raise PydanticCustomError(
                "empty_stop", "stop strings cannot be empty; remove the empty string"
            )
        return value


GRIDABLE = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "max_tokens",
    "seed",
    "repeat_penalty",
    "stop",
)


def _grid_field(name: str, field_info: Any) -> Any:
    # Keep each setting's own bounds (ge/le) on every element of a list, for editors too.
    args = (field_info.annotation, *field_info.metadata)
    base: Any = Annotated[args] if field_info.metadata else field_info.annotation
    kind: Any = base | list[base] if name in GRIDABLE else base
    default = None if name == "stop" else field_info.default
    return (
        kind,
        Field(
            default=default,
            description=field_info.description,
            json_schema_extra=field_info.json_schema_extra,
        ),
    )


# What editors see for `params:`: each gridable setting as a value or a list of values.
ParamsGrid = create_model(
    "ParamsGrid",
    __config__=ConfigDict(extra="forbid"),
    **{name: _grid_field(name, f) for name, f in Params.model_fields.items()},
)


def expand_params(raw: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """`params:` with lists → every combination (a grid), and the keys that vary.

    `stop` is already a list: a list of strings is one setting, a list of lists a grid.
    """
    axes: list[tuple[str, list[Any]]] = []
    for key in GRIDABLE:
        if key not in raw:
            continue
        value = raw[key]
        if key == "stop":
            is_grid = isinstance(value, list) and value and all(isinstance(v, list) for v in value)
        else:
            is_grid = isinstance(value, list)
        if is_grid:
            axes.append((key, list(value)))
    fixed = {k: v for k, v in raw.items() if k not in dict(axes)}
    combos = [dict(fixed)]
    for key, values in axes:
        combos = [{**c, key: v} for c in combos for v in values]
    return combos, [key for key, values in axes if len(values) > 1]


class Suite(Strict):
    """An eval suite file (evals/*.yaml)."""

    promptfoo_refused: ClassVar[dict[str, str]] = {
        "scenarios": "write the combinations as tests (list-valued vars expand into one test each)",
        "extensions": "hooks run JavaScript or Python around the eval; promptlab runs no hooks",
        "nunjucksFilters": "custom filters are JavaScript; templates are Jinja here, so use a "
        "Jinja built-in filter (load and dump are provided)",
        "commandLineOptions": "pass promptlab's own flags (--model, --filter, --limit, -o)",
        "redteam": "red-team generation needs promptfoo's remote services",
    }

    description: str | None = None
    prompts: Annotated[
        list[
            Annotated[
                PromptSpec, BeforeValidator(_str_to_prompt, json_schema_input_type=str | PromptSpec)
            ]
        ],
        Field(
            min_length=1,
            description="Inline Jinja text, file://path, or {id|raw, label}",
            json_schema_extra=_files("prompt file"),
        ),
    ]
    providers: Any = Field(
        default=None, description="promptfoo's providers; ignored: promptlab runs the local models"
    )
    targets: Any = Field(
        default=None, description="promptfoo's other name for providers; ignored the same way"
    )
    vars: dict[str, Any] = Field(
        default_factory=dict,
        description="Defaults for every test; a value file://x.txt is read from the file",
        json_schema_extra=_files("variable file"),
    )
    defaultTest: Annotated[
        DefaultTestSpec | None,
        BeforeValidator(lambda v: v, json_schema_input_type=DefaultTestSpec | str | None),
        Field(
            description="Merged into every test, or file://defaults.yaml holding it",
            json_schema_extra=_files("defaultTest file"),
        ),
    ] = None
    tests: Annotated[
        list[Any] | str,
        BeforeValidator(lambda v: v, json_schema_input_type=list[str | TestSpec] | str),
        Field(
            description="Tests, or file://tests.csv|.jsonl|.yaml (globs allowed), or a mix",
            json_schema_extra=_files("test file"),
        ),
    ] = Field(default_factory=list)
    models: (
        list[
            Annotated[
                ModelSpec, BeforeValidator(_str_to_model, json_schema_input_type=str | ModelSpec)
            ]
        ]
        | None
    ) = Field(default=None, description="Local models; default: the bundled smollm2")
    params: Annotated[
        dict[str, Any],
        BeforeValidator(lambda v: {} if v is None else v, json_schema_input_type=ParamsGrid),
        Field(description="Generation settings; a list of values for a setting makes a grid"),
    ] = Field(default_factory=dict)
    repeat: int = Field(
        default=1, ge=1, le=1000, description="Run each cell N times, with seeds seed, seed+1, …"
    )
    allow_code: bool | None = Field(
        default=None,
        description="Ignored, with a note: a suite cannot give itself consent to run code. The "
        "person running it does: --allow-code, PROMPTLAB_ALLOW_CODE=1 or `promptlab trust`",
    )
    assertionTemplates: dict[str, Any] | None = Field(
        default=None, description="Reusable checks, used as $ref: '#/assertionTemplates/name'"
    )
    tags: Any = Field(default=None, description=_NOTE_ONLY)
    env: Any = Field(default=None, description=_NOTE_ONLY)
    outputPath: Any = Field(default=None, description=_NOTE_ONLY)
    sharing: Any = Field(default=None, description=_NOTE_ONLY)
    evaluateOptions: dict[str, Any] | None = Field(
        default=None,
        description="promptfoo's run options: repeat runs each cell N times (as repeat: does); "
        "the other keys have no effect here and are named in a note",
    )
    derivedMetrics: Any = Field(default=None, description=_NOTE_ONLY)
    metadata: Any = Field(default=None, description=_NOTE_ONLY)
    writeLatestResults: Any = Field(default=None, description=_NOTE_ONLY)
    tracing: Any = Field(default=None, description=_NOTE_ONLY)

    @field_validator("prompts", mode="before")
    @classmethod
    def _prompts_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [value]
        if isinstance(value, dict) and value:
            # promptfoo's map form: {path: label}
            return [{"id": k, "label": v} for k, v in value.items()]
        if value is None or value == []:
            raise PydanticCustomError("empty_prompts", "prompts is empty; add at least one prompt")
        return value


# --- loaded form ----------------------------------------------------------------------------


@dataclass
class PromptDef:
    label: str
    source: str  # project-relative file or "inline"
    kind: Literal["text", "messages"]
    parts: list[tuple[str | None, jinja2.Template]]  # (role, template); role None for text
    sha256: str
    where: str
    variables: set[str] = field(default_factory=set)
    config: Constraint | None = None


@dataclass
class CheckDef:
    type: str
    value: Any
    threshold: float | None
    where: str
    extra: dict[str, Any] = field(default_factory=dict)  # weight, metric, transform, provider, …
    children: list[CheckDef] = field(default_factory=list)  # assert-set


@dataclass
class TestDef:
    index: int
    description: str | None
    vars: dict[str, Any]
    checks: list[CheckDef]
    where: str
    csv_columns: set[str] | None = None  # set when the test came from a CSV row
    threshold: float | None = None
    transform: Any = None
    options: dict[str, Any] = field(default_factory=dict)  # provider, rubricPrompt defaults
    metadata: dict[str, Any] | None = None
    expand_vars: bool | None = None  # promptfoo's options.disableVarExpansion, inverted
    default_asserts: bool | None = None  # promptfoo's options.disableDefaultAsserts, inverted

    @property
    def name(self) -> str:
        return self.description or f"test {self.index + 1}"


@dataclass
class ModelDef:
    label: str
    spec: ModelSpec
    where: str


@dataclass
class LoadedSuite:
    path: Path
    root: Path
    sha256: str
    description: str | None
    prompts: list[PromptDef]
    tests: list[TestDef]
    models: list[ModelDef]
    params: Params  # the first setting (the only one without a grid)
    env: TemplateEnv
    notes: list[str]
    files: dict[str, str]  # project-relative path -> sha256 of every file the suite read
    settings: list[Params] = field(default_factory=list)  # every combination of params:
    claims_code: bool = False  # the suite set allow_code:, which grants nothing
    varied: list[str] = field(default_factory=list)  # the params keys that take several values
    repeat: int = 1
    # --skip-unsupported: each check, test, prompt or key left out, as {what, where, why}.
    skipped: list[dict[str, str]] = field(default_factory=list)


def validation_error(
    exc: ValidationError,
    doc: YamlDoc | None,
    path: Path,
    prefix: tuple[int | str, ...] = (),
    line: int | None = None,
) -> InputError:
    """The first problem of `exc`, as one line (see validation_errors for all of them)."""
    return validation_errors(exc, doc, path, prefix, line)[0][1]


def validation_errors(
    exc: ValidationError,
    doc: YamlDoc | None,
    path: Path,
    prefix: tuple[int | str, ...] = (),
    line: int | None = None,
) -> list[tuple[tuple[int | str, ...], InputError]]:
    """Every problem of `exc`, each with its location in the data and its own
    `file:line: field: problem` line. promptfoo keys that promptlab does not run are
    Unsupported, which --skip-unsupported can leave out."""
    # A value that fits no member of a union fails once per member (loc parts such as `int`,
    # "literal['auto']" or a model's name): one problem per field, naming every member's rule.
    found: dict[str, tuple[tuple[int | str, ...], type[InputError], str, str, list[str]]] = {}
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in (*prefix, *err["loc"]) if not _union_member(p))
        if err["type"] in ("unknown_key", "promptfoo_refused"):
            key = err.get("ctx", {}).get("key", "")
            loc = (*loc, key)
            msg = err["msg"]
            field_name = field_path(loc[:-1])
        else:
            field_name = field_path(loc)
            msg = err["msg"]
            if err["type"] == "missing":
                msg = f"missing required key; add {loc[-1]}:"
        got = ""
        if err["type"] not in _NO_INPUT and "input" in err:
            got = f" (got {json.dumps(err['input'], default=str)[:60]})"
        at = doc.line_of(loc) if doc is not None else line
        key_path = dotted(loc)
        kind = Unsupported if err["type"] == "promptfoo_refused" else InputError
        if key_path in found:
            msgs = found[key_path][4]
            if msg not in msgs:
                msgs.append(msg)
            continue
        found[key_path] = (loc, kind, f"{location(path, at)}: {field_name}: ", got, [msg])
    return [
        (loc, kind(head + " or ".join(msgs) + got)) for loc, kind, head, got, msgs in found.values()
    ]


# Error types whose message says it all: no "(got ...)" after it.
_NO_INPUT = {
    "unknown_key",
    "promptfoo_refused",
    "missing",
    "model_type",
    "dict_type",
    "list_type",
    "provider_key",
}
_UNION_TAG = re.compile(r"^(?:[a-z]+(?:-[a-z]+)*\[.*\]|int|float|str|bool|none|[A-Z]\w*)$")


def _union_member(part: int | str) -> bool:
    """Whether a pydantic error location part names a union member rather than a key."""
    return isinstance(part, str) and bool(_UNION_TAG.match(part))


def _prune(
    data: Any, locs: Sequence[tuple[int | str, ...]]
) -> tuple[Any, set[tuple[int | str, ...]]]:
    """A copy of `data` without the mapping keys that `locs` point into, and the keys removed.
    Only mapping keys are removed, never list items, so the indices (and with them the line
    numbers of the problems found next) stay those of the file."""
    data = copy.deepcopy(data)
    removed: set[tuple[int | str, ...]] = set()
    for loc in locs:
        node: Any = data
        walked: tuple[int | str, ...] = ()
        parent: Any = None
        key_loc: tuple[int | str, ...] = ()
        for part in loc:
            if isinstance(node, dict) and part in node:
                parent, key_loc = node, (*walked, part)
            elif not (isinstance(node, list) and isinstance(part, int) and part < len(node)):
                continue  # pydantic's name for a union member: not in the data
            walked = (*walked, part)
            node = node[part]
        if parent is not None and key_loc and key_loc[-1] in parent:
            del parent[key_loc[-1]]
            removed.add(key_loc)
    return data, removed


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)


class _FromFile(list):  # type: ignore[type-arg]
    """A list read from a `file://` var: one value, never expanded into several tests (as in
    promptfoo, which loads var files after expanding)."""


@dataclass(frozen=True)
class _Alternatives:
    """A `file://` glob var matching several files: one test per file, as promptfoo does."""

    options: tuple[tuple[str, Any], ...]  # (project-relative path, file value)


# promptfoo type names that are other names for a type promptlab knows.
_TYPE_ALIASES = {"similar:cosine": "similar", "model-graded-factuality": "factuality"}
_PROMPT_FILE_SUFFIXES = (".txt", ".md", ".j2", ".jinja", ".jinja2", ".json", ".yaml", ".yml")
_CODE_REF = re.compile(r"\.(py|js|cjs|mjs|ts)(:[\w.]+)?$")
# Checks that read their own file:// value (a schema file, a Python file).
_OWN_FILE_VALUE = frozenset({"python", "is-json", "contains-json", "json-schema"})
# promptfoo CSV columns that would change the prompt or skip the model.
# A CSV field may be as long as a file may be (whole documents in RAG suites), not csv's 128 KiB.
csv.field_size_limit(files.MAX_FILE_BYTES)
_CSV_REFUSED = {
    "__prefix": "it changes the prompt; put the text in the prompt template",
    "__suffix": "it changes the prompt; put the text in the prompt template",
    "__providerOutput": "promptlab always runs the local model",
    "__provider_output": "promptlab always runs the local model",
}
_CSV_SPECIAL = re.compile(
    r"__expected\d*|__description|__metric|__threshold|__metadata:.+|__config:__expected\d*:threshold"
)


_LEADING_WHERE = re.compile(r"^[^\s:]+(?::\d+)?: (?:[\w.\[\]-]+|top level)(?: \([^)]*\))?: ")
_T = TypeVar("_T")
_M = TypeVar("_M", bound=BaseModel)


class _Loader:
    def __init__(self, path: Path, skip_unsupported: bool = False) -> None:
        self.path = path
        # Every problem found, so one round of edits fixes them all (raised together at the end).
        self.problems: list[InputError] = []
        # --skip-unsupported: what was left out, for the notes, the summary and the manifest.
        self.skip_unsupported = skip_unsupported
        self.skipped: list[dict[str, str]] = []
        self.drop_all_tests = False  # defaultTest itself uses an unsupported feature
        self.base = path.parent
        self.root = find_project_root(path.parent)
        self.env = TemplateEnv(self.root)
        self.files: dict[str, str] = {}
        self.notes: list[str] = []
        # (what, why) -> where: a promptfoo key ignored in many tests makes one note.
        self.ignored: dict[tuple[str, str], list[str]] = {}
        # promptfoo's Nunjucks environment has these two filters built in.
        self.env.env.filters.setdefault("load", json.loads)
        self.env.env.filters.setdefault("dump", _dump)

    def where(self, line: int | None, field_name: str | None = None) -> str:
        return location(self.path, line, field_name)

    def skip(self, what: str, where: str, exc: InputError) -> None:
        # The message leads with its own `file:line: field: `; the record keeps it in `where`.
        why = _LEADING_WHERE.sub("", exc.one_line(), count=1)
        self.skipped.append({"what": what, "where": where, "why": why})

    def attempt(self, what: str, where: str, build: Callable[[], _T]) -> _T | None:
        """`build()`, or None when it fails: the problem is recorded (and the loader goes on to
        find the others), or with --skip-unsupported an unsupported feature leaves out `what`."""
        try:
            return build()
        except Problems as exc:
            self.problems += exc.problems
        except Unsupported as exc:
            if self.skip_unsupported:
                self.skip(what, where, exc)
            else:
                self.problems.append(exc)
        except InputError as exc:
            self.problems.append(exc)
        return None

    def validate(
        self,
        model: type[_M],
        data: Any,
        doc: YamlDoc | None,
        prefix: tuple[int | str, ...] = (),
        line: int | None = None,
        *,
        what: str,
        path: Path | None = None,
    ) -> _M | None:
        """`model` from `data`, recording every problem. After a problem the bad keys are left
        out and the rest validated again, to find the problems behind the first ones; the model
        returned then serves only to look for more. None when nothing valid is left, or when
        --skip-unsupported leaves out `what` (a test whose own keys are unsupported)."""
        path = path or self.path
        removed: set[tuple[int | str, ...]] = set()
        for _ in range(4):
            try:
                return model.model_validate(data)
            except ValidationError as exc:
                issues = [
                    (loc, err)
                    for loc, err in validation_errors(exc, doc, path, prefix, line)
                    # a key left out after an earlier problem is not missing
                    if not any(loc[: len(r)] == r for r in removed)
                ]
            if not issues:
                return None
            bad: list[tuple[int | str, ...]] = []
            for loc, err in issues:
                rel = loc[len(prefix) :]
                if isinstance(err, Unsupported) and self.skip_unsupported:
                    where = location(path, doc.line_of(loc) if doc else line, dotted(loc))
                    in_check = "assert" in rel
                    if model is Suite and rel[:1] == ("defaultTest",) and not in_check:
                        # defaultTest's own key (options.prefix, …) changes every test
                        self.skip("every test", where, err)
                        self.drop_all_tests = True
                    elif model is Suite or in_check:
                        # A top-level key (scenarios, extensions, …), or a check's key (which
                        # feeds a check type that is left out in turn): leave out the key.
                        self.skip(f"key '{rel[-1]}'", where, err)
                    elif model is DefaultTestSpec:
                        self.skip("every test", where, err)
                        self.drop_all_tests = True
                        return None
                    else:
                        at = doc.line_of(prefix) if doc and prefix else line
                        self.skip(what, location(path, at, dotted(prefix) or None), err)
                        return None
                else:
                    self.problems.append(err)
                bad.append(rel)
            data, gone = _prune(data, bad)
            if not gone:
                return None
            removed |= {(*prefix, *r) for r in gone}
        return None

    def ignore(self, where: str, what: str, why: str) -> None:
        self.ignored.setdefault((what, why), []).append(where)

    def ignored_notes(self) -> list[str]:
        out = []
        for (what, why), places in self.ignored.items():
            more = f" (and {len(places) - 1} more)" if len(places) > 1 else ""
            out.append(f"{places[0]}: {what} is ignored{more}; {why}")
        return out

    def file_ref(self, ref: str, where: str, what: str = "file") -> list[Path]:
        return files.resolve_ref(ref, base=self.base, root=self.root, what=what, where=where)

    def record(self, path: Path, text: str) -> None:
        self.files[_rel(path, self.root)] = sha256_text(text)

    def read_value(self, path: Path, what: str) -> Any:
        """A file's value: .json/.yaml parsed, anything else as text."""
        text = read_text(path, what)
        self.record(path, text)
        if path.suffix.lower() == ".json":
            return load_json(path, text)
        if path.suffix.lower() in (".yaml", ".yml"):
            return load_yaml(path, text).data
        return text

    def provider(self, value: Any, where: str) -> str | None:
        """A grader's provider: a local model is kept; promptfoo's remote providers are ignored
        (the grader is then the local model under test)."""
        if value is None:
            return None
        ident = value.get("id") if isinstance(value, dict) else value
        why = "graders run on the local model under test (a .gguf path or alias picks another)"
        if not isinstance(ident, str) or not ident.strip():
            self.ignore(where, f"provider {json.dumps(value, default=str)[:60]}", why)
            return None
        if not (
            ident in BUNDLED
            or ident.endswith(".gguf")
            or ident.startswith("fake://")
            or (self.base / ident).is_file()
        ):
            self.ignore(where, f"provider {ident}", why)
            return None
        if isinstance(value, dict) and set(value) - {"id", "label"}:
            keys = ", ".join(sorted(set(value) - {"id", "label"}))
            self.ignore(where, f"provider {ident}'s {keys}", "local graders use fixed settings")
        return ident

    # --- prompts ---

    def prompt(self, i: int, spec: PromptSpec, doc: YamlDoc) -> list[PromptDef]:
        prompts = self._prompt(i, spec, doc)
        for prompt in prompts:
            prompt.config = spec.config
        return prompts

    def _prompt(self, i: int, spec: PromptSpec, doc: YamlDoc) -> list[PromptDef]:
        where = self.where(doc.line_of(("prompts", i)), f"prompts[{i}]")
        if spec.messages is not None:
            return [self._messages_prompt(i, spec, spec.messages, doc, where)]
        source = spec.raw if spec.raw is not None else spec.id
        assert source is not None
        label = spec.label or spec.display
        ref = self._prompt_ref(source, where) if spec.raw is None else None
        if ref is not None:
            paths = self.file_ref(ref, where, "prompt file")
            out: list[PromptDef] = []
            for path in paths:
                # a glob gives one prompt per file, each named by its file
                name = label if len(paths) == 1 or label is None else f"{label}:{path.stem}"
                out += self._prompt_file(path, name, where)
            return out
        if not source.strip():
            raise InputError(f"{where}: prompt is empty", hint="write the template text")
        label = label or (spec.id if spec.raw is not None and spec.id else None)
        tpl = self.env.from_string(source, where)
        self._chat_text_note(source, where)
        kind: Literal["text"] = "text"
        return [
            PromptDef(
                label=label or _inline_label(source),
                source="inline",
                kind=kind,
                parts=[(None, tpl)],
                sha256=sha256_text(source),
                where=where,
                variables=self.env.variables(tpl, source),
            )
        ]

    def _prompt_ref(self, source: str, where: str) -> str | None:
        """The file a prompt entry names, or None for inline text. A bare path with a prompt
        file's suffix (promptfoo's older form, `prompts: [prompts.txt]`) counts as a file."""
        if source.startswith("file://"):
            ref = source
        elif (
            source.strip() == source
            and not any(ch.isspace() or ch in "{}" for ch in source)
            and Path(source.split(":")[0]).suffix.lower()
            in (*_PROMPT_FILE_SUFFIXES, ".csv", ".jsonl", ".py", ".js")
        ):
            ref = "file://" + source
        else:
            return None
        raw = ref.removeprefix("file://")
        if _CODE_REF.search(raw):
            raise Unsupported(
                f"{where}: {raw} is a prompt function; promptlab's prompts are templates, not code",
                hint="write it as a .j2/.txt template or a .yaml/.json message list",
            )
        if Path(raw).suffix.lower() == ".jsonl":
            raise InputError(
                f"{where}: {raw}: .jsonl prompt files (one chat per line) are not read",
                hint="put each chat in a .json prompt file, or list the prompts in a .csv file",
            )
        return ref

    def _prompt_file(self, path: Path, label: str | None, where: str) -> list[PromptDef]:
        if path.is_dir():
            raise InputError(f"{where}: {path} is a directory, expected a template file")
        text = read_text(path, "template")
        self.record(path, text)
        if not text.strip():
            raise InputError(f"{path}: template is empty", hint="write the template text")
        rel = _rel(path, self.root)
        if path.suffix.lower() == ".csv":
            return self._csv_prompts(path, text, label, where)
        if path.suffix.lower() in (".yaml", ".yml", ".json"):
            parts, variables = self._chat_file(path, text)
            return [
                PromptDef(
                    label or path.stem, rel, "messages", parts, sha256_text(text), where, variables
                )
            ]
        chunks = _split_prompts(text) if path.suffix.lower() == ".txt" else None
        if chunks == []:
            raise InputError(f"{path}: the file holds only --- lines", hint="write the prompts")
        if chunks is not None:
            # promptfoo's .txt format: several prompts separated by lines of ---
            out = []
            for k, chunk in enumerate(chunks, 1):
                name = label or path.stem
                at = f"{where} ({rel}, prompt {k} of {len(chunks)})"
                tpl = self.env.from_string(chunk, at)
                out.append(
                    PromptDef(
                        f"{name}:{k}" if len(chunks) > 1 else name,
                        rel,
                        "text",
                        [(None, tpl)],
                        sha256_text(chunk),
                        at,
                        self.env.variables(tpl, chunk),
                    )
                )
            return out
        # promptfoo trims a .txt prompt (as it trims each --- chunk); other files keep their text
        # exactly as written, trailing newline included.
        tpl = self.env.load_file(path, where, trim=path.suffix.lower() == ".txt")
        return [
            PromptDef(
                label or path.stem,
                rel,
                "text",
                [(None, tpl)],
                sha256_text(text),
                where,
                self.env.variables(tpl),
            )
        ]

    def _csv_prompts(self, path: Path, text: str, label: str | None, where: str) -> list[PromptDef]:
        """promptfoo's prompts.csv: one prompt per row, under a `prompt` header with an optional
        `label` column, or one column and no header. Cells are trimmed, as promptfoo trims them."""
        rel = _rel(path, self.root)
        reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
        try:
            rows = [(reader.line_num, [c.strip() for c in row]) for row in reader]
        except csv.Error as exc:
            raise InputError(f"{location(path, reader.line_num)}: invalid CSV: {exc}") from None
        rows = [(line, row) for line, row in rows if any(row)]
        header = [c.lower() for c in rows[0][1]] if rows else []
        if "prompt" in header:
            col = header.index("prompt")
            label_col = header.index("label") if "label" in header else None
            body = rows[1:]
        else:
            col, label_col, body = 0, None, rows
            wide = next(((line, row) for line, row in body if len(row) > 1), None)
            if wide is not None:
                raise InputError(
                    f"{location(path, wide[0])}: a prompts CSV without a `prompt` header has one "
                    f"column, but this row has {len(wide[1])}",
                    hint="add a header row `prompt,label`, or quote a prompt that holds commas",
                )
        kept = [(line, row) for line, row in body if len(row) > col and row[col]]
        if not kept:
            raise InputError(f"{path}: no prompts in the CSV", hint="write one prompt per row")
        out = []
        for k, (line, row) in enumerate(kept, 1):
            source = row[col]
            own = row[label_col] if label_col is not None and len(row) > label_col else ""
            base = label or path.stem
            name = own or (base if len(kept) == 1 else f"{base}:{k}")
            at = f"{where} ({location(rel, line)})"
            tpl = self.env.from_string(source, at)
            self._chat_text_note(source, at)
            out.append(
                PromptDef(
                    name,
                    rel,
                    "text",
                    [(None, tpl)],
                    sha256_text(source),
                    at,
                    self.env.variables(tpl, source),
                )
            )
        return out

    def _chat_file(
        self, path: Path, text: str
    ) -> tuple[list[tuple[str | None, jinja2.Template]], set[str]]:
        if path.suffix.lower() == ".json":
            data = load_json(path, text)
            doc = None
        else:
            doc = load_yaml(path, text)
            data = doc.data
        entries: list[tuple[Any, tuple[int | str, ...]]] = []
        if isinstance(data, dict) and "messages" in data:
            # Anthropic's shape, as promptfoo passes it on: {system?, messages: [...]}
            extra = sorted(set(data) - {"messages", "system"})
            if extra:
                raise InputError(
                    f"{path}: a chat prompt mapping holds messages: (and system:), not {extra}"
                )
            if "system" in data:
                entries.append(({"role": "system", "content": data["system"]}, ("system",)))
            if isinstance(data["messages"], list):
                entries += [(m, ("messages", j)) for j, m in enumerate(data["messages"])]
        elif isinstance(data, list):
            entries = [(m, (j,)) for j, m in enumerate(data)]
        if not entries:
            raise InputError(
                f"{path}: a chat prompt file must hold a non-empty list of {{role, content}} messages"
            )
        return self._message_parts(
            [
                (msg, location(path, doc.line_of(loc) if doc else None, dotted(loc)))
                for msg, loc in entries
            ],
            file_refs=False,
        )

    def _messages_prompt(
        self, i: int, spec: PromptSpec, messages: list[Any], doc: YamlDoc, where: str
    ) -> PromptDef:
        """promptfoo's `messages:` prompt entry: a chat written in the suite itself."""
        if not messages:
            raise InputError(f"{where}: messages: is empty", hint="add {role, content} messages")
        entries = [
            (
                msg,
                self.where(
                    doc.line_of(("prompts", i, "messages", j)), f"prompts[{i}].messages[{j}]"
                ),
            )
            for j, msg in enumerate(messages)
        ]
        parts, variables = self._message_parts(entries, file_refs=True)
        label = spec.label or spec.display or f"chat {i + 1}"
        source = json.dumps(messages, ensure_ascii=False, sort_keys=True)
        return PromptDef(label, "inline", "messages", parts, sha256_text(source), where, variables)

    def _message_parts(
        self, entries: list[tuple[Any, str]], *, file_refs: bool
    ) -> tuple[list[tuple[str | None, jinja2.Template]], set[str]]:
        """Each message's content as a template, and the variables they read. With `file_refs`,
        a content of `file://path` is that template file (as promptfoo's `messages:` allow)."""
        parts: list[tuple[str | None, jinja2.Template]] = []
        variables: set[str] = set()
        for msg, at in entries:
            if not isinstance(msg, dict) or set(msg) - {"role", "content"} or "content" not in msg:
                raise InputError(f"{at}: each message needs exactly `role` and `content`")
            role = msg.get("role", "user")
            if role not in ("system", "user", "assistant"):
                raise InputError(
                    f"{at}: unknown role {role!r}", hint="use system, user or assistant"
                )
            content = msg["content"]
            if isinstance(content, list):
                content = self._content_parts(content, at)
            if not isinstance(content, str):
                raise InputError(f"{at}: content must be text (or a list of text parts)")
            if file_refs and content.startswith("file://"):
                tpl = self._content_file(content, at)
                parts.append((role, tpl))
                variables |= self.env.variables(tpl)
                continue
            tpl = self.env.from_string(content, at)
            parts.append((role, tpl))
            # Inline templates have no name to reread, so their variables come from the source.
            variables |= self.env.variables(tpl, content)
        return parts, variables

    def _content_file(self, ref: str, at: str) -> jinja2.Template:
        raw = ref.removeprefix("file://")
        if _CODE_REF.search(raw):
            raise Unsupported(
                f"{at}: content {ref} is a prompt function; promptlab's prompts are templates, "
                "not code",
                hint="write that message as text or a .j2/.txt/.md template file",
            )
        (path,) = files.resolve_ref(
            ref, base=self.base, root=self.root, what="message file", where=at, globs=False
        )
        if path.is_dir():
            raise InputError(f"{at}: {path} is a directory, expected a template file")
        self.record(path, read_text(path, "template"))
        # promptfoo reads every format as text (a .json file too); each message is stripped
        # like any chat message, so only a .txt needs promptfoo's trim for the text to agree.
        return self.env.load_file(path, at, trim=path.suffix.lower() == ".txt")

    def _chat_text_note(self, text: str, where: str) -> None:
        """promptfoo turns a prompt whose text is a JSON message list into a chat for chat
        providers; here text stays text (no guessing), so say what differs and how to write it."""
        stripped = text.strip()
        if not (stripped.startswith("[") and stripped.endswith("]")):
            return
        try:
            data = json.loads(stripped)
        except ValueError:
            return
        if data and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in data):
            self.notes.append(
                f"{where}: this prompt is a JSON chat message list written as text; promptlab "
                "sends it as text (promptfoo sends it to chat providers as messages); write it "
                "as messages: or a .json prompt file to send messages"
            )

    def _content_parts(self, parts: list[Any], at: str) -> str:
        """OpenAI/Anthropic content parts → one template: the text parts joined in order."""
        texts = []
        for k, part in enumerate(parts):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            if kind != "text" or not isinstance(part.get("text"), str):
                raise Unsupported(
                    f"{at}: content[{k}] is a {kind!r} part, and local text models take text only",
                    hint="remove it, or describe it in a {type: text, text: ...} part",
                )
            extra = sorted(set(part) - {"type", "text", "cache_control"})
            if extra:
                raise InputError(f"{at}: content[{k}]: unknown keys {extra} in a text part")
            if "cache_control" in part:
                self.ignore(at, "cache_control", "prompt caching is a remote API's feature")
            texts.append(part["text"])
        return "".join(texts)

    # --- tests ---

    def tests(self, suite: Suite, doc: YamlDoc) -> list[TestDef]:
        skipped_before = len(self.skipped)
        vars_where = self.where(doc.line_of(("vars",)), "vars")
        base_vars = self.attempt(
            "every test", vars_where, partial(self.vars, suite.vars, "vars", doc)
        )
        default_checks: list[CheckDef] = []
        default = suite.defaultTest
        default_where = self.where(doc.line_of(("defaultTest",)), "defaultTest")
        default_options: dict[str, Any] = {}
        default_transform: Any = None
        if default is not None:
            default_vars = self.attempt(
                "every test",
                default_where,
                partial(self.vars, default.vars, "defaultTest.vars", doc),
            )
            base_vars = {**(base_vars or {}), **(default_vars or {})}
            for j, a in enumerate(default.assert_):
                at = self.where(
                    doc.line_of(("defaultTest", "assert", j)), f"defaultTest.assert[{j}]"
                )
                check = self.attempt("check", at, partial(self.check, a, at))
                if check is not None:
                    default_checks.append(check)
            default_options = self.options(default, default_where)
            default_transform = self.attempt(
                "every test", default_where, partial(_checked_transform, default, default_where)
            )
        if len(self.skipped) > skipped_before and self.skipped[-1]["what"] == "every test":
            self.drop_all_tests = True
        entries: list[tuple[Any, tuple[int | str, ...]]]
        if isinstance(suite.tests, str):
            entries = [(suite.tests, ("tests",))]
        else:
            entries = [(t, ("tests", i)) for i, t in enumerate(suite.tests)]
        raw: list[TestDef] = []
        for entry, loc in entries:
            line = doc.line_of(loc)
            where = self.where(line, dotted(loc))
            if isinstance(entry, str):
                if not entry.startswith("file://"):
                    self.problems.append(
                        InputError(
                            f"{where}: a test entry that is text must be file://path",
                            hint="or write a mapping with vars: and assert: (promptlab reads "
                            "local .csv, .jsonl, .yaml and .json files)",
                        )
                    )
                    continue
                paths = self.attempt(
                    "tests of the file", where, partial(self.file_ref, entry, where, "test file")
                )
                for path in paths or []:
                    raw += (
                        self.attempt("tests of the file", where, partial(self.tests_file, path))
                        or []
                    )
            elif isinstance(entry, dict):
                test = self.attempt("test", where, partial(self.test_entry, entry, loc, where, doc))
                if test is not None:
                    raw.append(test)
            else:
                self.problems.append(
                    InputError(f"{where}: a test must be a mapping or file://path")
                )
        if self.drop_all_tests:
            return []
        if not raw and not isinstance(suite.tests, str) and not suite.tests:
            # promptfoo runs each prompt once when there are no tests.
            raw.append(TestDef(0, None, {}, [], self.where(doc.line_of(()), None)))
        defaults = TestDef(0, None, {}, [], default_where)
        if default is not None:
            _flags(defaults, default)
        out: list[TestDef] = []
        for t in raw:
            t.vars = {**(base_vars or {}), **t.vars}
            default_asserts = _first(t.default_asserts, defaults.default_asserts, True)
            t.checks = (default_checks if default_asserts else []) + t.checks
            t.options = {**default_options, **t.options}
            t.expand_vars = _first(t.expand_vars, defaults.expand_vars, True)
            if default is not None:
                t.threshold = t.threshold if t.threshold is not None else default.threshold
                t.transform = t.transform if t.transform is not None else default_transform
                if default.metadata:
                    t.metadata = {**default.metadata, **(t.metadata or {})}
            out += self.expand(t)
        for i, t in enumerate(out):
            t.index = i
        return out

    def test_entry(
        self, entry: dict[str, Any], loc: tuple[int | str, ...], where: str, doc: YamlDoc
    ) -> TestDef | None:
        spec = self.validate(TestSpec, entry, doc, loc, what="test")
        if spec is None:
            return None
        checks = []
        for j, a in enumerate(spec.assert_):
            at = self.where(doc.line_of((*loc, "assert", j)), f"{dotted(loc)}.assert[{j}]")
            check = self.attempt("check", at, partial(self.check, a, at))
            if check is not None:
                checks.append(check)
        test_vars = self.vars(spec.vars, dotted(loc) + ".vars", doc, loc)
        return self.finish(TestDef(0, spec.description, test_vars, checks, where), spec)

    def expand(self, test: TestDef) -> list[TestDef]:
        """promptfoo's rule: a var holding a list of strings makes one test per value, and
        several such vars make one test per combination. A var that a choice check names as its
        `choices:` is not expanded (it is the list of options), nor is any var of a test with
        options.disableVarExpansion."""
        keep = _choice_vars(test.checks, self.env.env)
        axes: list[tuple[str, list[tuple[str, Any]]]] = []
        variables = dict(test.vars)
        for key, value in test.vars.items():
            if isinstance(value, _Alternatives):
                if test.expand_vars:
                    axes.append((key, list(value.options)))
                else:
                    variables[key] = [v for _, v in value.options]
            elif (
                test.expand_vars
                and key not in keep
                and type(value) is list
                and value
                and isinstance(value[0], str)
            ):
                axes.append((key, [(_value_label(v), v) for v in value]))
        if not axes:
            test.vars = variables
            return [test]
        out = []
        for combo in itertools.product(*(options for _, options in axes)):
            chosen = dict(variables)
            labels = []
            for (key, _), (label, value) in zip(axes, combo, strict=True):
                chosen[key] = value
                labels.append(f"{key}={label}")
            suffix = ", ".join(labels)
            description = f"{test.description} ({suffix})" if test.description else suffix
            out.append(replace(test, vars=chosen, description=description))
        return out

    def vars(
        self, values: dict[str, Any], field_name: str, doc: YamlDoc, loc: tuple[int | str, ...] = ()
    ) -> dict[str, Any]:
        out = {}
        for key, value in values.items():
            if not isinstance(key, str) or not key.isidentifier():
                line = (
                    doc.line_of((*loc, "vars", key))
                    if loc
                    else doc.line_of(tuple(field_name.split(".")))
                )
                raise InputError(
                    f"{self.where(line, field_name)}: variable name {key!r} is not a valid identifier",
                    hint="use letters, digits and _ (Jinja must be able to read it)",
                )
            if isinstance(value, str) and value.startswith("file://"):
                where = self.where(
                    doc.line_of((*loc, "vars", key)) if loc else None, f"{field_name}.{key}"
                )
                if _CODE_REF.search(value):
                    raise Unsupported(
                        f"{where}: {value} would run code to make the value; promptlab reads "
                        "var files as text (.json/.yaml parsed)",
                        hint="write the value to a file, or compute it in the test file",
                    )
                loaded = [
                    (_rel(path, self.root), self.read_value(path, "variable file"))
                    for path in self.file_ref(value, where, "variable file")
                ]
                loaded = [(rel, _FromFile(v) if type(v) is list else v) for rel, v in loaded]
                value = loaded[0][1] if len(loaded) == 1 else _Alternatives(tuple(loaded))
            out[key] = value
        return out

    def check(
        self, spec: AssertSpec, where: str, inherited: dict[str, Any] | None = None
    ) -> CheckDef:
        negation = "not-" if spec.type.startswith("not-") else ""
        alias = _TYPE_ALIASES.get(spec.type.removeprefix("not-"))
        if alias is not None:
            spec = spec.model_copy(update={"type": negation + alias})
        _check_type(spec.type, where)
        extra = spec.model_dump(
            exclude={"type", "value", "threshold", "assert_", "provider"}, exclude_none=True
        )
        provider = self.provider(spec.provider, where)
        if provider is not None:
            extra["provider"] = provider
        if "transform" in extra:
            extra["transform"] = _js_transform(extra["transform"])
            _refuse_js_transform(extra["transform"], where)
        if inherited is not None and "config" not in extra:
            extra["config"] = inherited  # promptfoo: an assert-set's config reaches its checks
        children = []
        for j, c in enumerate(spec.assert_ or []):
            at = f"{where}.assert[{j}]"
            child = self.attempt("check", at, partial(self.check, c, at, spec.config))
            if child is not None:
                children.append(child)
        if spec.assert_ is not None and spec.type != "assert-set":
            raise InputError(
                f"{where}: only assert-set takes a nested assert: list", hint="use type: assert-set"
            )
        value = self.check_value(spec.type, spec.value, where)
        return CheckDef(spec.type, value, spec.threshold, where, extra, children)

    def check_value(self, type_: str, value: Any, where: str) -> Any:
        """promptfoo reads a check's `value: file://x.txt` from the file (.json/.yaml parsed)."""
        if not isinstance(value, str) or not value.startswith("file://"):
            return value
        if type_.removeprefix("not-") in _OWN_FILE_VALUE:
            return value
        if _CODE_REF.search(value):
            raise InputError(
                f"{where}: {value} as a '{type_}' value would run code; only python checks run code",
                hint="use type: python with value: file://checks.py:function",
            )
        paths = self.file_ref(value, where, "check value file")
        if len(paths) != 1:
            raise InputError(f"{where}: {value} matches {len(paths)} files; name one file")
        return self.read_value(paths[0], "check value file")

    def options(self, spec: TestSpec | DefaultTestSpec, where: str) -> dict[str, Any]:
        """A test's grader defaults (provider, rubricPrompt); notes for what is ignored."""
        for key in ("provider", "providers"):
            if getattr(spec, key) is not None:
                self.ignore(where, f"a test's {key}", "every test runs on the local model(s)")
        opts = spec.options
        if opts is None:
            return {}
        for key in ("runSerially", "disableConversationVar", "factuality"):
            if getattr(opts, key) is not None:
                self.ignore(where, f"options.{key}", "it has no effect on a local run")
        out: dict[str, Any] = {}
        provider = self.provider(opts.provider, where)
        if provider is not None:
            out["provider"] = provider
        if opts.rubricPrompt is not None:
            out["rubricPrompt"] = opts.rubricPrompt
        return out

    def finish(self, test: TestDef, spec: TestSpec) -> TestDef:
        test.threshold = spec.threshold
        test.transform = _checked_transform(spec, test.where)
        test.options = self.options(spec, test.where)
        test.metadata = spec.metadata
        _flags(test, spec)
        return test

    def tests_file(self, path: Path) -> list[TestDef]:
        text = read_text(path, "test file")
        self.record(path, text)
        suffix = path.suffix.lower()
        if suffix == ".csv":
            return self._csv(path, text)
        if suffix == ".jsonl":
            out = []
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                test = self.attempt(
                    "test", location(path, n), partial(self._test_jsonl, path, line, n)
                )
                out += [test] if test is not None else []
            return out
        if suffix in (".yaml", ".yml", ".json"):
            if suffix == ".json":
                data = load_json(path, text)
                doc = None
            else:
                doc = load_yaml(path, text, what="test file")
                data = doc.data
            if data is None:
                raise InputError(f"{path}: test file is empty", hint="add a list of tests")
            if not isinstance(data, list):
                raise InputError(f"{path}: a test file must hold a list of tests")
            tests = []
            for i, d in enumerate(data):
                at = doc.line_of((i,)) if doc else None
                test = self.attempt(
                    "test", location(path, at), partial(self._test_obj, d, path, at, doc, i)
                )
                tests += [test] if test is not None else []
            return tests
        raise Unsupported(
            f"{path}: unsupported test file type '{suffix}'",
            hint="use .csv, .jsonl, .yaml or .json",
        )

    def _test_jsonl(self, path: Path, line: str, n: int) -> TestDef | None:
        return self._test_obj(load_json(path, line, n), path, n, None)

    def _test_obj(
        self, data: Any, path: Path, line: int | None, doc: YamlDoc | None, index: int | None = None
    ) -> TestDef | None:
        where = location(path, line)
        if not isinstance(data, dict):
            raise InputError(f"{where}: a test must be a mapping with vars: and assert:")
        prefix: tuple[int | str, ...] = (index,) if index is not None and doc is not None else ()
        spec = self.validate(TestSpec, data, doc, prefix, line, what="test", path=path)
        if spec is None:
            return None
        checks = []
        for j, a in enumerate(spec.assert_):
            at = f"{where}: assert[{j}]"
            check = self.attempt("check", at, partial(self.check, a, at))
            if check is not None:
                checks.append(check)
        return self.finish(TestDef(0, spec.description, spec.vars, checks, where), spec)

    def _csv(self, path: Path, text: str) -> list[TestDef]:
        reader = csv.DictReader(io.StringIO(text))
        columns = reader.fieldnames or []
        if not columns:
            raise InputError(
                f"{path}: CSV has no header row", hint="the first row names the variables"
            )
        for col in columns:
            if col in _CSV_REFUSED:
                raise Unsupported(
                    f"{location(path, 1)}: promptfoo's column '{col}' is not supported: "
                    f"{_CSV_REFUSED[col]}"
                )
            if col.startswith("__config:") and not _CSV_SPECIAL.fullmatch(col):
                raise InputError(
                    f"{location(path, 1)}: unsupported column '{col}'",
                    hint="a __config column sets one check's threshold: "
                    "__config:__expected2:threshold",
                )
            if col.startswith("__") and not _CSV_SPECIAL.fullmatch(col):
                known = ["__expected", "__description", "__metric", "__threshold", "__metadata:"]
                close = difflib.get_close_matches(col, known, n=1)
                hint = (
                    f"did you mean '{close[0]}'?"
                    if close
                    else "promptlab reads __expected, __expectedN, __description, __metric, "
                    "__threshold, __metadata:KEY and __config:__expectedN:threshold"
                )
                raise InputError(f"{location(path, 1)}: unsupported column '{col}'", hint=hint)
            if not col.startswith("__") and not col.isidentifier():
                raise InputError(
                    f"{location(path, 1)}: column {col!r} is not a valid variable name",
                    hint="use letters, digits and _",
                )
        var_cols = {c for c in columns if not c.startswith("__")}
        out = []
        for row in reader:
            line = reader.line_num
            where = location(path, line)
            if None in row:
                self.problems.append(
                    InputError(f"{where}: row has more cells than the header has columns")
                )
                continue
            checks: dict[str, CheckDef] = {}
            for col in columns:
                if col.startswith("__expected") and (row.get(col) or "").strip():
                    at = f"{where}: {col}"
                    check = self.attempt("check", at, partial(self._expected, row[col], at))
                    if check is not None:
                        checks[col] = check
            metric = (row.get("__metric") or "").strip()
            metadata: dict[str, Any] = {}
            for col in columns:
                cell = (row.get(col) or "").strip()
                if not cell:
                    continue
                if col.startswith("__config:"):
                    target = col.split(":")[1]
                    if target in checks:
                        checks[target].threshold = _csv_number(cell, f"{where}: {col}")
                elif col.startswith("__metadata:"):
                    key = col.removeprefix("__metadata:")
                    if key.endswith("[]"):
                        # promptfoo: comma-separated, with \\, for a literal comma
                        metadata[key[:-2]] = [
                            item.strip().replace("\\,", ",") for item in re.split(r"(?<!\\),", cell)
                        ]
                    else:
                        metadata[key] = cell
            if metric:
                for check in checks.values():
                    check.extra["metric"] = metric
            threshold = (row.get("__threshold") or "").strip()
            tdef = TestDef(
                0,
                row.get("__description") or None,
                {c: row[c] or "" for c in var_cols},
                list(checks.values()),
                where,
                csv_columns=var_cols,
                threshold=_csv_number(threshold, f"{where}: __threshold") if threshold else None,
                metadata=metadata or None,
            )
            out.append(tdef)
        if not out and not self.problems and not self.skipped:
            raise InputError(f"{path}: CSV has a header but no test rows")
        return out

    def _expected(self, text: str, where: str) -> CheckDef:
        """promptfoo's check syntax for CSV cells: `type:value`, `type(threshold):value`,
        `grade:` / `llm-rubric:`, `python:` or `file://x.py`, a bare is-json; else equals."""
        raw = text.strip()
        if raw.startswith(("javascript:", "fn:", "eval:")) or (
            raw.startswith("file://") and re.search(r"\.(js|cjs|mjs|ts)(:[\w.]+)?$", raw)
        ):
            _check_type("javascript", where)  # refused, with the hint to use python
        if raw.startswith(("grade:", "llm-rubric:")):
            return CheckDef("llm-rubric", raw.split(":", 1)[1].strip(), None, where)
        if raw.startswith("python:"):
            return CheckDef("python", raw.removeprefix("python:").strip(), None, where)
        if raw.startswith("file://") and re.search(r"\.py(:[\w.]+)?$", raw):
            return CheckDef("python", raw, None, where)
        m = re.fullmatch(
            r"(not-)?([a-z][a-z0-9-]*)(?:\((\d+(?:\.\d+)?)\))?(?::\s*(.*))?", raw, re.S
        )
        if m:
            name, base, number, value = (
                (m.group(1) or "") + m.group(2),
                m.group(2),
                m.group(3),
                m.group(4),
            )
            if name in assertions.ALL_TYPES or base in assertions.PROMPTFOO_ONLY:
                _check_type(name, where)
                value = value if value else None  # `is-json:` with nothing after the colon
                threshold = float(number) if number is not None else None
                if base == "latency" and threshold is None and value is not None:
                    threshold = _csv_number(value, where)
                    value = None
                if base == "similar" and threshold is None:
                    threshold = 0.8  # promptfoo's default for similar in CSV files
                return CheckDef(name, value, threshold, where)
        return CheckDef("equals", raw, None, where)

    # --- models ---

    def models(self, suite: Suite, doc: YamlDoc) -> list[ModelDef]:
        echo, _ = _echo_models(suite) if not suite.models else ([], [])
        specs = suite.models or echo or [ModelSpec(path=DEFAULT_MODEL)]
        out: list[ModelDef] = []
        for i, spec in enumerate(specs):
            if suite.models:
                where = self.where(doc.line_of(("models", i)), f"models[{i}]")
            elif echo:
                where = self.where(
                    doc.line_of(("providers",)) or doc.line_of(("targets",)), "providers"
                )
            else:
                where = self.where(None, "models (default)")
            label = spec.label or _model_label(spec)
            out.append(ModelDef(label, spec, where))
        labels = [m.label for m in out]
        for lab in labels:
            if labels.count(lab) > 1:
                raise InputError(
                    f"{self.path}: two models are labelled '{lab}'",
                    hint="give each a distinct label:",
                )
        return out


# promptfoo's transforms are JavaScript; these one-liners have exact built-in equivalents.
_JS_TRANSFORMS: dict[str, str | list[str]] = {
    "output.trim()": "strip",
    "output.toLowerCase()": "lower",
    "output.toUpperCase()": "upper",
    "output.trim().toLowerCase()": ["strip", "lower"],
    "output.toLowerCase().trim()": ["lower", "strip"],
    "output.trim().toUpperCase()": ["strip", "upper"],
    "output.toUpperCase().trim()": ["upper", "strip"],
}


def _js_transform(spec: Any) -> Any:
    if isinstance(spec, str):
        key = "".join(spec.split()).removesuffix(";")
        return _JS_TRANSFORMS.get(key, spec)
    return spec


def _check_type(name: str, where: str) -> None:
    """assertions.check_type, with promptfoo's types that promptlab lacks (cost, javascript, …)
    marked Unsupported, which --skip-unsupported may leave out."""
    try:
        assertions.check_type(name, where)
    except InputError as exc:
        if name.removeprefix("not-") in assertions.PROMPTFOO_ONLY:
            raise Unsupported(exc.message, hint=exc.hint) from None
        raise


def _refuse_js_transform(spec: Any, where: str) -> None:
    """promptfoo's JavaScript transforms, refused while loading (in transforms.parse's own words)
    rather than when the plan is built, so that --skip-unsupported can leave out the check or
    test that uses one."""
    for item in spec if isinstance(spec, list) else [spec]:
        if not isinstance(item, str):
            continue
        text = item.strip()
        if text.startswith("file://"):
            if text.endswith((".js", ".ts")) or ".js:" in text or ".ts:" in text:
                raise Unsupported(
                    f"{where}: JavaScript transforms are not supported",
                    hint="port it to Python: file://x.py:function",
                )
        elif text and text not in transforms.BUILTINS and not text.startswith("regex:"):
            raise Unsupported(
                f"{where}: unsupported transform {text!r} (promptfoo's JavaScript transforms don't run here)",
                hint=f"use {', '.join(transforms.BUILTINS)}, regex:PATTERN or file://x.py:function",
            )


def _checked_transform(spec: TestSpec | DefaultTestSpec, where: str) -> Any:
    transform = _transform(spec)
    _refuse_js_transform(transform, where)
    return transform


def _transform(spec: TestSpec | DefaultTestSpec) -> Any:
    if spec.transform is not None:
        return _js_transform(spec.transform)
    opts = spec.options
    if opts is None:
        return None
    return _js_transform(opts.transform if opts.transform is not None else opts.postprocess)


def _flags(test: TestDef, spec: TestSpec | DefaultTestSpec) -> None:
    opts = spec.options
    if opts is not None:
        if opts.disableVarExpansion is not None:
            test.expand_vars = not opts.disableVarExpansion
        if opts.disableDefaultAsserts is not None:
            test.default_asserts = not opts.disableDefaultAsserts


def _first(*values: bool | None) -> bool:
    return next(v for v in values if v is not None)


def _choice_vars(checks: Sequence[CheckDef], env: jinja2.Environment) -> set[str]:
    """Variables that choice checks name as their `choices:` (`options` or `{{ options }}`)."""
    names: set[str] = set()
    stack = list(checks)
    while stack:
        check = stack.pop()
        stack += check.children
        choices = check.extra.get("choices")
        if check.type != "choice" or not isinstance(choices, str):
            continue
        if choices.strip().isidentifier():
            names.add(choices.strip())
        else:
            with contextlib.suppress(jinja2.TemplateSyntaxError):  # reported when prepared
                names |= jinja2.meta.find_undeclared_variables(env.parse(choices))
    return names


def _value_label(value: Any) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= 30 else text[:29] + "…"


def _dump(value: Any, indent: int | None = None) -> str:
    """Nunjucks' dump filter (JSON.stringify): unlike Jinja's tojson, nothing is HTML-escaped."""
    return json.dumps(value, indent=indent, ensure_ascii=False, default=str)


def _split_prompts(text: str) -> list[str] | None:
    """promptfoo's .txt prompt files: prompts separated by lines that are just `---`.
    None when the file has no such line (it is then one template, read by name)."""
    lines = text.splitlines()
    if not any(line.strip() == "---" for line in lines):
        return None
    chunks: list[str] = []
    buffer: list[str] = []
    for line in [*lines, "---"]:
        if line.strip() == "---":
            chunk = "\n".join(buffer).strip()
            if chunk:
                chunks.append(chunk)
            buffer = []
        else:
            buffer.append(line)
    return chunks


def _csv_number(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(f"{where}: expected a number, got {text!r}") from None


def _inline_label(source: str) -> str:
    line = " ".join(source.split())
    return line if len(line) <= 40 else line[:39] + "…"


def load_suite(
    path: Path, model_override: str | None = None, *, skip_unsupported: bool = False
) -> LoadedSuite:
    """Read and check a suite file. Raises InputError with file:line on a problem, or Problems
    holding every problem found. With `skip_unsupported`, what uses a promptfoo feature that
    promptlab does not run is left out instead (named in the notes and in `skipped`)."""
    text = read_text(path, "suite file")
    if not text.strip():
        raise InputError(
            f"{path}: suite file is empty",
            hint="start from `promptlab init` or add prompts: and tests:",
        )
    doc = load_yaml(path, text, what="suite file")
    if not isinstance(doc.data, dict):
        kind = type(doc.data).__name__
        raise InputError(
            f"{location(path, 1)}: the top level must be a mapping (got {kind})",
            hint="write keys such as prompts:, tests:, models:",
        )
    loader = _Loader(path, skip_unsupported)
    loader.record(path, text)
    data = _resolve_refs(doc.data, doc, path)
    notes: list[str] = []
    data = _stray_keys(data, doc, path, notes)
    data = loader.attempt(
        "defaultTest",
        loader.where(doc.line_of(("defaultTest",)), "defaultTest"),
        partial(_default_test_file, data, doc, loader),
    ) or {k: v for k, v in data.items() if k != "defaultTest"}
    suite = loader.validate(Suite, data, doc, what="suite")
    if suite is None:
        raise _collected(loader.problems, path)
    repeat = suite.repeat
    pf_repeat = (suite.evaluateOptions or {}).get("repeat")
    if pf_repeat is not None:  # promptfoo's spelling of the same thing
        if not isinstance(pf_repeat, int) or isinstance(pf_repeat, bool) or pf_repeat < 1:
            loader.problems.append(
                InputError(
                    f"{location(path, doc.line_of(('evaluateOptions', 'repeat')))}: "
                    f"evaluateOptions.repeat must be a whole number >= 1, got {pf_repeat!r}"
                )
            )
        else:
            repeat = max(repeat, pf_repeat)
    grid = loader.attempt(
        "params",
        loader.where(doc.line_of(("params",)), "params"),
        partial(_settings, suite.params, doc, path),
    )
    settings, varied = grid if grid is not None else ([Params()], [])
    if suite.allow_code is not None:
        notes.append(
            f"{location(path, doc.line_of(('allow_code',)))}: allow_code: is ignored; a suite "
            "cannot give itself consent to run code (python checks need --allow-code, "
            "PROMPTLAB_ALLOW_CODE=1 or `promptlab trust` from the person running it)"
        )
    notes += _ignored_top_notes(suite, doc, path, repeat)
    prompts: list[PromptDef] = []
    for i, spec in enumerate(suite.prompts):
        where = loader.where(doc.line_of(("prompts", i)), f"prompts[{i}]")
        prompts += loader.attempt("prompt", where, partial(loader.prompt, i, spec, doc)) or []
    labels = [p.label for p in prompts]
    for p in prompts:
        if labels.count(p.label) > 1:
            loader.problems.append(
                InputError(
                    f"{p.where}: two prompts are labelled '{p.label}'",
                    hint="give each a distinct label:",
                )
            )
    tests = loader.tests(suite, doc)
    models = (
        loader.attempt("models", loader.where(None, "models"), partial(loader.models, suite, doc))
        or []
    )
    if model_override:
        chosen = [m for m in models if m.label == model_override]
        models = chosen or [
            ModelDef(_override_label(model_override), ModelSpec(path=model_override), "--model")
        ]
    for key in ("providers", "targets"):
        if getattr(suite, key) is not None:
            where = location(path, doc.line_of((key,)))
            notes.insert(0, _providers_note(where, key, getattr(suite, key), models, suite))
    for m in models:
        longest = max(p.max_tokens for p in settings)
        if longest >= m.spec.n_ctx:
            loader.problems.append(
                InputError(
                    f"{location(path, doc.line_of(('params', 'max_tokens')))}: params.max_tokens "
                    f"({longest}) must be smaller than n_ctx ({m.spec.n_ctx}) of "
                    f"model '{m.label}'",
                    hint="lower max_tokens or raise n_ctx",
                )
            )
    if loader.problems:
        raise _collected(loader.problems, path)
    if loader.skipped and not (prompts and (tests or not suite.tests)):
        raise InputError(
            f"{path}: --skip-unsupported left nothing to run (every "
            f"{'prompt' if not prompts else 'test'} uses an unsupported feature)",
            hint="see the notes for what was left out",
        )
    for item in loader.skipped:
        notes.append(
            f"{item['where']}: {item['what']} left out (--skip-unsupported): {item['why']}"
        )
    return LoadedSuite(
        path=path,
        root=loader.root,
        sha256=sha256_text(text),
        description=suite.description,
        prompts=prompts,
        tests=tests,
        models=models,
        params=settings[0],
        settings=settings,
        varied=varied,
        repeat=repeat,
        env=loader.env,
        notes=notes + loader.notes + loader.ignored_notes(),
        files=loader.files,
        claims_code=suite.allow_code is not None,
        skipped=loader.skipped,
    )


def _collected(problems: list[InputError], path: Path) -> InputError:
    """The error for what load_suite found: the problem itself when there is one (as it always
    read), else Problems with each on its own line. Unsupported features point at
    --skip-unsupported."""
    unique = list({p.one_line(): p for p in problems}.values())
    if not unique:
        return InputError(f"{path}: the suite could not be read", hint="run promptlab validate")
    if len(unique) > 1:
        return Problems(unique, path.name)
    problem = unique[0]
    if isinstance(problem, Unsupported):
        hint = f"{problem.hint}; {SKIP_HINT}" if problem.hint else SKIP_HINT
        return Unsupported(problem.message, hint=hint)
    return problem


# Close enough to a known key to be its typo (modles, promtps, test, parms): an error that says
# which key was meant. Anything further away is a stray key, which promptfoo also ignores.
_TYPO_CUTOFF = 0.75


def _stray_keys(data: dict[str, Any], doc: YamlDoc, path: Path, notes: list[str]) -> dict[str, Any]:
    """promptfoo warns about top-level keys it does not know and runs; so does promptlab, with a
    note, for a key that is nobody's (`outputs:`). A near-miss of a known key stays an error
    ("did you mean"), and so does a generation or model setting written at the top level, since
    ignoring those would change the results."""
    known = sorted(
        {f.alias or n for n, f in Suite.model_fields.items()} | set(Suite.promptfoo_refused)
    )
    out = {}
    for key, value in data.items():
        name = str(key)
        if key in known or difflib.get_close_matches(name, known, n=1, cutoff=_TYPO_CUTOFF):
            out[key] = value  # validated (and a typo reported) with the rest
            continue
        at = location(path, doc.line_of((key,)))
        if name in Params.model_fields or name in ModelSpec.model_fields:
            under = "params" if name in Params.model_fields else "models"
            raise InputError(
                f"{at}: top level: unknown key '{name}'; it belongs under {under}:",
                hint=f"move it: {under}: {{{name}: ...}}"
                if under == "params"
                else f"move it into each model: models: [{{path: ..., {name}: ...}}]",
            )
        notes.append(
            f"{at}: unknown top-level key '{name}' is ignored, as promptfoo ignores it "
            "(it changes nothing here; remove it to silence this note)"
        )
    return out


def _ignored_top_notes(suite: Suite, doc: YamlDoc, path: Path, repeat: int) -> list[str]:
    """One note for promptfoo's top-level keys that have no effect here. evaluateOptions is
    named by the sub-keys that are ignored: its `repeat` is honoured."""
    notes = []
    options = dict(suite.evaluateOptions or {})
    pf_repeat = options.pop("repeat", None)
    ignored = []
    for key in _IGNORED_TOP:
        if getattr(suite, key) is None:
            continue
        if key == "evaluateOptions":
            if options:
                ignored.append((key, f"evaluateOptions ({', '.join(options)})"))
        else:
            ignored.append((key, key))
    if ignored:
        line = min((doc.line_of((key,)) or 0) for key, _ in ignored) or None
        why = "; ".join(f"{name}: {_IGNORED_TOP[key]}" for key, name in ignored)
        names = ", ".join(key for key, _ in ignored)
        notes.append(
            f"{location(path, line)}: promptfoo's {names} "
            f"{'is' if len(ignored) == 1 else 'are'} ignored ({why})"
        )
    if pf_repeat is not None and repeat > 1:
        notes.append(
            f"{location(path, doc.line_of(('evaluateOptions', 'repeat')))}: "
            f"evaluateOptions.repeat: each cell runs {repeat} times, with seeds seed, seed+1, … "
            "(at temperature 0 the repeats give the same output)"
        )
    return notes


# promptfoo's echo provider returns the prompt it was given. fake://echo does the same; this chat
# template gives a chat prompt back as promptfoo would (its messages as JSON) and a plain prompt
# as the text itself.
_ECHO_CHAT = (
    '{%- if messages|length == 1 and messages[0].role == "user" -%}{{ messages[0].content }}'
    "{%- else -%}{{ messages|tojson(separators=(',', ':')) }}{%- endif -%}"
)


def _provider_ids(value: Any) -> list[tuple[str, str | None]]:
    """(id, label) of each provider in promptfoo's forms: `id`, `[id, …]`, `[{id, label}]`,
    `[{id: {label, config}}]` and `{id: {…}}`."""
    if isinstance(value, str):
        return [(value, None)]
    if isinstance(value, dict):
        items: list[Any] = [value] if "id" in value else [{k: v} for k, v in value.items()]
    elif isinstance(value, list):
        items = value
    else:
        return []
    out: list[tuple[str, str | None]] = []
    for item in items:
        if isinstance(item, str):
            out.append((item, None))
        elif isinstance(item, dict) and isinstance(item.get("id"), str):
            label = item.get("label")
            out.append((item["id"], label if isinstance(label, str) else None))
        elif isinstance(item, dict) and len(item) == 1:
            ((ident, options),) = item.items()
            label = options.get("label") if isinstance(options, dict) else None
            out.append((str(ident), label if isinstance(label, str) else None))
    return out


def _echo_models(suite: Suite) -> tuple[list[ModelSpec], list[str]]:
    """The models that promptfoo's providers become when the suite names no `models:`: each
    `echo` provider runs as fake://echo; all the others together are replaced by the bundled
    default model (one model, not one per remote provider). Returns the specs and the ids of
    the providers that were replaced."""
    echo: list[ModelSpec] = []
    others: list[str] = []
    for key in ("providers", "targets"):
        for ident, label in _provider_ids(getattr(suite, key)):
            if ident == "echo":
                echo.append(
                    ModelSpec(path="fake://echo", label=label or "echo", chat_template=_ECHO_CHAT)
                )
            else:
                others.append(ident)
    if not echo:
        return [], others
    return echo + ([ModelSpec(path=DEFAULT_MODEL)] if others else []), others


def _providers_note(where: str, key: str, value: Any, models: list[ModelDef], suite: Suite) -> str:
    names = ", ".join(m.label for m in models)
    noun = "model" if len(models) == 1 else "models"
    ignored = f"{where}: {key}: is ignored; running the local {noun} {names} instead (--model picks another)"
    ids = [ident for ident, _ in _provider_ids(value)]
    echo_ran = any(
        m.spec.path == "fake://echo" and m.spec.chat_template == _ECHO_CHAT for m in models
    )
    if "echo" not in ids or not echo_ran:
        return ignored
    text = (
        f"{where}: {key}: promptfoo's echo runs as the fake://echo model, which returns the "
        "rendered prompt as promptfoo's echo does"
    )
    others = [ident for ident in ids if ident != "echo"]
    if others:
        local = [m.label for m in models if m.spec.path != "fake://echo"]
        text += (
            f"; {', '.join(others)} {'is' if len(others) == 1 else 'are'} ignored, running the "
            f"local model {', '.join(local) or DEFAULT_MODEL} in {'its' if len(others) == 1 else 'their'} "
            "place (--model picks another)"
        )
    return text


def _settings(raw: dict[str, Any], doc: YamlDoc, path: Path) -> tuple[list[Params], list[str]]:
    for key, value in raw.items():
        if key in GRIDABLE and isinstance(value, list) and not value:
            raise InputError(
                f"{location(path, doc.line_of(('params', key)))}: params.{key} is an empty list",
                hint="give one value, or a list of values to compare",
            )
    try:
        # Each combination is validated as a whole Params, which suggests the closest valid key.
        combos, varied = expand_params(raw)
        settings = [Params.model_validate(c) for c in combos]
    except ValidationError as exc:
        raise validation_error(exc, doc, path, ("params",)) from None
    if len(settings) > 10_000:
        raise InputError(
            f"{location(path, doc.line_of(('params',)))}: params makes a grid of {len(settings)} settings",
            hint="use fewer values per setting",
        )
    return settings, varied


def _resolve_refs(data: Any, doc: YamlDoc, path: Path) -> Any:
    """promptfoo's `$ref: '#/assertionTemplates/name'`: a JSON pointer into this file, replaced by
    a copy of what it points at (sibling keys win). A `$ref` that stands for a check must
    resolve; any other unresolved one (a JSON schema's own, e.g. `#/definitions/x`) is left as is."""

    def target(ref: str) -> Any:
        if not ref.startswith("#/") or ref.startswith(("#/definitions/", "#/$defs/")):
            return _UNRESOLVED
        node = data
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return _UNRESOLVED
        return node

    def walk(value: Any, loc: tuple[int | str, ...], depth: int) -> Any:
        if depth > 32:
            raise InputError(f"{location(path, doc.line_of(loc))}: $ref loop")
        if isinstance(value, dict):
            ref = value.get("$ref")
            rest = {k: walk(v, (*loc, k), depth) for k, v in value.items() if k != "$ref"}
            if not isinstance(ref, str):
                return {**({"$ref": ref} if "$ref" in value else {}), **rest}
            found = target(ref)
            if found is not _UNRESOLVED:
                resolved = walk(copy.deepcopy(found), loc, depth + 1)
                return {**resolved, **rest} if isinstance(resolved, dict) else resolved
            is_check = len(loc) >= 2 and loc[-2] == "assert" and isinstance(loc[-1], int)
            if is_check or ref.startswith("#/assertionTemplates/"):
                where = location(path, doc.line_of(loc), dotted(loc) or None)
                if not ref.startswith("#/"):
                    raise InputError(
                        f"{where}: $ref {ref!r}: only references into this file (#/...) are read",
                        hint="define the check under assertionTemplates: and use "
                        "$ref: '#/assertionTemplates/name'",
                    )
                raise InputError(
                    f"{where}: $ref {ref!r} points at nothing",
                    hint="check the name under assertionTemplates:",
                )
            return {"$ref": ref, **rest}
        if isinstance(value, list):
            return [walk(v, (*loc, i), depth) for i, v in enumerate(value)]
        return value

    return walk(data, (), 0)


_UNRESOLVED = object()


def _default_test_file(data: dict[str, Any], doc: YamlDoc, loader: _Loader) -> dict[str, Any]:
    """promptfoo's `defaultTest: file://defaults.yaml`."""
    ref = data.get("defaultTest")
    if not isinstance(ref, str):
        return data
    where = loader.where(doc.line_of(("defaultTest",)), "defaultTest")
    if not ref.startswith("file://"):
        raise InputError(f"{where}: text here must be file://defaults.yaml", hint="or a mapping")
    paths = loader.file_ref(ref, where, "defaultTest file")
    value = loader.read_value(paths[0], "defaultTest file")
    if not isinstance(value, dict):
        raise InputError(f"{paths[0]}: a defaultTest file must hold a mapping (vars:, assert:, …)")
    return {**data, "defaultTest": value}


def _model_label(spec: ModelSpec) -> str:
    if spec.path is None:  # a server model: its name on the server
        return spec.model or "server"
    return _override_label(spec.path)


def _override_label(spec: str) -> str:
    return spec if "/" not in spec and not spec.endswith(".gguf") else Path(spec).stem
