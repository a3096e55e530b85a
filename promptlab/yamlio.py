"""YAML reading that keeps line numbers, so every error can point at `file:line`.

PyYAML's safe loader silently lets a later duplicate key win, which hides typos in suites; we
compose the node graph first, refuse duplicates there, and keep the graph to map a pydantic error
location such as ('tests', 2, 'assert', 0, 'type') back to a line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from promptlab.errors import InputError, location
from promptlab.files import read_text


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


def _check_duplicates(path: Path, node: yaml.Node, seen: set[int]) -> None:
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: dict[str, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                line = key.start_mark.line + 1
                if key.value in keys:
                    raise InputError(
                        f"{location(path, line)}: duplicate key '{key.value}' "
                        f"(first defined on line {keys[key.value]})",
                        hint="remove or merge one of them",
                    )
                keys[key.value] = line
            _check_duplicates(path, value, seen)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicates(path, item, seen)


def load_yaml(path: Path, text: str | None = None, *, what: str = "YAML file") -> YamlDoc:
    if text is None:
        text = read_text(path, what)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is not None:
            _check_duplicates(path, root, set())
        data = yaml.safe_load(text)
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
    return YamlDoc(path=path, data=data, root=root)
