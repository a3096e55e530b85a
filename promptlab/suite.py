"""Read an eval suite: YAML → pydantic models (extra="forbid") → loaded prompts, tests and models.

Vocabulary follows promptfoo (prompts, vars, defaultTest, tests, assert) so its configs carry over.
Everything is checked here, before any model loads; each error names file, line and field.
"""

from __future__ import annotations

import csv
import difflib
import glob
import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import jinja2
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from promptlab import assertions
from promptlab.errors import InputError, location
from promptlab.models import DEFAULT_MODEL
from promptlab.templates import TemplateEnv, find_project_root, sha256_text
from promptlab.yamlio import YamlDoc, load_yaml, read_text


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _unknown_keys(cls, data: Any) -> Any:
        # Our own check (instead of pydantic's extra_forbidden) so the message can suggest the
        # closest valid key.
        if isinstance(data, dict):
            allowed = sorted({f.alias or name for name, f in cls.model_fields.items()})
            for key in data:
                if key not in allowed:
                    close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.5)
                    hint = (
                        f"did you mean '{close[0]}'?"
                        if close
                        else "valid keys: " + ", ".join(allowed)
                    )
                    raise PydanticCustomError(
                        "unknown_key",
                        "unknown key '{key}'; {hint}",
                        {"key": str(key), "hint": hint},
                    )
        return data


class AssertSpec(Strict):
    """One check on the output, as in promptfoo: `{type, value}` (latency takes `threshold`)."""

    type: str = Field(
        description="Check type, e.g. icontains, regex, is-json, latency, not-contains"
    )
    value: Any = Field(
        default=None, description="Expected value; Jinja is rendered with the test's vars"
    )
    threshold: float | None = Field(
        default=None, description="For latency: the limit in milliseconds"
    )


class TestSpec(Strict):
    description: str | None = None
    vars: dict[str, Any] = Field(default_factory=dict)
    assert_: list[AssertSpec] = Field(default_factory=list, alias="assert")


class DefaultTestSpec(Strict):
    vars: dict[str, Any] = Field(default_factory=dict)
    assert_: list[AssertSpec] = Field(default_factory=list, alias="assert")


class PromptSpec(Strict):
    id: str | None = Field(
        default=None, description="promptfoo style: `file://path` or the template text itself"
    )
    raw: str | None = Field(default=None, description="Inline Jinja template text")
    label: str | None = Field(default=None, description="Name shown in reports")

    @model_validator(mode="after")
    def _has_source(self) -> PromptSpec:
        if self.id is None and self.raw is None:
            raise PydanticCustomError(
                "prompt_source", "a prompt mapping needs `raw:` (inline text) or `id: file://…`"
            )
        return self


def _str_to_prompt(value: Any) -> Any:
    return {"id": value} if isinstance(value, str) else value


class ModelSpec(Strict):
    """A local GGUF model and its llama.cpp load settings (all set explicitly, never library defaults)."""

    path: str = Field(
        description="A .gguf file (relative to the suite) or a bundled alias: smollm2, gemma3"
    )
    label: str | None = Field(
        default=None, description="Name shown in reports (default: alias or file stem)"
    )
    n_gpu_layers: int | None = Field(
        default=None,
        ge=-1,
        description="Layers to offload; -1 = all. Default: all when the build supports GPU offload, else 0",
    )
    n_ctx: int = Field(default=4096, ge=64, le=1 << 20, description="Context window in tokens")
    n_batch: int = Field(
        default=512,
        ge=1,
        description="Prompt-processing batch size (default: 512, or n_ctx if smaller)",
    )
    n_threads: int | None = Field(
        default=None, ge=1, description="Generation threads (default: usable CPUs)"
    )
    n_threads_batch: int | None = Field(
        default=None, ge=1, description="Prompt-processing threads (default: usable CPUs)"
    )
    chat: Literal["auto", True, False] = Field(
        default="auto",
        description="Apply the chat template: auto = when the GGUF has one (or chat_template is set)",
    )
    chat_template: str | None = Field(
        default=None,
        description="Override the GGUF chat template: file://path.jinja or inline Jinja",
    )
    flash_attn: bool = Field(
        default=False, description="llama.cpp flash attention (changes logits slightly)"
    )

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


