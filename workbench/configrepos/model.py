"""Config repositories as plain data: what ``workbench.yaml`` declares, and GoCD's rules.

GoCD's rules (``<rules><allow action="refer" type="pipeline_group">shops*</allow></rules>``)
decide what a config repository may *refer to*: the pipeline groups its pipelines
go into, the environments it defines or adds pipelines to, and the pipelines
outside it that its pipelines depend on.  As in GoCD they are read top to
bottom and the first rule that matches decides; when no rule matches, the
reference is denied, so a repository with no rules at all can define nothing
(GoCD's own default for a new config repository; its upgrade gave existing
ones an explicit allow-all rule).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

RULE_TYPES = ("pipeline_group", "environment", "pipeline")
DEFAULT_PATTERNS = ("**/*.gocd.yaml", "**/*.gocd.json")


@dataclass(frozen=True)
class Rule:
    """One ``allow``/``deny`` rule; ``type`` and ``resource`` may be ``*`` (resource also ``?``/``*`` globs)."""

    directive: str  # allow | deny
    type: str  # pipeline_group | environment | pipeline | *
    resource: str  # a name or a glob
    action: str = "refer"

    def matches(self, type_: str, name: str) -> bool:
        if self.type not in ("*", type_):
            return False
        # GoCD compares names case-insensitively and its globs know only * and ?
        pattern = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in self.resource)
        return re.fullmatch(pattern, name, re.IGNORECASE) is not None


def allowed(rules: tuple[Rule, ...], type_: str, name: str) -> Rule | None:
    """The first rule matching (``type_``, ``name``) when it allows, else None (denied, or no rule matched)."""
    for rule in rules:
        if rule.matches(type_, name):
            return rule if rule.directive == "allow" else None
    return None


@dataclass(frozen=True)
class ConfigRepo:
    """One entry of ``config_repos:``."""

    id: str
    url: str  # as written (normalised for matching by materials.git.normalize_url)
    branch: str = "main"
    patterns: tuple[str, ...] = DEFAULT_PATTERNS
    rules: tuple[Rule, ...] = ()
    username: str | None = None
    password: str | None = None
    line: int = 1
    col: int = 1

    def wants(self, path: str) -> bool:
        """Whether a file of the repository (POSIX path from its root) is a config file."""
        return any(glob_match(p, path) for p in self.patterns)


_GLOB_CACHE: dict[str, re.Pattern[str]] = {}


def glob_match(pattern: str, path: str) -> bool:
    """Ant-style globs as GoCD's plugins use them: ``**/`` any folders (none too), ``*`` within a name."""
    rx = _GLOB_CACHE.get(pattern)
    if rx is None:
        out, i = [], 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out.append("(?:.*/)?")
                i += 3
            elif pattern.startswith("**", i):
                out.append(".*")
                i += 2
            else:
                c = pattern[i]
                out.append("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c))
                i += 1
        rx = _GLOB_CACHE[pattern] = re.compile("".join(out))
    return rx.fullmatch(path) is not None


__all__ = ["DEFAULT_PATTERNS", "RULE_TYPES", "ConfigRepo", "Rule", "allowed", "glob_match"]
