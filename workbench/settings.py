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
_TOP_KEYS = ("executor", "store", "artifacts")


@dataclass(frozen=True)
class Settings:
    """What ``workbench.yaml`` says; all None when there is no file."""

    path: Path | None = None
    executor: str | None = None  # "local", "dask://local", "dask://tcp://host:8786"
    executor_options: Mapping[str, Any] = field(default_factory=dict)
    store_url: str | None = None
    artifacts_url: str | None = None

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
    marks = {}
    if isinstance(node, yaml.MappingNode):
        marks = {k.value: (k.start_mark.line + 1, k.start_mark.column + 1) for k, _ in node.value}
    problems: list[Problem] = []

    def problem(key: str, message: str) -> None:
        line, col = marks.get(key, (1, 1))
        problems.append(Problem(display, line, col, message))

    for key in data:
        if key not in _TOP_KEYS:
            problem(str(key), f"unknown key {key!r} (known: {', '.join(_TOP_KEYS)})")
    executor, options = _executor(data.get("executor"), lambda m: problem("executor", m))
    store_url = _url(data.get("store"), "store", root, lambda m: problem("store", m))
    artifacts_url = _url(data.get("artifacts"), "artifacts", root, lambda m: problem("artifacts", m))
    if problems:
        raise ConfigError(problems)
    return Settings(path=path, executor=executor, executor_options=options, store_url=store_url,
                    artifacts_url=artifacts_url)


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


__all__ = ["FILE_NAME", "Settings", "load_settings"]
