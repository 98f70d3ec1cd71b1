"""A GoCD server's whole ``cruise-config.xml`` into workbench files (pure: text in, texts out).

Layout of the result (paths relative to the output workspace):

* ``pipelines/<group>.gocd.yaml`` — one per pipeline group, its pipelines with ``group: <group>``;
* ``pipelines/templates.gocd.yaml`` — GoCD templates as ``templates:``;
* ``pipelines/environments.gocd.yaml`` — environments, their variables and pipelines;
* ``pipelines/roles.gocd.yaml`` — ``roles:`` from the server's security roles;
* ``config_repos.yaml`` — the ``config_repos:`` section for ``workbench.yaml`` (a fragment: it is *not*
  merged into an existing workbench.yaml, the user pastes it);
* ``import-gocd-report.txt`` — every element not carried over, or changed, with its XML line.

The caller supplies the GoCD cipher key and a function that encrypts for the
workbench (both optional) and writes the files (:mod:`.write`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from . import emit
from .pipelines import Conv, flag, resolve, variables
from .report import Note, as_text
from .stages import pipeline as convert_pipeline
from .stages import stage_list
from .xmlread import XNode, parse_bytes

FORMAT_VERSION = 10
_RESERVED = {"templates", "environments", "roles"}
_REPO_PLUGINS = {"yaml.config.plugin": "**/*.gocd.yaml",
                 "json.config.plugin": ["**/*.gopipeline.json", "**/*.goenvironment.json"]}
_PATTERN_KEYS = {"yaml.config.plugin": ("file_pattern",), "json.config.plugin": ("pipeline_pattern",
                                                                                  "environment_pattern")}


@dataclass(frozen=True)
class Result:
    files: dict[str, str]  # relative path -> text
    notes: tuple[Note, ...]
    pipelines: int
    groups: int


def convert(data: bytes, display: str = "cruise-config.xml", *, key: bytes | None = None,
            encrypt: Callable[[str], str] | None = None) -> Result:
    """Convert the XML; raises :class:`~workbench.errors.ImportRefused` for unsafe or malformed XML."""
    root = parse_bytes(data, display)
    conv = Conv(display, key=key, encrypt=encrypt)
    root.get("schemaVersion")
    _prescan(root, conv)
    files: dict[str, Any] = {}
    roles = _roles(root, conv)
    templates = _templates(root, conv)
    template_names = set(templates)
    groups: dict[str, dict[str, Any]] = {}
    taken: set[str] = set()
    converted: set[str] = set()
    for block in root.kids("pipelines"):
        group = block.get("group") or "defaultGroup"
        operate = _group_auth(block, group, conv)
        pipelines = groups.setdefault(group, {})
        for p in block.kids("pipeline"):
            result = convert_pipeline(p, group, operate, template_names, conv)
            conv.params = None
            if result is not None:
                pipelines[result[0]] = result[1]
                converted.add(result[0])
        for other in block.kids():
            if other.tag not in ("pipeline", "authorization"):
                conv.note(other, "dropped", f"<{other.tag}> in group {group!r}", "not read by the importer",
                          whole=True)
    for group, pipelines in groups.items():
        if pipelines:
            files[_file_name(group, taken)] = {"format_version": FORMAT_VERSION, "pipelines": pipelines}
    if templates:
        files["pipelines/templates.gocd.yaml"] = {"format_version": FORMAT_VERSION, "templates": templates}
    environments = _environments(root, converted, conv)
    if environments:
        files["pipelines/environments.gocd.yaml"] = {"format_version": FORMAT_VERSION, "environments": environments}
    if roles is not None:
        _complete_roles(roles, files, conv, root)
        files["pipelines/roles.gocd.yaml"] = {"format_version": FORMAT_VERSION, "roles": roles}
    repos = _config_repos(root, conv)
    texts = {path: _dump(data, display) for path, data in files.items()}
    if repos:
        texts["config_repos.yaml"] = (
            "# The GoCD server's config repositories, for workbench.yaml: paste this section into it.\n"
            + yaml.safe_dump({"config_repos": repos}, sort_keys=False, default_flow_style=False, width=1000))
    _unread(root, conv)
    notes = tuple(sorted(conv.notes, key=lambda n: (n.line, n.col, n.message)))
    texts["import-gocd-report.txt"] = as_text(notes)
    return Result(texts, notes, sum(len(p) for p in groups.values()), sum(1 for p in groups.values() if p))


def _prescan(root: XNode, conv: Conv) -> None:
    """Every pipeline's stages and jobs (templates expanded), so dependencies can be checked while converting."""
    templates = {t.attrib.get("name", ""): t for block in root.children if block.tag == "templates"
                 for t in block.children if t.tag == "pipeline"}
    for block in root.children:
        if block.tag != "pipelines":
            continue
        for p in block.children:
            if p.tag != "pipeline":
                continue
            source = templates.get(p.attrib.get("template", "")) if p.attrib.get("template") else p
            params = {pm.attrib.get("name", ""): pm.text for ps in p.children if ps.tag == "params"
                      for pm in ps.children if pm.tag == "param"}
            stages: dict[str, list[str]] = {}
            for s in (source.children if source is not None else ()):
                if s.tag == "stage":
                    jobs = [resolve(j.attrib.get("name", ""), params) for js in s.children if js.tag == "jobs"
                            for j in js.children if j.tag == "job"]
                    if jobs:
                        stages[resolve(s.attrib.get("name", ""), params)] = jobs
            if stages:
                conv.known.stages[p.attrib.get("name", "")] = stages


