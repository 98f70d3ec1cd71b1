"""Answers of the heavy reads (the board, pending approvals), kept until the store changes.

Fifty people watching the board ask for the same thousand rows many times a
second, and between two writes the answer cannot differ. Each entry is kept
with the store's :meth:`~workbench.store.Store.change_marker` read *before*
it was computed and the workspace's config object; any write committed since
(by this process or another: SQLite's ``data_version``) or a reloaded config
makes the next read compute it again. Concurrent misses of one key wait for a
single computation instead of all doing it. Where the store has no marker
(PostgreSQL) nothing is cached.

Callers get the cached object itself: treat it as read-only (the HTTP layer
serialises it once per entry; the CLI prints it).
"""
from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
MAX_ENTRIES = 64
INDEPENDENT = object()  # the ``config`` of an answer that does not depend on the config (history)

_caches: weakref.WeakKeyDictionary[Any, ReadCache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


class ReadCache:
    """Per store: key → (marker, config, value)."""

    def __init__(self) -> None:
        self._entries: dict[Any, tuple[Any, Any, Any]] = {}
        self._locks: dict[Any, threading.Lock] = {}
        self._lock = threading.Lock()
        self.computed = 0  # how many times a value was computed (tests check the cache works)

    def get(self, store: Any, config: Any, key: Any, compute: Callable[[], T]) -> T:
        marker = store.change_marker()
        if marker is None:
            return compute()
        hit = self._entries.get(key)
        if hit is not None and hit[0] == marker and hit[1] is config:
            return hit[2]
        with self._lock:
            if len(self._locks) > 4 * MAX_ENTRIES:
                self._locks.clear()  # a waiter holds its own reference; new callers get a new lock
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            marker = store.change_marker()  # read before computing: a write during it invalidates the entry
            hit = self._entries.get(key)
            if hit is not None and hit[0] == marker and hit[1] is config:
                return hit[2]
            value = compute()
            self.computed += 1
            if marker is not None:
                self._entries[key] = (marker, config, value)
                while len(self._entries) > MAX_ENTRIES:  # e.g. many history pages: the oldest go
                    self._entries.pop(next(iter(self._entries)))
            return value


def peek(ws: Any, key: Any, marker: Any = None) -> Any | None:
    """The value kept for ``key`` if nothing changed since it was computed, else None; never computes.

    Microseconds: the HTTP layer answers a fresh board from its event loop and
    sends only a miss to a worker thread (``workbench/server/fastreads.py``).
    ``marker``: the store's change marker if the caller has just read it.
    """
    config = ws.__dict__.get("config")  # not loaded yet: nothing depending on it can be cached for it
    if "store" not in ws.__dict__:
        return None
    cache = _caches.get(ws.store)
    if cache is None:
        return None
    if marker is None:
        marker = ws.store.change_marker()
    hit = cache._entries.get(key)
    if marker is None or hit is None or hit[0] != marker or (hit[1] is not config and hit[1] is not INDEPENDENT):
        return None
    return hit[2]


def cache_of(store: Any) -> ReadCache:
    with _caches_lock:
        cache = _caches.get(store)
        if cache is None:
            cache = _caches[store] = ReadCache()
        return cache


def cached(ws: Any, key: Any, compute: Callable[[], T], *, config: Any = None) -> T:
    """``compute()``, or its value from before when the store and ``config`` (default ``ws.config``) have not
    changed since; ``config=INDEPENDENT`` for an answer that does not depend on the config."""
    if config is None:
        config = ws.config  # config errors first, as the uncached read would raise them
    return cache_of(ws.store).get(ws.store, config, key, compute)
