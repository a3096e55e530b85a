"""The shapes every check family shares: a prepared Check, its context and its result."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from promptlab.consent import CodeMode

if TYPE_CHECKING:
    from promptlab.backends import ChoiceScore, Generation
    from promptlab.scoring import transforms
    from promptlab.templates import Message, TemplateEnv


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


def split_list(value: Any) -> list[str]:
    """contains-any and friends take a list, or a comma-separated string as promptfoo does."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list):
        return [item if isinstance(item, str) else json.dumps(item) for item in value]
    return [str(value)]


_Preparer = Callable[
    [str, Any, "float | None", str, dict[str, Any], PrepareEnv], "tuple[Any, float | None]"
]


def _bool(ok: bool, reason: str, details: dict[str, Any] | None = None) -> Verdict:
    return ok, 1.0 if ok else 0.0, reason, details
