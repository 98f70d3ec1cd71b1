"""Block-style YAML for the converted files, written directly.

PyYAML's representer (Python even with the C emitter) took 60% of a
1,000-pipeline import. The converter only produces dicts, lists, strings,
ints and bools, so this writes them itself: a string is plain when it is
unmistakably a string (letters, digits and a few safe punctuation marks, not
a YAML 1.1 boolean or null word), a literal block (``|-``) when it has
several lines that survive one, and otherwise double-quoted with JSON's
escapes (JSON strings are valid YAML double-quoted scalars) and YAML's
``\\uXXXX``/``\\UXXXXXXXX`` for characters that are not printable. A
property test loads the output back with ``yaml.safe_load`` and compares.
"""
from __future__ import annotations

import json
import re
from typing import Any

_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./-]*\Z")
_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf"}


def _scalar(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _WORDS:
        return text
    quoted = json.dumps(text, ensure_ascii=False)
    if quoted.isprintable():
        return quoted
    return "".join(c if c.isprintable() else (f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}")
                   for c in quoted)  # YAML's escapes; JSON's surrogate pairs would not read back


def _block(text: str, indent: str) -> str | None:
    """``|-`` / ``|`` literal block when the text reads back exactly, else None."""
    if "\n" not in text or text.startswith((" ", "\n")) or not text.strip() \
            or not text.replace("\n", "").isprintable():
        return None
    body = text.removesuffix("\n")
    if body.endswith("\n") or any(line != line.rstrip() for line in body.split("\n")) or "\t" in body:
        return None
    head = "|" if text.endswith("\n") else "|-"
    return head + "".join(f"\n{indent}{line}" if line else "\n" for line in body.split("\n"))


def _value(value: Any, indent: str, out: list[str]) -> None:
    """Append ``value`` after a ``key:`` or ``- `` already written on the current line."""
    if isinstance(value, dict):
        if not value:
            out.append(" {}\n")
            return
        out.append("\n")
        _mapping(value, indent, out)
    elif isinstance(value, list):
        if not value:
            out.append(" []\n")
            return
        out.append("\n")
        _sequence(value, indent, out)
    elif isinstance(value, str) and (block := _block(value, indent)) is not None:
        out.append(" " + block + "\n")
    else:
        out.append(" " + _scalar(value) + "\n")


def _mapping(data: dict[str, Any], indent: str, out: list[str]) -> None:
    for key, value in data.items():
        out.append(f"{indent}{_scalar(key)}:")
        _value(value, indent + "  ", out)


def _sequence(items: list[Any], indent: str, out: list[str]) -> None:
    for item in items:
        if isinstance(item, dict) and item:
            first = True
            for key, value in item.items():
                out.append(f"{indent}- {_scalar(key)}:" if first else f"{indent}  {_scalar(key)}:")
                _value(value, indent + "    ", out)
                first = False
        else:
            out.append(f"{indent}-")
            _value(item, indent + "  ", out)


def dump(data: dict[str, Any]) -> str:
    out: list[str] = []
    _mapping(data, "", out)
    return "".join(out)
