"""The outbox: one row per (event, source row, recipient, channel), in the store.

Why a unique key rather than a flag on the stage run: enqueueing is idempotent,
so two senders (overlapping ticks, ``serve``, a ``notifications send`` from cron)
that see the same event insert one row between them, whatever order they run in
and however often the feed re-reads a window. Why claim-then-send-then-mark, one
row at a time: a sender killed mid-batch leaves at most one row 'sending', and
only that one is in doubt (see :mod:`.sender`).
"""
from __future__ import annotations

import time
from typing import Any, Iterable

import sqlalchemy as sa

from ..store import schema as S
from ..store.frames import register_frame

PENDING, SENDING, SENT, FAILED, GAVE_UP = "pending", "sending", "sent", "failed", "gave_up"
STATES = (PENDING, SENDING, SENT, FAILED, GAVE_UP)
CLAIM_TIMEOUT = 300.0  # a 'sending' row older than this, claimed on another host, belongs to a crashed sender
MAX_BACKOFF = 3600.0

outbox = sa.Table(
    "notification_outbox",
    S.metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),  # stage | rollback | pause
    sa.Column("source_id", sa.Integer, nullable=False),  # stage_runs.id, pipeline_runs.id, pipeline_pauses.id
    sa.Column("pipeline", sa.String(255), nullable=False),
    sa.Column("counter", sa.Integer),
    sa.Column("stage", sa.String(255)),
    sa.Column("recipient", sa.String(255), nullable=False),  # an email address, or "#CHANNEL" for a chat room
    sa.Column("channel", sa.String(100), nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("message_id", sa.String(255), nullable=False),  # Message-ID / X-Workbench-Delivery: receivers dedupe on it
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("next_attempt_at", sa.Float, nullable=False),
    sa.Column("claimed_at", sa.Float),
    sa.Column("claimed_by", sa.String(255)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("sent_at", sa.Float),
    sa.UniqueConstraint("event", "source", "source_id", "recipient", "channel", name="uq_notification_once"),
)
sa.Index("ix_notification_outbox_state", outbox.c.state, outbox.c.next_attempt_at)

# How far the feed has read the store: its next pass re-reads from a little before.
feed_marks = sa.Table(
    "notification_feed",
    S.metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("mark", sa.Float, nullable=False),
)


def _migrate(conn: sa.Connection) -> None:
    S.tables_created_by(outbox, feed_marks)(conn)
    # the feed reads stage runs by the time they finished; without an index that is a scan of all history
    conn.execute(sa.text("CREATE INDEX IF NOT EXISTS ix_stage_runs_finished_at ON stage_runs (finished_at)"))


S.register_migration("notifications-1", _migrate)


def enqueue(conn: sa.Connection, rows: Iterable[dict[str, Any]]) -> int:
    """Insert each row unless its (event, source, source_id, recipient, channel) is there; returns how many were new."""
    rows = list(rows)
    if not rows:
        return 0
    now = time.time()
    values = [{**r, "state": PENDING, "attempts": 0, "next_attempt_at": now, "created_at": now} for r in rows]
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(outbox).on_conflict_do_nothing(
        index_elements=["event", "source", "source_id", "recipient", "channel"])
    n = 0
    for v in values:  # RETURNING says whether the row was new (rowcount is -1 on some drivers)
        n += len(conn.execute(stmt.values(**v).returning(outbox.c.id)).all())
    return n


def existing_keys(conn: sa.Connection, source: str, ids: Iterable[int]) -> set[tuple[str, str, int, str, str]]:
    o = outbox.c
    ids = list(ids)
    if not ids:
        return set()
    q = sa.select(o.event, o.source, o.source_id, o.recipient, o.channel).where(o.source == source, o.source_id.in_(ids))
    return {tuple(r) for r in conn.execute(q)}  # type: ignore[misc]


def claim_one(store: Any, me: str, *, now: float | None = None, dead: Any = None) -> dict[str, Any] | None:
    """The next due row, claimed for ``me`` by compare-and-set; None when nothing is due.

    Due: pending, or failed and its backoff elapsed, or 'sending' for a claimer that
    is gone (``dead(claimed_by)`` is true: a process of this host that no longer
    runs) or silent for :data:`CLAIM_TIMEOUT`. Taken-over rows come first: they
    are the oldest news.
    """
    o = outbox.c
    fixed_now = now
    while True:
        now = time.time() if fixed_now is None else fixed_now
        with store.read() as conn:
            due = conn.execute(sa.select(outbox).where(o.state.in_([PENDING, FAILED]), o.next_attempt_at <= now)
                               .order_by(o.id).limit(50)).mappings().all()
            stuck = conn.execute(sa.select(outbox).where(o.state == SENDING).order_by(o.id).limit(500)).mappings().all()
        candidates = [r for r in stuck if (r["claimed_at"] or 0) < now - CLAIM_TIMEOUT
                      or (dead is not None and dead(r["claimed_by"] or ""))] + list(due)
        if not candidates:
            return None
        for row in candidates:
            with store.write() as conn:
                got = conn.execute(outbox.update().where(o.id == row["id"], o.state == row["state"],
                                                         o.attempts == row["attempts"])
                                   .values(state=SENDING, claimed_at=now, claimed_by=me,
                                           attempts=row["attempts"] + 1)).rowcount
            if got == 1:
                return {**dict(row), "attempts": row["attempts"] + 1, "resumed": row["state"] == SENDING}
        # every candidate went to another sender meanwhile (they made progress): look again


def mark_sent(store: Any, row_id: int, me: str) -> None:
    with store.write() as conn:
        conn.execute(outbox.update().where(outbox.c.id == row_id, outbox.c.claimed_by == me)
                     .values(state=SENT, sent_at=time.time(), last_error=None))


def mark_failed(store: Any, row_id: int, me: str, attempts: int, error: str, *, backoff: float,
                max_attempts: int) -> str:
    """Back off ``backoff`` × 2^(attempts-1) seconds (at most an hour), or give up after ``max_attempts``.

    The error is masked by the caller; it stays on the row either way.
    """
    state = GAVE_UP if attempts >= max_attempts else FAILED
    delay = min(MAX_BACKOFF, backoff * 2 ** max(0, attempts - 1))
    with store.write() as conn:
        conn.execute(outbox.update().where(outbox.c.id == row_id, outbox.c.claimed_by == me).values(
            state=state, last_error=error[:2000], next_attempt_at=time.time() + delay))
    return state


def retry(store: Any, ids: Iterable[int] = ()) -> int:
    """Failed and given-up rows (all, or those ``ids``) due now with their attempts counted afresh."""
    o = outbox.c
    q = outbox.update().where(o.state.in_([FAILED, GAVE_UP]))
    ids = list(ids)
    if ids:
        q = q.where(o.id.in_(ids))
    with store.write() as conn:
        return conn.execute(q.values(state=PENDING, attempts=0, next_attempt_at=time.time())).rowcount


def rows(store: Any, *, state: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The newest rows first, for ``workbench notifications list``."""
    o = outbox.c
    q = sa.select(o.id, o.event, o.pipeline, o.counter, o.stage, o.recipient, o.channel, o.subject, o.state,
                  o.attempts, o.last_error, o.created_at, o.sent_at, o.next_attempt_at, o.message_id)
    if state:
        q = q.where(o.state == state)
    with store.read() as conn:
        return [dict(r) for r in conn.execute(q.order_by(o.id.desc()).limit(limit)).mappings()]


def get_mark(conn: sa.Connection) -> float | None:
    return conn.execute(sa.select(feed_marks.c.mark).where(feed_marks.c.name == "events")).scalar()


def set_mark(conn: sa.Connection, mark: float) -> None:
    f = feed_marks
    if conn.execute(f.update().where(f.c.name == "events").values(mark=mark)).rowcount == 0:
        conn.execute(f.insert().values(name="events", mark=mark))


def _frame(frames: Any) -> Any:
    """Every notification queued: event, run, recipient, channel, state, attempts, last error (secrets masked)."""
    o = outbox.c
    df = frames.query(sa.select(
        o.id, o.event, o.source, o.pipeline, o.counter, o.stage, o.recipient, o.channel, o.subject, o.state,
        o.attempts, o.last_error, o.message_id, o.created_at, o.sent_at, o.next_attempt_at).order_by(o.id))
    df["counter"] = df["counter"].astype("Int64")
    return frames.utc(df, "created_at", "sent_at", "next_attempt_at")


register_frame("notifications", _frame)
