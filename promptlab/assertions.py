"""Checks on a model output, in promptfoo's vocabulary so existing configs carry over.

Every check has promptfoo's shape `{type, value, threshold, weight, metric, transform, ...}` and
yields a verdict and a score in [0, 1]. A check is prepared once per test (its value rendered with
the test's variables and validated: a regex compiled, a schema checked, a Python file loaded) and
then evaluated per output. Preparation raises `InputError` before any model loads; evaluation
never raises: a failure inside a check (user code, the judge) becomes a failed check with its
reason.

Checks that need the model (choice, llm-rubric, similar with embeddings) reach it through
`Services`, which the runner provides; see promptlab/runner.py.
"""

from __future__ import annotations

import ast
import difflib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from promptlab import files, similarity, transforms, usercode
from promptlab.consent import CodeMode
from promptlab.errors import InputError

if TYPE_CHECKING:
    import jinja2

    from promptlab.backends import ChoiceScore, Generation
    from promptlab.templates import Message, TemplateEnv

LIST_TYPES = frozenset({"contains-any", "contains-all", "icontains-any", "icontains-all"})
TEXT_TYPES = frozenset({"equals", "contains", "icontains", "starts-with", "regex"})
JSON_TYPES = frozenset({"is-json", "contains-json", "json-schema"})
RUNTIME_TYPES = frozenset({"latency", "max-tokens", "perplexity", "perplexity-score"})
SIMILARITY_TYPES = frozenset({"similar", "levenshtein", "rouge-n", "rouge-l", "bleu"})
JUDGE_TYPES = frozenset({"llm-rubric", "model-graded-closedqa"})
# No `not-` form: negating a multiple-choice verdict or a group has no clear meaning.
UNNEGATABLE = frozenset({"choice", "assert-set"})
BASE_TYPES = (
    *sorted(TEXT_TYPES | LIST_TYPES | JSON_TYPES | RUNTIME_TYPES | SIMILARITY_TYPES | JUDGE_TYPES),
    "python",
    "choice",
    "assert-set",
)
ALL_TYPES = frozenset(BASE_TYPES) | {f"not-{t}" for t in BASE_TYPES if t not in UNNEGATABLE}
# Checks that need the generated tokens' logprobs.
NEEDS_LOGPROBS = frozenset({"perplexity", "perplexity-score"})
# Checks that score the prompt itself and need no generated output.
NO_OUTPUT = frozenset({"choice"})

# promptfoo types we recognise but do not run, so the message says "unsupported" rather than
# "unknown" and does not suggest a wrong near-miss.
PROMPTFOO_ONLY = frozenset(
    {
        "javascript",
        "factuality",
        "answer-relevance",
        "context-faithfulness",
        "context-recall",
        "context-relevance",
        "cost",
        "webhook",
        "is-xml",
        "contains-xml",
        "is-sql",
        "contains-sql",
        "classifier",
        "moderation",
        "select-best",
        "g-eval",
        "max-score",
        "is-valid-function-call",
        "is-valid-openai-function-call",
        "is-valid-openai-tools-call",
        "trace-span-count",
        "guardrails",
        "finish-reason",
        "word-count",
        "is-refusal",
        "pi",
        "ruby",
        "gleu",
        "meteor",
        "is-html",
        "contains-html",
        "tool-call-f1",
        "trace-error-spans",
        "trace-span-duration",
        "skill-used",
        "search-rubric",
        "human",
        "rouge-s",
    }
)
_UNSUPPORTED_HINTS = {
    "javascript": "promptlab runs Python, not JavaScript: use type: python",
    "cost": "local models cost nothing; use latency or max-tokens",
}

# promptfoo's defaults where a type has a natural threshold.
DEFAULT_THRESHOLDS = {
    "similar": 0.75,
    "rouge-n": 0.75,
    "rouge-l": 0.75,
    "bleu": 0.5,
    "levenshtein": 5.0,  # a maximum edit distance, as in promptfoo
}

JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        # reason first: the judge explains before it decides.
        "reason": {"type": "string", "maxLength": 400},
        "pass": {"type": "boolean"},
        "score": {"type": "number"},
    },
    "required": ["reason", "pass", "score"],
}


class Services(Protocol):
    """What the runner lends to checks that need a model."""

    def choices(self, context: str, add_bos: bool, choices: Sequence[str]) -> list[ChoiceScore]: ...

    def judge(self, provider: str | None, messages: Sequence[Message]) -> dict[str, Any]: ...

    def embed(self, provider: str | None, texts: Sequence[str]) -> list[list[float]]: ...


