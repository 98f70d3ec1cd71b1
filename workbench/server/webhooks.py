"""Forge webhooks: a push on GitHub, GitLab, Gitea/Forgejo or Bitbucket polls the materials it concerns now.

The HTTP adapter only: ``workbench.server.forges`` decides what a delivery
says, ``workbench.server.deliveries`` stores it, and the scheduler is told
through ``Scheduler.force``, the path ``workbench notify`` takes. Routes:
``POST {prefix}/api/v1/webhooks/{github,gitlab,gitea,bitbucket}`` and GoCD's
own ``POST {prefix}/go/api/webhooks/{github,gitlab,bitbucket,hosted_bitbucket}/notify``,
so a forge configured for GoCD needs only a new host name. docs/webhooks.md
is the user's guide.

Order of checks, and why: the body is read in chunks and dropped past
``server.max_body_bytes`` (413, nothing beyond the limit is read, as on every
other path: ``workbench.server.limits``); the forge must have a secret here
(else 403, we never accept unsigned pushes); the signature is checked over the raw bytes (401) before any JSON parser sees
them; then the JSON (400), the event, and the repository. Every request
leaves one row in ``webhook_deliveries``, committed before the answer, and
the matched material keys are in that row before a 2xx is sent: a server
killed right after answering polls them when it starts again
(:meth:`Receiver.replay_pending`, called by ``run_server``).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..errors import InvalidState, NotSignedIn, Unauthorized, UsageError, WorkbenchError
from . import deliveries as D
from . import forges as F

log = logging.getLogger("workbench.server.webhooks")

GOCD_PATHS = {"github": "github", "gitlab": "gitlab", "bitbucket": "bitbucket", "hosted_bitbucket": "bitbucket"}
CONFIRM_RETRIES = 3  # passes with errors after which a delivery is left for the next start to poll


class TooLarge(Exception):
    """The body passed ``server.max_body_bytes``; the rest of it was not read."""


@dataclass(frozen=True)
class Answer:
    """An HTTP answer and the delivery row that records it."""

    status: int
    body: dict[str, Any]
    row: D.Delivery | None = None


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def _refusal(exc_class: type[WorkbenchError], detail: str) -> tuple[int, dict[str, Any]]:
    return exc_class.http_status, {"error": exc_class.kind, "detail": detail}


@dataclass
class _Waiting:
    """Deliveries forced together, waiting for the pass that polls them (mutable: the passes move it on)."""

    ids: list[int]
    keys: list[str]
    force_again_after: int
    confirm_after: int
    retries: int = 0


class PollConfirmations:
    """Stamps ``polled_at`` once a scheduling pass that began after a delivery's force has finished.

    ``Scheduler.force`` only queues keys; a pass already under way may have
    read the queue before them. So a delivery forced when ``n`` passes had
    finished is forced again when pass ``n+1`` ends and is confirmed when pass
    ``n+2`` (which certainly began with its keys queued) ends. A pass that
    reported errors (the store was busy, say) confirms nothing: the keys are
    forced once more, up to CONFIRM_RETRIES times, then left to the next start.
    Until then ``polled_at`` stays empty and a restart polls it again: polling
    twice is harmless (a revision set never yields two runs), never is the bug.
    """

    def __init__(self, store: Any, scheduler: Any) -> None:
        self.store = store
        self.scheduler = scheduler
        self._lock = threading.Lock()
        self._done = 0  # passes finished
        self._waiting: list[_Waiting] = []

    def submit(self, ids: list[int], keys: list[str]) -> None:
        with self._lock:
            self._waiting.append(_Waiting(ids, keys, self._done + 1, self._done + 2))
        self.scheduler.force(keys)

    def on_pass(self, report: Any) -> None:
        """The serve loop's ``on_pass``: runs in the scheduler thread after every pass."""
        failed = bool(getattr(report, "errors", None))
        again: set[str] = set()
        confirmed: list[int] = []
        with self._lock:
            self._done += 1
            n = self._done
            for w in list(self._waiting):
                if n == w.force_again_after:
                    again.update(w.keys)
                if n < w.confirm_after:
                    continue
                if not failed:
                    confirmed += w.ids
                    self._waiting.remove(w)
                elif w.retries < CONFIRM_RETRIES:
                    w.confirm_after, w.retries = n + 1, w.retries + 1
                    again.update(w.keys)
                else:
                    self._waiting.remove(w)  # unstamped: the next start polls them
        if again:
            self.scheduler.force(sorted(again))
        if confirmed:
            try:
                D.mark_polled(self.store, confirmed)
            except WorkbenchError as exc:  # left unstamped: the next start polls them again
                log.warning("webhook deliveries %s polled, not stamped: %s", confirmed, exc)


