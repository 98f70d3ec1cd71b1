"""Which notification events a finished stage raises, as GoCD names them.

Why compare with the previous run of the same stage: 'breaks' and 'fixed' are about
a change of outcome, so a stage that keeps failing raises 'fails' but never 'breaks'
again, and the team is not told the same bad news as if it were new.
"""
from __future__ import annotations

EVENTS = ("waiting_for_you", "breaks", "fixed", "fails", "passes", "rolled_back", "all")


def stage_events(status: str, previous: str | None) -> frozenset[str]:
    """Events for a stage that finished with ``status`` after ``previous`` (None: first run)."""
    s, p = status.lower(), (previous or "").lower()
    if s == "passed":
        return frozenset({"passes", "fixed"} if p == "failed" else {"passes"})
    if s == "failed":
        return frozenset({"fails", "breaks"} if p == "passed" else {"fails"})
    return frozenset()


def wanted(subscribed: frozenset[str], raised: frozenset[str]) -> frozenset[str]:
    """The raised events a subscription asked for (``all`` means every one)."""
    return raised if "all" in subscribed else raised & subscribed
