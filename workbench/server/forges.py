"""What a forge's webhook delivery says, decided without a server: signature, event, repository.

Plain functions over ``(headers, body)`` so every rule here is unit-tested
without processes (tests/test_forges.py); ``workbench.server.webhooks`` is
the HTTP adapter that reads the request, calls these, stores the delivery and
tells the scheduler. Headers are given as any mapping and looked up by their
lower-case names.

Why the signature is checked over the raw bytes, before any parsing: a body
nobody signed is not looked at (no JSON parser sees hostile input from an
unauthenticated caller), and the HMAC the forge computed is over exactly the
bytes it sent. Only ``hmac`` and ``hashlib`` do cryptography here; every
comparison is :func:`hmac.compare_digest`.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..materials.git import normalize_url

__all__ = ["FORGES", "Forge", "Payload", "PayloadError", "check_signature", "comparable", "delivery_id",
           "event_of", "kind_of", "matching_keys", "parse_payload"]

MAX_ID = 128  # longer delivery ids are stored as their hash
MAX_URLS = 32  # repository URLs taken from one payload
MAX_URL = 2000


@dataclass(frozen=True)
class Forge:
    """How one forge names its event, its delivery and its signature (headers in lower case)."""

    name: str
    event_headers: tuple[str, ...]
    delivery_headers: tuple[str, ...]
    push_events: frozenset[str]
    ping_events: frozenset[str]


FORGES: dict[str, Forge] = {
    "github": Forge("github", ("x-github-event",), ("x-github-delivery",),
                    frozenset({"push"}), frozenset({"ping"})),
    "gitlab": Forge("gitlab", ("x-gitlab-event",), ("x-gitlab-event-uuid",),
                    frozenset({"Push Hook", "Tag Push Hook"}), frozenset()),
    # Forgejo sends both its own and Gitea's headers; a Forgejo-only sender is accepted too
    "gitea": Forge("gitea", ("x-gitea-event", "x-forgejo-event", "x-gogs-event"),
                   ("x-gitea-delivery", "x-forgejo-delivery"), frozenset({"push"}), frozenset({"ping"})),
    # X-Hook-UUID names the webhook, not the delivery (every delivery of a hook repeats it): not an id
    "bitbucket": Forge("bitbucket", ("x-event-key",), ("x-request-uuid", "x-request-id"),
                       frozenset({"repo:push", "repo:refs_changed"}), frozenset({"diagnostics:ping"})),
}


class PayloadError(ValueError):
    """The body is not the JSON object a forge sends."""


@dataclass(frozen=True)
class Payload:
    """What a push names: the repository's URLs (every spelling the forge gave) and the ref."""

    urls: tuple[str, ...]
    ref: str | None

    @property
    def repository(self) -> str | None:
        """The URL shown in listings: the first one the payload gave."""
        return self.urls[0] if self.urls else None


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _raw(header: str) -> bytes:
    """A header value as the bytes on the wire (HTTP servers decode headers as latin-1)."""
    return header.strip().encode("latin-1", "replace")


def _hmac_hex(secret: str, body: bytes) -> bytes:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()


def check_signature(forge: str, headers: Mapping[str, str], body: bytes, secret: str) -> str | None:
    """None when the delivery proves it knows ``secret``; else why not, in words (for the deliveries table).

    GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>``; GitLab: ``X-Gitlab-Token`` is
    the secret itself; Gitea/Forgejo: ``X-Gitea-Signature`` / ``X-Forgejo-Signature``, the bare hex HMAC;
    Bitbucket Cloud and Server: ``X-Hub-Signature: sha256=<hex>``. The older SHA-1 signatures are refused.
    """
    h = _lower(headers)
    if forge == "gitlab":
        token = h.get("x-gitlab-token")
        if token is None:
            return "no X-Gitlab-Token header"
        return None if hmac.compare_digest(_raw(token), secret.encode()) else "X-Gitlab-Token does not match the secret"
    if forge == "gitea":
        names = ("x-gitea-signature", "x-forgejo-signature")
        given = next((h[n] for n in names if n in h), None)
        if given is None:
            return "no X-Gitea-Signature (or X-Forgejo-Signature) header"
        return None if hmac.compare_digest(_raw(given).lower(), _hmac_hex(secret, body)) else "signature does not match"
    header = {"github": "x-hub-signature-256", "bitbucket": "x-hub-signature"}.get(forge)
    if header is None:
        raise ValueError(f"unknown forge {forge!r}")
    shown = "X-Hub-Signature-256" if forge == "github" else "X-Hub-Signature"
    given = h.get(header)
    if given is None:
        return f"no {shown} header"
    algo, sep, digest = given.strip().partition("=")
    if not sep or algo.lower() != "sha256":
        return f"{shown} is not sha256=<hex>"
    return None if hmac.compare_digest(_raw(digest).lower(), _hmac_hex(secret, body)) else "signature does not match"


def event_of(forge: str, headers: Mapping[str, str]) -> str:
    """The event the forge says this is (``push``, ``Push Hook``, ``repo:push``, ...); empty when unsaid."""
    h = _lower(headers)
    for name in FORGES[forge].event_headers:
        if h.get(name, "").strip():
            return h[name].strip()[:100]
    return ""


