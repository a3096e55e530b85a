"""Running the user's own Python: `python` checks and Python transforms.

Code runs only in `promptlab run`, and only with the person's consent (see consent.py); a suite
cannot allow itself. `validate` and `render` read and parse the code (syntax, the function's
name) without executing a line of it. Files are read through `files.confine`, so they must live
inside the project. Functions are loaded once per file and called in-process.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import sys
import textwrap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptlab import files
from promptlab.consent import HOW, CodeMode, ConsentError
from promptlab.errors import InputError
from promptlab.scoring.checks import Check, CheckContext, PrepareEnv, Verdict, _bool

DEFAULT_FUNCTION = "get_assert"  # promptfoo's name for a file without :function
# Each file is imported once per version of its text: many checks share one module, and a
# process that plans again (run --watch) runs the file as it is now, not as it was.
_MODULES: dict[tuple[Path, str], Any] = {}


@dataclass(frozen=True)
class CodeRef:
    """A callable from the user's project, or inline code, ready to call (in CodeMode.RUN)."""

    label: str  # "checks.py:is_polite" or "inline"
    func: Callable[..., Any]


def require_consent(mode: CodeMode, where: str, what: str) -> None:
    if mode is CodeMode.REFUSE:
        raise ConsentError(f"{where}: {what} runs Python code from your project", hint=HOW)


def _not_loaded(*_args: Any) -> Any:
    # validate and render prepare checks without executing user code; nothing evaluates them.
    raise RuntimeError("user code is not loaded outside `promptlab run`")


class UserCodeExit(RuntimeError):
    """User code called sys.exit() (or raised another BaseException) while promptlab ran it."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {exc}"


def _guarded(func: Callable[..., Any]) -> Callable[..., Any]:
    """`func`, with sys.exit() turned into an ordinary error: a check or transform that exits
    fails that check (as any exception does), instead of ending promptlab with its own code."""

    @functools.wraps(func)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (Exception, KeyboardInterrupt):
            raise
        except BaseException as exc:  # SystemExit and the like
            raise UserCodeExit(_describe(exc)) from None

    return call


def _module_names(body: Iterable[ast.stmt]) -> set[str]:
    """Names a module binds at top level (also inside top-level if/try/with blocks)."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for block in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, block, []):
                    inner = child.body if isinstance(child, ast.ExceptHandler) else [child]
                    names |= _module_names(inner)
    return names


def _load_module(path: Path, source: str, where: str) -> Any:
    resolved = path.resolve()
    key = (resolved, hashlib.sha256(source.encode()).hexdigest())
    if key in _MODULES:
        return _MODULES[key]
    name = f"promptlab_user_{abs(hash(key)):x}"
    spec = importlib.util.spec_from_loader(name, loader=None, origin=str(resolved))
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__file__ = str(resolved)
    sys.modules[name] = module
    try:
        # The source promptlab read through files.confine is what runs, not a second read.
        exec(compile(source, str(resolved), "exec"), module.__dict__)
    except SyntaxError as exc:
        raise InputError(f"{path}:{exc.lineno}: Python syntax error: {exc.msg}") from None
    except KeyboardInterrupt:
        raise  # Ctrl-C while importing is the person's, and exits 130
    except BaseException as exc:  # sys.exit() too: the exit code is promptlab's
        sys.modules.pop(name, None)
        raise InputError(
            f"{where}: importing {path} failed: {_describe(exc)}",
            hint="fix the module so that importing it runs without error",
        ) from None
    _MODULES[key] = module
    return module


def load_file_ref(
    ref: str, base: Path, root: Path, where: str, mode: CodeMode = CodeMode.CHECK
) -> CodeRef:
    """`file://checks.py:function` (or `file://checks.py`, meaning get_assert) → a callable."""
    spec = ref.removeprefix("file://")
    file_part, _, func_name = spec.partition(":")
    if file_part.endswith((".js", ".ts")):
        raise InputError(
            f"{where}: JavaScript files are not supported",
            hint="port it to Python: file://checks.py:function",
        )
    require_consent(mode, where, f"file://{file_part}")
    (path,) = files.resolve_ref(
        file_part, base=base, root=root, what="Python file", where=where, globs=False
    )
    source = files.read_text(path, "Python file")
    func_name = func_name or DEFAULT_FUNCTION
    missing = InputError(
        f"{where}: {file_part} has no function {func_name}()",
        hint="define it, or name another after the colon: file://x.py:my_check",
    )
    label = f"{path.name}:{func_name}"
    if mode is CodeMode.CHECK:
        try:
            tree = ast.parse(source, str(path))
        except SyntaxError as exc:
            raise InputError(f"{path}:{exc.lineno}: Python syntax error: {exc.msg}") from None
        if func_name not in _module_names(tree.body):
            raise missing
        return CodeRef(label, _not_loaded)
    module = _load_module(path, source, where)
    func = getattr(module, func_name, None)
    if not callable(func):
        raise missing
    return CodeRef(label, _guarded(func))


def compile_inline(code: str, where: str, mode: CodeMode = CodeMode.CHECK) -> CodeRef:
    """promptfoo-style inline Python: one expression, or a function body that returns a value.

    `output` and `context` are in scope.
    """
    require_consent(mode, where, "inline Python")
    source = code.strip()
    try:
        expr = compile(source, "<inline python>", "eval")
    except SyntaxError:
        expr = None
    if expr is not None:
        if mode is CodeMode.CHECK:
            return CodeRef("inline", _not_loaded)
        compiled = expr

        def run_expr(output: str, context: dict[str, Any]) -> Any:
            return eval(compiled, {"output": output, "context": context})

        return CodeRef("inline", _guarded(run_expr))
    body = "def __check(output, context):\n" + textwrap.indent(source, "    ")
    try:
        compiled_body = compile(body, "<inline python>", "exec")
    except SyntaxError as exc:
        raise InputError(
            f"{where}: inline Python syntax error (line {(exc.lineno or 2) - 1}): {exc.msg}"
        ) from None
    if mode is CodeMode.CHECK:
        return CodeRef("inline", _not_loaded)
    namespace: dict[str, Any] = {}
    exec(compiled_body, namespace)  # defines __check; the user's body runs only when called
    return CodeRef("inline", _guarded(namespace["__check"]))


def _prep_python(
    type_: str,
    value: Any,
    threshold: float | None,
    where: str,
    opts: dict[str, Any],
    env: PrepareEnv,
) -> tuple[Any, float | None]:
    require_consent(env.code, where, "a python check")
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: 'python' needs code or file://checks.py:function as value")
    if value.startswith("file://"):
        opts["code"] = load_file_ref(value, env.base, env.root, where, env.code)
    else:
        opts["code"] = compile_inline(value, where, env.code)
    env.code_used.append(f"{where} (python check {opts['code'].label})")
    return value, threshold


def _python(check: Check, ctx: CheckContext) -> Verdict:
    code: CodeRef = check.options["code"]
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
