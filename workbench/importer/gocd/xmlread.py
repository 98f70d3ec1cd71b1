"""Reading a GoCD ``cruise-config.xml`` safely, keeping every element's line and column.

Why this parser: ``defusedxml``'s ElementTree parser (expat underneath) with
``forbid_dtd=True``. GoCD never writes a DOCTYPE into its config, and every
XML attack that matters here (external entities reading the server's cipher
file, entity-expansion "billion laughs") needs one, so any DTD is refused at
its line before a single entity is declared; external references and entity
declarations are also refused on their own (defusedxml's defaults). expat
reports the position of each start tag while it is being parsed, so a small
tree builder records it as the element is made: no second pass, no lxml
(which is not a dependency), and ``minidom`` would keep no positions at all.

The tree is :class:`XNode`: tag, attributes, text, children, position, and
which attributes and children the converter has read, so that everything
it did not read can be reported as "not carried over" with its line.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from ...errors import ImportRefused

MAX_BYTES = 64 * 1024 * 1024  # a 1,000-pipeline GoCD config is a few MB; 64 MB is far beyond any real one
_XSI = "{http://www.w3.org/2001/XMLSchema-instance}"


@dataclass(eq=False)
class XNode:
    """One XML element with its position; ``used``/``read`` track what the converter consumed."""

    tag: str
    attrib: dict[str, str]
    line: int
    col: int
    children: list[XNode] = field(default_factory=list)
    chunks: list[str] = field(default_factory=list)
    read: set[str] = field(default_factory=set)  # attribute names read
    used: bool = False  # the element itself was handled (or explicitly reported)

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    def get(self, name: str, default: str | None = None) -> str | None:
        self.read.add(name)
        return self.attrib.get(name, default)

    def kids(self, tag: str | None = None) -> Iterator[XNode]:
        """Children (of one tag); each one handed out counts as handled (the caller converts or reports it)."""
        for c in self.children:
            if tag is None or c.tag == tag:
                c.used = True
                yield c

    def child(self, tag: str) -> XNode | None:
        return next(self.kids(tag), None)

    def walk(self) -> Iterator[XNode]:
        yield self
        for c in self.children:
            yield from c.walk()

    def unread_attributes(self) -> list[str]:
        return [a for a in self.attrib if a not in self.read and not a.startswith(_XSI)
                and not a.startswith("{http://www.w3.org/XML/1998/namespace}")]


class _Builder:
    """ElementTree parser target that builds :class:`XNode` objects with expat's current position."""

    def __init__(self) -> None:
        self.parser: DefusedXMLParser | None = None
        self.stack: list[XNode] = []
        self.root: XNode | None = None

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        expat = self.parser.parser  # type: ignore[union-attr]
        node = XNode(tag, dict(attrib), expat.CurrentLineNumber, expat.CurrentColumnNumber + 1)
        if self.stack:
            self.stack[-1].children.append(node)
        else:
            self.root = node
        self.stack.append(node)

    def end(self, tag: str) -> None:
        self.stack.pop()

    def expat_start(self, name: str, attrs: list[str]) -> None:
        """expat's own start handler (``ordered_attributes``): ElementTree's Python layer in between cost
        a third of a 1,000-pipeline import. Namespaced names become ``{uri}local`` as ElementTree makes them."""
        attrib = {("{" + attrs[i] if "}" in attrs[i] else attrs[i]): attrs[i + 1] for i in range(0, len(attrs), 2)}
        self.start("{" + name if "}" in name else name, attrib)

    def expat_end(self, name: str) -> None:
        self.stack.pop()

    def data(self, text: str) -> None:
        if self.stack:
            self.stack[-1].chunks.append(text)

    def close(self) -> XNode | None:
        return self.root


def parse_bytes(data: bytes, display: str) -> XNode:
    """The element tree of ``data``; anything unsafe or malformed is an :class:`ImportRefused` with FILE:LINE:COL."""
    if len(data) > MAX_BYTES:
        raise ImportRefused(f"{display}: the file is {len(data) / 1e6:.0f} MB; the importer reads at most "
                            f"{MAX_BYTES // (1024 * 1024)} MB (a GoCD config of 1,000 pipelines is a few MB)")
    builder = _Builder()
    parser = DefusedXMLParser(target=builder, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    builder.parser = parser
    expat = parser.parser  # the defused handlers (DOCTYPE, entities, external references) stay as they are
    expat.StartElementHandler = builder.expat_start
    expat.EndElementHandler = builder.expat_end
    expat.CharacterDataHandler = builder.data
    try:
        parser.feed(data)
        root = parser.close()
    except DefusedXmlException as exc:
        expat = parser.parser
        where = f"{display}:{expat.CurrentLineNumber}:{expat.CurrentColumnNumber + 1}"
        raise ImportRefused(f"{where}: refused: {_why(exc)}. GoCD never writes one into cruise-config.xml, and "
                            "document type declarations are how XML external-entity and entity-expansion "
                            "(\"billion laughs\") attacks work, so the file is not read any further") from None
    except ParseError as exc:
        line, col = getattr(exc, "position", (1, 0))
        message = str(exc).split(": line ")[0]
        raise ImportRefused(f"{display}:{line}:{col + 1}: not well-formed XML ({message})") from None
    except RecursionError:
        raise ImportRefused(f"{display}: the XML is nested too deeply to read") from None
    if root is None:
        raise ImportRefused(f"{display}:1:1: the file has no XML element")
    if root.tag != "cruise":
        raise ImportRefused(f"{display}:{root.line}:{root.col}: the root element is <{root.tag}>, not <cruise>: "
                            "this is not a GoCD cruise-config.xml")
    return root


def _why(exc: Exception) -> str:
    name = type(exc).__name__
    if name == "DTDForbidden":
        return "the file has a document type declaration (<!DOCTYPE ...>)"
    if name == "EntitiesForbidden":
        return f"the file declares an XML entity ({getattr(exc, 'name', '?')})"
    if name == "ExternalReferenceForbidden":
        return f"the file refers to an external entity ({getattr(exc, 'sysid', None) or '?'})"
    return f"unsafe XML ({exc})"


def parse_file(path: Path, display: str | None = None) -> XNode:
    display = display or str(path)
    return parse_bytes(read_file(path, display), display)


def read_file(path: Path, display: str | None = None) -> bytes:
    """The bytes of ``path``, refusing (before reading) a file too big to be a GoCD config."""
    display = display or str(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ImportRefused(f"{display}: the file is {size / 1e6:.0f} MB; the importer reads at most "
                                f"{MAX_BYTES // (1024 * 1024)} MB (a GoCD config of 1,000 pipelines is a few MB)")
        return path.read_bytes()
    except OSError as exc:
        raise ImportRefused(f"{display}: cannot read the file: {exc.strerror or exc}") from None
