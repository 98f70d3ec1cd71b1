"""GoCD's pipeline pause: an operator stops a pipeline from being triggered, with a reason.

A paused pipeline is skipped by the scheduler (material changes, upstream
passes, timers) and, as in GoCD, refuses manual triggers too; runs already
going continue. The state is a history table (``pipeline_pauses``: one row per
pause or unpause), so the ``pauses`` frame shows who stopped what, when and why,
and the current pause of a pipeline is simply its latest row when that row is a
pause. Registered as the ``pauses-1`` migration by :mod:`workbench.features`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .errors import InvalidState
from .store import schema as S
from .store.frames import register_frame

if TYPE_CHECKING:
    import pandas as pd

    from .store.frames import Frames

__all__ = ["Pause", "current_pause", "current_pauses", "pause", "unpause", "check_not_paused", "pipeline_pauses"]

md = S.metadata

pipeline_pauses = sa.Table(
    "pipeline_pauses", md,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("pipeline", sa.String(255), nullable=False, index=True),
    sa.Column("action", sa.String(16), nullable=False),  # pause | unpause
    sa.Column("by", sa.String(255), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("at", sa.Float, nullable=False),
)
S.register_migration("pauses-1", S.tables_created_by(pipeline_pauses))


@dataclass(frozen=True)
class Pause:
    """A pipeline's current pause: who paused it, why, since when (epoch seconds)."""

    pipeline: str
    by: str
    reason: str | None
    since: float

    def describe(self) -> str:
        """The sentence status lines and refusals share, so both say who and why."""
        why = f": {self.reason}" if self.reason else " (no reason given)"
        return f"paused by {self.by}{why}"

    def as_dict(self) -> dict[str, Any]:
        from datetime import datetime, timezone

        return {"paused": True, "paused_by": self.by, "pause_reason": self.reason,
                "paused_since": datetime.fromtimestamp(self.since, timezone.utc).isoformat()}


def current_pauses(store: Any) -> dict[str, Pause]:
    """Every pipeline whose latest pause row is a pause (one query, for the board)."""
    p = pipeline_pauses
    latest = sa.select(sa.func.max(p.c.id)).group_by(p.c.pipeline).scalar_subquery()
    with store.read() as conn:
        rows = conn.execute(sa.select(p).where(p.c.id.in_(latest))).mappings().all()
    return {r["pipeline"]: Pause(r["pipeline"], r["by"], r["reason"], r["at"])
            for r in rows if r["action"] == "pause"}


def current_pause(store: Any, pipeline: str) -> Pause | None:
    """The pause on ``pipeline``, or None when it may be triggered."""
    p = pipeline_pauses
    with store.read() as conn:
        row = conn.execute(sa.select(p).where(p.c.pipeline == pipeline).order_by(p.c.id.desc()).limit(1)
                           ).mappings().first()
    if row is None or row["action"] != "pause":
        return None
    return Pause(row["pipeline"], row["by"], row["reason"], row["at"])


def check_not_paused(store: Any, pipeline: str) -> None:
    """Refuse a manual trigger of a paused pipeline, as GoCD does, naming who paused it and why."""
    held = current_pause(store, pipeline)
    if held is not None:
        raise InvalidState(f"pipeline {pipeline} is {held.describe()}; it cannot be triggered until "
                           f"`workbench unpause {pipeline}`")


def pause(store: Any, pipeline: str, *, by: str, reason: str | None) -> Pause:
    """Pause ``pipeline``; pausing a paused pipeline is refused (the first reason stays visible)."""
    held = current_pause(store, pipeline)
    if held is not None:
        raise InvalidState(f"pipeline {pipeline} is already {held.describe()}")
    now = time.time()
    with store.write() as conn:
        conn.execute(pipeline_pauses.insert().values(pipeline=pipeline, action="pause", by=by, reason=reason, at=now))
    return Pause(pipeline, by, reason, now)


def unpause(store: Any, pipeline: str, *, by: str) -> Pause:
    """Unpause ``pipeline``; returns the pause it lifted. A pipeline not paused is refused."""
    held = current_pause(store, pipeline)
    if held is None:
        raise InvalidState(f"pipeline {pipeline} is not paused")
    with store.write() as conn:
        conn.execute(pipeline_pauses.insert().values(pipeline=pipeline, action="unpause", by=by, reason=None,
                                                     at=time.time()))
    return held


def _pauses_frame(frames: "Frames") -> "pd.DataFrame":
    """History of pause and unpause: pipeline, action, by, reason, at."""
    p = pipeline_pauses
    q = sa.select(p.c.pipeline, p.c.action, p.c.by, p.c.reason, p.c.at).order_by(p.c.id)
    return frames.utc(frames.query(q), "at")


register_frame("pauses", _pauses_frame)
