"""GoCD's JSON config plugin format (tomzo/gocd-json-config-plugin) reshaped into the YAML plugin's.

A ``*.gopipeline.json`` file holds one pipeline object, a
``*.goenvironment.json`` one environment object (the JSON plugin's default
patterns); a ``*.gocd.json`` holds either, told apart by its keys, or the YAML
plugin's own shape written as JSON (``{"pipelines": {...}}``).  The JSON
format is GoCD's config-repo contract: names are fields (``"name"``) and
collections are lists where the YAML format has mappings keyed by name,
variables are ``{name, value | encrypted_value}`` objects, a task or an
artifact says its kind in ``"type"``, and a few keys are spelt differently
(``clean_working_directory``, ``run_instance_count``, ``is_source_a_file``,
``display_order_weight``, ``enable_pipeline_locking``, material ``filter``).

Rather than a second parser, :func:`reshape` rebuilds the JSON nodes into the
YAML-shaped nodes that :mod:`workbench.config.loader` reads, reusing the
original nodes (so their ``LINE:COL``) wherever a value is kept, and placing
a made-up key (``pipelines:``, a pipeline's name) at the JSON node it comes
from.  Every check and message of the YAML format then applies unchanged.

Following Gson, which GoCD reads these files with, a key whose value is
``null`` is absent (``"approval": null`` is the default approval); keys the
workbench does not know are refused with a suggestion, as in YAML files.
Problems found while reshaping (a missing ``name``, two materials with one
name, a list where an object belongs) go to the same context.
"""
from __future__ import annotations

from collections.abc import Callable

from .context import Ctx, is_null
from .yamlnodes import Map, Node, Scalar, Seq, describe

_STR = "tag:yaml.org,2002:str"
_PIPELINE_ONLY = {"stages", "template", "materials", "group", "label_template", "lock_behavior",
                  "enable_pipeline_locking", "timer", "parameters", "tracking_tool", "mingle", "display_order_weight"}
_ENVIRONMENT_KEYS = {"name", "format_version", "location", "environment_variables", "agents", "pipelines"}
_NOT_PIPELINE_KEYS = ("name", "format_version", "location")  # location: where the contract says an object came from


def _key(text: str, at: Node) -> Scalar:
    """A key made up for the YAML shape, placed where its JSON source is."""
    return Scalar(at.file, at.line, at.col, text, text, _STR)


def _str_scalar(text: str, at: Node) -> Scalar:
    return Scalar(at.file, at.line, at.col, text, text, _STR)


def _or_null(node: Node | None, at: Node) -> Node:
    """A value, or a null placed at ``at`` when the key is absent."""
    return node if node is not None else Scalar(at.file, at.line, at.col, None, "", "tag:yaml.org,2002:null")


def _present(m: Map) -> list[tuple[Scalar, Node]]:
    """The entries of an object without those set to null (Gson reads them as absent)."""
    return [(k, v) for k, v in m if not is_null(v)]


def _object(node: Node, what: str, ctx: Ctx, at: Node | None = None) -> Map | None:
    if isinstance(node, Map):
        return node
    ctx.error(at or node, f"{what} must be a JSON object, found {describe(node)}")
    return None


def _list(node: Node, what: str, ctx: Ctx, at: Node | None, shape: str) -> Seq | None:
    if isinstance(node, Seq):
        return node
    ctx.error(at or node, f"{what} must be a list of {shape}, found {describe(node)}")
    return None


def _name(m: Map, what: str, ctx: Ctx) -> Scalar | None:
    """The ``name`` of an object, as the key it becomes in the YAML shape."""
    node = m.get("name")
    if is_null(node):
        ctx.error(m, f"{what} needs \"name\"")
        return None
    if not isinstance(node, Scalar) or isinstance(node.value, bool):
        ctx.error(node, f"the name of {what} must be a string, found {describe(node)}")
        return None
    return _str_scalar(node.text, node)


