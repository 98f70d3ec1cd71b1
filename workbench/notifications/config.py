"""The top-level ``notifications:`` section of the pipeline files (our extension), parsed with located errors.

    notifications:
      url: https://release.internal        # links in messages (default: workbench.yaml's server url)
      backoff: 30                          # seconds before the first retry; doubled each time, at most 1 h
      max_attempts: 8                      # then the row is given up, with the last error kept
      channels:
        mail: {type: email, host: smtp.example.com, port: 587, user: wb, password: "${SMTP_PASSWORD}",
               from: wb@example.com}       # or encrypted_password: (from `workbench encrypt`)
        chat: {type: slack, url: "${SLACK_HOOK_URL}"}
        audit: {type: signed, url: https://hooks.internal/wb, secret: "${HOOK_SECRET}"}
      people:
        carol: carol@example.com           # an email address, or {email: ..., chat: "@carol"}
        group:release-team: release-team@example.com   # a hub group a role lists, as a mailing list
      subscriptions:
        - {to: carol, channel: mail, events: [waiting_for_you, breaks]}
        - {to: "role:qa", channel: chat, events: [all], pipelines: [shop]}

Why it lives with the pipelines and not in workbench.yaml: subscriptions name
roles and pipelines, which are checked here, in the same pass that reports
every FILE:LINE:COL. Why secrets stay as ``${VAR}`` (or ciphertext) here: they
are resolved only by the sender, so the parsed config (printed, cached,
compared) never holds a password.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config.model import Loc
from .events import EVENTS

KINDS = {"email": ("host", "from"), "slack": ("url",), "teams": ("url",), "signed": ("url",)}
OPTIONAL = {"email": ("port", "user", "password", "encrypted_password", "starttls", "ssl", "cafile"),
            "slack": (), "teams": (), "signed": ("secret", "encrypted_secret")}
WEBHOOKS = ("slack", "teams", "signed")
NOWHERE = Loc("<notifications>", 1, 1)


@dataclass(frozen=True)
class Channel:
    name: str
    kind: str
    options: tuple[tuple[str, Any], ...]
    loc: Loc = NOWHERE

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)

    @property
    def webhook(self) -> bool:
        return self.kind in WEBHOOKS


@dataclass(frozen=True)
class Person:
    name: str
    email: str | None = None
    chat: str | None = None  # a handle to mention in chat channels (default: the name)


@dataclass(frozen=True)
class Subscription:
    to: str  # a person, or "role:NAME"
    channel: str
    events: frozenset[str]
    pipelines: tuple[str, ...] = ()
    stages: tuple[str, ...] = ()
    loc: Loc = NOWHERE

    def covers(self, pipeline: str | None, stage: str | None) -> bool:
        """The pipeline/stage filter (an event without a stage, e.g. a pause, passes a stage filter)."""
        if self.pipelines and pipeline not in self.pipelines:
            return False
        return not (self.stages and stage is not None and stage not in self.stages)


@dataclass(frozen=True)
class Notifications:
    channels: tuple[Channel, ...] = ()
    people: tuple[Person, ...] = ()
    subscriptions: tuple[Subscription, ...] = ()
    url: str | None = None
    backoff: float = 30.0
    max_attempts: int = 8

    def channel(self, name: str) -> Channel | None:
        return next((c for c in self.channels if c.name == name), None)

    def person(self, name: str) -> Person | None:
        return next((p for p in self.people if p.name == name), None)


def parse(node: Any, ctx: Any) -> Notifications:
    m = ctx.mapping(node, "notifications")
    if m is None:
        return Notifications()
    ctx.check_keys(m, {"channels", "people", "subscriptions", "url", "backoff", "max_attempts"}, "notifications")
    channels = _channels(m, ctx)
    people = _people(m, ctx)
    names = {c.name for c in channels}
    subs: list[Subscription] = []
    for item in ctx.sequence(m.get("subscriptions"), "subscriptions of notifications", m.key("subscriptions")) or []:
        s = ctx.mapping(item, "each subscription")
        if s is None:
            continue
        ctx.check_keys(s, {"to", "channel", "events", "pipelines", "stages"}, "a subscription")
        to = ctx.req_text(s, "to", "a subscription", s)
        channel = ctx.req_text(s, "channel", "a subscription", s)
        if channel is not None and channel not in names:
            ctx.error(s.get("channel"), f"subscription refers to channel {channel!r}, which is not in channels"
                                        f" ({', '.join(sorted(names)) or 'none defined'})")
            channel = None
        events = ctx.opt_texts(s, "events", "a subscription") or ("all",)
        for e in events:
            if e not in EVENTS:
                ctx.error(s.get("events"), f"unknown event {e!r}: one of {', '.join(EVENTS)}")
        if to and channel:
            at = s.get("to")
            subs.append(Subscription(to, channel, frozenset(events), ctx.opt_texts(s, "pipelines", "a subscription"),
                                     ctx.opt_texts(s, "stages", "a subscription"), at.loc if at is not None else NOWHERE))
    url = ctx.opt_text(m, "url", "notifications")
    backoff = ctx.duration(m.get("backoff"), "backoff of notifications", 1.0) if m.get("backoff") is not None else 30.0
    attempts = ctx.integer(m.get("max_attempts"), "max_attempts of notifications", 1, 100) \
        if m.get("max_attempts") is not None else 8
    return Notifications(tuple(channels), tuple(people), tuple(subs), url.rstrip("/") if url else None,
                         backoff or 30.0, attempts or 8)


def _channels(m: Any, ctx: Any) -> list[Channel]:
    channels: list[Channel] = []
    for key, value in (ctx.mapping(m.get("channels"), "channels of notifications", m.key("channels")) or []):
        what = f"channel {key.text}"
        entry = ctx.mapping(value, what, key)
        if entry is None:
            continue
        kind = ctx.req_text(entry, "type", what, key)
        if kind is None:
            continue
        if kind not in KINDS:
            ctx.error(entry.get("type"), f"{what}: type must be one of {', '.join(KINDS)}, not {kind!r}")
            continue
        ctx.check_keys(entry, {"type", *KINDS[kind], *OPTIONAL[kind]}, what)
        opts: list[tuple[str, Any]] = [(k, ctx.req_text(entry, k, what, key)) for k in KINDS[kind]]
        for k in OPTIONAL[kind]:
            if k in ("starttls", "ssl"):
                opts.append((k, ctx.opt_bool(entry, k, what, k == "starttls")))
            elif k == "port":
                opts.append((k, ctx.integer(entry.get(k), f"port of {what}", 1, 65535) if entry.get(k) is not None else None))
            else:
                opts.append((k, ctx.opt_text(entry, k, what)))
        o = dict(opts)
        if kind == "email":
            if o.get("password") and not o["password"].startswith("${"):
                ctx.warn(entry.key("password"), f"{what} has a plain-text password; use \"${{VAR}}\" or "
                                                "encrypted_password (from `workbench encrypt`)")
            if o.get("ssl") and o.get("starttls") and entry.get("starttls") is not None:
                ctx.error(entry.key("ssl"), f"{what}: choose ssl (SMTPS, port 465) or starttls, not both")
        if kind == "signed" and not (o.get("secret") or o.get("encrypted_secret")):
            ctx.error(key, f"{what} (type signed) needs `secret:` (\"${{VAR}}\") or `encrypted_secret:`")
        channels.append(Channel(key.text, kind, tuple((k, v) for k, v in opts if v is not None), key.loc))
    return channels


def _people(m: Any, ctx: Any) -> list[Person]:
    people: list[Person] = []
    for key, value in (ctx.mapping(m.get("people"), "people of notifications", m.key("people")) or []):
        if isinstance(value, type(m)):
            ctx.check_keys(value, {"email", "chat"}, f"person {key.text}")
            email, chat = ctx.opt_text(value, "email", f"person {key.text}"), ctx.opt_text(value, "chat", f"person {key.text}")
        else:
            email, chat = ctx.text(value, f"address of {key.text}", key), None
        if email is not None and "@" not in email:
            ctx.error(value if not isinstance(value, type(m)) else value.get("email"),
                      f"address of {key.text} is not an email address: {email!r}")
            email = None
        people.append(Person(key.text, email, chat))
    return people


def check(config: Any, ctx: Any) -> None:
    """Cross-checks against the rest of the config: roles exist, email subscribers have an address."""
    conf = config.extensions.get("notifications")
    if not isinstance(conf, Notifications):
        return
    people = {p.name: p for p in conf.people}
    for sub in conf.subscriptions:
        ch = conf.channel(sub.channel)
        if sub.to.startswith("role:"):
            role = sub.to[5:]
            if role not in config.roles:
                ctx.error(sub.loc, f"subscription to unknown role {role!r} (roles: {', '.join(sorted(config.roles)) or 'none'})")
                continue
            if ch is not None and not ch.webhook:
                missing = [u for u in config.roles[role] if not (people.get(u) and people[u].email)]
                if missing:
                    ctx.warn(sub.loc, f"members of role {role} without an email address in notifications.people "
                                      f"are not mailed: {', '.join(missing)}")
        elif ch is not None and not ch.webhook and not (people.get(sub.to) and people[sub.to].email):
            ctx.error(sub.loc, f"{sub.to!r} has no email address in notifications.people, so channel "
                               f"{sub.channel} (email) cannot reach them")
        for p in sub.pipelines:
            if p not in config.pipelines:
                ctx.error(sub.loc, f"subscription filters on unknown pipeline {p!r}")


def _register() -> None:
    from ..config import register_config_check, register_section

    register_section("notifications", parse)
    register_config_check(check)


_register()
