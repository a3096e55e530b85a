"""Output transforms applied before checks: on a test (every check sees it) or on one check.

    transform: strip                       # a built-in
    transform: [strip, lower]              # applied in order
    transform: "regex:Answer: (\\w+)"      # first capture group (or the whole match); no match → ""
    transform: file://post.py:clean        # Python (needs --allow-code), called as clean(output, context)

promptfoo's transforms are JavaScript expressions; those are refused with the names above.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptlab.consent import CodeMode
from promptlab.errors import InputError
from promptlab.scoring import code as usercode


def _json(text: str) -> str:
    try:
        return json.dumps(json.loads(text), ensure_ascii=False, sort_keys=True)
    except ValueError:
        return text


BUILTINS: dict[str, Callable[[str], str]] = {
    "strip": str.strip,
    "trim": str.strip,
    "lower": str.lower,
    "upper": str.upper,
    "first-line": lambda s: s.strip().splitlines()[0] if s.strip() else "",
    "collapse-whitespace": lambda s: " ".join(s.split()),
    "json": _json,  # canonical JSON (sorted keys) when the output parses
}


@dataclass(frozen=True)
class Step:
    name: str
    func: Callable[[str, dict[str, Any]], str]


@dataclass(frozen=True)
class Transform:
    steps: tuple[Step, ...]

    def describe(self) -> str:
        return " | ".join(s.name for s in self.steps)

    def __call__(self, text: str, context: dict[str, Any]) -> str:
        for step in self.steps:
            text = step.func(text, context)
        return text


def _regex_step(pattern: str, where: str) -> Step:
    try:
        rx = re.compile(pattern, re.S)
    except re.error as exc:
        raise InputError(f"{where}: transform regex {pattern!r} is invalid: {exc}") from None

    def extract(text: str, _ctx: dict[str, Any]) -> str:
        m = rx.search(text)
        if m is None:
            return ""
        return m.group(1) if rx.groups else m.group(0)

    return Step(f"regex:{pattern}", extract)


def parse(
    spec: Any,
    *,
    where: str,
    base: Path,
    root: Path,
    code: CodeMode,
    code_used: list[str] | None = None,
) -> Transform | None:
    """A transform spec → steps. Python steps follow `code` (see consent.py); where they are
    named is appended to `code_used`."""
    if spec is None:
        return None
    items = spec if isinstance(spec, list) else [spec]
    steps: list[Step] = []
    for item in items:
        if isinstance(item, dict) and set(item) == {"regex"}:
            steps.append(_regex_step(str(item["regex"]), where))
            continue
        if not isinstance(item, str) or not item.strip():
            raise InputError(
                f"{where}: a transform is a name, regex:PATTERN or file://x.py:fn (got {item!r})"
            )
        text = item.strip()
        if text in BUILTINS:
            steps.append(Step(text, _builtin(BUILTINS[text])))
        elif text.startswith("regex:"):
            steps.append(_regex_step(text.removeprefix("regex:"), where))
        elif text.startswith("file://"):
            if text.endswith((".js", ".ts")) or ".js:" in text or ".ts:" in text:
                raise InputError(
                    f"{where}: JavaScript transforms are not supported",
                    hint="port it to Python: file://x.py:function",
                )
            usercode.require_consent(code, where, "a Python transform")
            ref = usercode.load_file_ref(text, base, root, where, code)
            if code_used is not None:
                code_used.append(f"{where} (Python transform {ref.label})")
            steps.append(Step(ref.label, _user(ref.func, where)))
        else:
            raise InputError(
                f"{where}: unsupported transform {text!r} (promptfoo's JavaScript transforms don't run here)",
                hint=f"use {', '.join(BUILTINS)}, regex:PATTERN or file://x.py:function",
            )
    return Transform(tuple(steps))


def _builtin(func: Callable[[str], str]) -> Callable[[str, dict[str, Any]], str]:
    def step(text: str, _context: dict[str, Any]) -> str:
        return func(text)

    return step


def _user(func: Callable[..., Any], where: str) -> Callable[[str, dict[str, Any]], str]:
    def step(text: str, context: dict[str, Any]) -> str:
        result = func(text, context)
        if not isinstance(result, str):
            raise TypeError(f"transform {where} returned {type(result).__name__}, expected str")
        return result

    return step
