"""Moving traffic: the stage hook, manual moves, and re-applying recorded weights.

Every move goes the same way, under a per-route file lock: read the recorded
state, ask the provider to serve the new weights (it confirms or raises), then
record the change and the new state in one transaction. A failed move is
recorded too (outcome ``failed``) and leaves the recorded weights unchanged.

Blue/green bookkeeping: ``live`` is the stack that last reached 100%; a step
of ``weight: N`` puts N% on the *other* stack (the candidate) and 100-N% on
``live``. Reaching 100% makes the candidate live: from then on there is
nothing to roll back to (the seed's rule) and the next release alternates.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..errors import InvalidState, NotFound, TrafficError, WorkbenchError
from ..status import Status
from . import state as T
from .providers import check_weights, provider_for
from .routes import Route, route_of, routes_of

if TYPE_CHECKING:
    import sqlalchemy as sa

    from ..store import PipelineRun, StageRun
    from ..workspace import Workspace


def plan(route: Route, st: T.RouteState, weight: int, run_id: int | None) -> tuple[dict[str, int], T.RouteState]:
    """Weights and next state for ``weight`` % on the candidate stack (pure)."""
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
        raise TrafficError(f"route {route.name}: weight must be a whole number from 0 to 100, got {weight!r}")
    new = route.other(st.live)
    weights = {s: 0 for s in route.stacks}
    weights[new] += weight
    weights[st.live] += 100 - weight
    if weight == 100:
        nxt = replace(st, weights=weights, live=new, candidate=None, run_id=run_id)
    else:
        nxt = replace(st, weights=weights, candidate=new, run_id=run_id if run_id is not None else st.run_id)
    return weights, nxt


def apply(ws: "Workspace", route: Route, weights: Mapping[str, int], nxt: T.RouteState, *, actor: str,
          reason: str, run: "PipelineRun | None" = None, stage: str | None = None,
          stack: str | None = None, also: "Callable[[sa.Connection], None] | None" = None) -> None:
    """Serve ``weights`` through the provider and record the change (caller holds the route lock).

    ``also`` writes the decision's own rows (its audit row, a rollback) in the
    transaction that records the move, so the move is never recorded without them.
    """
    weights = check_weights(route, weights)
    provider = provider_for(route)
    before = T.read_state(ws.store, route)
    try:
        served = provider.current_weights(route)
    except TrafficError:
        served = None
    from_weights = served if served is not None else before.weights
    if not T.has_state(ws.store, route.name):
        # Record where the route starts before the provider changes anything: a crash between the
        # provider and the record below can then be put back by reconcile() (tick does it).
        with ws.store.write() as conn:
            T.save_state(conn, replace(before, weights=dict(from_weights)))
    row = dict(route=route.name, provider=route.provider, from_weights=from_weights, to_weights=weights,
               stack=stack, weight=weights.get(stack) if stack else None, actor=actor,
               run_id=run.id if run else None, pipeline=run.pipeline if run else None,
               counter=run.counter if run else None, stage=stage, reason=reason)
    try:
        provider.set_weights(route, weights)
    except TrafficError as exc:
        with ws.store.write() as conn:
            T.record_change(conn, **row, outcome="failed", error=str(exc))
        raise
    with ws.store.write() as conn:
        T.record_change(conn, **row, outcome="ok", error=None)
        T.save_state(conn, nxt)
        if also is not None:
            also(conn)


def move(ws: "Workspace", route_name: str, weight: int, *, actor: str, reason: str,
         run: "PipelineRun | None" = None, stage: str | None = None,
         audit: Mapping[str, Any] | None = None) -> dict[str, int]:
    """``weight`` % of ``route_name`` on the candidate stack; returns the weights now served.

    ``audit``: the keyword arguments of ``approvals.record_in`` for a person's
    move, written with the move in one transaction (its detail: the new weights).
    """
    route = route_of(ws.config, route_name, ws.root)
    with T.route_lock(ws, route.name):
        st = T.read_state(ws.store, route)
        if run is not None and T.run_rollbacks(ws.store, run.id):
            raise InvalidState(f"run {run.locator} was rolled back; it cannot move traffic any more")
        weights, nxt = plan(route, st, weight, run.id if run else None)
        new_stack = route.other(st.live)
        also = None
        if audit is not None:
            from ..approvals import record_in

            detail = " ".join(f"{k}={v}%" for k, v in weights.items())

            def also(conn: "sa.Connection") -> None:
                record_in(conn, **audit, detail=detail)
        apply(ws, route, weights, nxt, actor=actor, reason=reason, run=run, stage=stage, stack=new_stack, also=also)
        return weights


def traffic_approvers(ws: "Workspace", route_name: str) -> list[Any]:
    """Who may move a route by hand: the manual approvals of every stage that moves it."""
    return [s.approval for p in ws.config.pipelines.values() for s in p.stages
            if s.approval.manual and s.traffic is not None and s.traffic.route == route_name]


def set_weights(ws: "Workspace", route_name: str, weight: int, *, user: str | None = None,
                reason: str | None = None) -> dict[str, int]:
    """A person moves ``weight`` % of a route to its candidate stack (``workbench traffic --set``, dashboards).

    Authorized through ``approvals.authorize`` (the approvers of the stages
    moving that route; anyone when none names anybody) and audited.
    """
    from ..approvals import authorize

    route_of(ws.config, route_name, ws.root)
    actor = authorize(ws, traffic_approvers(ws, route_name), user, "traffic", target=f"route:{route_name}",
                      comment=reason)
    return move(ws, route_name, weight, actor=actor, reason=reason or f"set by hand by {actor}",
                audit={"user": actor, "action": "traffic", "target": f"route:{route_name}", "outcome": "ok",
                       "comment": reason})


def reconcile(ws: "Workspace", route_name: str) -> dict[str, Any]:
    """Re-apply the recorded weights when the provider serves others (e.g. HAProxy after a reload).

    Returns ``{"route", "recorded", "served", "reapplied"}``; a route never
    moved by the workbench is left alone.
    """
    route = route_of(ws.config, route_name, ws.root)
    with T.route_lock(ws, route.name):
        if not T.has_state(ws.store, route.name):
            return {"route": route.name, "recorded": None, "served": None, "reapplied": False}
        st = T.read_state(ws.store, route)
        served = provider_for(route).current_weights(route)
        if served is None or served == st.weights:
            return {"route": route.name, "recorded": st.weights, "served": served, "reapplied": False}
        apply(ws, route, st.weights, st, actor="workbench", stack=st.candidate,
              reason=f"re-applied the recorded weights: the provider served {served}")
        return {"route": route.name, "recorded": st.weights, "served": served, "reapplied": True}


def reconcile_all(ws: "Workspace") -> list[dict[str, Any]]:
    """Reconcile every route (for ``tick``/``serve``); a failing route is reported, not raised."""
    out = []
    for name in routes_of(ws.config, ws.root):
        try:
            out.append(reconcile(ws, name))
        except WorkbenchError as exc:
            out.append({"route": name, "error": str(exc), "reapplied": False})
    return out


def route_status(ws: "Workspace") -> list[dict[str, Any]]:
    """One row per route: provider, stacks with recorded weights, live/candidate, owner run."""
    rows = []
    for name, route in routes_of(ws.config, ws.root).items():
        st = T.read_state(ws.store, route)
        owner = None
        if st.run_id is not None:
            try:
                owner = ws.store.get_pipeline_run_by_id(st.run_id).locator
            except NotFound:
                owner = None
        rows.append({"route": name, "provider": route.provider, "weights": st.weights, "live": st.live,
                     "candidate": st.candidate, "run": owner, "stacks": dict(route.stacks),
                     "recorded": T.has_state(ws.store, name), "url": route.url})
    return rows


class TrafficStageHook:
    """A passed stage with ``traffic: {route, weight}`` moves the route; a failed move fails the stage."""

    def stage_finished(self, engine: Any, run: "PipelineRun", stage_cfg: Any, stage_run: "StageRun") -> Any:
        t = getattr(stage_cfg, "traffic", None)
        if t is None or stage_run.status != Status.PASSED:
            return None
        actor = stage_run.approved_by or f"run {run.locator}"
        try:
            move(engine.ws, t.route, t.weight, actor=actor, run=run, stage=stage_cfg.name,
                 reason=f"stage {stage_cfg.name} of {run.locator} passed")
        except WorkbenchError as exc:
            return engine.store.set_stage_status(stage_run.id, Status.FAILED, f"traffic step failed: {exc}",
                                                 expect=[Status.PASSED, Status.RUNNING])  # the engine records a pass after its hooks
        return None


STAGE_HOOK = TrafficStageHook()
