"""GoCD XML pipelines, stages, jobs, tasks and materials into the workbench's YAML shapes (plain dicts).

Each function reads one element and returns the mapping the workbench's
GoCD-YAML loader reads back (``workbench.config.loader``), or None when
nothing can be carried over; every loss or difference becomes a
:class:`~workbench.importer.gocd.report.Note` at the element's line.
"""
from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...config.context import NAME_RE
from . import aes
from .report import Note
from .xmlread import XNode

_PARAM = re.compile(r"#\{([^}]*)\}")
_LABEL_VAR = re.compile(r"\$\{([^}]*)\}")
_UNSUPPORTED_MATERIALS = {"svn": "Subversion", "hg": "Mercurial", "p4": "Perforce", "tfs": "TFS",
                          "package": "package", "scm": "pluggable SCM", "plugin": "plugin"}


@dataclass
class Known:
    """What the whole file defines, for checking references while converting: pipeline -> stage -> jobs."""

    stages: dict[str, dict[str, list[str]]] = field(default_factory=dict)


@dataclass
class Conv:
    """The conversion context: where notes go, and how secure values are carried over."""

    file: str
    key: bytes | None = None  # the GoCD server's cipher.aes key
    encrypt: Callable[[str], str] | None = None  # plain -> workbench ciphertext
    notes: list[Note] = field(default_factory=list)
    known: Known = field(default_factory=Known)
    params: dict[str, str] | None = None  # of the pipeline being converted; None inside a template

    def note(self, node: XNode, kind: str, element: str, message: str, *, whole: bool = False) -> None:
        """Record a note at ``node``; ``whole``: the element is not carried over at all (nor anything inside)."""
        node.used = True
        if whole:
            for c in node.walk():
                c.used = True
                c.read.update(c.attrib)
        self.notes.append(Note(self.file, node.line, node.col, element, kind, message))

    def secret(self, node: XNode, value: str | None, what: str) -> str | None:
        """Workbench ciphertext for a GoCD secure value, or None (noted) when it needs a new value."""
        instead = "give it a new value with `workbench encrypt` and add it to secure_variables"
        if value is None or value == "":
            return self.encrypt("") if self.encrypt is not None else None
        if not aes.is_aes(value):
            self.note(node, "secret", what, "holds a value encrypted with GoCD's old DES cipher (before 18.x), "
                                            f"which the importer does not decrypt; {instead}")
            return None
        if self.key is None:
            self.note(node, "secret", what, f"is encrypted with the GoCD server's key; pass --cipher-file "
                                            f"(the server's config/cipher.aes) to carry it over, or {instead}")
            return None
        try:
            plain = aes.decrypt(value, self.key)
        except aes.CannotDecrypt as exc:
            self.note(node, "secret", what, f"cannot be decrypted: {exc}; {instead}")
            return None
        if self.encrypt is None:
            self.note(node, "secret", what, f"no workbench key to re-encrypt with; {instead}")
            return None
        return self.encrypt(plain)


def resolve(text: str, params: dict[str, str]) -> str:
    """``#{name}`` replaced (``##`` kept) — for checking references only; the output keeps the reference."""
    return _PARAM.sub(lambda m: params.get(m.group(1), m.group(0)), text)


def flag(node: XNode, name: str, default: bool = False) -> bool:
    value = node.get(name)
    return default if value is None else value.strip().lower() == "true"


# -- variables -------------------------------------------------------------------


def variables(parent: XNode, what: str, conv: Conv) -> dict[str, Any]:
    """``<environmentvariables>`` as ``environment_variables:`` / ``secure_variables:`` entries."""
    plain: dict[str, str] = {}
    secure: dict[str, str] = {}
    for block in parent.kids("environmentvariables"):
        for var in block.kids("variable"):
            name = var.get("name") or ""
            is_secure = flag(var, "secure")
            value_node = var.child("value")
            encrypted_node = var.child("encryptedValue")
            if is_secure:
                raw = encrypted_node.text.strip() if encrypted_node is not None else None
                if raw is None and value_node is not None:  # a secure variable written in plain text
                    raw = value_node.text
                    token = conv.encrypt(raw) if conv.encrypt is not None else None
                    if token is None:
                        conv.note(var, "secret", f"secure variable {name} of {what}",
                                  "is in plain text in the XML and there is no workbench key to encrypt it with")
                else:
                    token = conv.secret(var, raw, f"secure variable {name} of {what}")
                if token is not None:
                    secure[name] = token
            else:
                plain[name] = value_node.text if value_node is not None else ""
    out: dict[str, Any] = {}
    if plain:
        out["environment_variables"] = plain
    if secure:
        out["secure_variables"] = secure
    return out


# -- materials -------------------------------------------------------------------


def _safe_name(text: str, fallback: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_\-.]", "-", text).strip(".-") or fallback
    return name[:255] if NAME_RE.match(name[:255]) else fallback


