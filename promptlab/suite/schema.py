"""The suite format as pydantic models (extra="forbid"): promptlab's own strict schema.

Vocabulary follows promptfoo (prompts, vars, defaultTest, tests, assert) so its configs carry over.
The field descriptions become the JSON schema (`promptlab schema`) and the suite reference.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from promptlab.suite.optimize_schema import OptimizeSpec
from promptlab.suite.servers import ServerFields
from promptlab.suite.strict import Strict
from promptlab.suite.strict import file_field as _files  # short: it marks many fields below

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


# The server settings (provider: openai) come from ServerFields (suite/servers.py). It comes first
# so its key check runs before Strict's, as when both sat in this class.
class ModelSpec(ServerFields, Strict):
    """A local GGUF model and its llama.cpp load settings (all set explicitly, never library
    defaults), or a model behind an OpenAI-compatible server (provider: openai)."""

    path: str | None = Field(
        default=None,
        description="A .gguf file (relative to the suite; model files may live outside the "
        "project), a bundled alias (smollm2, gemma3), an Ollama model (ollama:NAME[:TAG]) or a "
        "hub file (hf://OWNER/REPO/FILE.gguf, hf://OWNER/REPO:Q4_K_M, optionally @REVISION). "
        "fake://rules?file=x.json reads a rules file. Required for a local model",
        json_schema_extra=_files("fake-backend rules file"),
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
        default=None,
        description="promptfoo's providers, read when models: is absent: ollama:…, openai:… with "
        "config.apiBaseUrl and localai:… run that local model, echo runs as fake://echo; the "
        "others are replaced by the default model, with a note",
    )
    targets: Any = Field(
        default=None, description="promptfoo's other name for providers; read the same way"
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
    optimize: OptimizeSpec | None = Field(
        default=None, description="Search space for `promptlab optimize` (ignored by run)"
    )

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
