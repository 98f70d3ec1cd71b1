"""``workbench.Client``: the release service from Python, with the methods of the local API.

``Client(url, token=None)`` has exactly the methods of
:class:`workbench.service.local.Local` and returns the same shapes, frames as
DataFrames, so a notebook can switch between a local workspace and the team's
server by changing one line. The token is, in order: the argument,
``$WORKBENCH_TOKEN``, and inside JupyterHub the user's ``$JUPYTERHUB_API_TOKEN``
(the hub then vouches for who is calling; ``$JUPYTERHUB_USER`` is never sent
and never believed). Errors come back as the workbench's own exception classes.
"""
from __future__ import annotations

import os
from typing import Any, Iterator, Mapping
from urllib.parse import quote

from . import errors as E

_BY_KIND = {
    "config": E.UsageError, "bad_request": E.UsageError, "not_found": E.NotFound, "conflict": E.InvalidState,
    "not_signed_in": E.NotSignedIn, "forbidden": E.Unauthorized, "store_unavailable": E.StoreError,
    "traffic_failed": E.TrafficError, "material_failed": E.MaterialError, "artifact_failed": E.ArtifactError,
    "execution_failed": E.ExecutionError, "secret": E.SecretError,
}


def default_token() -> str | None:
    return os.environ.get("WORKBENCH_TOKEN") or os.environ.get("JUPYTERHUB_API_TOKEN") or None


def _q(part: str) -> str:
    return quote(str(part), safe="")


def _loc(locator: str) -> str:
    return "/".join(_q(p) for p in locator.strip("/").split("/"))


