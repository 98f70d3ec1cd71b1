"""The optional workspace file ``workbench.yaml``: where jobs run and where history lives.

It sits at the workspace root, beside ``pipelines/``, and is about the
installation rather than the pipelines, so the same pipeline files run on one
laptop (no file: local executor, SQLite) or on a team's Dask cluster with a
PostgreSQL store::

    executor:
      kind: dask                      # local (default) | dask
      address: tcp://ci-sched:8786    # or "local" for an in-process LocalCluster
      agent_wait_timeout: 600         # seconds a job may wait for a matching agent
    store:
      url: postgresql+psycopg://workbench@db.internal/workbench
    artifacts:
      url: s3://releases/workbench    # any fsspec URL every agent can reach

    server:                         # the release service (docs/server.md)
      url: https://release.internal   # where the CLI, notebooks and dashboards send their calls
      bind: 127.0.0.1:8765            # where `workbench server` listens
      anonymous_read: false           # reads without signing in (off by default)
      trusted_proxies: [127.0.0.1]    # only these may set X-Forwarded-* headers
      webhooks:
        github: {secret: "${GITHUB_WEBHOOK_SECRET}"}
      hub:                            # as a JupyterHub service (docs/server.md "Behind JupyterHub")
        cache_seconds: 30             # how long the hub's answer about a token is trusted

    config_repos:                   # GoCD config repositories (docs/config-repos.md)
      shops:
        git: https://git.internal/shops.git
        branch: main                  # default: main
        pattern: "**/*.gocd.yaml"     # default: **/*.gocd.yaml and **/*.gocd.json
        rules:                        # GoCD's rules; without any, the repository may define nothing
          - {allow: refer, type: pipeline_group, resources: "shops*"}

Short forms: ``executor: dask://tcp://ci-sched:8786``, ``store: URL``, ``artifacts: URL``.
``${NAME}`` in a value is replaced by the environment variable NAME (so a
password need not be committed; libpq's ``~/.pgpass`` and ``PGPASSWORD`` work
too). Precedence for the store: an explicit argument, then
``$WORKBENCH_STORE_URL``, then this file, then ``.workbench/store.db``; for the
executor: ``--executor``/``executor=``, then this file, then local; for
artifacts: ``$WORKBENCH_ARTIFACTS_URL``, then this file, then ``.workbench/artifacts``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError, Problem

FILE_NAME = "workbench.yaml"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TOP_KEYS = ("executor", "store", "artifacts", "server", "config_repos")
_SERVER_KEYS = ("url", "bind", "anonymous_read", "trusted_proxies", "webhooks", "max_body_bytes", "hub")
_HUB_KEYS = ("api_url", "service_name", "api_token", "prefix", "client_id", "oauth_callback_url", "cache_seconds")
FORGES = ("github", "gitlab", "gitea", "bitbucket")


@dataclass(frozen=True)
class HubSettings:
    """``server.hub``: the JupyterHub this server is a service of. Every field left out comes from the
    ``JUPYTERHUB_*`` environment a hub gives a managed service (workbench.server.hub.from_settings);
    ``api_token`` stays as written (``${VAR}`` unexpanded) until the server starts."""

    configured: bool = False  # the section is present: the server must find a hub (or says what is missing)
    api_url: str | None = None
    service_name: str | None = None
    api_token: str | None = None
    prefix: str | None = None
    client_id: str | None = None
    oauth_callback_url: str | None = None
    cache_seconds: int = 30


@dataclass(frozen=True)
class ServerSettings:
    """The ``server:`` section. Webhook secrets stay as written (``${VAR}`` unexpanded) until the
    server starts, so a CLI user who lacks the variable is not refused every command."""

    url: str | None = None
    bind: str | None = None
    anonymous_read: bool = False
    trusted_proxies: tuple[str, ...] = ()
    webhook_secrets: Mapping[str, str] = field(default_factory=dict)
    max_body_bytes: int = 1_000_000
    hub: HubSettings = field(default_factory=HubSettings)


@dataclass(frozen=True)
class Settings:
    """What ``workbench.yaml`` says; all None when there is no file."""

    path: Path | None = None
    executor: str | None = None  # "local", "dask://local", "dask://tcp://host:8786"
    executor_options: Mapping[str, Any] = field(default_factory=dict)
    store_url: str | None = None
    artifacts_url: str | None = None
    server: ServerSettings = field(default_factory=ServerSettings)
    config_repos: Mapping[str, Any] = field(default_factory=dict)  # id -> configrepos.ConfigRepo

    def executor_for(self, requested: str | None) -> tuple[str | None, dict[str, Any]]:
        """The executor to make and its options: ``requested`` wins; options apply to the same kind."""
        if requested is None:
            return self.executor, dict(self.executor_options)
        if self.executor and requested.partition("://")[0] == self.executor.partition("://")[0]:
            return requested, dict(self.executor_options)
        return requested, {}

    def resolve_executor(self, requested: str | None, max_parallel: int | None) -> tuple[str | None, dict[str, Any]]:
        """:meth:`executor_for`, with ``-j`` (``max_parallel``) winning over this file's ``max_parallel``."""
        spec, options = self.executor_for(requested)
        if max_parallel is not None or "max_parallel" not in options:
            options["max_parallel"] = max_parallel
        return spec, options


