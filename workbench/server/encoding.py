"""A polled read's JSON, encoded once per store change, sent compressed and revalidated by ETag.

The board at 1,000 pipelines is ~440 kB of JSON; fifty people polling it spent
most of the server's time writing those bytes to sockets (benchmarks/README.md,
issue 14), although every browser and httpx ask for gzip and a poller that
already has the answer only needs to hear "unchanged". So each cached answer
(``workbench.service.cache``) keeps, with its JSON, a gzip copy (made on the
first request that accepts it) and a strong ETag per representation; a
request whose ``If-None-Match`` names the current one gets ``304`` and no body.
Both the FastAPI endpoints and the event-loop path (``fastreads``) answer
through :meth:`Encoded.answer`, so the two cannot differ.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import threading
from dataclasses import dataclass, field
from typing import Any

Headers = list[tuple[bytes, bytes]]
MIN_GZIP = 500  # as starlette's GZipMiddleware: below it the saving is not worth the CPU
GZIP_LEVEL = 5  # ~3x faster than 9 for a few per cent more bytes; done once per store change


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether ``Accept-Encoding`` allows gzip (RFC 9110 §12.5.3: a token, or ``*``, with q > 0)."""
    if not accept_encoding:
        return False
    allowed: dict[str, bool] = {}
    for item in accept_encoding.split(","):
        token, _, params = item.strip().partition(";")
        q = 1.0
        for p in params.split(";"):
            name, _, value = p.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        allowed[token.strip().lower()] = q > 0
    return allowed.get("gzip", allowed.get("x-gzip", allowed.get("*", False)))


def _matches(if_none_match: str | None, etag: bytes) -> bool:
    """RFC 9110 §13.1.2: weak comparison of each listed tag, or ``*``."""
    if not if_none_match:
        return False
    tag = etag.decode()
    for item in if_none_match.split(","):
        item = item.strip()
        if item == "*" or item.removeprefix("W/") == tag:
            return True
    return False


@dataclass
class Encoded:
    """One cached read's representations."""

    value: Any
    body: bytes
    etag: bytes
    _gz: bytes | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def of(cls, value: Any) -> "Encoded":
        body = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        return cls(value, body, b'"' + hashlib.blake2b(body, digest_size=12).hexdigest().encode() + b'"')

    def gzipped(self) -> bytes:
        if self._gz is None:
            with self._lock:
                if self._gz is None:
                    self._gz = gzip.compress(self.body, GZIP_LEVEL, mtime=0)
        return self._gz

    def answer(self, accept_encoding: str | None = None,
               if_none_match: str | None = None) -> tuple[int, bytes, Headers]:
        """``(status, body, headers)`` for a request with these two headers."""
        gz = len(self.body) >= MIN_GZIP and accepts_gzip(accept_encoding)
        etag = self.etag[:-1] + b'-gz"' if gz else self.etag
        common: Headers = [(b"etag", etag), (b"vary", b"Accept-Encoding"), (b"cache-control", b"no-cache")]
        if _matches(if_none_match, etag):
            return 304, b"", common
        body = self.gzipped() if gz else self.body
        headers: Headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
        if gz:
            headers.append((b"content-encoding", b"gzip"))
        return 200, body, headers + common
