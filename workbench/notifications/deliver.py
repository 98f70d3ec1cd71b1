"""Sending one outbox row over one channel: SMTP email or an HTTP webhook.

Why the stdlib for mail and httpx for POSTs: both are well kept, and neither needs
a service SDK. Errors are returned as text with every secret masked, because that
text is stored in the outbox and shown by ``workbench notifications``.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from ..secrets import MASK


@dataclass(frozen=True)
class EmailChannel:
    """SMTP with STARTTLS and login; ``password`` is already resolved from ``${VAR}``."""
    host: str
    port: int
    sender: str
    user: str | None = None
    password: str | None = None
    starttls: bool = True
    ssl: bool = False  # SMTPS (implicit TLS, usually port 465) instead of STARTTLS
    cafile: str | None = None  # a private CA (or a test's self-signed certificate) to trust


@dataclass(frozen=True)
class WebhookChannel:
    """``kind`` is slack (also Mattermost), teams, or signed (HMAC-SHA256 over the body)."""
    url: str
    kind: str = "slack"
    secret: str | None = None


SIGNATURE_HEADER = "X-Workbench-Signature"  # sha256=HEX, HMAC-SHA256 of the raw body with the secret
DELIVERY_HEADER = "X-Workbench-Delivery"


def send_email(ch: EmailChannel, to: str, subject: str, body: str, timeout: float = 20.0,
               message_id: str | None = None) -> None:
    """One message over one SMTP session. ``message_id`` is the same for every attempt of one
    outbox row, so a mail system that received a message whose acknowledgement was lost can drop
    the repeat (the at-least-once edge of SMTP, docs/notifications.md)."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = ch.sender, to, subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = message_id or make_msgid(domain=ch.sender.rpartition("@")[2] or None)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to a robot
    msg.set_content(body)
    context = ssl.create_default_context(cafile=ch.cafile)
    if ch.ssl:
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(ch.host, ch.port, timeout=timeout, context=context)
    else:
        smtp = smtplib.SMTP(ch.host, ch.port, timeout=timeout)
    with smtp:
        if ch.starttls and not ch.ssl:
            smtp.starttls(context=context)
        if ch.user:
            smtp.login(ch.user, ch.password or "")
        smtp.send_message(msg)


def payload(kind: str, subject: str, body: str, delivery: str = "", event: dict | None = None) -> dict:
    """The JSON each chat system accepts from an incoming webhook (Slack and Mattermost share one)."""
    if kind == "teams":
        return {"@type": "MessageCard", "@context": "https://schema.org/extensions",
                "summary": subject, "title": subject, "text": body.replace("\n", "  \n")}
    if kind == "signed":
        return {"id": delivery, "subject": subject, "text": body, **({"event": event} if event else {})}
    return {"text": f"*{subject}*\n{body}"}


def sign(secret: str, raw: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def send_webhook(ch: WebhookChannel, subject: str, body: str, timeout: float = 20.0, delivery: str = "",
                 event: dict | None = None) -> None:
    """One POST; any answer but 2xx is a failure (retried). ``X-Workbench-Delivery`` is the same for
    every attempt of one outbox row, for receivers that drop repeats."""
    raw = json.dumps(payload(ch.kind, subject, body, delivery, event), sort_keys=True).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "release-workbench"}
    if delivery:
        headers[DELIVERY_HEADER] = delivery
    if ch.kind == "signed" and ch.secret:
        headers[SIGNATURE_HEADER] = sign(ch.secret, raw)
    import httpx

    r = httpx.post(ch.url, content=raw, headers=headers, timeout=timeout)
    if not 200 <= r.status_code < 300:
        raise RuntimeError(f"the webhook answered HTTP {r.status_code}: {r.text[:200]}")


def masked(text: str, secrets: list[str]) -> str:
    """Why: an SMTP or HTTP error may echo credentials back; none may reach the outbox."""
    for s in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(s, MASK)
    return text
