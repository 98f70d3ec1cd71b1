"""Statuses of runs, stages and jobs, in one place.

Stored as their string values so that the store, the frames and the CLI's JSON
all speak the same words.
"""
from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    SCHEDULED = "scheduled"   # created, not yet started
    RUNNING = "running"
    WAITING = "waiting"       # stage awaiting manual approval
    PASSED = "passed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"     # a person rejected a waiting stage
    SKIPPED = "skipped"       # a stage after a failure is never run

    @property
    def finished(self) -> bool:
        return self in FINISHED

    def __str__(self) -> str:  # so f-strings print the word
        return self.value


FINISHED = frozenset({Status.PASSED, Status.FAILED, Status.CANCELLED, Status.REJECTED, Status.SKIPPED})
ACTIVE = frozenset({Status.SCHEDULED, Status.RUNNING, Status.WAITING})
ALL = tuple(s.value for s in Status)
