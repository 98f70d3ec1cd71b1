"""GoCD XML pipelines, stages and jobs (the parts above tasks and materials) into YAML mappings."""
from __future__ import annotations

import re
from typing import Any

from .pipelines import Conv, flag, materials, resolve, tasks, variables
from .xmlread import XNode

_LABEL_VAR = re.compile(r"\$\{([^}]*)\}")
_LABEL_NAME = re.compile(r"([^\[\]:]+)(?:\[:(\d+)\])?\Z")
_LOCKS = {"none": "none", "lockonfailure": "lockOnFailure", "unlockwhenfinished": "unlockWhenFinished"}


def job(j: XNode, stage_what: str, conv: Conv) -> tuple[str, dict[str, Any]]:
    name = j.get("name") or ""
    what = f"job {name!r} of {stage_what}"
    out: dict[str, Any] = {}
    timeout = (j.get("timeout") or "").strip().lower()
    if timeout and timeout not in ("0", "never"):
        try:
            minutes = float(timeout)
            out["timeout"] = int(minutes) if minutes.is_integer() else minutes
        except ValueError:
            conv.note(j, "dropped", f"timeout of {what}", f"{timeout!r} is not a number of minutes")
    count = j.get("runInstanceCount")
    if count:
        out["run_instances"] = "all" if count.strip().lower() == "all" else _int_or(count)
    resources = [r.text.strip() for block in j.kids("resources") for r in block.kids("resource") if r.text.strip()]
    if resources:
        out["resources"] = list(dict.fromkeys(resources))
    if j.get("elasticProfileId"):
        conv.note(j, "dropped", f"elasticProfileId of {what}", "elastic agents are not used: the workbench runs "
                                                               "jobs on its own executors (local or Dask)")
    out.update(variables(j, what, conv))
    converted = tasks(j, what, conv)
    if not converted and any(block.children for block in j.children if block.tag == "tasks"):
        say = (f"echo 'import-gocd: none of the tasks of {name} could be carried over "
               "(see import-gocd-report.txt)' >&2; exit 1")
        converted = [{"exec": {"command": "sh", "arguments": ["-c", say]}}]
        conv.note(j, "changed", what, "none of its tasks could be carried over; it is given a task that fails "
                                      "saying so, rather than passing without doing its work")
    elif not converted:
        converted = [{"exec": {"command": "true"}}]
        conv.note(j, "changed", what, "has no tasks; given the task `exec: true` (the workbench needs one), "
                                      "so it passes as the empty GoCD job did")
    out["tasks"] = converted
    arts = _artifacts(j, what, conv)
    if arts:
        out["artifacts"] = arts
    for tag, why in (("tabs", "custom tabs are a GoCD UI feature"),
                     ("properties", "job properties were removed from GoCD")):
        for block in j.kids(tag):
            conv.note(block, "dropped", f"<{tag}> of {what}", why, whole=True)
    return name, out


