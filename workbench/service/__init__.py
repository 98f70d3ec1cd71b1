"""The application layer: every action and read the CLI, the HTTP API and the dashboards offer, once.

Each function takes a :class:`~workbench.workspace.Workspace`, plain
arguments and, for actions, the acting :class:`~workbench.identity.Identity`,
and returns JSON-ready data (dicts, lists, strings, numbers). The adapters
only translate: ``workbench.cli`` prints it, ``workbench.server`` serialises it,
``workbench.Client`` calls the server and returns the same shapes. Nothing
here knows whether the caller is a terminal or an HTTP request, and nothing in
the adapters decides anything.

Actions that continue a run (approve, trigger, rerun) only create or schedule
it here and return it; who drives it is the adapter's business: the CLI in the
foreground, the server in its scheduler's threads (``Driver``).
"""
from __future__ import annotations

from .reads import (artifact_file, artifacts, audit_rows, board, history, incidents, job_log_chunks, metrics,
                    packages, pending_approvals, run_detail, traffic, validate)
from .acts import (Driver, approve, cancel, incident_open, incident_resolve, mark, reject, rerun, rollback,
                   set_traffic, trigger, unlock)

__all__ = [
    "Driver", "approve", "artifact_file", "artifacts", "audit_rows", "board", "cancel", "history", "incident_open",
    "incident_resolve", "incidents", "job_log_chunks", "mark", "metrics", "packages", "pending_approvals", "reject",
    "rerun", "rollback", "run_detail", "set_traffic", "traffic", "trigger", "unlock", "validate",
]
