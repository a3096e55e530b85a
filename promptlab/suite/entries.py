"""One test entry: its vars (file:// values, promptfoo's expansion of list-valued vars), its
checks and its options.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import jinja2
import jinja2.meta

from promptlab.errors import InputError, Unsupported
from promptlab.files import read_text, resolve_ref
from promptlab.models import BUNDLED
from promptlab.models import sources as model_sources
from promptlab.suite import providers as pf_providers
from promptlab.suite.loaded import CheckDef, TestDef
from promptlab.suite.problems import LoaderBase, _rel
from promptlab.suite.promptfoo import (
    _TYPE_ALIASES,
    _check_type,
    _checked_transform,
    _flags,
    _js_transform,
    _refuse_js_transform,
)
from promptlab.suite.schema import AssertSpec, DefaultTestSpec, TestSpec
from promptlab.yamlio import YamlDoc, dotted


class _FromFile(list):  # type: ignore[type-arg]
    """A list read from a `file://` var: one value, never expanded into several tests (as in
    promptfoo, which loads var files after expanding)."""


@dataclass(frozen=True)
class _Alternatives:
    """A `file://` glob var matching several files: one test per file, as promptfoo does."""

    options: tuple[tuple[str, Any], ...]  # (project-relative path, file value)


_CODE_REF = re.compile(r"\.(py|js|cjs|mjs|ts)(:[\w.]+)?$")
# Checks that read their own file:// value (a schema file, a Python file).
_OWN_FILE_VALUE = frozenset({"python", "is-json", "contains-json", "json-schema"})


class TestEntries(LoaderBase):
    """One test entry: its vars (file:// values, promptfoo's expansion of list values), its checks
    and its options."""

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
        # promptfoo's ollama:chat:NAME is promptlab's ollama:NAME ("chat" is not the model).
        ident = pf_providers.ollama_spec(ident)
        if not (
            ident in BUNDLED
            or model_sources.is_source(ident)
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

    def code_files(self, tests: Sequence[TestDef]) -> None:
        """Record the files of Python checks and transforms (file://x.py:fn) as the suite's
        files, so the manifest lists them and --resume and --watch see them change. Read here,
        never run: the planner imports them with consent and reports a missing or refused file
        in its own words, so a problem with one is left to it rather than reported twice."""
        refs: dict[str, str] = {}  # file part of the ref -> where it is first named
        for test in tests:
            _transform_refs(test.transform, test.where, refs)
            stack = list(test.checks)
            while stack:
                check = stack.pop()
                stack += check.children
                if check.type.removeprefix("not-") == "python":
                    _code_ref(check.value, check.where, refs)
                _transform_refs(check.extra.get("transform"), check.where, refs)
        for ref, where in refs.items():
            with contextlib.suppress(InputError):
                (path,) = resolve_ref(
                    ref,
                    base=self.base,
                    root=self.root,
                    what="Python file",
                    where=where,
                    globs=False,
                )
                self.record(path, read_text(path, "Python file"))

    def finish(self, test: TestDef, spec: TestSpec) -> TestDef:
        test.threshold = spec.threshold
        test.transform = _checked_transform(spec, test.where)
        test.options = self.options(spec, test.where)
        test.metadata = spec.metadata
        _flags(test, spec)
        return test


def _code_ref(value: Any, where: str, into: dict[str, str]) -> None:
    """A `file://x.py` or `file://x.py:function` ref (as scoring/code.py reads it) into `into`."""
    if isinstance(value, str) and value.startswith("file://"):
        file_part = value.removeprefix("file://").partition(":")[0]
        if file_part.endswith(".py"):
            into.setdefault(file_part, where)


def _transform_refs(spec: Any, where: str, into: dict[str, str]) -> None:
    for item in spec if isinstance(spec, list) else [spec]:
        _code_ref(item.strip() if isinstance(item, str) else item, where, into)  # as parse() does


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
