"""Putting the files together and checking what refers to what.

GoCD's YAML plugin only parses; the server checks references afterwards.
The workbench does both, here, once every file is read, so a pipeline may
depend on one defined in another file and a template may live anywhere:

* pipeline, template and role names are unique across files (the second
  definition is the error, naming where the first is); pipeline, stage and
  job names are compared case-insensitively, as GoCD does;
* dependency materials name a known pipeline and one of its stages, and the
  dependencies have no cycle.  A cycle is spelled in dependency order,
  ``a -> b -> a`` meaning *a depends on b, which depends on a*;
* ``fetch`` tasks read from an earlier stage of the same pipeline, or from a
  stage and job of an upstream pipeline reached through dependency materials
  (GoCD's ``ancestor/.../parent`` path);
* ``label_template`` uses ``${COUNT}`` and material names only;
* environments list known pipelines, each pipeline in one environment; an
  environment defined in several files is merged (GoCD's partial
  environments) as long as its variables agree;
* approval roles are checked only when some file has a ``roles:`` section:
  without one, roles come from outside the config (an identity provider) and
  cannot be known here, while with one it is the list of roles, and a typo in
  an approval would otherwise lock everybody out of a stage.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Callable, Iterator

from .context import ELSEWHERE, Ctx, suggest
from .jobs import template_stages
from .loader import SECTIONS, FileParts, parse_pipeline
from .model import Config, DependencyMaterial, Environment, FetchTask, Pipeline, Stage, Task
from .yamlnodes import Node, Scalar


def assemble(parts: list[FileParts], ctx: Ctx, files: tuple[str, ...]) -> Config:
    """Parse the pipelines of all files (templates are known by then) and check references."""
    templates: dict[str, tuple[Scalar, Node]] = {}
    for fp in parts:
        for key, node in fp.templates:
            if key.text in templates:
                ctx.error(key, f"template {key.text!r} is already defined at {templates[key.text][0].loc}")
            else:
                templates[key.text] = (key, node)
    ctx.templates = templates

    pipelines: dict[str, Pipeline] = {}
    by_lower: dict[str, Pipeline] = {}
    for fp in parts:
        ctx.format_version = fp.format_version
        ctx.origin = fp.origin
        for key, node in fp.pipelines:
            try:
                pipeline = parse_pipeline(key, node, ctx)
            except RecursionError:
                ctx.error(key, f"pipeline {key.text!r} is nested too deeply to read")
                continue
            except Exception as exc:  # a bug (ours or an extension's) must not hide the other pipelines' problems
                ctx.error(key, f"internal error while reading pipeline {key.text!r} ({type(exc).__name__}: {exc}); "
                               "please report it")
                continue
            if pipeline is None:
                continue
            first = by_lower.get(pipeline.name.lower())
            if first is not None:
                same = "" if first.name == pipeline.name else f" as {first.name!r} (names are case-insensitive)"
                ctx.error(key, f"pipeline {pipeline.name!r} is already defined{same} at {first.loc}")
                continue
            pipelines[pipeline.name] = by_lower[pipeline.name.lower()] = pipeline
    ctx.origin = None

    used = {p.template for p in pipelines.values()}
    for name, (key, node) in templates.items():
        if name not in used:  # still report its mistakes, without parameters to fill in
            template_stages(node, ctx, f"stages of template {name!r}", key)

    roles: dict[str, tuple[str, ...]] = {}
    role_keys: dict[str, Scalar] = {}
    for fp in parts:
        for key, users in fp.roles:
            if key.text in role_keys:
                ctx.error(key, f"role {key.text!r} is already defined at {role_keys[key.text].loc}")
            else:
                roles[key.text], role_keys[key.text] = users, key

    check_pipelines(pipelines, ctx, set(roles) if any(fp.has_roles for fp in parts) else None)
    environments = check_environments([e for fp in parts for e in fp.environments], pipelines, ctx)
    config = Config(pipelines=pipelines, environments=environments, roles=roles, files=files,
                    extensions=_extensions(parts, ctx))
    for check in CONFIG_CHECKS:  # features' cross-checks (e.g. stage traffic names a configured route)
        check(config, ctx)
    return config


ConfigCheck = Callable[[Config, Ctx], None]
CONFIG_CHECKS: list[ConfigCheck] = []


def register_config_check(check: ConfigCheck) -> None:
    """Add a check over the assembled config; it reports with ``ctx.error(loc, message)``."""
    if check not in CONFIG_CHECKS:
        CONFIG_CHECKS.append(check)


def _extensions(parts: list[FileParts], ctx: Ctx) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fp in parts:
        for name, value, key in fp.sections:
            if name not in out:
                out[name] = value
                continue
            merge = SECTIONS[name][1]
            if merge is not None:
                out[name] = merge(out[name], value)
            elif isinstance(out[name], Mapping) and isinstance(value, Mapping):
                for k in value.keys() & out[name].keys():
                    ctx.error(key, f"{name}: {k!r} is already defined in another file")
                out[name] = {**value, **out[name]}
            elif isinstance(out[name], (list, tuple)) and isinstance(value, (list, tuple)):
                out[name] = type(out[name])([*out[name], *value])
            else:
                ctx.error(key, f"section {name!r} is already defined in another file")
    return out


def check_pipelines(pipelines: dict[str, Pipeline], ctx: Ctx, roles: set[str] | None) -> None:
    for p in pipelines.values():
        _unique([(s.name, s.loc) for s in p.stages], f"pipeline {p.name!r}", "stage", ctx)
        for i, stage in enumerate(p.stages):
            _unique([(j.name, j.loc) for j in stage.jobs], f"stage {stage.name!r}", "job", ctx)
            if roles is not None:
                for role in stage.approval.roles:
                    if role not in roles:
                        ctx.error(ctx.where.get(stage.approval, "role:" + role),
                                  f"approval of stage {stage.name!r} names unknown role {role!r}{suggest(role, roles)} "
                                  f"(roles: {', '.join(sorted(roles)) or 'none'})")
            for job in stage.jobs:
                for task in _tasks(job.tasks):
                    if isinstance(task, FetchTask):
                        _check_fetch(p, i, stage, task, pipelines, ctx)
        _check_label(p, ctx)
        for mat in p.materials:
            if not isinstance(mat, DependencyMaterial):
                continue
            upstream = pipelines.get(mat.pipeline)
            if upstream is None:
                ctx.error(ctx.where.get(mat, "pipeline"), f"dependency material {mat.name!r} refers to unknown "
                                                          f"pipeline {mat.pipeline!r}{suggest(mat.pipeline, pipelines)}"
                                                          f"{ELSEWHERE}")
            elif upstream.stage(mat.stage) is None and not _unresolved_template(upstream):
                names = [s.name for s in upstream.stages]
                ctx.error(ctx.where.get(mat, "stage"), f"dependency material {mat.name!r}: pipeline {mat.pipeline!r} "
                                                       f"has no stage {mat.stage!r}{suggest(mat.stage, names)} "
                                                       f"(its stages: {', '.join(names) or 'none'})")
    _check_cycles(pipelines, ctx)


def _unique(named: list[tuple[str, Any]], where: str, what: str, ctx: Ctx) -> None:
    seen: dict[str, tuple[str, Any]] = {}
    for name, loc in named:
        first = seen.get(name.lower())
        if first is None:
            seen[name.lower()] = (name, loc)
        else:
            same = "" if first[0] == name else f" as {first[0]!r} (names are case-insensitive)"
            ctx.error(loc, f"{what} {name!r} is already defined{same} in {where} at line {first[1].line}")


def _tasks(tasks: tuple[Task, ...]) -> Iterator[Task]:
    for task in tasks:
        while task is not None:
            yield task
            task = getattr(task, "on_cancel", None)


_LABEL_VAR = re.compile(r"\$\{([^}]*)\}")
_LABEL_NAME = re.compile(r"([^\[\]:]+)(?:\[:(\d+)\])?\Z")


def _check_label(p: Pipeline, ctx: Ctx) -> None:
    at = ctx.where.get(p, "label_template")
    found = _LABEL_VAR.findall(p.label_template)
    if p.label_template.count("${") != len(found):
        ctx.error(at, f"label_template {p.label_template!r} has an unterminated ${{")
    materials = [m.name for m in p.materials]
    refused = ctx.refused_materials.get(p.name, set())  # declared, and already reported as unsupported
    for inner in found:
        m = _LABEL_NAME.match(inner)
        if inner.startswith("env:"):
            ctx.error(at, f"label_template: ${{{inner}}} (environment variables in labels) is not supported by the workbench")
        elif m is None:
            ctx.error(at, f"label_template: malformed ${{{inner}}} (use ${{COUNT}}, ${{material}} or ${{material[:7]}})")
        elif m.group(1).upper() != "COUNT" and m.group(1) not in materials and m.group(1) not in refused:
            ctx.error(at, f"label_template of pipeline {p.name!r} refers to unknown material {m.group(1)!r}"
                          f"{suggest(m.group(1), materials)} (materials: {', '.join(materials) or 'none'}; "
                          "${COUNT} is always available)")


def _check_fetch(p: Pipeline, index: int, stage: Stage, task: FetchTask, pipelines: dict[str, Pipeline],
                 ctx: Ctx) -> None:
    if not task.pipeline or task.pipeline == p.name:
        names = [s.name for s in p.stages]
        if task.stage not in names:
            ctx.error(ctx.where.get(task, "stage"), f"fetch refers to stage {task.stage!r}, which pipeline "
                                                    f"{p.name!r} does not have{suggest(task.stage, names)}")
        elif names.index(task.stage) >= index:
            ctx.error(ctx.where.get(task, "stage"), f"fetch in stage {stage.name!r} refers to stage {task.stage!r} of "
                                                    "the same pipeline, which does not run before it (only earlier "
                                                    "stages can be fetched from)")
        else:
            _check_fetch_job(p, task, ctx)
        return
    chain = [*task.pipeline.split("/"), p.name]
    for up, down in zip(chain, chain[1:]):
        for name in (up, down):
            if name not in pipelines:
                ctx.error(ctx.where.get(task, "pipeline"), f"fetch refers to unknown pipeline {name!r}"
                                                           f"{suggest(name, pipelines)}{ELSEWHERE}")
                return
        if not any(isinstance(m, DependencyMaterial) and m.pipeline == up for m in pipelines[down].materials):
            ctx.error(ctx.where.get(task, "pipeline"),
                      f"fetch from {task.pipeline!r}: pipeline {down!r} does not depend on {up!r} (fetch from an "
                      "upstream pipeline, written 'ancestor/.../parent' for one farther up)")
            return
    _check_fetch_job(pipelines[chain[0]], task, ctx)


def _unresolved_template(p: Pipeline) -> bool:
    """A pipeline whose template was not found has no stages: that is reported once, at its `template:`."""
    return p.template is not None and not p.stages


def _check_fetch_job(source: Pipeline, task: FetchTask, ctx: Ctx) -> None:
    if _unresolved_template(source):
        return
    stage = source.stage(task.stage)
    if stage is None:
        names = [s.name for s in source.stages]
        ctx.error(ctx.where.get(task, "stage"), f"fetch: pipeline {source.name!r} has no stage {task.stage!r}"
                                                f"{suggest(task.stage, names)}")
        return
    jobs = [j.name for j in stage.jobs]
    if task.job not in jobs:
        ctx.error(ctx.where.get(task, "job"), f"fetch: stage {stage.name!r} of pipeline {source.name!r} has no job "
                                              f"{task.job!r}{suggest(task.job, jobs)} (jobs: {', '.join(jobs) or 'none'})")


def _check_cycles(pipelines: dict[str, Pipeline], ctx: Ctx) -> None:
    """Depth-first search without recursion; each cycle is reported once, at the material closing it."""
    order = {name: i for i, name in enumerate(pipelines)}
    edges = {name: [(m.pipeline, m) for m in p.materials
                    if isinstance(m, DependencyMaterial) and m.pipeline in pipelines]
             for name, p in pipelines.items()}
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    reported: set[tuple[str, ...]] = set()
    for root in pipelines:
        if root in state:
            continue
        path, stack = [root], [iter(edges[root])]
        state[root] = 1
        while stack:
            step = next(stack[-1], None)
            if step is None:
                state[path.pop()] = 2
                stack.pop()
                continue
            target, material = step
            if target not in state:
                state[target] = 1
                path.append(target)
                stack.append(iter(edges[target]))
            elif state[target] == 1:
                body = path[path.index(target):]
                start = min(range(len(body)), key=lambda i: order[body[i]])
                cycle = tuple(body[start:] + body[:start])
                if cycle not in reported:
                    reported.add(cycle)
                    ctx.error(ctx.where.get(material, "pipeline"),
                              f"pipeline dependency cycle: {' -> '.join(cycle + (cycle[0],))}")


def check_environments(envs: list[Environment], pipelines: dict[str, Pipeline], ctx: Ctx) -> dict[str, Environment]:
    listed: dict[str, tuple[str, Any]] = {}
    for env in envs:
        for name in env.pipelines:
            at = ctx.where.get(env, "pipeline:" + name)
            if name not in pipelines:
                ctx.error(at, f"environment {env.name!r} lists unknown pipeline {name!r}{suggest(name, pipelines)}"
                              f"{ELSEWHERE}")
            first = listed.setdefault(name, (env.name, at))
            if first[0] != env.name:
                ctx.error(at, f"pipeline {name!r} is already in environment {first[0]!r} (at {first[1]}); "
                              "a pipeline belongs to one environment only")
    merged: dict[str, Environment] = {}
    for env in envs:
        first_env = merged.get(env.name)
        if first_env is None:
            merged[env.name] = env
            continue
        for kind in ("environment_variables", "secure_variables"):
            a, b = getattr(first_env, kind), getattr(env, kind)
            for k in a.keys() & b.keys():
                if a[k] != b[k]:
                    ctx.error(env.loc, f"environment {env.name!r} sets {k} differently than at {first_env.loc}")
        merged[env.name] = Environment(
            env.name, tuple(dict.fromkeys(first_env.pipelines + env.pipelines)),
            tuple(dict.fromkeys(first_env.agents + env.agents)),
            {**env.environment_variables, **first_env.environment_variables},
            {**env.secure_variables, **first_env.secure_variables},
            first_env.production or env.production, first_env.loc)
    return merged
