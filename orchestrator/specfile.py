"""YAML of lab and experiment files parsed into plain data, with the line of every key path, and the list of
problems found in a file (each with its key path and line), raised at once as one SpecError.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from .errors import SpecError


class Problems:
    def __init__(self, source: str, lines: dict[tuple, int]):
        self.source, self.lines, self.items = source, lines, []

    def add(self, path: Sequence[Any], reason: str) -> None:
        key = tuple(path)
        line = None
        while key and line is None:
            line = self.lines.get(key)
            key = key[:-1]
        where = ".".join(str(p) for p in path) or "<top>"
        self.items.append((where + (f" (line {line})" if line else ""), reason))

    def raise_if_any(self) -> None:
        if self.items:
            raise SpecError(self.source, self.items)


def _construct(loader: yaml.SafeLoader, node: yaml.Node, path: tuple, lines: dict, problems: Problems) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for knode, vnode in node.value:
            key = loader.construct_object(knode, deep=True)
            if not isinstance(key, str | int):
                problems.add(path, f"keys must be strings, not {type(key).__name__}")
                continue
            key = str(key)
            if key in out:
                problems.add((*path, key), f"duplicate key '{key}' (line {knode.start_mark.line + 1})")
                continue
            lines.setdefault((*path, key), knode.start_mark.line + 1)   # a key's line is where the key is
            out[key] = _construct(loader, vnode, (*path, key), lines, problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(loader, v, (*path, i), lines, problems) for i, v in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def parse_yaml(text: str, source: str) -> tuple[Any, dict[tuple, int], Problems]:
    lines: dict[tuple, int] = {}
    problems = Problems(source, lines)
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = _construct(loader, node, (), lines, problems) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise SpecError(source, [(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    return data, lines, problems
