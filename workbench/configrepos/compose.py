"""Putting config repositories and the workspace's files together, and GoCD's last known good config.

The config the workbench runs is the workspace's ``pipelines/`` files plus
each config repository at its *last good* revision (kept in the store).  A
poll (:func:`refresh`, from ``tick``, ``serve``, the server and ``notify``)
looks at each repository's branch; a new revision is tried together with
everything else (so a pipeline may depend on one in another repository or in
the workspace, and a name defined twice is an error naming both places), and
with the repository's rules.  When it loads it becomes the last good
revision; when it does not, its problems are recorded for that repository
and its pipelines keep running from the last good one, other repositories
untouched.  This is what GoCD does.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping
from datetime import UTC
from typing import Any

from ..config import Config, ConfigError, load_sources, load_workspace_config, workspace_sources
from ..config.context import ConfigOrigin
from ..config.model import DependencyMaterial
from ..errors import MaterialError, Problem, WorkbenchError
from .model import ConfigRepo, allowed
from .source import RepoFiles, display, mirror_for, poll_head, read_files
from .state import RepoState, load_states, save_state

Chosen = Mapping[str, tuple[ConfigRepo, str, RepoFiles]]  # id -> (repo, revision, files)
KEY_PREFIX = "configrepo:"  # how a config repository is named among material keys (notify, webhooks)
ORIGINS = "config_repo_origins"  # Config.extensions key: pipeline -> {repo, url, branch, revision}
STATES = "config_repo_states"  # Config.extensions key: what the config was built from (see :func:`stale`)


def _prefix(repo_id: str, revision: str) -> str:
    return display(repo_id, revision, "")


def _sources(chosen: Chosen) -> list[tuple[str, bytes | None, str | None]]:
    out: list[tuple[str, bytes | None, str | None]] = []
    for rid in sorted(chosen):
        _repo, rev, files = chosen[rid]
        out.extend((display(rid, rev, path), data, None) for path, data in files)
    return out


def _rules_check(chosen: Chosen) -> Any:
    """GoCD's rules: a repository's pipelines' groups, its environments and the outside pipelines it depends on."""

    def check(parts: list[Any], config: Config, ctx: Any) -> None:
        owner: dict[str, str] = {}
        for rid, (repo, rev, _files) in chosen.items():
            prefix = _prefix(rid, rev)
            for p in config.pipelines.values():
                if p.loc.file.startswith(prefix):
                    owner[p.name] = rid
        for p in config.pipelines.values():
            rid = owner.get(p.name)
            if rid is None:
                continue
            repo = chosen[rid][0]
            if allowed(repo.rules, "pipeline_group", p.group) is None:
                ctx.error(p.loc, f"config repository {rid!r} may not refer to pipeline group {p.group!r} (pipeline "
                                 f"{p.name!r}): {_why(repo)}")
            for m in p.materials:
                if isinstance(m, DependencyMaterial) and owner.get(m.pipeline) != rid \
                        and allowed(repo.rules, "pipeline", m.pipeline) is None:
                    ctx.error(m.loc, f"config repository {rid!r} may not refer to pipeline {m.pipeline!r} (material "
                                     f"{m.name!r} of {p.name!r}), which it does not define: {_why(repo)}")
        for fp in parts:
            for rid, (repo, rev, _files) in chosen.items():
                if fp.file.startswith(_prefix(rid, rev)):
                    for env in fp.environments:
                        if allowed(repo.rules, "environment", env.name) is None:
                            ctx.error(env.loc, f"config repository {rid!r} may not refer to environment "
                                               f"{env.name!r}: {_why(repo)}")

    return check


def _why(repo: ConfigRepo) -> str:
    if not repo.rules:
        return ("it has no rules, and without rules a config repository may refer to nothing (GoCD's default); "
                "add e.g. rules: [{allow: refer, type: pipeline_group, resources: \"team-*\"}] in workbench.yaml")
    return "no rule of it allows that (rules are read top to bottom, the first that matches decides) in workbench.yaml"


