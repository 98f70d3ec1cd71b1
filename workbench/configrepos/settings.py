"""``config_repos:`` of ``workbench.yaml`` into :class:`ConfigRepo` records, every mistake at FILE:LINE:COL."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import Problem
from .model import DEFAULT_PATTERNS, RULE_TYPES, ConfigRepo, Rule

_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_REPO_KEYS = ("git", "url", "branch", "pattern", "patterns", "rules", "username", "password")
_RULE_KEYS = ("allow", "deny", "directive", "type", "resources", "resource", "action")


def _at(node: Any) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _scalar(node: Any) -> str | None:
    import yaml

    return node.value if isinstance(node, yaml.ScalarNode) and node.tag != "tag:yaml.org,2002:null" else None


def parse_config_repos(node: Any, file: str, root: Path, problems: list[Problem]) -> dict[str, ConfigRepo]:
    """The value node of ``config_repos:`` (PyYAML node, for positions) → id → ConfigRepo."""
    import yaml

    def problem(at: Any, message: str) -> None:
        problems.append(Problem(file, *_at(at), message))

    if _scalar(node) is None and isinstance(node, yaml.ScalarNode):
        return {}  # config_repos: (empty)
    if not isinstance(node, yaml.MappingNode):
        problem(node, "config_repos must be a mapping of repository ids to {git: URL, branch: ..., rules: [...]}")
        return {}
    out: dict[str, ConfigRepo] = {}
    for key, value in node.value:
        rid = _scalar(key)
        if rid is None or not _ID_RE.match(rid):
            problem(key, f"invalid config repository id {rid!r}: use letters, digits, '_', '-' and '.'")
            continue
        if rid in out:
            problem(key, f"config repository {rid!r} is declared twice")
            continue
        repo = _repo(rid, key, value, root, problem)
        if repo is not None:
            out[rid] = repo
    return out


def _repo(rid: str, key: Any, node: Any, root: Path, problem: Any) -> ConfigRepo | None:
    import yaml

    what = f"config repository {rid!r}"
    if isinstance(node, yaml.ScalarNode) and _scalar(node):
        node = yaml.MappingNode("tag:yaml.org,2002:map", [(yaml.ScalarNode("tag:yaml.org,2002:str", "git",
                                                                          node.start_mark), node)],
                                node.start_mark, node.end_mark)
    if not isinstance(node, yaml.MappingNode):
        problem(key, f"{what} needs git: URL (and optionally branch:, pattern:, rules:)")
        return None
    fields: dict[str, Any] = {}
    for k, v in node.value:
        name = _scalar(k)
        if name not in _REPO_KEYS:
            problem(k, f"unknown key {name!r} in {what} (known: {', '.join(_REPO_KEYS)})")
        elif name in fields or (name in ("git", "url") and ({"git", "url"} & set(fields))):
            problem(k, f"{what} gives {name} twice")
        else:
            fields[name] = (k, v)
    url_key = "git" if "git" in fields else "url" if "url" in fields else None
    url = _scalar(fields[url_key][1]) if url_key else None
    if not url:
        problem(fields[url_key][1] if url_key else key, f"{what} needs git: URL")
        return None
    texts: dict[str, str | None] = {}
    for name in ("branch", "username", "password"):
        if name in fields:
            texts[name] = _scalar(fields[name][1])
            if not texts[name]:
                problem(fields[name][1], f"{name} of {what} must be a non-empty string")
    patterns: tuple[str, ...] = DEFAULT_PATTERNS
    for name in ("pattern", "patterns"):
        if name in fields:
            v = fields[name][1]
            items = [v] if isinstance(v, yaml.ScalarNode) else v.value if isinstance(v, yaml.SequenceNode) else None
            got = [_scalar(i) for i in items or ()]
            if not items or not all(got):
                problem(v, f"{name} of {what} must be a glob such as \"**/*.gocd.yaml\" or a list of them")
            else:
                patterns = tuple(g for g in got if g)
    rules: list[Rule] = []
    if "rules" in fields:
        v = fields["rules"][1]
        if not isinstance(v, yaml.SequenceNode):
            problem(v, f"rules of {what} must be a list such as [{{allow: refer, type: pipeline_group, "
                       "resources: \"team-*\"}]")
        else:
            for item in v.value:
                rule = _rule(item, what, problem)
                if rule is not None:
                    rules.append(rule)
    password = texts.get("password")
    if password is not None and "${" not in password:
        problem(fields["password"][1], f"password of {what} must come from the environment, e.g. "
                                       "password: \"${SHOPS_GIT_TOKEN}\" (it is never kept in this file)")
        password = None
    if password:
        from ..settings import _expand

        password = _expand(password, lambda m: problem(fields["password"][1], f"{what}: {m}"))
    if "://" not in url and not re.match(r"^[\w.-]+@[\w.-]+:", url):
        url = str((root / url).expanduser().resolve()) if not Path(url).expanduser().is_absolute() else url
    line, col = _at(key)
    return ConfigRepo(rid, url, branch=texts.get("branch") or "main", patterns=patterns, rules=tuple(rules),
                      username=texts.get("username"), password=password, line=line, col=col)


def _rule(node: Any, what: str, problem: Any) -> Rule | None:
    import yaml

    if not isinstance(node, yaml.MappingNode):
        problem(node, f"each rule of {what} must be a mapping like {{allow: refer, type: environment, "
                      "resources: \"staging\"}")
        return None
    fields = {}
    for k, v in node.value:
        name = _scalar(k)
        if name not in _RULE_KEYS:
            problem(k, f"unknown rule key {name!r} in {what} (known: allow, deny, type, resources; or directive, "
                       "action, type, resource as `workbench import-gocd` writes them)")
            return None
        fields[name] = v
    directives = [d for d in ("allow", "deny") if d in fields]
    if "directive" in fields and not directives:  # the long form `workbench import-gocd` writes
        directive = _scalar(fields["directive"])
        if directive not in ("allow", "deny"):
            problem(fields["directive"], f"directive of a rule of {what} must be allow or deny")
            return None
        action_node = fields.get("action", fields["directive"])
        action = _scalar(fields["action"]) if "action" in fields else "refer"
    elif len(directives) != 1 or "directive" in fields:
        problem(node, f"a rule of {what} needs exactly one of allow: or deny: (its value is the action, refer)")
        return None
    else:
        directive = directives[0]
        action_node = fields[directive]
        action = _scalar(fields[directive])
    if action not in ("refer", "*"):
        problem(action_node, f"the action of a rule of {what} must be refer (GoCD's only action) or *")
        return None
    type_ = _scalar(fields["type"]) if "type" in fields else None
    if type_ not in (*RULE_TYPES, "*"):
        problem(fields.get("type", node), f"type of a rule of {what} must be one of {', '.join(RULE_TYPES)} or *")
        return None
    res_node = fields.get("resources", fields.get("resource"))
    resource = _scalar(res_node) if res_node is not None else None
    if not resource:
        problem(res_node if res_node is not None else node,
                f"a rule of {what} needs resources: a name or glob (* and ?), e.g. \"team-a-*\"")
        return None
    return Rule(directive, type_, resource, "refer")
