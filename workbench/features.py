"""Imports every feature module so that its task kinds, hooks, config sections and
migrations are registered, whichever entry point (CLI, notebook, Dask worker)
loaded the workbench first. Add a line per feature; keep imports light.
"""
from __future__ import annotations

import importlib
import importlib.util

FEATURES = (
    "workbench.materials",  # git and dependency materials, triggering
    "workbench.notebooks",  # notebook tasks, recorded values
    "workbench.artifacts",  # artifacts, fetch, test reports
    "workbench.packages",  # package repositories and promotion
    "workbench.approvals",  # manual approvals, roles, audit
    "workbench.traffic",  # routes, traffic providers, rollback
    "workbench.metrics_store",  # incidents and deployment marks
    "workbench.notifications",  # the notification outbox (exactly-once delivery)
    "workbench.configrepos",  # GoCD config repositories: pipelines from other git repositories
    "workbench.pauses",  # pause / unpause a pipeline (GoCD), its history
    "workbench.compare",  # the config each run was created with; comparing two runs
    "workbench.server.tokens",  # the release service's API tokens (no web framework imported)
    "workbench.server.deliveries",  # webhook deliveries received by the release service (no web framework)
)

_loaded = False


def load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in FEATURES:
        if importlib.util.find_spec(name) is not None:  # a feature not written yet is simply absent
            importlib.import_module(name)