def load_with(ws_sources: list[Any], chosen: Chosen) -> Config:
    """The workspace's files and each chosen repository at its revision, loaded and checked together."""
    origins = {_prefix(rid, rev): ConfigOrigin(rid, repo.url, repo.branch, rev, repo.username, repo.password)
               for rid, (repo, rev, _files) in chosen.items()}
    config = load_sources([*ws_sources, *_sources(chosen)], _rules_check(chosen), origins)
    origins: dict[str, dict[str, str]] = {}
    for rid, (repo, rev, _files) in chosen.items():
        prefix = _prefix(rid, rev)
        for p in config.pipelines.values():
            if p.loc.file.startswith(prefix):
                origins[p.name] = {"repo": rid, "url": repo.url, "branch": repo.branch, "revision": rev}
    return dataclasses.replace(config, extensions={**config.extensions, ORIGINS: origins})


def _good(repos: Mapping[str, ConfigRepo], states: Mapping[str, RepoState]) -> dict[str, tuple[ConfigRepo, str, RepoFiles]]:
    return {rid: (repo, states[rid].good_revision, states[rid].good_files)  # type: ignore[misc]
            for rid, repo in repos.items() if rid in states and states[rid].good_revision}


def workspace_config(ws: Any) -> Config:
    """What ``Workspace.config`` is: the workspace's files plus each repository's last good revision."""
    repos: Mapping[str, ConfigRepo] = ws.settings.config_repos
    if not repos:
        return load_workspace_config(ws.root)
    states = load_states(ws.store)
    config = load_with(workspace_sources(ws.root), _good(repos, states))
    return dataclasses.replace(config, warnings=(*config.warnings, *repo_warnings(repos, states)),
                               extensions={**config.extensions, STATES: _signature(repos, states)})


def _signature(repos: Mapping[str, ConfigRepo], states: Mapping[str, RepoState]) -> dict[str, Any]:
    return {rid: (st.good_revision, st.latest_revision, tuple(map(str, st.errors)))
            for rid, st in states.items() if rid in repos}


def stale(ws: Any) -> bool:
    """Whether the loaded config is older than the store's repository states (another process polled):
    a long-running serve or server then reloads, so it runs what a fresh ``validate`` would show."""
    cfg = ws.__dict__.get("config")
    if cfg is None or STATES not in cfg.extensions:
        return False
    return cfg.extensions[STATES] != _signature(ws.settings.config_repos, load_states(ws.store))


def repo_warnings(repos: Mapping[str, ConfigRepo], states: Mapping[str, RepoState]) -> list[Problem]:
    """Each repository's refused revision (its problems, located) or why it has no pipelines yet."""
    out: list[Problem] = []
    for rid, repo in sorted(repos.items()):
        st = states.get(rid)
        if st is None:
            out.append(Problem("workbench.yaml", repo.line, repo.col,
                               f"config repository {rid!r} has not been polled yet (run `workbench tick`)", "warning"))
            continue
        if not st.errors:
            continue
        latest = (st.latest_revision or "?")[:12]
        keeps = (f"its pipelines run from the last good revision {st.good_revision[:12]}" if st.good_revision
                 else "it has no good revision yet, so it defines no pipelines")
        for e in st.errors:
            out.append(Problem(e.file, e.line, e.col, f"{e.message} [config repository {rid!r} revision {latest} "
                                                      f"refused; {keeps}]", "warning"))
    return out