def materials(pipeline: XNode, name: str, params: dict[str, str], conv: Conv) -> dict[str, Any]:
    """``<materials>`` (and the old ``<dependencies>``) as the ``materials:`` mapping."""
    out: dict[str, Any] = {}
    what = f"pipeline {name!r}"
    nodes = [m for block in pipeline.kids("materials") for m in block.kids()]
    for block in pipeline.kids("dependencies"):  # schema < 2x: <dependencies><depends pipeline stage/>
        for dep in block.kids("depends"):
            dep.used = True
            nodes.append(dep)
    gits = []
    for m in nodes:
        if m.tag == "git":
            entry = _git(m, what, conv)
            mname = m.get("materialName") or _safe_name(entry["git"].rstrip("/").rsplit("/", 1)[-1]
                                                           .removesuffix(".git"), "git")
            gits.append((mname, m, entry))
        elif m.tag in ("pipeline", "depends"):
            upstream = m.get("pipelineName") if m.tag == "pipeline" else m.get("pipeline")
            stage = m.get("stageName") if m.tag == "pipeline" else m.get("stage")
            mname = m.get("materialName") or upstream or "upstream"
            real_up, real_stage = resolve(upstream or "", params), resolve(stage or "", params)
            known = conv.known.stages.get(real_up)
            if known is None or real_stage not in known:
                where = "is not in this file (defined in a config repository?) or was not carried over" \
                    if known is None else f"has no stage {real_stage!r}"
                conv.note(m, "dropped", f"dependency material of {what}",
                          f"upstream pipeline {real_up!r} {where}; add the dependency back once it exists", whole=True)
                continue
            entry = {"pipeline": upstream, "stage": stage}
            if flag(m, "ignoreForScheduling"):
                entry["ignore_for_scheduling"] = True
            out[_unique(mname, out)] = entry
        elif m.tag in _UNSUPPORTED_MATERIALS:
            conv.note(m, "dropped", f"<{m.tag}> material of {what}",
                      f"{_UNSUPPORTED_MATERIALS[m.tag]} materials are not supported by the workbench "
                      "(only git and pipeline dependencies are)", whole=True)
        else:
            conv.note(m, "dropped", f"<{m.tag}> in materials of {what}", "unknown material kind", whole=True)
    for mname, m, entry in gits:
        key = _unique(mname, out)
        if len(gits) > 1 and "destination" not in entry:
            entry["destination"] = key
            conv.note(m, "changed", f"git material {key!r} of {what}",
                      f"has no dest; checked out into folder {key!r} (several git materials need a folder each)")
        out[key] = entry
    return out


def _unique(name: str, taken: dict[str, Any]) -> str:
    if name not in taken:
        return name
    n = 2
    while f"{name}-{n}" in taken:
        n += 1
    return f"{name}-{n}"


def _git(m: XNode, what: str, conv: Conv) -> dict[str, Any]:
    entry: dict[str, Any] = {"git": m.get("url") or ""}
    branch = m.get("branch")
    if branch:
        entry["branch"] = branch
    if m.get("dest"):
        entry["destination"] = m.get("dest")
    if flag(m, "shallowClone"):
        entry["shallow_clone"] = True
    if not flag(m, "autoUpdate", True):
        entry["auto_update"] = False
    patterns = [i.get("pattern") or "" for f in m.kids("filter") for i in f.kids("ignore")]
    if patterns:
        entry["includes" if flag(m, "invertFilter") else "ignore"] = patterns
    if m.get("username"):
        entry["username"] = m.get("username")
    label = f"password of git material {m.get('url')!r} of {what}"
    encrypted = m.get("encryptedPassword")
    plain = m.get("password")
    token = None
    if encrypted:
        token = conv.secret(m, encrypted, label)
    elif plain:
        token = conv.encrypt(plain) if conv.encrypt is not None else None
        if token is None:
            conv.note(m, "secret", label, "is in plain text and there is no workbench key to encrypt it with")
    if token is not None:
        entry["encrypted_password"] = token
    return entry


# -- tasks -----------------------------------------------------------------------

_BUILD_TOOLS = {"ant": "ant", "nant": "nant", "rake": "rake"}
SCRIPT_EXECUTOR = "script-executor"


def tasks(job: XNode, what: str, conv: Conv) -> list[dict[str, Any]]:
    out = []
    for block in job.kids("tasks"):
        for t in block.kids():
            task = task_of(t, what, conv)
            if task is not None:
                out.append(task)
    return out


def _run_if(t: XNode) -> str | None:
    statuses = {(r.get("status") or "passed").lower() for r in t.kids("runif")}
    if "any" in statuses or {"passed", "failed"} <= statuses:
        return "any"
    if statuses == {"failed"}:
        return "failed"
    return None  # passed, the default


def task_of(t: XNode, what: str, conv: Conv) -> dict[str, Any] | None:
    """One task element; ``run_if`` and ``on_cancel`` go inside the task's mapping, as the YAML has them."""
    kind, body = _task_body(t, what, conv)
    if body is None:
        return None
    run_if = _run_if(t)
    if run_if:
        body["run_if"] = run_if
    for cancel in t.kids("oncancel"):
        inner = [c for c in cancel.kids()]
        if inner:
            converted = task_of(inner[0], f"on-cancel task in {what}", conv)
            if converted is not None:
                body["on_cancel"] = converted
    return {kind: body}


