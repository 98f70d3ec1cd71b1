"""The three reads a team polls, answered from the read cache before FastAPI routes the request.

Fifty people watching the board send ``GET status``, ``approvals`` and
``history`` many times a second, and between two writes to the store the
answer is the same object (``workbench.service.cache``) whose JSON is kept
with it. What such a request cost was FastAPI's: its routing, dependency
solving, ``Request`` and ``Response`` objects and the middleware stack, about
half of the event loop's time under ``wrk -c50`` (benchmarks/README.md,
issue 14). This pure-ASGI middleware answers exactly that case and nothing
else, with the same parts the endpoints use:

* the caller is established by the same ``Authenticator.identify`` the
  endpoints' ``reader`` calls, and only when that needs no network: one of
  our API tokens (verified against the store's change marker, so a revoked
  token is refused from the next request on), or no credentials at all
  without a hub (a trusted proxy's ``X-Remote-User``; anonymous only when
  ``server.anonymous_read`` is on);
* the answer is ``workbench.service.reads.cached_read``'s, sent as the
  endpoint sends it (the same bytes, ``content-length`` and
  ``content-type``).

Everything else falls through to the FastAPI app unchanged: a cache miss,
a refused or unknown token (the endpoint answers the 401 with its reason), a
hub token or cookie (the hub is asked from a worker thread), a request with
a body, a query string the endpoint would parse differently, any other path
or method. No decision is made here that the endpoints do not make.
"""
from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import Headers

from ..errors import NotSignedIn
from . import tokens
from .auth import bearer

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# history's `limit` as FastAPI reads it and the endpoint caches it; anything else (signs, spaces, zero, huge
# numbers) is left to FastAPI's own validation and the endpoint
_LIMIT = re.compile(r"[1-9][0-9]{0,5}")


class FastReads:
    """Answer a fresh cached ``GET {api}/status|approvals|history`` from the event loop; pass the rest on."""

    def __init__(self, app: Any, state: Any, api: str) -> None:
        self.app, self.state = app, state
        self.paths = {f"{api}/status": "board", f"{api}/approvals": "approvals", f"{api}/history": "history"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            name = self.paths.get(scope["path"])
            if name is not None and not scope.get("root_path"):
                answer = self._answer(scope, name)
                if answer is not None:
                    body, headers = answer
                    await send({"type": "http.response.start", "status": 200, "headers": headers})
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)

    def _answer(self, scope: Scope, name: str) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
        headers = Headers(scope=scope)
        if headers.get("transfer-encoding") or headers.get("content-length", "0") != "0":
            return None  # a body: the body limit and the endpoint decide
        args = _history_args(scope.get("query_string", b"")) if name == "history" else ()
        if args is None:
            return None
        from ..service.reads import cached_read

        # one reading of the store's change marker for the answer and the token: both as of this moment, so a
        # token revoked (or any write) committed before it is seen by this request
        marker = self.state.ws.store.change_marker()
        value = cached_read(self.state.ws, name, *args, marker=marker) if marker is not None else None
        if value is None or not self._may_read(scope, headers, marker):
            return None
        return self.state.json_parts(value)

    def _may_read(self, scope: Scope, headers: Headers, marker: Any) -> bool:
        """What the endpoints' ``reader`` allows, when it can be told without the network; False: ask it."""
        auth = self.state.auth
        token = bearer(headers)
        if token is None and headers.get("authorization") is not None:
            return False  # a malformed Authorization header: whatever the endpoint says about it
        if token is not None and not tokens.looks_like_ours(token):
            return False  # a hub token: the hub is asked from a worker thread
        if token is None and getattr(auth, "hub", None) is not None:
            return False  # a hub cookie may sign this browser in
        client = scope.get("client")
        try:
            who, by_cookie = auth.identify(headers, {}, client[0] if client else None, marker=marker)
        except NotSignedIn:
            return False  # the endpoint answers the 401 with the reason
        return not by_cookie and (who is not None or auth.anonymous_read)


def _history_args(query: bytes) -> tuple[str | None, int] | None:
    """``(pipeline, limit)`` as the history endpoint reads its query, or None for anything it would read
    otherwise (unknown keys are ignored by FastAPI, and here too; a repeated key: the last wins, as there)."""
    pipeline: str | None = None
    limit = 50
    try:
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    except ValueError:
        return None
    for key, value in pairs:
        if key == "pipeline":
            pipeline = value
        elif key == "limit":
            if not _LIMIT.fullmatch(value):
                return None
            limit = int(value)
    return pipeline, limit
