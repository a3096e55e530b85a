"""Running the user's own Python: `python` checks and Python transforms.

Code runs only with explicit consent (`--allow-code` or `allow_code: true` in the suite), because
a suite file should never be able to run code just by being validated or rendered. Files must live
inside the project. Functions are loaded once per file and called in-process.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptlab.errors import InputError

DEFAULT_FUNCTION = "get_assert"  # promptfoo's name for a file without :function
_MODULES: dict[Path, Any] = {}


@dataclass(frozen=True)
class CodeRef:
    """A callable from the user's project, or inline code, ready to call."""

    label: str  # "checks.py:is_polite" or "inline"
    func: Callable[..., Any]


def require_consent(allowed: bool, where: str, what: str) -> None:
    if not allowed:
        raise InputError(
            f"{where}: {what} runs Python code from your project",
            hint="pass --allow-code to `promptlab run`, or set allow_code: true in the suite",
        )


def _load_module(path: Path, where: str) -> Any:
    resolved = path.resolve()
    if resolved in _MODULES:
        return _MODULES[resolved]
    name = f"promptlab_user_{abs(hash(resolved)):x}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise InputError(f"{where}: cannot load {path} as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise InputError(f"{path}:{exc.lineno}: Python syntax error: {exc.msg}") from None
    except Exception as exc:  # the user's module failed at import time
        raise InputError(f"{where}: importing {path} failed: {type(exc).__name__}: {exc}") from None
    _MODULES[resolved] = module
    return module


def load_file_ref(ref: str, base: Path, root: Path, where: str) -> CodeRef:
    """`file://checks.py:function` (or `file://checks.py`, meaning get_assert) → a callable."""
    spec = ref.removeprefix("file://")
    file_part, _, func_name = spec.partition(":")
    if file_part.endswith((".js", ".ts")):
        raise InputError(
            f"{where}: JavaScript files are not supported",
            hint="port it to Python: file://checks.py:function",
        )
    path = Path(file_part).expanduser()
    if not path.is_absolute():
        path = base / path
    if not path.is_file():
        raise InputError(
            f"{where}: Python file {file_part} not found (looked at {path})",
            hint="check the path; it is relative to the suite file",
        )
    if not path.resolve().is_relative_to(root):
        raise InputError(
            f"{where}: {file_part} is outside the project {root}",
            hint="keep code inside the project",
        )
    func_name = func_name or DEFAULT_FUNCTION
    module = _load_module(path, where)
    func = getattr(module, func_name, None)
    if not callable(func):
        raise InputError(
            f"{where}: {file_part} has no function {func_name}()",
            hint="define it, or name another after the colon: file://x.py:my_check",
        )
    return CodeRef(f"{path.name}:{func_name}", func)


def compile_inline(code: str, where: str) -> CodeRef:
    """promptfoo-style inline Python: one expression, or a function body that returns a value.

    `output` and `context` are in scope.
    """
    source = code.strip()
    try:
        expr = compile(source, "<inline python>", "eval")
    except SyntaxError:
        expr = None
    if expr is not None:
        compiled = expr

        def run_expr(output: str, context: dict[str, Any]) -> Any:
            return eval(compiled, {"output": output, "context": context})

        return CodeRef("inline", run_expr)
    body = "def __check(output, context):\n" + textwrap.indent(source, "    ")
    namespace: dict[str, Any] = {}
    try:
        exec(compile(body, "<inline python>", "exec"), namespace)
    except SyntaxError as exc:
        raise InputError(
            f"{where}: inline Python syntax error (line {(exc.lineno or 2) - 1}): {exc.msg}"
        ) from None
    return CodeRef("inline", namespace["__check"])
