"""Per-pass bookkeeping in the store: timer fire times and material errors.

Both are written only when something changed, so a pass with nothing to do
costs two small reads and no write.
"""
from __future__ import annotations

from typing import Any, Iterable

import sqlalchemy as sa

from ..errors import MaterialError
from . import tables as T
from . import timers

__all__ = ["timers_due", "save_timers", "record_errors"]


def timers_due(store: Any, cfg: Any, now: float) -> tuple[dict[str, float], list[str]]:
    """Pipelines whose timer fired since the last pass (pipeline → fire time), and bad specs in words.

    A timer seen for the first time (or whose spec changed) starts counting
    from ``now``: it does not fire for the past.
    """
    timed = {name: p for name, p in cfg.pipelines.items() if p.timer is not None}
    if not timed:
        return {}, []
    ts = T.timer_state
    with store.read() as conn:
        state = {r.pipeline: r for r in conn.execute(sa.select(ts).where(ts.c.pipeline.in_(list(timed))))}
    due: dict[str, float] = {}
    errors: list[str] = []
    fresh = []
    latest: dict[str, float | None | timers.TimerSpecError] = {}  # spec -> its latest fire at or before now
    for name, p in timed.items():
        row = state.get(name)
        if row is None or row.spec != p.timer.spec:
            fresh.append(name)
            continue
        if row.last_checked is None:
            continue  # as timers.due: the timer starts counting from now
        spec = p.timer.spec
        if spec not in latest:  # once per spec, not per pipeline: 10,000 pipelines share a few nightly specs
            try:
                prev = timers.previous_fire(spec, now)
                latest[spec] = None if prev is None else prev.timestamp()
            except timers.TimerSpecError as exc:
                latest[spec] = exc
        fire = latest[spec]
        if isinstance(fire, timers.TimerSpecError):
            errors.append(f"{name}: {fire}")
        elif fire is not None and fire > row.last_checked:  # = timers.due(spec, row.last_checked, now)
            due[name] = fire
    if fresh:
        with store.write() as conn:
            conn.execute(sa.delete(ts).where(ts.c.pipeline.in_(fresh)))
            rows = [{"pipeline": n, "spec": timed[n].timer.spec, "last_checked": now} for n in fresh]
            conn.execute(ts.insert(), rows)
    return due, errors


def save_timers(store: Any, due: dict[str, float], now: float) -> None:
    """The fires acted on: the next pass counts from ``now``."""
    ts = T.timer_state
    with store.write() as conn:
        for name, fire in due.items():
            conn.execute(ts.update().where(ts.c.pipeline == name).values(last_checked=now, last_fired=fire))


def record_errors(store: Any, source: Any, polled: Iterable[tuple[Any, Any]], now: float) -> list[str]:
    """Open, refresh or resolve the material errors of what was polled; returns this pass's errors in words."""
    e = T.material_errors
    with store.read() as conn:
        open_rows = {(r.pipeline, r.material): r for r in conn.execute(
            sa.select(e.c.id, e.c.pipeline, e.c.material).where(e.c.resolved_at.is_(None)))}
    words: list[str] = []
    inserts, updates, resolved = [], [], []
    for p, m in polled:
        result = source.heads.get(source.fingerprint(m))
        row = open_rows.get((p.name, m.name))
        if isinstance(result, MaterialError):
            words.append(f"{p.name}/{m.name}: {result}")
            if row is None:
                inserts.append({"fingerprint": source.fingerprint(m), "pipeline": p.name, "material": m.name,
                                "url": source.url(m), "message": str(result), "first_seen": now, "last_seen": now})
            else:
                updates.append((row.id, str(result)))
        elif row is not None:
            resolved.append(row.id)
    if inserts or updates or resolved:
        with store.write() as conn:
            if inserts:
                conn.execute(e.insert(), inserts)
            for rid, message in updates:
                conn.execute(e.update().where(e.c.id == rid).values(last_seen=now, message=message))
            if resolved:
                conn.execute(e.update().where(e.c.id.in_(resolved)).values(resolved_at=now))
    return words
