"""The ``rollout:`` short form, expanded to plain stages (pure: no I/O).

::

    rollout:
      route: prod
      steps: [5, 25, 50, 75, 100]
      approval: manual                 # or {type: manual, users: [...], roles: [...]} or success
      analysis: notebooks/canary_analysis.ipynb   # optional; a notebook, or a shell command

becomes, after the pipeline's own stages, one stage per step named
``install_prod_5`` … ``install_prod_100`` (``name:`` changes the prefix), each
with ``traffic: {route: prod, weight: N}`` and the approval. With
``analysis``, each step's job runs it *before* the step's move, on the canary
as it stands (``previous_weight``), so a step only happens when the canary
looked healthy; the job's second task (``rollback``, ``run_if: failed``) puts
100% back on the previous stack when the analysis fails. A notebook gets the
parameters ``route``, ``weight``, ``previous_weight``, ``step``; a command gets
them as ``WORKBENCH_ROUTE``, ``WORKBENCH_WEIGHT``, ``WORKBENCH_PREVIOUS_WEIGHT``,
``WORKBENCH_STEP`` (the stage's environment variables).
"""
from __future__ import annotations

from typing import Any, Mapping

from ..config.model import NOWHERE, Approval, GenericTask, Job, Loc, NotebookTask, ScriptTask, Stage, Traffic
from ..errors import ConfigError, Problem

KEYS = frozenset({"route", "steps", "approval", "analysis", "name", "parameters", "timeout"})


def _approval(raw: Any, problems: list[str], loc: Loc) -> Approval:
    if raw is None or raw == "manual":
        return Approval(type="manual", loc=loc)
    if raw == "success":
        return Approval(type="success", loc=loc)
    if isinstance(raw, Mapping):
        kind = raw.get("type", "manual")
        unknown = set(raw) - {"type", "users", "roles", "allow_only_on_success"}
        if unknown:
            problems.append(f"unknown key {', '.join(sorted(map(str, unknown)))} in rollout approval")
        if kind not in ("manual", "success"):
            problems.append(f"rollout approval type must be manual or success, found {kind!r}")
        users, roles = raw.get("users") or [], raw.get("roles") or []
        if not isinstance(users, list) or not isinstance(roles, list):
            problems.append("rollout approval users and roles must be lists")
            users, roles = [], []
        return Approval(type=str(kind), users=tuple(map(str, users)), roles=tuple(map(str, roles)),
                        allow_only_on_success=bool(raw.get("allow_only_on_success", False)), loc=loc)
    problems.append(f"rollout approval must be manual, success or a mapping, found {raw!r}")
    return Approval(type="manual", loc=loc)


def rollout_problems(raw: Any) -> list[str]:
    """What is wrong with a ``rollout:`` mapping (empty when it expands cleanly)."""
    problems: list[str] = []
    if not isinstance(raw, Mapping):
        return ["rollout must be a mapping with route and steps"]
    unknown = sorted(set(map(str, raw)) - KEYS)
    if unknown:
        problems.append(f"unknown key {', '.join(map(repr, unknown))} in rollout (keys: {', '.join(sorted(KEYS))})")
    if not isinstance(raw.get("route"), str) or not raw.get("route"):
        problems.append("rollout needs `route:`, the name of a route in `routes:`")
    steps = raw.get("steps")
    if not isinstance(steps, list) or not steps:
        problems.append("rollout needs `steps:`, a list of percentages such as [5, 25, 50, 75, 100]")
    else:
        if not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= 100 for s in steps):
            problems.append(f"rollout steps must be whole percentages from 1 to 100, found {steps}")
        elif any(b <= a for a, b in zip(steps, steps[1:])):
            problems.append(f"rollout steps must increase, found {steps}")
    analysis = raw.get("analysis")
    if analysis is not None and (not isinstance(analysis, str) or not analysis.strip()):
        problems.append("rollout analysis must be a notebook path or a shell command")
    params = raw.get("parameters")
    if params is not None and not isinstance(params, Mapping):
        problems.append("rollout parameters must be a mapping (passed to the analysis notebook)")
    return problems


def expand_rollout(raw: Any, loc: Loc = NOWHERE) -> tuple[Stage, ...]:
    """The step stages of a ``rollout:`` mapping; raises ConfigError listing its problems."""
    problems = rollout_problems(raw)
    approval = _approval(raw.get("approval") if isinstance(raw, Mapping) else None, problems, loc)
    if problems:
        raise ConfigError([Problem(loc.file, loc.line, loc.col, p) for p in problems])
    route: str = raw["route"]
    prefix = str(raw.get("name") or f"install_{route}")
    analysis = raw.get("analysis")
    timeout = raw.get("timeout")
    stages = []
    previous = 0
    for step in raw["steps"]:
        env = {"WORKBENCH_ROUTE": route, "WORKBENCH_WEIGHT": str(step), "WORKBENCH_PREVIOUS_WEIGHT": str(previous),
               "WORKBENCH_STEP": f"{prefix}_{step}"}
        if analysis:
            params = {**dict(raw.get("parameters") or {}), "route": route, "weight": step,
                      "previous_weight": previous, "step": f"{prefix}_{step}"}
            check = (NotebookTask(path=analysis, parameters=params, loc=loc) if analysis.endswith(".ipynb")
                     else ScriptTask(script=analysis, loc=loc))
            tasks: tuple[Any, ...] = (check, GenericTask(kind="rollback", options={"reason": f"canary analysis failed at "
                                                         f"{previous}% before step {step}%"}, run_if="failed", loc=loc))
            job = Job(name="analysis", tasks=tasks, timeout=float(timeout) if timeout else None, loc=loc)
        else:
            job = Job(name="shift", tasks=(GenericTask(kind="traffic_step", options={"route": route, "weight": step},
                                                       loc=loc),), loc=loc)
        stages.append(Stage(name=f"{prefix}_{step}", jobs=(job,), approval=approval, environment_variables=env,
                            traffic=Traffic(route=route, weight=step, loc=loc), loc=loc))
        previous = step
    return tuple(stages)
