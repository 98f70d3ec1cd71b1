"""Notifications (issue 16): who is told what when a stage breaks, fails, is fixed,
passes or waits for someone. WORK IN PROGRESS: outbox and sender are written but not
yet wired into tick/serve/the server, the CLI or docs, and not yet tested.

Why an outbox: a stage's result is decided once, but many processes (ticks, serve,
the server) may drive runs and crash mid-send. Rows are keyed uniquely on
(event, stage_run_id, recipient, channel), so enqueueing twice is harmless, and a
sender claims a row with compare-and-set before sending, so each event goes out once.
"""
from __future__ import annotations

from .outbox import claim, enqueue, mark_failed, mark_sent  # noqa: F401
from . import config as _config  # noqa: F401,E402 - registers the notifications: section
from . import hook as _hook  # noqa: F401,E402 - registers the stage hook that feeds the outbox