def _named_map(seq: Seq, what: str, ctx: Ctx, build: Callable[[Map], tuple[Scalar, Node] | None],
               at: Node) -> Map:
    """Objects with names into one mapping keyed by name; a name used twice is an error at the second."""
    items: list[tuple[Scalar, Node]] = []
    seen: dict[str, Scalar] = {}
    for item in seq:
        m = _object(item, f"each item of {what}", ctx)
        if m is None:
            continue
        entry = build(m)
        if entry is None:
            continue
        key, body = entry
        first = seen.get(key.text)
        if first is not None:
            ctx.error(key, f"{key.text!r} is defined twice in {what} (first at line {first.line}, column {first.col})")
            continue
        seen[key.text] = key
        items.append((key, body))
    return Map(at.file, at.line, at.col, items, seen)


# -- variables and parameters ----------------------------------------------------------


def _variables(node: Node, what: str, ctx: Ctx, at: Scalar) -> list[tuple[Scalar, Node]]:
    """``[{name, value}|{name, encrypted_value}]`` into ``environment_variables:`` and ``secure_variables:``."""
    seq = _list(node, f"environment_variables of {what}", ctx, at, 'objects such as {"name": "X", "value": "1"}')
    plain: list[tuple[Scalar, Node]] = []
    secure: list[tuple[Scalar, Node]] = []
    for item in seq or ():
        m = _object(item, f"each item of environment_variables of {what}", ctx)
        if m is None:
            continue
        for k, _ in m:
            if k.text not in ("name", "value", "encrypted_value"):
                ctx.error(k, f"unknown key {k.text!r} in an environment variable of {what} (it has \"name\" and "
                             "\"value\" or \"encrypted_value\")")
        name = _name(m, f"an environment variable of {what}", ctx)
        if name is None:
            continue
        has_value, has_secret = "value" in m, not is_null(m.get("encrypted_value"))
        if has_value and has_secret:
            ctx.error(m.key("encrypted_value"), f"environment variable {name.text} of {what} has both \"value\" and "
                                                "\"encrypted_value\"; keep one")
            continue
        if has_secret:
            secure.append((name, m.get("encrypted_value")))  # type: ignore[arg-type]
        else:
            plain.append((name, _or_null(m.get("value"), m)))
    out: list[tuple[Scalar, Node]] = []
    if plain:
        out.append((at, Map(at.file, at.line, at.col, plain)))
    if secure:
        out.append((_key("secure_variables", at), Map(at.file, at.line, at.col, secure)))
    return out


def _parameters(node: Node, what: str, ctx: Ctx, at: Scalar) -> Map | None:
    seq = _list(node, f"parameters of {what}", ctx, at, 'objects such as {"name": "P", "value": "x"}')
    if seq is None:
        return None

    def build(m: Map) -> tuple[Scalar, Node] | None:
        for k, _ in m:
            if k.text not in ("name", "value"):
                ctx.error(k, f"unknown key {k.text!r} in a parameter of {what} (it has \"name\" and \"value\")")
        name = _name(m, f"a parameter of {what}", ctx)
        return None if name is None else (name, _or_null(m.get("value"), m))

    return _named_map(seq, f"parameters of {what}", ctx, build, at)


# -- materials ------------------------------------------------------------------------


def _materials(node: Node, what: str, ctx: Ctx, at: Scalar) -> Map | None:
    seq = _list(node, f"materials of {what}", ctx, at, 'material objects with "type"')
    if seq is None:
        return None
    several = len(seq) > 1

    def build(m: Map) -> tuple[Scalar, Node] | None:
        kind = m.get("type")
        if is_null(kind):
            ctx.error(m, f"a material of {what} needs \"type\" (git or dependency; GoCD also has svn, hg, p4, tfs, "
                         "package, plugin and configrepo)")
            return None
        if not isinstance(kind, Scalar):
            ctx.error(kind, f"the type of a material of {what} must be a string, found {describe(kind)}")
            return None
        if "name" in m and not is_null(m.get("name")):
            name = _name(m, f"a material of {what}", ctx)
        elif several:
            ctx.error(m, f"a material of {what} needs \"name\": a pipeline with several materials names each")
            return None
        else:  # GoCD's default: a dependency is named after its pipeline
            upstream = m.get("pipeline")
            source = upstream if kind.text == "dependency" and isinstance(upstream, Scalar) and not is_null(upstream) \
                else kind
            name = _str_scalar(source.text, source)
        if name is None:
            return None
        items: list[tuple[Scalar, Node]] = []
        for k, v in _present(m):
            if k.text == "name":
                continue
            if k.text == "filter":
                fm = _object(v, f"filter of material {name.text!r}", ctx, k)
                for fk, fv in _present(fm) if fm is not None else ():
                    if fk.text in ("ignore", "includes", "whitelist"):
                        items.append((fk, fv))
                    else:
                        ctx.error(fk, f"unknown key {fk.text!r} in filter of material {name.text!r} "
                                      "(it has \"ignore\" or \"includes\")")
                continue
            items.append((k, v))
        return name, Map(m.file, m.line, m.col, items)

    return _named_map(seq, f"materials of {what}", ctx, build, at)