class Params(Strict):
    """Generation settings. Every one is passed to llama.cpp explicitly."""

    temperature: float = Field(
        default=0.0, ge=0.0, le=5.0, description="0 = greedy (deterministic)"
    )
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    top_k: int = Field(default=40, ge=0, description="0 = disabled")
    min_p: float = Field(default=0.05, ge=0.0, le=1.0)
    max_tokens: int = Field(default=128, ge=1, description="Tokens to generate at most")
    stop: list[str] = Field(default_factory=list, description="Stop strings (excluded from output)")
    seed: int = Field(
        default=0, ge=0, lt=2**32 - 1, description="Sampling seed, passed on every call"
    )
    repeat_penalty: float = Field(default=1.0, gt=0.0, le=10.0, description="1.0 = off")

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


class Suite(Strict):
    """An eval suite file (evals/*.yaml)."""

    description: str | None = None
    prompts: Annotated[
        list[
            Annotated[
                PromptSpec, BeforeValidator(_str_to_prompt, json_schema_input_type=str | PromptSpec)
            ]
        ],
        Field(min_length=1, description="Inline Jinja text, file://path, or {id|raw, label}"),
    ]
    providers: Any = Field(
        default=None, description="promptfoo's providers; ignored: promptlab runs the local models"
    )
    vars: dict[str, Any] = Field(default_factory=dict, description="Defaults for every test")
    defaultTest: DefaultTestSpec | None = None
    tests: Annotated[
        list[Any] | str,
        BeforeValidator(lambda v: v, json_schema_input_type=list[str | TestSpec] | str),
        Field(description="Tests, or file://tests.csv|.jsonl|.yaml (globs allowed), or a mix"),
    ] = Field(default_factory=list)
    models: (
        list[
            Annotated[
                ModelSpec, BeforeValidator(_str_to_model, json_schema_input_type=str | ModelSpec)
            ]
        ]
        | None
    ) = Field(default=None, description="Local models; default: the bundled smollm2")
    params: Params = Field(default_factory=Params)

    @field_validator("prompts", mode="before")
    @classmethod
    def _prompts_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [value]
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


@dataclass
class CheckDef:
    type: str
    value: Any
    threshold: float | None
    where: str


@dataclass
class TestDef:
    index: int
    description: str | None
    vars: dict[str, Any]
    checks: list[CheckDef]
    where: str
    csv_columns: set[str] | None = None  # set when the test came from a CSV row

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
    params: Params
    env: TemplateEnv
    notes: list[str]
    files: dict[str, str]  # project-relative path -> sha256 of every file the suite read


def _field_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validation_error(
    exc: ValidationError,
    doc: YamlDoc | None,
    path: Path,
    prefix: tuple[int | str, ...] = (),
    line: int | None = None,
) -> InputError:
    err = exc.errors(include_url=False)[0]
    loc = (*prefix, *err["loc"])
    if err["type"] == "unknown_key":
        key = err.get("ctx", {}).get("key", "")
        loc = (*loc, key)
        msg = err["msg"]
        field_name = _field_path(loc[:-1]) or "top level"
    else:
        field_name = _field_path(loc) or "top level"
        msg = err["msg"]
        if err["type"] == "missing":
            msg = f"missing required key; add {loc[-1]}:"
        elif "input" in err and err["type"] not in ("model_type", "dict_type", "list_type"):
            msg = f"{msg} (got {json.dumps(err['input'], default=str)[:60]})"
    if doc is not None:
        line = doc.line_of(loc)
    return InputError(f"{location(path, line)}: {field_name}: {msg}")


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)