@dataclass(frozen=True)
class PrepareEnv:
    """What preparing a check may need beyond its own fields."""

    base: Path  # the suite's folder: file:// paths are relative to it
    root: Path  # the project root: code and files must live inside it
    code: CodeMode = CodeMode.REFUSE  # what may happen to user code (see consent.py)
    code_used: list[str] = field(default_factory=list)  # where user code is named, for notes
    templates: TemplateEnv | None = None  # for rubric prompts
    variables: Mapping[str, Any] = field(default_factory=dict)  # the test's vars


@dataclass(frozen=True)
class Check:
    """A prepared check: value rendered and validated, ready to evaluate."""

    type: str  # as written, e.g. "not-icontains"
    value: Any
    threshold: float | None
    where: str  # "evals/x.yaml:14" for messages
    weight: float = 1.0
    metric: str | None = None
    transform: transforms.Transform | None = None
    children: tuple[Check, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def negated(self) -> bool:
        return self.type.startswith("not-")

    @property
    def base(self) -> str:
        return self.type[4:] if self.negated else self.type

    def describe(self) -> str:
        if self.base == "latency":
            return f"{self.type} {self.threshold:g}ms"
        if self.base == "assert-set":
            return f"assert-set of {len(self.children)}"
        if self.base == "python":
            return f"{self.type} {self.options['code'].label}"
        if self.base == "choice":
            return f"choice {_short(self.value)} of {len(self.options['choices'])}"
        if self.base == "json-schema" or (self.base == "is-json" and self.value is not None):
            return f"{self.type} (schema)"
        if self.value is None:
            return self.type
        return f"{self.type} {_short(self.value)}"

    def walk(self) -> list[Check]:
        out = [self]
        for child in self.children:
            out += child.walk()
        return out


@dataclass(frozen=True)
class CheckResult:
    type: str
    passed: bool
    reason: str
    score: float = 1.0
    weight: float = 1.0
    metric: str | None = None
    details: Mapping[str, Any] | None = None
    children: tuple[CheckResult, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "pass": self.passed,
            "score": round(self.score, 6),
            "reason": self.reason,
        }
        if self.weight != 1.0:
            out["weight"] = self.weight
        if self.metric:
            out["metric"] = self.metric
        if self.details:
            out["details"] = dict(self.details)
        if self.children:
            out["children"] = [c.as_dict() for c in self.children]
        return out


@dataclass(frozen=True)
class CheckContext:
    """Everything a check may look at for one cell."""

    output: str
    latency_ms: float = 0.0
    generation: Generation | None = None
    vars: Mapping[str, Any] = field(default_factory=dict)
    test: str = ""
    prompt: str = ""  # the prompt's label
    model: str = ""
    prompt_text: str = ""  # exactly what the model received
    add_bos: bool = True
    services: Services | None = None

    def for_code(self, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The `context` argument user code receives (promptfoo's AssertContext, plus more)."""
        tokens = self.generation.tokens if self.generation is not None else None
        return {
            "prompt": self.prompt_text,
            "vars": dict(self.vars),
            "test": {"description": self.test, "vars": dict(self.vars)},
            "prompt_label": self.prompt,
            "model": self.model,
            "latency_ms": self.latency_ms,
            "config": dict(config or {}),
            "logprobs": None
            if tokens is None
            else [{"token": t.text, "logprob": t.logprob, "top": list(t.top)} for t in tokens],
        }


Verdict = tuple[bool, float, str, "dict[str, Any] | None"]


def _short(value: Any, limit: int = 60) -> str:
    """Text as a quoted JSON string, other values as JSON (not quoted twice), cut at `limit`."""
    if isinstance(value, str):
        return json.dumps(value[:limit] + ("…" if len(value) > limit else ""), ensure_ascii=False)
    text = json.dumps(value, ensure_ascii=False)
    return text[:limit] + ("…" if len(text) > limit else "")


def check_type(name: str, where: str) -> str:
    """Validate an assertion type name, suggesting the closest valid one."""
    if name in ALL_TYPES:
        return name
    base = name[4:] if name.startswith("not-") else name
    if base in PROMPTFOO_ONLY:
        hint = _UNSUPPORTED_HINTS.get(base, f"supported types: {', '.join(BASE_TYPES)}")
        raise InputError(
            f"{where}: assertion type '{name}' is not supported by promptlab", hint=hint
        )
    if base in UNNEGATABLE:
        raise InputError(f"{where}: '{base}' has no not- form", hint=f"use {base}")
    close = difflib.get_close_matches(name, sorted(ALL_TYPES), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else f"use one of: {', '.join(BASE_TYPES)}"
    raise InputError(f"{where}: unknown assertion type '{name}'", hint=hint)


def split_list(value: Any) -> list[str]:
    """contains-any and friends take a list, or a comma-separated string as promptfoo does."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list):
        return [item if isinstance(item, str) else json.dumps(item) for item in value]
    return [str(value)]


# --- preparation -------------------------------------------------------------------------


def prepare(
    type_: str,
    value: Any,
    threshold: float | None,
    where: str,
    *,
    weight: float = 1.0,
    metric: str | None = None,
    transform: Any = None,
    children: Sequence[Check] = (),
    options: Mapping[str, Any] | None = None,
    env: PrepareEnv | None = None,
) -> Check:
    """Validate a check whose value has already been rendered with the test's variables."""
    type_ = check_type(type_, where)
    base = type_.removeprefix("not-")
    env = env or PrepareEnv(base=Path(), root=Path().resolve())
    opts: dict[str, Any] = dict(options or {})
    if weight < 0 or not math.isfinite(weight):
        raise InputError(
            f"{where}: weight must be a number >= 0, got {weight}",
            hint="use 0 to report without gating",
        )
    if threshold is not None and (threshold < 0 or not math.isfinite(threshold)):
        # Every threshold is a pass mark on a non-negative scale (score, ms, tokens, distance).
        raise InputError(f"{where}: threshold must be a finite number >= 0, got {threshold}")
    parsed_transform = transforms.parse(
        transform,
        where=where,
        base=env.base,
        root=env.root,
        code=env.code,
        code_used=env.code_used,
    )
    if base == "assert-set":
        if not children:
            raise InputError(f"{where}: assert-set needs a non-empty assert: list")
        if threshold is not None and not 0 <= threshold <= 1:
            raise InputError(
                f"{where}: an assert-set threshold is a score in [0, 1], got {threshold:g}"
            )
    elif children:
        raise InputError(f"{where}: only assert-set takes a nested assert: list")
    preparer = _PREPARE.get(base)
    if preparer is not None:
        value, threshold = preparer(type_, value, threshold, where, opts, env)
    return Check(
        type=type_,
        value=value,
        threshold=threshold,
        where=where,
        weight=float(weight),
        metric=metric,
        transform=parsed_transform,
        children=tuple(children),
        options=opts,
    )


_Preparer = Callable[
    [str, Any, "float | None", str, dict[str, Any], PrepareEnv], "tuple[Any, float | None]"
]


def _prep_text(
    type_: str, value: Any, threshold: float | None, where: str, _o: dict[str, Any], _e: PrepareEnv
) -> tuple[Any, float | None]:
    base = type_.removeprefix("not-")
    if value is None or (isinstance(value, (dict, list)) and base != "equals"):
        raise InputError(f"{where}: '{type_}' needs a text value", hint="add value: …")
    if base == "regex":
        try:
            re.compile(str(value))
        except re.error as exc:
            raise InputError(
                f"{where}: invalid regex {str(value)!r}: {exc}",
                hint="fix the pattern (remember YAML needs single quotes for backslashes)",
            ) from None
    if not isinstance(value, (dict, list)):
        value = value if isinstance(value, str) else json.dumps(value)
    return value, threshold


def _prep_list(
    type_: str, value: Any, threshold: float | None, where: str, _o: dict[str, Any], _e: PrepareEnv
) -> tuple[Any, float | None]:
    items = split_list(value) if value is not None else []
    if not items:
        raise InputError(f"{where}: '{type_}' needs a list of values", hint="value: [a, b]")
    return items, threshold


def _load_schema(value: Any, where: str, env: PrepareEnv) -> Any:
    if isinstance(value, str) and value.startswith("file://"):
        (path,) = files.resolve_ref(
            value, base=env.base, root=env.root, what="schema file", where=where, globs=False
        )
        try:
            value = json.loads(files.read_text(path, "schema file"))
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{exc.lineno}: invalid JSON schema file: {exc.msg}") from None
    return value


def _prep_json(
    type_: str, value: Any, threshold: float | None, where: str, _o: dict[str, Any], env: PrepareEnv
) -> tuple[Any, float | None]:
    base = type_.removeprefix("not-")
    value = _load_schema(value, where, env)
    if base == "json-schema" and value is None:
        raise InputError(
            f"{where}: 'json-schema' needs a schema as value",
            hint="value: {type: object, ...} or file://schema.json",
        )
    if value is not None and not isinstance(value, dict):
        raise InputError(
            f"{where}: '{base}' takes an optional JSON schema object as value",
            hint="remove value, or give a schema mapping",
        )
    if value is not None:
        schema_validator(value, where)
    return value, threshold


def _prep_number(
    type_: str, value: Any, threshold: float | None, where: str, _o: dict[str, Any], _e: PrepareEnv
) -> tuple[Any, float | None]:
    base = type_.removeprefix("not-")
    unit = {"latency": "milliseconds", "max-tokens": "tokens"}.get(base, "")
    limit = threshold if threshold is not None else value
    if limit is None and base == "perplexity-score":
        return None, None  # promptfoo: without a threshold it only reports the score
    try:
        number = float(limit)
    except (TypeError, ValueError):
        what = f"a threshold in {unit}" if unit else "a numeric threshold"
        raise InputError(
            f"{where}: '{base}' needs {what}", hint="add threshold: <number>"
        ) from None
    if number <= 0 or not math.isfinite(number):
        raise InputError(f"{where}: {base} threshold must be positive, got {number:g}")
    return None, number


def _prep_similarity(
    type_: str,
    value: Any,
    threshold: float | None,
    where: str,
    opts: dict[str, Any],
    _e: PrepareEnv,
) -> tuple[Any, float | None]:
    base = type_.removeprefix("not-")
    method = opts.get("method") or similarity.DEFAULT_METHOD.get(base, base)
    if method not in similarity.METHODS:
        raise InputError(
            f"{where}: unknown similarity method {method!r}",
            hint=f"use one of: {', '.join(similarity.METHODS)}",
        )
    opts["method"] = method
    if value is None or isinstance(value, dict):
        raise InputError(
            f"{where}: '{type_}' needs the expected text as value (or a list of texts)"
        )
    refs = [str(v) for v in value] if isinstance(value, list) else [str(value)]
    if threshold is None:
        threshold = DEFAULT_THRESHOLDS.get(base, 0.75)
    if base != "levenshtein" and not 0 <= threshold <= 1:
        raise InputError(
            f"{where}: a {base} threshold is a similarity in [0, 1], got {threshold:g}"
        )
    return refs, threshold


def _prep_python(
    type_: str,
    value: Any,
    threshold: float | None,
    where: str,
    opts: dict[str, Any],
    env: PrepareEnv,
) -> tuple[Any, float | None]:
    usercode.require_consent(env.code, where, "a python check")
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: 'python' needs code or file://checks.py:function as value")
    if value.startswith("file://"):
        opts["code"] = usercode.load_file_ref(value, env.base, env.root, where, env.code)
    else:
        opts["code"] = usercode.compile_inline(value, where, env.code)
    env.code_used.append(f"{where} (python check {opts['code'].label})")
    return value, threshold


def _list_string(text: str, where: str, named: str | None) -> Any:
    """Choices written as one string: a JSON list, a Python-literal list of strings (promptfoo's
    MMLU CSV holds "['True, True', 'False, False']"), or options separated by |. A string that
    looks like a list but is neither is an error that says so, rather than one option."""
    stripped = text.strip()
    if not (stripped.startswith("[") and stripped.endswith("]")):
        return [part for part in text.split("|") if part]
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    try:
        # a literal, never evaluated: only strings, numbers, lists and the like parse
        value = ast.literal_eval(stripped)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        value = None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    holder = f"the variable '{named}' holds" if named else "choices: is"
    raise InputError(
        f"{where}: {holder} a string, not a list: {_short(text)} is neither a JSON list nor a "
        "list of quoted strings",
        hint='write it as a list: ["A", "B"] (in a CSV cell: "[""A"", ""B""]" or "[\'A\', \'B\']")',
    )


def _prep_choice(
    type_: str,
    value: Any,
    threshold: float | None,
    where: str,
    opts: dict[str, Any],
    env: PrepareEnv,
) -> tuple[Any, float | None]:
    raw = opts.get("choices")
    named = raw if isinstance(raw, str) and raw in env.variables else None
    if named is not None:
        raw = env.variables[named]  # `choices: options` names a variable holding the list
    if isinstance(raw, str):
        raw = _list_string(raw, where, named)
    if not isinstance(raw, list) or len(raw) < 2:
        raise InputError(
            f"{where}: 'choice' needs choices: a list of at least two options (or the name of a variable holding one)",
            hint='choices: [" A", " B", " C", " D"]',
        )
    choices = [c if isinstance(c, str) else json.dumps(c) for c in raw]
    if len(set(choices)) != len(choices):
        raise InputError(f"{where}: choices must be distinct, got {choices}")
    opts["choices"] = tuple(choices)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(choices):
        value = choices[value]
    if value not in choices:
        stripped = [c.strip() for c in choices]
        if (
            isinstance(value, str)
            and value.strip() in stripped
            and stripped.count(value.strip()) == 1
        ):
            value = choices[stripped.index(value.strip())]
        else:
            raise InputError(
                f"{where}: the expected answer {_short(value)} is not one of the choices {choices}",
                hint="value: is the correct option's text (or its 0-based index)",
            )
    method = opts.get("method") or "acc"
    if method not in ("acc", "acc_norm"):
        raise InputError(f"{where}: choice method must be acc or acc_norm, got {method!r}")
    opts["method"] = method
    if threshold is not None and not 0 <= threshold <= 1:
        raise InputError(
            f"{where}: a choice threshold is the expected answer's probability in [0, 1], got {threshold:g}"
        )
    return value, threshold


def _prep_judge(
    type_: str,
    value: Any,
    threshold: float | None,
    where: str,
    opts: dict[str, Any],
    env: PrepareEnv,
) -> tuple[Any, float | None]:
    if value is None and opts.get("rubricPrompt") is not None:
        value = ""  # a custom rubric prompt may carry the whole rubric itself
    if not isinstance(value, str) or (not value.strip() and opts.get("rubricPrompt") is None):
        raise InputError(f"{where}: '{type_}' needs the rubric as text in value:")
    if threshold is not None and not 0 <= threshold <= 1:
        raise InputError(f"{where}: a {type_} threshold is a score in [0, 1], got {threshold:g}")
    if env.templates is None:
        raise InputError(f"{where}: '{type_}' needs the suite's template environment")
    opts["rubric_template"] = _rubric_template(opts.get("rubricPrompt"), where, env)
    opts["templates"] = env.templates
    # Render once now with a placeholder output, so a broken rubric prompt stops the run early.
    _judge_messages(opts["rubric_template"], value, "<output>", env.variables, where, env.templates)
    return value, threshold


def _rubric_template(spec: Any, where: str, env: PrepareEnv) -> jinja2.Template:
    from importlib import resources  # noqa: PLC0415

    assert env.templates is not None
    if spec is None:
        source = (resources.files("promptlab") / "builtin" / "judge.j2").read_text(encoding="utf-8")
        return env.templates.from_string(source, f"{where} (default rubric prompt)")
    if isinstance(spec, list):
        # promptfoo's message-list form: [{role, content}, ...]
        parts = []
        for msg in spec:
            if not isinstance(msg, dict) or "content" not in msg:
                raise InputError(f"{where}: rubricPrompt messages need role and content")
            role = msg.get("role", "user")
            parts.append(f"{{% {role} %}}{msg['content']}{{% end{role} %}}")
        return env.templates.from_string("".join(parts), f"{where} (rubricPrompt)")
    if not isinstance(spec, str):
        raise InputError(
            f"{where}: rubricPrompt is Jinja text, file://template.j2 or a message list"
        )
    if spec.startswith("file://"):
        return env.templates.load_file(files.ref_target(spec, env.base), where)
    return env.templates.from_string(spec, f"{where} (rubricPrompt)")


def _judge_messages(
    template: jinja2.Template,
    rubric: str,
    output: str,
    variables: Mapping[str, Any],
    where: str,
    templates: TemplateEnv,
) -> list[Message]:
    from promptlab.templates import split_roles  # noqa: PLC0415

    text = templates.render(
        template, {**variables, "output": output, "rubric": rubric, "vars": dict(variables)}, where
    )
    return split_roles(text, where)[0]


_PREPARE: dict[str, _Preparer] = {
    **dict.fromkeys(TEXT_TYPES, _prep_text),
    **dict.fromkeys(LIST_TYPES, _prep_list),
    **dict.fromkeys(JSON_TYPES, _prep_json),
    **dict.fromkeys(RUNTIME_TYPES, _prep_number),
    **dict.fromkeys(SIMILARITY_TYPES, _prep_similarity),
    **dict.fromkeys(JUDGE_TYPES, _prep_judge),
    "python": _prep_python,
    "choice": _prep_choice,
}


def schema_validator(schema: dict[str, Any], where: str) -> Any:
    import jsonschema  # noqa: PLC0415 - only suites with schemas pay for the import

    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InputError(f"{where}: invalid JSON schema: {exc.message}") from None
    return cls(schema)


# --- evaluation ----------------------------------------------------------------------------


def _bool(ok: bool, reason: str, details: dict[str, Any] | None = None) -> Verdict:
    return ok, 1.0 if ok else 0.0, reason, details


def _equals(check: Check, ctx: CheckContext) -> Verdict:
    output = ctx.output
    if isinstance(check.value, (dict, list)):
        try:
            ok = json.loads(output) == check.value
        except ValueError:
            return _bool(False, "output is not JSON, expected " + _short(check.value))
        return _bool(
            ok, ("output equals " if ok else "output does not equal ") + _short(check.value)
        )
    ok = output == check.value
    return _bool(ok, ("output equals " if ok else "output does not equal ") + _short(check.value))


def _contains(check: Check, ctx: CheckContext, fold: bool) -> Verdict:
    needle = str(check.value)
    ok = needle.lower() in ctx.output.lower() if fold else needle in ctx.output
    return _bool(ok, ("output contains " if ok else "output does not contain ") + _short(needle))


def _contains_list(check: Check, ctx: CheckContext, fold: bool, need_all: bool) -> Verdict:
    hay = ctx.output.lower() if fold else ctx.output
    found = [v for v in check.value if (v.lower() if fold else v) in hay]
    missing = [v for v in check.value if v not in found]
    if need_all:
        ok = not missing
        return _bool(ok, "output contains all values" if ok else f"output lacks {_short(missing)}")
    ok = bool(found)
    return _bool(
        ok, f"output contains {_short(found[0])}" if ok else "output contains none of the values"
    )


def _starts_with(check: Check, ctx: CheckContext) -> Verdict:
    ok = ctx.output.startswith(str(check.value))
    return _bool(
        ok, ("output starts with " if ok else "output does not start with ") + _short(check.value)
    )


def _regex(check: Check, ctx: CheckContext) -> Verdict:
    ok = re.search(str(check.value), ctx.output) is not None
    return _bool(ok, ("output matches /" if ok else "output does not match /") + f"{check.value}/")


def _validate_json(check: Check, data: Any, what: str) -> Verdict:
    if check.value is None:
        return _bool(True, f"{what} is valid JSON")
    validator = schema_validator(check.value, check.where)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if not errors:
        return _bool(True, f"{what} is valid JSON matching the schema")
    err = errors[0]
    path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
    return _bool(False, f"schema violation at {path}: {err.message}")


def _is_json(check: Check, ctx: CheckContext) -> Verdict:
    try:
        data = json.loads(ctx.output)
    except json.JSONDecodeError as exc:
        return _bool(False, f"output is not valid JSON ({exc.msg} at char {exc.pos})")
    return _validate_json(check, data, "output")


def _contains_json(check: Check, ctx: CheckContext) -> Verdict:
    decoder = json.JSONDecoder()
    text = ctx.output
    last: Verdict | None = None
    for match in re.finditer(r"[\[{]", text):
        try:
            data, _end = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        last = _validate_json(check, data, "embedded JSON")
        if last[0]:
            return last
    return last or _bool(False, "output contains no JSON object or array")


def _latency(check: Check, ctx: CheckContext) -> Verdict:
    assert check.threshold is not None
    ok = ctx.latency_ms <= check.threshold
    return _bool(ok, f"latency {ctx.latency_ms:.0f}ms {'<=' if ok else '>'} {check.threshold:g}ms")


def _max_tokens(check: Check, ctx: CheckContext) -> Verdict:
    assert check.threshold is not None
    if ctx.generation is None:
        return _bool(False, "no generation to count tokens of")
    n = ctx.generation.completion_tokens
    ok = n <= check.threshold
    return _bool(ok, f"{n} output tokens {'<=' if ok else '>'} {check.threshold:g}")


def _perplexity(check: Check, ctx: CheckContext) -> Verdict:
    tokens = ctx.generation.tokens if ctx.generation is not None else None
    if not tokens:
        return _bool(False, "no token logprobs for this output (empty output?)")
    ppl = math.exp(-sum(t.logprob for t in tokens) / len(tokens))
    details = {"perplexity": round(ppl, 4), "tokens": len(tokens)}
    if check.base == "perplexity":
        assert check.threshold is not None
        ok = ppl <= check.threshold
        return _bool(ok, f"perplexity {ppl:.3g} {'<=' if ok else '>'} {check.threshold:g}", details)
    score = 1.0 / (1.0 + ppl)  # promptfoo's normalization
    if check.threshold is None:
        return True, score, f"perplexity score 1/(1+{ppl:.3g}) = {score:.3f}", details
    ok = score >= check.threshold
    return (
        ok,
        score,
        f"perplexity score 1/(1+{ppl:.3g}) = {score:.3f} {'>=' if ok else '<'} {check.threshold:g}",
        details,
    )


def _similar(check: Check, ctx: CheckContext) -> Verdict:
    assert check.threshold is not None
    method = check.options["method"]
    refs: list[str] = check.value
    if method == "embedding":
        if ctx.services is None:
            return _bool(False, "embedding similarity needs a model (run it with promptlab run)")
        vectors = ctx.services.embed(check.options.get("provider"), [ctx.output, *refs])
        scores = [similarity.cosine(vectors[0], v) for v in vectors[1:]]
    elif method == "levenshtein":
        distances = [similarity.levenshtein_distance(ctx.output, r) for r in refs]
        best = min(range(len(refs)), key=lambda i: distances[i])
        dist = distances[best]
        ok = dist <= check.threshold
        score = similarity.levenshtein_similarity(ctx.output, refs[best])
        return (
            ok,
            score,
            f"edit distance {dist} {'<=' if ok else '>'} {check.threshold:g}",
            {"distance": dist, "similarity": round(score, 4)},
        )
    else:
        scores = [
            similarity.lexical(method, ctx.output, r, check.options.get("config")) for r in refs
        ]
    score = max(scores)
    ok = score >= check.threshold
    return (
        ok,
        score,
        f"{method} similarity {score:.3f} {'>=' if ok else '<'} {check.threshold:g}",
        {"method": method, "similarity": round(score, 4)},
    )


def _python(check: Check, ctx: CheckContext) -> Verdict:
    code: usercode.CodeRef = check.options["code"]
    result = code.func(ctx.output, ctx.for_code(check.options.get("config")))
    if isinstance(result, bool):
        return _bool(result, f"{code.label} returned {result}")
    if isinstance(result, (int, float)):
        score = float(result)
        ok = score >= check.threshold if check.threshold is not None else score > 0
        clamped = min(1.0, max(0.0, score))
        return (
            ok,
            clamped,
            f"{code.label} scored {score:g}",
            {"raw_score": score} if clamped != score else None,
        )
    if isinstance(result, Mapping):
        passed = result.get("pass", result.get("pass_"))
        raw = result.get("score")
        given = float(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else None
        if passed is None and given is not None:
            passed = given >= check.threshold if check.threshold is not None else given > 0
        if not isinstance(passed, bool):
            raise TypeError(f"{code.label} returned a dict without a boolean 'pass'")
        score = given if given is not None else (1.0 if passed else 0.0)
        if check.threshold is not None:
            passed = passed and score >= check.threshold
        reason = str(result.get("reason") or f"{code.label} returned pass={passed}")
        return passed, min(1.0, max(0.0, score)), reason, None
    raise TypeError(
        f"{code.label} returned {type(result).__name__}; return bool, a number or {{pass, score, reason}}"
    )


def choice_verdict(check: Check, scores: Sequence[ChoiceScore]) -> Verdict:
    """acc / acc_norm as lm-evaluation-harness defines them, plus normalized probabilities."""
    choices: tuple[str, ...] = check.options["choices"]
    logprobs = [s.logprob for s in scores]
    # acc_norm divides by the continuation's length in bytes, as lm-evaluation-harness does.
    normed = [lp / max(1, len(c.encode("utf-8"))) for lp, c in zip(logprobs, choices, strict=True)]
    top = max(logprobs)
    exps = [math.exp(lp - top) for lp in logprobs]
    probs = [e / sum(exps) for e in exps]
    pick = max(range(len(choices)), key=lambda i: logprobs[i])
    pick_norm = max(range(len(choices)), key=lambda i: normed[i])
    expected = choices.index(check.value)
    chosen = pick_norm if check.options["method"] == "acc_norm" else pick
    ranked = sorted(probs, reverse=True)
    details = {
        "chosen": choices[chosen],
        "expected": check.value,
        "acc": pick == expected,
        "acc_norm": pick_norm == expected,
        "probs": {c: round(p, 6) for c, p in zip(choices, probs, strict=True)},
        "logprobs": {c: round(lp, 6) for c, lp in zip(choices, logprobs, strict=True)},
        "margin": round(
            ranked[0] - ranked[1], 6
        ),  # probability lead of the pick over the runner-up
        "method": check.options["method"],
    }
    ok = chosen == expected
    p_expected = probs[expected]
    if check.threshold is not None:
        ok = ok and p_expected >= check.threshold
    reason = f"picked {_short(choices[chosen])} (p={probs[chosen]:.3f})" + (
        "" if chosen == expected else f", expected {_short(check.value)} (p={p_expected:.3f})"
    )
    return ok, p_expected, reason, details


def _choice(check: Check, ctx: CheckContext) -> Verdict:
    if ctx.services is None:
        return _bool(False, "choice scoring needs a model (run it with promptlab run)")
    scores = ctx.services.choices(ctx.prompt_text, ctx.add_bos, check.options["choices"])
    return choice_verdict(check, scores)


def _judge(check: Check, ctx: CheckContext) -> Verdict:
    if ctx.services is None:
        return _bool(False, "llm-rubric needs a judge model (run it with promptlab run)")

    template: jinja2.Template = check.options["rubric_template"]
    templates: TemplateEnv = check.options["templates"]
    messages = _judge_messages(template, check.value, ctx.output, ctx.vars, check.where, templates)
    verdict = ctx.services.judge(check.options.get("provider"), messages)
    score = float(verdict["score"])
    score = min(1.0, max(0.0, score if score <= 1 else score / 10 if score <= 10 else 1.0))
    ok = score >= check.threshold if check.threshold is not None else bool(verdict["pass"])
    details = {
        "judge_reason": verdict["reason"],
        "judge_pass": verdict["pass"],
        "judge_score": verdict["score"],
    }
    return ok, score, f"judge: {verdict['reason']}", details


_EVALUATE: dict[str, Callable[[Check, CheckContext], Verdict]] = {
    "equals": _equals,
    "contains": lambda c, x: _contains(c, x, fold=False),
    "icontains": lambda c, x: _contains(c, x, fold=True),
    "contains-any": lambda c, x: _contains_list(c, x, fold=False, need_all=False),
    "contains-all": lambda c, x: _contains_list(c, x, fold=False, need_all=True),
    "icontains-any": lambda c, x: _contains_list(c, x, fold=True, need_all=False),
    "icontains-all": lambda c, x: _contains_list(c, x, fold=True, need_all=True),
    "starts-with": _starts_with,
    "regex": _regex,
    "is-json": _is_json,
    "json-schema": _is_json,
    "contains-json": _contains_json,
    "latency": _latency,
    "max-tokens": _max_tokens,
    "perplexity": _perplexity,
    "perplexity-score": _perplexity,
    **dict.fromkeys(SIMILARITY_TYPES, _similar),
    **dict.fromkeys(JUDGE_TYPES, _judge),
    "python": _python,
    "choice": _choice,
}


def combine(results: Sequence[CheckResult], threshold: float | None) -> tuple[bool, float]:
    """promptfoo's rule: the score is the weighted mean of the check scores (weight 0 reports
    without counting); without a threshold every weighted check must pass, with one the score
    must reach it."""
    gating = [r for r in results if r.weight > 0]
    total = sum(r.weight for r in gating)
    score = sum(r.score * r.weight for r in gating) / total if total else 1.0
    passed = score >= threshold - 1e-12 if threshold is not None else all(r.passed for r in gating)
    return passed, score


def evaluate(check: Check, ctx: CheckContext) -> CheckResult:
    """Evaluate one prepared check. Never raises (except KeyboardInterrupt)."""
    if check.transform is not None:
        try:
            ctx = replace(ctx, output=check.transform(ctx.output, ctx.for_code()))
        except Exception as exc:  # user transform code
            return CheckResult(
                check.type,
                False,
                f"transform failed: {type(exc).__name__}: {exc}",
                0.0,
                check.weight,
                check.metric,
            )
    if check.base == "assert-set":
        children = tuple(evaluate(c, ctx) for c in check.children)
        ok, score = combine(children, check.threshold)
        passed_n = sum(c.passed for c in children)
        reason = f"{passed_n}/{len(children)} passed, score {score:.3f}"
        if check.threshold is not None:
            reason += f" {'>=' if ok else '<'} {check.threshold:g}"
        return CheckResult(
            check.type, ok, reason, score, check.weight, check.metric, None, children
        )
    try:
        ok, score, reason, details = _EVALUATE[check.base](check, ctx)
    except Exception as exc:  # user code, the judge, a model call: the check fails, the run goes on
        ok, score, reason, details = False, 0.0, f"{type(exc).__name__}: {exc}", None
        if check.negated:  # an error is never a pass, not even for not-…
            return CheckResult(check.type, False, reason, 0.0, check.weight, check.metric)
    if check.negated:
        ok, score = not ok, 1.0 - score
    return CheckResult(
        check.type, ok, reason, max(0.0, min(1.0, score)), check.weight, check.metric, details
    )


def apply(check: Check, output: str, latency_ms: float) -> CheckResult:
    """Evaluate a check on a bare output (no model services): for tests and simple uses."""
    return evaluate(check, CheckContext(output=output, latency_ms=latency_ms))


def named_scores(results: Sequence[CheckResult]) -> dict[str, float]:
    """Weighted mean score per `metric:` name, over every check (nested ones included)."""
    sums: dict[str, list[float]] = {}

    def visit(result: CheckResult) -> None:
        if result.metric:
            acc = sums.setdefault(result.metric, [0.0, 0.0])
            w = result.weight if result.weight > 0 else 1.0
            acc[0] += result.score * w
            acc[1] += w
        for child in result.children:
            visit(child)

    for r in results:
        visit(r)
    return {name: s / w for name, (s, w) in sums.items()}
