"""JSON into the same positioned nodes as :mod:`~workbench.config.yamlnodes`.

GoCD's JSON config plugin files are strict JSON, read by Gson.  JSON is
nearly YAML, but reading it with the YAML parser would accept what Gson
refuses (comments, unquoted strings, single quotes) and refuse what Gson
accepts (a tab before a value), so the text is checked by Python's own
:func:`json.loads` first: a syntax error is reported at its ``LINE:COL``
with the standard library's message.  A valid document is then walked once
more with the standard library's string and number scanners to build
:class:`~workbench.config.yamlnodes.Scalar`/``Map``/``Seq`` nodes that know
where they start, so every later message is ``FILE:LINE:COL`` exactly as
for YAML.

A key written twice in one object is an error at its second place (Gson,
like a plain YAML loader, silently keeps the last one).  ``NaN`` and
``Infinity``, which :func:`json.loads` tolerates but JSON does not have, are
refused.  Nothing here raises for bad input.
"""
from __future__ import annotations

import bisect
import json
import re
from json.decoder import scanstring
from json.scanner import NUMBER_RE

from ..errors import Problem
from .yamlnodes import Map, Node, Scalar, Seq

_Y = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_Y + t for t in ("str", "int", "float", "bool", "null"))
_WS = re.compile(r"[ \t\n\r]*")
_LITERALS = {"true": (True, _BOOL), "false": (False, _BOOL), "null": (None, _NULL)}


class _Refused(Exception):
    """A construct json.loads accepts but JSON does not (NaN, Infinity)."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index, self.message = index, message


class _Walker:
    def __init__(self, text: str, file: str) -> None:
        self.text, self.file = text, file
        self.problems: list[Problem] = []
        self._starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def pos(self, index: int) -> tuple[int, int]:
        line = bisect.bisect_right(self._starts, index)
        return line, index - self._starts[line - 1] + 1

    def value(self, i: int) -> tuple[Node, int]:
        text = self.text
        i = _WS.match(text, i).end()  # type: ignore[union-attr]
        line, col = self.pos(i)
        c = text[i]
        if c == "{":
            return self._object(i, line, col)
        if c == "[":
            items: list[Node] = []
            i = _WS.match(text, i + 1).end()  # type: ignore[union-attr]
            if text[i] == "]":
                return Seq(self.file, line, col, items), i + 1
            while True:
                node, i = self.value(i)
                items.append(node)
                i = _WS.match(text, i).end()  # type: ignore[union-attr]
                if text[i] == "]":
                    return Seq(self.file, line, col, items), i + 1
                i += 1  # the comma
        if c == '"':
            s, end = scanstring(text, i + 1, True)
            return Scalar(self.file, line, col, s, s, _STR), end
        for word, (value, tag) in _LITERALS.items():
            if text.startswith(word, i):
                return Scalar(self.file, line, col, value, word, tag), i + len(word)
        m = NUMBER_RE.match(text, i)
        if m is None or text.startswith(("NaN", "Infinity", "-Infinity"), i):
            raise _Refused(i, "NaN and Infinity are not JSON numbers")
        integer, frac, exp = m.groups()
        written = m.group(0)
        if frac or exp:
            return Scalar(self.file, line, col, float(written), written, _FLOAT), m.end()
        return Scalar(self.file, line, col, int(integer), written, _INT), m.end()

    def _object(self, i: int, line: int, col: int) -> tuple[Node, int]:
        text = self.text
        items: list[tuple[Scalar, Node]] = []
        seen: dict[str, Scalar] = {}
        i = _WS.match(text, i + 1).end()  # type: ignore[union-attr]
        if text[i] == "}":
            return Map(self.file, line, col, items, seen), i + 1
        while True:
            kline, kcol = self.pos(i)
            name, i = scanstring(text, i + 1, True)
            key = Scalar(self.file, kline, kcol, name, name, _STR)
            i = _WS.match(text, i).end() + 1  # type: ignore[union-attr]  # past the colon
            node, i = self.value(i)
            first = seen.get(name)
            if first is not None:
                self.problems.append(Problem(self.file, kline, kcol, (
                    f"duplicate key {name!r} (first at line {first.line}, column {first.col}); GoCD's JSON reader "
                    "would silently keep only the last one")))
            else:
                seen[name] = key
                items.append((key, node))
            i = _WS.match(text, i).end()  # type: ignore[union-attr]
            if text[i] == "}":
                return Map(self.file, line, col, items, seen), i + 1
            i = _WS.match(text, i + 1).end()  # type: ignore[union-attr]  # past the comma


def compose_json(text: str, file: str = "<string>") -> tuple[Node | None, list[Problem]]:
    """Parse one JSON document into positioned nodes; never raises for bad input."""
    if not text.strip():
        return None, []
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return None, [Problem(file, exc.lineno, exc.colno, f"JSON syntax error: {exc.msg}")]
    except RecursionError:
        return None, [Problem(file, 1, 1, "the JSON is nested too deeply to read")]
    walker = _Walker(text, file)
    try:
        node, _end = walker.value(0)
    except _Refused as exc:
        line, col = walker.pos(exc.index)
        return None, [Problem(file, line, col, f"JSON syntax error: {exc.message}")]
    except RecursionError:
        return None, [Problem(file, 1, 1, "the JSON is nested too deeply to read")]
    return node, walker.problems


__all__ = ["compose_json"]
