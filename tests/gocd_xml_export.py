"""Test helper: a loaded workbench :class:`Config` written as a GoCD ``cruise-config.xml``.

Only what GoCD's XML can say: roles, groups, pipelines (template stages
expanded), materials, stages, jobs, exec/script/fetch tasks, artifacts,
variables, environments. Workbench extensions (traffic steps, package
tasks) have no XML form and are left out, so a round trip
(YAML -> this XML -> ``workbench import-gocd`` -> YAML) can be compared on
everything GoCD has. Values are final (parameters already substituted), so
``#`` is written as GoCD's ``##``.
"""
from __future__ import annotations

from xml.etree.ElementTree import Element, SubElement, indent, tostring

from workbench.config import Config, ExecTask, FetchTask, GitMaterial, ScriptTask


def _v(text: str) -> str:
    return text.replace("#", "##")


def _variables(parent: Element, plain: dict) -> None:
    if plain:
        block = SubElement(parent, "environmentvariables")
        for name, value in plain.items():
            SubElement(SubElement(block, "variable", name=name), "value").text = _v(value)


def _task(parent: Element, task) -> None:  # type: ignore[no-untyped-def]
    if isinstance(task, ExecTask):
        el = SubElement(parent, "exec", command=_v(task.command))
        if task.working_directory:
            el.set("workingdir", _v(task.working_directory))
        for arg in task.arguments:
            SubElement(el, "arg").text = _v(arg)
    elif isinstance(task, ScriptTask):
        el = SubElement(parent, "task")
        SubElement(el, "pluginConfiguration", id="script-executor", version="1")
        prop = SubElement(SubElement(el, "configuration"), "property")
        SubElement(prop, "key").text = "script"
        SubElement(prop, "value").text = _v(task.script)
    elif isinstance(task, FetchTask):
        el = SubElement(parent, "fetchartifact", artifactOrigin="gocd", stage=task.stage, job=task.job)
        if task.pipeline:
            el.set("pipeline", task.pipeline)
        el.set("srcfile" if task.is_file else "srcdir", _v(task.source))
        if task.destination:
            el.set("dest", _v(task.destination))
    else:
        return  # a workbench extension task: no GoCD XML form
    if task.run_if != "passed":
        SubElement(el, "runif", status=task.run_if)
    if task.on_cancel is not None:
        _task(SubElement(el, "oncancel"), task.on_cancel)


def to_xml(config: Config) -> bytes:
    root = Element("cruise", schemaVersion="139")
    if config.roles:
        roles = SubElement(SubElement(SubElement(root, "server"), "security"), "roles")
        for name, users in config.roles.items():
            role = SubElement(roles, "role", name=name)
            if users:
                block = SubElement(role, "users")
                for u in users:
                    SubElement(block, "user").text = u
    groups: dict[str, Element] = {}
    for p in config.pipelines.values():
        group = groups.get(p.group)
        if group is None:
            group = groups[p.group] = SubElement(root, "pipelines", group=p.group)
        el = SubElement(group, "pipeline", name=p.name, labeltemplate=_v(p.label_template),
                        lockBehavior=p.lock_behavior)
        if p.timer is not None:
            SubElement(el, "timer", onlyOnChanges=str(p.timer.only_on_changes).lower()).text = p.timer.spec
        _variables(el, dict(p.environment_variables))
        mats = SubElement(el, "materials")
        for m in p.materials:
            if isinstance(m, GitMaterial):
                g = SubElement(mats, "git", url=m.url, branch=m.branch, materialName=m.name,
                               autoUpdate=str(m.auto_update).lower(), shallowClone=str(m.shallow_clone).lower())
                if m.destination:
                    g.set("dest", m.destination)
                patterns = m.includes or m.ignore
                if patterns:
                    g.set("invertFilter", str(bool(m.includes)).lower())
                    f = SubElement(g, "filter")
                    for pattern in patterns:
                        SubElement(f, "ignore", pattern=pattern)
            else:
                SubElement(mats, "pipeline", pipelineName=m.pipeline, stageName=m.stage, materialName=m.name)
        for s in p.stages:
            st = SubElement(el, "stage", name=s.name, fetchMaterials=str(s.fetch_materials).lower())
            if s.approval.manual or s.approval.users or s.approval.roles:
                ap = SubElement(st, "approval", type=s.approval.type,
                                allowOnlyOnSuccess=str(s.approval.allow_only_on_success).lower())
                if s.approval.users or s.approval.roles:
                    auth = SubElement(ap, "authorization")
                    for u in s.approval.users:
                        SubElement(auth, "user").text = u
                    for r in s.approval.roles:
                        SubElement(auth, "role").text = r
            _variables(st, dict(s.environment_variables))
            jobs = SubElement(st, "jobs")
            for j in s.jobs:
                attrs = {"name": j.name}
                if j.timeout:
                    attrs["timeout"] = str(int(j.timeout // 60))
                if j.run_instances:
                    attrs["runInstanceCount"] = str(j.run_instances)
                job = SubElement(jobs, "job", **attrs)
                _variables(job, dict(j.environment_variables))
                tasks = SubElement(job, "tasks")
                for t in j.tasks:
                    _task(tasks, t)
                if j.resources:
                    res = SubElement(job, "resources")
                    for r in j.resources:
                        SubElement(res, "resource").text = r
                if j.artifacts:
                    arts = SubElement(job, "artifacts")
                    for a in j.artifacts:
                        art = SubElement(arts, "artifact", type=a.type, src=_v(a.source))
                        if a.destination:
                            art.set("dest", _v(a.destination))
    if config.environments:
        envs = SubElement(root, "environments")
        for e in config.environments.values():
            env = SubElement(envs, "environment", name=e.name)
            _variables(env, dict(e.environment_variables))
            if e.pipelines:
                ps = SubElement(env, "pipelines")
                for name in e.pipelines:
                    SubElement(ps, "pipeline", name=name)
    indent(root)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + tostring(root, encoding="utf-8")
