"""The release service's own API tokens, for cron, CI and people without a hub.

A token is ``wb_<id>_<secret>``; only the SHA-256 of the secret is stored (the
secret is 32 random bytes, so a plain hash is as strong as the secret: no
password stretching is needed), it is printed once by ``workbench token
create``, and it is checked in constant time. ``read`` tokens may look at
everything the API shows and decide nothing; ``act`` tokens act as their user,
through the same ``approvals.authorize`` as everyone else.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..errors import NotFound, NotSignedIn, UsageError
from ..identity import ACT, SCOPES, Identity
from ..store import schema as S

api_tokens = sa.Table(
    "api_tokens",
    S.metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user", sa.String(255), nullable=False),
    sa.Column("scope", sa.String(8), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(255), nullable=False),
    sa.Column("expires_at", sa.Float),
    sa.Column("revoked_at", sa.Float),
    sa.Column("last_used_at", sa.Float),
    sa.Column("note", sa.Text),
)
S.register_migration("api-tokens-1", S.tables_created_by(api_tokens))

PREFIX = "wb_"
_TOKEN = re.compile(r"^wb_(\d{1,12})_([A-Za-z0-9_-]{20,100})$")
_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
USED_EVERY = 60.0  # last_used_at is written at most once a minute per token (reads stay reads)


@dataclass(frozen=True)
class TokenInfo:
    id: int
    user: str
    scope: str
    created_at: float
    created_by: str
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None
    note: str | None

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= time.time():
            return "expired"
        return "active"


def parse_duration(text: str | None) -> float | None:
    """``30d``, ``12h``, ``90m``, ``2w``, ``never`` → seconds (None: no expiry)."""
    if text is None or text.strip().lower() in ("", "never", "none"):
        return None
    m = _DURATION.match(text.strip().lower())
    if not m or int(m.group(1)) == 0:
        raise UsageError(f"--expires {text!r}: expected a duration like 30d, 12h, 90m, 2w, or never")
    return int(m.group(1)) * _UNIT[m.group(2)]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(store: Any, user: str, *, scope: str = ACT, expires: str | None = "90d", created_by: str,
           note: str | None = None) -> tuple[TokenInfo, str]:
    """A new token for ``user``: its record and the token text (shown once, never stored)."""
    user = (user or "").strip()
    if not user or len(user) > 255 or any(c.isspace() for c in user):
        raise UsageError("--user needs a user name without spaces")
    if scope not in SCOPES:
        raise UsageError(f"--scope must be one of {', '.join(SCOPES)}")
    seconds = parse_duration(expires)
    secret = secrets.token_urlsafe(32)
    now = time.time()
    with store.write() as conn:
        tid = conn.execute(api_tokens.insert().values(
            user=user, scope=scope, digest=_digest(secret), created_at=now, created_by=created_by,
            expires_at=None if seconds is None else now + seconds, note=note,
        )).inserted_primary_key[0]
    return get(store, int(tid)), f"{PREFIX}{tid}_{secret}"


def _info(row: Any) -> TokenInfo:
    m = row._mapping
    return TokenInfo(id=m["id"], user=m["user"], scope=m["scope"], created_at=m["created_at"],
                     created_by=m["created_by"], expires_at=m["expires_at"], revoked_at=m["revoked_at"],
                     last_used_at=m["last_used_at"], note=m["note"])


def get(store: Any, token_id: int) -> TokenInfo:
    with store.read() as conn:
        row = conn.execute(sa.select(api_tokens).where(api_tokens.c.id == token_id)).first()
    if row is None:
        raise NotFound(f"no token {token_id}")
    return _info(row)


def list_tokens(store: Any) -> list[TokenInfo]:
    with store.read() as conn:
        return [_info(r) for r in conn.execute(sa.select(api_tokens).order_by(api_tokens.c.id))]


def revoke(store: Any, token_id: int) -> TokenInfo:
    """Revoke a token at once (the server checks the store on every request)."""
    info = get(store, token_id)
    if info.revoked_at is not None:
        return info
    with store.write() as conn:
        conn.execute(api_tokens.update().where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                     .values(revoked_at=time.time()))
    return get(store, token_id)


def looks_like_ours(token: str) -> bool:
    return token.startswith(PREFIX)


# Verified tokens by store, kept until the store changes (Store.change_marker: any commit by any process, a
# `workbench token revoke` included), so fifty clients polling the board do not read api_tokens per request.
# Expiry is checked on every use (TokenInfo.state); unknown tokens are never kept.
_VERIFIED: "weakref.WeakKeyDictionary[Any, dict[tuple[int, str], tuple[Any, TokenInfo]]]" = weakref.WeakKeyDictionary()
_VERIFIED_LOCK = threading.Lock()


def _known(store: Any, tid: int, digest: str, marker: Any) -> TokenInfo | None:
    if marker is None:
        return None
    with _VERIFIED_LOCK:
        hit = _VERIFIED.get(store, {}).get((tid, digest))
    return hit[1] if hit is not None and hit[0] == marker else None


def _remember(store: Any, tid: int, digest: str, marker: Any, info: TokenInfo) -> None:
    if marker is None:
        return
    with _VERIFIED_LOCK:
        known = _VERIFIED.setdefault(store, {})
        if len(known) > 1000:
            known.clear()
        known[(tid, digest)] = (marker, info)


def verify(store: Any, token: str, marker: Any = None) -> Identity:
    """The identity a token stands for, or NotSignedIn saying why not (unknown, revoked, expired).

    ``marker``: the store's change marker if the caller has just read it (the server's cached reads check the
    token and the cache against one reading); a token verified before is trusted only while it is unchanged.
    """
    m = _TOKEN.match(token)
    if not m:
        raise NotSignedIn("the token is malformed")
    tid, secret = int(m.group(1)), m.group(2)
    digest = _digest(secret)
    info = _known(store, tid, digest, store.change_marker() if marker is None else marker)
    if info is None:
        marker = store.change_marker()  # before the read: a revocation committed after it is seen next time
        with store.read() as conn:
            row = conn.execute(sa.select(api_tokens).where(api_tokens.c.id == tid)).first()
        if row is None or not hmac.compare_digest(row._mapping["digest"], digest):
            raise NotSignedIn("the token is not known")
        info = _info(row)
        _remember(store, tid, digest, marker, info)
    if info.state != "active":
        raise NotSignedIn(f"the token was {info.state}")
    now = time.time()
    if info.last_used_at is None or now - info.last_used_at > USED_EVERY:
        try:
            with store.write() as conn:
                conn.execute(api_tokens.update().where(api_tokens.c.id == tid).values(last_used_at=now))
        except Exception:  # a busy store must not refuse a valid caller; the stamp is advisory
            pass
    return Identity(info.user, via="token", scope=info.scope, token_id=info.id)
