"""The parse context: where problems are collected and scalars are coerced.

Parsers never raise for a user's mistake: they record a
:class:`~workbench.errors.Problem` here and carry on with a best-effort value,
so that one run of the loader reports *every* problem of every file.  The
coercion helpers follow GoCD, which reads every YAML scalar as text
(``"1"``, ``"yes"``) and converts afterwards; they also apply ``#{param}``
substitution while a pipeline is being parsed.  Extension parsers
(``register_task_kind``, ``register_section``, ``register_stage_key``) receive
this object and should use the same helpers.
"""
from __future__ import annotations

import base64
import binascii
import difflib
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ..errors import Problem
from .model import NOWHERE, Loc
from .yamlnodes import Map, Node, Scalar, Seq, describe

NAME_RE = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_\-.]{0,254}\Z")
PARAM_NAME_RE = re.compile(r"[A-Za-z0-9_\-.]+\Z")
_PARAM_RE = re.compile(r"##|#\{([^}]*)(\}?)")
_TRUE = {"true", "yes", "on", "y"}
_FALSE = {"false", "no", "off", "n"}
FALSE_WORDS = frozenset(_FALSE)  # how GoCD (and YAML 1.1) may write false
_URLSAFE_B64 = re.compile(r"[A-Za-z0-9_\-]+={0,2}")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ms|s|m|h)")


# A name not found here is as often defined elsewhere as misspelt: GoCD merges its server XML and every config
# repository, so files moved from GoCD name pipelines and templates that live there.
ELSEWHERE = ("; if it is defined in another repository or on the GoCD server, add that repository under "
             "`config_repos:` in workbench.yaml, or bring the server's pipelines over with "
             "`workbench import-gocd cruise-config.xml`")


def suggest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for a close match, else an empty string."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    if word.lower() in lowered:
        return f" (did you mean {lowered[word.lower()]!r}?)"
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not close:  # "lables" is far from "label_template" as a whole but close to its first word
        parts = {part: c for c in choices for part in c.split("_") if len(part) > 3}
        close = [parts[p] for p in difflib.get_close_matches(word, parts, n=1, cutoff=0.7)]
    return f" (did you mean {close[0]!r}?)" if close else ""


def loc_of(at: Node | Loc | Any) -> Loc:
    if isinstance(at, Loc):
        return at
    if isinstance(at, Node):
        return at.loc
    return getattr(at, "loc", NOWHERE)


class Where:
    """Side table of field positions for frozen model objects.

    The model keeps one ``loc`` per record; cross-file checks want to point
    at the exact field (``stage: test`` rather than the material's name).
    Objects are keyed by identity and kept alive so an id is never reused.
    """

    def __init__(self) -> None:
        self._table: dict[int, tuple[object, dict[str, Loc]]] = {}

    def put(self, obj: object, name: str, at: Node | Loc | None) -> None:
        if at is None:
            return
        entry = self._table.setdefault(id(obj), (obj, {}))
        entry[1][name] = loc_of(at)

    def moved(self, old: object, new: object) -> None:
        """``new`` replaces ``old`` (``dataclasses.replace``): keep its field positions."""
        entry = self._table.get(id(old))
        if entry is not None:
            self._table[id(new)] = (new, dict(entry[1]))

    def get(self, obj: object, name: str) -> Loc:
        entry = self._table.get(id(obj))
        if entry is not None and name in entry[1]:
            return entry[1][name]
        return loc_of(obj)


# What GoCD's YAML plugin does with keys real files use that it does not know: it reads only the keys it
# knows, so these have no effect there either; the message says what to write instead.
UNKNOWN_KEY_HINTS = {
    ("pipeline", "environment"): ("; GoCD's YAML plugin ignores it too (a pipeline joins an environment by being "
                                  "listed under `environments: NAME: pipelines:`)"),
    ("pipeline", "snippets"): "; GoCD's YAML plugin ignores unknown keys too, so anchors defined under it still work",
    ("stage", "roles"): ("; GoCD's YAML plugin ignores it too, so the approval is not limited to those roles: "
                         "write `approval: {type: manual, roles: [...]}`"),
}


