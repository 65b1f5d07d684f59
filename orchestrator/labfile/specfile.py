"""Reading lab and experiment files without trusting them: bounded, decoded, and parsed into plain data with
the line of every key path; and the list of problems found in a file (each with its key path and line),
raised at once as one SpecError (exit code 2).

A file is refused before it can cost much: larger than MAX_BYTES (checked before reading, and no more than
that is read), not a regular file, not UTF-8, nested deeper than MAX_DEPTH, or holding more than MAX_NODES
YAML nodes with every alias counted as the nodes it repeats — checked while the YAML is composed, so a
"billion laughs" alias bomb is refused as soon as its count passes the limit, never expanded. Anchors,
aliases and merge keys stay allowed (a list of LANs reused, a host template), within the same count.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from orchestrator.errors import SpecError

MAX_BYTES = 256 * 1024     # the largest shipped file is 2.3 KB; a 3,000-host lab written out host by host ~250 KB
MAX_DEPTH = 32             # a lab file nests 5 levels (hosts.NAME.addresses.LAN)
MAX_NODES = 50_000         # keys and values, aliases expanded; a 3,000-host lab written out ~36,000
MAX_REASON = 300           # characters of one problem's reason (a reason may quote the file)
MERGE_TAG = "tag:yaml.org,2002:merge"     # `<<: *template`


class Problems:
    def __init__(self, source: str, lines: dict[tuple, int]):
        self.source, self.lines = source, lines
        self.items: list[tuple[str, str]] = []      # (where, reason)

    def add(self, path: Sequence[Any], reason: str, *, limit: int = MAX_REASON) -> None:
        key = tuple(path)
        line = None
        while key and line is None:
            line = self.lines.get(key)
            key = key[:-1]
        where = ".".join(str(p) for p in path) or "<top>"
        if len(reason) > limit:
            reason = reason[:limit] + f"… ({len(reason):,} characters)"
        self.items.append((where + (f" (line {line})" if line else ""), reason))

    def raise_if_any(self) -> None:
        if self.items:
            raise SpecError(self.source, self.items)


# ---------------------------------------------------------------- reading


def read_spec_file(path: str | Path) -> tuple[Any, dict[tuple, int], Problems]:
    """Read, decode and parse a lab or experiment file within the limits above: (data, lines, problems)."""
    source = str(path)
    return parse_yaml(_read_text(Path(path), source), source)


def _refuse(source: str, reason: str, where: str = "<top>") -> SpecError:
    return SpecError(source, [(where, reason)])


def _read_text(path: Path, source: str) -> str:
    try:     # O_NONBLOCK: opening a FIFO nobody writes to must not hang (it is refused below)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise _refuse(source, "no such file") from None
    except (OSError, ValueError) as exc:
        raise _refuse(source, f"cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    limit = f"lab and experiment files may be at most {MAX_BYTES // 1024} KiB ({MAX_BYTES:,} bytes)"
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise _refuse(source, "cannot read: Is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(source, "not a regular file (a lab or experiment file is read whole)")
        if st.st_size > MAX_BYTES:
            raise _refuse(source, f"the file is {st.st_size:,} bytes; {limit}")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:       # it grew since fstat
        raise _refuse(source, f"the file is larger than {MAX_BYTES:,} bytes; {limit}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise _refuse(source, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start:,}); lab and "
                              "experiment files are YAML in UTF-8", f"line {line}, column {column}") from None


# ---------------------------------------------------------------- YAML within bounds


class LimitError(yaml.MarkedYAMLError):
    """The YAML is well-formed but beyond what a lab or experiment file may hold."""

    problem: str        # every raise says what (a MarkedYAMLError's may be None)


class _BoundedComposer(Composer):
    """PyYAML's composer, refusing depth beyond MAX_DEPTH and more than MAX_NODES nodes, an alias counting as
    the size of the node it names (known once that node is composed; an alias inside its own anchor is
    refused, as a lab file has no use for a recursive structure)."""

    def __init__(self) -> None:
        super().__init__()
        self._depth = 0
        self._nodes = 0
        self._sizes: dict[str, int] = {}        # anchor -> nodes it stands for

    def _count(self, n: int, event, what: str) -> None:
        self._nodes += n
        if self._nodes > MAX_NODES:
            raise LimitError(problem=f"more than {MAX_NODES:,} YAML nodes {what}(keys and values, each alias "
                                     f"counted as what it repeats); lab and experiment files may hold at most "
                                     f"{MAX_NODES:,}", problem_mark=event.start_mark)

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            if event.anchor in self.anchors:            # else PyYAML's own "found undefined alias"
                size = self._sizes.get(event.anchor)
                if size is None:
                    raise LimitError(problem=f"alias *{event.anchor} is inside the node it names (a recursive "
                                             "structure)", problem_mark=event.start_mark)
                self._count(size, event, f"with alias *{event.anchor} ")
            return super().compose_node(parent, index)
        if self._depth >= MAX_DEPTH:
            raise LimitError(problem=f"nested deeper than {MAX_DEPTH} levels; lab and experiment files need "
                                     "a handful", problem_mark=event.start_mark)
        before = self._nodes
        self._depth += 1
        node = super().compose_node(parent, index)
        self._depth -= 1
        self._count(1, event, "")
        if event.anchor is not None:
            self._sizes[event.anchor] = self._nodes - before
        return node


class PythonLoader(Reader, Scanner, Parser, _BoundedComposer, SafeConstructor, Resolver):
    """The bounded loader on PyYAML's pure-Python parser."""

    def __init__(self, text: str):
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        _BoundedComposer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)


