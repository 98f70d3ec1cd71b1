"""Tasks, jobs and stages: the part of a pipeline that says what to run.

GoCD shapes accepted here: a task is a single-key mapping (``- exec: {...}``,
``- script: ...``); nested task or stage lists (what YAML aliases produce) are
flattened; a stage without ``jobs:`` but with ``tasks:`` is a single-job
stage named like the stage.  Task kinds and stage keys are registries so
later features add their own (``register_task_kind``, ``register_stage_key``
in :mod:`workbench.config.loader`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from .context import FALSE_WORDS, Ctx, is_null as _is_null, body as _body, loc_at, named as _named, parse_variables, suggest
from .model import (RUN_IF, Approval, Artifact, ExecTask, FetchTask, Job, Loc, NotebookTask, ScriptTask, Stage, Task,
                    Traffic)
from .yamlnodes import Map, Node, Scalar, Seq

TaskParser = Callable[[Node, Ctx], "Task | None"]
StageKeyParser = Callable[[Node, Ctx], Any]
TASK_KINDS: dict[str, TaskParser] = {}
STAGE_KEYS: dict[str, StageKeyParser] = {}
_STAGE_FIELDS = {f.name for f in dataclasses.fields(Stage)}

# -- tasks -----------------------------------------------------------------------

_UNSUPPORTED_TASKS = ("rake", "ant", "nant")
_MAX_TASKS = 10_000


def parse_task(node: Node | None, ctx: Ctx) -> Task | None:
    """One ``- kind: ...`` entry; ``run_if``/``on_cancel`` are handled here for every kind."""
    if _is_null(node):
        ctx.error(node or Loc(), "empty task entry: write a task such as `- exec: {command: make}`")
        return None
    m = ctx.mapping(node, "a task", shape="a mapping such as `exec: {command: make}`")
    if m is None:
        return None
    if len(m) != 1:
        misplaced = [k for k in m.keys()[1:] if k in ("run_if", "on_cancel")]
        inside = "script: ./x.sh" if m.keys()[0] == "script" else "..."
        hint = (f" ({' and '.join(misplaced)} {'go' if len(misplaced) > 1 else 'goes'} inside the task's mapping: "
                f"`- {m.keys()[0]}: {{{inside}, {misplaced[0]}: ...}}`)") if misplaced else ""
        ctx.error(m, "a task is a mapping with one key, the task kind (such as exec, script, fetch); "
                     f"found {', '.join(m.keys()) or 'none'}{hint}")
        return None
    key, value = m.items[0]
    kind = key.text
    parse_fn = TASK_KINDS.get(kind)
    builtin = _BUILTIN_TASKS.get(kind) if parse_fn is None else None
    if parse_fn is None and builtin is None:
        known = sorted({*_BUILTIN_TASKS, *TASK_KINDS})
        if kind in _UNSUPPORTED_TASKS:
            ctx.error(key, f"{kind} tasks are not supported by the workbench (use exec or script)")
        else:
            ctx.error(key, f"unknown task kind {kind!r}{suggest(kind, known)} (known: {', '.join(known)})")
        return None
    common: dict[str, Any] = {"run_if": "passed", "on_cancel": None, "loc": key.loc}
    if isinstance(value, Map) and ("run_if" in value or "on_cancel" in value):
        common["run_if"] = ctx.opt_choice(value, "run_if", f"{kind} task", RUN_IF, "passed")
        if "on_cancel" in value:
            cancel_node = value.get("on_cancel")
            if ctx.mapping(cancel_node, f"on_cancel of {kind} task", value.key("on_cancel")) is not None:
                common["on_cancel"] = parse_task(cancel_node, ctx)
        value = value.without("run_if", "on_cancel")
    if builtin is not None:
        return builtin(value, ctx, common)
    task = parse_fn(value, ctx)  # type: ignore[misc]
    if task is None:
        return None
    names = _field_names(type(task))
    located = dataclasses.replace(task, **{k: v for k, v in common.items() if k in names})  # type: ignore[type-var]
    ctx.where.moved(task, located)
    return located


_FIELD_NAMES: dict[type, frozenset[str]] = {}


def _field_names(cls: type) -> frozenset[str]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = frozenset(f.name for f in dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else frozenset()
        _FIELD_NAMES[cls] = names
    return names


def parse_tasks(node: Node | None, ctx: Ctx, what: str, at: Node | None = None) -> tuple[Task, ...]:
    """A task list; nested lists (from YAML aliases) are flattened as GoCD does."""
    out: list[Task] = []
    seen = [0]  # entries visited, valid or not: nested aliases (a "billion laughs") must not expand for ever

    def walk(seq: Seq) -> None:
        for item in seq:
            seen[0] += 1
            if seen[0] > _MAX_TASKS:
                if seen[0] == _MAX_TASKS + 1:
                    ctx.error(seq, f"{what} has more than {_MAX_TASKS} tasks")
                return
            if isinstance(item, Seq):
                walk(item)
            else:
                task = parse_task(item, ctx)
                if task is not None:
                    out.append(task)

    seq = ctx.sequence(node, what, at)
    if seq is not None:
        walk(seq)
    return tuple(out)


def _exec(node: Node, ctx: Ctx, common: dict[str, Any]) -> Task | None:
    m = ctx.mapping(node, "exec task", null_ok=False)
    if m is None:
        return None
    ctx.check_keys(m, {"command", "arguments", "working_directory", "run_if", "on_cancel"}, "exec task")
    command = ctx.req_text(m, "command", "exec task", m)
    if command is None:
        return None
    return ExecTask(command, ctx.opt_texts(m, "arguments", "exec task"),
                    ctx.opt_text(m, "working_directory", "exec task"), **common)


def _script(node: Node, ctx: Ctx, common: dict[str, Any]) -> Task | None:
    """``- script: TEXT``, or (**ext**) ``- script: {script: TEXT, run_if, on_cancel, working_directory}``.

    GoCD's plugin turns the string form into a script-executor plugin task and
    has no room for ``run_if``/``on_cancel`` there (its long form is
    ``plugin:``, read by :func:`_plugin`); the mapping form gives them the same
    place every other task kind has them.
    """
    if isinstance(node, Map):
        ctx.check_keys(node, {"script", "working_directory"}, "script task")
        script = ctx.req_text(node, "script", "script task (as a mapping)", node)
        if script is None:
            return None
        return ScriptTask(script, ctx.opt_text(node, "working_directory", "script task"), **common)
    script = ctx.text(node, "script")
    return None if script is None else ScriptTask(script, **common)


_SCRIPT_EXECUTOR = "script-executor"


def _plugin(node: Node, ctx: Ctx, common: dict[str, Any]) -> Task | None:
    """GoCD's long form of a script task: ``plugin: {configuration: {id: script-executor}, options: {script}}``.

    That is what GoCD's YAML plugin makes of ``script:``, and the only way
    GoCD itself gives a script ``run_if`` or ``on_cancel``, so files written
    for GoCD use it.  Any other plugin is refused: there is nothing to run it.
    """
    refused = "plugin tasks are not supported by the workbench (use exec or script)"
    m = node if isinstance(node, Map) else None
    cm = ctx.mapping(m.get("configuration"), "configuration of plugin task", m.key("configuration")) if m else None
    plugin_id = ctx.opt_text(cm, "id", "configuration of plugin task") if cm is not None else None
    if m is None or plugin_id != _SCRIPT_EXECUTOR:
        ctx.error(common["loc"], refused if plugin_id is None else
                  f"{refused}; found plugin {plugin_id!r} (only {_SCRIPT_EXECUTOR} is read, as a script task)")
        return None
    ctx.check_keys(m, {"configuration", "options"}, "plugin task")
    ctx.check_keys(cm, {"id", "version"}, "configuration of plugin task")  # type: ignore[arg-type]
    if "options" not in m:
        ctx.error(common["loc"], "the script-executor plugin task needs `options: {script: ...}`")
        return None
    om = ctx.mapping(m.get("options"), "options of the script-executor plugin task", m.key("options"), null_ok=False)
    if om is None:
        return None
    ctx.check_keys(om, {"script", "shtype"}, "options of the script-executor plugin task")
    shell = ctx.opt_text(om, "shtype", "the script-executor plugin task", "bash")
    if shell != "bash":
        ctx.error(om.get("shtype"), f"shtype {shell!r} of the script-executor plugin task is not supported "
                                    "(the workbench runs scripts with bash)")
    script = ctx.req_text(om, "script", "the script-executor plugin task", om)
    return None if script is None else ScriptTask(script, **common)


_FETCH_KEYS = {"pipeline", "stage", "job", "source", "destination", "is_file", "artifact_origin", "run_if", "on_cancel"}


def _fetch(node: Node, ctx: Ctx, common: dict[str, Any]) -> Task | None:
    m = ctx.mapping(node, "fetch task", null_ok=False)
    if m is None:
        return None
    origin = ctx.opt_choice(m, "artifact_origin", "fetch task", ("gocd", "external"), "gocd")
    if origin == "external":
        ctx.error(m.get("artifact_origin") or m, "fetching external artifacts (artifact_origin: external) is not "
                                                 "supported by the workbench")
        return None
    ctx.check_keys(m, _FETCH_KEYS, "fetch task")
    stage, job = ctx.req_text(m, "stage", "fetch task", m), ctx.req_text(m, "job", "fetch task", m)
    source = ctx.req_text(m, "source", "fetch task", m)
    if stage is None or job is None or source is None:
        return None
    task = FetchTask(stage, job, source, pipeline=ctx.opt_text(m, "pipeline", "fetch task"),
                     destination=ctx.opt_text(m, "destination", "fetch task", "") or "",
                     is_file=ctx.opt_bool(m, "is_file", "fetch task", False), artifact_origin=origin, **common)
    for key in ("pipeline", "stage", "job"):
        ctx.where.put(task, key, m.get(key))
    return task


def _notebook(node: Node, ctx: Ctx, common: dict[str, Any]) -> Task | None:
    m = ctx.mapping(node, "notebook task", null_ok=False)
    if m is None:
        return None
    ctx.check_keys(m, {"path", "parameters", "kernel", "timeout", "run_if", "on_cancel"}, "notebook task")
    path = ctx.req_text(m, "path", "notebook task", m)
    params = ctx.mapping(m.get("parameters"), "parameters of notebook task", m.key("parameters"))
    timeout_node = m.get("timeout")
    timeout = None
    if timeout_node is not None and not (isinstance(timeout_node, Scalar) and timeout_node.is_null):
        timeout = ctx.duration(timeout_node, "timeout of notebook task", 1.0, m.key("timeout"))
    if path is None:
        return None
    return NotebookTask(path, _substituted(params, ctx, {}) if params is not None else {},
                        kernel=ctx.opt_text(m, "kernel", "notebook task"), timeout=timeout, **common)


def _substituted(node: Node, ctx: Ctx, memo: dict[int, Any]) -> Any:
    """Free-form data as plain Python, with ``#{param}`` replaced in its strings."""
    if isinstance(node, Scalar):
        return ctx.sub(node.value, node) if isinstance(node.value, str) else node.value
    if id(node) in memo:
        return memo[id(node)]
    if isinstance(node, Map):
        out: Any = {}
        memo[id(node)] = out
        for k, v in node:
            out[k.text] = _substituted(v, ctx, memo)
        return out
    out = []
    memo[id(node)] = out
    out.extend(_substituted(v, ctx, memo) for v in node.items)  # type: ignore[attr-defined]
    return out


