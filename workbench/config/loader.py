"""GoCD YAML (gocd-yaml-config-plugin, format_version 1..10) into the model.

Each ``parse_*`` function reads one piece (material, task, job, stage,
pipeline, environment, file) from positioned nodes, records every problem in
the :class:`~workbench.config.context.Ctx` and returns a best-effort record
(or None when nothing usable is left), so one run reports all mistakes.
References between pieces (dependencies, templates, environments, fetches)
are checked afterwards in :mod:`workbench.config.validate`, once every file
is read.  Later features plug in through :func:`register_task_kind`,
:func:`register_section` and :func:`register_stage_key` instead of editing
these parsers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .context import (ELSEWHERE, NAME_RE, PARAM_NAME_RE, Ctx, body as _body, is_null as _is_null, loc_at, looks_like_ciphertext,
                      named as _named, parse_variables, suggest)
from .jobs import (_JOB_KEYS, _STAGE_BASE_KEYS, STAGE_KEYS, TASK_KINDS, StageKeyParser, TaskParser, parse_approval,
                   parse_job, parse_stage, parse_stages, parse_task, parse_tasks, template_stages)
from .model import LOCK_BEHAVIORS, DependencyMaterial, Environment, GitMaterial, Loc, Material, Pipeline, Stage, Timer
from .yamlnodes import Map, Node, Scalar, describe

# -- extension points ------------------------------------------------------------

SectionParser = Callable[[Node, Ctx], Any]
SectionMerger = Callable[[Any, Any], Any]
SECTIONS: dict[str, tuple[SectionParser, SectionMerger | None]] = {}
TOP_KEYS = ("format_version", "pipelines", "environments", "templates", "common", "roles")
MAX_FORMAT_VERSION = 10


def register_task_kind(name: str, parse_fn: TaskParser) -> None:
    """Add a task kind: ``parse_fn(node, ctx)`` gets the value under ``- name:``.

    ``run_if`` and ``on_cancel`` are taken out of a mapping value before the
    call and set on the returned task (with its ``loc``) afterwards, so a
    parser only validates its own options, typically into
    ``GenericTask(kind=name, options=...)``.
    """
    TASK_KINDS[name] = parse_fn


def register_section(name: str, parse_fn: SectionParser, merge: SectionMerger | None = None) -> None:
    """Add a top-level section; its value goes to ``Config.extensions[name]``.

    When several files have the section, ``merge(a, b)`` combines the values;
    without it mappings are merged (a repeated key is an error) and lists or
    tuples are concatenated.
    """
    if name in TOP_KEYS:
        raise ValueError(f"{name!r} is a built-in section")
    SECTIONS[name] = (parse_fn, merge)


PipelineKeyParser = Callable[[Node, Ctx, "tuple[Stage, ...]"], "tuple[Stage, ...]"]
PIPELINE_KEYS: dict[str, PipelineKeyParser] = {}


def register_pipeline_key(name: str, parse_fn: PipelineKeyParser) -> None:
    """Add a pipeline key that rewrites the stages (e.g. ``rollout:``): ``parse_fn(node, ctx, stages) -> stages``.

    It runs right after the pipeline's stages are parsed, so the stages it
    returns are checked like written ones (unique names, fetches, roles).
    """
    if name in _PIPELINE_KEYS:
        raise ValueError(f"{name!r} is a built-in pipeline key")
    PIPELINE_KEYS[name] = parse_fn


def register_stage_key(name: str, parse_fn: StageKeyParser) -> None:
    """Add a stage key: the value goes to the Stage field of that name, else to ``Stage.extensions``."""
    if name in _STAGE_BASE_KEYS or name in _JOB_KEYS or name in ("name", "loc", "extensions"):
        raise ValueError(f"{name!r} is a built-in stage or job key")
    STAGE_KEYS[name] = parse_fn


# -- materials -------------------------------------------------------------------

_KIND_BY_KEY = (("git", "git"), ("pipeline", "dependency"), ("hg", "hg"), ("svn", "svn"), ("p4", "p4"),
                ("tfs", "tfs"), ("scm", "scm"), ("package", "package"), ("plugin_configuration", "plugin"))
_MATERIAL_TYPES = ("git", "dependency", "hg", "svn", "p4", "tfs", "scm", "package", "plugin", "pluggable", "configrepo")
_GIT_KEYS = {"type", "git", "url", "branch", "includes", "ignore", "whitelist", "blacklist", "shallow_clone",
             "destination", "auto_update", "username", "password", "encrypted_password", "name"}
_DEPENDENCY_KEYS = {"type", "pipeline", "stage", "ignore_for_scheduling", "name"}


def parse_material(name: str | Scalar, node: Node | None, ctx: Ctx) -> Material | None:
    """One entry of ``materials:``: git or a pipeline dependency; other kinds are refused."""
    name, at = _named(name, node, "material", ctx)
    what = f"material {name!r}"
    m = _body(node, what, at, ": give `git: URL`, or `pipeline:` and `stage:` for a dependency", ctx)
    if m is not None and not len(m):
        ctx.error(at, f"{what} is empty: give `git: URL`, or `pipeline:` and `stage:` for a dependency")
    if m is None or not len(m):
        return None
    if "name" in m:  # GoCD's plugin copies a `name:` string over the key's name; so do we
        given = ctx.text(m.get("name"), f"name of {what}")
        if given and given != name:
            ctx.warn(m.key("name"), f"{what} is named {given!r} by its `name:` (as in GoCD); "
                                    f"refer to it as {given!r}")
            name, what = given, f"material {given!r}"
    kind_at: Node = m
    if "type" in m:
        kind = ctx.text(m.get("type"), f"type of {what}") or ""
        kind_at = m.get("type") or m
        if kind not in _MATERIAL_TYPES:
            ctx.error(kind_at, f"unknown material type {kind!r} in {what}{suggest(kind, _MATERIAL_TYPES)}")
            return None
    else:
        found = [(key, k) for key, k in _KIND_BY_KEY if key in m]
        if not found:
            ctx.error(at, f"cannot tell what kind of material {name!r} is: give `git: URL`, "
                          "or `pipeline:` and `stage:` for a dependency")
            return None
        kind, kind_at = found[0][1], m.key(found[0][0]) or m
    if kind == "configrepo":
        return _configrepo_material(name, m, at, kind_at, what, ctx)
    if kind not in ("git", "dependency"):
        ctx.error(kind_at, f"{what}: {kind} materials are not supported by the workbench "
                           "(only git and pipeline dependencies are)")
        return None
    if kind == "dependency":
        ctx.check_keys(m, _DEPENDENCY_KEYS, what)
        pipeline = ctx.req_text(m, "pipeline", f"dependency {what}", at)
        stage = ctx.req_text(m, "stage", f"dependency {what}", at)
        if pipeline is None or stage is None:
            return None
        dep = DependencyMaterial(name, pipeline, stage, ctx.opt_bool(m, "ignore_for_scheduling", what, False),
                                 loc=loc_at(at))
        ctx.where.put(dep, "pipeline", m.get("pipeline"))
        ctx.where.put(dep, "stage", m.get("stage"))
        return dep
    ctx.check_keys(m, _GIT_KEYS, what)
    url = ctx.opt_text(m, "git", what) if "git" in m else None
    if "url" in m:
        if url is not None:
            ctx.error(m.key("url"), f"{what} gives its URL twice (`git:` and `url:`); keep one")
        url = ctx.opt_text(m, "url", what)
    if not url:
        ctx.error(at, f"git {what} needs a URL (`git: URL`)")
        return None
    includes, ignore = _filter(m, "includes", "whitelist", what, ctx), _filter(m, "ignore", "blacklist", what, ctx)
    password = ctx.opt_text(m, "password", what)
    if password is not None:
        ctx.warn(m.key("password") or at, f"{what} has a plain-text password; use encrypted_password "
                                          "(from `workbench encrypt`) instead")
    encrypted = ctx.opt_text(m, "encrypted_password", what)
    if encrypted is not None and not looks_like_ciphertext(encrypted):
        ctx.warn(m.key("encrypted_password") or at, f"encrypted_password of {what} is not workbench ciphertext, "
                                                    "so it cannot be decrypted (run `workbench encrypt`)")
    return GitMaterial(
        name, url, branch=ctx.opt_text(m, "branch", what, "master") or "master", includes=includes, ignore=ignore,
        shallow_clone=ctx.opt_bool(m, "shallow_clone", what, False), destination=ctx.opt_text(m, "destination", what),
        auto_update=ctx.opt_bool(m, "auto_update", what, True), username=ctx.opt_text(m, "username", what),
        password=password, encrypted_password=encrypted, loc=loc_at(at))


_CONFIGREPO_KEYS = {"type", "name", "includes", "ignore", "whitelist", "blacklist", "destination", "auto_update",
                    "shallow_clone", "name"}


def _configrepo_material(name: str, m: Map, at: Node, kind_at: Node, what: str, ctx: Ctx) -> Material | None:
    """GoCD's ``type: configrepo``: the config repository the file comes from, as a git material.

    GoCD (and the YAML plugin, which passes the type through) makes it the
    repository's own URL and branch; only filters, destination and
    auto_update may be given.  Outside a config repository there is no such
    repository, so it is refused naming the feature.
    """
    origin = ctx.origin
    if origin is None:
        ctx.error(kind_at, f"{what} is `type: configrepo`, GoCD's name for the config repository this file is read "
                           "from; a workspace file has none: list the repository that holds this file under "
                           "`config_repos:` in workbench.yaml (docs/config-repos.md), or give `git: URL`")
        return None
    ctx.check_keys(m, _CONFIGREPO_KEYS, what)
    includes, ignore = _filter(m, "includes", "whitelist", what, ctx), _filter(m, "ignore", "blacklist", what, ctx)
    return GitMaterial(
        name, origin.url, branch=origin.branch, includes=includes, ignore=ignore,
        shallow_clone=ctx.opt_bool(m, "shallow_clone", what, False), destination=ctx.opt_text(m, "destination", what),
        auto_update=ctx.opt_bool(m, "auto_update", what, True), username=origin.username, password=origin.password,
        loc=loc_at(at))


def _filter(m: Map, key: str, legacy: str, what: str, ctx: Ctx) -> tuple[str, ...]:
    """GoCD renamed whitelist/blacklist to includes/ignore in format 10; both spellings are read."""
    if key in m and legacy in m:
        ctx.error(m.key(legacy), f"{what} has both `{key}:` and `{legacy}:` (the old name of {key}); keep one")
    return ctx.opt_texts(m, key if key in m else legacy, what)


def parse_materials(node: Node | None, ctx: Ctx, at: Node | None = None) -> tuple[Material, ...]:
    """The ``materials:`` mapping; a material that is refused is still remembered as declared.

    Its own error says what is wrong with it; remembering its name keeps a
    ``label_template`` that names it from adding a second, false error
    ("unknown material").
    """
    m = ctx.mapping(node, "materials", at, shape="a mapping of material names to materials")
    out: list[Material] = []
    for k, v in m or ():
        mat = parse_material(k, v, ctx)
        if mat is not None:
            out.append(mat)
        elif ctx.pipeline is not None:
            ctx.refused_materials.setdefault(ctx.pipeline, set()).add(k.text)
    gits = [mat for mat in out if isinstance(mat, GitMaterial)]
    destinations: dict[str, GitMaterial] = {}
    for mat in gits if len(gits) > 1 else ():  # GoCD: several SCM materials need a folder each
        if mat.destination is None:
            ctx.error(mat.loc, f"git material {mat.name!r} needs `destination:` because the pipeline has "
                               "several git materials (each is checked out into its own folder)")
        elif mat.destination in destinations:
            ctx.error(mat.loc, f"git material {mat.name!r} uses destination {mat.destination!r}, "
                               f"as material {destinations[mat.destination].name!r} does")
        else:
            destinations[mat.destination] = mat
    return tuple(out)


# -- pipelines ---------------------------------------------------------------------

_PIPELINE_KEYS = {"group", "label_template", "lock_behavior", "locking", "parameters", "environment_variables",
                  "secure_variables", "materials", "stages", "template", "timer", "display_order", "tracking_tool",
                  "fan_in", "trigger"}
_PIPELINE_IGNORED = {"mingle": " (Mingle integration was removed from GoCD)"}
# Stage keys written one level up: GoCD's plugin drops unknown pipeline keys, so they do nothing there in GoCD
# either.  Keys that would weaken a gate if ignored (approval) stay errors.
_STAGE_KEYS_AT_PIPELINE = {"fetch_materials": "each stage that should not fetch materials",
                           "clean_workspace": "the stages", "keep_artifacts": "the stages",
                           "never_cleanup_artifacts": "the stages"}


def parse_parameters(m: Map, what: str, ctx: Ctx) -> dict[str, str]:
    """``parameters:`` (name -> value); values are strings, taken as written."""
    out: dict[str, str] = {}
    for k, v in ctx.mapping(m.get("parameters"), f"parameters of {what}", m.key("parameters")) or ():
        if not PARAM_NAME_RE.match(k.text):
            ctx.error(k, f"invalid parameter name {k.text!r}: use letters, digits, '_', '-' and '.'")
        elif _is_null(v):
            out[k.text] = ""
        elif isinstance(v, Scalar) and not isinstance(v.value, bytes):
            out[k.text] = v.text
        else:
            ctx.error(k, f"parameter {k.text} must be a string, found {describe(v)}")
    return out


def parse_pipeline(name: str | Scalar, node: Node | None, ctx: Ctx) -> Pipeline | None:
    """One pipeline; its strings get ``#{param}`` substitution, template stages included."""
    name, at = _named(name, node, "pipeline", ctx)
    what = f"pipeline {name!r}"
    m = _body(node, what, at, ": it needs `stages:` (or `template:`)", ctx)
    if m is None:
        return None
    for key, where in _STAGE_KEYS_AT_PIPELINE.items():
        if key in m:
            ctx.warn(m.key(key), f"{key} is a stage key, not a pipeline key: GoCD's plugin ignores it here and so "
                                 f"does the workbench (set it on {where})")
    ctx.check_keys(m.without(*_STAGE_KEYS_AT_PIPELINE), (*_PIPELINE_KEYS, *PIPELINE_KEYS), what, _PIPELINE_IGNORED)
    saved = ctx.params, ctx.pipeline
    ctx.params, ctx.pipeline = parse_parameters(m, what, ctx), name
    try:
        return _pipeline(name, at, m, what, ctx)
    finally:
        ctx.params, ctx.pipeline = saved


