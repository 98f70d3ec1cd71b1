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

The values are read by the config loader's own helpers, like any other
pipeline key: ``#{param}`` substitution, GoCD's booleans (``"false"`` is
false), numbers written as text, and ``timeout`` in minutes or as a duration
(``"90s"``, ``"15m"``) exactly as a job's ``timeout``, since it becomes the
analysis job's timeout.  Plain data (``expand_rollout``, for tests and
tools) is read through the same parser.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..config.context import NAME_RE, Ctx, is_null
from ..config.jobs import parse_approval, plain_data
from ..config.model import NOWHERE, Approval, GenericTask, Job, Loc, NotebookTask, ScriptTask, Stage, Traffic
from ..config.yamlnodes import Map, Node, Seq
from ..errors import ConfigError, Problem

KEYS = frozenset({"route", "steps", "approval", "analysis", "name", "parameters", "timeout"})


@dataclass(frozen=True)
class RolloutSpec:
    """A checked ``rollout:`` mapping; ``timeout`` in seconds (None: no limit)."""

    route: str
    steps: tuple[int, ...]
    approval: Approval
    analysis: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    prefix: str = ""
    loc: Loc = NOWHERE
    route_loc: Loc = NOWHERE


def parse_rollout(node: Node | None, ctx: Ctx, at: Node | None = None) -> RolloutSpec | None:
    """A ``rollout:`` node into a spec; every problem goes to ``ctx`` at its line (None when unusable)."""
    what = f"rollout of pipeline {ctx.pipeline!r}" if ctx.pipeline else "rollout"
    m = ctx.mapping(node, what, at, null_ok=False, shape="a mapping with route and steps")
    if m is None:
        return None
    ctx.check_keys(m, KEYS, what)
    route = ctx.req_text(m, "route", what, at or m)
    steps = _steps(m, what, ctx, at)
    approval_node = m.get("approval")
    approval = (Approval("manual", loc=m.loc) if is_null(approval_node) else
                parse_approval(approval_node, ctx, m.key("approval"), default_type="manual"))  # type: ignore[arg-type]
    analysis = ctx.opt_text(m, "analysis", what)
    if analysis is not None and not analysis.strip():
        ctx.error(m.get("analysis"), f"analysis of {what} must be a notebook path or a shell command")
        analysis = None
    params: Mapping[str, Any] = {}
    if not is_null(m.get("parameters")):
        pm = ctx.mapping(m.get("parameters"), f"parameters of {what} (passed to the analysis notebook)",
                         m.key("parameters"))
        params = plain_data(pm, ctx) if pm is not None else {}
    timeout = None
    if not is_null(m.get("timeout")):
        timeout = ctx.duration(m.get("timeout"), f"timeout of {what}", 60.0, m.key("timeout"))
    before = len(ctx.problems)
    prefix = ctx.opt_text(m, "name", what) or (f"install_{route}" if route else "")
    if prefix and not NAME_RE.match(prefix) and len(ctx.problems) == before:  # not twice for one bad #{param}
        ctx.error(m.get("name") or m.get("route"), f"stage name prefix {prefix!r} of {what} is not a valid stage "
                                                   "name: use letters, digits, '_', '-' and '.' (not first)")
    if not route or not steps:
        return None
    route_node = m.get("route")
    return RolloutSpec(route, steps, approval, analysis, params, timeout, prefix, m.loc,
                       route_node.loc if route_node is not None else m.loc)


def _steps(m: Map, what: str, ctx: Ctx, at: Node | None) -> tuple[int, ...]:
    node = m.get("steps")
    hint = "a list of percentages such as [5, 25, 50, 75, 100]"
    if is_null(node) or (isinstance(node, Seq) and not len(node)):
        ctx.error(m.key("steps") or at or m, f"{what} needs `steps:`, {hint}")
        return ()
    seq = ctx.sequence(node, f"steps of {what} ({hint})", m.key("steps"))
    if seq is None:
        return ()
    out: list[int] = []
    ok = True
    for item in seq:
        value = ctx.integer(item, f"each step of {what} (a percentage)", 1, 100, at=m.key("steps"))
        if value is None:
            ok = False
        elif out and value <= out[-1]:
            ctx.error(item, f"steps of {what} must increase, found {value} after {out[-1]}")
            ok = False
        else:
            out.append(value)
    return tuple(out) if ok else ()


def rollout_stages(spec: RolloutSpec) -> tuple[Stage, ...]:
    """The stages of a checked rollout, one per step, each moving the route when it passes."""
    loc, route, prefix = spec.loc, spec.route, spec.prefix
    stages = []
    previous = 0
    for step in spec.steps:
        env = {"WORKBENCH_ROUTE": route, "WORKBENCH_WEIGHT": str(step), "WORKBENCH_PREVIOUS_WEIGHT": str(previous),
               "WORKBENCH_STEP": f"{prefix}_{step}"}
        if spec.analysis:
            params = {**dict(spec.parameters), "route": route, "weight": step, "previous_weight": previous,
                      "step": f"{prefix}_{step}"}
            check = (NotebookTask(path=spec.analysis, parameters=params, loc=loc) if spec.analysis.endswith(".ipynb")
                     else ScriptTask(script=spec.analysis, loc=loc))
            tasks: tuple[Any, ...] = (check, GenericTask(kind="rollback", options={"reason": f"canary analysis failed at "
                                                         f"{previous}% before step {step}%"}, run_if="failed", loc=loc))
            job = Job(name="analysis", tasks=tasks, timeout=spec.timeout, loc=loc)
        else:
            job = Job(name="shift", tasks=(GenericTask(kind="traffic_step", options={"route": route, "weight": step},
                                                       loc=loc),), loc=loc)
        stages.append(Stage(name=f"{prefix}_{step}", jobs=(job,), approval=spec.approval, environment_variables=env,
                            traffic=Traffic(route=route, weight=step, loc=spec.route_loc), loc=loc))
        previous = step
    return tuple(stages)


def _from_plain(raw: Any) -> tuple[RolloutSpec | None, list[str]]:
    """Plain data through the YAML parser, so it is read exactly as a file's ``rollout:`` is."""
    import yaml

    from ..config.yamlnodes import compose

    try:
        text = yaml.safe_dump({"rollout": raw}, sort_keys=False)
    except yaml.YAMLError as exc:
        return None, [f"rollout cannot be read: {exc}"]
    node, problems = compose(text, "<rollout>")
    ctx = Ctx()
    top = node if isinstance(node, Map) else None
    spec = parse_rollout(top.get("rollout") if top else None, ctx, top.key("rollout") if top else None)
    found = [p.message for p in (*problems, *ctx.problems) if p.severity == "error"]
    return (None if found else spec), found


def rollout_problems(raw: Any) -> list[str]:
    """What is wrong with a ``rollout:`` mapping given as plain data (empty when it expands cleanly)."""
    return _from_plain(raw)[1]


def expand_rollout(raw: Any, loc: Loc = NOWHERE) -> tuple[Stage, ...]:
    """The step stages of a ``rollout:`` mapping given as plain data; raises ConfigError listing its problems."""
    spec, problems = _from_plain(raw)
    if problems or spec is None:
        raise ConfigError([Problem(loc.file, loc.line, loc.col, p) for p in problems or ["rollout is empty"]])
    from dataclasses import replace

    return rollout_stages(replace(spec, loc=loc, route_loc=loc))


__all__ = ["KEYS", "RolloutSpec", "expand_rollout", "parse_rollout", "rollout_problems", "rollout_stages"]
