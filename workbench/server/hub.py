"""``workbench server`` as a JupyterHub service: who a hub token belongs to, and browser sign-in.

Everything OAuth is JupyterHub's own ``HubOAuth`` used as a library: its
``login_url``, ``generate_state``, PKCE challenge, ``token_for_code`` and
``user_for_token`` (with its cache, kept short so that a revoked token stops
working within ``server.hub.cache_seconds``). Its tornado helpers (``set_state_cookie``,
``set_cookie``) need a tornado handler, so the two cookies they would write
are ours instead, encrypted with a Fernet key kept in the workspace's state
folder (``.workbench/hub-cookie.key``, mode 0600):

* the OAuth state cookie (``hub.state_cookie_name``) carries the state id, the
  page to return to and the PKCE verifier through the round trip to the hub;
* the session cookie (``hub.cookie_name``, i.e. the OAuth client id) holds the
  hub access token the code was exchanged for. Each request with it asks the
  hub (through the cache) who the token belongs to, so signing out of the hub
  or revoking the token ends the session here too.

Alongside the session goes the CSRF cookie ``workbench-csrf`` (random,
readable by the page's JavaScript), which ``auth.Authenticator.check_csrf``
requires back in the ``X-Workbench-CSRF`` header of cookie-signed POSTs.

What a hub token may do: it must carry the hub's access scope for this
service (``access:services!service=NAME``, the service's
``JUPYTERHUB_OAUTH_ACCESS_SCOPES``) — JupyterHub's own rule for services
(``HubOAuthenticated.hub_scopes``); OAuth tokens from the sign-in always do, a
notebook's ``$JUPYTERHUB_API_TOKEN`` does when ``c.Spawner.server_token_scopes``
lists it. Then it acts (scope ``act``) and the pipelines' ``roles:`` decide;
without the scope it is refused (403, audited under its owner). A token the
hub does not know is no identity (401).

Groups are not in every token's view of its owner (that needs the
``read:users:groups`` scope on the token itself), so they are looked up with
the service's own token, which the hub's ``load_roles`` grants (docs/server.md, Behind JupyterHub).
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote, urlencode

# at module level: FastAPI resolves the handlers' annotations (strings, with the __future__ import) in these globals
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ..errors import StoreError, Unauthorized
from ..identity import ACT, Identity
from .auth import CSRF_COOKIE

log = logging.getLogger("workbench.server.hub")

CACHE_SECONDS = 30  # how long the hub's answer about a token (and a user's groups) is trusted
SESSION_SECONDS = 12 * 3600  # a session cookie older than this is ignored (the hub token may live longer)
KEY_FILE = "hub-cookie.key"


class Hub:
    """The hub this server is a service of: token identities and the pieces of the OAuth round trip."""

    def __init__(self, auth: Any, *, service_name: str, prefix: str, cache_seconds: int = CACHE_SECONDS,
                 public_url: str = "") -> None:
        self.auth = auth  # jupyterhub.services.auth.HubOAuth
        self.service_name = service_name
        self.cache_seconds = cache_seconds  # 0: ask the hub on every request
        self.public_url = public_url  # the hub's public URL when known: https there means Secure cookies
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self._key_dir: Path | None = None
        self._fernet: Any = None
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Hub(service={self.service_name!r}, api={self.auth.api_url!r}, prefix={self.prefix!r})"

    # -- the cookie key ----------------------------------------------------------------
    def attach(self, state_dir: Path) -> None:
        """Keep the cookie key in ``state_dir`` (the workspace's .workbench/), so sessions survive restarts."""
        self._key_dir = Path(state_dir)

    @property
    def fernet(self) -> Any:
        """The Fernet of the key file, created 0600 on first use (O_EXCL: two processes agree on one key)."""
        from cryptography.fernet import Fernet

        with self._lock:
            if self._fernet is None:
                if self._key_dir is None:
                    raise RuntimeError("Hub.attach(state_dir) was not called")
                self._key_dir.mkdir(parents=True, exist_ok=True)
                path = self._key_dir / KEY_FILE
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:
                    key = path.read_bytes().strip()
                else:
                    key = Fernet.generate_key()
                    with os.fdopen(fd, "wb") as f:
                        f.write(key + b"\n")
                if path.stat().st_mode & 0o077:
                    os.chmod(path, 0o600)
                self._fernet = Fernet(key)
            return self._fernet

    def seal(self, data: Mapping[str, Any]) -> str:
        return self.fernet.encrypt(json.dumps(dict(data)).encode()).decode()

    def unseal(self, value: str | None, max_age: int) -> dict[str, Any] | None:
        """The sealed data, or None when missing, forged, from another key, or older than ``max_age``."""
        from cryptography.fernet import InvalidToken

        if not value:
            return None
        try:
            data = json.loads(self.fernet.decrypt(value.encode(), ttl=max_age))
        except (InvalidToken, ValueError, UnicodeError):
            return None
        return data if isinstance(data, dict) else None

    # -- identities ------------------------------------------------------------------------
    def identity_for_token(self, token: str) -> Identity | None:
        """The hub's owner of ``token`` (a user's JUPYTERHUB_API_TOKEN, an OAuth token), None if the hub does not know it."""
        from jupyterhub.services.auth import check_scopes

        try:
            model = self.auth.user_for_token(token, use_cache=self.cache_seconds > 0)
        except Exception as exc:  # tornado HTTPError (hub down, our token refused): not the caller's fault
            raise StoreError(f"JupyterHub at {self.auth.api_url} could not check the token: {exc}") from None
        if not model or not model.get("name"):
            return None
        name = str(model["name"])
        kind = model.get("kind") or "user"
        who = f"service:{name}" if kind == "service" else name
        if not check_scopes(self.auth.access_scopes, set(model.get("scopes") or ())):
            # the hub's own rule for its services (HubOAuthenticated.hub_scopes): signed in, not permitted
            raise Unauthorized(
                f"{who}'s JupyterHub token may not use the {self.service_name} service: it lacks the scope "
                f"{' or '.join(sorted(self.auth.access_scopes))} (grant it in jupyterhub_config.py, e.g. "
                f"c.Spawner.server_token_scopes for notebook tokens; docs/server.md)", user=who)
        if kind == "service":
            return Identity(who, via="hub", scope=ACT)
        groups = model.get("groups")
        return Identity(name, frozenset(groups) if isinstance(groups, list) else self.groups_of(name),
                        via="hub", scope=ACT)

    def identity_for_cookies(self, cookies: Mapping[str, str]) -> Identity | None:
        """The person of a browser's session cookie (set by :meth:`finish_login`), None without a valid one."""
        if self._key_dir is None:
            return None
        session = self.unseal(cookies.get(self.session_cookie), SESSION_SECONDS)
        if not session or not isinstance(session.get("token"), str):
            return None
        return self.identity_for_token(session["token"])

    def groups_of(self, user: str) -> frozenset[str]:
        """``user``'s hub groups, asked with the service's token (``read:users:groups``), cached briefly."""
        import httpx

        now = time.monotonic()
        with self._lock:
            hit = self._groups.get(user)
            if hit and now - hit[0] < self.cache_seconds:
                return hit[1]
        url = f"{self.auth.api_url.rstrip('/')}/users/{quote(user, safe='')}"
        try:
            r = httpx.get(url, headers={"Authorization": f"token {self.auth.api_token}"}, timeout=10)
        except httpx.HTTPError as exc:
            raise StoreError(f"JupyterHub at {self.auth.api_url} does not answer: {exc}") from None
        if r.status_code == 403:
            log.warning("the hub refuses to list %s's groups: grant the service read:users:groups (docs/server.md, Behind JupyterHub)", user)
            groups: frozenset[str] = frozenset()
        elif r.status_code >= 400:
            raise StoreError(f"JupyterHub answered {r.status_code} for {user}'s groups")
        else:
            groups = frozenset(r.json().get("groups") or ())
        with self._lock:
            self._groups[user] = (now, groups)
        return groups

    # -- browser sign-in ----------------------------------------------------------------------
    @property
    def session_cookie(self) -> str:
        return self.auth.cookie_name

    @property
    def callback_path(self) -> str:
        """The path of the service's OAuth redirect URI (JUPYTERHUB_OAUTH_CALLBACK_URL; ``{prefix}oauth_callback``)."""
        from urllib.parse import urlparse

        return urlparse(self.auth.oauth_redirect_uri).path or self.prefix + "oauth_callback"

    def start_login(self, next_url: str, existing: Mapping[str, str]) -> tuple[str, str, str]:
        """``(authorize URL, state cookie name, sealed state)`` to send a browser to the hub's sign-in."""
        verifier, challenge, method = self.auth.generate_pkce_code_challenge()
        cookie = self.auth.state_cookie_name
        extra: dict[str, Any] = {"code_verifier": verifier}
        if cookie in existing:  # another sign-in under way in this browser (as HubOAuth.set_state_cookie does)
            cookie = f"{cookie}-{secrets.token_hex(4)}"
            extra["cookie_name"] = cookie
        state_id = self.auth.generate_state(self._safe_next(next_url), **extra)
        sealed = self.seal({"state": state_id, "next": self._safe_next(next_url), "verifier": verifier})
        sep = "&" if "?" in self.auth.login_url else "?"
        url = self.auth.login_url + sep + urlencode({"state": state_id, "code_challenge": challenge,
                                                      "code_challenge_method": method})
        return url, cookie, sealed

    def finish_login(self, code: str, state_id: str, cookies: Mapping[str, str]) -> tuple[str, str, str]:
        """Check the state, exchange the code: ``(next URL, sealed session, CSRF token)``.

        Raises ValueError for a state that does not match this browser's cookie
        (a forged or replayed callback) or a code the hub refuses, and StoreError
        when the hub cannot be asked.
        """
        cookie = self.auth.get_state_cookie_name(state_id)
        state = self.unseal(cookies.get(cookie), self.auth.oauth_state_max_age)
        self.auth.clear_oauth_state(state_id)
        if not state or not secrets.compare_digest(str(state.get("state")), state_id):
            raise ValueError("the sign-in state does not match this browser's; sign in again")
        try:
            token = self.auth.token_for_code(code, code_verifier=state.get("verifier"))
        except Exception as exc:  # tornado HTTPError from the hub's token endpoint
            # HubAuth turns the hub's 4xx into "Failed to check authorization: …" (a bad, used or expired
            # code: the browser's to retry) and a hub that is down or failing into other messages (ours: 503)
            if "Failed to check authorization" in str(exc):
                raise ValueError(f"JupyterHub refused the sign-in code (expired or used already): {exc}") from None
            raise StoreError(f"JupyterHub could not finish the sign-in: {exc}") from None
        if self.identity_for_token(token) is None:
            raise StoreError("JupyterHub issued a token it does not recognise")
        return self._safe_next(state.get("next")), self.seal({"token": token}), secrets.token_urlsafe(24)

    def cookie_options(self, request: Any, name: str) -> dict[str, Any]:
        """``path`` and ``secure`` of one of our cookies, as HubOAuth would set them.

        Secure when the hub's public URL ($JUPYTERHUB_PUBLIC_URL) or the request is
        https (the hub's proxy says so in X-Forwarded-Proto; believing it can only
        add the flag); a ``__Host-`` name (the hub's cookie_host_prefix_enabled)
        must be Secure with path ``/``.
        """
        forwarded = (request.headers.get("x-forwarded-proto") or "").split(",")[0].strip().lower()
        secure = (self.public_url.startswith("https:") or request.url.scheme == "https" or forwarded == "https"
                  or self.auth.oauth_redirect_uri.startswith("https:"))
        if name.startswith("__Host-"):
            return {"path": "/", "secure": True}
        return {"path": self.prefix, "secure": secure}

    def state_cookies(self, cookies: Mapping[str, str]) -> list[str]:
        return [name for name in cookies if name.startswith(self.auth.state_cookie_name)]

    def _safe_next(self, next_url: Any) -> str:
        """Only a path under our prefix: the callback must not become an open redirect."""
        if isinstance(next_url, str) and next_url.startswith(self.prefix) and "//" not in next_url \
                and "\\" not in next_url:
            return next_url
        return self.prefix


def from_settings(hub: Any = None, environ: Mapping[str, str] | None = None) -> Hub | None:
    """The hub of ``server.hub`` (workbench.yaml) and the hub service's environment; None when neither says one.

    A hub-managed service gets JUPYTERHUB_API_TOKEN, JUPYTERHUB_SERVICE_NAME,
    JUPYTERHUB_API_URL, JUPYTERHUB_SERVICE_PREFIX, JUPYTERHUB_CLIENT_ID,
    JUPYTERHUB_OAUTH_CALLBACK_URL and JUPYTERHUB_OAUTH_ACCESS_SCOPES from the
    hub, so it needs no ``server.hub`` at all. An external service sets what the
    hub cannot give it in ``server.hub`` (``api_url``, ``service_name``,
    ``api_token: "${VAR}"``); the rest default the way the hub defaults them
    (``/services/NAME/``, ``service-NAME``, ``{prefix}oauth_callback``). A
    single-user server's environment has a token but no service name: no hub
    unless ``server.hub`` says otherwise. ``server.hub`` present but a name or
    token missing is a UsageError naming what is missing.
    """
    from ..errors import UsageError
    from ..settings import HubSettings, expand_secret

    env = os.environ if environ is None else environ
    hub = hub if hub is not None else HubSettings()
    name = (hub.service_name or env.get("JUPYTERHUB_SERVICE_NAME") or "").strip()
    token = (expand_secret(hub.api_token) if hub.api_token else env.get("JUPYTERHUB_API_TOKEN", "")).strip()
    if not hub.configured and not (name and token):
        return None
    missing = [what for what, ok in (("service_name (or $JUPYTERHUB_SERVICE_NAME)", name),
                                     ("api_token (or $JUPYTERHUB_API_TOKEN)", token)) if not ok]
    if missing:
        raise UsageError(f"workbench.yaml server.hub: no {' and no '.join(missing)}; a hub-managed service gets "
                         "both from the hub, an external one needs them set (docs/server.md, Behind JupyterHub)")
    from jupyterhub.services.auth import HubOAuth

    prefix = hub.prefix or env.get("JUPYTERHUB_SERVICE_PREFIX") or f"/services/{name}/"
    if not prefix.endswith("/"):
        prefix += "/"
    kwargs: dict[str, Any] = {
        "api_token": token, "base_url": prefix, "cache_max_age": max(hub.cache_seconds, 1),
        "oauth_client_id": hub.client_id or env.get("JUPYTERHUB_CLIENT_ID") or f"service-{name}",
    }
    api_url = hub.api_url or env.get("JUPYTERHUB_API_URL")
    if api_url:
        kwargs["api_url"] = api_url
    callback = hub.oauth_callback_url or env.get("JUPYTERHUB_OAUTH_CALLBACK_URL")
    kwargs["oauth_redirect_uri"] = callback or prefix + "oauth_callback"
    scopes = env.get("JUPYTERHUB_OAUTH_ACCESS_SCOPES")
    kwargs["access_scopes"] = set(json.loads(scopes)) if scopes else {f"access:services!service={name}"}
    return Hub(HubOAuth(**kwargs), service_name=name, prefix=prefix, cache_seconds=hub.cache_seconds,
               public_url=env.get("JUPYTERHUB_PUBLIC_URL", ""))


def add_routes(app: Any, state: Any) -> None:
    """``{prefix}oauth_callback`` (the service's OAuth redirect URI) and ``{prefix}logout``; nothing without a hub."""
    hub = getattr(state.auth, "hub", None)
    if not isinstance(hub, Hub):
        return
    hub.attach(state.ws.state)

    @app.get(hub.callback_path, include_in_schema=False)
    def oauth_callback(request: Request, code: str = "", state: str = "", error: str = "",
                       error_description: str = "") -> Response:
        """Finish the hub's sign-in: exchange the code, set the session and CSRF cookies, go back to the page."""
        if error or not code or not state:
            return _problem(400, f"sign-in failed: {error_description or error or 'no code or state in the callback'}",
                            hub.prefix)
        try:
            next_url, session, csrf = hub.finish_login(code, state, request.cookies)
        except ValueError as exc:
            return _problem(403, str(exc), hub.prefix)
        response = RedirectResponse(next_url, status_code=302)
        for name in hub.state_cookies(request.cookies):
            response.delete_cookie(name, **hub.cookie_options(request, name))
        response.set_cookie(hub.session_cookie, session, httponly=True, samesite="lax", max_age=SESSION_SECONDS,
                            **hub.cookie_options(request, hub.session_cookie))
        response.set_cookie(CSRF_COOKIE, csrf, httponly=False, samesite="lax", max_age=SESSION_SECONDS,
                            **hub.cookie_options(request, CSRF_COOKIE))
        log.info("signed in through the hub: %s", hub.identity_for_cookies({hub.session_cookie: session}))
        return response

    @app.get(hub.prefix + "logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        """Forget this browser's session here, then sign out of the hub as well."""
        response = RedirectResponse(hub.auth.hub_prefix + "logout", status_code=302)
        response.delete_cookie(hub.session_cookie, **hub.cookie_options(request, hub.session_cookie))
        response.delete_cookie(CSRF_COOKIE, **hub.cookie_options(request, CSRF_COOKIE))
        return response

    def _problem(status: int, message: str, prefix: str) -> HTMLResponse:
        import html

        return HTMLResponse(f"<!doctype html><title>Sign-in failed</title><p>{html.escape(message)}</p>"
                            f'<p><a href="{html.escape(prefix)}">Try again</a></p>', status_code=status)


def login_redirect(hub: Hub, request: Any) -> Any:
    """The response that sends an unsigned browser to the hub's sign-in and back to this page."""
    from fastapi.responses import RedirectResponse

    next_url = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    url, cookie, sealed = hub.start_login(next_url, request.cookies)
    response = RedirectResponse(url, status_code=302)
    response.set_cookie(cookie, sealed, httponly=True, samesite="lax", max_age=hub.auth.oauth_state_max_age,
                        **hub.cookie_options(request, cookie))
    return response