class Receiver:
    """The webhook endpoint's state: the expanded secrets, the body limit and the scheduler to tell."""

    def __init__(self, ws: Any, scheduler: Any, *, trusted_proxies: tuple[str, ...] = ()) -> None:
        settings = ws.settings.server
        self.ws = ws
        self.scheduler = scheduler
        self.max_body = settings.max_body_bytes
        self.trusted_proxies = frozenset(trusted_proxies)
        self.secrets: dict[str, str] = {}
        self.problems: dict[str, str] = {}
        from ..settings import expand_secret

        for forge, raw in settings.webhook_secrets.items():
            try:
                secret = expand_secret(raw)
            except UsageError as exc:
                self.problems[forge] = f"the {forge} webhook secret cannot be read: {exc}"
                log.warning("%s; %s webhooks are refused", self.problems[forge], forge)
                continue
            if secret:
                self.secrets[forge] = secret
            else:  # an empty HMAC key is no secret at all
                self.problems[forge] = f"the {forge} webhook secret is empty"
                log.warning("%s; %s webhooks are refused", self.problems[forge], forge)
        self.confirmations = PollConfirmations(ws.store, scheduler) if scheduler is not None else None

    # -- the server's start and its loop ---------------------------------------------------
    def on_pass(self, report: Any) -> None:
        if self.confirmations is not None:
            self.confirmations.on_pass(report)

    def replay_pending(self) -> int:
        """Force the keys of accepted deliveries no pass was seen to poll (the last server died first)."""
        if self.confirmations is None:
            return 0
        rows = D.pending(self.ws.store)
        keys = sorted({k for d in rows for k in d.material_keys})
        ids = [d.id for d in rows if d.id is not None]
        if ids:
            self.confirmations.submit(ids, keys)
            log.warning("polling %d webhook deliveries received before the last stop: %s", len(ids), ", ".join(keys))
        return len(ids)

    # -- one request -----------------------------------------------------------------------
    async def handle(self, forge: str, request: Request) -> JSONResponse:
        """Never raises: every outcome is an answer and a row (a traceback reaches neither body nor log)."""
        received = time.time()
        headers = {k.lower(): v for k, v in request.headers.items()}
        remote = self._remote(request, headers)
        event = F.event_of(forge, headers)
        base = D.Delivery(forge=forge, delivery_id=F.delivery_id(forge, headers, None), event=event,
                          outcome=D.REFUSED, status=500, remote=remote, received_at=received)
        try:
            try:
                body = await self._read(request, headers)
            except TooLarge:
                return await self._refuse(base, _TooLargeError, f"the body is larger than {self.max_body} bytes "
                                          "(server.max_body_bytes); the rest was not read")
            secret = self.secrets.get(forge)
            if secret is None:
                why = self.problems.get(forge) or (f"no secret is configured for {forge} webhooks "
                                                   f"(workbench.yaml server: webhooks: {forge}: secret:)")
                return await self._refuse(base, Unauthorized, why)
            base = _with(base, delivery_id=F.delivery_id(forge, headers, body))
            bad = F.check_signature(forge, headers, body, secret)
            if bad is not None:
                return await self._refuse(base, NotSignedIn, bad)
            answer = await run_in_threadpool(self._decide, base, headers, body)
            return JSONResponse(answer.body, status_code=answer.status)
        except WorkbenchError as exc:  # e.g. the store is unavailable: no row could be written either
            log.warning("webhook %s from %s not recorded: %s", forge, remote, exc)
            return JSONResponse({"error": exc.kind, "detail": str(exc)}, status_code=exc.http_status)
        except Exception as exc:  # noqa: BLE001  (the one place an unforeseen failure becomes a 500)
            log.error("webhook %s from %s failed: %s: %s", forge, remote, type(exc).__name__, exc)
            return JSONResponse({"error": "internal", "detail": "the server failed on this request; see its log"},
                                status_code=500)

    def _remote(self, request: Request, headers: dict[str, str]) -> str | None:
        client = request.client.host if request.client else None
        forwarded = headers.get("x-forwarded-for", "").split(",")[-1].strip()
        if client in self.trusted_proxies and forwarded:
            return f"{forwarded} (via {client})"
        return client

    async def _read(self, request: Request, headers: dict[str, str]) -> bytes:
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            raise TooLarge()
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body:
                raise TooLarge()
        return bytes(body)

    async def _refuse(self, row: D.Delivery, exc_class: type[WorkbenchError], reason: str) -> JSONResponse:
        status, body = _refusal(exc_class, reason)
        await run_in_threadpool(self._store_refusal, _with(row, status=status, reason=reason))
        return JSONResponse(body, status_code=status)

    def _store_refusal(self, row: D.Delivery) -> None:
        """The row, a log line, and for a caller without the secret an audit row like the API's own refusals."""
        D.insert(self.ws.store, row)
        log.warning("webhook %s from %s refused (%s): %s", row.forge, row.remote, row.status, row.reason)
        if row.status in (NotSignedIn.http_status, Unauthorized.http_status):
            from ..approvals import record

            record(self.ws, "(not signed in)", "webhook", f"webhooks/{row.forge}", "unauthorized",
                   detail=f"from {row.remote}: {row.reason}")

    def _decide(self, row: D.Delivery, headers: dict[str, str], body: bytes) -> Answer:
        """A signed delivery: parse, match, record (unique id), then tell the scheduler."""
        forge = row.forge
        try:
            payload = F.parse_payload(body, headers.get("content-type"))
        except F.PayloadError as exc:
            status, out = _refusal(UsageError, str(exc))
            self._store_refusal(_with(row, status=status, reason=str(exc)))
            return Answer(status, out)
        kind = F.kind_of(forge, row.event)
        row = _with(row, repository=payload.repository, ref=payload.ref)
        if kind == "ping":
            return self._record(_with(row, outcome=D.IGNORED, status=200, reason="ping: the forge tested the hook"),
                                {"ok": True, "event": "ping"})
        if kind == "other":
            why = f"event {row.event or '(none)'!r} does not change a repository; only pushes poll"
            return self._record(_with(row, outcome=D.IGNORED, status=202, reason=why),
                                {"ok": True, "outcome": D.IGNORED, "reason": why})
        keys = self._keys(payload.urls)
        if not keys:
            why = (f"no git material uses {payload.repository}" if payload.urls
                   else "the push names no repository URL")
            return self._record(_with(row, outcome=D.IGNORED, status=202, reason=why),
                                {"ok": True, "outcome": D.IGNORED, "reason": why})
        accepted = _with(row, outcome=D.ACCEPTED, status=202, material_keys=tuple(keys),
                         reason=f"push to {payload.ref or 'a ref'}: polling {len(keys)} material(s)")
        answer = self._record(accepted, {"ok": True, "outcome": D.ACCEPTED, "polling": keys})
        if answer.row is not None and answer.row.id is not None and self.confirmations is not None:
            self.confirmations.submit([answer.row.id], keys)
        return answer

    def _record(self, row: D.Delivery, body: dict[str, Any]) -> Answer:
        """Insert under the unique delivery id; a second copy is a 409 refusal with its own row."""
        try:
            rid = D.insert(self.ws.store, row, unique=True)
        except D.Replayed as exc:
            when = _iso(exc.first_at) if exc.first_at is not None else "an earlier time"
            why = f"delivery {row.delivery_id} already received at {when}"
            status, out = _refusal(InvalidState, why)
            self._store_refusal(_with(row, outcome=D.REFUSED, status=status, reason=why, material_keys=()))
            return Answer(status, out)
        return Answer(row.status, {**body, "delivery": row.delivery_id}, _with(row, id=rid))

    def _keys(self, urls: tuple[str, ...]) -> list[str]:
        from ..config.model import GitMaterial
        from ..materials.git import normalize_url

        root = self.ws.root
        materials = [(m.url, normalize_url(m.url, root)) for p in self.ws.config.pipelines.values()
                     for m in p.materials if isinstance(m, GitMaterial)]
        materials += [(r.url, f"configrepo:{rid}") for rid, r in self.ws.settings.config_repos.items()]
        return F.matching_keys(materials, urls, root)


