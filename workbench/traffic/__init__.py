"""Routes, traffic providers, rollout steps and rollback (our extension to GoCD).

Importing this module (``workbench.features`` does) registers the store
tables and frames (``traffic``, ``traffic_weights``, ``rollbacks``), the stage
hook that moves traffic when a stage with ``traffic:`` passes, the task kinds
``rollback`` and ``traffic_step`` used by expanded rollouts, and the ``routes:``
config section when the loader offers extension points.

Public API::

    set_weights(ws, "shop", 25, user="alice", reason="...")  # a person: authorized and audited
    move(ws, "shop", 25, actor="run shop/7", reason="...")     # 25% on the candidate stack, no check
    rollback(ws, "shop-release/7", user="alice", reason="5xx on canary")
    reconcile(ws, "shop") / reconcile_all(ws)           # re-apply recorded weights
    route_status(ws)                                     # rows for the CLI and dashboards
"""
from __future__ import annotations

from typing import Any

from ..hooks import register_stage_hook
from ..tasks import TaskError, register_task_runner
from ..tasks.process import ProcessResult
from . import state  # noqa: F401  (tables, migration, frames)
from .providers import PROVIDERS, Provider, check_weights, provider_for, register_provider
from .rollback import rollback
from .rollout import expand_rollout, rollout_problems
from .routes import Route, parse_route, parse_routes, route_of, routes_of
from .shift import STAGE_HOOK, move, plan, reconcile, reconcile_all, route_status, set_weights, traffic_approvers

register_stage_hook(STAGE_HOOK)


def _run_rollback(task: Any, ctx: Any) -> ProcessResult:
    """Task ``rollback`` (``run_if: failed`` after a canary analysis): the run rolls itself back."""
    from ..errors import WorkbenchError
    from ..workspace import Workspace

    spec = ctx.spec
    reason = str(task.options.get("reason") or "a task before it failed")
    ws = Workspace.open(spec.workspace, store_url=spec.context.get("store_url"))
    try:
        done = rollback(ws, f"{spec.pipeline}/{spec.counter}", reason=reason, automatic=True)
    except WorkbenchError as exc:
        raise TaskError(f"automatic rollback failed: {exc}") from None
    finally:
        ws.close()
    for d in done:
        ctx.say(f"rolled back route {d['route']}: {d['from']} -> {d['to']} ({reason})")
    return ProcessResult(0)


def _run_traffic_step(task: Any, ctx: Any) -> ProcessResult:
    """Task ``traffic_step``: a rollout step without analysis; the move itself happens when the stage passes."""
    ctx.say(f"route {task.options.get('route')} moves to {task.options.get('weight')}% on the new stack "
            "when this stage passes")
    return ProcessResult(0)


register_task_runner("rollback", _run_rollback)
register_task_runner("traffic_step", _run_traffic_step)


def _register_config() -> None:
    """Hook ``routes:``, ``rollout:``, the ``rollback`` task and the route check into the config loader."""
    from .. import config as cfgpkg
    from . import configparse as cp

    cfgpkg.register_section("routes", cp.parse_routes_section)
    cfgpkg.register_task_kind("rollback", cp.parse_rollback_task)
    if hasattr(cfgpkg, "register_pipeline_key"):
        cfgpkg.register_pipeline_key("rollout", cp.expand_rollout_key)
    if hasattr(cfgpkg, "register_config_check"):
        cfgpkg.register_config_check(cp.check_traffic_routes)


_register_config()

__all__ = [
    "PROVIDERS", "Provider", "Route", "check_weights", "expand_rollout", "move", "parse_route", "parse_routes", "plan",
    "provider_for", "reconcile", "reconcile_all", "register_provider", "rollback", "rollout_problems", "route_of",
    "route_status", "routes_of", "set_weights", "traffic_approvers",
]
