"""The sender: feed the outbox, then claim due rows one at a time, send each, mark it.

Exactly once, and where that stops: a row is queued once (the outbox's unique
key) and claimed by one sender at a time (compare-and-set). A sender killed
*before* the receiver accepted leaves its row 'sending'; the next sender takes
it over at once when the claimer was a process of this host that is gone, else
after :data:`~.outbox.CLAIM_TIMEOUT`, and sends it once. A sender killed *after*
the SMTP server or webhook accepted but *before* the row was marked sent cannot
know it was delivered, so that one message is sent again: at-least-once at the
transport boundary, the limit of any outbox over SMTP. The repeat carries the
same ``Message-ID`` (email) or ``X-Workbench-Delivery`` (webhooks), so the
receiving side can drop it.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from . import outbox as O
from .config import Channel, Notifications
from .deliver import EmailChannel, WebhookChannel, masked, send_email, send_webhook

LOOP_SECONDS = 3.0  # how often serve and the server look for something to send
BATCH = 200  # rows one pass sends at most (the next pass goes on)


@dataclass
class SendReport:
    queued: int = 0
    sent: int = 0
    failed: int = 0
    gave_up: int = 0
    errors: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"notified: {self.sent} sent"] if self.sent else []
        if self.failed:
            out.append(f"notifications: {self.failed} failed, retried later (`workbench notifications list`)")
        if self.gave_up:
            out.append(f"notifications: gave up on {self.gave_up} (`workbench notifications retry`)")
        return out + [f"notification error: {e}" for e in self.errors]


def conf_of(ws: Any) -> Notifications | None:
    conf = ws.config.extensions.get("notifications")
    return conf if isinstance(conf, Notifications) and conf.subscriptions else None


def _secret(ws: Any, ch: Channel, plain: str, encrypted: str) -> str | None:
    from ..secrets import decrypt_variables
    from ..settings import expand_secret

    if ch.get(encrypted):
        return decrypt_variables({f"{encrypted} of channel {ch.name}": ch.get(encrypted)}, ws)[
            f"{encrypted} of channel {ch.name}"]
    value = ch.get(plain)
    return expand_secret(value) if value else None


def resolve(ws: Any, ch: Channel) -> tuple[EmailChannel | WebhookChannel, list[str]]:
    """The channel with its secrets resolved (``${VAR}`` or workbench ciphertext), and those secrets for masking."""
    from ..settings import expand_secret

    if ch.kind == "email":
        password = _secret(ws, ch, "password", "encrypted_password")
        ssl_on = bool(ch.get("ssl", False))
        port = ch.get("port") or (465 if ssl_on else 587 if ch.get("starttls", True) else 25)
        out: EmailChannel | WebhookChannel = EmailChannel(
            expand_secret(ch.get("host")), int(port), ch.get("from"), ch.get("user"), password,
            starttls=bool(ch.get("starttls", True)), ssl=ssl_on, cafile=ch.get("cafile"))
        return out, [s for s in (password,) if s]
    url = expand_secret(ch.get("url"))
    secret = _secret(ws, ch, "secret", "encrypted_secret") if ch.kind == "signed" else None
    # a Slack or Teams URL is itself a credential: it never reaches the outbox either
    return WebhookChannel(url, ch.kind, secret), [s for s in (secret, url) if s]


def deliver_row(ws: Any, conf: Notifications, row: dict[str, Any]) -> None:
    ch = conf.channel(row["channel"])
    if ch is None:
        raise LookupError(f"channel {row['channel']!r} is no longer in the notifications config")
    channel, _ = resolve(ws, ch)
    if isinstance(channel, EmailChannel):
        send_email(channel, row["recipient"], row["subject"], row["body"], message_id=row["message_id"])
    else:
        event = {"event": row["event"], "pipeline": row["pipeline"], "counter": row["counter"], "stage": row["stage"]}
        send_webhook(channel, row["subject"], row["body"], delivery=row["message_id"], event=event)


def _all_secrets(ws: Any, conf: Notifications) -> list[str]:
    out: list[str] = []
    for ch in conf.channels:
        try:
            out += resolve(ws, ch)[1]
        except Exception:  # noqa: BLE001 - an unresolvable secret cannot leak either
            pass
    return out


def send_pass(ws: Any, *, limit: int = BATCH, feed_first: bool = True) -> SendReport:
    """One pass: feed, then send what is due. Safe to run from several processes at once."""
    from ..materials.recovery import owner_alive
    from ..store import owner_id
    from .feed import feed

    report = SendReport()
    conf = conf_of(ws)
    if conf is None:
        return report
    if feed_first:
        report.queued = feed(ws, conf)
    me = owner_id() + f":{threading.get_ident()}"
    secrets = _all_secrets(ws, conf)

    def dead(claimer: str) -> bool:
        owner = claimer.rsplit(":", 1)[0] if claimer.count(":") >= 2 else claimer
        return owner != owner_id() and owner_alive(owner) is False

    for _ in range(limit):
        row = O.claim_one(ws.store, me, dead=dead)
        if row is None:
            break
        try:
            deliver_row(ws, conf, row)
        except Exception as exc:  # noqa: BLE001 - every failure is recorded and retried
            why = masked(f"{type(exc).__name__}: {exc}", secrets)
            state = O.mark_failed(ws.store, row["id"], me, row["attempts"], why, backoff=conf.backoff,
                                  max_attempts=conf.max_attempts)
            if state == O.GAVE_UP:
                report.gave_up += 1
            else:
                report.failed += 1
        else:
            O.mark_sent(ws.store, row["id"], me)
            report.sent += 1
    return report


def loop(ws: Any, stop: threading.Event, interval: float = LOOP_SECONDS) -> None:
    """The sender of ``workbench serve`` and ``workbench server``: a pass every few seconds until ``stop``."""
    while not stop.wait(interval):
        try:
            send_pass(ws)
        except Exception:  # noqa: BLE001,S112 - the store busy, a config being edited, a bug: never stops the
            continue       # scheduler; the next pass tries again and the outbox keeps every row's state


def tick_pass(ws: Any) -> list[str]:
    """The pass a ``workbench tick`` ends with (cron): its lines join the tick's output."""
    try:
        return send_pass(ws).lines()
    except Exception as exc:  # noqa: BLE001 - a notification problem never changes what the tick did
        return [f"notification error: {exc}"]