class _TooLargeError(UsageError):
    http_status = 413
    kind = "too_large"


def _with(row: D.Delivery, **changes: Any) -> D.Delivery:
    return replace(row, **changes)


def add_routes(app: FastAPI, state: Any) -> None:
    """Mount the webhook endpoints under the app's prefix and hang the receiver on ``state.hooks``."""
    prefix = getattr(state, "prefix", "") or ""
    receiver = Receiver(state.ws, state.scheduler, trusted_proxies=tuple(state.auth.trusted_proxies))
    state.hooks = receiver

    def endpoint(forge: str) -> Any:
        async def receive(request: Request) -> JSONResponse:
            return await receiver.handle(forge, request)

        receive.__name__ = f"webhook_{forge}"
        receive.__doc__ = (f"A {forge} webhook delivery (signed with the secret in workbench.yaml): a push polls "
                           "the materials using that repository now; see docs/webhooks.md.")
        return receive

    for forge in F.FORGES:
        app.add_api_route(f"{prefix}/api/v1/webhooks/{forge}", endpoint(forge), methods=["POST"], tags=["webhooks"],
                          name=f"webhook_{forge}")
    for path, forge in GOCD_PATHS.items():
        app.add_api_route(f"{prefix}/go/api/webhooks/{path}/notify", endpoint(forge), methods=["POST"],
                          tags=["webhooks"], name=f"gocd_webhook_{path}", include_in_schema=False)
