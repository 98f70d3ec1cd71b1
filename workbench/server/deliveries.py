"""Every webhook delivery the release service received, kept in the store: ``webhook_deliveries``.

One row per request, whatever became of it (accepted, ignored, refused, and
why), so "did GitHub reach us, and what did we do?" is answered by
``workbench deliveries`` and ``ws.frames.webhook_deliveries``.

Why two id columns: ``delivery_id`` is what the request claimed (or the
body's hash), for the listing; ``unique_id`` is set only once the signature
held, and the unique constraint on ``(forge, unique_id)`` is what refuses a
replay, race-free across threads and processes. Refusals leave it NULL, so
an unsigned request carrying a real delivery id cannot spoil the genuine
delivery. ``polled_at`` is stamped when a scheduling pass has polled the
matched materials; accepted rows without it are polled again when the server
starts (:func:`pending`), so a 2xx is never lost to a crash.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ..store import schema as S
from ..store.frames import register_frame

if TYPE_CHECKING:
    import pandas as pd

    from ..store.frames import Frames

__all__ = ["ACCEPTED", "IGNORED", "REFUSED", "Delivery", "Replayed", "insert", "mark_polled", "pending", "recent",
           "webhook_deliveries"]

ACCEPTED, IGNORED, REFUSED = "accepted", "ignored", "refused"

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    S.metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("forge", sa.String(16), nullable=False),
    sa.Column("delivery_id", sa.String(200), nullable=False),
    sa.Column("unique_id", sa.String(200)),  # the delivery id once its signature held; NULL for refusals
    sa.Column("event", sa.String(100), nullable=False, default=""),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("remote", sa.String(255)),
    sa.Column("outcome", sa.String(10), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),  # the HTTP status answered
    sa.Column("reason", sa.Text),
    sa.Column("repository", sa.Text),
    sa.Column("ref", sa.String(255)),
    sa.Column("material_keys", sa.JSON, nullable=False, default=list),
    sa.Column("polled_at", sa.Float),
    sa.UniqueConstraint("forge", "unique_id", name="uq_webhook_deliveries_forge_unique_id"),
)
sa.Index("ix_webhook_deliveries_pending", webhook_deliveries.c.outcome, webhook_deliveries.c.polled_at)
S.register_migration("webhook-deliveries-1", S.tables_created_by(webhook_deliveries))


@dataclass(frozen=True)
class Delivery:
    """One received webhook request and what the service made of it."""

    forge: str
    delivery_id: str
    event: str
    outcome: str
    status: int
    reason: str | None = None
    remote: str | None = None
    repository: str | None = None
    ref: str | None = None
    material_keys: tuple[str, ...] = ()
    received_at: float = field(default_factory=time.time)
    polled_at: float | None = None
    id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "forge": self.forge, "delivery_id": self.delivery_id, "event": self.event,
                "received_at": self.received_at, "remote": self.remote, "outcome": self.outcome,
                "status": self.status, "reason": self.reason, "repository": self.repository, "ref": self.ref,
                "material_keys": list(self.material_keys), "polled_at": self.polled_at}


class Replayed(Exception):
    """This forge's delivery id was already received (the first time at ``first_at``)."""

    def __init__(self, first_at: float | None) -> None:
        super().__init__(first_at)
        self.first_at = first_at


def _values(d: Delivery, unique: bool) -> dict[str, Any]:
    return {"forge": d.forge, "delivery_id": d.delivery_id[:200], "unique_id": d.delivery_id[:200] if unique else None,
            "event": d.event[:100], "received_at": d.received_at, "remote": (d.remote or "")[:255] or None,
            "outcome": d.outcome, "status": d.status, "reason": None if d.reason is None else d.reason[:2000],
            "repository": None if d.repository is None else d.repository[:2000],
            "ref": None if d.ref is None else d.ref[:255], "material_keys": list(d.material_keys),
            "polled_at": d.polled_at}


def insert(store: Any, d: Delivery, *, unique: bool = False) -> int:
    """Store ``d`` and commit; with ``unique`` (the signature held) a second one of its id raises Replayed."""
    try:
        with store.write() as conn:
            return int(conn.execute(webhook_deliveries.insert().values(**_values(d, unique))).inserted_primary_key[0])
    except IntegrityError:
        if not unique:
            raise
    t = webhook_deliveries
    with store.read() as conn:
        first = conn.execute(sa.select(t.c.received_at).where(
            t.c.forge == d.forge, t.c.unique_id == d.delivery_id[:200])).scalar()
    raise Replayed(first)


def mark_polled(store: Any, ids: Iterable[int], at: float | None = None) -> None:
    ids = list(ids)
    if not ids:
        return
    t = webhook_deliveries
    with store.write() as conn:
        conn.execute(t.update().where(t.c.id.in_(ids), t.c.polled_at.is_(None)).values(polled_at=at or time.time()))


def _delivery(row: Any) -> Delivery:
    m = row._mapping
    return Delivery(forge=m["forge"], delivery_id=m["delivery_id"], event=m["event"], outcome=m["outcome"],
                    status=m["status"], reason=m["reason"], remote=m["remote"], repository=m["repository"],
                    ref=m["ref"], material_keys=tuple(m["material_keys"] or ()), received_at=m["received_at"],
                    polled_at=m["polled_at"], id=m["id"])


def pending(store: Any) -> list[Delivery]:
    """Accepted deliveries whose materials no scheduling pass has polled yet, oldest first."""
    t = webhook_deliveries
    with store.read() as conn:
        rows = conn.execute(sa.select(t).where(t.c.outcome == ACCEPTED, t.c.polled_at.is_(None)).order_by(t.c.id))
        return [_delivery(r) for r in rows]


def recent(store: Any, limit: int = 50) -> list[Delivery]:
    """The latest ``limit`` deliveries, newest first."""
    t = webhook_deliveries
    with store.read() as conn:
        return [_delivery(r) for r in conn.execute(sa.select(t).order_by(t.c.id.desc()).limit(limit))]


def _frame(frames: Frames) -> pd.DataFrame:
    """Every forge webhook delivery the server received: forge, event, outcome, reason, matched materials."""
    t = webhook_deliveries
    q = sa.select(t.c.id, t.c.forge, t.c.delivery_id, t.c.event, t.c.received_at, t.c.remote, t.c.outcome,
                  t.c.status, t.c.reason, t.c.repository, t.c.ref, t.c.material_keys, t.c.polled_at).order_by(t.c.id)
    df = frames.utc(frames.query(q), "received_at", "polled_at")
    df["outcome"] = df["outcome"].astype("category").cat.set_categories([ACCEPTED, IGNORED, REFUSED])
    return df


register_frame("webhook_deliveries", _frame)
