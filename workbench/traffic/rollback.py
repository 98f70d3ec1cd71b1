"""Rollback: 100% back on the previous stack, the run marked rolled back.

Refused once the run's rollout reached 100% on a route (the seed's rule:
after that, the old stack is the idle one that the next release overwrites,
so the way forward is a new release), once another run has moved the route
since, and a second time. Who may roll back: the people who may approve any
manual stage of the run's pipeline (anyone when it names nobody), checked by
``workbench.approvals.authorize`` like every other decision. An automatic
rollback (a failed canary analysis) is the run acting on its config's order
and is recorded as ``run P/C``.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..errors import InvalidState
from ..status import Status
from ..store import schema as S
from . import state as T
from .routes import route_of
from .shift import apply

if TYPE_CHECKING:
    from ..store import PipelineRun
    from ..workspace import Workspace


def rollback(ws: "Workspace", locator: str, *, user: str | None = None, reason: str | None = None,
             automatic: bool = False) -> list[dict[str, Any]]:
    """Roll back the run ``PIPELINE/COUNTER``; returns one ``{route, from, to}`` per route moved."""
    from ..approvals import authorize, record_in, refuse
    from ..engine import find_run

    run, rest = find_run(ws.store, locator)
    target = run.locator
    if automatic:
        actor = f"run {run.locator}"
    else:
        actor = authorize(ws, ws.config.pipeline(run.pipeline), user, "rollback", target=target, comment=reason)
    why = reason or ("automatic: the canary analysis failed" if automatic else "no reason given")

    def refused(message: str) -> InvalidState:
        return refuse(ws, actor, "rollback", target, message, reason)

    changes = T.run_changes(ws.store, run.id)
    if not changes:
        raise refused(f"run {run.locator} has not moved any traffic; there is nothing to roll back")
    done = T.run_rollbacks(ws.store, run.id)
    if done:
        raise refused(f"run {run.locator} was already rolled back by {done[0]['by']}")
    routes = list(dict.fromkeys(c["route"] for c in changes))
    for name in routes:
        full = [c for c in changes if c["route"] == name and c["weight"] == 100]
        if full:
            raise refused(f"run {run.locator} already moved 100% of route {name} to {full[0]['stack']} "
                          f"(stage {full[0]['stage'] or '?'}); a rollback is refused after 100%, "
                          "release a new version instead")
    out: list[dict[str, Any]] = []
    for i, name in enumerate(routes):
        route = route_of(ws.config, name, ws.root)
        with T.route_lock(ws, name):
            st = T.read_state(ws.store, route)
            if st.run_id != run.id or st.candidate is None:
                raise refused(f"route {name} has been moved since run {run.locator} (now {st.weights}); "
                              "roll back the run that moved it last")
            weights = {s: (100 if s == st.live else 0) for s in route.stacks}
            nxt = T.RouteState(st.route, weights, st.live, None, None, st.updated_at)
            out.append({"route": name, "from": st.weights, "to": weights, "live": st.live})
            last = i == len(routes) - 1

            def also(conn: sa.Connection, name: str = name, st: T.RouteState = st,
                     weights: dict[str, int] = weights, last: bool = last) -> None:
                # in the transaction recording this route's move: its rollback row and, with
                # the last route, the run's mark and the audit row (never one without the others)
                conn.execute(T.rollbacks.insert().values(
                    at=time.time(), run_id=run.id, pipeline=run.pipeline, counter=run.counter, route=name, by=actor,
                    automatic=automatic, reason=why, from_weights=st.weights, to_weights=weights,
                ))
                if last:
                    _mark_run(conn, run, f"rolled back by {actor}: {why}")
                    record_in(conn, actor, "rollback", target, "ok", comment=reason, pipeline=run.pipeline,
                              counter=run.counter,
                              detail="; ".join(f"{o['route']}: {_pct(o['from'])} -> {_pct(o['to'])}" for o in out))

            apply(ws, route, weights, nxt, actor=actor, run=run, stack=st.candidate,
                  reason=f"rollback of {run.locator} by {actor}: {why}", also=also)
    return out


def _pct(weights: dict[str, int]) -> str:
    return " ".join(f"{k}={v}%" for k, v in weights.items())


def _mark_run(conn: sa.Connection, run: "PipelineRun", reason: str) -> None:
    """A waiting or approved-but-unclaimed stage is cancelled and the run fails; otherwise only the reason says it."""
    pr, sr = S.pipeline_runs, S.stage_runs
    now = time.time()
    stopped = conn.execute(
        sr.update().where(sr.c.pipeline_run_id == run.id, sr.c.status.in_([Status.WAITING.value, Status.SCHEDULED.value]))
        .values(status=Status.CANCELLED.value, reason=reason, finished_at=now)
    ).rowcount
    current = conn.execute(sa.select(pr.c.status, pr.c.reason).where(pr.c.id == run.id)).one()
    if stopped or current.status in (Status.WAITING.value, Status.SCHEDULED.value):
        conn.execute(pr.update().where(pr.c.id == run.id).values(status=Status.FAILED.value, reason=reason,
                                                                 finished_at=now))
    else:
        old = current.reason
        conn.execute(pr.update().where(pr.c.id == run.id).values(reason=f"{old}; {reason}" if old else reason))
