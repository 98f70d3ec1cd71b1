"""A YAML reader that remembers where every value came from.

Plain ``yaml.safe_load`` returns dicts and strings with no positions, keeps
the *last* of two equal mapping keys without a word (which silently drops a
dependency material), and raises on inputs it cannot represent.  The config
loader needs every value's ``FILE:LINE:COL`` to report every problem at once,
so this module composes the YAML node graph (with PyYAML's safe loaders, C
when available because it is ~10x faster) and rebuilds it into small
:class:`Node` objects that carry their 1-based position:

* :class:`Scalar` keeps both the constructed value (``int``, ``bool``, ...)
  and the text as written, because GoCD reads every scalar as a string
  (``TEST_NUM: 1`` is the string ``"1"``, ``1.10`` stays ``"1.10"``);
* :class:`Map` keeps its keys in order with their own positions, resolves
  merge keys (``<<``) and reports a duplicate key at its *second* occurrence;
* :class:`Seq` is a list of nodes.

Nothing here raises for bad input: syntax errors, unknown tags, undecodable
bytes and recursion all become :class:`~workbench.errors.Problem` objects.
"""
from __future__ import annotations

import codecs
from typing import Any, Iterator

import yaml
from yaml.composer import ComposerError
from yaml.constructor import SafeConstructor
from yaml.events import (AliasEvent, MappingEndEvent, ScalarEvent, SequenceEndEvent, SequenceStartEvent,
                         StreamEndEvent)
from yaml.nodes import ScalarNode

from ..errors import Problem
from .model import Loc

_Y = "tag:yaml.org,2002:"
_MERGE = _Y + "merge"
_STR = _Y + "str"
_NULL = _Y + "null"
_RESOLVED: dict[str, str] = {}  # implicit tag of a plain scalar's text (same resolver for both loaders)
_SCALAR_TAGS = {_Y + t for t in ("str", "int", "float", "bool", "null", "timestamp", "binary")}
_MAP_TAGS = {_Y + "map", _Y + "set"}
_SEQ_TAGS = {_Y + "seq", _Y + "omap", _Y + "pairs"}


class Node:
    """A YAML value with the position (1-based) where it starts."""

    __slots__ = ("file", "line", "col", "_loc")

    def __init__(self, file: str, line: int, col: int) -> None:
        self.file, self.line, self.col = file, line, col
        self._loc: Loc | None = None

    @property
    def loc(self) -> Loc:
        loc = self._loc
        if loc is None:
            loc = self._loc = Loc(self.file, self.line, self.col)
        return loc

    def plain(self) -> Any:
        """The value as plain Python data (dict/list/scalars), for free-form sections."""
        return _plain(self, {})


class Scalar(Node):
    """A scalar: ``value`` as YAML typed it, ``text`` as written (unquoted, unescaped)."""

    __slots__ = ("value", "text", "tag")

    def __init__(self, file: str, line: int, col: int, value: Any, text: str, tag: str) -> None:
        self.file, self.line, self.col, self._loc = file, line, col, None
        self.value, self.text, self.tag = value, text, tag

    @property
    def is_null(self) -> bool:
        return self.value is None

    def __repr__(self) -> str:
        return f"Scalar({self.value!r} @{self.line}:{self.col})"


