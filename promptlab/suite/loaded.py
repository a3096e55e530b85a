"""The loaded form of a suite: prompts, tests, checks and models as the planner reads them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jinja2
import jinja2.meta

from promptlab.suite.optimize_schema import OptimizeSpec
from promptlab.suite.schema import Constraint, ModelSpec, Params
from promptlab.templates import TemplateEnv
from promptlab.yamlio import YamlDoc


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
    # Generation settings of this model alone (Params names), over the suite's params: a
    # promptfoo provider's config. Keys the suite's own params: sets are not here.
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedOptimize:
    """The optimize: section with the files it names read (and confined) at load time."""

    spec: OptimizeSpec
    doc: YamlDoc  # the suite's YAML, for file:line in messages about the section
    pool: list[TestDef] | None = None  # tests of a demos.pool file
    meta_prompt: jinja2.Template | None = None


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
    optimize: LoadedOptimize | None = None  # the optimize: section (promptlab optimize)
