"""``server.max_body_bytes`` for every request: a larger body is a 413 JSON answer, and its rest is never read.

An ASGI middleware, so it holds before FastAPI parses anything and whatever
an endpoint does with its body. A declared ``Content-Length`` over the limit
is refused before a byte is read; a body without one (chunked) is read up to
the limit and refused the moment it passes it, without waiting for its end.
A body within the limit is handed to the endpoint as it came (bodies here
are small JSON documents, so holding one in memory costs nothing).

Paths whose handler reads its body under the same limit itself are passed
through untouched: the webhook receiver (``workbench.server.webhooks``)
records every refusal, a 413 included, as a delivery row.
"""
from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def too_large(limit: int) -> dict[str, str]:
    return {"error": "too_large", "detail": f"the body is larger than {limit} bytes (server.max_body_bytes); "
                                            "the rest was not read"}


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 ``{"error": "too_large", "detail": ...}``."""

    def __init__(self, app: Any, limit: int, self_limited: Callable[[str], bool] = lambda path: False) -> None:
        self.app, self.limit, self.self_limited = app, limit, self_limited

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.self_limited(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await self._refuse(send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":  # the caller went away before its body ended
                return
            body += message.get("body", b"")
            if len(body) > self.limit:
                await self._refuse(send)
                return
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # after the body: the disconnect a streaming answer listens for

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        payload = json.dumps(too_large(self.limit)).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server itself refuses a malformed one
    return None
