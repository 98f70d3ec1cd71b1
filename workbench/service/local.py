"""``Local``: the application layer bound to one workspace and one acting identity.

It has exactly the methods of :class:`workbench.client.Client` (the same names,
arguments and return shapes), so the CLI, a notebook or a dashboard can hold
either and not care whether the workspace is here or behind the release
service. ``tests/test_server_api.py`` checks the two stay the same.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

from ..identity import Identity, as_identity
from . import acts, reads


class Local:
    """The workspace here; actions act as ``actor`` (default: the asserted local identity)."""

    def __init__(self, ws: Any, actor: Identity | str | None = None, driver: acts.Driver | None = None) -> None:
        self.ws = ws
        self.actor = as_identity(actor)
        self.driver = driver

    # -- reads ---------------------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        a = self.actor
        return {"user": a.user, "groups": sorted(a.groups), "via": a.via, "scope": a.scope}

    def board(self) -> list[dict[str, Any]]:
        return reads.board(self.ws)

    def history(self, pipeline: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        return reads.history(self.ws, pipeline, limit)

    def config_repos(self) -> list[dict[str, Any]]:
        return reads.config_repos(self.ws)

    def run(self, locator: str) -> dict[str, Any]:
        return reads.run_detail(self.ws, locator)

    def compare(self, a: str, b: str) -> dict[str, Any]:
        """Two runs side by side (``workbench compare``); ``workbench.compare.as_frame`` makes it a DataFrame."""
        return reads.compare(self.ws, a, b)

    def log(self, locator: str, follow: bool = False) -> Iterator[bytes]:
        return reads.job_log_chunks(self.ws, locator, follow=follow)

    def approvals(self) -> list[dict[str, Any]]:
        return reads.pending_approvals(self.ws)

    def traffic(self, route: str | None = None) -> dict[str, Any]:
        return reads.traffic(self.ws, route)

    def artifacts(self, locator: str) -> list[dict[str, Any]]:
        return reads.artifacts(self.ws, locator)

    def artifact(self, locator: str, path: str) -> tuple[dict[str, Any], Iterator[bytes]]:
        return reads.artifact_file(self.ws, locator, path)

    def packages(self, name: str | None = None, repos: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        return reads.packages(self.ws, name, tuple(repos))

    def metrics(self, since: str | None = None, until: str | None = None, by: str | None = None,
                tz: str = "UTC") -> dict[str, Any]:
        return reads.metrics(self.ws, since=since, until=until, by=by, tz=tz)

    def incidents(self, open_only: bool = False) -> list[dict[str, Any]]:
        return reads.incidents(self.ws, open_only=open_only)

    def audit(self, limit: int = 50) -> list[dict[str, Any]]:
        return reads.audit_rows(self.ws, limit)

    def validate(self) -> dict[str, Any]:
        return reads.validate(self.ws)

    def notifications(self, state: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        return reads.notifications(self.ws, state, limit)

    def frame(self, name: str) -> Any:
        """One of ``ws.frames`` (``pipeline_runs``, ``stage_runs``, ``audit``, ...) as a DataFrame."""
        from .frames import frame

        return frame(self.ws, name)

    # -- actions -------------------------------------------------------------
    def approve(self, locator: str, comment: str | None = None) -> dict[str, Any]:
        return acts.approve(self.ws, locator, actor=self.actor, comment=comment, driver=self.driver)

    def reject(self, locator: str, comment: str | None) -> dict[str, Any]:
        return acts.reject(self.ws, locator, actor=self.actor, comment=comment)

    def trigger(self, pipeline: str, revisions: Mapping[str, str] | None = None) -> dict[str, Any]:
        return acts.trigger(self.ws, pipeline, actor=self.actor, revisions=revisions, driver=self.driver)

    def rerun(self, locator: str, failed_jobs: bool = False) -> dict[str, Any]:
        return acts.rerun(self.ws, locator, actor=self.actor, failed_jobs=failed_jobs, driver=self.driver)

    def cancel(self, locator: str) -> dict[str, Any]:
        return acts.cancel(self.ws, locator, actor=self.actor, on_driver=getattr(self.driver, "cancel_run", None))

    def unlock(self, pipeline: str) -> dict[str, Any]:
        return acts.unlock(self.ws, pipeline, actor=self.actor)

    def pause(self, pipeline: str, reason: str | None = None) -> dict[str, Any]:
        return acts.pause(self.ws, pipeline, reason, actor=self.actor)

    def unpause(self, pipeline: str) -> dict[str, Any]:
        return acts.unpause(self.ws, pipeline, actor=self.actor)

    def set_traffic(self, route: str, weight: int, reason: str | None = None) -> dict[str, Any]:
        return acts.set_traffic(self.ws, route, weight, actor=self.actor, reason=reason)

    def rollback(self, locator: str, reason: str | None = None) -> dict[str, Any]:
        return acts.rollback(self.ws, locator, actor=self.actor, reason=reason)

    def incident_open(self, title: str, caused_by: str | None = None, severity: str = "major",
                      opened_at: str | None = None, note: str | None = None) -> dict[str, Any]:
        return acts.incident_open(self.ws, title, actor=self.actor, caused_by=caused_by, severity=severity,
                                  opened_at=opened_at, note=note)

    def incident_resolve(self, incident_id: int, resolved_at: str | None = None,
                         note: str | None = None) -> dict[str, Any]:
        return acts.incident_resolve(self.ws, incident_id, actor=self.actor, resolved_at=resolved_at, note=note)

    def notify(self, what: str | None = None) -> dict[str, Any]:
        """``workbench notify``: the scheduler of this process (the server's) polls now; else the running
        serve/server is told, else a scheduling pass runs here."""
        from ..triggering import material_keys, notify

        keys = material_keys(self.ws, what)
        out: dict[str, Any] = {"polling": keys if keys is not None else "all"}
        force = getattr(self.driver, "force", None)
        if force is not None:
            force(keys)
            return out
        result = notify(self.ws, what)
        if not isinstance(result, str):
            out["report"] = result.as_dict()
        return out

    def retry_notifications(self, ids: tuple[int, ...] = ()) -> dict[str, Any]:
        return acts.retry_notifications(self.ws, tuple(ids), actor=self.actor)

    def mark(self, locator: str, kind: str, incident: int | None = None, note: str | None = None) -> dict[str, Any]:
        return acts.mark(self.ws, locator, kind, actor=self.actor, incident=incident, note=note)
