"""Actions of the application layer: decisions, triggers and run controls, each with its acting identity.

Every action takes ``actor`` (an :class:`~workbench.identity.Identity`, or a
name for the asserted local identity) and checks it the one way: decisions
through ``approvals.authorize``, the rest through ``approvals.require_act`` (a
``read`` token never acts). Actions that make work (approve, trigger, rerun)
leave the run SCHEDULED and hand it to ``driver``: the CLI passes none and
drives in the foreground itself; the server passes its scheduler, so the run
moves at once in the process that owns the workspace.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol

from ..errors import UsageError
from ..identity import Identity, as_identity
from .reads import _incident, _iso


def require_act(ws: Any, actor: Any, action: str, *, target: str, comment: str | None = None) -> Identity:
    """:func:`workbench.approvals.require_act`, imported on first use: it brings SQLAlchemy, which
    ``workbench validate`` (a ``Local`` that never acts) does not otherwise import."""
    from ..approvals import require_act as check

    return check(ws, actor, action, target=target, comment=comment)


class Driver(Protocol):
    """Whatever drives runs after an action (the server's scheduler)."""

    def drive_soon(self, run_id: int) -> None: ...


def _run_dict(run: Any) -> dict[str, Any]:
    return {"pipeline": run.pipeline, "counter": run.counter, "label": run.label, "status": run.status.value,
            "reason": run.reason, "locator": run.locator, "id": run.id, "triggered_by": run.triggered_by,
            "created_at": _iso(run.created_at)}


def _hand_over(run: Any, driver: Driver | None) -> dict[str, Any]:
    if driver is not None and not run.status.finished:
        driver.drive_soon(run.id)
    return _run_dict(run)


def approve(ws: Any, locator: str, *, actor: Identity | str | None, comment: str | None = None,
            driver: Driver | None = None) -> dict[str, Any]:
    """Approve the waiting stage ``P/C/S`` (authorized, audited, exactly once)."""
    from ..approvals import approve as do_approve

    run = do_approve(ws, locator, user=as_identity(actor), comment=comment or None, drive=False)
    return _hand_over(run, driver)


def reject(ws: Any, locator: str, *, actor: Identity | str | None, comment: str | None) -> dict[str, Any]:
    """Reject the waiting stage ``P/C/S`` with a comment: the run ends rejected."""
    from ..approvals import reject as do_reject

    return _run_dict(do_reject(ws, locator, user=as_identity(actor), comment=comment))


def _revisions(revisions: Mapping[str, str] | None) -> dict[str, str]:
    out = {}
    for name, rev in (revisions or {}).items():
        if not isinstance(name, str) or not name or not isinstance(rev, str) or not rev:
            raise UsageError(f"revision {name!r}={rev!r}: expected MATERIAL=REVISION")
        out[name] = rev
    return out


def trigger(ws: Any, pipeline: str, *, actor: Identity | str | None, revisions: Mapping[str, str] | None = None,
            driver: Driver | None = None, engine: Any = None) -> dict[str, Any]:
    """A manual trigger with chosen revisions (``{material: sha|branch|tag|COUNTER}``)."""
    from ..materials.controls import check_unlocked
    from ..pauses import check_not_paused

    who = require_act(ws, actor, "trigger", target=pipeline)
    cfg = ws.config.pipeline(pipeline)
    check_not_paused(ws.store, cfg.name)
    check_unlocked(ws.store, cfg)
    chosen = _revisions(revisions)
    if engine is not None:
        run = engine.trigger(pipeline, revisions=chosen or None, triggered_by=who.user)
    else:
        with ws.engine() as eng:
            run = eng.trigger(pipeline, revisions=chosen or None, triggered_by=who.user)
    return _hand_over(run, driver)


def rerun(ws: Any, locator: str, *, actor: Identity | str | None, failed_jobs: bool = False,
          driver: Driver | None = None, engine: Any = None) -> dict[str, Any]:
    """GoCD's rerun of stage ``P/C/S``: a new stage counter with the run's revisions."""
    from ..engine import find_run
    from ..materials.controls import check_unlocked

    run, rest = find_run(ws.store, locator)
    if len(rest) != 1:
        raise UsageError(f"{locator!r}: expected PIPELINE/COUNTER/STAGE")
    who = require_act(ws, actor, "rerun", target=f"{run.pipeline}/{run.counter}/{rest[0]}")
    check_unlocked(ws.store, ws.config.pipeline(run.pipeline), allow_run=run.counter)
    if engine is not None:
        new = engine.rerun(run, rest[0], failed_jobs=failed_jobs, by=who.user)
    else:
        with ws.engine() as eng:
            new = eng.rerun(run, rest[0], failed_jobs=failed_jobs, by=who.user)
    return _hand_over(new, driver)


def cancel(ws: Any, locator: str, *, actor: Identity | str | None,
           on_driver: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Cancel run ``P/C``: ``cancelled`` now when nothing runs it, else ``requested`` (its driver stops the jobs).

    ``on_driver(run_id)`` lets the server stop a run its own engine drives at once.
    """
    from ..approvals import record
    from ..engine import find_run
    from ..materials.controls import request_cancel

    run, _ = find_run(ws.store, locator)
    who = require_act(ws, actor, "cancel", target=run.locator)
    done = request_cancel(ws, run, by=who.user)
    if not done and on_driver is not None:
        on_driver(run.id)
    record(ws, who.user, "cancel", run.locator, "ok", pipeline=run.pipeline, counter=run.counter)
    current = ws.store.get_pipeline_run_by_id(run.id)
    return {**_run_dict(current), "cancel": "cancelled" if done else "requested"}


def unlock(ws: Any, pipeline: str, *, actor: Identity | str | None) -> dict[str, Any]:
    """Release the lock a failed run holds on ``pipeline`` (lock_behavior: lockOnFailure)."""
    from ..approvals import record
    from ..materials.controls import unlock as do_unlock

    who = require_act(ws, actor, "unlock", target=pipeline)
    holder = do_unlock(ws, ws.config.pipeline(pipeline), by=who.user)
    record(ws, who.user, "unlock", pipeline, "ok", detail=f"was locked by {pipeline}/{holder}")
    return {"pipeline": pipeline, "was_locked_by": f"{pipeline}/{holder}"}


def pause(ws: Any, pipeline: str, reason: str | None, *, actor: Identity | str | None) -> dict[str, Any]:
    """GoCD's pause: no trigger of ``pipeline`` (automatic or manual) until unpaused; running runs go on."""
    from ..approvals import record, refuse
    from ..errors import InvalidState
    from ..pauses import pause as do_pause

    who = require_act(ws, actor, "pause", target=pipeline, comment=reason)
    name = ws.config.pipeline(pipeline).name
    try:
        held = do_pause(ws.store, name, by=who.user, reason=reason or None)
    except InvalidState as e:
        raise refuse(ws, who.user, "pause", name, str(e), comment=reason) from None
    record(ws, who.user, "pause", name, "ok", comment=reason, pipeline=name)
    return {"pipeline": name, **held.as_dict()}


def unpause(ws: Any, pipeline: str, *, actor: Identity | str | None) -> dict[str, Any]:
    """Lift the pause on ``pipeline``: the next scheduling pass may trigger it again."""
    from ..approvals import record, refuse
    from ..errors import InvalidState
    from ..pauses import unpause as do_unpause

    who = require_act(ws, actor, "unpause", target=pipeline)
    name = ws.config.pipeline(pipeline).name
    try:
        held = do_unpause(ws.store, name, by=who.user)
    except InvalidState as e:
        raise refuse(ws, who.user, "unpause", name, str(e)) from None
    record(ws, who.user, "unpause", name, "ok", detail=f"was {held.describe()}", pipeline=name)
    return {"pipeline": name, "paused": False, "was_paused_by": held.by, "was_pause_reason": held.reason}


def set_traffic(ws: Any, route: str, weight: int, *, actor: Identity | str | None,
                reason: str | None = None) -> dict[str, Any]:
    """Move ``weight`` % of ``route`` to its candidate stack (authorized like a release step)."""
    from ..traffic import set_weights

    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
        raise UsageError("weight must be a whole number from 0 to 100")
    who = as_identity(actor)
    weights = set_weights(ws, route, weight, user=who, reason=reason)
    return {"route": route, "weights": weights, "by": who.user}


def rollback(ws: Any, locator: str, *, actor: Identity | str | None, reason: str | None = None) -> dict[str, Any]:
    """Put 100% of the traffic back on the previous stack for run ``P/C`` (refused after 100%)."""
    from ..traffic import rollback as do_rollback

    who = as_identity(actor)
    done = do_rollback(ws, locator, user=who, reason=reason)
    return {"run": locator, "by": who.user, "reason": reason, "routes": done}


def incident_open(ws: Any, title: str, *, actor: Identity | str | None, caused_by: str | None = None,
                  severity: str = "major", opened_at: str | None = None, note: str | None = None) -> dict[str, Any]:
    from ..metrics_store import open_incident

    who = require_act(ws, actor, "incident", target=caused_by or "incident")
    return _incident(open_incident(ws, title, caused_by=caused_by, severity=severity, opened_at=opened_at,
                                   user=who.user, note=note))


def incident_resolve(ws: Any, incident_id: int, *, actor: Identity | str | None, resolved_at: str | None = None,
                     note: str | None = None) -> dict[str, Any]:
    from ..metrics_store import resolve_incident

    who = require_act(ws, actor, "incident", target=f"incident:{incident_id}")
    return _incident(resolve_incident(ws, incident_id, resolved_at=resolved_at, user=who.user, note=note))


def mark(ws: Any, locator: str, kind: str, *, actor: Identity | str | None, incident: int | None = None,
         note: str | None = None) -> dict[str, Any]:
    from ..metrics_store import mark_deployment

    who = require_act(ws, actor, "mark", target=locator)
    return mark_deployment(ws, locator, kind, incident=incident, user=who.user, note=note)


def retry_notifications(ws: Any, ids: tuple[int, ...] = (), *, actor: Identity | str | None) -> dict[str, Any]:
    """Failed and given-up notifications (all, or ``ids``) are sent again by the next sender pass."""
    from ..approvals import record
    from ..notifications.outbox import retry

    who = require_act(ws, actor, "notification", target="notifications")
    n = retry(ws.store, ids)
    record(ws, who.user, "notification", "notifications", "ok",
           detail=f"retry {n} notification(s)" + (f": ids {', '.join(map(str, ids))}" if ids else ""))
    return {"retried": n}