@dataclass(frozen=True)
class ConfigOrigin:
    """The config repository a file is read from, for GoCD's ``type: configrepo`` material.

    GoCD lets a pipeline in a config repository name that repository itself
    as a material (``materials: {git: {type: configrepo}}``); the material
    is then the repository's URL and branch.  Workspace files have no origin.
    """

    repo_id: str
    url: str
    branch: str
    revision: str
    username: str | None = None
    password: str | None = None


class Ctx:
    """Collects problems and holds what a parser needs to know about its surroundings."""

    def __init__(self, format_version: int = 1) -> None:
        self.problems: list[Problem] = []
        self.where = Where()
        self.format_version = format_version
        self.params: Mapping[str, str] | None = None  # None: not inside a pipeline, no substitution
        self.pipeline: str | None = None
        self.templates: dict[str, tuple[Scalar, Node]] = {}
        self.refused_materials: dict[str, set[str]] = {}  # pipeline -> names of its materials that were refused
        self.origin: ConfigOrigin | None = None  # the config repository of the file being read, if any

    # -- reporting -------------------------------------------------------------
    def error(self, at: Node | Loc | Any, message: str) -> None:
        loc = loc_of(at)
        self.problems.append(Problem(loc.file, loc.line, loc.col, message))

    def warn(self, at: Node | Loc | Any, message: str) -> None:
        loc = loc_of(at)
        self.problems.append(Problem(loc.file, loc.line, loc.col, message, "warning"))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    # -- parameters ------------------------------------------------------------
    def sub(self, text: str, at: Node) -> str:
        """GoCD parameter substitution: ``#{name}`` is replaced, ``##`` is a literal ``#``.

        So ``##{x}`` stays ``#{x}``.  A lone ``#`` (a shell comment in a
        script) is kept, where GoCD would refuse it.  Only values are
        substituted, never names (mapping keys): other pieces refer to them.
        """
        params = self.params
        if params is None or "#" not in text:
            return text

        def repl(m: re.Match[str]) -> str:
            if m.group(0) == "##":
                return "#"
            name = m.group(1)
            if not m.group(2):
                self.error(at, f"unterminated parameter reference '#{{{name}' (write ## for a literal #)")
            elif not PARAM_NAME_RE.match(name):
                self.error(at, f"invalid parameter reference '#{{{name}}}' (write ## for a literal #)")
            elif name not in params:
                known = ", ".join(sorted(params)) or "none"
                self.error(at, f"unknown parameter {name!r} in '#{{{name}}}' "
                               f"(parameters of pipeline {self.pipeline!r}: {known}){suggest(name, params)}")
            else:
                return params[name]
            return m.group(0)

        return _PARAM_RE.sub(repl, text)

    # -- shapes ----------------------------------------------------------------
    def mapping(self, node: Node | None, what: str, at: Node | None = None, *, null_ok: bool = True,
                shape: str = "a mapping") -> Map | None:
        """``node`` as a Map; None for null (an error unless ``null_ok``) or a wrong type (an error)."""
        if isinstance(node, Map):
            return node
        if node is None or (isinstance(node, Scalar) and node.is_null):
            if not null_ok:
                self.error(at or node, f"{what} is empty")
            return None
        self.error(at or node, f"{what} must be {shape}, found {describe(node)}")
        return None

    def sequence(self, node: Node | None, what: str, at: Node | None = None) -> Seq | None:
        if isinstance(node, Seq):
            return node
        if node is None or (isinstance(node, Scalar) and node.is_null):
            return None
        self.error(at or node, f"{what} must be a list, found {describe(node)}")
        return None

    def check_keys(self, m: Map, allowed: Iterable[str], what: str, ignored: Mapping[str, str] | None = None) -> None:
        """Unknown keys are errors (with a suggestion); GoCD-only keys are warnings."""
        if not isinstance(allowed, (set, frozenset)):
            allowed = set(allowed)
        ignored = ignored or {}
        for k, _ in m:
            if k.text in allowed:
                continue
            if k.text in ignored:
                self.warn(k, f"{k.text!r} in {what} is GoCD-only and ignored by the workbench{ignored[k.text]}")
                continue
            hint = UNKNOWN_KEY_HINTS.get((what.split(" ")[0], k.text))
            if hint:  # GoCD's plugin ignores it: so do we, saying so
                self.warn(k, f"{k.text!r} in {what} is ignored{hint}")
                continue
            self.error(k, f"unknown key {k.text!r} in {what}{suggest(k.text, sorted(allowed | set(ignored)))}")

    def name(self, key: Scalar | str, what: str) -> str:
        """A pipeline/stage/job/material name, checked as GoCD checks it."""
        text = key.text if isinstance(key, Scalar) else key
        if not NAME_RE.match(text):
            self.error(key if isinstance(key, Scalar) else NOWHERE,
                       f"invalid {what} name {text!r}: use letters, digits, '_', '-' and '.' "
                       "(not first), at most 255 characters")
        return text

    # -- scalars ---------------------------------------------------------------
    def text(self, node: Node | None, what: str, at: Node | None = None) -> str | None:
        """Any non-null scalar as the text written (GoCD reads scalars as strings)."""
        if isinstance(node, Scalar) and not node.is_null and not isinstance(node.value, bytes):
            return self.sub(node.text, node)
        where = node if isinstance(node, Scalar) and not node.is_null else (at or node)
        self.error(where, f"{what} must be a string, found {describe(node)}")
        return None

    def boolean(self, node: Node | None, what: str, at: Node | None = None) -> bool | None:
        if isinstance(node, Scalar):
            if isinstance(node.value, bool):
                return node.value
            if isinstance(node.value, str):
                word = self.sub(node.value, node).strip().lower()
                if word in _TRUE or word in _FALSE:
                    return word in _TRUE
        self.error(node if isinstance(node, Scalar) else (at or node), f"{what} must be true or false, found {describe(node)}")
        return None

    def integer(self, node: Node | None, what: str, lo: int | None = None, hi: int | None = None,
                at: Node | None = None) -> int | None:
        value: int | None = None
        if isinstance(node, Scalar) and not isinstance(node.value, bool):
            if isinstance(node.value, int):
                value = node.value
            elif isinstance(node.value, str):
                word = self.sub(node.value, node).strip()
                if re.fullmatch(r"[+-]?\d+", word):
                    value = int(word)
        if value is None:
            self.error(node if isinstance(node, Scalar) else (at or node), f"{what} must be a whole number, found {describe(node)}")
            return None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = f"from {lo} to {hi}" if hi is not None else f"at least {lo}"
            self.error(node, f"{what} must be {bounds}, found {value}")
            return None
        return value

    def duration(self, node: Node | None, what: str, number_unit: float, at: Node | None = None) -> float | None:
        """Seconds from a number (in ``number_unit`` seconds) or "30s"/"5m"/"1h"/"1h30m".

        0 and ``never`` mean no limit (None), as GoCD's job timeout does.
        """
        if isinstance(node, Scalar) and not isinstance(node.value, bool):
            value = node.value
            if isinstance(value, str):
                value = word = self.sub(value, node).strip().lower()
                if word == "never":
                    return None
                if re.fullmatch(r"\d+(\.\d+)?", word):
                    value = float(word)
                elif re.fullmatch(f"(?:{_DURATION_RE.pattern})+", word):
                    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
                    total = sum(float(n) * scale[u] for n, u in _DURATION_RE.findall(word))
                    return total or None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if not math.isfinite(value) or value < 0:
                    self.error(node, f"{what} must be a positive number or duration, found {node.text}")
                    return None
                return float(value) * number_unit or None
        self.error(node if isinstance(node, Scalar) else (at or node),
                   f"{what} must be a number of {'minutes' if number_unit == 60 else 'seconds'}, "
                   f"a duration such as \"30s\", \"5m\" or \"1h\", or \"never\"; found {describe(node)}"
                   + (f" {node.text!r}" if isinstance(node, Scalar) and isinstance(node.value, str) else ""))
        return None

    def texts(self, node: Node | None, what: str, at: Node | None = None) -> tuple[str, ...]:
        """A list of scalars as strings; null is an empty list."""
        seq = self.sequence(node, what, at)
        if seq is None:
            return ()
        out = []
        for item in seq:
            value = self.text(item, f"each item of {what}")
            if value is not None:
                out.append(value)
        return tuple(out)

    # -- fields of a mapping -----------------------------------------------------
    # The common case (a plain, well-typed scalar) returns early without
    # building any message: these run for every field of every pipeline.

    def _plain_text(self, node: Scalar) -> str:
        text = node.text
        return self.sub(text, node) if self.params is not None and "#" in text else text

    def opt_text(self, m: Map, key: str, what: str, default: str | None = None) -> str | None:
        node = m.get(key)
        if node is None:
            return default
        if type(node) is Scalar:
            if node.value is None:
                return default
            if type(node.value) is str:
                return self._plain_text(node)
        value = self.text(node, f"{key} of {what}", at=m.key(key))
        return default if value is None else value

    def req_text(self, m: Map, key: str, what: str, at: Node | Loc) -> str | None:
        node = m.get(key)
        if node is None or (type(node) is Scalar and node.value is None):
            self.error(m.key(key) or at, f"{what} needs `{key}:`")
            return None
        if type(node) is Scalar and type(node.value) is str:
            return self._plain_text(node)
        return self.text(node, f"{key} of {what}", at=m.key(key))

    def opt_bool(self, m: Map, key: str, what: str, default: bool) -> bool:
        node = m.get(key)
        if node is None:
            return default
        if type(node) is Scalar:
            if type(node.value) is bool:
                return node.value
            if node.value is None:
                return default
        value = self.boolean(node, f"{key} of {what}", at=m.key(key))
        return default if value is None else value

    def opt_texts(self, m: Map, key: str, what: str) -> tuple[str, ...]:
        node = m.get(key)
        if node is None:
            return ()
        if type(node) is Seq and all(type(i) is Scalar and type(i.value) is str for i in node.items):  # type: ignore[attr-defined]
            return tuple(self._plain_text(i) for i in node.items)  # type: ignore[arg-type]
        return self.texts(node, f"{key} of {what}", at=m.key(key))

    def opt_choice(self, m: Map, key: str, what: str, choices: Iterable[str], default: str) -> str:
        value = self.opt_text(m, key, what)
        if value is None:
            return default
        if value not in choices:
            choices = list(choices)
            self.error(m.get(key), f"{key} of {what} must be one of {', '.join(choices)}; "
                                   f"found {value!r}{suggest(value, choices)}")
            return default
        return value


