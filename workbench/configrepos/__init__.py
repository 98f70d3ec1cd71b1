"""GoCD config repositories: pipelines defined in other git repositories, with last-known-good loading.

* :mod:`.model`: the declared repositories and GoCD's allow/deny rules (pure);
* :mod:`.settings`: ``config_repos:`` of ``workbench.yaml``;
* :mod:`.source`: polling a repository and reading its files from git objects;
* :mod:`.compose`: loading them with the workspace, rules, last good revision;
* :mod:`.state`: the ``config_repos`` table and frame.

Each run of a pipeline from a config repository records the repository's
revision as a material-like revision (kind ``configrepo``): in the run's
revisions, in ``material_revisions`` and so in history, run detail and frames.
"""
from __future__ import annotations

from typing import Any

from . import state  # noqa: F401  (table, migration, frame)
from .model import ConfigRepo, Rule, allowed

KIND = "configrepo"


def run_origin(engine: Any, pipeline_cfg: Any) -> tuple[str, dict[str, Any], Any] | None:
    """For Engine.trigger: the config repository revision a run of ``pipeline_cfg`` comes from, if any."""
    from .compose import ORIGINS

    origin = (engine.ws.config.extensions.get(ORIGINS) or {}).get(pipeline_cfg.name)
    if not origin:
        return None
    name = f"config-repo:{origin['repo']}"
    rev = {"kind": KIND, "revision": origin["revision"], "repo": origin["repo"], "url": origin["url"],
           "branch": origin["branch"]}

    def record(conn: Any, run_id: int) -> None:
        from ..materials import tables as T
        from ..materials.git import fingerprint

        conn.execute(T.material_revisions.insert(), dict(
            pipeline_run_id=run_id, material=name, kind=KIND,
            fingerprint="configrepo:" + fingerprint(origin["url"], origin["branch"]), revision=origin["revision"],
            changed=False, url=origin["url"], branch=origin["branch"]))

    return name, rev, record


def _register() -> None:
    from ..engine import register_run_origin

    register_run_origin(run_origin)


_register()

__all__ = ["KIND", "ConfigRepo", "Rule", "allowed", "run_origin"]