# -- stages, jobs, tasks -----------------------------------------------------------------

_STAGE_RENAMES = {"clean_working_directory": "clean_workspace"}
_JOB_RENAMES = {"run_instance_count": "run_instances"}
_FETCH_RENAMES = {"is_source_a_file": "is_file"}
_EMPTY_IS_ABSENT = {"tabs", "properties"}  # GoCD UI keys written as [] by exports: nothing to warn about


def _stages(node: Node, what: str, ctx: Ctx, at: Scalar) -> Seq | None:
    seq = _list(node, f"stages of {what}", ctx, at, 'stage objects with "name" and "jobs"')
    if seq is None:
        return None
    out: list[Node] = []
    for item in seq:
        m = _object(item, f"each stage of {what}", ctx)
        name = _name(m, f"a stage of {what}", ctx) if m is not None else None
        if m is None or name is None:
            continue
        items: list[tuple[Scalar, Node]] = []
        for k, v in _present(m):
            if k.text == "name":
                continue
            if k.text == "environment_variables":
                items.extend(_variables(v, f"stage {name.text!r}", ctx, k))
            elif k.text == "jobs":
                jobs = _jobs(v, f"stage {name.text!r}", ctx, k)
                if jobs is not None:
                    items.append((k, jobs))
            else:
                items.append((_key(_STAGE_RENAMES[k.text], k) if k.text in _STAGE_RENAMES else k, v))
        out.append(Map(m.file, m.line, m.col, [(name, Map(m.file, m.line, m.col, items))]))
    return Seq(seq.file, seq.line, seq.col, out)


def _jobs(node: Node, what: str, ctx: Ctx, at: Scalar) -> Map | None:
    seq = _list(node, f"jobs of {what}", ctx, at, 'job objects with "name" and "tasks"')
    if seq is None:
        return None

    def build(m: Map) -> tuple[Scalar, Node] | None:
        name = _name(m, f"a job of {what}", ctx)
        if name is None:
            return None
        job = f"job {name.text!r}"
        items: list[tuple[Scalar, Node]] = []
        for k, v in _present(m):
            if k.text == "name" or (k.text in _EMPTY_IS_ABSENT and isinstance(v, Seq) and not len(v)):
                continue
            if k.text == "environment_variables":
                items.extend(_variables(v, job, ctx, k))
            elif k.text == "tasks":
                tasks = _list(v, f"tasks of {job}", ctx, k, 'task objects with "type"')
                if tasks is not None:
                    items.append((k, Seq(tasks.file, tasks.line, tasks.col,
                                         [t for t in (_task(i, job, ctx) for i in tasks) if t is not None])))
            elif k.text == "artifacts":
                artifacts = _list(v, f"artifacts of {job}", ctx, k, 'artifact objects with "type" and "source"')
                if artifacts is not None:
                    items.append((k, Seq(artifacts.file, artifacts.line, artifacts.col,
                                         [a for a in (_typed(i, f"an artifact of {job}", ctx) for i in artifacts)
                                          if a is not None])))
            else:
                items.append((_key(_JOB_RENAMES[k.text], k) if k.text in _JOB_RENAMES else k, v))
        return name, Map(m.file, m.line, m.col, items)

    return _named_map(seq, f"jobs of {what}", ctx, build, at)


