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

import httpx


@dataclass(frozen=True)
class EmailChannel:
    """SMTP with STARTTLS and login; ``password`` is already resolved from ``${VAR}``."""
    host: str
    port: int
    sender: str
    user: str | None = None
    password: str | None = None
    starttls: bool = True
    cafile: str | None = None  # tests trust their self-signed certificate through this


@dataclass(frozen=True)
class WebhookChannel:
    """``kind`` is slack (also Mattermost), teams, or signed (HMAC-SHA256 over the body)."""
    url: str
    kind: str = "slack"
    secret: str | None = None


SIGNATURE_HEADER = "X-Workbench-Signature"


def send_email(ch: EmailChannel, to: str, subject: str, body: str, timeout: float = 20.0) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = ch.sender, to, subject
    msg.set_content(body)
    with smtplib.SMTP(ch.host, ch.port, timeout=timeout) as smtp:
        if ch.starttls:
            smtp.starttls(context=ssl.create_default_context(cafile=ch.cafile))
        if ch.user:
            smtp.login(ch.user, ch.password or "")
        smtp.send_message(msg)


def payload(kind: str, subject: str, body: str) -> dict:
    """The JSON each chat system accepts from an incoming webhook."""
    if kind == "teams":
        return {"@type": "MessageCard", "@context": "https://schema.org/extensions",
                "summary": subject, "title": subject, "text": body}
    if kind == "signed":
        return {"subject": subject, "text": body}
    return {"text": f"*{subject}*\n{body}"}


def sign(secret: str, raw: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def send_webhook(ch: WebhookChannel, subject: str, body: str, timeout: float = 20.0) -> None:
    raw = json.dumps(payload(ch.kind, subject, body), sort_keys=True).encode()
    headers = {"Content-Type": "application/json"}
    if ch.kind == "signed" and ch.secret:
        headers[SIGNATURE_HEADER] = sign(ch.secret, raw)
    r = httpx.post(ch.url, content=raw, headers=headers, timeout=timeout)
    r.raise_for_status()


def masked(text: str, secrets: list[str]) -> str:
    """Why: an SMTP or HTTP error may echo credentials back; none may reach the outbox."""
    for s in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(s, "****")
    return text