def load_settings(root: Path) -> Settings:
    """Read ``root/workbench.yaml``; a missing file gives the defaults, a bad one a ConfigError."""
    import yaml

    path = root / FILE_NAME
    if not path.is_file():
        return Settings()
    display = FILE_NAME
    try:
        text = path.read_text()
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except OSError as exc:
        raise ConfigError([Problem(display, 1, 1, f"cannot read the file: {exc.strerror or exc}")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise ConfigError([Problem(display, line, col, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    if data is None:
        return Settings(path=path)
    if not isinstance(data, dict):
        raise ConfigError([Problem(display, 1, 1, "workbench.yaml must be a mapping with executor: and store:")])
    marks = _key_marks(node)
    problems: list[Problem] = []

    def problem(key: str | tuple[str, ...], message: str) -> None:
        """At the deepest key of ``key``'s path that the file has (``("server", "hub", "prefix")``)."""
        path = (key,) if isinstance(key, str) else tuple(key)
        while path and path not in marks:
            path = path[:-1]
        line, col = marks.get(path, (1, 1))
        problems.append(Problem(display, line, col, message))

    for key in data:
        if key not in _TOP_KEYS:
            problem(str(key), f"unknown key {key!r} (known: {', '.join(_TOP_KEYS)})")
    executor, options = _executor(data.get("executor"), lambda m: problem("executor", m))
    store_url = _url(data.get("store"), "store", root, lambda m: problem("store", m))
    artifacts_url = _url(data.get("artifacts"), "artifacts", root, lambda m: problem("artifacts", m))
    server = _server(data.get("server"), lambda m, *sub: problem(("server", *sub), m))
    repos: dict[str, Any] = {}
    if "config_repos" in data and isinstance(node, yaml.MappingNode):
        from .configrepos.settings import parse_config_repos

        value = next(v for k, v in node.value if k.value == "config_repos")
        repos = parse_config_repos(value, display, root, problems)
    if problems:
        raise ConfigError(problems)
    return Settings(path=path, executor=executor, executor_options=options, store_url=store_url,
                    artifacts_url=artifacts_url, server=server, config_repos=repos)


def _key_marks(node: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], tuple[int, int]]:
    """``(line, column)`` of every mapping key, by its path from the top: where a problem is reported."""
    import yaml

    marks: dict[tuple[str, ...], tuple[int, int]] = {}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            path = (*prefix, str(k.value))
            marks[path] = (k.start_mark.line + 1, k.start_mark.column + 1)
            marks.update(_key_marks(v, path))
    return marks


def _server(value: Any, report: Any) -> ServerSettings:
    if value is None:
        return ServerSettings()
    if not isinstance(value, dict):
        report("server must be a mapping (url:, bind:, webhooks:, ...)")
        return ServerSettings()
    for key in value:
        if key not in _SERVER_KEYS:
            report(f"unknown server key {key!r} (known: {', '.join(_SERVER_KEYS)})", str(key))
    url = value.get("url")
    if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
        report("server url must be an http:// or https:// URL", "url")
        url = None
    bind = value.get("bind")
    if bind is not None and (not isinstance(bind, str) or ":" not in bind):
        report("server bind must be HOST:PORT", "bind")
        bind = None
    anonymous = value.get("anonymous_read", False)
    if not isinstance(anonymous, bool):
        report("server anonymous_read must be true or false", "anonymous_read")
        anonymous = False
    proxies = value.get("trusted_proxies") or []
    if isinstance(proxies, str):
        proxies = [proxies]
    if not isinstance(proxies, list) or not all(isinstance(p, str) for p in proxies):
        report("server trusted_proxies must be a list of addresses", "trusted_proxies")
        proxies = []
    secrets: dict[str, str] = {}
    hooks = value.get("webhooks") or {}
    if not isinstance(hooks, dict):
        report("server webhooks must be a mapping of forge to {secret: ...}", "webhooks")
        hooks = {}
    for forge, spec in hooks.items():
        if forge not in FORGES:
            report(f"unknown webhook forge {forge!r} (known: {', '.join(FORGES)})", "webhooks", str(forge))
            continue
        secret = spec.get("secret") if isinstance(spec, dict) else None
        if not isinstance(secret, str) or not secret:
            report(f"webhooks {forge} needs secret: (e.g. \"${{{forge.upper()}_WEBHOOK_SECRET}}\")", "webhooks", forge)
            continue
        secrets[forge] = secret
    max_body = value.get("max_body_bytes", 1_000_000)
    if not isinstance(max_body, int) or isinstance(max_body, bool) or max_body < 1024:
        report("server max_body_bytes must be a whole number of at least 1024", "max_body_bytes")
        max_body = 1_000_000
    return ServerSettings(url=_expand(url, lambda m: report(m, "url")) if url else None, bind=bind,
                          anonymous_read=anonymous, trusted_proxies=tuple(proxies), webhook_secrets=secrets,
                          max_body_bytes=max_body, hub=_hub(value.get("hub"), lambda m, *sub: report(m, "hub", *sub),
                                                            "hub" in value))


def _hub(value: Any, report: Any, present: bool) -> HubSettings:
    """``server.hub``; ``hub: {}`` (or ``hub:`` alone) says "a hub service, all from the environment"."""
    if value is None:
        return HubSettings(configured=present)
    if not isinstance(value, dict):
        report("server hub must be a mapping (api_url:, service_name:, api_token:, ...; or {} for the hub's "
               "environment)")
        return HubSettings()
    for key in value:
        if key not in _HUB_KEYS:
            report(f"unknown server hub key {key!r} (known: {', '.join(_HUB_KEYS)})", str(key))
    out: dict[str, Any] = {}
    for key in ("api_url", "service_name", "api_token", "prefix", "client_id", "oauth_callback_url"):
        v = value.get(key)
        if v is None:
            continue
        if not isinstance(v, str) or not v.strip():
            report(f"server hub {key} must be a non-empty string", key)
            continue
        out[key] = v.strip()
    for key in ("api_url", "oauth_callback_url"):
        v = out.get(key)
        if v is None:
            continue
        v = _expand(v, lambda m, k=key: report(m, k))
        if key == "api_url" and not v.startswith(("http://", "https://")):
            report("server hub api_url must be the hub's API URL, e.g. http://127.0.0.1:8081/hub/api", key)
            out.pop(key)
            continue
        if key == "oauth_callback_url" and not v.startswith(("http://", "https://", "/")):
            report("server hub oauth_callback_url must be a URL or a path (…/oauth_callback)", key)
            out.pop(key)
            continue
        out[key] = v
    if "prefix" in out and not out["prefix"].startswith("/"):
        report("server hub prefix must be a path such as /services/workbench/", "prefix")
        out.pop("prefix")
    if "service_name" in out and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", out["service_name"]):
        report("server hub service_name must be the service's name in jupyterhub_config.py (letters, digits, "
               "-, _, .)", "service_name")
        out.pop("service_name")
    cache = value.get("cache_seconds", 30)
    if not isinstance(cache, int) or isinstance(cache, bool) or cache < 0:
        report("server hub cache_seconds must be a whole number of seconds, 0 or more (0: ask the hub "
               "every time)", "cache_seconds")
        cache = 30
    return HubSettings(configured=True, cache_seconds=cache, **out)


def expand_secret(value: str) -> str:
    """A webhook secret as the server uses it: ``${VAR}`` replaced, or a UsageError naming the variable."""
    from .errors import UsageError

    missing: list[str] = []
    out = _expand(value, missing.append)
    if missing:
        raise UsageError("; ".join(missing))
    return out


def _expand(value: Any, report: Any) -> Any:
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in os.environ:
            report(f"environment variable {name} is not set (used as ${{{name}}})")
            return ""
        return os.environ[name]

    return _VAR.sub(sub, value)


def _executor(value: Any, report: Any) -> tuple[str | None, dict[str, Any]]:
    if value is None:
        return None, {}
    if isinstance(value, str):
        value = {"kind": value.partition("://")[0], "address": value.partition("://")[2] or None}
    if not isinstance(value, dict):
        report("executor must be a mapping (kind:, address:, ...) or a string like dask://tcp://host:8786")
        return None, {}
    options = {str(k): _expand(v, report) for k, v in value.items()}
    kind = options.pop("kind", None)
    if not isinstance(kind, str) or not kind:
        report("executor needs kind: local or dask")
        return None, {}
    address = options.pop("address", None)
    if kind == "dask" and not address:
        report("executor kind dask needs address: tcp://HOST:PORT (or local)")
        return None, {}
    return (f"{kind}://{address}" if address else kind), options


_URL_HELP = {
    "store": "a SQLAlchemy URL (postgresql+psycopg://USER@HOST/DB) or a SQLite file path",
    "artifacts": "an fsspec URL (s3://bucket/path, file:///shared/folder) or a folder path",
}


def _url(value: Any, key: str, root: Path, report: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"url"})
        if unknown:
            report(f"unknown {key} key(s): {', '.join(map(str, unknown))} (known: url)")
        value = value.get("url")
    if not isinstance(value, str) or not value:
        report(f"{key} needs url: {_URL_HELP[key]}")
        return None
    url = _expand(value, report)
    if "://" not in url:  # a local file or folder, relative to the workspace
        url = str((root / url).resolve())
    return url


__all__ = ["FILE_NAME", "FORGES", "ServerSettings", "Settings", "expand_secret", "load_settings"]