def kind_of(forge: str, event: str) -> str:
    """``push`` (poll the repository), ``ping`` (the forge tests the hook) or ``other`` (ignored)."""
    f = FORGES[forge]
    if event in f.push_events:
        return "push"
    if event in f.ping_events:
        return "ping"
    return "other"


def delivery_id(forge: str, headers: Mapping[str, str], body: bytes | None) -> str:
    """The forge's id of this delivery; without one, ``sha256:<hex of the body>`` (a resent body is a replay).

    ``body`` None: the body was not read (refused before it), and there is no id to show but the header's.
    """
    h = _lower(headers)
    for name in FORGES[forge].delivery_headers:
        value = h.get(name, "").strip()
        if value:
            if len(value) > MAX_ID or not value.isprintable():
                return "sha256:" + hashlib.sha256(_raw(value)).hexdigest()
            return value
    return "(body not read)" if body is None else "sha256:" + hashlib.sha256(body).hexdigest()


def parse_payload(body: bytes, content_type: str | None = None) -> Payload:
    """The repository URLs and ref of a push body (JSON, or GitHub's form-encoded ``payload=``)."""
    text: bytes | str = body
    if (content_type or "").split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        try:
            form = parse_qs(body.decode("utf-8"), strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            raise PayloadError("the form body is malformed") from None
        if len(form.get("payload", ())) != 1:
            raise PayloadError("a form body needs exactly one payload= field")
        text = form["payload"][0]
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise PayloadError("the body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise PayloadError("the body is not a JSON object")
    return Payload(urls=tuple(_urls(doc)), ref=_ref(doc))


_URL_KEYS = ("clone_url", "git_http_url", "git_ssh_url", "ssh_url", "git_url", "http_url", "html_url", "web_url",
             "homepage", "url")


def _urls(doc: Mapping[str, Any]) -> list[str]:
    """Every URL the payload gives for its repository, first the ones a material is likeliest to use."""
    found: list[str] = []

    def add(value: Any) -> None:
        if isinstance(value, str) and value.strip() and len(value) <= MAX_URL and value not in found:
            found.append(value.strip())

    for section in ("repository", "project"):  # GitHub/Gitea/Bitbucket: repository; GitLab: project too
        repo = doc.get(section)
        if not isinstance(repo, dict):
            continue
        for key in _URL_KEYS:
            add(repo.get(key))
        links = repo.get("links")
        if isinstance(links, dict):
            for rel in ("clone", "html", "self"):
                entries = links.get(rel)
                for entry in entries if isinstance(entries, list) else [entries]:
                    if isinstance(entry, dict):
                        add(entry.get("href"))
    return found[:MAX_URLS]


def _ref(doc: Mapping[str, Any]) -> str | None:
    ref = doc.get("ref")
    if isinstance(ref, str):
        return ref[:255]
    changes = doc.get("changes")  # Bitbucket Server
    if isinstance(changes, list) and changes and isinstance(changes[0], dict):
        value = changes[0].get("refId")
        if isinstance(value, str):
            return value[:255]
    push = doc.get("push")  # Bitbucket Cloud
    if isinstance(push, dict) and isinstance(push.get("changes"), list) and push["changes"]:
        new = push["changes"][0].get("new") if isinstance(push["changes"][0], dict) else None
        if isinstance(new, dict) and isinstance(new.get("name"), str):
            return new["name"][:255]
    return None


_SCP = re.compile(r"^(?:[\w.+-]+@)([\w.-]+):(?!//)(.+)$")  # git@host:owner/repo, as git.normalize_url reads it
_REMOTE = ("http", "https", "ssh", "git", "git+ssh", "ssh+git")


def comparable(url: str, base: Path | None = None) -> str | None:
    """One spelling per repository, whichever way it was written; None for what is no repository URL.

    ``https://host/owner/repo.git``, ``ssh://git@host:22/owner/repo``, ``git@host:owner/repo.git`` and
    ``http://host/Owner/Repo/`` are all ``host/owner/repo`` (forges treat owner and name case-blind); a
    local path or ``file://`` URL is the absolute path ``git.normalize_url`` gives a material.
    """
    url = url.strip()
    if not url or len(url) > MAX_URL:
        return None
    m = _SCP.match(url)
    if "://" in url and not url.startswith("file://"):
        parts = urlsplit(url)
        if parts.scheme.lower() not in _REMOTE or not parts.hostname:
            return None
        host, path = parts.hostname.lower(), parts.path
    elif m and not url.startswith("file://"):
        host, path = m.group(1).lower(), m.group(2)
    else:
        try:
            return normalize_url(url, base).removesuffix("/").removesuffix(".git")
        except (OSError, ValueError, RuntimeError):
            return None
    path = re.sub(r"/+", "/", path).strip("/").removesuffix(".git").lower()
    return f"{host}/{path}" if path else None


def matching_keys(materials: Iterable[tuple[str, str]], urls: Iterable[str], base: Path | None = None) -> list[str]:
    """The keys of the materials a push concerns: ``materials`` is ``(url as configured, key)`` pairs."""
    wanted = {c for c in (comparable(u, base) for u in urls) if c is not None}
    if not wanted:
        return []
    return sorted({key for url, key in materials if comparable(url, base) in wanted})
