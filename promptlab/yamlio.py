"""YAML (and JSON) reading that keeps line numbers, so every error can point at `file:line`.

PyYAML's safe loader silently lets a later duplicate key win, which hides typos in suites; we
compose the node graph first, refuse duplicates there, and keep the graph to map a pydantic error
location such as ('tests', 2, 'assert', 0, 'type') back to a line.

Whatever a file holds, reading it ends in data or in one InputError, in bounded time:
- nesting deeper than MAX_DEPTH is refused while composing, before Python's recursion limit
  (every later stage walks the data recursively);
- aliases are shared nodes, so 9 levels of 9 aliases ("billion laughs") compose into a few
  dozen nodes but expand into 9^9 values for every stage that walks the data as a tree; the
  expanded size is counted on the graph (memoized, so counting is linear) and bounded by
  MAX_EXPANDED_NODES, and an alias inside its own anchor (a cycle) is refused;
- scalars that the constructor cannot turn into values (a 5,000-digit integer, 2001-13-45 as a
  date) and lone surrogates (`"\\udc80"`, text that cannot be written as UTF-8 and would fail
  only at run time) are refused with the line and field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from promptlab.errors import InputError, location
from promptlab.files import read_text

# Deeper than any real suite, JSON schema or chat file; far below the ~1,000 frames Python allows,
# since composing, validating and rendering each take a few frames per level.
MAX_DEPTH = 100
# As many values as a plain 10 MB suite holds; aliases may not multiply a file past it.
MAX_EXPANDED_NODES = 1_000_000
SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class YamlDoc:
    path: Path
    data: Any
    root: yaml.Node | None

    def line_of(self, loc: Sequence[int | str]) -> int | None:
        """1-based line of the deepest node that `loc` reaches (the key's line for mappings)."""
        node = self.root
        line = node.start_mark.line + 1 if node is not None else None
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                        line = key.start_mark.line + 1
                        node = value
                        break
                else:
                    return line
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if not 0 <= part < len(node.value):
                    return line
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return line
        return line


def dotted(loc: Sequence[int | str]) -> str:
    """('tests', 0, 'vars', 'x') → tests[0].vars.x; () → ''."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def field_path(loc: Sequence[int | str]) -> str:
    """dotted(loc), with the document itself named "top level"."""
    return dotted(loc) or "top level"


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def surrogate_error(where: str, text: str) -> InputError:
    found = SURROGATE.search(text)
    code = f"\\u{ord(found.group()):04x}" if found else "a surrogate"
    return InputError(
        f"{where}: text holds a lone surrogate {code}, which is not valid Unicode",
        hint="remove the \\ud800-\\udfff escape or write the character itself",
    )


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses nesting past MAX_DEPTH while composing (composing recurses)."""

    def __init__(self, stream: str, path: Path) -> None:
        super().__init__(stream)
        self._path = path
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise InputError(
                    f"{location(self._path, mark.line + 1)}: nesting deeper than {MAX_DEPTH} levels",
                    hint="flatten the structure",
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:
            # Python refuses the value the scalar names (int digit limit, impossible dates).
            text = node.value if isinstance(node, yaml.ScalarNode) else node.tag
            raise InputError(
                f"{location(self._path, _line(node))}: {str(text)[:40]!r} is not a valid value "
                f"({exc})",
                hint="quote it to keep it as text",
            ) from None


class _GraphCheck:
    """One pass over the composed graph: duplicates, cycles, expanded size, surrogates."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sizes: dict[int, int] = {}  # expanded node count of each node already seen
        self.open: set[int] = set()  # nodes on the current path: seeing one again is a cycle

    def size(self, node: yaml.Node, loc: tuple[int | str, ...]) -> int:
        known = self.sizes.get(id(node))
        if known is not None:
            return known
        if id(node) in self.open:
            raise InputError(
                f"{location(self.path, _line(node))}: {field_path(loc)}: an alias refers to the "
                "anchor that contains it (a loop)",
                hint="point the alias at something outside its own anchor",
            )
        self.open.add(id(node))
        total = 1
        if isinstance(node, yaml.ScalarNode):
            if SURROGATE.search(node.value):
                raise surrogate_error(
                    f"{location(self.path, _line(node))}: {field_path(loc)}", node.value
                )
        elif isinstance(node, yaml.MappingNode):
            keys: dict[str, int] = {}
            for key, value in node.value:
                name: int | str = "<key>"
                if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                    name = key.value
                    if key.value in keys:
                        raise InputError(
                            f"{location(self.path, _line(key))}: duplicate key '{key.value}' "
                            f"(first defined on line {keys[key.value]})",
                            hint="remove or merge one of them",
                        )
                    keys[key.value] = _line(key)
                total += self.size(key, (*loc, name)) + self.size(value, (*loc, name))
                self._check_total(total, node, loc)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                total += self.size(item, (*loc, i))
                self._check_total(total, node, loc)
        self.open.discard(id(node))
        self.sizes[id(node)] = total
        return total

    def _check_total(self, total: int, node: yaml.Node, loc: tuple[int | str, ...]) -> None:
        if total > MAX_EXPANDED_NODES:
            raise InputError(
                f"{location(self.path, _line(node))}: {field_path(loc)}: aliases expand this "
                f"to more than {MAX_EXPANDED_NODES:,} values",
                hint="use fewer aliases (an alias bomb?) or write the data out",
            )


def load_yaml(path: Path, text: str | None = None, *, what: str = "YAML file") -> YamlDoc:
    if text is None:
        text = read_text(path, what)
    loader = _BoundedLoader(text, path)
    try:
        root = loader.get_single_node()
        data = None
        if root is not None:
            _GraphCheck(path).size(root, ())
            data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise InputError(
            f"{location(path, line)}: invalid YAML: {problem}",
            hint="fix the syntax (check indentation, quotes and colons)",
        ) from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    return YamlDoc(path=path, data=data, root=root)


def load_json(path: Path, text: str, line: int | None = None) -> Any:
    """JSON text (a whole file, or one JSONL line at `line`) → data, with the same bounds as YAML.

    JSON has no aliases, but it can nest past the recursion limit and spell lone surrogates.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        at = line if line is not None else exc.lineno
        raise InputError(f"{location(path, at)}: invalid JSON: {exc.msg}") from None
    except ValueError as exc:  # a number Python refuses to convert (over 4,300 digits)
        raise InputError(f"{location(path, line)}: invalid JSON: {exc}") from None
    except RecursionError:
        raise InputError(
            f"{location(path, line)}: nesting deeper than {MAX_DEPTH} levels",
            hint="flatten the structure",
        ) from None
    check_data(data, path, line)
    return data


def check_data(data: Any, path: Path, line: int | None = None) -> None:
    """Refuse nesting past MAX_DEPTH and lone surrogates in parsed data (keys and values)."""
    stack: list[tuple[Any, tuple[int | str, ...]]] = [(data, ())]
    while stack:  # iterative: the data may be deeper than Python's recursion limit
        value, loc = stack.pop()
        if len(loc) > MAX_DEPTH:
            raise InputError(
                f"{location(path, line)}: {field_path(loc[:3])}…: nesting deeper than "
                f"{MAX_DEPTH} levels",
                hint="flatten the structure",
            )
        if isinstance(value, str):
            if SURROGATE.search(value):
                raise surrogate_error(f"{location(path, line)}: {field_path(loc)}", value)
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and SURROGATE.search(key):
                    raise surrogate_error(f"{location(path, line)}: {field_path(loc)}", key)
                stack.append((item, (*loc, str(key))))
        elif isinstance(value, list):
            stack.extend((item, (*loc, i)) for i, item in enumerate(value))
