"""The feed: what happened, read back from the store, turned into outbox rows.

Why read the store rather than hook into the engine: every fact a notification
tells (a stage's result, a stage waiting, a rollback, a pause) is already a
committed row, written in the transaction that decided it, by whichever process
decided it. Reading those rows back means no crash between "decided" and
"queued" can lose an event, and no driver needs to know about notifications.
The feed re-reads a window reaching :data:`SLACK` seconds before its last mark
(covering transactions that committed late and clocks a little apart), and the
outbox's unique key turns every re-read into a no-op.

Addressing (:func:`address`) and wording (:func:`compose`) are pure functions of
an :class:`Event` and the config, tested without a store.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, Callable

import sqlalchemy as sa

from ..store import schema as S
from . import outbox as O
from .config import Notifications
from .events import Event, stage_events, wanted

SLACK = 120.0  # seconds re-read before the mark (a result's time is taken before its write waits for the lock)
FIRST_LOOK = 600.0  # a store never fed before: events of the last ten minutes only
MAX_AGE = 86400.0  # an event older than a day when first seen is not sent (a sender down for days)
MARK_EVERY = 30.0  # the mark is written at most this often when nothing was queued


@dataclass(frozen=True)
class Delivery:
    """One message to send: an email address, or a chat room (``#CHANNEL``) with the people it mentions."""

    recipient: str
    channel: str
    mentions: tuple[str, ...] = ()


# -- reading the store --------------------------------------------------------------


def read_events(conn: sa.Connection, since: float, store_key: str = "") -> list[Event]:
    """Every event whose row was written after ``since`` (stage results, waiting stages, rollbacks, pauses)."""
    pr, sr = S.pipeline_runs.c, S.stage_runs.c
    join = S.stage_runs.join(S.pipeline_runs, sr.pipeline_run_id == pr.id)
    cols = (sr.id, sr.name, sr.counter.label("stage_counter"), sr.status, sr.reason, sr.approved_by,
            sr.finished_at, sr.created_at, pr.pipeline, pr.counter)
    out: list[Event] = []
    finished = conn.execute(sa.select(*cols).select_from(join).where(
        sr.finished_at > since, sr.status.in_(["passed", "failed", "cancelled"])).order_by(sr.id)).mappings().all()
    for r in finished:
        key = (store_key, r["id"], r["status"])
        kinds = _KINDS.get(key)
        if kinds is None:  # a finished stage's events never change: each is worked out once per process
            previous = _previous_status(conn, r["pipeline"], r["counter"], r["name"], r["stage_counter"])
            kinds = _KINDS[key] = tuple(sorted(stage_events(r["status"], previous)))
            if len(_KINDS) > 20_000:
                _KINDS.pop(next(iter(_KINDS)))
        for kind in kinds:
            out.append(Event(kind, "stage", r["id"], r["pipeline"], r["counter"], r["name"], r["reason"],
                             at=r["finished_at"], stage_counter=r["stage_counter"]))
    waiting = conn.execute(sa.select(*cols).select_from(join).where(
        sr.status == "waiting", sr.created_at > since).order_by(sr.id)).mappings().all()
    for r in waiting:
        out.append(Event("waiting_for_you", "stage", r["id"], r["pipeline"], r["counter"], r["name"],
                         at=r["created_at"], stage_counter=r["stage_counter"]))
    out += _rollbacks(conn, since)
    out += _pauses(conn, since)
    return out


_KINDS: dict[tuple[str, int, str], tuple[str, ...]] = {}  # (store, stage run, status) -> events


def _previous_status(conn: sa.Connection, pipeline: str, counter: int, stage: str, stage_counter: int) -> str | None:
    """The last result of the same stage before this one: an earlier counter of this run, else earlier runs."""
    pr, sr = S.pipeline_runs.c, S.stage_runs.c
    q = (sa.select(sr.status).select_from(S.stage_runs.join(S.pipeline_runs, sr.pipeline_run_id == pr.id))
         .where(pr.pipeline == pipeline, sr.name == stage, sr.status.in_(["passed", "failed"]),
                sa.or_(pr.counter < counter, sa.and_(pr.counter == counter, sr.counter < stage_counter)))
         .order_by(pr.counter.desc(), sr.counter.desc()).limit(1))
    return conn.execute(q).scalar()


def _rollbacks(conn: sa.Connection, since: float) -> list[Event]:
    try:
        from ..traffic.state import rollbacks
    except ImportError:
        return []
    rb = rollbacks.c
    q = (sa.select(rb.run_id, rb.pipeline, rb.counter, sa.func.min(rb.at).label("at"), sa.func.min(rb.by).label("by"),
                   sa.func.min(rb.reason).label("reason")).group_by(rb.run_id, rb.pipeline, rb.counter)
         .having(sa.func.min(rb.at) > since))
    return [Event("rolled_back", "rollback", r["run_id"], r["pipeline"], r["counter"], None, r["reason"], r["by"],
                  r["at"]) for r in conn.execute(q).mappings()]


def _pauses(conn: sa.Connection, since: float) -> list[Event]:
    try:
        from ..pauses import pipeline_pauses
    except ImportError:
        return []
    p = pipeline_pauses.c
    q = sa.select(p.id, p.pipeline, p.by, p.reason, p.at).where(p.action == "pause", p.at > since)
    return [Event("paused", "pause", r["id"], r["pipeline"], None, None, r["reason"], r["by"], r["at"])
            for r in conn.execute(q).mappings()]


# -- who is told (pure) ----------------------------------------------------------------


GroupsOf = Callable[[str], frozenset[str]]  # a person's hub groups (the release service's JupyterHub)


def _members(to: str, cfg: Any, conf: Notifications, groups_of: GroupsOf | None) -> list[str]:
    """A subscription's people: the person, or the role's members; a ``group:NAME`` member stays as
    itself (``people:`` may give it a list address) and, with a hub to ask, adds each person of
    ``people:`` the hub puts in that group."""
    if not to.startswith("role:"):
        return [to]
    out: list[str] = []
    for m in cfg.roles.get(to[5:], ()):
        out.append(m)
        if m.startswith("group:") and groups_of is not None:
            out += [p.name for p in conf.people if not p.name.startswith("group:") and m[6:] in groups_of(p.name)]
    return list(dict.fromkeys(out))


def may_approve(event: Event, cfg: Any) -> Any:
    """The approvers of the stage an event waits at; None when it is no longer configured."""
    from ..approvals import approvers

    pipeline = cfg.pipelines.get(event.pipeline)
    stage = pipeline.stage(event.stage) if pipeline is not None and event.stage else None
    return approvers(cfg, stage) if stage is not None else None


def address(event: Event, conf: Notifications, cfg: Any, groups_of: GroupsOf | None = None) -> list[Delivery]:
    """The messages an event gives rise to, one per email address and one per chat room.

    A subscription's ``to`` is a person or ``role:NAME`` (its members: people, and
    ``group:NAME`` entries, reached through a ``people:`` address such as a mailing
    list, and through the hub's answer about each person when ``groups_of`` can ask
    one). ``waiting_for_you`` goes only to those who may approve the stage: its
    approval's users, the members of its roles, and people in a hub group a role
    lists (everyone subscribed, when the approval names nobody).
    """
    who = may_approve(event, cfg) if event.kind == "waiting_for_you" else None
    if event.kind == "waiting_for_you" and who is None:
        return []

    def allowed(name: str) -> bool:
        if who is None or who.anyone or name in who.members:
            return True
        return groups_of is not None and not name.startswith("group:") and who.allows(name, groups_of(name))

    people = {p.name: p for p in conf.people}
    rooms: dict[tuple[str, str], list[str]] = {}
    mails: dict[tuple[str, str], None] = {}
    for sub in conf.subscriptions:
        if not sub.covers(event.pipeline, event.stage) or not wanted(sub.events, frozenset({event.kind})):
            continue
        channel = conf.channel(sub.channel)
        if channel is None:
            continue
        names = [n for n in _members(sub.to, cfg, conf, groups_of) if allowed(n)]
        if channel.webhook:
            if event.kind == "waiting_for_you" and not names:
                continue
            handles = rooms.setdefault((f"#{channel.name}", channel.name), [])
            for n in names:
                h = (people[n].chat if n in people and people[n].chat else n)
                if h not in handles:
                    handles.append(h)
        else:
            for n in names:
                person = people.get(n)
                if person is not None and person.email:
                    mails[(person.email, channel.name)] = None
    return [Delivery(r, c) for r, c in mails] + [Delivery(r, c, tuple(h)) for (r, c), h in rooms.items()]


# -- what they are told (pure) -----------------------------------------------------------

_SUBJECTS = {
    "fails": "{loc} failed",
    "breaks": "{loc} broke (it passed last time)",
    "fixed": "{loc} is fixed",
    "passes": "{loc} passed",
    "cancelled": "{loc} was cancelled",
    "waiting_for_you": "{loc} is waiting for your approval",
    "rolled_back": "{loc} was rolled back by {by}",
    "paused": "pipeline {loc} was paused by {by}",
}


def compose(event: Event, base_url: str | None, mentions: tuple[str, ...] = ()) -> tuple[str, str]:
    """Subject and body: what happened, why, and the command (and link) to act on it."""
    loc = event.locator
    subject = "[workbench] " + _SUBJECTS[event.kind].format(loc=loc, by=event.by or "someone")
    lines = [subject.removeprefix("[workbench] ") + "."]
    if event.reason:
        lines.append(f"Reason: {event.reason}")
    run = f"{event.pipeline}/{event.counter}" if event.counter is not None else None
    if event.kind == "waiting_for_you":
        lines += [f"Approve: workbench approve {loc}", f"Reject:  workbench reject {loc} --comment WHY"]
        if base_url:
            lines.append(f"Approve over the API: POST {base_url}/api/v1/approvals/{loc}/approve")
    elif event.kind in ("fails", "breaks") and event.stage:
        lines.append(f"Rerun: workbench rerun {loc}")
    elif event.kind == "paused":
        lines.append(f"Unpause: workbench unpause {event.pipeline}")
    if run:
        lines.append(f"Status: workbench status (run {run})")
        if base_url:
            lines.append(f"Run: {base_url}/api/v1/runs/{run}")
    if base_url:
        lines.append(f"Dashboard: {base_url}/dashboard")
    if mentions:
        lines.append("For: " + " ".join(mentions))
    return subject, "\n".join(lines) + "\n"


def message_id(event: Event, d: Delivery, domain: str) -> str:
    """The same for every attempt of one row, so a receiver can drop a repeat (RFC 5322 Message-ID)."""
    h = hashlib.sha256(f"{d.recipient}\0{d.channel}".encode()).hexdigest()[:12]
    return f"<wb.{event.kind}.{event.source}{event.source_id}.{h}@{domain}>"


# -- the pass ---------------------------------------------------------------------------------


def feed(ws: Any, conf: Notifications, *, now: float | None = None) -> int:
    """Queue every event since the mark for everyone subscribed; returns how many rows were new."""
    now = time.time() if now is None else now
    store, cfg = ws.store, ws.config
    with store.read() as conn:
        mark = O.get_mark(conn)
        since = now - FIRST_LOOK if mark is None else max(mark - SLACK, now - MAX_AGE)
        events = read_events(conn, since, str(getattr(store, "url", "")))
        known: set[tuple[str, str, int, str, str]] = set()
        for source in {e.source for e in events}:
            known |= O.existing_keys(conn, source, {e.source_id for e in events if e.source == source})
    base = conf.url or _server_url(ws)
    groups_of = _hub_groups(ws, cfg) if events else None
    rows = []
    for e in events:
        for d in address(e, conf, cfg, groups_of):
            if (e.kind, e.source, e.source_id, d.recipient, d.channel) in known:
                continue
            channel = conf.channel(d.channel)
            sender = str(channel.get("from", "")) if channel is not None else ""
            domain = sender.rpartition("@")[2].strip(">") or "workbench.invalid"
            subject, body = compose(e, base, d.mentions)
            rows.append({"event": e.kind, "source": e.source, "source_id": e.source_id, "pipeline": e.pipeline,
                         "counter": e.counter, "stage": e.stage, "recipient": d.recipient, "channel": d.channel,
                         "subject": subject, "body": body, "message_id": message_id(e, d, domain)})
    if not rows and mark is not None and now - mark < MARK_EVERY:
        return 0
    with store.write() as conn:
        n = O.enqueue(conn, rows)
        O.set_mark(conn, max(now, mark or 0.0))
    return n


def _server_url(ws: Any) -> str | None:
    try:
        url = ws.settings.server.url
    except Exception:  # noqa: BLE001 - a broken workbench.yaml is reported by the commands that need it
        return None
    return url.rstrip("/") if url else None


_HUBS: dict[str, Any] = {}


def _hub_groups(ws: Any, cfg: Any) -> GroupsOf | None:
    """The hub's answer about a person's groups, when a role names a ``group:`` and a hub is configured
    (the release service as a JupyterHub service); None otherwise. A hub that does not answer makes
    the group reach only its ``people:`` address, never stops the pass."""
    if not any(m.startswith("group:") for members in cfg.roles.values() for m in members):
        return None
    key = str(ws.root)
    if key not in _HUBS:
        try:
            from ..server.hub import from_settings

            _HUBS[key] = from_settings(ws.settings.server.hub)
        except Exception:  # noqa: BLE001 - no hub extra, or server.hub incomplete (the server says why)
            _HUBS[key] = None
    hub = _HUBS[key]
    if hub is None:
        return None

    def groups_of(user: str) -> frozenset[str]:
        try:
            return frozenset(hub.groups_of(user))
        except Exception:  # noqa: BLE001 - the hub down: this pass reaches the group's list address only
            return frozenset()

    return groups_of
