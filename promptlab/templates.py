"""The one Jinja environment for user templates: sandboxed, StrictUndefined, project-confined.

Chat roles in a Jinja file are written as blocks:

    {% system %}You are terse.{% endsystem %}
    {% user %}Q: {{ question }}{% enduser %}
    {% assistant %}A: Paris{% endassistant %}
    {% user %}Q: {{ next }}{% enduser %}

A template without role blocks is plain text: a single user message for chat models, or the raw
completion prompt for base models. Role blocks render to private-use sentinels that `split_roles`
turns back into messages, so roles survive includes, macros and loops.
"""

from __future__ import annotations

import hashlib
import posixpath
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes
from jinja2.exceptions import SecurityError
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

from promptlab import files
from promptlab.errors import InputError, location
from promptlab.yamlio import SURROGATE, surrogate_error

ROLES = ("system", "user", "assistant")
_OPEN = "\ue000"  # private-use code points: never produced by real text or tokenizers' output
_CLOSE = "\ue001"


@dataclass(frozen=True)
class Message:
    role: str
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


class OutsideProjectError(jinja2.TemplateError):
    pass


class RoleExtension(Extension):
    tags = set(ROLES)  # noqa: RUF012 - jinja's Extension declares it as a plain attribute

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        token = next(parser.stream)
        role = token.value
        body = parser.parse_statements((f"name:end{role}",), drop_needle=True)
        call = self.call_method("_wrap", [jinja2.nodes.Const(role)])
        return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(token.lineno)

    @staticmethod
    def _wrap(role: str, caller: Any) -> str:
        return f"{_OPEN}{role}{_OPEN}{caller()}{_CLOSE}"


class ProjectLoader(jinja2.BaseLoader):
    """Loads templates by project-relative POSIX name, through `files.confine`: includes and
    imports reach only regular files inside the project, symlinks followed."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        # Told of every file read (the suite loader records included templates with it, so the
        # manifest, --resume and --watch know every file a prompt depends on).
        self.on_read: Callable[[Path, str], None] | None = None

    def path_for(self, name: str) -> Path:
        if name.startswith("/"):
            raise OutsideProjectError(
                f"template '{name}' is outside the project {self.root}; move it inside the "
                "project and name it from the project root (or with ./ ../ from the includer)"
            )
        return self.root / name

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Any]:
        try:
            path = files.confine(
                self.path_for(template),
                self.root,
                what="template",
                where="included template",
                shown=f"'{template}'",
            )
        except files.FileRefused as exc:
            if exc.reason == "missing":
                raise jinja2.TemplateNotFound(template) from None
            raise OutsideProjectError(exc.one_line()) from None
        text = files.read_text(path, "template")
        if self.on_read is not None:
            self.on_read(path, text)
        mtime = path.stat().st_mtime_ns
        return text, str(path), lambda: path.is_file() and path.stat().st_mtime_ns == mtime


# The sandbox bounds range() but not `'a' * 10**11` or `9 ** 9 ** 9`, which would take the
# machine's memory or minutes before any error: such results are refused up front.
MAX_RENDERED = 1 << 26  # items of a repeated string or list: the size of the largest input file


class _Env(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                sized = isinstance(seq, (str, list, tuple)) and isinstance(times, int)
                if sized and len(seq) * times > MAX_RENDERED:
                    raise SecurityError(f"* makes a value past {MAX_RENDERED} items")
        elif operator == "**":
            huge = isinstance(left, int) and isinstance(right, int) and abs(left) > 1
            if huge and right > 4096:
                raise SecurityError(f"{left} ** {right} is too large a number")
        return super().call_binop(context, operator, left, right)

    def join_path(self, template: str, parent: str) -> str:
        # `./x` and `../x` resolve against the including template; other names against the root.
        if template.startswith(("./", "../")):
            return posixpath.normpath(posixpath.join(posixpath.dirname(parent), template))
        return template


def _template_line(exc: BaseException, filename: str | None) -> int | None:
    """Jinja rewrites tracebacks so template frames carry the template's own file and line."""
    line = getattr(exc, "lineno", None)
    tb: types.TracebackType | None = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if (filename and code.co_filename == filename) or code.co_name in (
            "top-level template code",
        ):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