def _pipeline(name: str, at: Node | Loc, m: Map, what: str, ctx: Ctx) -> Pipeline:
    group = ctx.opt_text(m, "group", what, "defaultGroup") or "defaultGroup"
    if not NAME_RE.match(group):
        ctx.error(m.get("group") or at, f"invalid group name {group!r}: use letters, digits, '_', '-' and '.'")
    lock = ctx.opt_choice(m, "lock_behavior", what, LOCK_BEHAVIORS, "none")
    if "locking" in m:
        locking = ctx.opt_bool(m, "locking", what, False)
        if "lock_behavior" in m:
            ctx.warn(m.key("locking"), f"locking of {what} is ignored because lock_behavior is set")
        else:
            lock = "lockOnFailure" if locking else "none"
            ctx.warn(m.key("locking"), f"locking is GoCD's old spelling, read as lock_behavior: {lock}")
    env, secure = parse_variables(m, what, ctx)
    materials = parse_materials(m.get("materials"), ctx, m.key("materials"))
    template: str | None = None
    stages: tuple[Stage, ...] = ()
    if "template" in m and "stages" in m:
        ctx.error(m.key("template"), f"{what} has both `stages:` and `template:`; keep one")
    if "stages" in m:
        stages = parse_stages(m.get("stages"), ctx, f"stages of {what}", m.key("stages"))
    elif "template" in m:
        template = ctx.opt_text(m, "template", what)
        hit = ctx.templates.get(template or "")
        if template is None:
            ctx.error(m.key("template"), f"template of {what} is empty")
        elif hit is None:
            known = ", ".join(sorted(ctx.templates)) or "none"
            ctx.error(m.get("template"), f"{what} uses unknown template {template!r}"
                                         f"{suggest(template, ctx.templates)} (templates: {known}){ELSEWHERE}")
        else:
            stages = template_stages(hit[1], ctx, f"stages of template {template!r}", hit[0])
    else:
        ctx.error(at, f"{what} needs `stages:` (or `template:`)")
    for key, expand in PIPELINE_KEYS.items():
        if key in m:
            stages = expand(m.get(key), ctx, stages)  # type: ignore[arg-type]
    display_order = None
    if not _is_null(m.get("display_order")):
        display_order = ctx.integer(m.get("display_order"), f"display_order of {what}", at=m.key("display_order"))
    pipeline = Pipeline(
        name, stages, group=group, label_template=ctx.opt_text(m, "label_template", what, "${COUNT}") or "${COUNT}",
        lock_behavior=lock, parameters=dict(ctx.params or {}), environment_variables=env, secure_variables=secure,
        materials=materials, timer=_timer(m, what, ctx), template=template, display_order=display_order,
        tracking_tool=_tracking_tool(m, what, ctx), fan_in=ctx.opt_bool(m, "fan_in", what, True),
        trigger=ctx.opt_choice(m, "trigger", what, ("batch", "each_commit"), "batch"), loc=loc_at(at))
    ctx.where.put(pipeline, "label_template", m.get("label_template"))
    ctx.where.put(pipeline, "template", m.get("template"))
    return pipeline