class Client:
    """The HTTP API of ``workbench server`` at ``url``."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.token = token or default_token()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = httpx.Client(base_url=f"{self.url}/api/v1", headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # -- transport -------------------------------------------------------------
    def _raise(self, response: Any) -> None:
        try:
            body = response.json()
        except ValueError:
            body = {"error": "error", "detail": response.text[:500]}
        detail = body.get("detail") if isinstance(body, dict) else str(body)
        kind = body.get("error") if isinstance(body, dict) else "error"
        cls = _BY_KIND.get(kind, E.WorkbenchError)
        raise cls(f"{detail} (HTTP {response.status_code} from {self.url})")

    def _call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None) -> Any:
        import httpx

        try:
            r = self._http.request(method, path, params={k: v for k, v in (params or {}).items() if v is not None},
                                   json=json)
        except httpx.HTTPError as exc:
            raise E.StoreError(f"the release service at {self.url} does not answer: {exc}") from None
        if r.status_code >= 400:
            self._raise(r)
        return r.json()

    def _stream(self, path: str, params: Mapping[str, Any] | None = None) -> tuple[Any, Iterator[bytes]]:
        import httpx

        try:
            ctx = self._http.stream("GET", path, params={k: v for k, v in (params or {}).items() if v is not None},
                                    timeout=httpx.Timeout(30.0, read=None))
            r = ctx.__enter__()
        except httpx.HTTPError as exc:
            raise E.StoreError(f"the release service at {self.url} does not answer: {exc}") from None
        if r.status_code >= 400:
            r.read()
            ctx.__exit__(None, None, None)
            self._raise(r)

        def chunks() -> Iterator[bytes]:
            try:
                yield from r.iter_bytes()
            finally:
                ctx.__exit__(None, None, None)

        return r, chunks()

    # -- reads (as Local) --------------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        return self._call("GET", "/whoami")

    def board(self) -> list[dict[str, Any]]:
        return self._call("GET", "/status")

    def config_repos(self) -> list[dict[str, Any]]:
        return self._call("GET", "/config-repos")

    def history(self, pipeline: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        return self._call("GET", "/history", params={"pipeline": pipeline, "limit": limit})

    def run(self, locator: str) -> dict[str, Any]:
        pipeline, _, counter = locator.strip("/").partition("/")
        return self._call("GET", f"/runs/{_q(pipeline)}/{_q(counter or 'latest')}")

    def compare(self, a: str, b: str) -> dict[str, Any]:
        return self._call("GET", "/compare", params={"a": a, "b": b})

    def log(self, locator: str, follow: bool = False) -> Iterator[bytes]:
        return self._stream(f"/logs/{_loc(locator)}", {"follow": "true" if follow else None})[1]

    def approvals(self) -> list[dict[str, Any]]:
        return self._call("GET", "/approvals")

    def traffic(self, route: str | None = None) -> dict[str, Any]:
        return self._call("GET", "/traffic", params={"route": route})

    def artifacts(self, locator: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/artifacts/{_loc(locator)}")

    def artifact(self, locator: str, path: str) -> tuple[dict[str, Any], Iterator[bytes]]:
        rows = [r for r in self.artifacts(locator) if r["path"] == path]
        response, chunks = self._stream(f"/artifact/{_loc(locator)}", {"path": path})
        row = rows[-1] if rows else {"path": path}
        return {**row, "sha256": response.headers.get("x-checksum-sha256", row.get("sha256"))}, chunks

    def packages(self, name: str | None = None, repos: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        return self._call("GET", "/packages", params={"name": name, "repo": list(repos) or None})

    def metrics(self, since: str | None = None, until: str | None = None, by: str | None = None,
                tz: str = "UTC") -> dict[str, Any]:
        return self._call("GET", "/metrics", params={"since": since, "until": until, "by": by, "tz": tz})

    def incidents(self, open_only: bool = False) -> list[dict[str, Any]]:
        return self._call("GET", "/incidents", params={"open": "true" if open_only else None})

    def audit(self, limit: int = 50) -> list[dict[str, Any]]:
        return self._call("GET", "/audit", params={"limit": limit})

    def validate(self) -> dict[str, Any]:
        return self._call("GET", "/validate")

    def notifications(self, state: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        return self._call("GET", "/notifications", params={"state": state, "limit": limit})

    def retry_notifications(self, ids: tuple[int, ...] = ()) -> dict[str, Any]:
        return self._call("POST", "/notifications/retry", json={"ids": list(ids)})

    def frame(self, name: str) -> Any:
        """A frame as a DataFrame with the server's dtypes (datetimes tz-aware UTC, categoricals, ...)."""
        import pandas as pd

        import numpy as np

        out = self._call("GET", f"/frames/{_q(name)}")
        df = pd.DataFrame(out["data"], columns=out["columns"])
        for i, (col, dtype) in enumerate(out.get("dtypes", {}).items()):
            try:
                if dtype.startswith(("datetime64", "timedelta64")):
                    # integers of nanoseconds (service.frames), read exactly: through floats they would round
                    ns = np.array([np.iinfo(np.int64).min if row[i] is None else int(row[i]) for row in out["data"]],
                                  dtype="int64")
                    values = pd.Series(ns.view("M8[ns]" if dtype.startswith("datetime64") else "m8[ns]"),
                                       index=df.index)
                    if "," in dtype:  # tz-aware (UTC in every frame)
                        values = values.dt.tz_localize("UTC")
                    df[col] = values.astype(dtype)
                elif dtype in ("object", "str"):
                    continue
                else:
                    df[col] = df[col].astype(dtype)
            except (ValueError, TypeError):
                continue
        return df

    # -- actions (as Local) --------------------------------------------------------
    def approve(self, locator: str, comment: str | None = None) -> dict[str, Any]:
        return self._call("POST", f"/approvals/{_loc(locator)}/approve", json={"comment": comment})

    def reject(self, locator: str, comment: str | None) -> dict[str, Any]:
        return self._call("POST", f"/approvals/{_loc(locator)}/reject", json={"comment": comment})

    def trigger(self, pipeline: str, revisions: Mapping[str, str] | None = None) -> dict[str, Any]:
        return self._call("POST", f"/pipelines/{_q(pipeline)}/trigger", json={"revisions": dict(revisions or {})})

    def rerun(self, locator: str, failed_jobs: bool = False) -> dict[str, Any]:
        p, c, stage = (locator.strip("/").split("/") + ["", "", ""])[:3]
        return self._call("POST", f"/runs/{_q(p)}/{_q(c)}/stages/{_q(stage)}/rerun", json={"failed_jobs": failed_jobs})

    def cancel(self, locator: str) -> dict[str, Any]:
        p, _, c = locator.strip("/").partition("/")
        return self._call("POST", f"/runs/{_q(p)}/{_q(c or 'latest')}/cancel")

    def unlock(self, pipeline: str) -> dict[str, Any]:
        return self._call("POST", f"/pipelines/{_q(pipeline)}/unlock")

    def pause(self, pipeline: str, reason: str | None = None) -> dict[str, Any]:
        return self._call("POST", f"/pipelines/{_q(pipeline)}/pause", json={"reason": reason})

    def unpause(self, pipeline: str) -> dict[str, Any]:
        return self._call("POST", f"/pipelines/{_q(pipeline)}/unpause")

    def set_traffic(self, route: str, weight: int, reason: str | None = None) -> dict[str, Any]:
        return self._call("POST", f"/traffic/{_q(route)}", json={"weight": weight, "reason": reason})

    def rollback(self, locator: str, reason: str | None = None) -> dict[str, Any]:
        p, _, c = locator.strip("/").partition("/")
        return self._call("POST", f"/runs/{_q(p)}/{_q(c or 'latest')}/rollback", json={"reason": reason})

    def incident_open(self, title: str, caused_by: str | None = None, severity: str = "major",
                      opened_at: str | None = None, note: str | None = None) -> dict[str, Any]:
        return self._call("POST", "/incidents", json={"title": title, "caused_by": caused_by, "severity": severity,
                                                      "opened_at": opened_at, "note": note})

    def incident_resolve(self, incident_id: int, resolved_at: str | None = None,
                         note: str | None = None) -> dict[str, Any]:
        return self._call("POST", f"/incidents/{int(incident_id)}/resolve",
                          json={"resolved_at": resolved_at, "note": note})

    def mark(self, locator: str, kind: str, incident: int | None = None, note: str | None = None) -> dict[str, Any]:
        p, _, c = locator.strip("/").partition("/")
        return self._call("POST", f"/runs/{_q(p)}/{_q(c)}/mark", json={"mark": kind, "incident": incident, "note": note})

    def notify(self, what: str | None = None) -> dict[str, Any]:
        """`workbench notify` through the server (a git hook on another machine)."""
        return self._call("POST", "/notify", json={"what": what})