def plain_data(node: Node, ctx: Ctx) -> Any:
    """Free-form YAML (notebook parameters and the like) as plain Python, ``#{param}`` substituted."""
    return _substituted(node, ctx, {})


_BUILTIN_TASKS: dict[str, Callable[[Node, Ctx, dict[str, Any]], "Task | None"]] = {
    "exec": _exec, "script": _script, "fetch": _fetch, "notebook": _notebook, "plugin": _plugin}


# -- jobs and stages ------------------------------------------------------------------

_JOB_KEYS = {"tasks", "timeout", "run_instances", "resources", "artifacts", "environment_variables",
             "secure_variables", "elastic_profile_id", "rerun_on_agent_lost"}
MAX_AGENT_LOST_RERUNS = 10
_JOB_IGNORED = {"tabs": " (custom tabs are a GoCD UI feature)", "properties": " (job properties were removed from GoCD)"}


def parse_job(name: str | Scalar, node: Node | None, ctx: Ctx) -> Job | None:
    name, at = _named(name, node, "job", ctx)
    what = f"job {name!r}"
    m = _body(node, what, at, ": it needs `tasks:`", ctx)
    if m is None:
        return None
    ctx.check_keys(m, _JOB_KEYS, what, _JOB_IGNORED)
    tasks_node = m.get("tasks")
    if tasks_node is None:
        ctx.error(at, f"{what} needs `tasks:`")
    elif _is_null(tasks_node) or isinstance(tasks_node, Seq) and not len(tasks_node):
        ctx.error(m.key("tasks") or at, f"tasks of {what} is empty")
    tasks = parse_tasks(tasks_node, ctx, f"tasks of {what}", m.key("tasks"))
    timeout = None
    if not _is_null(m.get("timeout")):
        timeout = ctx.duration(m.get("timeout"), f"timeout of {what}", 60.0, m.key("timeout"))
    run_instances: int | str | None = None
    ri = m.get("run_instances")
    if not _is_null(ri):
        if isinstance(ri, Scalar) and isinstance(ri.value, str) and ctx.sub(ri.value, ri).strip().lower() == "all":
            run_instances = "all"
        else:
            run_instances = ctx.integer(ri, f"run_instances of {what} (a number or \"all\")", lo=1, at=m.key("run_instances"))
    reruns = 0
    rr = m.get("rerun_on_agent_lost")
    if not _is_null(rr):
        reruns = ctx.integer(rr, f"rerun_on_agent_lost of {what} (reruns when its agent is lost)", lo=0,
                             hi=MAX_AGENT_LOST_RERUNS, at=m.key("rerun_on_agent_lost")) or 0
    env, secure = parse_variables(m, what, ctx)
    elastic = ctx.opt_text(m, "elastic_profile_id", what)
    if elastic is not None:
        ctx.warn(m.key("elastic_profile_id") or at, f"elastic_profile_id of {what} is kept but not used: "
                                                    "the workbench runs jobs on its own executors")
    return Job(name, tasks, timeout=timeout, run_instances=run_instances, resources=ctx.opt_texts(m, "resources", what),
               artifacts=_artifacts(m, what, ctx), environment_variables=env, secure_variables=secure,
               elastic_profile_id=elastic, rerun_on_agent_lost=reruns, loc=loc_at(at))