def _timer(m: Map, what: str, ctx: Ctx) -> Timer | None:
    if _is_null(m.get("timer")):
        return None
    tm = ctx.mapping(m.get("timer"), f"timer of {what}", m.key("timer"))
    if tm is None:
        return None
    ctx.check_keys(tm, {"spec", "only_on_changes"}, f"timer of {what}")
    spec = ctx.req_text(tm, "spec", f"timer of {what}", m.key("timer") or tm)
    if spec is None:
        return None
    problem = _timer_problem(spec)
    if problem is not None:
        ctx.error(tm.get("spec"), problem)
    return Timer(spec, ctx.opt_bool(tm, "only_on_changes", f"timer of {what}", False), loc_at(m.key("timer") or tm))


def _timer_problem(spec: str) -> str | None:
    """Why ``spec`` cannot fire, checked with the same parser (and croniter) the scheduling pass uses.

    Checking here rather than at the next tick means a typo is a
    ``FILE:LINE:COL`` error when the file is read, instead of a timer that
    silently never fires.  croniter is imported only for configs with timers.
    """
    from .timers import TimerSpecError, parse

    try:
        parse(spec)
    except TimerSpecError as exc:
        return f"invalid {exc}"
    return None


def _tracking_tool(m: Map, what: str, ctx: Ctx) -> dict[str, str] | None:
    """Kept so that issue ids in commit messages can become links (``link`` must contain ``${ID}``)."""
    if _is_null(m.get("tracking_tool")):
        return None
    tm = ctx.mapping(m.get("tracking_tool"), f"tracking_tool of {what}", m.key("tracking_tool"))
    if tm is None:
        return None
    ctx.check_keys(tm, {"link", "regex"}, "tracking_tool")
    link = ctx.req_text(tm, "link", "tracking_tool", m.key("tracking_tool") or tm)
    regex = ctx.req_text(tm, "regex", "tracking_tool", m.key("tracking_tool") or tm)
    if link is not None and "${ID}" not in link:
        ctx.error(tm.get("link"), "link of tracking_tool must contain ${ID} (where the issue id goes)")
    return None if link is None or regex is None else {"link": link, "regex": regex}