def _typed(node: Node, what: str, ctx: Ctx) -> Map | None:
    """``{"type": KIND, ...}`` into ``{KIND: {...}}`` (an artifact; tasks go through :func:`_task`)."""
    m = _object(node, what, ctx)
    if m is None:
        return None
    kind = m.get("type")
    if is_null(kind) or not isinstance(kind, Scalar):
        ctx.error(m.key("type") or m, f"{what} needs \"type\" as a string")
        return None
    body = Map(m.file, m.line, m.col, [(k, v) for k, v in _present(m) if k.text != "type"])
    return Map(m.file, m.line, m.col, [(_str_scalar(kind.text, kind), body)])


def _task(node: Node, job: str, ctx: Ctx) -> Map | None:
    m = _object(node, f"each task of {job}", ctx)
    if m is None:
        return None
    kind = m.get("type")
    if is_null(kind) or not isinstance(kind, Scalar):
        ctx.error(m.key("type") or m, f"a task of {job} needs \"type\" (exec, fetch, plugin, ...)")
        return None
    items: list[tuple[Scalar, Node]] = []
    for k, v in _present(m):
        if k.text == "type":
            continue
        if k.text == "on_cancel":
            cancel = _task(v, job, ctx)
            if cancel is not None:
                items.append((k, cancel))
        elif kind.text == "fetch" and k.text in _FETCH_RENAMES:
            items.append((_key(_FETCH_RENAMES[k.text], k), v))
        elif kind.text == "plugin" and k.text == "plugin_configuration":
            items.append((_key("configuration", k), v))
        elif kind.text == "plugin" and k.text == "configuration":
            options = _options(v, ctx, k)
            if options is not None:
                items.append((_key("options", k), options))
        else:
            items.append((k, v))
    return Map(m.file, m.line, m.col, [(_str_scalar(kind.text, kind), Map(m.file, m.line, m.col, items))])


def _options(node: Node, ctx: Ctx, at: Scalar) -> Map | None:
    """A plugin task's ``[{key, value}]`` into the YAML ``options:`` mapping."""
    seq = _list(node, "configuration of plugin task", ctx, at, 'objects such as {"key": "script", "value": "..."}')
    if seq is None:
        return None
    items: list[tuple[Scalar, Node]] = []
    for item in seq:
        m = _object(item, "each item of configuration of plugin task", ctx)
        key = m.get("key") if m is not None else None
        if m is None:
            continue
        if not isinstance(key, Scalar) or is_null(key):
            ctx.error(m, "each item of configuration of plugin task needs \"key\"")
            continue
        if "encrypted_value" in m:
            ctx.error(m.key("encrypted_value"), f"option {key.text!r} of plugin task: encrypted values are not "
                                                "supported in plugin task options")
            continue
        items.append((_str_scalar(key.text, key), _or_null(m.get("value"), m)))
    return Map(seq.file, seq.line, seq.col, items)


# -- pipelines, environments, files ----------------------------------------------------------


def _pipeline(m: Map, ctx: Ctx) -> tuple[Scalar, Node] | None:
    name = _name(m, "a pipeline", ctx)
    if name is None:
        return None
    what = f"pipeline {name.text!r}"
    items: list[tuple[Scalar, Node]] = []
    for k, v in _present(m):
        if k.text in _NOT_PIPELINE_KEYS:
            continue
        if k.text == "environment_variables":
            items.extend(_variables(v, what, ctx, k))
        elif k.text == "parameters":
            params = _parameters(v, what, ctx, k)
            if params is not None:
                items.append((k, params))
        elif k.text == "materials":
            materials = _materials(v, what, ctx, k)
            if materials is not None:
                items.append((k, materials))
        elif k.text == "stages":
            stages = _stages(v, what, ctx, k)
            if stages is not None:
                items.append((k, stages))
        elif k.text == "display_order_weight":
            items.append((_key("display_order", k), v))
        elif k.text == "enable_pipeline_locking":  # format 1; lock_behavior (format 2+) wins when both are given
            if not (isinstance(v, Scalar) and isinstance(v.value, bool)):
                ctx.error(v, f"enable_pipeline_locking of {what} must be true or false, found {describe(v)}")
            elif not is_null(m.get("lock_behavior")):
                ctx.warn(k, f"enable_pipeline_locking of {what} is ignored because lock_behavior is set")
            else:
                items.append((_key("lock_behavior", k), _str_scalar("lockOnFailure" if v.value else "none", v)))
        else:
            items.append((k, v))
    return name, Map(m.file, m.line, m.col, items)