def _artifacts(m: Map, what: str, ctx: Ctx) -> tuple[Artifact, ...]:
    out = []
    for item in ctx.sequence(m.get("artifacts"), f"artifacts of {what}", m.key("artifacts")) or ():
        am = ctx.mapping(item, f"an artifact of {what}", null_ok=False)
        if am is None:
            continue
        if len(am) != 1 or am.keys()[0] not in ("build", "test", "external"):
            ctx.error(am, f"an artifact is `- build: {{source: ...}}` or `- test: {{source: ...}}`; found "
                          f"{', '.join(am.keys())}{suggest(am.keys()[0], ('build', 'test')) if len(am) == 1 else ''}")
            continue
        key, value = am.items[0]
        if key.text == "external":
            ctx.error(key, "external artifacts are not supported by the workbench (use build or test artifacts)")
            continue
        spec = ctx.mapping(value, f"{key.text} artifact", key, null_ok=False)
        if spec is None:
            continue
        ctx.check_keys(spec, {"source", "destination"}, f"{key.text} artifact")
        source = ctx.req_text(spec, "source", f"{key.text} artifact", key)
        if source is not None:
            out.append(Artifact(key.text, source, ctx.opt_text(spec, "destination", "artifact", "") or "", key.loc))
    return tuple(out)