# -- environments and files -----------------------------------------------------------

_ENVIRONMENT_KEYS = {"environment_variables", "secure_variables", "pipelines", "agents", "production"}


def parse_environment(name: str | Scalar, node: Node | None, ctx: Ctx) -> Environment | None:
    name, at = _named(name, node, "environment", ctx)
    what = f"environment {name!r}"
    if _is_null(node):
        return Environment(name, loc=loc_at(at))
    m = ctx.mapping(node, what, at if isinstance(at, Node) else None)
    if m is None:
        return None
    ctx.check_keys(m, _ENVIRONMENT_KEYS, what)
    env, secure = parse_variables(m, what, ctx)
    listed: dict[str, Node] = {}
    for item in ctx.sequence(m.get("pipelines"), f"pipelines of {what}", m.key("pipelines")) or ():
        pipeline = ctx.text(item, f"each item of pipelines of {what}")
        if pipeline is not None and pipeline in listed:
            ctx.error(item, f"pipeline {pipeline!r} is listed twice in {what}")
        elif pipeline is not None:
            listed[pipeline] = item
    agents = ctx.opt_texts(m, "agents", what)
    if agents:
        ctx.warn(m.key("agents"), f"agents of {what} is accepted for GoCD compatibility but not used: agents are "
                                  "Dask workers, chosen for a job by its resources and by the environments an agent "
                                  f"joins (`workbench agent --environment {name}`)")
    environment = Environment(name, tuple(listed), agents, env, secure,
                              ctx.opt_bool(m, "production", what, False), loc_at(at))
    for pipeline, item in listed.items():
        ctx.where.put(environment, "pipeline:" + pipeline, item)
    return environment


