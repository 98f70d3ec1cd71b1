"""What a dashboard button does: the same calls, and the same authorization, as the CLI.

Approve, reject, rollback and a manual traffic move all go through
``workbench.approvals.authorize`` (inside approvals.approve/reject,
traffic.rollback, and :func:`set_weights`); the dashboard adds nothing but
running an approved run onwards in a background thread, so the page stays
responsive while its stages run.
"""
from __future__ import annotations

import inspect
import threading
from typing import Any, Callable

from ..errors import UsageError

_drivers: list[threading.Thread] = []


def approve(ws: Any, locator: str, *, user: str, comment: str | None, drive: bool = True,
            on_done: Callable[[Any], None] | None = None) -> Any:
    """Approve through approvals.approve (authorization, audit); then drive the run in a thread."""
    from ..approvals import approve as do_approve

    run = do_approve(ws, locator, user=user, comment=comment or None, drive=False)
    if drive:
        continue_run(ws, run.id, on_done)
    return run


def reject(ws: Any, locator: str, *, user: str, comment: str | None) -> Any:
    from ..approvals import reject as do_reject

    return do_reject(ws, locator, user=user, comment=comment)


def continue_run(ws: Any, run_id: int, on_done: Callable[[Any], None] | None = None) -> threading.Thread:
    """Drive ``run_id`` on until it finishes or waits for a person, off the kernel's main thread."""

    def work() -> None:
        result: Any = None
        try:
            with ws.engine() as engine:
                result = engine.drive(run_id)
        except Exception as exc:  # shown by the dashboard; a failed drive must not kill the kernel
            result = exc
        if on_done is not None:
            on_done(result)

    t = threading.Thread(target=work, name=f"wb-drive-{run_id}", daemon=True)
    _drivers.append(t)
    t.start()
    return t


def wait_for_drivers(timeout: float | None = None) -> None:
    """For tests and shutdown: wait until every run started from here stopped moving."""
    for t in list(_drivers):
        t.join(timeout)
        if not t.is_alive():
            _drivers.remove(t)


def set_weights(ws: Any, route: str, weight: int, *, user: str, reason: str | None = None) -> dict[str, int]:
    """Move ``weight`` % of ``route`` to its candidate stack, authorized like ``workbench traffic --set``."""
    from .. import traffic

    fn = getattr(traffic, "set_weights", None)
    if fn is not None:
        params = inspect.signature(fn).parameters
        kw: dict[str, Any] = {"user": user} if "user" in params else {"actor": user}
        if "reason" in params:
            kw["reason"] = reason
        return fn(ws, route, weight, **kw)
    # the CLI's own sequence (workbench/cli/approvals.py, `traffic --set`), until traffic exports it
    from ..approvals import authorize, record

    if not isinstance(weight, int) or not 0 <= weight <= 100:
        raise UsageError("weight must be a whole number from 0 to 100")
    traffic.route_of(ws.config, route, ws.root)
    subject = [s.approval for p in ws.config.pipelines.values() for s in p.stages
               if s.approval.manual and s.traffic is not None and s.traffic.route == route]
    actor = authorize(ws, subject, user, "traffic", target=f"route:{route}", comment=reason)
    weights = traffic.move(ws, route, weight, actor=actor, reason=reason or f"set by hand by {actor}")
    record(ws, actor, "traffic", f"route:{route}", "ok", comment=reason,
           detail=" ".join(f"{k}={v}%" for k, v in weights.items()))
    return weights


def rollback(ws: Any, locator: str, *, user: str, reason: str | None) -> list[dict[str, Any]]:
    from ..traffic import rollback as do_rollback

    return do_rollback(ws, locator, user=user, reason=reason)


def may_approve(ws: Any, locator: str, user: str) -> bool:
    """Whether ``user`` is among the stage's approvers (display only; the action checks again)."""
    from ..approvals import approvers

    pipeline, _, rest = locator.partition("/")
    stage_name = rest.split("/", 1)[1] if "/" in rest else ""
    try:
        stage = ws.config.pipeline(pipeline).stage(stage_name)
    except Exception:
        return False
    return stage is not None and approvers(ws.config, stage).allows(user)