def refresh(ws: Any, only: Iterable[str] | None = None, now: float | None = None) -> tuple[list[str], bool]:
    """Poll the config repositories (``only``: these ids); returns report lines and whether the config changed."""
    repos: Mapping[str, ConfigRepo] = ws.settings.config_repos
    if not repos:
        return [], False
    wanted = set(repos) if only is None else set(only) & set(repos)
    now = time.time() if now is None else now
    store = ws.store
    states = load_states(store)
    mirrors_dir = ws.state / "mirrors"
    lines: list[str] = []
    candidates: list[tuple[str, str, RepoFiles, list[Problem]]] = []
    for rid in sorted(wanted):
        repo, st = repos[rid], states.get(rid) or RepoState(rid, repos[rid].url, repos[rid].branch)
        mirror = mirror_for(repo, mirrors_dir)
        try:
            head = poll_head(mirror, repo)
            moved = (head != st.good_revision or st.url != repo.url or st.branch != repo.branch)
            if not moved:
                if st.errors or st.latest_revision != head:  # e.g. a revert to the good revision
                    states[rid] = _saved(store, dataclasses.replace(st, latest_revision=head, errors=(),
                                                                    checked_at=now))
                continue
            if head == st.latest_revision and st.errors and not _fetch_error(st):
                continue  # refused before; tried again only when the branch moves
            files, problems = read_files(mirror, repo, head)
        except MaterialError as exc:
            problem = Problem("workbench.yaml", repo.line, repo.col, f"config repository {rid!r}: {exc}")
            states[rid] = _saved(store, dataclasses.replace(st, errors=(problem,), checked_at=now))
            lines.append(f"config repository {rid}: {exc}")
            continue
        candidates.append((rid, head, files, problems))
    if not candidates:
        return lines, False
    ws_sources = workspace_sources(ws.root)
    base = _good(repos, states)
    try:
        load_with(ws_sources, base)
    except ConfigError as exc:
        lines.append(f"config repositories not checked: the rest of the configuration does not load ({exc.problems[0]})")
        return lines, False
    changed = False
    if len(candidates) > 1 and not any(problems for *_, problems in candidates):
        together = {**base, **{rid: (repos[rid], head, files) for rid, head, files, _ in candidates}}
        try:  # the usual case (a first start, several repositories moved, none broken): one load, not one each
            load_with(ws_sources, together)
        except WorkbenchError:
            pass  # someone is broken: each is tried alone below, so the others still move on
        else:
            for rid, head, files, _ in candidates:
                repo = repos[rid]
                states[rid] = _saved(store, RepoState(rid, repo.url, repo.branch, head, files, now, head, (), now))
                lines.append(f"config repository {rid}: now at {head[:12]}")
            return lines, True
    for rid, head, files, problems in candidates:
        repo, st = repos[rid], states.get(rid) or RepoState(rid, repos[rid].url, repos[rid].branch)
        trial = {**base, rid: (repo, head, files)}
        try:
            if problems:
                raise ConfigError(problems)
            load_with(ws_sources, trial)
        except ConfigError as exc:
            states[rid] = _saved(store, dataclasses.replace(st, url=repo.url, branch=repo.branch, latest_revision=head,
                                                            errors=exc.problems, checked_at=now))
            keeps = f"keeps {st.good_revision[:12]}" if st.good_revision else "has no good revision"
            lines.append(f"config repository {rid}: revision {head[:12]} refused ({len(exc.problems)} problem(s)), "
                         f"{keeps}: {exc.problems[0]}")
            continue
        except WorkbenchError as exc:  # anything else a file can cause must not stop the other repositories
            lines.append(f"config repository {rid}: revision {head[:12]} not loaded: {exc}")
            continue
        base = trial
        changed = True
        states[rid] = _saved(store, RepoState(rid, repo.url, repo.branch, head, files, now, head, (), now))
        lines.append(f"config repository {rid}: now at {head[:12]}")
    return lines, changed


def _fetch_error(st: RepoState) -> bool:
    return any(e.file == "workbench.yaml" for e in st.errors)


def _saved(store: Any, st: RepoState) -> RepoState:
    save_state(store, st)
    return st


def repo_ids_for(ws: Any, what: str) -> list[str]:
    """The config repositories a ``notify`` argument names: by id, or by URL (as git materials are matched)."""
    from ..materials.git import normalize_url

    if what.startswith(KEY_PREFIX):  # a key as material_keys and webhooks give it
        return [what[len(KEY_PREFIX):]] if what[len(KEY_PREFIX):] in ws.settings.config_repos else []
    try:
        wanted = normalize_url(what, ws.root)
    except (OSError, ValueError):
        wanted = what
    out = []
    for rid, repo in ws.settings.config_repos.items():
        url = normalize_url(repo.url, ws.root)
        if what in (rid, repo.url) or url == wanted or url.removesuffix(".git") == wanted.removesuffix(".git"):
            out.append(rid)
    return out


def describe(ws: Any) -> list[dict[str, Any]]:
    """Plain rows for ``status``, the API and the dashboard: one per declared repository."""
    from datetime import datetime

    def iso(t: float | None) -> str | None:
        return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")

    repos: Mapping[str, ConfigRepo] = ws.settings.config_repos
    if not repos:
        return []
    states = load_states(ws.store)
    rows = []
    for rid, repo in sorted(repos.items()):
        st = states.get(rid)
        rows.append({"id": rid, "url": repo.url, "branch": repo.branch,
                     "good_revision": st.good_revision if st else None,
                     "latest_revision": st.latest_revision if st else None,
                     "errors": [str(e) for e in st.errors] if st else [],
                     "good_at": iso(st.good_at) if st else None, "checked_at": iso(st.checked_at) if st else None})
    return rows


__all__ = ["ORIGINS", "describe", "load_with", "refresh", "repo_ids_for", "repo_warnings", "workspace_config"]
