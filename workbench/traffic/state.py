"""Traffic in the store: the weights each route serves and every change to them.

``traffic_routes`` holds, per route, the recorded weights, the ``live`` stack
(the one that last reached 100%: the one a rollback returns to), the
``candidate`` stack being rolled out and the run that owns that rollout.
``traffic_changes`` is the append-only history (time, from, to, who or which
run, reason, outcome), ``rollbacks`` the rollbacks. All three are frames.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import sqlalchemy as sa

from ..store import schema as S
from ..store.frames import register_frame

if TYPE_CHECKING:
    import pandas as pd

    from ..store import Store
    from ..store.frames import Frames
    from ..workspace import Workspace

traffic_routes = sa.Table(
    "traffic_routes",
    S.metadata,
    sa.Column("route", sa.String(255), primary_key=True),
    sa.Column("weights", sa.JSON, nullable=False),
    sa.Column("live", sa.String(255), nullable=False),
    sa.Column("candidate", sa.String(255)),
    sa.Column("run_id", sa.Integer),  # the run whose rollout the candidate is
    sa.Column("updated_at", sa.Float, nullable=False),
)

traffic_changes = sa.Table(
    "traffic_changes",
    S.metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("route", sa.String(255), nullable=False),
    sa.Column("provider", sa.String(64), nullable=False),
    sa.Column("from_weights", sa.JSON),
    sa.Column("to_weights", sa.JSON, nullable=False),
    sa.Column("stack", sa.String(255)),  # the new (candidate) stack of this change
    sa.Column("weight", sa.Integer),  # its share after the change
    sa.Column("actor", sa.String(255), nullable=False),  # a person, or "run P/C"
    sa.Column("run_id", sa.Integer),
    sa.Column("pipeline", sa.String(255)),
    sa.Column("counter", sa.Integer),
    sa.Column("stage", sa.String(255)),
    sa.Column("reason", sa.Text),
    sa.Column("outcome", sa.String(16), nullable=False),  # ok | failed
    sa.Column("error", sa.Text),
)
sa.Index("ix_traffic_changes_run", traffic_changes.c.run_id)

rollbacks = sa.Table(
    "rollbacks",
    S.metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("run_id", sa.Integer, nullable=False),
    sa.Column("pipeline", sa.String(255), nullable=False),
    sa.Column("counter", sa.Integer, nullable=False),
    sa.Column("route", sa.String(255), nullable=False),
    sa.Column("by", sa.String(255), nullable=False),
    sa.Column("automatic", sa.Boolean, nullable=False, default=False),
    sa.Column("reason", sa.Text),
    sa.Column("from_weights", sa.JSON),
    sa.Column("to_weights", sa.JSON),
)

S.register_migration("traffic-1", S.tables_created_by(traffic_routes, traffic_changes, rollbacks))


@dataclass(frozen=True)
class RouteState:
    route: str
    weights: dict[str, int]
    live: str
    candidate: str | None
    run_id: int | None
    updated_at: float | None


def read_state(store: "Store", route: Any) -> RouteState:
    """The recorded state; a route never moved serves 100% on its ``live`` stack."""
    with store.read() as conn:
        row = conn.execute(sa.select(traffic_routes).where(traffic_routes.c.route == route.name)).mappings().first()
    if row is None:
        return RouteState(route.name, {s: (100 if s == route.live else 0) for s in route.stacks}, route.live,
                          None, None, None)
    return RouteState(row["route"], {str(k): int(v) for k, v in row["weights"].items()}, row["live"],
                      row["candidate"], row["run_id"], row["updated_at"])


def has_state(store: "Store", name: str) -> bool:
    with store.read() as conn:
        return conn.execute(sa.select(traffic_routes.c.route).where(traffic_routes.c.route == name)).first() is not None


def save_state(conn: sa.Connection, st: RouteState) -> None:
    values = dict(weights=st.weights, live=st.live, candidate=st.candidate, run_id=st.run_id, updated_at=time.time())
    n = conn.execute(traffic_routes.update().where(traffic_routes.c.route == st.route).values(**values)).rowcount
    if n == 0:
        conn.execute(traffic_routes.insert().values(route=st.route, **values))


def record_change(conn: sa.Connection, **values: Any) -> None:
    conn.execute(traffic_changes.insert().values(at=time.time(), **values))


def run_changes(store: "Store", run_id: int) -> list[Mapping[str, Any]]:
    with store.read() as conn:
        return list(conn.execute(
            sa.select(traffic_changes).where(traffic_changes.c.run_id == run_id, traffic_changes.c.outcome == "ok")
            .order_by(traffic_changes.c.id)
        ).mappings())


def run_rollbacks(store: "Store", run_id: int) -> list[Mapping[str, Any]]:
    with store.read() as conn:
        return list(conn.execute(sa.select(rollbacks).where(rollbacks.c.run_id == run_id)).mappings())


@contextmanager
def route_lock(ws: "Workspace", name: str, timeout: float = 120) -> Iterator[None]:
    """One traffic change at a time per route, across processes (a step, a rollback, a manual set)."""
    from filelock import FileLock, Timeout

    from ..errors import TrafficError

    folder = ws.state / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    try:
        with FileLock(str(folder / f"traffic-{safe}.lock"), timeout=timeout):
            yield
    except Timeout:
        raise TrafficError(f"route {name} is being changed by another process (waited {timeout:g}s)") from None


# -- frames ------------------------------------------------------------------


def _traffic_frame(frames: "Frames") -> "pd.DataFrame":
    """Every traffic change, oldest first: when, route, from → to, who or which run, why."""
    c = traffic_changes
    df = frames.query(sa.select(
        c.c.id.label("change_id"), c.c.at, c.c.route, c.c.provider, c.c.stack, c.c.weight, c.c.from_weights,
        c.c.to_weights, c.c.actor, c.c.run_id, c.c.pipeline, c.c.counter, c.c.stage, c.c.reason, c.c.outcome, c.c.error,
    ).order_by(c.c.id))
    df["counter"] = df["counter"].astype("Int64")
    df["weight"] = df["weight"].astype("Int64")
    df["run_id"] = df["run_id"].astype("Int64")
    return frames.utc(df, "at")


def _weights_frame(frames: "Frames") -> "pd.DataFrame":
    """Current recorded weights: one row per route and stack."""
    import pandas as pd

    rows = []
    for r in frames.query(sa.select(traffic_routes).order_by(traffic_routes.c.route)).to_dict("records"):
        for stack, weight in (r["weights"] or {}).items():
            rows.append(dict(route=r["route"], stack=stack, weight=int(weight), live=stack == r["live"],
                             candidate=stack == r["candidate"], run_id=r["run_id"], updated_at=r["updated_at"]))
    df = pd.DataFrame(rows, columns=["route", "stack", "weight", "live", "candidate", "run_id", "updated_at"])
    df["run_id"] = df["run_id"].astype("Int64")
    return frames.utc(df, "updated_at")


def _rollbacks_frame(frames: "Frames") -> "pd.DataFrame":
    """Rolled-back runs (a rolled-back deployment is a failed change for the metrics)."""
    r = rollbacks
    df = frames.query(sa.select(
        r.c.id.label("rollback_id"), r.c.at, r.c.run_id, r.c.pipeline, r.c.counter, r.c.route, r.c.by,
        r.c.automatic, r.c.reason, r.c.from_weights, r.c.to_weights,
    ).order_by(r.c.id))
    df["automatic"] = df["automatic"].astype(bool)
    return frames.utc(df, "at")


register_frame("traffic", _traffic_frame)
register_frame("traffic_weights", _weights_frame)
register_frame("rollbacks", _rollbacks_frame)