class _Loader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.parent
        self.root = find_project_root(path.parent)
        self.env = TemplateEnv(self.root)
        self.files: dict[str, str] = {}
        self.notes: list[str] = []

    def where(self, line: int | None, field_name: str | None = None) -> str:
        return location(self.path, line, field_name)

    def file_ref(self, ref: str, where: str) -> list[Path]:
        raw = ref.removeprefix("file://")
        target = Path(raw).expanduser()
        if not target.is_absolute():
            # normpath so messages say prompts/x.j2, not evals/../prompts/x.j2
            target = Path(os.path.normpath(self.base / target))
        if any(ch in raw for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(str(target), recursive=True))  # noqa: PTH207 - absolute patterns
            if not matches:
                raise InputError(f"{where}: no files match {raw}", hint="check the glob pattern")
            paths = matches
        else:
            if not target.exists():
                raise InputError(
                    f"{where}: file {raw} not found (looked at {target})",
                    hint="check the path; it is relative to the suite file",
                )
            paths = [target]
        for p in paths:
            if not p.resolve().is_relative_to(self.root):
                raise InputError(
                    f"{where}: {raw} is outside the project {self.root}",
                    hint="keep suite files inside the project",
                )
        return paths

    def record(self, path: Path, text: str) -> None:
        self.files[_rel(path, self.root)] = sha256_text(text)

    # --- prompts ---

    def prompt(self, i: int, spec: PromptSpec, doc: YamlDoc) -> PromptDef:
        where = self.where(doc.line_of(("prompts", i)), f"prompts[{i}]")
        source = spec.raw if spec.raw is not None else spec.id
        assert source is not None
        if spec.raw is None and source.startswith("file://"):
            (path,) = self.file_ref(source, where)[:1]
            return self._prompt_file(path, spec.label, where)
        if not source.strip():
            raise InputError(f"{where}: prompt is empty", hint="write the template text")
        label = spec.label or (spec.id if spec.raw is not None and spec.id else None)
        tpl = self.env.from_string(source, where)
        kind: Literal["text"] = "text"
        return PromptDef(
            label=label or _inline_label(source),
            source="inline",
            kind=kind,
            parts=[(None, tpl)],
            sha256=sha256_text(source),
            where=where,
            variables=self.env.variables(tpl, source),
        )

    def _prompt_file(self, path: Path, label: str | None, where: str) -> PromptDef:
        if path.is_dir():
            raise InputError(f"{where}: {path} is a directory, expected a template file")
        text = read_text(path, "template")
        self.record(path, text)
        if not text.strip():
            raise InputError(f"{path}: template is empty", hint="write the template text")
        rel = _rel(path, self.root)
        if path.suffix.lower() in (".yaml", ".yml", ".json"):
            parts, variables = self._chat_file(path, text)
            return PromptDef(
                label or path.stem, rel, "messages", parts, sha256_text(text), where, variables
            )
        tpl = self.env.load_file(path, where)
        return PromptDef(
            label or path.stem,
            rel,
            "text",
            [(None, tpl)],
            sha256_text(text),
            where,
            self.env.variables(tpl),
        )

    def _chat_file(
        self, path: Path, text: str
    ) -> tuple[list[tuple[str | None, jinja2.Template]], set[str]]:
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError(f"{location(path, exc.lineno)}: invalid JSON: {exc.msg}") from None
            doc = None
        else:
            doc = load_yaml(path, text)
            data = doc.data
        if not isinstance(data, list) or not data:
            raise InputError(
                f"{path}: a chat prompt file must hold a non-empty list of {{role, content}} messages"
            )
        parts: list[tuple[str | None, jinja2.Template]] = []
        variables: set[str] = set()
        for j, msg in enumerate(data):
            line = doc.line_of((j,)) if doc else None
            at = location(path, line, f"[{j}]")
            if not isinstance(msg, dict) or set(msg) - {"role", "content"} or "content" not in msg:
                raise InputError(f"{at}: each message needs exactly `role` and `content`")
            role = msg.get("role", "user")
            if role not in ("system", "user", "assistant"):
                raise InputError(
                    f"{at}: unknown role {role!r}", hint="use system, user or assistant"
                )
            if not isinstance(msg["content"], str):
                raise InputError(f"{at}: content must be text")
            tpl = self.env.from_string(msg["content"], at)
            parts.append((role, tpl))
            # Inline templates have no name to reread, so their variables come from the source.
            variables |= self.env.variables(tpl, msg["content"])
        return parts, variables

    # --- tests ---

    def tests(self, suite: Suite, doc: YamlDoc) -> list[TestDef]:
        base_vars = {**self.vars(suite.vars, "vars", doc)}
        default_checks: list[CheckDef] = []
        if suite.defaultTest is not None:
            base_vars.update(self.vars(suite.defaultTest.vars, "defaultTest.vars", doc))
            for j, a in enumerate(suite.defaultTest.assert_):
                line = doc.line_of(("defaultTest", "assert", j))
                default_checks.append(self.check(a, self.where(line, f"defaultTest.assert[{j}]")))
        entries: list[tuple[Any, tuple[int | str, ...]]]
        if isinstance(suite.tests, str):
            entries = [(suite.tests, ("tests",))]
        else:
            entries = [(t, ("tests", i)) for i, t in enumerate(suite.tests)]
        raw: list[TestDef] = []
        for entry, loc in entries:
            line = doc.line_of(loc)
            where = self.where(line, _field_path(loc))
            if isinstance(entry, str):
                if not entry.startswith("file://"):
                    raise InputError(
                        f"{where}: a test entry that is text must be file://path",
                        hint="or write a mapping with vars: and assert:",
                    )
                for path in self.file_ref(entry, where):
                    raw += self.tests_file(path)
            elif isinstance(entry, dict):
                try:
                    spec = TestSpec.model_validate(entry)
                except ValidationError as exc:
                    raise validation_error(exc, doc, self.path, loc) from None
                checks = [
                    self.check(
                        a,
                        self.where(
                            doc.line_of((*loc, "assert", j)), f"{_field_path(loc)}.assert[{j}]"
                        ),
                    )
                    for j, a in enumerate(spec.assert_)
                ]
                raw.append(
                    TestDef(
                        0,
                        spec.description,
                        self.vars(spec.vars, _field_path(loc) + ".vars", doc, loc),
                        checks,
                        where,
                    )
                )
            else:
                raise InputError(f"{where}: a test must be a mapping or file://path")
        if not raw and not isinstance(suite.tests, str) and not suite.tests:
            # promptfoo runs each prompt once when there are no tests.
            raw.append(TestDef(0, None, {}, [], self.where(doc.line_of(()), None)))
        for i, t in enumerate(raw):
            t.index = i
            t.vars = {**base_vars, **t.vars}
            t.checks = default_checks + t.checks
        return raw

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
                (path,) = self.file_ref(value, where)[:1]
                text = read_text(path, "variable file")
                self.record(path, text)
                if path.suffix.lower() == ".json":
                    try:
                        value = json.loads(text)
                    except json.JSONDecodeError as exc:
                        raise InputError(
                            f"{location(path, exc.lineno)}: invalid JSON: {exc.msg}"
                        ) from None
                elif path.suffix.lower() in (".yaml", ".yml"):
                    value = load_yaml(path, text).data
                else:
                    value = text
            out[key] = value
        return out

    def check(self, spec: AssertSpec, where: str) -> CheckDef:
        assertions.check_type(spec.type, where)
        return CheckDef(spec.type, spec.value, spec.threshold, where)

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
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(f"{location(path, n)}: invalid JSON: {exc.msg}") from None
                out.append(self._test_obj(data, path, n, None))
            return out
        if suffix in (".yaml", ".yml", ".json"):
            if suffix == ".json":
                try:
                    data = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise InputError(
                        f"{location(path, exc.lineno)}: invalid JSON: {exc.msg}"
                    ) from None
                doc = None
            else:
                doc = load_yaml(path, text, what="test file")
                data = doc.data
            if data is None:
                raise InputError(f"{path}: test file is empty", hint="add a list of tests")
            if not isinstance(data, list):
                raise InputError(f"{path}: a test file must hold a list of tests")
            return [
                self._test_obj(d, path, doc.line_of((i,)) if doc else None, doc, i)
                for i, d in enumerate(data)
            ]
        raise InputError(
            f"{path}: unsupported test file type '{suffix}'",
            hint="use .csv, .jsonl, .yaml or .json",
        )

    def _test_obj(
        self, data: Any, path: Path, line: int | None, doc: YamlDoc | None, index: int | None = None
    ) -> TestDef:
        where = location(path, line)
        if not isinstance(data, dict):
            raise InputError(f"{where}: a test must be a mapping with vars: and assert:")
        try:
            spec = TestSpec.model_validate(data)
        except ValidationError as exc:
            prefix: tuple[int | str, ...] = (
                (index,) if index is not None and doc is not None else ()
            )
            raise validation_error(exc, doc, path, prefix, line) from None
        checks = [self.check(a, f"{where}: assert[{j}]") for j, a in enumerate(spec.assert_)]
        return TestDef(0, spec.description, spec.vars, checks, where)

    def _csv(self, path: Path, text: str) -> list[TestDef]:
        reader = csv.DictReader(io.StringIO(text))
        columns = reader.fieldnames or []
        if not columns:
            raise InputError(
                f"{path}: CSV has no header row", hint="the first row names the variables"
            )
        for col in columns:
            if col.startswith("__") and not re.fullmatch(r"__expected\d*|__description", col):
                known = ["__expected", "__description"]
                close = difflib.get_close_matches(col, known, n=1)
                hint = (
                    f"did you mean '{close[0]}'?"
                    if close
                    else "promptlab reads __expected, __expectedN and __description"
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
                raise InputError(f"{where}: row has more cells than the header has columns")
            checks = []
            for col in columns:
                if col.startswith("__expected") and row.get(col):
                    checks.append(self._expected(row[col], f"{where}: {col}"))
            tdef = TestDef(
                0,
                row.get("__description") or None,
                {c: row[c] or "" for c in var_cols},
                checks,
                where,
                csv_columns=var_cols,
            )
            out.append(tdef)
        if not out:
            raise InputError(f"{path}: CSV has a header but no test rows")
        return out

    def _expected(self, text: str, where: str) -> CheckDef:
        m = re.fullmatch(r"\s*([a-z][a-z0-9-]*)\s*(?::\s*(.*))?", text, re.S)
        if m:
            name, value = m.group(1), m.group(2)
            base = name.removeprefix("not-")
            if value is not None and (
                name in assertions.ALL_TYPES or base in assertions.PROMPTFOO_ONLY
            ):
                assertions.check_type(name, where)
                if base == "latency":
                    try:
                        return CheckDef(name, None, float(value), where)
                    except ValueError:
                        raise InputError(
                            f"{where}: latency needs a number of milliseconds"
                        ) from None
                return CheckDef(name, value, None, where)
            if value is None and base == "is-json":
                return CheckDef(name, None, None, where)
        return CheckDef("equals", text, None, where)

    # --- models ---

    def models(self, suite: Suite, doc: YamlDoc) -> list[ModelDef]:
        specs = suite.models if suite.models else [ModelSpec(path=DEFAULT_MODEL)]
        out: list[ModelDef] = []
        for i, spec in enumerate(specs):
            where = (
                self.where(doc.line_of(("models", i)), f"models[{i}]")
                if suite.models
                else self.where(None, "models (default)")
            )
            label = spec.label or (
                spec.path
                if "/" not in spec.path and not spec.path.endswith(".gguf")
                else Path(spec.path).stem
            )
            out.append(ModelDef(label, spec, where))
        labels = [m.label for m in out]
        for lab in labels:
            if labels.count(lab) > 1:
                raise InputError(
                    f"{self.path}: two models are labelled '{lab}'",
                    hint="give each a distinct label:",
                )
        return out


def _inline_label(source: str) -> str:
    line = " ".join(source.split())
    return line if len(line) <= 40 else line[:39] + "…"


def load_suite(path: Path, model_override: str | None = None) -> LoadedSuite:
    """Read and check a suite file. Raises InputError with file:line on any problem."""
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
    try:
        suite = Suite.model_validate(doc.data)
    except ValidationError as exc:
        raise validation_error(exc, doc, path) from None
    loader = _Loader(path)
    loader.record(path, text)
    notes = []
    if suite.providers is not None:
        notes.append(
            f"{location(path, doc.line_of(('providers',)))}: providers: is ignored; promptlab runs the local model(s) below (--model picks another)"
        )
    prompts = [loader.prompt(i, p, doc) for i, p in enumerate(suite.prompts)]
    labels = [p.label for p in prompts]
    for p in prompts:
        if labels.count(p.label) > 1:
            raise InputError(
                f"{p.where}: two prompts are labelled '{p.label}'",
                hint="give each a distinct label:",
            )
    tests = loader.tests(suite, doc)
    models = loader.models(suite, doc)
    if model_override:
        chosen = [m for m in models if m.label == model_override]
        models = chosen or [
            ModelDef(_override_label(model_override), ModelSpec(path=model_override), "--model")
        ]
    for m in models:
        if suite.params.max_tokens >= m.spec.n_ctx:
            raise InputError(
                f"{location(path, doc.line_of(('params', 'max_tokens')))}: params.max_tokens "
                f"({suite.params.max_tokens}) must be smaller than n_ctx ({m.spec.n_ctx}) of "
                f"model '{m.label}'",
                hint="lower max_tokens or raise n_ctx",
            )
    return LoadedSuite(
        path=path,
        root=loader.root,
        sha256=sha256_text(text),
        description=suite.description,
        prompts=prompts,
        tests=tests,
        models=models,
        params=suite.params,
        env=loader.env,
        notes=notes + loader.notes,
        files=loader.files,
    )


def _override_label(spec: str) -> str:
    return spec if "/" not in spec and not spec.endswith(".gguf") else Path(spec).stem
