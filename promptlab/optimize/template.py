"""The winner as a plain Jinja file: the original template with the chosen values set on top.

`{% set demos = [...] %}` at a template's top level shadows the variable the tests give, so
the file renders, for every test, exactly the text the winning candidate rendered (checked
after writing: a file that would not is an internal error, never a silent difference).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import jinja2

from promptlab import files
from promptlab.engine.store import atomic_write, slug
from promptlab.errors import InputError
from promptlab.optimize.space import Candidate
from promptlab.suite import LoadedSuite, PromptDef, TestDef
from promptlab.templates import TemplateEnv, sha256_text
from promptlab.yamlio import load_yaml

_PROMPT_INDEX = re.compile(r"prompts\[(\d+)\]")


def jinja_literal(value: Any) -> str:
    """`value` as a Jinja expression that evaluates to an equal value.

    A JSON string (ensure_ascii off) is a valid Jinja string literal: the lexer reads its
    backslash escapes as Python's unicode-escape, which agrees with JSON's for every escape
    json.dumps writes (\\" \\\\ \\n \\r \\t \\b \\f \\u00XX)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} has no Jinja literal")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(jinja_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"{jinja_literal(str(k))}: {jinja_literal(v)}" for k, v in value.items())
            + "}"
        )
    return jinja_literal(json.loads(json.dumps(value, default=str)))


def original_source(suite: LoadedSuite, prompt: PromptDef) -> tuple[str, Path]:
    """(the template's text as the model's renderer compiled it, where the optimized copy
    goes). InputError when the prompt is not one whole template (a CSV row, a --- chunk)."""
    if prompt.source != "inline":
        path = suite.root / prompt.source
        # Through the one door, as the loader read it (confined again: it may have been swapped
        # for a link since), so the digest compares like with like.
        whole = files.read_confined(path, suite.root, what="template", where=prompt.where)
        # A .txt prompt is trimmed, as the loader compiles it (promptfoo trims them too).
        text = whole.strip() if path.suffix.lower() == ".txt" else whole
        if sha256_text(whole) != prompt.sha256 and sha256_text(text) != prompt.sha256:
            raise InputError(
                f"{prompt.where}: prompt '{prompt.label}' is one of several in {prompt.source}; "
                "optimize writes a copy of a single template",
                hint="move it into a .j2 file of its own",
            )
        stem = path.name.split(".")[0]
        return text, path.with_name(f"{stem}.optimized.j2")
    match = _PROMPT_INDEX.search(prompt.where)
    doc = suite.optimize.doc if suite.optimize is not None else load_yaml(suite.path)
    entries = doc.data.get("prompts") if isinstance(doc.data, dict) else None
    found: Any = None
    if match is not None and isinstance(entries, list) and int(match.group(1)) < len(entries):
        entry = entries[int(match.group(1))]
        found = entry.get("raw", entry.get("id")) if isinstance(entry, dict) else entry
    if not isinstance(found, str) or sha256_text(found) != prompt.sha256:
        raise InputError(
            f"{prompt.where}: cannot find the text of prompt '{prompt.label}' to write its "
            "optimized copy",
            hint="put the prompt in a .j2 file (prompts: [file://prompts/x.j2])",
        )
    name = slug(prompt.label) or "prompt"
    return found, suite.root / "prompts" / f"{name}.optimized.j2"


def _comment(text: str) -> str:
    return text.replace("#}", "# }")


def optimized_text(
    source: str, cand: Candidate, *, suite_name: str, seed: int, baseline: str
) -> str:
    """The original template with the candidate's variables set at its top."""
    lines = [
        f"promptlab optimize: the winner for prompt '{baseline}' of {suite_name} (seed {seed}, "
        f"candidate {cand.label}): {cand.text}.",
    ]
    if cand.demos:
        lines.append("Demos from: " + "; ".join(d.ref for d in cand.demos) + ".")
    if cand.params:
        shown = ", ".join(
            f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in cand.params.items()
        )
        lines.append(f"It was chosen with these generation settings: {shown}; set them in params:.")
    pieces = ["{# " + _comment("\n   ".join(lines)) + " #}"]
    for name, value in cand.vars.items():
        pieces.append(f"{{% set {name} = {jinja_literal(value)} %}}")
    # Each tag ends in -%}/-#} to swallow its newline, except where the original itself starts
    # with whitespace, which that would swallow too: then the last tag runs straight into it.
    head = [p[:-2] + "-" + p[-2:] + "\n" for p in pieces[:-1]]
    last = pieces[-1]
    if source[:1].isspace():
        head.append(last)
    else:
        head.append(last[:-2] + "-" + last[-2:] + "\n")
    return "".join(head) + source


def render_check(
    suite: LoadedSuite,
    prompt: PromptDef,
    cand: Candidate,
    path: Path,
    tests: list[TestDef],
) -> str | None:
    """None when the file at `path` renders, for every test, what `cand` rendered; else the
    first difference, described."""
    env = TemplateEnv(suite.root)
    # Compiled under the original's name, wherever the file lies (the run folder may be
    # outside the project): its includes resolve as they will beside the original.
    name = prompt.source if prompt.source != "inline" else None
    try:
        code = env.env.compile(files.read_text(path, "optimized template"), name, name)
    except jinja2.TemplateSyntaxError as exc:
        return f"{path}:{exc.lineno}: {exc.message}"
    written = env.env.template_class.from_code(env.env, code, env.env.make_globals(None))
    original = prompt.parts[0][1]
    for t in tests:
        where = f"{path} for {t.name}"
        want = suite.env.render(original, {**t.vars, **cand.vars}, where)
        got = env.render(written, t.vars, where)
        if got != want:
            return f"{t.name}: renders {got[:80]!r}…, the candidate {want[:80]!r}…"
    return None


def write_optimized(
    suite: LoadedSuite,
    prompt: PromptDef,
    cand: Candidate,
    target: Path,
    *,
    seed: int,
    tests: list[TestDef],
) -> Path:
    """Write the winner to `target` (never the original) and prove it renders the same."""
    source, _default_target = original_source(suite, prompt)
    if prompt.source != "inline" and target.resolve() == (suite.root / prompt.source).resolve():
        raise RuntimeError("refusing to overwrite the original template")
    text = optimized_text(
        source, cand, suite_name=suite.path.name, seed=seed, baseline=prompt.label
    )
    atomic_write(target, text)
    problem = render_check(suite, prompt, cand, target, tests)
    if problem is not None:
        raise RuntimeError(f"{target} does not render as the winning candidate: {problem}")
    return target
