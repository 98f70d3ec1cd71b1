"""The outbox table: one row per (event kind, stage run, recipient, channel).

Why a unique key rather than a flag on the stage run: enqueueing is idempotent, so
two drivers that both see a stage finish insert one row between them.
"""
from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from ..store import schema as S
from ..store.frames import register_frame

PENDING, SENDING, SENT, FAILED = "pending", "sending", "sent", "failed"
MAX_ATTEMPTS = 8
CLAIM_TIMEOUT = 300.0  # a 'sending' row older than this belongs to a crashed sender

outbox = sa.Table(
    "notification_outbox",
    S.metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("stage_run_id", sa.Integer, nullable=False),
    sa.Column("recipient", sa.String(255), nullable=False),
    sa.Column("channel", sa.String(100), nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False, default=PENDING),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
    sa.Column("next_attempt_at", sa.Float, nullable=False),
    sa.Column("claimed_at", sa.Float),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("sent_at", sa.Float),
    sa.UniqueConstraint("event", "stage_run_id", "recipient", "channel", name="uq_notification_once"),
)
S.register_migration("notifications-1", S.tables_created_by(outbox))


def enqueue(store: Any, *, event: str, stage_run_id: int, recipient: str, channel: str,
            subject: str, body: str) -> bool:
    """Insert a row unless that event was already queued for that recipient and channel."""
    now = time.time()
    try:
        with store.write() as conn:
            conn.execute(outbox.insert().values(
                event=event, stage_run_id=stage_run_id, recipient=recipient, channel=channel, subject=subject,
                body=body, state=PENDING, attempts=0, next_attempt_at=now, created_at=now))
        return True
    except sa.exc.IntegrityError:
        return False


def claim(store: Any, now: float | None = None) -> list[dict[str, Any]]:
    """Rows due for sending, each claimed by compare-and-set (state, attempts unchanged)."""
    now = time.time() if now is None else now
    o = outbox.c
    with store.read() as conn:
        due = conn.execute(sa.select(outbox).where(sa.or_(
            sa.and_(o.state.in_([PENDING, FAILED]), o.next_attempt_at <= now, o.attempts < MAX_ATTEMPTS),
            sa.and_(o.state == SENDING, o.claimed_at < now - CLAIM_TIMEOUT)))).mappings().all()
    mine = []
    for row in due:
        with store.write() as conn:
            got = conn.execute(outbox.update().where(o.id == row["id"], o.state == row["state"],
                                                     o.attempts == row["attempts"])
                               .values(state=SENDING, claimed_at=now, attempts=row["attempts"] + 1)).rowcount
        if got == 1:
            mine.append(dict(row))
    return mine


def mark_sent(store: Any, row_id: int) -> None:
    with store.write() as conn:
        conn.execute(outbox.update().where(outbox.c.id == row_id).values(state=SENT, sent_at=time.time()))


def mark_failed(store: Any, row_id: int, attempts: int, error: str) -> None:
    """Exponential backoff: 2, 4, 8 … seconds (capped at 10 min); the error is masked by the caller."""
    delay = min(600.0, 2.0 ** attempts)
    with store.write() as conn:
        conn.execute(outbox.update().where(outbox.c.id == row_id).values(
            state=FAILED, last_error=error[:2000], next_attempt_at=time.time() + delay))


def _frame(frames: Any) -> Any:
    """Every notification queued, with its state, attempts and last error (secrets masked)."""
    df = frames.query(sa.select(outbox).order_by(outbox.c.id))
    return frames.utc(df, "created_at", "sent_at", "next_attempt_at", "claimed_at")


register_frame("notifications", _frame)
