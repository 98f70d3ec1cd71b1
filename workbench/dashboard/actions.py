"""What a dashboard button does: the application layer's calls, with the same authorization as the CLI.

Approve, reject, rollback and a manual traffic move go through
``workbench.service`` (``approvals.authorize`` inside). When the workspace
names a release service (``server: {url: ...}`` in workbench.yaml, or
``$WORKBENCH_SERVER``) the buttons call its API instead, signed with the
user's ``$JUPYTERHUB_API_TOKEN`` or ``$WORKBENCH_TOKEN``, so the identity is
the one the service proves and the server drives the run. Locally the
dashboard adds only one thing: running an approved run onwards in a
background thread, so the page stays responsive while its stages run.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Callable

from .. import service

_drivers: list[threading.Thread] = []


def server_client(ws: Any) -> Any:
    """A ``workbench.Client`` for the workspace's release service, or None to act locally."""
    url = os.environ.get("WORKBENCH_SERVER") or ws.settings.server.url
    if not url:
        return None
    from ..client import Client

    return Client(url)


def approve(ws: Any, locator: str, *, user: str, comment: str | None, drive: bool = True,
            on_done: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Approve (authorized, audited); locally the run is then driven on in a thread."""
    client = server_client(ws)
    if client is not None:
        with client:
            return client.approve(locator, comment or None)
    run = service.approve(ws, locator, actor=user, comment=comment or None)
    if drive:
        continue_run(ws, run["id"], on_done)
    return run


def reject(ws: Any, locator: str, *, user: str, comment: str | None) -> dict[str, Any]:
    client = server_client(ws)
    if client is not None:
        with client:
            return client.reject(locator, comment)
    return service.reject(ws, locator, actor=user, comment=comment)


def continue_run(ws: Any, run_id: int, on_done: Callable[[Any], None] | None = None) -> threading.Thread:
    """Drive ``run_id`` on until it finishes or waits for a person, off the kernel's main thread."""

    def work() -> None:
        result: Any = None
        try:
            with ws.engine() as engine:
                result = engine.drive(run_id)
        except Exception as exc:  # shown by the dashboard; a failed drive must not kill the kernel
            result = exc
        if on_done is not None:
            on_done(result)

    t = threading.Thread(target=work, name=f"wb-drive-{run_id}", daemon=True)
    _drivers.append(t)
    t.start()
    return t


def wait_for_drivers(timeout: float | None = None) -> None:
    """For tests and shutdown: wait until every run started from here stopped moving."""
    for t in list(_drivers):
        t.join(timeout)
        if not t.is_alive():
            _drivers.remove(t)


def set_weights(ws: Any, route: str, weight: int, *, user: str, reason: str | None = None) -> dict[str, int]:
    """Move ``weight`` % of ``route`` to its candidate stack, authorized like ``workbench traffic --set``."""
    client = server_client(ws)
    if client is not None:
        with client:
            return client.set_traffic(route, weight, reason)["weights"]
    return service.set_traffic(ws, route, weight, actor=user, reason=reason)["weights"]


def rollback(ws: Any, locator: str, *, user: str, reason: str | None) -> list[dict[str, Any]]:
    client = server_client(ws)
    if client is not None:
        with client:
            return client.rollback(locator, reason)["routes"]
    return service.rollback(ws, locator, actor=user, reason=reason)["routes"]


def may_approve(ws: Any, locator: str, user: str) -> bool:
    """Whether ``user`` is among the stage's approvers (display only; the action checks again)."""
    from ..approvals import approvers

    pipeline, _, rest = locator.partition("/")
    stage_name = rest.split("/", 1)[1] if "/" in rest else ""
    try:
        stage = ws.config.pipeline(pipeline).stage(stage_name)
    except Exception:
        return False
    return stage is not None and approvers(ws.config, stage).allows(user)
