"""Problems while loading: pydantic errors as `file:line: field: problem` lines, and the
loader's bookkeeping (every problem found, what --skip-unsupported left out, notes, files read).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from promptlab import files
from promptlab.errors import InputError, Problems, Unsupported, location
from promptlab.files import find_project_root, read_text
from promptlab.suite.promptfoo import _dump
from promptlab.suite.schema import DefaultTestSpec, Suite
from promptlab.templates import TemplateEnv, sha256_text
from promptlab.yamlio import YamlDoc, dotted, field_path, load_json, load_yaml


def validation_error(
    exc: ValidationError,
    doc: YamlDoc | None,
    path: Path,
    prefix: tuple[int | str, ...] = (),
    line: int | None = None,
) -> InputError:
    """The first problem of `exc`, as one line (see validation_errors for all of them)."""
    return validation_errors(exc, doc, path, prefix, line)[0][1]


def validation_errors(
    exc: ValidationError,
    doc: YamlDoc | None,
    path: Path,
    prefix: tuple[int | str, ...] = (),
    line: int | None = None,
) -> list[tuple[tuple[int | str, ...], InputError]]:
    """Every problem of `exc`, each with its location in the data and its own
    `file:line: field: problem` line. promptfoo keys that promptlab does not run are
    Unsupported, which --skip-unsupported can leave out."""
    # A value that fits no member of a union fails once per member (loc parts such as `int`,
    # "literal['auto']" or a model's name): one problem per field, naming every member's rule.
    found: dict[str, tuple[tuple[int | str, ...], type[InputError], str, str, list[str]]] = {}
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in (*prefix, *err["loc"]) if not _union_member(p))
        if err["type"] in ("unknown_key", "promptfoo_refused"):
            key = err.get("ctx", {}).get("key", "")
            loc = (*loc, key)
            msg = err["msg"]
            field_name = field_path(loc[:-1])
        else:
            field_name = field_path(loc)
            msg = err["msg"]
            if err["type"] == "missing":
                msg = f"missing required key; add {loc[-1]}:"
        got = ""
        if err["type"] not in _NO_INPUT and "input" in err:
            got = f" (got {json.dumps(err['input'], default=str)[:60]})"
        at = doc.line_of(loc) if doc is not None else line
        key_path = dotted(loc)
        kind = Unsupported if err["type"] == "promptfoo_refused" else InputError
        if key_path in found:
            msgs = found[key_path][4]
            if msg not in msgs:
                msgs.append(msg)
            continue
        found[key_path] = (loc, kind, f"{location(path, at)}: {field_name}: ", got, [msg])
    return [
        (loc, kind(head + " or ".join(msgs) + got)) for loc, kind, head, got, msgs in found.values()
    ]


# Error types whose message says it all: no "(got ...)" after it.
_NO_INPUT = {"unknown_key", "promptfoo_refused", "missing", "model_type", "dict_type", "list_type"}
_UNION_TAG = re.compile(r"^(?:[a-z]+(?:-[a-z]+)*\[.*\]|int|float|str|bool|none|[A-Z]\w*)$")


def _union_member(part: int | str) -> bool:
    """Whether a pydantic error location part names a union member rather than a key."""
    return isinstance(part, str) and bool(_UNION_TAG.match(part))


def _prune(
    data: Any, locs: Sequence[tuple[int | str, ...]]
) -> tuple[Any, set[tuple[int | str, ...]]]:
    """A copy of `data` without the mapping keys that `locs` point into, and the keys removed.
    Only mapping keys are removed, never list items, so the indices (and with them the line
    numbers of the problems found next) stay those of the file."""
    data = copy.deepcopy(data)
    removed: set[tuple[int | str, ...]] = set()
    for loc in locs:
        node: Any = data
        walked: tuple[int | str, ...] = ()
        parent: Any = None
        key_loc: tuple[int | str, ...] = ()
        for part in loc:
            if isinstance(node, dict) and part in node:
                parent, key_loc = node, (*walked, part)
            elif not (isinstance(node, list) and isinstance(part, int) and part < len(node)):
                continue  # pydantic's name for a union member: not in the data
            walked = (*walked, part)
            node = node[part]
        if parent is not None and key_loc and key_loc[-1] in parent:
            del parent[key_loc[-1]]
            removed.add(key_loc)
    return data, removed


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)


_LEADING_WHERE = re.compile(r"^[^\s:]+(?::\d+)?: (?:[\w.\[\]-]+|top level)(?: \([^)]*\))?: ")
_T = TypeVar("_T")
_M = TypeVar("_M", bound=BaseModel)


class LoaderBase:
    """The loader's bookkeeping: every problem found, what --skip-unsupported left out, the notes
    and the files read. Each stage of loading (entries, sources, loader) builds on it."""

    def __init__(self, path: Path, skip_unsupported: bool = False) -> None:
        self.path = path
        # Every problem found, so one round of edits fixes them all (raised together at the end).
        self.problems: list[InputError] = []
        # --skip-unsupported: what was left out, for the notes, the summary and the manifest.
        self.skip_unsupported = skip_unsupported
        self.skipped: list[dict[str, str]] = []
        self.drop_all_tests = False  # defaultTest itself uses an unsupported feature
        self.base = path.parent
        self.root = find_project_root(path.parent)
        self.env = TemplateEnv(self.root)
        self.files: dict[str, str] = {}
        self.env.loader.on_read = self.record  # included templates count as the suite's files
        self.notes: list[str] = []
        # (what, why) -> where: a promptfoo key ignored in many tests makes one note.
        self.ignored: dict[tuple[str, str], list[str]] = {}
        # promptfoo's Nunjucks environment has these two filters built in.
        self.env.env.filters.setdefault("load", json.loads)
        self.env.env.filters.setdefault("dump", _dump)

    def where(self, line: int | None, field_name: str | None = None) -> str:
        return location(self.path, line, field_name)

    def skip(self, what: str, where: str, exc: InputError) -> None:
        # The message leads with its own `file:line: field: `; the record keeps it in `where`.
        why = _LEADING_WHERE.sub("", exc.one_line(), count=1)
        self.skipped.append({"what": what, "where": where, "why": why})

    def attempt(self, what: str, where: str, build: Callable[[], _T]) -> _T | None:
        """`build()`, or None when it fails: the problem is recorded (and the loader goes on to
        find the others), or with --skip-unsupported an unsupported feature leaves out `what`."""
        try:
            return build()
        except Problems as exc:
            self.problems += exc.problems
        except Unsupported as exc:
            if self.skip_unsupported:
                self.skip(what, where, exc)
            else:
                self.problems.append(exc)
        except InputError as exc:
            self.problems.append(exc)
        return None

    def validate(
        self,
        model: type[_M],
        data: Any,
        doc: YamlDoc | None,
        prefix: tuple[int | str, ...] = (),
        line: int | None = None,
        *,
        what: str,
        path: Path | None = None,
    ) -> _M | None:
        """`model` from `data`, recording every problem. After a problem the bad keys are left
        out and the rest validated again, to find the problems behind the first ones; the model
        returned then serves only to look for more. None when nothing valid is left, or when
        --skip-unsupported leaves out `what` (a test whose own keys are unsupported)."""
        path = path or self.path
        removed: set[tuple[int | str, ...]] = set()
        for _ in range(4):
            try:
                return model.model_validate(data)
            except ValidationError as exc:
                issues = [
                    (loc, err)
                    for loc, err in validation_errors(exc, doc, path, prefix, line)
                    # a key left out after an earlier problem is not missing
                    if not any(loc[: len(r)] == r for r in removed)
                ]
            if not issues:
                return None
            bad: list[tuple[int | str, ...]] = []
            for loc, err in issues:
                rel = loc[len(prefix) :]
                if isinstance(err, Unsupported) and self.skip_unsupported:
                    where = location(path, doc.line_of(loc) if doc else line, dotted(loc))
                    in_check = "assert" in rel
                    if model is Suite and rel[:1] == ("defaultTest",) and not in_check:
                        # defaultTest's own key (options.prefix, …) changes every test
                        self.skip("every test", where, err)
                        self.drop_all_tests = True
                    elif model is Suite or in_check:
                        # A top-level key (scenarios, extensions, …), or a check's key (which
                        # feeds a check type that is left out in turn): leave out the key.
                        self.skip(f"key '{rel[-1]}'", where, err)
                    elif model is DefaultTestSpec:
                        self.skip("every test", where, err)
                        self.drop_all_tests = True
                        return None
                    else:
                        at = doc.line_of(prefix) if doc and prefix else line
                        self.skip(what, location(path, at, dotted(prefix) or None), err)
                        return None
                else:
                    self.problems.append(err)
                bad.append(rel)
            data, gone = _prune(data, bad)
            if not gone:
                return None
            removed |= {(*prefix, *r) for r in gone}
        return None

    def ignore(self, where: str, what: str, why: str) -> None:
        self.ignored.setdefault((what, why), []).append(where)

    def ignored_notes(self) -> list[str]:
        out = []
        for (what, why), places in self.ignored.items():
            more = f" (and {len(places) - 1} more)" if len(places) > 1 else ""
            out.append(f"{places[0]}: {what} is ignored{more}; {why}")
        return out

    def file_ref(self, ref: str, where: str, what: str = "file") -> list[Path]:
        return files.resolve_ref(ref, base=self.base, root=self.root, what=what, where=where)

    def record(self, path: Path, text: str) -> None:
        self.files[_rel(path, self.root)] = sha256_text(text)

    def read_value(self, path: Path, what: str) -> Any:
        """A file's value: .json/.yaml parsed, anything else as text."""
        text = read_text(path, what)
        self.record(path, text)
        if path.suffix.lower() == ".json":
            return load_json(path, text)
        if path.suffix.lower() in (".yaml", ".yml"):
            return load_yaml(path, text).data
        return text