def _int_or(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


def _artifacts(j: XNode, what: str, conv: Conv) -> list[dict[str, Any]]:
    out = []
    for block in j.kids("artifacts"):
        for a in block.kids():
            kind = a.get("type") or {"test": "test", "log": "build", "artifact": "build"}.get(a.tag, "")
            if a.tag not in ("artifact", "test", "log") or kind not in ("build", "test"):
                conv.note(a, "dropped", f"{kind or a.tag} artifact of {what}",
                          "external (plugin) artifacts are not supported by the workbench (build and test are)",
                          whole=True)
                continue
            spec: dict[str, Any] = {"source": a.get("src") or ""}
            if a.get("dest"):
                spec["destination"] = a.get("dest")
            out.append({kind: spec})
    return out


def stage(s: XNode, pipeline_what: str, operate: tuple[list[str], list[str]] | None,
          conv: Conv) -> tuple[str, dict[str, Any]] | None:
    name = s.get("name") or ""
    what = f"stage {name!r} of {pipeline_what}"
    body: dict[str, Any] = {}
    if not flag(s, "fetchMaterials", True):
        body["fetch_materials"] = False
    if flag(s, "cleanWorkingDir"):
        conv.note(s, "changed", f"cleanWorkingDir of {what}", "not written: every job run here starts in a new, "
                                                              "empty folder, so there is never an old one to clean")
    if flag(s, "artifactCleanupProhibited"):
        conv.note(s, "changed", f"artifactCleanupProhibited of {what}",
                  "not written: the workbench never deletes artifacts on its own")
    approval = s.child("approval")
    if approval is not None:
        kind = (approval.get("type") or "success").strip()
        spec: dict[str, Any] = {"type": "manual" if kind == "manual" else "success"}
        users = [u.text.strip() for a in approval.kids("authorization") for u in a.kids("user") if u.text.strip()]
        roles = [r.text.strip() for a in approval.kids("authorization") for r in a.kids("role") if r.text.strip()]
        if spec["type"] == "manual" and not users and not roles and operate and (operate[0] or operate[1]):
            users, roles = list(operate[0]), list(operate[1])
            conv.note(approval, "changed", f"approval of {what}",
                      "names nobody, so in GoCD only the group's operators could approve; their users and roles "
                      f"({', '.join([*users, *roles])}) are written as the approvers (here a manual approval "
                      "naming nobody is open to anyone)")
        if users:
            spec["users"] = users
        if roles:
            spec["roles"] = roles
        if flag(approval, "allowOnlyOnSuccess"):
            spec["allow_only_on_success"] = True
        if spec != {"type": "success"}:
            body["approval"] = spec
    body.update(variables(s, what, conv))
    jobs: dict[str, Any] = {}
    for block in s.kids("jobs"):
        for j in block.kids("job"):
            jname, jbody = job(j, what, conv)
            jobs[jname] = jbody
    if not jobs:
        conv.note(s, "dropped", what, "has no jobs (GoCD refuses such a stage too)", whole=True)
        return None
    body["jobs"] = jobs
    return name, body


def stage_list(parent: XNode, what: str, operate: tuple[list[str], list[str]] | None,
               conv: Conv) -> list[dict[str, Any]]:
    out = []
    for s in parent.kids("stage"):
        converted = stage(s, what, operate, conv)
        if converted is not None:
            out.append({converted[0]: converted[1]})
    return out


def pipeline(p: XNode, group: str, operate: tuple[list[str], list[str]] | None,
             templates: set[str], conv: Conv) -> tuple[str, dict[str, Any]] | None:
    name = p.get("name") or ""
    what = f"pipeline {name!r}"
    out: dict[str, Any] = {"group": group}
    params = {pm.get("name") or "": pm.text for block in p.kids("params") for pm in block.kids("param")}
    conv.params = params
    if params:
        out["parameters"] = params
    lock = p.get("lockBehavior")
    if lock:
        out["lock_behavior"] = _LOCKS.get(lock.strip().lower(), "none")
    elif flag(p, "isLocked"):
        out["lock_behavior"] = "lockOnFailure"
    order = p.get("displayOrderWeight")
    if order and order.strip().lstrip("-").isdigit() and int(order) >= 0:
        out["display_order"] = int(order)
    for tool in p.kids("trackingtool"):
        out["tracking_tool"] = {"link": tool.get("link") or "", "regex": tool.get("regex") or ""}
    for mingle in p.kids("mingle"):
        conv.note(mingle, "dropped", f"<mingle> of {what}", "Mingle integration was removed from GoCD", whole=True)
    for timer in p.kids("timer"):
        spec = timer.text.strip()
        if _timer_ok(spec):
            out["timer"] = {"spec": spec, **({"only_on_changes": True} if flag(timer, "onlyOnChanges") else {})}
        else:
            conv.note(timer, "dropped", f"timer of {what}", f"timer spec {spec!r} cannot be read by the workbench",
                      whole=True)
    out.update(variables(p, what, conv))
    mats = materials(p, name, params, conv)
    if mats:
        out["materials"] = mats
    label = p.get("labeltemplate")
    if label:
        fixed = _label(label, mats, params)
        if fixed is None:
            conv.note(p, "changed", f"label template of {what}",
                      f"{label!r} refers to a material that was not carried over or to ${{env:...}}; "
                      "the label is ${COUNT} instead")
        elif fixed != "${COUNT}":
            out["label_template"] = fixed
    template = p.get("template")
    if template:
        if template not in templates:
            conv.note(p, "dropped", what, f"uses template {template!r}, which is not carried over", whole=True)
            return None
        out["template"] = template
        for s in p.kids("stage"):
            conv.note(s, "dropped", f"stage of {what}", "ignored: the pipeline uses a template (as GoCD does)",
                      whole=True)
    else:
        stages = stage_list(p, what, operate, conv)
        if not stages:
            conv.note(p, "dropped", what, "has no stage left to run", whole=True)
            return None
        out["stages"] = stages
    return name, out


def _timer_ok(spec: str) -> bool:
    from ...config.timers import TimerSpecError, parse

    try:
        parse(spec)
    except TimerSpecError:
        return False
    return True


def _label(label: str, mats: dict[str, Any], params: dict[str, str]) -> str | None:
    """The label template, with material names spelled as the materials are; None when it cannot work here."""
    names = {n.lower(): n for n in mats}
    ok = True

    def fix(m: re.Match[str]) -> str:
        nonlocal ok
        inner = resolve(m.group(1), params)
        parts = _LABEL_NAME.match(inner)
        if inner.startswith("env:") or parts is None:
            ok = False
            return m.group(0)
        if parts.group(1).upper() == "COUNT":
            return "${COUNT}" if parts.group(2) is None else m.group(0)
        real = names.get(parts.group(1).lower())
        if real is None:
            ok = False
            return m.group(0)
        return "${" + real + (f"[:{parts.group(2)}]" if parts.group(2) else "") + "}"

    fixed = _LABEL_VAR.sub(fix, label)
    return fixed if ok else None
