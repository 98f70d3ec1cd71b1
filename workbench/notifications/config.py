"""The top-level ``notifications:`` section (our extension), parsed with located errors.

    notifications:
      channels:
        mail: {type: email, host: smtp.example.com, port: 587, user: wb, password: "${SMTP_PASSWORD}", from: wb@example.com}
        chat: {type: slack, url: "https://chat.example.com/hooks/abc"}
      people: {carol: carol@example.com}
      subscriptions:
        - {to: carol, channel: mail, events: [waiting_for_you, breaks]}
        - {to: "role:qa", channel: chat, events: [all], pipelines: [shop]}

Why secrets stay as ``${VAR}`` text here: they are resolved only by the sender, so
the parsed config (printed, cached, compared) never holds a password.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .events import EVENTS

KINDS = {"email": ("host", "from"), "slack": ("url",), "teams": ("url",), "signed": ("url", "secret")}
OPTIONAL = {"email": ("port", "user", "password", "starttls"), "slack": (), "teams": (), "signed": ()}


@dataclass(frozen=True)
class Channel:
    name: str
    kind: str
    options: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Subscription:
    to: str  # a person, or "role:NAME"
    channel: str
    events: frozenset[str]
    pipelines: tuple[str, ...] = ()
    stages: tuple[str, ...] = ()


@dataclass(frozen=True)
class Notifications:
    channels: tuple[Channel, ...] = ()
    people: tuple[tuple[str, str], ...] = ()
    subscriptions: tuple[Subscription, ...] = ()


def parse(node: Any, ctx: Any) -> Notifications:
    m = ctx.mapping(node, "notifications")
    if m is None:
        return Notifications()
    ctx.check_keys(m, {"channels", "people", "subscriptions"}, "notifications")
    channels: list[Channel] = []
    cm = ctx.mapping(m.get("channels"), "channels of notifications", m.key("channels"))
    for key, value in (cm or []):
        entry = ctx.mapping(value, f"channel {key.text}", key)
        if entry is None:
            continue
        kind = ctx.req_text(entry, "type", f"channel {key.text}", key)
        if kind is None:
            continue
        if kind not in KINDS:
            ctx.error(entry.get("type"), f"channel {key.text}: type must be one of {', '.join(KINDS)}, not {kind!r}")
            continue
        ctx.check_keys(entry, {"type", *KINDS[kind], *OPTIONAL[kind]}, f"channel {key.text}")
        opts = [(k, ctx.req_text(entry, k, f"channel {key.text}", key)) for k in KINDS[kind]]
        opts += [(k, ctx.opt_text(entry, k, f"channel {key.text}")) for k in OPTIONAL[kind]]
        channels.append(Channel(key.text, kind, tuple((k, v) for k, v in opts if v is not None)))
    pm = ctx.mapping(m.get("people"), "people of notifications", m.key("people"))
    people = tuple((k.text, t) for k, v in (pm or []) if (t := ctx.text(v, f"address of {k.text}", k)) is not None)
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
            ctx.error(s.get("channel"), f"subscription refers to channel {channel!r}, which is not in channels")
        events = ctx.opt_texts(s, "events", "a subscription") or ("all",)
        for e in events:
            if e not in EVENTS:
                ctx.error(s.get("events"), f"unknown event {e!r}: one of {', '.join(EVENTS)}")
        if to and channel:
            subs.append(Subscription(to, channel, frozenset(events), ctx.opt_texts(s, "pipelines", "a subscription"),
                                     ctx.opt_texts(s, "stages", "a subscription")))
    return Notifications(tuple(channels), people, tuple(subs))


def _register() -> None:
    from ..config import register_section

    register_section("notifications", parse)


_register()
