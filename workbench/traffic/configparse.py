"""Adapters between the config loader's extension points and the pure route/rollout parsers.

The loader hands positioned YAML nodes and a problem collector; the parsers
in ``routes`` and ``rollout`` work on plain data so the demo and tests can use
them without YAML. Problems are reported at the route's or the key's line.
"""
from __future__ import annotations

from typing import Any

from ..config.model import Config, GenericTask, Stage
from .routes import parse_route


def _loc(node: Any) -> Any:
    from ..config.model import NOWHERE

    return getattr(node, "loc", NOWHERE)


def parse_routes_section(node: Any, ctx: Any) -> dict[str, Any]:
    """``routes:`` → {name: Route}; every problem reported at its route."""
    from ..config.yamlnodes import Map

    m = ctx.mapping(node, "routes")
    if m is None:
        return {}
    out = {}
    for key, body in m:
        name = ctx.name(key, "route")
        value = body.plain() if body is not None else None
        route, problems = parse_route(name, value, _loc(key))
        at = body if isinstance(body, Map) else key
        for p in problems:
            ctx.error(at, p)
        if route is not None:
            out[name] = route
    return out


def parse_rollback_task(node: Any, ctx: Any) -> GenericTask | None:
    """``- rollback: {reason: ...}`` (or ``- rollback:``): roll the run back, usually with ``run_if: failed``."""
    from ..config.yamlnodes import Map

    options: dict[str, Any] = {}
    if isinstance(node, Map):
        ctx.check_keys(node, {"reason"}, "rollback task")
        reason = ctx.opt_text(node, "reason", "rollback task")
        if reason:
            options["reason"] = reason
    elif node is not None and not getattr(node, "is_null", False):
        ctx.error(node, "rollback takes no value or a mapping with `reason:`")
    return GenericTask(kind="rollback", options=options, loc=_loc(node))


def expand_rollout_key(node: Any, ctx: Any, stages: tuple[Stage, ...]) -> tuple[Stage, ...]:
    """Pipeline key ``rollout:``: the pipeline's stages followed by one stage per step.

    Parsed from the positioned nodes with the loader's helpers, so its values
    get ``#{param}`` substitution and typed parsing, and each problem its line.
    """
    from .rollout import parse_rollout, rollout_stages

    spec = parse_rollout(node, ctx)
    return stages if spec is None else (*stages, *rollout_stages(spec))


def check_traffic_routes(config: Config, ctx: Any) -> None:
    """Every ``traffic:`` (written or from ``rollout:``) names a route of ``routes:``.

    As with roles, the check is strict only when the config has a ``routes:``
    section; without one the stage is only warned about (it fails when it runs).
    """
    from ..config.context import suggest

    has_section = "routes" in config.extensions
    routes = config.extensions.get("routes") or {}
    for p in config.pipelines.values():
        for stage in p.stages:
            t = stage.traffic
            if t is None or t.route in routes:
                continue
            if has_section:
                known = ", ".join(sorted(routes)) or "none"
                ctx.error(t.loc, f"stage {stage.name!r} of pipeline {p.name!r} moves traffic of unknown route "
                                 f"{t.route!r}{suggest(t.route, routes)} (routes: {known})")
            else:
                ctx.warn(t.loc, f"stage {stage.name!r} of pipeline {p.name!r} moves traffic of route {t.route!r}, "
                                "but no file has a `routes:` section; the step will fail when it runs")
