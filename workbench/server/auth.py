"""Who is calling the release service, proven, never asserted.

Order of evidence, first match wins:

1. ``Authorization: Bearer wb_…`` (or ``token wb_…``): one of the server's API tokens;
2. ``Authorization: Bearer|token OTHER``: a JupyterHub token (a user's
   ``JUPYTERHUB_API_TOKEN``), which the hub is asked about (``hub`` below);
3. the hub sign-in cookie of a browser (``hub``);
4. ``X-Remote-User`` from a configured trusted proxy (``server.trusted_proxies``)
   — from any other address these headers, like ``X-Forwarded-User`` and
   ``JUPYTERHUB_USER`` in anybody's environment, are ignored.

No evidence is anonymous (``None``): reads only when ``server.anonymous_read``
is on, writes never. Bad evidence (unknown, revoked or expired token, a token
the hub does not know) is :class:`~workbench.errors.NotSignedIn`, not anonymous.
"""
from __future__ import annotations

from typing import Any, Mapping, Protocol

from ..errors import NotSignedIn, Unauthorized
from ..identity import Identity
from . import tokens

CSRF_COOKIE = "workbench-csrf"
CSRF_HEADER = "x-workbench-csrf"


class HubIdentities(Protocol):
    """What the JupyterHub integration offers the authenticator (workbench.server.hub)."""

    def identity_for_token(self, token: str) -> Identity | None: ...

    def identity_for_cookies(self, cookies: Mapping[str, str]) -> Identity | None: ...


def bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() in ("bearer", "token") and token.strip():
        return token.strip()
    return None


class Authenticator:
    def __init__(self, store: Any, *, hub: HubIdentities | None = None, trusted_proxies: tuple[str, ...] = (),
                 anonymous_read: bool = False) -> None:
        self.store = store
        self.hub = hub
        self.trusted_proxies = frozenset(trusted_proxies)
        self.anonymous_read = anonymous_read

    def identify(self, headers: Mapping[str, str], cookies: Mapping[str, str], client: str | None, *,
                 marker: Any = None) -> tuple[Identity | None, bool]:
        """``(identity or None, by_cookie)``; raises NotSignedIn for evidence that does not hold.

        ``marker``: the store's change marker just read by the caller (``tokens.verify``)."""
        token = bearer(headers)
        if token is not None:
            if tokens.looks_like_ours(token):
                return tokens.verify(self.store, token, marker), False
            if self.hub is not None:
                who = self.hub.identity_for_token(token)
                if who is not None:
                    return who, False
            raise NotSignedIn("the token is not known" + ("" if self.hub else " (no JupyterHub is configured)"))
        if self.hub is not None:
            who = self.hub.identity_for_cookies(cookies)
            if who is not None:
                return who, True
        if client is not None and client in self.trusted_proxies:
            user = (headers.get("x-remote-user") or "").strip()
            if user:
                return Identity(user, via="proxy"), False
        return None, False

    @staticmethod
    def check_csrf(method: str, headers: Mapping[str, str], cookies: Mapping[str, str], host: str | None) -> None:
        """A browser's cookie-signed POST must carry the CSRF cookie's value in a header and come from our origin."""
        if method in ("GET", "HEAD", "OPTIONS"):
            return
        origin = headers.get("origin")
        if origin and host and origin.split("://", 1)[-1].rstrip("/") != host:
            raise Unauthorized(f"cross-site request from {origin} refused")
        cookie, header = cookies.get(CSRF_COOKIE), headers.get(CSRF_HEADER)
        if not cookie or not header or cookie != header:
            raise Unauthorized("a signed-in browser's request needs the X-Workbench-CSRF header (cross-site protection)")