def parse_approval(node: Node, ctx: Ctx, at: Node | None = None, default_type: str | None = None) -> Approval:
    """``approval: manual`` / ``success`` or ``{type, users, roles, allow_only_on_success}``.

    ``type`` is required as in GoCD unless ``default_type`` is given (``rollout:``
    approvals default to manual).
    """
    types = {"manual": "manual", "success": "success", "auto": "success"}
    if isinstance(node, Scalar) and not node.is_null:
        word = ctx.text(node, "approval") or ""
        if word not in types:
            ctx.error(node, f"approval must be manual or success, found {word!r}{suggest(word, types)}")
        return Approval(types.get(word, "success"), loc=node.loc)
    m = ctx.mapping(node, "approval", at)
    if m is None:
        return Approval(loc=(at or node).loc)
    ctx.check_keys(m, {"type", "users", "roles", "allow_only_on_success"}, "approval")
    if default_type is not None and "type" not in m:
        word = default_type
    else:
        word = ctx.req_text(m, "type", "approval", at or m) or "success"
    if word not in types:
        ctx.error(m.get("type"), f"approval type must be manual or success, found {word!r}{suggest(word, types)}")
    roles = ctx.opt_texts(m, "roles", "approval")
    approval = Approval(types.get(word, "success"), ctx.opt_texts(m, "users", "approval"), roles,
                        ctx.opt_bool(m, "allow_only_on_success", "approval", False), loc=(at or m).loc)
    role_nodes = m.get("roles")
    for item in role_nodes if isinstance(role_nodes, Seq) else ():
        if isinstance(item, Scalar):
            ctx.where.put(approval, "role:" + item.text, item)
    return approval


