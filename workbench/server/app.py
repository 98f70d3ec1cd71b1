"""The HTTP API under ``/api/v1/``: FastAPI adapters over ``workbench.service``.

Each endpoint establishes the caller (``workbench.server.auth``), calls one
function of the application layer and returns its data; errors are the
workbench's own classes, turned into ``{"error": kind, "detail": message}``
with the status each class declares (``workbench.errors``). No endpoint
decides anything itself.

Why FastAPI: the OpenAPI description and the rendered docs come from the
code (``/api/v1/openapi.json``, ``/api/v1/docs``), and pydantic checks every
body at the boundary, so malformed input is a 400 before any workbench code
runs. JupyterHub's sign-in is its ``HubOAuth`` class used as a library
(``workbench.server.hub``), not its tornado mixins.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Iterator

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..approvals import record
from ..errors import ConfigError, NotSignedIn, Unauthorized, WorkbenchError
from ..identity import Identity
from ..service.local import Local
from . import tokens
from .auth import Authenticator, bearer
from .encoding import Encoded
from .fastreads import FastReads
from .limits import BodyLimit

log = logging.getLogger("workbench.server")
API = "/api/v1"


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Decision(Body):
    comment: str | None = Field(default=None, max_length=10_000)


class RetryBody(Body):
    ids: list[int] = Field(default_factory=list, max_length=10_000)


class PauseBody(Body):
    reason: str | None = Field(default=None, max_length=10_000)


class TriggerBody(Body):
    revisions: dict[str, str] = Field(default_factory=dict)


class RerunBody(Body):
    failed_jobs: bool = False


class TrafficBody(Body):
    weight: int = Field(ge=0, le=100)
    reason: str | None = Field(default=None, max_length=10_000)


class ReasonBody(Body):
    reason: str | None = Field(default=None, max_length=10_000)


class IncidentBody(Body):
    title: str = Field(min_length=1, max_length=1000)
    caused_by: str | None = Field(default=None, max_length=600)
    severity: str = "major"
    opened_at: str | None = Field(default=None, max_length=64)
    note: str | None = Field(default=None, max_length=10_000)


class ResolveBody(Body):
    resolved_at: str | None = Field(default=None, max_length=64)
    note: str | None = Field(default=None, max_length=10_000)


class MarkBody(Body):
    mark: str
    incident: int | None = None
    note: str | None = Field(default=None, max_length=10_000)


class NotifyBody(Body):
    what: str | None = Field(default=None, max_length=2000)


def error_body(exc: WorkbenchError) -> dict[str, Any]:
    body: dict[str, Any] = {"error": exc.kind, "detail": str(exc)}
    if isinstance(exc, ConfigError):
        body["problems"] = [str(p) for p in exc.problems]
    return body


class State:
    """What the endpoints share: the workspace, the authenticator and the scheduler that drives runs."""

    def __init__(self, ws: Any, auth: Authenticator, scheduler: Any = None, hooks: Any = None,
                 prefix: str = "") -> None:
        self.ws = ws
        self.prefix = prefix  # where the hub proxies to us: extra routers mount under it too
        self.auth = auth
        self.scheduler = scheduler
        self.hooks = hooks  # the webhook receiver (workbench.server.webhooks), when loaded
        self.encoded: dict[int, Encoded] = {}  # see encoded_of()
        self.lock = threading.Lock()

    def encoded_of(self, value: Any) -> Encoded:
        """The JSON of a read with its gzip copy and ETag (``workbench.server.encoding``). The board, history
        and approvals are cached objects (workbench.service.cache), so their encoding is kept with them: a
        thousand rows are encoded once per store change, not per request."""
        key = id(value)
        hit = self.encoded.get(key)
        if hit is None or hit.value is not value:
            hit = Encoded.of(value)
            with self.lock:
                self.encoded[key] = hit
                while len(self.encoded) > 16:
                    self.encoded.pop(next(iter(self.encoded)))
        return hit


def create_app(ws: Any, *, auth: Authenticator | None = None, scheduler: Any = None, prefix: str = "",
               extra_routers: tuple[Callable[[FastAPI, State], None], ...] = ()) -> FastAPI:
    """The API for ``ws``. ``prefix`` is the path the hub proxies to us (``/services/workbench``)."""
    prefix = prefix.rstrip("/")
    settings = ws.settings.server
    auth = auth or Authenticator(ws.store, trusted_proxies=settings.trusted_proxies,
                                 anonymous_read=settings.anonymous_read)
    state = State(ws, auth, scheduler, prefix=prefix)
    app = FastAPI(title="Release Workbench", version="1", openapi_url=f"{prefix}{API}/openapi.json",
                  docs_url=f"{prefix}{API}/docs", redoc_url=None,
                  description="The release service: the same actions as the `workbench` CLI, signed in.",
                  # FastAPI's own OpenTelemetry hooks look for a configured provider on every request (~10% of a
                  # cached read's time under load); the workbench configures none (older FastAPIs ignore this)
                  telemetry={"tracing": False, "metrics": False, "logs": False})
    app.router.redirect_slashes = False  # a wrong path is a 404, not a redirect to another endpoint
    app.state.wb = state
    P = prefix + API
    hook_paths = (f"{P}/webhooks/", f"{prefix}/go/api/webhooks/")
    # every body within server.max_body_bytes (413 otherwise); the webhook receiver applies the same limit
    # itself, recording the refusal as a delivery
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes,
                       self_limited=lambda path: state.hooks is not None and path.startswith(hook_paths))
    # outside the body limit and FastAPI's routing (added last, so it runs first): a fresh cached board,
    # approvals or history for a caller signed in with one of our tokens is answered here (workbench.server.fastreads)
    app.add_middleware(FastReads, state=state, api=P)

    @app.exception_handler(WorkbenchError)
    async def _workbench_error(request: Request, exc: WorkbenchError) -> JSONResponse:
        return JSONResponse(error_body(exc), status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
        return JSONResponse({"error": "bad_request", "detail": "; ".join(problems)}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status_code, "error")
        return JSONResponse({"error": kind, "detail": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error on %s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return JSONResponse({"error": "internal", "detail": "the server failed on this request; see its log"},
                            status_code=500)

    # -- who is calling ---------------------------------------------------------
    def _identify(request: Request) -> Identity | None:
        client = request.client.host if request.client else None
        who, by_cookie = auth.identify(request.headers, request.cookies, client)
        if who is not None and by_cookie:
            auth.check_csrf(request.method, request.headers, request.cookies, request.headers.get("host"))
        return who

    def reader(request: Request) -> Identity | None:
        who = _identify(request)
        if who is None and not auth.anonymous_read:
            raise NotSignedIn("sign in through JupyterHub or send Authorization: Bearer TOKEN "
                              "(`workbench token create`)")
        return who

    async def fast_reader(request: Request) -> Identity | None:
        """``reader`` from the event loop for one of our API tokens (verified ones are cached: microseconds, one
        SQLite read otherwise); anything else (hub cookies and tokens ask the hub over HTTP) in a worker thread."""
        token = bearer(request.headers)
        if token is not None and tokens.looks_like_ours(token):
            return reader(request)
        return await run_in_threadpool(reader, request)

    def acting(action: str) -> Callable[[Request], Identity]:
        def dependency(request: Request) -> Identity:
            try:
                who = _identify(request)
                if who is None:
                    raise NotSignedIn("anonymous calls may not act: sign in or send Authorization: Bearer TOKEN")
            except (NotSignedIn, Unauthorized) as exc:  # Unauthorized: a hub token refused the service
                claimed = {h: request.headers[h] for h in ("x-forwarded-user", "x-remote-user", "x-jupyterhub-user")
                           if h in request.headers}
                detail = f"{exc}" + (f"; claimed {claimed}" if claimed else "")
                user = getattr(exc, "user", None) or "(not signed in)"
                target, parts = _target(request)
                record(ws, user, action, target, "unauthorized", detail=detail, **parts)
                raise
            return who
        return dependency

    def _target(request: Request) -> tuple[str, dict[str, Any]]:
        """What an action named, as the audit of a signed-in attempt would (``P/C/S``, ``P/C``, ``P``, ``route:R``)."""
        params = {k: str(v)[:255] for k, v in request.path_params.items()}
        if "route" in params:
            return f"route:{params['route']}"[:500], {}
        if "pipeline" in params:
            counter = params.get("counter")
            parts = {"pipeline": params["pipeline"], "stage": params.get("stage"),
                     "counter": int(counter) if counter and counter.isdigit() and len(counter) < 10 else None}
            target = "/".join(p for p in (params["pipeline"], counter, params.get("stage")) if p)
            return target[:500], parts
        return request.url.path.removeprefix(P)[:500], {}

    def encoded(value: Any, request: Request) -> Response:
        """JSON of a read, encoded once per cached object, gzip or 304 as the request allows (``State.encoded_of``)."""
        status, body, headers = state.encoded_of(value).answer(request.headers.get("accept-encoding"),
                                                                request.headers.get("if-none-match"))
        response = Response(body, status_code=status)
        response.raw_headers = headers
        return response

    def local(who: Identity | None) -> Local:
        return Local(ws, who or Identity("(anonymous)", via="anonymous", scope="read"), driver=scheduler)

    # -- reads ---------------------------------------------------------------------
    @app.get(f"{P}/health", tags=["service"])
    def health() -> dict[str, Any]:
        """Liveness: answers without signing in and says nothing about the workspace."""
        return {"ok": True}

    @app.get(f"{P}/whoami", tags=["service"])
    def whoami(who: Identity | None = Depends(reader)) -> dict[str, Any]:
        return local(who).whoami()

    rows = list[dict[str, Any]]

    @app.get(f"{P}/config-repos", tags=["runs"])
    def config_repos(who: Identity | None = Depends(reader)) -> list[dict[str, Any]]:
        """Config repositories: the revision each runs from, the latest, and why that one was refused."""
        return local(who).config_repos()

    # The three reads a team polls are answered from the event loop when a fresh answer is kept (microseconds,
    # workbench.service.cache) and go to a worker thread only to compute: fifty clients polling the board
    # otherwise queue twice per request for the thread pool (benchmarks/README.md, issue 14).
    async def polled(request: Request, name: str, compute: Callable[[], Any], *args: Any) -> Response:
        from ..service.reads import cached_read

        value = cached_read(ws, name, *args)
        if value is None:
            value = await run_in_threadpool(compute)
        return encoded(value, request)

    @app.get(f"{P}/status", tags=["runs"], response_model=rows)
    async def status(request: Request, who: Identity | None = Depends(fast_reader)) -> Response:
        """The board: the latest run of every pipeline, stage by stage (`workbench status`)."""
        return await polled(request, "board", lambda: local(who).board())

    @app.get(f"{P}/history", tags=["runs"], response_model=rows)
    async def history(request: Request, pipeline: str | None = None, limit: int = 50,
                      who: Identity | None = Depends(fast_reader)) -> Response:
        if limit < 1:
            return await run_in_threadpool(lambda: local(who).history(pipeline, limit))  # its UsageError
        return await polled(request, "history", lambda: local(who).history(pipeline, limit), pipeline, limit)

    @app.get(f"{P}/runs/{{pipeline}}/{{counter}}", tags=["runs"])
    def run_detail(pipeline: str, counter: str, who: Identity | None = Depends(reader)) -> dict[str, Any]:
        return local(who).run(f"{pipeline}/{counter}")

    @app.get(f"{P}/compare", tags=["runs"])
    def compare(a: str, b: str, who: Identity | None = Depends(reader)) -> dict[str, Any]:
        """Two runs side by side (`?a=P/C1&b=P/C2`, a counter, label or `latest`): commits, config, stages,
        jobs, artifacts and packages that differ (`workbench compare`)."""
        return local(who).compare(a, b)

    @app.get(f"{P}/logs/{{locator:path}}", tags=["runs"])
    def logs(locator: str, follow: bool = False, who: Identity | None = Depends(reader)) -> StreamingResponse:
        """A job's log (`P/C/STAGE[/STAGE_COUNTER]/JOB`); `?follow=true` streams until the job finishes."""
        chunks = local(who).log(locator, follow=follow)
        first = next(chunks, b"")  # errors (unknown job, no log yet) before the 200 is sent

        def body() -> Iterator[bytes]:
            yield first
            yield from chunks

        return StreamingResponse(body(), media_type="text/plain; charset=utf-8")

    @app.get(f"{P}/approvals", tags=["approvals"], response_model=rows)
    async def approvals(request: Request, who: Identity | None = Depends(fast_reader)) -> Response:
        return await polled(request, "approvals", lambda: local(who).approvals())

    @app.get(f"{P}/traffic", tags=["traffic"])
    def traffic(route: str | None = None, who: Identity | None = Depends(reader)) -> dict[str, Any]:
        return local(who).traffic(route)

    @app.get(f"{P}/artifacts/{{locator:path}}", tags=["artifacts"])
    def artifacts(locator: str, who: Identity | None = Depends(reader)) -> list[dict[str, Any]]:
        return local(who).artifacts(locator)

    @app.get(f"{P}/artifact/{{pipeline}}/{{counter}}/{{stage}}/{{job}}", tags=["artifacts"])
    def artifact(pipeline: str, counter: str, stage: str, job: str, path: str,
                 who: Identity | None = Depends(reader)) -> StreamingResponse:
        """One artifact's bytes; its SHA-256 is in `X-Checksum-Sha256` (as recorded when it was stored)."""
        row, chunks = local(who).artifact(f"{pipeline}/{counter}/{stage}/{job}", path)
        name = path.rsplit("/", 1)[-1].replace('"', "")
        return StreamingResponse(chunks, media_type="application/octet-stream",
                                 headers={"X-Checksum-Sha256": row["sha256"], "Content-Length": str(row["size"]),
                                          "Content-Disposition": f'attachment; filename="{name}"'})

    @app.get(f"{P}/packages", tags=["artifacts"])
    def packages(name: str | None = None, repo: list[str] | None = None,
                 who: Identity | None = Depends(reader)) -> list[dict[str, Any]]:
        return local(who).packages(name, tuple(repo or ()))

    @app.get(f"{P}/metrics", tags=["metrics"])
    def metrics(since: str | None = None, until: str | None = None, by: str | None = None, tz: str = "UTC",
                who: Identity | None = Depends(reader)) -> dict[str, Any]:
        return local(who).metrics(since, until, by, tz)

    @app.get(f"{P}/incidents", tags=["metrics"])
    def incidents(open: bool = False, who: Identity | None = Depends(reader)) -> list[dict[str, Any]]:
        return local(who).incidents(open)

    @app.get(f"{P}/audit", tags=["approvals"])
    def audit(limit: int = 50, who: Identity | None = Depends(reader)) -> list[dict[str, Any]]:
        return local(who).audit(limit)

    @app.get(f"{P}/notifications", tags=["notifications"])
    def notifications(state: str | None = None, limit: int = 50,
                      who: Identity | None = Depends(reader)) -> list[dict[str, Any]]:
        """The notification outbox, newest first (`workbench notifications list`)."""
        return local(who).notifications(state, limit)

    @app.post(f"{P}/notifications/retry", tags=["notifications"])
    def retry_notifications(body: RetryBody | None = None,
                            who: Identity = Depends(acting("notification"))) -> dict[str, Any]:
        """Failed and given-up notifications (all, or `ids`) go out again with the next sender pass."""
        return local(who).retry_notifications(tuple((body or RetryBody()).ids))

    @app.get(f"{P}/validate", tags=["service"])
    def validate(who: Identity | None = Depends(reader)) -> dict[str, Any]:
        return local(who).validate()

    @app.get(f"{P}/frames", tags=["frames"])
    def frames(who: Identity | None = Depends(reader)) -> list[str]:
        from ..service.frames import names

        return names(ws)

    @app.get(f"{P}/frames/{{name}}", tags=["frames"])
    def frame(name: str, who: Identity | None = Depends(reader)) -> dict[str, Any]:
        """A frame in pandas' split form (`columns`, `data`) with its `dtypes`; `workbench.Client.frame` rebuilds it."""
        from ..service.frames import frame_records

        return frame_records(ws, name)

    # -- actions -------------------------------------------------------------------
    @app.post(f"{P}/approvals/{{pipeline}}/{{counter}}/{{stage}}/approve", tags=["approvals"])
    def approve(pipeline: str, counter: str, stage: str, body: Decision | None = None,
                who: Identity = Depends(acting("approve"))) -> dict[str, Any]:
        """Approve a waiting stage as the signed-in person; the server continues the run at once."""
        return local(who).approve(f"{pipeline}/{counter}/{stage}", (body or Decision()).comment)

    @app.post(f"{P}/approvals/{{pipeline}}/{{counter}}/{{stage}}/reject", tags=["approvals"])
    def reject(pipeline: str, counter: str, stage: str, body: Decision | None = None,
               who: Identity = Depends(acting("reject"))) -> dict[str, Any]:
        """Reject a waiting stage with a comment (required): the run ends rejected."""
        return local(who).reject(f"{pipeline}/{counter}/{stage}", (body or Decision()).comment)

    @app.post(f"{P}/pipelines/{{pipeline}}/trigger", tags=["runs"])
    def trigger(pipeline: str, body: TriggerBody | None = None,
                who: Identity = Depends(acting("trigger"))) -> dict[str, Any]:
        return local(who).trigger(pipeline, (body or TriggerBody()).revisions)

    @app.post(f"{P}/runs/{{pipeline}}/{{counter}}/stages/{{stage}}/rerun", tags=["runs"])
    def rerun(pipeline: str, counter: str, stage: str, body: RerunBody | None = None,
              who: Identity = Depends(acting("rerun"))) -> dict[str, Any]:
        return local(who).rerun(f"{pipeline}/{counter}/{stage}", (body or RerunBody()).failed_jobs)

    @app.post(f"{P}/runs/{{pipeline}}/{{counter}}/cancel", tags=["runs"])
    def cancel(pipeline: str, counter: str, who: Identity = Depends(acting("cancel"))) -> dict[str, Any]:
        return local(who).cancel(f"{pipeline}/{counter}")

    @app.post(f"{P}/pipelines/{{pipeline}}/unlock", tags=["runs"])
    def unlock(pipeline: str, who: Identity = Depends(acting("unlock"))) -> dict[str, Any]:
        return local(who).unlock(pipeline)

    @app.post(f"{P}/pipelines/{{pipeline}}/pause", tags=["runs"])
    def pause(pipeline: str, body: PauseBody | None = None, who: Identity = Depends(acting("pause"))) -> dict[str, Any]:
        """GoCD's pause: no trigger, automatic or manual, until unpaused (409 when already paused)."""
        return local(who).pause(pipeline, (body or PauseBody()).reason)

    @app.post(f"{P}/pipelines/{{pipeline}}/unpause", tags=["runs"])
    def unpause(pipeline: str, who: Identity = Depends(acting("unpause"))) -> dict[str, Any]:
        return local(who).unpause(pipeline)

    @app.post(f"{P}/traffic/{{route}}", tags=["traffic"])
    def set_traffic(route: str, body: TrafficBody, who: Identity = Depends(acting("traffic"))) -> dict[str, Any]:
        return local(who).set_traffic(route, body.weight, body.reason)

    @app.post(f"{P}/runs/{{pipeline}}/{{counter}}/rollback", tags=["traffic"])
    def rollback(pipeline: str, counter: str, body: ReasonBody | None = None,
                 who: Identity = Depends(acting("rollback"))) -> dict[str, Any]:
        return local(who).rollback(f"{pipeline}/{counter}", (body or ReasonBody()).reason)

    @app.post(f"{P}/incidents", tags=["metrics"])
    def incident_open(body: IncidentBody, who: Identity = Depends(acting("incident"))) -> dict[str, Any]:
        return local(who).incident_open(body.title, body.caused_by, body.severity, body.opened_at, body.note)

    @app.post(f"{P}/incidents/{{incident_id}}/resolve", tags=["metrics"])
    def incident_resolve(incident_id: int, body: ResolveBody | None = None,
                         who: Identity = Depends(acting("incident"))) -> dict[str, Any]:
        b = body or ResolveBody()
        return local(who).incident_resolve(incident_id, b.resolved_at, b.note)

    @app.post(f"{P}/runs/{{pipeline}}/{{counter}}/mark", tags=["metrics"])
    def mark(pipeline: str, counter: str, body: MarkBody, who: Identity = Depends(acting("mark"))) -> dict[str, Any]:
        return local(who).mark(f"{pipeline}/{counter}", body.mark, body.incident, body.note)

    @app.post(f"{P}/notify", tags=["materials"])
    def notify(body: NotifyBody | None = None, who: Identity = Depends(acting("notify"))) -> dict[str, Any]:
        """`workbench notify` over HTTP: poll the materials with this URL or name (all without one) now."""
        return local(who).notify((body or NotifyBody()).what)

    for add in extra_routers:
        add(app, state)
    return app