def _file_name(group: str, taken: set[str]) -> str:
    base = group if group.lower() not in _RESERVED else f"{group}-group"
    name, n = base, 2
    while name.lower() in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name.lower())
    return f"pipelines/{name}.gocd.yaml"


def _users_roles(node: XNode | None) -> tuple[list[str], list[str]]:
    if node is None:
        return [], []
    return ([u.text.strip() for u in node.kids("user") if u.text.strip()],
            [r.text.strip() for r in node.kids("role") if r.text.strip()])


def _group_auth(block: XNode, group: str, conv: Conv) -> tuple[list[str], list[str]] | None:
    """The group's operators (operate + admins), used for manual approvals that name nobody; the rest is reported."""
    auth = block.child("authorization")
    if auth is None:
        return None
    users: list[str] = []
    roles: list[str] = []
    for tag in ("operate", "admins"):
        u, r = _users_roles(auth.child(tag))
        users += u
        roles += r
    conv.note(auth, "dropped", f"authorization of group {group!r}",
              "the workbench has no per-group view/operate/admin permissions; operators are written as the "
              "approvers of this group's manual stages that name nobody (see those lines)", whole=True)
    return list(dict.fromkeys(users)), list(dict.fromkeys(roles))


def _templates(root: XNode, conv: Conv) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for block in root.kids("templates"):
        for t in block.kids("pipeline"):
            name = t.get("name") or ""
            for auth in t.kids("authorization"):
                conv.note(auth, "dropped", f"authorization of template {name!r}",
                          "the workbench has no template administrators", whole=True)
            stages = stage_list(t, f"template {name!r}", None, conv)
            if stages:
                out[name] = stages
            else:
                conv.note(t, "dropped", f"template {name!r}", "has no stage left to run", whole=True)
    return out


def _environments(root: XNode, converted: set[str], conv: Conv) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for block in root.kids("environments"):
        for e in block.kids("environment"):
            name = e.get("name") or ""
            what = f"environment {name!r}"
            body: dict[str, Any] = variables(e, what, conv)
            listed = []
            for ps in e.kids("pipelines"):
                for p in ps.kids("pipeline"):
                    pname = p.get("name") or ""
                    if pname in converted:
                        listed.append(pname)
                    else:
                        conv.note(p, "dropped", f"pipeline {pname!r} of {what}",
                                  "is not in the converted files (defined in a config repository, or not carried "
                                  "over); add it to the environment where it is defined", whole=True)
            if listed:
                body["pipelines"] = listed
            for agents in e.kids("agents"):
                conv.note(agents, "dropped", f"agents of {what}",
                          f"agents are Dask workers here; start one for it with `workbench agent --environment {name}`",
                          whole=True)
            out[name] = body or None
    return out


def _roles(root: XNode, conv: Conv) -> dict[str, list[str]] | None:
    server = root.child("server")
    if server is None:
        return None
    security = server.child("security")
    if security is None:
        return None
    roles: dict[str, list[str]] | None = None
    for block in security.kids("roles"):
        roles = roles if roles is not None else {}
        for r in block.kids():
            name = r.get("name") or ""
            if r.tag == "role":
                users = [u.text.strip() for us in r.kids("users") for u in us.kids("user") if u.text.strip()]
                roles[name] = list(dict.fromkeys(users))
                for policy in r.kids("policy"):
                    conv.note(policy, "dropped", f"policy of role {name!r}",
                              "role policies (which entities a role may view or administer) are not supported",
                              whole=True)
            else:
                roles[name] = []
                conv.note(r, "changed", f"role {name!r}",
                          f"its members come from an authorization plugin (<{r.tag}>); written with no users: "
                          "list them under roles:", whole=True)
    for tag in ("admins", "authConfigs", "ldap", "passwordFile"):
        for node in security.kids(tag):
            conv.note(node, "dropped", f"<{tag}> of server security",
                      "sign-in and server administrators are configured for the release service instead "
                      "(docs/server.md)", whole=True)
    return roles