class TemplateEnv:
    """The project's single Jinja environment."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.loader = ProjectLoader(self.root)
        self.env = _Env(
            loader=self.loader,
            undefined=jinja2.StrictUndefined,
            extensions=[RoleExtension, "jinja2.ext.loopcontrols"],
            autoescape=False,  # prompts are text, not HTML; the HTML report escapes on its own
            keep_trailing_newline=True,  # the text as written: base models and `choice` see it
        )
        self._inline: dict[str, jinja2.Template] = {}

    def load_file(self, path: Path, where: str, *, trim: bool = False) -> jinja2.Template:
        """A template file by its project path. `trim` drops the whitespace around the whole
        text before compiling it, as promptfoo does for .txt prompt files; otherwise the text
        is kept exactly as written, trailing newline included."""
        real = files.confine(path, self.root, what="template file", where=where, shown=str(path))
        name = real.relative_to(self.root).as_posix()
        try:
            if trim:
                source, filename, _ = self.loader.get_source(self.env, name)
                code = self.env.compile(source.strip(), name, filename)
                return self.env.template_class.from_code(
                    self.env, code, self.env.make_globals(None)
                )
            return self.env.get_template(name)
        except jinja2.TemplateSyntaxError as exc:
            raise self._syntax_error(exc, path) from None
        except RecursionError:
            raise InputError(f"{path}: template nested too deeply", hint="simplify it") from None
        except OutsideProjectError as exc:
            raise InputError(f"{path}: {exc.message}") from None
        except jinja2.TemplateNotFound as exc:
            raise InputError(f"{path}: included template '{exc.name}' not found") from None

    def from_string(self, source: str, where: str) -> jinja2.Template:
        cached = self._inline.get(source)
        if cached is not None:
            return cached
        try:
            template = self.env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            line = exc.lineno
            raise InputError(
                f"{where}: Jinja syntax error in inline template (line {line} of it): "
                f"{exc.message}",
                hint="fix the template syntax",
            ) from None
        except RecursionError:
            raise InputError(f"{where}: template nested too deeply", hint="simplify it") from None
        self._inline[source] = template
        return template

    def _syntax_error(self, exc: jinja2.TemplateSyntaxError, path: Path) -> InputError:
        file = exc.filename or str(path)
        return InputError(
            f"{location(file, exc.lineno)}: Jinja syntax error: {exc.message}",
            hint="fix the template syntax",
        )

    def variables(self, template: jinja2.Template, source: str | None = None) -> set[str]:
        """Variables a template reads, following includes and imports inside the project."""
        found: set[str] = set()
        self._collect(template.name, source, found, set())
        return found

    def _collect(
        self, name: str | None, source: str | None, found: set[str], seen: set[str]
    ) -> None:
        if source is None:
            if name is None or name in seen:
                return
            seen.add(name)
            try:
                source = self.loader.get_source(self.env, name)[0]
            except (jinja2.TemplateError, InputError):
                return  # reported when the template renders
        ast = self.env.parse(source)
        found |= jinja2.meta.find_undeclared_variables(ast)
        for ref in jinja2.meta.find_referenced_templates(ast):
            if ref is not None:
                child = self.env.join_path(ref, name) if name else ref
                self._collect(child, None, found, seen)

    def render(self, template: jinja2.Template, variables: Mapping[str, Any], where: str) -> str:
        try:
            text = template.render(variables)
            if SURROGATE.search(text):  # e.g. from '\udc80' in the template: not writable as UTF-8
                raise surrogate_error(f"{where}: {_shown(template)}", text)
            return text
        except jinja2.UndefinedError as exc:
            line = _template_line(exc, template.filename)
            at = location(_shown(template), line)
            raise InputError(
                f"{where}: {at}: {exc.message}",
                hint="define the variable in vars:, defaultTest or the test (or a CSV column)",
            ) from None
        except SecurityError as exc:
            raise InputError(
                f"{where}: {_shown(template)}: refused: {exc}",
                hint="templates may use variables, filters and tests, not Python internals",
            ) from None
        except OutsideProjectError as exc:
            line = _template_line(exc, template.filename)
            at = location(_shown(template), line)
            raise InputError(f"{where}: {at}: {exc.message}") from None
        except jinja2.TemplateNotFound as exc:
            line = _template_line(exc, template.filename)
            at = location(_shown(template), line)
            raise InputError(
                f"{where}: {at}: included template '{exc.name}' not found",
                hint="include paths are relative to the project root, or ./ ../ for siblings",
            ) from None
        except jinja2.TemplateError as exc:
            line = _template_line(exc, template.filename)
            raise InputError(f"{where}: {location(_shown(template), line)}: {exc}") from None
        except RecursionError:  # an include or macro that calls itself
            raise InputError(
                f"{where}: {_shown(template)}: recursion too deep (does it include itself?)"
            ) from None
        except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
            line = _template_line(exc, template.filename)
            raise InputError(
                f"{where}: {location(_shown(template), line)}: {type(exc).__name__}: {exc}"
            ) from None


def _shown(template: jinja2.Template) -> str:
    """How a template is named in messages: its project-relative path, or "inline template"."""
    if template.filename and template.name and not template.name.startswith("<"):
        return template.name
    return "inline template"


def split_roles(text: str, where: str) -> tuple[list[Message], bool]:
    """Turn rendered text into chat messages. Returns (messages, had_role_blocks)."""
    if _OPEN not in text:
        return [Message("user", text)], False
    messages: list[Message] = []
    pos = 0
    for start, role, body_start, end in _blocks(text, where):
        outside = text[pos:start]
        if outside.strip():
            raise InputError(
                f"{where}: text outside a role block: {outside.strip()[:40]!r}",
                hint="put it inside {% system %}, {% user %} or {% assistant %}, or drop roles",
            )
        content = text[body_start:end].strip()
        if _OPEN in content:
            raise InputError(f"{where}: role blocks cannot be nested ({role} inside another)")
        messages.append(Message(role, content))
        pos = end + 1
    if text[pos:].strip():
        raise InputError(
            f"{where}: text after the last role block: {text[pos:].strip()[:40]!r}",
            hint="put it inside a role block",
        )
    return messages, True


def _blocks(text: str, where: str) -> Iterator[tuple[int, str, int, int]]:
    pos = 0
    while (start := text.find(_OPEN, pos)) != -1:
        role_end = text.find(_OPEN, start + 1)
        role = text[start + 1 : role_end]
        depth, i = 1, role_end + 1
        while depth:
            nxt_open, nxt_close = text.find(_OPEN, i), text.find(_CLOSE, i)
            if nxt_close == -1:
                raise InputError(f"{where}: unterminated {role} block")
            if nxt_open != -1 and nxt_open < nxt_close:
                depth += 1
                i = text.find(_OPEN, nxt_open + 1) + 1
            else:
                depth -= 1
                i = nxt_close + 1
        end = i - 1
        yield start, role, role_end + 1, end
        pos = end + 1


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