def _task_body(t: XNode, what: str, conv: Conv) -> tuple[str, dict[str, Any] | None]:
    if t.tag == "exec":
        args = [a.text if a.text.strip() or a.get("value") is None else a.get("value") or "" for a in t.kids("arg")]
        legacy = t.get("args")
        if legacy:
            try:
                args = shlex.split(legacy) + args
            except ValueError:
                args = legacy.split() + args
        return "exec", _exec(t.get("command") or "", args, t.get("workingdir"))
    if t.tag in _BUILD_TOOLS:
        return "exec", _build_tool(t, what, conv)
    if t.tag == "fetchartifact":
        return "fetch", _fetch(t, what, conv)
    if t.tag == "task":
        return "script", _plugin_task(t, what, conv)
    conv.note(t, "dropped", f"<{t.tag}> task in {what}", "unknown task kind", whole=True)
    return "", None


def _exec(command: str, args: list[str], workdir: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"command": command}
    if args:
        body["arguments"] = args
    if workdir:
        body["working_directory"] = workdir
    return body


def _build_tool(t: XNode, what: str, conv: Conv) -> dict[str, Any]:
    """GoCD's ant/nant/rake tasks are command lines GoCD assembles; the same command line as an exec task."""
    tool = t.tag
    buildfile, targets = t.get("buildfile"), (t.get("target") or "").split()
    command = tool
    if tool == "nant" and t.get("nantpath"):
        command = t.get("nantpath").rstrip("/\\") + "/nant"  # type: ignore[union-attr]
    args: list[str] = []
    if buildfile:
        args += [f"-buildfile:{buildfile}"] if tool == "nant" else ["-f", buildfile]
    args += targets
    conv.note(t, "changed", f"<{tool}> task in {what}",
              f"converted to exec {' '.join([command, *args])!r}: the workbench has no {tool} task, so {tool} must "
              "be on the PATH of the machine that runs the job")
    return _exec(command, args, t.get("workingdir"))


def _fetch(t: XNode, what: str, conv: Conv) -> dict[str, Any] | None:
    origin = t.get("artifactOrigin") or "gocd"
    if origin != "gocd":
        conv.note(t, "dropped", f"fetch task in {what}", "fetching an external (plugin) artifact is not supported "
                                                          "by the workbench", whole=True)
        return None
    body: dict[str, Any] = {}
    if t.get("pipeline"):
        body["pipeline"] = t.get("pipeline")
    body["stage"], body["job"] = t.get("stage") or "", t.get("job") or ""
    missing = _fetch_source_missing(body, conv)
    if missing:
        conv.note(t, "dropped", f"fetch task in {what}", f"{missing}; add the fetch back once it exists", whole=True)
        return None
    src_file, src_dir = t.get("srcfile"), t.get("srcdir")
    body["source"] = src_file if src_file is not None else (src_dir or "")
    if src_file is not None:
        body["is_file"] = True
    if t.get("dest"):
        body["destination"] = t.get("dest")
    return body


def _fetch_source_missing(body: dict[str, Any], conv: Conv) -> str | None:
    """Why a fetch from another pipeline cannot work here (that pipeline, stage or job is not carried over)."""
    if "pipeline" not in body or conv.params is None:
        return None  # the pipeline's own stages are checked by the loader; a template's values have parameters
    chain = [resolve(name, conv.params) for name in body["pipeline"].split("/")]
    for name in chain:
        if name not in conv.known.stages:
            return f"it fetches from pipeline {name!r}, which is not in this file (a config repository's?) or was " \
                   "not carried over"
    stage, job = resolve(body["stage"], conv.params), resolve(body["job"], conv.params)
    jobs = conv.known.stages[chain[0]].get(stage)
    if jobs is None or job not in jobs:
        return f"pipeline {chain[0]!r} has no stage {stage!r} with job {job!r}"
    return None


def _plugin_task(t: XNode, what: str, conv: Conv) -> dict[str, Any] | None:
    plugin = t.child("pluginConfiguration")
    plugin_id = plugin.get("id") if plugin is not None else None
    if plugin is not None:
        plugin.get("version")
    props = {}
    for cfg in t.kids("configuration"):
        for p in cfg.kids("property"):
            k, v = p.child("key"), p.child("value")
            props[k.text.strip() if k else ""] = v.text if v else ""
    if plugin_id != SCRIPT_EXECUTOR:
        conv.note(t, "dropped", f"plugin task {plugin_id!r} in {what}",
                  f"plugin tasks are not supported by the workbench (only {SCRIPT_EXECUTOR}, as a script task)",
                  whole=True)
        return None
    shell = (props.get("shtype") or "bash").strip()
    if shell != "bash":
        conv.note(t, "changed", f"script task in {what}", f"runs with bash here (GoCD ran it with {shell})")
    return {"script": props.get("script", "")}