# -- pieces shared by every level -------------------------------------------------


def named(name: str | Scalar, node: Node | None, what: str, ctx: Ctx) -> tuple[str, Node | Loc]:
    """A piece's name (checked) and where to report problems about the piece as a whole."""
    if isinstance(name, Scalar):
        return ctx.name(name, what), name
    return name, (node.loc if node is not None else Loc())


def loc_at(at: Node | Loc) -> Loc:
    return at if isinstance(at, Loc) else at.loc


def is_null(node: Node | None) -> bool:
    """Absent or written as null (``key:`` with nothing after it)."""
    return node is None or (isinstance(node, Scalar) and node.is_null)


def body(node: Node | None, what: str, at: Node | Loc, hint: str, ctx: Ctx) -> Map | None:
    """The mapping that defines a named piece; null is "empty" with a hint of what it needs."""
    if is_null(node):
        ctx.error(at, f"{what} is empty{hint}")
        return None
    return ctx.mapping(node, what, at if isinstance(at, Node) else None)


# -- secrets ---------------------------------------------------------------------


def looks_like_ciphertext(value: str) -> bool:
    """True for a Fernet token, the only ciphertext the workbench can decrypt.

    A token is urlsafe base64 of version byte 0x80, an 8-byte timestamp, a
    16-byte IV, the AES blocks and a 32-byte HMAC: at least 57 bytes.  Checked
    by hand so that loading a config does not need ``cryptography``.
    """
    if not isinstance(value, str) or len(value) % 4 or not _URLSAFE_B64.fullmatch(value):
        return False
    try:
        raw = base64.b64decode(value.encode("ascii"), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return False
    return len(raw) >= 57 and raw[0] == 0x80


def _secret_problem(value: str | None, name: str) -> str | None:
    if value is not None and looks_like_ciphertext(value):
        return None
    if value is not None and value.startswith("AES:"):
        return (f"secure variable {name} holds GoCD server-side ciphertext (AES:...), which the workbench cannot "
                "decrypt; re-encrypt the plain value with `workbench encrypt`")
    if value is not None and looks_like_gocd_des(value):
        return (f"secure variable {name} holds GoCD server-side ciphertext (GoCD's older DES form, from before AES:), "
                "which the workbench cannot decrypt; re-encrypt the plain value with `workbench encrypt`")
    return f"secure variable {name} is not ciphertext (run `workbench encrypt`)"


_STD_B64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def looks_like_gocd_des(value: str) -> bool:
    """True for what GoCD servers before the ``AES:`` form wrote: base64 of DES blocks (whole 8-byte blocks).

    A value that is not base64 of whole blocks cannot be such ciphertext;
    one that is might in theory be a plain password, but a message that
    says "GoCD ciphertext, re-encrypt it" is right for it either way.
    """
    if len(value) < 12 or len(value) % 4 or not _STD_B64.fullmatch(value):
        return False
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(raw) >= 8 and len(raw) % 8 == 0


def parse_variables(m: Map, what: str, ctx: Ctx) -> tuple[dict[str, str], dict[str, str]]:
    """``environment_variables`` and ``secure_variables`` of a pipeline/stage/job/environment.

    Values are strings as written (GoCD prints ``1.50`` as ``1.50``, null as
    empty).  A name used in both mappings is reported at its later place.
    """
    plain: dict[str, str] = {}
    secure: dict[str, str] = {}
    entries: list[tuple[Scalar, Node, bool]] = []
    for key, is_secure in (("environment_variables", False), ("secure_variables", True)):
        node = m.get(key)
        if node is not None:
            entries.extend((k, v, is_secure) for k, v in ctx.mapping(node, f"{key} of {what}", m.key(key)) or ())
    if len(entries) > 1 and any(e[2] for e in entries) and not all(e[2] for e in entries):
        entries.sort(key=lambda e: (e[0].line, e[0].col))
    seen: set[str] = set()
    for k, v, is_secure in entries:
        name = k.text
        if not name or "=" in name or "\0" in name:
            ctx.error(k, f"invalid environment variable name {name!r}")
            continue
        if name in seen:
            ctx.error(k, f"environment variable {name} is defined twice in {what}")
            continue
        seen.add(name)
        if is_null(v):
            value: str | None = None
        elif isinstance(v, Scalar):
            value = ctx.text(v, f"environment variable {name}")
        else:  # never echo a value: it may be a secret
            ctx.error(k, f"the value of environment variable {name} must be a string, found {describe(v)}")
            continue
        if is_secure:
            problem = _secret_problem(value, name)
            if problem:
                ctx.error(k, problem)
            else:
                secure[name] = value or ""
        else:
            plain[name] = value or ""
    return plain, secure
