"""Timer specs, as the scheduling pass uses them.

The parser lives in :mod:`workbench.config.timers` because the config loader
checks every spec when a file is read (a bad spec is a ``FILE:LINE:COL`` error
there, not a surprise at the next tick); this module keeps the old import path.
"""
from __future__ import annotations

from ..config.timers import Schedule, TimerSpecError, due, next_fire, parse, previous_fire

__all__ = ["Schedule", "TimerSpecError", "parse", "next_fire", "previous_fire", "due"]