@dataclass
class FileParts:
    """What one file contributes; pipelines and templates stay as nodes until all files are read."""

    file: str
    format_version: int = 1
    pipelines: list[tuple[Scalar, Node]] = field(default_factory=list)
    templates: list[tuple[Scalar, Node]] = field(default_factory=list)
    environments: list[Environment] = field(default_factory=list)
    roles: list[tuple[Scalar, tuple[str, ...]]] = field(default_factory=list)
    has_roles: bool = False
    sections: list[tuple[str, Any, Scalar]] = field(default_factory=list)
    origin: Any = None  # the ConfigOrigin of a config repository's file (for `type: configrepo`), else None


def parse_file(node: Node | None, ctx: Ctx, file: str) -> FileParts:
    """The top level of one file: sections are checked, pipelines kept for later."""
    parts = FileParts(file)
    if _is_null(node):
        return parts
    if not isinstance(node, Map):
        ctx.error(node, "a pipeline file must be a mapping with keys such as format_version, pipelines and "
                        f"environments; found {describe(node)}")
        return parts
    ctx.check_keys(node, (*TOP_KEYS, *SECTIONS), "the file")
    if not _is_null(node.get("format_version")):
        version = ctx.integer(node.get("format_version"), "format_version", 1, MAX_FORMAT_VERSION,
                              node.key("format_version"))
        parts.format_version = version or MAX_FORMAT_VERSION
    ctx.format_version = parts.format_version
    parts.pipelines.extend(ctx.mapping(node.get("pipelines"), "pipelines", node.key("pipelines"),
                                       shape="a mapping of pipeline names to pipelines") or ())
    for k, v in ctx.mapping(node.get("templates"), "templates", node.key("templates"),
                            shape="a mapping of template names to stage lists") or ():
        ctx.name(k, "template")
        parts.templates.append((k, v))
    for k, v in ctx.mapping(node.get("environments"), "environments", node.key("environments"),
                            shape="a mapping of environment names to environments") or ():
        environment = parse_environment(k, v, ctx)
        if environment is not None:
            parts.environments.append(environment)
    parts.has_roles = "roles" in node
    for k, v in ctx.mapping(node.get("roles"), "roles", node.key("roles"),
                            shape="a mapping of role names to lists of users") or ():
        parts.roles.append((k, ctx.texts(v, f"users of role {k.text!r}", k)))
    for name, (parse_fn, _merge) in SECTIONS.items():
        if name in node:
            parts.sections.append((name, parse_fn(node.get(name), ctx), node.key(name)))  # type: ignore[arg-type]
    return parts


__all__ = [  # the piece parsers of jobs.py are re-exported: tests and tools parse any fragment from here
    "FileParts", "SECTIONS", "STAGE_KEYS", "TASK_KINDS", "looks_like_ciphertext", "parse_approval", "parse_environment",
    "parse_file", "parse_job", "parse_material", "parse_materials", "parse_parameters", "parse_pipeline", "parse_stage",
    "parse_stages", "parse_task", "parse_tasks", "parse_variables", "register_pipeline_key", "register_section",
    "register_stage_key", "register_task_kind", "template_stages",
]
