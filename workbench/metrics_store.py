"""Incidents and deployment marks: the facts the metrics need that no pipeline records.

An *incident* (something broke in production) is linked to the deployment
that caused it (``caused_by``, a pipeline run); a deployment can be marked
``hotfix`` (made to fix an incident or the previous deployment) or
``unplanned`` (made because of an incident, for the rework rate). The metrics
read them as the ``incidents`` and ``deployment_marks`` frames.

Anyone who can use the workspace may record these: they describe what
happened, they do not change a run. Who recorded what, and when, is kept.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .errors import InvalidState, NotFound, UsageError
from .identity import current_user
from .store import schema as S
from .store.frames import register_frame

if TYPE_CHECKING:
    import pandas as pd

    from .store.frames import Frames
    from .workspace import Workspace

SEVERITIES = ("critical", "major", "minor")
MARKS = ("hotfix", "unplanned")

incidents = sa.Table(
    "incidents",
    S.metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("severity", sa.String(16), nullable=False, default="major"),
    sa.Column("opened_at", sa.Float, nullable=False),
    sa.Column("resolved_at", sa.Float),
    sa.Column("caused_by", sa.Integer, sa.ForeignKey("pipeline_runs.id")),  # the deployment blamed, if known
    sa.Column("opened_by", sa.String(255), nullable=False),
    sa.Column("resolved_by", sa.String(255)),
    sa.Column("note", sa.Text),
)

deployment_marks = sa.Table(
    "deployment_marks",
    S.metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("pipeline_run_id", sa.Integer, sa.ForeignKey("pipeline_runs.id"), nullable=False),
    sa.Column("mark", sa.String(16), nullable=False),  # hotfix | unplanned
    sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id")),
    sa.Column("marked_by", sa.String(255), nullable=False),
    sa.Column("marked_at", sa.Float, nullable=False),
    sa.Column("note", sa.Text),
    sa.UniqueConstraint("pipeline_run_id", "mark", name="uq_deployment_mark"),
)

S.register_migration("metrics-1", S.tables_created_by(incidents, deployment_marks))


@dataclass(frozen=True)
class Incident:
    id: int
    title: str
    severity: str
    opened_at: float
    resolved_at: float | None
    caused_by: str | None  # "PIPELINE/COUNTER"
    opened_by: str
    resolved_by: str | None
    note: str | None

    @property
    def open(self) -> bool:
        return self.resolved_at is None


def _when(value: Any) -> float:
    """Epoch seconds from None (now), a number, a datetime or an ISO string (naive = UTC)."""
    if value is None:
        return time.time()
    if isinstance(value, (int, float)):
        return float(value)
    import pandas as pd

    try:
        t = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise UsageError(f"not a time: {value!r} (use ISO 8601, e.g. 2024-03-04T10:30:00+01:00)") from None
    if t.tzinfo is None:
        t = t.tz_localize("UTC")
    return t.timestamp()


def _run_id(ws: "Workspace", locator: str) -> tuple[int, str]:
    from .engine import find_run

    run, rest = find_run(ws.store, locator)
    if rest:
        raise UsageError(f"{locator!r}: name a pipeline run as PIPELINE/COUNTER")
    return run.id, run.locator


def _select() -> Any:
    pr = S.pipeline_runs
    i = incidents
    return (sa.select(i, (pr.c.pipeline + "/" + sa.cast(pr.c.counter, sa.String)).label("locator"))
            .select_from(i.outerjoin(pr, pr.c.id == i.c.caused_by)))


def _incident(row: Any) -> Incident:
    return Incident(row["id"], row["title"], row["severity"], row["opened_at"], row["resolved_at"], row["locator"],
                    row["opened_by"], row["resolved_by"], row["note"])


def get_incident(ws: "Workspace", incident_id: int) -> Incident:
    with ws.store.read() as conn:
        row = conn.execute(_select().where(incidents.c.id == int(incident_id))).mappings().first()
    if row is None:
        raise NotFound(f"no incident {incident_id}")
    return _incident(row)


def list_incidents(ws: "Workspace", *, open_only: bool = False) -> list[Incident]:
    q = _select().order_by(incidents.c.id)
    if open_only:
        q = q.where(incidents.c.resolved_at.is_(None))
    with ws.store.read() as conn:
        return [_incident(r) for r in conn.execute(q).mappings()]


def open_incident(ws: "Workspace", title: str, *, caused_by: str | None = None, severity: str = "major",
                  opened_at: Any = None, user: str | None = None, note: str | None = None) -> Incident:
    """Record an incident; ``caused_by`` is the deployment to blame (``PIPELINE/COUNTER``)."""
    if not title or not title.strip():
        raise UsageError("an incident needs a title")
    if severity not in SEVERITIES:
        raise UsageError(f"severity must be one of {', '.join(SEVERITIES)}")
    run_id = _run_id(ws, caused_by)[0] if caused_by else None
    with ws.store.write() as conn:
        iid = conn.execute(incidents.insert().values(
            title=title.strip(), severity=severity, opened_at=_when(opened_at), caused_by=run_id,
            opened_by=user or current_user(), note=note,
        )).inserted_primary_key[0]
    return get_incident(ws, iid)


def resolve_incident(ws: "Workspace", incident_id: int, *, resolved_at: Any = None, user: str | None = None,
                     note: str | None = None) -> Incident:
    """Mark service restored; resolving twice is refused (the first time is the one that counts)."""
    inc = get_incident(ws, incident_id)
    when = _when(resolved_at)
    if when < inc.opened_at:
        raise UsageError(f"incident {incident_id} cannot be resolved before it was opened")
    values: dict[str, Any] = {"resolved_at": when, "resolved_by": user or current_user()}
    if note:
        values["note"] = f"{inc.note}\n{note}" if inc.note else note
    with ws.store.write() as conn:
        n = conn.execute(incidents.update().where(incidents.c.id == inc.id, incidents.c.resolved_at.is_(None))
                         .values(**values)).rowcount
    if n == 0:
        raise InvalidState(f"incident {incident_id} was already resolved by {get_incident(ws, incident_id).resolved_by}")
    return get_incident(ws, incident_id)


def mark_deployment(ws: "Workspace", locator: str, mark: str, *, incident: int | None = None, user: str | None = None,
                    note: str | None = None) -> dict[str, Any]:
    if mark not in MARKS:
        raise UsageError(f"mark must be one of {', '.join(MARKS)}")
    run_id, loc = _run_id(ws, locator)
    if incident is not None:
        get_incident(ws, incident)
    dm = deployment_marks
    with ws.store.write() as conn:
        exists = conn.execute(sa.select(dm.c.id).where(dm.c.pipeline_run_id == run_id, dm.c.mark == mark)).first()
        if exists:
            raise InvalidState(f"{loc} is already marked {mark}")
        conn.execute(dm.insert().values(pipeline_run_id=run_id, mark=mark, incident_id=incident,
                                        marked_by=user or current_user(), marked_at=time.time(), note=note))
    return {"run": loc, "mark": mark, "incident": incident}


def mark_hotfix(ws: "Workspace", locator: str, *, incident: int | None = None, user: str | None = None,
                note: str | None = None) -> dict[str, Any]:
    """This deployment fixes ``incident`` (or, without one, the pipeline's previous deployment)."""
    return mark_deployment(ws, locator, "hotfix", incident=incident, user=user, note=note)


def mark_unplanned(ws: "Workspace", locator: str, *, incident: int | None = None, user: str | None = None,
                   note: str | None = None) -> dict[str, Any]:
    """This deployment was not planned: it was made because of an incident (rework)."""
    return mark_deployment(ws, locator, "unplanned", incident=incident, user=user, note=note)


# -- frames ---------------------------------------------------------------------------------------


def _incidents_frame(frames: "Frames") -> "pd.DataFrame":
    """One row per incident, with the blamed run as ``caused_by`` (P/C) and ``caused_by_run_id``."""
    pr, i = S.pipeline_runs, incidents
    df = frames.query(sa.select(
        i.c.id.label("incident_id"), i.c.title, i.c.severity, i.c.opened_at, i.c.resolved_at,
        i.c.caused_by.label("caused_by_run_id"), pr.c.pipeline, pr.c.counter, i.c.opened_by, i.c.resolved_by, i.c.note,
    ).select_from(i.outerjoin(pr, pr.c.id == i.c.caused_by)).order_by(i.c.id))
    df["caused_by_run_id"] = df["caused_by_run_id"].astype("Int64")
    df["counter"] = df["counter"].astype("Int64")
    import pandas as pd

    df["caused_by"] = [None if pd.isna(p) or pd.isna(c) else f"{p}/{c}"
                       for p, c in zip(df["pipeline"], df["counter"].astype("object"))]
    df = frames.utc(df, "opened_at", "resolved_at")
    df["duration"] = df["resolved_at"] - df["opened_at"]
    return df


def _marks_frame(frames: "Frames") -> "pd.DataFrame":
    """One row per hotfix/unplanned mark on a deployment run."""
    pr, dm = S.pipeline_runs, deployment_marks
    df = frames.query(sa.select(
        dm.c.pipeline_run_id.label("run_id"), pr.c.pipeline, pr.c.counter, pr.c.label, dm.c.mark, dm.c.incident_id,
        dm.c.marked_by, dm.c.marked_at, dm.c.note,
    ).select_from(dm.join(pr, pr.c.id == dm.c.pipeline_run_id)).order_by(dm.c.id))
    df["incident_id"] = df["incident_id"].astype("Int64")
    return frames.utc(df, "marked_at")


register_frame("incidents", _incidents_frame)
register_frame("deployment_marks", _marks_frame)

__all__ = ["Incident", "get_incident", "list_incidents", "mark_deployment", "mark_hotfix", "mark_unplanned",
           "open_incident", "resolve_incident"]
