"""Where the sender runs: beside the scheduler of ``serve``/``server``, and at the end of a ``tick``.

Why no stage hook: the feed reads what the engine already committed (see
:mod:`.feed`), so the engine's path is unchanged and no crash between a stage's
result and its notification can lose the notification. The sender's modules
(smtplib, httpx) are imported only when a loop or tick runs, not by every command.
"""
from __future__ import annotations

import threading
from typing import Any

from ..hooks import register_service_loop, register_tick_task


def _loop(ws: Any, stop: threading.Event) -> None:
    from .sender import loop

    loop(ws, stop)


def _tick(ws: Any) -> list[str]:
    from .sender import tick_pass

    return tick_pass(ws)


register_service_loop(_loop)
register_tick_task(_tick)