def _traffic(node: Node, ctx: Ctx) -> Traffic | None:
    m = ctx.mapping(node, "traffic", null_ok=False)
    if m is None:
        return None
    ctx.check_keys(m, {"route", "weight"}, "traffic")
    route = ctx.req_text(m, "route", "traffic", m)
    weight = ctx.integer(m.get("weight"), "weight of traffic (a percentage)", 0, 100, m.key("weight") or m)
    return None if route is None or weight is None else Traffic(route, weight, m.loc)


_STAGE_BASE_KEYS = {"jobs", "approval", "fetch_materials", "clean_workspace", "keep_artifacts",
                    "never_cleanup_artifacts", "environment_variables", "secure_variables"}
STAGE_KEYS["traffic"] = _traffic


_ALLOWED_CACHE: dict[tuple[bool, frozenset[str]], frozenset[str]] = {}


def _stage_keys(single: bool) -> frozenset[str]:
    """Keys a stage may have (a single-job stage also takes job keys), cached per registry state."""
    cache_key = (single, frozenset(STAGE_KEYS))
    allowed = _ALLOWED_CACHE.get(cache_key)
    if allowed is None:
        allowed = _ALLOWED_CACHE[cache_key] = frozenset(
            _STAGE_BASE_KEYS | set(STAGE_KEYS) | (_JOB_KEYS | set(_JOB_IGNORED) if single else set()))
    return allowed


def parse_stage(name: str | Scalar, node: Node | None, ctx: Ctx) -> Stage | None:
    """A stage; without ``jobs:`` but with ``tasks:`` it is GoCD's single-job stage."""
    name, at = _named(name, node, "stage", ctx)
    what = f"stage {name!r}"
    m = _body(node, what, at, ": it needs `jobs:`", ctx)
    if m is None:
        return None
    single = "jobs" not in m and "tasks" in m
    ctx.check_keys(m, _stage_keys(single), what)
    jobs: list[Job] = []
    if single:
        job = parse_job(name, m.only(frozenset(_JOB_KEYS | set(_JOB_IGNORED)) - {"environment_variables", "secure_variables"}), ctx)
        jobs = [dataclasses.replace(job, loc=loc_at(at))] if job else []
    elif "jobs" not in m:
        ctx.error(at, f"{what} needs `jobs:` (or `tasks:` for a stage with a single job)")
    else:
        jm = ctx.mapping(m.get("jobs"), f"jobs of {what}", m.key("jobs"), shape="a mapping of job names to jobs")
        if (jm is not None and not len(jm)) or _is_null(m.get("jobs")):
            ctx.error(m.key("jobs") or at, f"jobs of {what} is empty")
        for k, v in jm or ():
            job = parse_job(k, v, ctx)
            if job is not None:
                jobs.append(job)
    keep = ctx.opt_bool(m, "keep_artifacts", what, False)
    if "never_cleanup_artifacts" in m:
        keep = ctx.opt_bool(m, "never_cleanup_artifacts", what, False) or keep
    _warn_unused_stage_keys(m, what, ctx)
    approval = parse_approval(m.get("approval"), ctx, m.key("approval")) if "approval" in m else Approval(loc=loc_at(at))
    env, secure = parse_variables(m, what, ctx)
    fields: dict[str, Any] = {}
    extensions: dict[str, Any] = {}
    for key, parse_fn in STAGE_KEYS.items():
        if key in m:
            value = parse_fn(m.get(key), ctx)  # type: ignore[arg-type]
            if key in _STAGE_FIELDS and key != "extensions":
                fields[key] = value
            else:
                extensions[key] = value
    return Stage(name, tuple(jobs), approval=approval, fetch_materials=ctx.opt_bool(m, "fetch_materials", what, True),
                 clean_workspace=ctx.opt_bool(m, "clean_workspace", what, False), keep_artifacts=keep,
                 environment_variables=env, secure_variables=secure, loc=loc_at(at), extensions=extensions, **fields)


