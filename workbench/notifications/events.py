"""Which notification events happened, as GoCD names them (plus ours), as plain data.

Why compare with the previous run of the same stage: 'breaks' and 'fixed' are about
a change of outcome, so a stage that keeps failing raises 'fails' but never 'breaks'
again, and the team is not told the same bad news as if it were new.

GoCD's stage filters are breaks, fixed, fails, passes, cancelled and all; ours add
``waiting_for_you`` (a manual approval waits for someone who may give it),
``rolled_back`` (a run's traffic went back to the previous stack) and ``paused``.
"""
from __future__ import annotations

from dataclasses import dataclass

EVENTS = ("waiting_for_you", "breaks", "fixed", "fails", "passes", "cancelled", "rolled_back", "paused", "all")


@dataclass(frozen=True)
class Event:
    """Something worth telling people, read back from the store (so no event is lost in a crash).

    ``source`` and ``source_id`` name the row it came from: ``stage`` (a stage run),
    ``rollback`` (a pipeline run rolled back) or ``pause`` (a pipeline_pauses row).
    """

    kind: str
    source: str
    source_id: int
    pipeline: str
    counter: int | None = None
    stage: str | None = None
    reason: str | None = None
    by: str | None = None
    at: float = 0.0
    stage_counter: int | None = None

    @property
    def locator(self) -> str:
        if self.counter is None:
            return self.pipeline
        base = f"{self.pipeline}/{self.counter}"
        return f"{base}/{self.stage}" if self.stage else base


def stage_events(status: str, previous: str | None) -> frozenset[str]:
    """Events for a stage that finished with ``status`` after ``previous`` (None: first run)."""
    s, p = status.lower(), (previous or "").lower()
    if s == "passed":
        return frozenset({"passes", "fixed"} if p == "failed" else {"passes"})
    if s == "failed":
        return frozenset({"fails", "breaks"} if p == "passed" else {"fails"})
    if s == "cancelled":
        return frozenset({"cancelled"})
    return frozenset()


def wanted(subscribed: frozenset[str], raised: frozenset[str]) -> frozenset[str]:
    """The raised events a subscription asked for (``all`` means every one)."""
    return raised if "all" in subscribed else raised & subscribed
