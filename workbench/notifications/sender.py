"""The sender: claim due rows, send each, mark it sent or failed with backoff.

Why claim-then-send-then-mark: a crash between send and mark leaves a 'sending'
row that is only retaken after CLAIM_TIMEOUT, so overlapping senders never send
the same row at once. (A crash after the receiver accepted but before the mark can
still repeat that one message after the timeout; at-least-once at that point is the
documented limit of any outbox without receiver-side dedup keys.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from . import outbox as O
from .deliver import EmailChannel, WebhookChannel, masked, send_email, send_webhook


@dataclass(frozen=True)
class SendReport:
    sent: int
    failed: int


def send_due(store: Any, channels: Mapping[str, EmailChannel | WebhookChannel],
             secrets: list[str]) -> SendReport:
    """One pass over the outbox; safe to run from several processes at once."""
    sent = failed = 0
    for row in O.claim(store):
        ch = channels.get(row["channel"])
        try:
            if ch is None:
                raise LookupError(f"channel {row['channel']!r} is not configured")
            if isinstance(ch, EmailChannel):
                send_email(ch, row["recipient"], row["subject"], row["body"])
            else:
                send_webhook(ch, row["subject"], row["body"])
        except Exception as exc:  # noqa: BLE001 - every failure is recorded and retried
            O.mark_failed(store, row["id"], row["attempts"] + 1, masked(f"{type(exc).__name__}: {exc}", secrets))
            failed += 1
        else:
            O.mark_sent(store, row["id"])
            sent += 1
    return SendReport(sent, failed)