LOADERS: dict[str, type] = {"python": PythonLoader}
if yaml.__with_libyaml__:       # libyaml's parser (C, ~5x faster) under the same bounded composer
    from yaml._yaml import CParser

    class LibyamlLoader(_BoundedComposer, CParser, SafeConstructor, Resolver):
        def __init__(self, text: str):
            CParser.__init__(self, text)
            _BoundedComposer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

    LOADERS["libyaml"] = LibyamlLoader
DEFAULT_LOADER = "libyaml" if "libyaml" in LOADERS else "python"


def _value(loader, node: yaml.Node, path: tuple, problems: Problems) -> Any:
    try:
        return loader.construct_object(node, deep=True)
    except (ValueError, TypeError, OverflowError) as exc:    # e.g. an integer of 5,000 digits, a bad timestamp
        problems.add(path, f"cannot read the value on line {node.start_mark.line + 1}: {exc}")
        return None


def _merged(loader, vnode: yaml.Node, path: tuple, lines: dict, problems: Problems) -> dict[str, Any]:
    """What a `<<: *template` (or `<<: [*a, *b]`, the first one winning) puts into a mapping."""
    out: dict[str, Any] = {}
    for src in vnode.value if isinstance(vnode, yaml.SequenceNode) else [vnode]:
        if not isinstance(src, yaml.MappingNode):
            problems.add(path, f"'<<' (line {src.start_mark.line + 1}) merges mappings only")
            continue
        for key, value in _construct(loader, src, path, lines, problems).items():
            out.setdefault(key, value)
    return out


def _construct(loader, node: yaml.Node, path: tuple, lines: dict, problems: Problems) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        merged: dict[str, Any] = {}
        for knode, vnode in node.value:
            if knode.tag == MERGE_TAG:      # a template's keys, under the ones given here
                for k, v in _merged(loader, vnode, path, lines, problems).items():
                    merged.setdefault(k, v)
                continue
            key = _value(loader, knode, path, problems)
            if not isinstance(key, str | int):
                problems.add(path, f"keys must be strings, not {type(key).__name__}")
                continue
            key = str(key)
            if key in out:
                problems.add((*path, key), f"duplicate key '{key}' (line {knode.start_mark.line + 1})")
                continue
            lines[(*path, key)] = knode.start_mark.line + 1     # a key's line is where the key is
            out[key] = _construct(loader, vnode, (*path, key), lines, problems)
        return {**merged, **out} if merged else out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(loader, v, (*path, i), lines, problems) for i, v in enumerate(node.value)]
    return _value(loader, node, path, problems)


def _where(exc: yaml.YAMLError, text: str) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}"
    pos = getattr(exc, "position", None)                # a ReaderError: a character YAML does not allow
    if isinstance(pos, int):
        return f"line {text.count(chr(10), 0, pos) + 1}, column {pos - (text.rfind(chr(10), 0, pos) + 1) + 1}"
    return "<top>"


def parse_yaml(text: str, source: str, *, loader: str = DEFAULT_LOADER) -> tuple[Any, dict[tuple, int], Problems]:
    lines: dict[tuple, int] = {}
    problems = Problems(source, lines)
    try:
        ldr = LOADERS[loader](text)
        try:
            node = ldr.get_single_node()
            data = _construct(ldr, node, (), lines, problems) if node is not None else None
        finally:
            ldr.dispose()
    except LimitError as exc:
        raise _refuse(source, exc.problem, _where(exc, text)) from None
    except yaml.YAMLError as exc:
        if isinstance(exc, yaml.reader.ReaderError):
            reason = (f"character {exc.character!r} is not allowed in YAML" if isinstance(exc.character, str)
                      else str(exc.reason))
        elif isinstance(exc, yaml.composer.ComposerError) and exc.problem == "second occurrence" and exc.context \
                and exc.context_mark:
            reason = f"{exc.context.split(';')[0]} (first on line {exc.context_mark.line + 1})"
        elif isinstance(exc, yaml.composer.ComposerError) and exc.context:
            reason = f"{exc.context}, {exc.problem}"
        else:
            reason = getattr(exc, "problem", None) or str(exc)
        raise _refuse(source, f"not valid YAML: {reason}", _where(exc, text)) from None
    return data, lines, problems