def _complete_roles(roles: dict[str, list[str]], files: dict[str, Any], conv: Conv, root: XNode) -> None:
    """Approvals may name roles GoCD got from elsewhere; with a ``roles:`` section the workbench checks them."""
    named: list[str] = []
    for data in files.values():
        for body in list((data.get("pipelines") or {}).values()) + [{"stages": s} for s in
                                                                     (data.get("templates") or {}).values()]:
            for entry in body.get("stages") or ():
                for stage in entry.values():
                    named += (stage.get("approval") or {}).get("roles", [])
    missing = [r for r in dict.fromkeys(named) if r not in roles]
    for r in missing:
        roles[r] = []
        conv.note(root, "changed", f"role {r!r}", "is named by an approval but not defined in the server's "
                                                   "roles; written with no users: list them under roles:")


def _config_repos(root: XNode, conv: Conv) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for block in root.kids("config-repos"):
        for repo in block.kids("config-repo"):
            rid = repo.get("id") or repo.get("pluginId") or "repo"
            plugin = repo.get("pluginId") or ""
            what = f"config repository {rid!r}"
            material = next((c for c in repo.children if c.tag not in ("configuration", "rules")), None)
            props = {}
            for cfg in repo.kids("configuration"):
                for p in cfg.kids("property"):
                    k, v = p.child("key"), p.child("value")
                    enc = p.child("encryptedValue")
                    if enc is not None:
                        conv.note(enc, "dropped", f"secure property of {what}", "not carried over", whole=True)
                    props[k.text.strip() if k else ""] = v.text.strip() if v else ""
            if plugin not in _REPO_PLUGINS:
                conv.note(repo, "dropped", what, f"uses config plugin {plugin!r}; the workbench reads the YAML "
                                                 "(yaml.config.plugin) and JSON (json.config.plugin) formats only",
                          whole=True)
                continue
            if material is None or material.tag != "git":
                conv.note(repo, "dropped", what, f"its material is <{material.tag if material else 'none'}>; "
                                                 "config repositories must be git here", whole=True)
                continue
            material.used = True
            entry: dict[str, Any] = {"git": material.get("url") or ""}
            entry["branch"] = material.get("branch") or "master"
            for attr in ("username", "password", "encryptedPassword", "autoUpdate", "shallowClone", "materialName"):
                material.get(attr)
            if material.attrib.get("encryptedPassword") or material.attrib.get("password"):
                conv.note(material, "secret", f"password of {what}", "not written: give the repository URL "
                                                                     "credentials through git's own helpers")
            patterns = [props[k] for k in _PATTERN_KEYS[plugin] if props.get(k)]
            if patterns:
                entry["pattern"] = patterns[0] if len(patterns) == 1 else patterns
            elif plugin == "json.config.plugin":
                entry["pattern"] = _REPO_PLUGINS[plugin]
            rules = [{"directive": r.tag, "action": r.get("action") or "refer", "type": r.get("type") or "*",
                      "resource": r.text.strip()} for rs in repo.kids("rules") for r in rs.kids()]
            if rules:
                entry["rules"] = rules
            out[rid] = entry
    return out


def _unread(root: XNode, conv: Conv) -> None:
    """Everything the converter neither read nor reported: one note per element (its subtree included)."""
    skip_attrs = {"server": True}  # the server's own settings (ids, artifacts folder, ...) are the server's

    def visit(node: XNode) -> None:
        extra = node.unread_attributes()
        if extra and not skip_attrs.get(node.tag):
            conv.note(node, "dropped", f"<{node.tag}>", f"attribute(s) {', '.join(extra)} not carried over")
        for c in node.children:
            if c.used:
                visit(c)
            else:
                conv.note(c, "dropped", f"<{c.tag}>" + (f" {c.attrib['name']!r}" if "name" in c.attrib else ""),
                          "not read by the importer" if node.tag != "server" else
                          "a GoCD server setting with no workbench equivalent", whole=True)

    root.used = True
    server = root.child("server")
    if server is not None:
        server.used = True
    visit(root)


def _dump(data: dict[str, Any], source: str) -> str:
    head = f"# Converted from the GoCD config {source} by `workbench import-gocd` (see import-gocd-report.txt)\n"
    return head + emit.dump(data)


__all__ = ["Result", "convert", "flag"]