class Map(Node):
    """A mapping with ordered, positioned keys; keys are looked up by their text."""

    __slots__ = ("items", "_keys", "_values", "get")

    def __init__(self, file: str, line: int, col: int, items: list[tuple[Scalar, Node]],
                 keys: dict[str, Scalar] | None = None) -> None:
        self.file, self.line, self.col, self._loc = file, line, col, None
        self.items = items
        self._keys = {k.text: k for k, _ in items} if keys is None else keys
        self._values = values = {k.text: v for k, v in items}
        self.get = values.get  # the value node of a key, or None (a plain dict lookup: the hottest call)

    def key(self, key: str) -> Scalar | None:
        """The key node itself (where to report a problem with the field as a whole)."""
        return self._keys.get(key)

    def keys(self) -> list[str]:
        return [k.text for k, _ in self.items]

    def without(self, *keys: str) -> "Map":
        """A view of this mapping minus some keys (same position)."""
        return Map(self.file, self.line, self.col, [(k, v) for k, v in self.items if k.text not in keys])

    def only(self, keys: set[str] | frozenset[str]) -> "Map":
        return Map(self.file, self.line, self.col, [(k, v) for k, v in self.items if k.text in keys])

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __iter__(self) -> Iterator[tuple[Scalar, Node]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"Map({self.keys()} @{self.line}:{self.col})"


class Seq(Node):
    __slots__ = ("items",)

    def __init__(self, file: str, line: int, col: int, items: list[Node]) -> None:
        self.file, self.line, self.col, self._loc = file, line, col, None
        self.items = items

    def __iter__(self) -> Iterator[Node]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"Seq({len(self.items)} items @{self.line}:{self.col})"


def describe(node: Node | None) -> str:
    """A user-facing name for what a node is ("a list", "a number", ...)."""
    if node is None or (isinstance(node, Scalar) and node.value is None):
        return "nothing (null)"
    if isinstance(node, Map):
        return "a mapping"
    if isinstance(node, Seq):
        return "a list"
    assert isinstance(node, Scalar)
    v = node.value
    if isinstance(v, bool):
        return f"the boolean {node.text}"
    if isinstance(v, (int, float)):
        return f"the number {node.text}"
    if isinstance(v, bytes):
        return "binary data"
    if isinstance(v, str):
        return "a string"
    return f"a {type(v).__name__}"


def _plain(node: Node, memo: dict[int, Any]) -> Any:
    if isinstance(node, Scalar):
        return node.value
    if id(node) in memo:  # shared by aliases: share the value too, like PyYAML
        return memo[id(node)]
    if isinstance(node, Map):
        out: Any = {}
        memo[id(node)] = out
        for k, v in node.items:
            out[k.text] = _plain(v, memo)
        return out
    out = []
    memo[id(node)] = out
    out.extend(_plain(v, memo) for v in node.items)  # type: ignore[union-attr]
    return out


class _PositionMixin:
    """Builds positioned :class:`Node` objects straight from the parser's events.

    This replaces PyYAML's composer (which would first build its own node
    graph) because it halves the time to read a large config.  Anchors map
    to the built node, so an alias shares it (and its position, the
    anchor's) and a merged or repeated anchor is built once.
    """

    file: str
    problems: list[Problem]

    def _init_positions(self, file: str) -> None:
        self.file = file
        self.problems = []
        self._anchors: dict[str, Node | None] = {}  # None while the anchored node is being built

    def get_document(self) -> Node | None:
        """The single document of the stream, or None when it is empty."""
        self.get_event()  # type: ignore[attr-defined]  # stream start
        node = None
        if not isinstance(self.peek_event(), StreamEndEvent):  # type: ignore[attr-defined]
            first = self.get_event()  # type: ignore[attr-defined]  # document start
            node = self._compose(self.get_event())  # type: ignore[attr-defined]
            self.get_event()  # type: ignore[attr-defined]  # document end
            if not isinstance(self.peek_event(), StreamEndEvent):  # type: ignore[attr-defined]
                raise ComposerError("expected a single document in the stream", first.start_mark,
                                    "but found another document", self.get_event().start_mark)  # type: ignore[attr-defined]
        return node

    def _error(self, line: int, col: int, message: str) -> None:
        self.problems.append(Problem(self.file, line, col, message))

    def _compose(self, event: Any) -> Node:
        cls = type(event)
        if cls is ScalarEvent and event.tag is None and event.anchor is None:  # fast path: untagged string
            text = event.value
            tag = _RESOLVED.get(text, _STR) if event.implicit[0] else _STR
            if tag is _STR and (text in _RESOLVED or not event.implicit[0]):
                mark = event.start_mark
                return Scalar(self.file, mark.line + 1, mark.column + 1, text, text, _STR)
        mark = event.start_mark
        line, col = mark.line + 1, mark.column + 1
        if cls is AliasEvent:
            if event.anchor not in self._anchors:
                raise ComposerError(None, None, f"found undefined alias {event.anchor!r}", mark)
            found = self._anchors[event.anchor]
            if found is None:
                self._error(line, col, f"recursive YAML alias *{event.anchor}: a value cannot contain itself")
                return Scalar(self.file, line, col, None, "", _NULL)
            return found
        anchor = event.anchor
        if cls is ScalarEvent:
            node: Node = self._scalar(event, line, col)
        else:
            if anchor is not None:
                self._anchors[anchor] = None
            tag = event.tag
            if cls is SequenceStartEvent:
                if tag is not None and tag != "!" and tag not in _SEQ_TAGS:
                    self._error(line, col, f"unsupported YAML tag {tag!r} (only plain YAML is allowed)")
                items: list[Node] = []
                get_event = self.get_event  # type: ignore[attr-defined]
                event = get_event()
                while type(event) is not SequenceEndEvent:
                    items.append(self._compose(event))
                    event = get_event()
                node = Seq(self.file, line, col, items)
            else:
                if tag is not None and tag != "!" and tag not in _MAP_TAGS:
                    self._error(line, col, f"unsupported YAML tag {tag!r} (only plain YAML is allowed)")
                node = Map(self.file, line, col, *self._map_items())
        if anchor is not None:
            self._anchors[anchor] = node
        return node

    def _scalar(self, event: Any, line: int, col: int) -> Scalar:
        text, tag = event.value, event.tag
        explicit = tag is not None and tag != "!"
        if not explicit:
            if not event.implicit[0]:  # quoted or block: always a string
                tag = _STR
            else:  # plain: YAML 1.1 implicit typing (ints, bools, null, ...), memoised per text
                tag = _RESOLVED.get(text)
                if tag is None:
                    tag = self.resolve(ScalarNode, text, (True, False))  # type: ignore[attr-defined]
                    tag = _STR if tag == _STR else tag  # interned, for the identity test above
                    if len(_RESOLVED) < 4096:
                        _RESOLVED[text] = tag
        if tag == _STR:
            return Scalar(self.file, line, col, text, text, _STR)
        if tag == _NULL:
            return Scalar(self.file, line, col, None, text, _NULL)
        if tag == _MERGE and not explicit:
            return Scalar(self.file, line, col, text, text, _MERGE)
        if tag not in _SCALAR_TAGS:
            if explicit:  # an explicit !tag, python objects included: refuse it
                self._error(line, col, f"unsupported YAML tag {tag!r} (only plain YAML is allowed)")
            return Scalar(self.file, line, col, text, text, _STR)
        try:
            ynode = ScalarNode(tag, text, event.start_mark, event.end_mark, event.style)
            value = SafeConstructor.yaml_constructors[tag](self, ynode)
        except Exception:  # e.g. the date 2001-13-45, or !!int abc
            if explicit:
                self._error(line, col, f"cannot read {text!r} as {tag.rsplit(':', 1)[-1]}")
            return Scalar(self.file, line, col, text, text, _STR)
        return Scalar(self.file, line, col, value, text, tag)

    def _map_items(self) -> tuple[list[tuple[Scalar, Node]], dict[str, Scalar]]:
        explicit: list[tuple[Scalar, Node]] = []
        seen: dict[str, Scalar] = {}
        merged: list[tuple[Scalar, Node]] = []
        get_event = self.get_event  # type: ignore[attr-defined]
        file = self.file
        while True:
            event = get_event()
            kind = type(event)
            if kind is MappingEndEvent:
                break
            if kind is ScalarEvent and event.tag is None and event.anchor is None and event.value != "<<":
                # fast path: a key is looked up by its text, so its YAML type does not matter
                mark = event.start_mark
                k: Node = Scalar(file, mark.line + 1, mark.column + 1, event.value, event.value, _STR)
            else:
                k = self._compose(event)
            v = self._compose(get_event())
            if not isinstance(k, Scalar):
                self._error(k.line, k.col, "mapping keys must be plain values, not a list or mapping")
                continue
            if k.tag == _MERGE:
                merged.extend(self._merge_items(v))
                continue
            first = seen.get(k.text)
            if first is not None:
                self._error(k.line, k.col, f"duplicate key {k.text!r} (first at line {first.line}, column {first.col}); "
                                           "a plain YAML loader would silently keep only the last one")
                continue
            seen[k.text] = k
            explicit.append((k, v))
        if not merged:
            return explicit, seen
        out: list[tuple[Scalar, Node]] = []
        for k, v in merged:  # explicit keys win; among merged maps the first wins
            if k.text not in seen:
                seen[k.text] = k
                out.append((k, v))
        return out + explicit, seen

    def _merge_items(self, value: Node) -> list[tuple[Scalar, Node]]:
        items: list[tuple[Scalar, Node]] = []
        for src in value.items if isinstance(value, Seq) else [value]:
            if isinstance(src, Map):
                items.extend(src.items)
            else:
                self._error(src.line, src.col, "the value of a merge key (<<) must be a mapping or a list of mappings")
        return items


class PositionLoader(_PositionMixin, yaml.SafeLoader):
    """Pure-Python safe loader producing positioned nodes (reference implementation)."""

    def __init__(self, stream: str, file: str = "<string>") -> None:
        yaml.SafeLoader.__init__(self, stream)
        self._init_positions(file)


if hasattr(yaml, "CSafeLoader"):

    class CPositionLoader(_PositionMixin, yaml.CSafeLoader):  # type: ignore[name-defined,misc]
        """The same on libyaml: used by default because it is much faster."""

        def __init__(self, stream: str, file: str = "<string>") -> None:
            yaml.CSafeLoader.__init__(self, stream)
            self._init_positions(file)

    DefaultLoader: type[_PositionMixin] = CPositionLoader
else:  # pragma: no cover - depends on how PyYAML was built
    DefaultLoader = PositionLoader


def _line_col(text: str, index: int) -> tuple[int, int]:
    index = max(0, min(index, len(text)))
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _syntax_problem(exc: yaml.YAMLError, text: str, file: str) -> Problem:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        at, other = exc.problem_mark, exc.context_mark
        # A problem found at the very end of the file says nothing about
        # where the mistake is; the construct that was left open does.
        if other is not None and exc.context and not text[at.index:].strip():
            at, other = other, at
        message = exc.problem or "invalid YAML"
        if exc.context:
            glue = ": " if exc.context.startswith("while") else ", "
            message = f"{exc.context}{glue}{message}"
            if other is not None and other.line != at.line:
                message += f" (see line {other.line + 1}, column {other.column + 1})"
        if (exc.context or "").startswith("while scanning an alias"):
            # GoCD files write globs such as `source: *.jar` unquoted; YAML (and GoCD's own parser) read `*` as an alias
            message += "; a plain value starting with `*` is a YAML alias: quote it, e.g. '*.jar'"
        return Problem(file, at.line + 1, at.column + 1, f"YAML syntax error: {message}")
    character = getattr(exc, "character", None)  # ReaderError: find the character, positions differ per loader
    index = text.find(chr(character) if isinstance(character, int) else str(character)) if character is not None else -1
    line, col = _line_col(text, index) if index >= 0 else (1, 1)
    reason = getattr(exc, "reason", None) or str(exc).splitlines()[0]
    if isinstance(character, int):
        reason = f"unacceptable character #x{character:04x}: {reason}"
    return Problem(file, line, col, f"YAML syntax error: {reason}")


def compose(text: str, file: str = "<string>", loader: type[_PositionMixin] | None = None) -> tuple[Node | None, list[Problem]]:
    """Parse one YAML document into positioned nodes; never raises for bad input."""
    cls = loader or DefaultLoader
    try:
        ld = cls(text, file)  # type: ignore[call-arg]
        try:
            node = ld.get_document()
            return node, list(ld.problems)
        finally:
            ld.dispose()  # type: ignore[attr-defined]
    except yaml.YAMLError as exc:
        return None, [_syntax_problem(exc, text, file)]
    except RecursionError:
        return None, [Problem(file, 1, 1, "the YAML is nested too deeply to read")]


def decode(data: bytes, file: str) -> tuple[str | None, list[Problem]]:
    """Bytes to text: UTF-8 (optionally with a BOM) or UTF-16 with a BOM."""
    try:
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return data.decode("utf-16"), []
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError as exc:
        start = exc.start
        line = data.count(b"\n", 0, start) + 1
        col = start - (data.rfind(b"\n", 0, start) + 1) + 1
        bad = data[start:start + 1].hex()
        return None, [Problem(file, line, col, f"the file is not UTF-8 text (byte 0x{bad})")]


__all__ = ["Map", "Node", "PositionLoader", "Scalar", "Seq", "compose", "decode", "describe"]
