"""The promptfoo dialect: what promptlab translates, ignores with a note, or refuses.

promptfoo's type aliases and CSV columns, its JavaScript one-liner transforms, `$ref` into
assertionTemplates, and the top-level keys that have no effect on a local run. Its providers
are suite/providers.py's.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from promptlab import scoring
from promptlab.errors import InputError, Unsupported, location
from promptlab.scoring import transforms
from promptlab.suite.loaded import TestDef
from promptlab.suite.schema import DefaultTestSpec, Suite, TestSpec
from promptlab.yamlio import YamlDoc, dotted

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


# promptfoo type names that are other names for a type promptlab knows.
_TYPE_ALIASES = {"similar:cosine": "similar", "model-graded-factuality": "factuality"}


# promptfoo CSV columns that would change the prompt or skip the model.
_CSV_REFUSED = {
    "__prefix": "it changes the prompt; put the text in the prompt template",
    "__suffix": "it changes the prompt; put the text in the prompt template",
    "__providerOutput": "promptlab always runs the local model",
    "__provider_output": "promptlab always runs the local model",
}
_CSV_SPECIAL = re.compile(
    r"__expected\d*|__description|__metric|__threshold|__metadata:.+|__config:__expected\d*:threshold"
)


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
    """scoring.check_type, with promptfoo's types that promptlab lacks (cost, javascript, …)
    marked Unsupported, which --skip-unsupported may leave out."""
    try:
        scoring.check_type(name, where)
    except InputError as exc:
        if name.removeprefix("not-") in scoring.PROMPTFOO_ONLY:
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


def _dump(value: Any, indent: int | None = None) -> str:
    """Nunjucks' dump filter (JSON.stringify): unlike Jinja's tojson, nothing is HTML-escaped."""
    return json.dumps(value, indent=indent, ensure_ascii=False, default=str)


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