_UNUSED_STAGE_KEYS = {
    "clean_workspace": "every job run starts in a new, empty folder, so there is never an old workspace to clean "
                       "or keep",
    "keep_artifacts": "the workbench never deletes artifacts: they stay in the artifact store "
                      "(.workbench/artifacts, or the `artifacts:` URL of workbench.yaml) until removed there",
}
_UNUSED_STAGE_KEYS["never_cleanup_artifacts"] = _UNUSED_STAGE_KEYS["keep_artifacts"]


def _warn_unused_stage_keys(m: Map, what: str, ctx: Ctx) -> None:
    """GoCD keys that load (so GoCD files load as they are) but change nothing here: say so, and what happens.

    Silence would let a reader believe the key works; an error would refuse
    GoCD's own files.  Warnings are what ``workbench validate`` prints.  A
    value of false asks for what happens anyway (GoCD's UI export writes
    ``clean_workspace: false`` on every stage), so it says nothing.
    """
    for key, instead in _UNUSED_STAGE_KEYS.items():
        node = m.get(key)
        if node is None or (isinstance(node, Scalar) and (node.value is None or node.value is False
                                                        or node.text.strip().lower() in FALSE_WORDS)):
            continue
        ctx.warn(m.key(key), f"{key} of {what} is accepted for GoCD compatibility but does nothing: {instead}")


def parse_stages(node: Node | None, ctx: Ctx, what: str, at: Node | None = None) -> tuple[Stage, ...]:
    """A stage list of ``- name: {...}`` entries; nested lists are flattened as GoCD does."""
    out: list[Stage] = []
    seen = [0]  # entries visited: nested aliases (a "billion laughs") must not expand for ever

    def walk(seq: Seq) -> None:
        for item in seq:
            seen[0] += 1
            if seen[0] > _MAX_TASKS:
                if seen[0] == _MAX_TASKS + 1:
                    ctx.error(seq, f"{what} has more than {_MAX_TASKS} stage entries")
                return
            if isinstance(item, Seq):
                walk(item)
                continue
            if _is_null(item):
                ctx.error(item, "empty stage entry: write `- name: {jobs: ...}`")
                continue
            sm = ctx.mapping(item, "a stage entry")
            if sm is None:
                continue
            if len(sm) != 1:
                indent = len(sm) > 1 and _is_null(sm.items[0][1])
                hint = " (is the stage's content indented under its name?)" if indent else ""
                ctx.error(sm, f"a stage entry is a mapping with one key, the stage name; found "
                              f"{', '.join(sm.keys()) or 'none'}{hint}")
                continue
            stage = parse_stage(sm.items[0][0], sm.items[0][1], ctx)
            if stage is not None:
                out.append(stage)

    if node is not None and _is_null(node):
        ctx.error(at or node, f"{what} is empty")
    seq = ctx.sequence(node, what, at)
    if seq is not None:
        if not len(seq):
            ctx.error(at or seq, f"{what} is empty")
        walk(seq)
    return tuple(out)


def template_stages(node: Node | None, ctx: Ctx, what: str, at: Node | None = None) -> tuple[Stage, ...]:
    """A template's stages: a stage list, or GoCD's ``{stages: [...]}`` form."""
    if isinstance(node, Map):
        ctx.check_keys(node, {"stages"}, what.replace("stages of ", ""))
        return parse_stages(node.get("stages"), ctx, what, node.key("stages") or at)
    if node is None or _is_null(node):
        ctx.error(at or Loc(), f"{what} is empty")
        return ()
    return parse_stages(node, ctx, what, at)