def _environment(m: Map, ctx: Ctx) -> tuple[Scalar, Node] | None:
    name = _name(m, "an environment", ctx)
    if name is None:
        return None
    items: list[tuple[Scalar, Node]] = []
    for k, v in _present(m):
        if k.text in _NOT_PIPELINE_KEYS:
            continue
        if k.text == "environment_variables":
            items.extend(_variables(v, f"environment {name.text!r}", ctx, k))
        else:
            items.append((k, v))
    return name, Map(m.file, m.line, m.col, items)


PIPELINE_SUFFIX, ENVIRONMENT_SUFFIX, EITHER_SUFFIX = ".gopipeline.json", ".goenvironment.json", ".gocd.json"


def reshape(node: Node, ctx: Ctx, file: str) -> Node | None:
    """One JSON file's top level as the YAML format's file mapping (``format_version``, ``pipelines``, ...)."""
    m = _object(node, "a JSON config file", ctx)
    if m is None:
        return None
    lower = file.lower()
    top: list[tuple[Scalar, Node]] = [(k, v) for k, v in m if k.text == "format_version"]
    if lower.endswith(PIPELINE_SUFFIX):
        kind = "pipelines"
    elif lower.endswith(ENVIRONMENT_SUFFIX):
        kind = "environments"
    elif isinstance(m.get("pipelines"), Map) or isinstance(m.get("environments"), Map) or "templates" in m:
        return m  # the YAML plugin's shape, written as JSON: JSON is YAML
    elif "name" not in m and (isinstance(m.get("pipelines"), Seq) or isinstance(m.get("environments"), Seq)):
        return _collections(m, ctx, top)  # (an environment object has a name, and a list of pipeline names)
    else:
        kind = "pipelines" if _PIPELINE_ONLY & set(m.keys()) or not set(m.keys()) <= _ENVIRONMENT_KEYS \
            else "environments"
    entry = (_pipeline if kind == "pipelines" else _environment)(m, ctx)
    if entry is not None:
        top.append((_key(kind, m), Map(m.file, m.line, m.col, [entry], {entry[0].text: entry[0]})))
    return Map(m.file, m.line, m.col, top)


def _collections(m: Map, ctx: Ctx, top: list[tuple[Scalar, Node]]) -> Map:
    """``{"pipelines": [...], "environments": [...]}``: several JSON objects in one ``*.gocd.json``.

    This is also the shape of GoCD's config-repo contract, what any config
    plugin hands the server (``target_version`` for ``format_version``, an
    ``errors`` list, a ``location`` in each object), so a plugin's output
    loads as it is.
    """
    for k, v in m:
        if k.text == "format_version":
            continue
        if k.text == "target_version":
            if "format_version" in m:
                ctx.error(k, "the file gives both format_version and target_version; keep one")
            else:
                top.append((_key("format_version", k), v))
            continue
        if k.text == "errors":
            for item in v if isinstance(v, Seq) else ():
                message = item.get("message") if isinstance(item, Map) else item
                ctx.error(item, "the file lists an error from the plugin that wrote it: "
                                + (message.text if isinstance(message, Scalar) else describe(message)))
            continue
        if k.text not in ("pipelines", "environments"):
            ctx.error(k, f"unknown key {k.text!r} in the file (it has \"format_version\", \"pipelines\" and "
                         "\"environments\")")
            continue
        if is_null(v):
            continue
        seq = _list(v, k.text, ctx, k, "JSON objects")
        if seq is None:
            continue
        build = _pipeline if k.text == "pipelines" else _environment
        top.append((k, _named_map(seq, k.text, ctx, lambda item, build=build: build(item, ctx), k)))
    return Map(m.file, m.line, m.col, top)


__all__ = ["EITHER_SUFFIX", "ENVIRONMENT_SUFFIX", "PIPELINE_SUFFIX", "reshape"]
