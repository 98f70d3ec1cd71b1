"""The board at scale: which pipelines a filter matches, their counts, and one page of them (plain data).

Ten thousand pipelines are too many rows for a page to draw (GoCD's dashboard
crawls past a thousand or two, gocd#3431): the dashboard shows one page of the
board, and a filter (name, group, status) with the count of every status, so
nothing is hidden — every pipeline is reachable by paging or by the filter,
and a failing or waiting one is counted even when it is not on the page shown.

The index is built from the application layer's board read
(``workbench.service.reads.board``: the latest run of every pipeline, cached
until the store changes); only the page shown is then read in detail (its
last few runs, :func:`workbench.dashboard.source.latest_runs`).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

PAGE_SIZE = 50

# the status filter's choices, the ones needing a person first; "paused" is a flag beside the status
STATUSES: tuple[tuple[str, str], ...] = (
    ("failed", "failing"), ("waiting", "waiting for approval"), ("running", "running"), ("scheduled", "scheduled"),
    ("passed", "passed"), ("cancelled", "cancelled"), ("rejected", "rejected"), ("never run", "never run"),
    ("paused", "paused"),
)


@dataclass(frozen=True)
class Entry:
    """One pipeline as the filter sees it: the latest run's status, whether a stage waits for a person."""

    pipeline: str
    group: str
    status: str  # the latest run's status, or "never run"
    waiting: bool  # a stage of the latest run waits for approval
    paused: bool

    def has(self, status: str) -> bool:
        if status == "waiting":
            return self.waiting or self.status == "waiting"
        if status == "paused":
            return self.paused
        return self.status == status


@dataclass(frozen=True)
class BoardFilter:
    """What the person typed and chose; the empty filter matches every pipeline."""

    text: str = ""  # a part of the pipeline's name (case does not matter); words must all match
    group: str | None = None
    status: str | None = None  # one of STATUSES' keys

    def matches(self, e: Entry) -> bool:
        name = e.pipeline.lower()
        if any(w not in name for w in self.text.lower().split()):
            return False
        if self.group is not None and e.group != self.group:
            return False
        return self.status is None or e.has(self.status)


@dataclass(frozen=True)
class Page:
    entries: tuple[Entry, ...]  # the pipelines on this page, in the board's order
    number: int  # 1-based, clamped to the pages there are
    pages: int  # at least 1
    matched: int  # pipelines the filter matches
    total: int  # pipelines configured
    counts: Mapping[str, int]  # status → pipelines with it, over ALL pipelines (not only the matched ones)
    groups: tuple[str, ...]  # every group, in the board's order
    size: int = PAGE_SIZE

    @property
    def first(self) -> int:
        """The 1-based position of the page's first pipeline among the matched ones (0 when none match)."""
        return (self.number - 1) * self.size + 1 if self.entries else 0

    @property
    def last(self) -> int:
        return self.first + len(self.entries) - 1 if self.entries else 0

    def names(self) -> list[str]:
        return [e.pipeline for e in self.entries]


def index(rows: Iterable[Mapping[str, Any]]) -> tuple[Entry, ...]:
    """Entries from the board read's rows (``reads.board``), in its order (the config's)."""
    out = []
    for r in rows:
        waiting = any(s.get("status") == "waiting" for s in r.get("stages") or ())
        out.append(Entry(str(r["pipeline"]), str(r.get("group") or ""), str(r.get("status") or "never run"), waiting,
                         bool(r.get("paused"))))
    return tuple(out)


def counts(entries: Iterable[Entry]) -> dict[str, int]:
    """Every status's number of pipelines (a pipeline waiting for approval counts under its run's status too)."""
    entries = list(entries)
    c: Counter[str] = Counter(e.status for e in entries)
    c["waiting"] = sum(1 for e in entries if e.has("waiting"))
    c["paused"] = sum(1 for e in entries if e.paused)
    return {k: c.get(k, 0) for k, _ in STATUSES} | {k: v for k, v in c.items() if k not in dict(STATUSES)}


def page(entries: tuple[Entry, ...], flt: BoardFilter, number: int = 1, size: int = PAGE_SIZE) -> Page:
    """Page ``number`` (clamped) of the pipelines ``flt`` matches, with the counts of all of them."""
    if size < 1:
        raise ValueError(f"a page holds at least one pipeline (got {size})")
    matched = [e for e in entries if flt.matches(e)]
    pages = max(1, -(-len(matched) // size))
    number = min(max(1, int(number)), pages)
    groups = tuple(dict.fromkeys(e.group for e in entries))
    shown = tuple(matched[(number - 1) * size:number * size])
    return Page(shown, number, pages, len(matched), len(entries), counts(entries), groups, size)


def summary(p: Page) -> str:
    """The line above the board: every status's count, and which of the matched pipelines this page shows."""
    names = dict(STATUSES)
    parts = [f"{p.total:,} pipelines"] + [f"{p.counts[k]:,} {names[k]}" for k, _ in STATUSES if p.counts.get(k)]
    where = (f"showing {p.first:,}–{p.last:,} of {p.matched:,} matched, page {p.number} of {p.pages}"
             if p.matched else "no pipeline matches the filter")
    return " · ".join(parts) + " — " + where
