"""Every chart's data from one computation per store version, brought up to date by what changed.

The dashboard's charts (lead time, deployment frequency, change fail rate,
recovery time, rework rate, stage durations) all derive from the same three
tables — deployments, lead times per commit, stage times — and those derive
from the same history frames. Reading the frames whole is the dominant cost
(a SQLite fetch of 50,000 stage runs alone is 0.2-0.4 s on a busy 2-core
box), so :class:`ChartSource` keeps them (:mod:`.livehistory`) and, when
the **store version** changes (:func:`version`: one aggregate query over the
history tables), reads only the rows that changed. Each derived table is
computed on first use and again only when what it is computed from changed
(a new incident leaves the lead times and stage times alone); every chart's
data is then a filter and a group-by over tables in memory, memoized per
period and bucket. The Gantt reads one run's rows (the store's
``run_detail``); the value stream walks the cached provenance.

Nothing here draws: :mod:`.charts` turns the data into figures.
"""
from __future__ import annotations

import threading
from dataclasses import replace
from functools import cached_property
from typing import Any, Callable

import pandas as pd
import sqlalchemy as sa

from ..metrics import Metrics
from . import charts, source
from .livehistory import SPECS, LiveHistory

# the history tables the charts read, and the columns whose change means the data changed
# (status transitions always set one of the times; counts and max(id) catch inserts and deletes)
_WATCHED = {
    "pipeline_runs": ("status", "created_at", "started_at", "finished_at"),
    "stage_runs": ("status", "created_at", "started_at", "finished_at"),
    "commits": (),
    "provenance": (),
    "incidents": ("opened_at", "resolved_at", "caused_by"),
    "deployment_marks": ("mark", "marked_at"),
    "rollbacks": ("at",),
    "audit": ("at",),
}


def _fingerprint_query() -> tuple[Any, list[tuple[str, int]]]:
    """The fingerprint's select, and which table each slice of its row describes."""
    from .. import features
    from ..status import ALL as STATUSES
    from ..store import schema as S

    features.load()  # feature modules define their tables
    tables = S.pipeline_runs.metadata.tables
    subs: list[Any] = []
    layout: list[tuple[str, int]] = []
    for name, watched in _WATCHED.items():
        t = tables.get(name)
        if t is None:
            continue
        parts: list[Any] = [sa.func.count(), sa.func.coalesce(sa.func.max(t.c.id), 0)]
        for i, c in enumerate(watched, start=1):
            col = t.c[c]
            if c in ("status", "mark"):
                values = list(STATUSES) if c == "status" else ["hotfix", "unplanned"]
                expr = sa.case({v: k + 1 for k, v in enumerate(values)}, value=col, else_=0)
            elif isinstance(col.type, sa.String):
                expr = sa.case((col.is_(None), 0), else_=1)
            else:
                expr = sa.func.coalesce(col, 0)
            parts.append(sa.func.coalesce(sa.func.sum(expr * i), 0))
        # one scan per table computes all its aggregates (a scalar subquery each scanned it once per aggregate)
        subs.append(sa.select(*(p.label(f"a{k}") for k, p in enumerate(parts))).select_from(t).subquery(f"fp_{name}"))
        layout.append((name, len(parts)))
    joined = subs[0]
    for sq in subs[1:]:  # each is one row: joined on true, not a cartesian FROM list (SQLAlchemy warns on those)
        joined = joined.join(sq, sa.true())
    return sa.select(*(c for sq in subs for c in sq.c)).select_from(joined), layout


_QUERY: Any = None
_LAYOUT: list[tuple[str, int]] = []


def version(store: Any) -> tuple[Any, ...]:
    """A value that changes whenever anything the charts show changes: one aggregate query (10-40 ms at 10k runs).

    Per table: row count, highest id, then a weighted sum of each watched
    column (``status`` first, as the sum of status codes, for
    :mod:`.livehistory`'s check); :func:`parts` splits it by table.
    """
    global _QUERY, _LAYOUT
    if _QUERY is None:
        _QUERY, _LAYOUT = _fingerprint_query()
    with store.read() as conn:
        return tuple(conn.execute(_QUERY).one())


def parts(v: tuple[Any, ...]) -> dict[str, tuple[Any, ...]]:
    """``version()``'s value by table: ``{"stage_runs": (count, max_id, Σstatus, ...), ...}``."""
    out, i = {}, 0
    for name, n in _LAYOUT:
        out[name] = tuple(v[i:i + n])
        i += n
    return out


class _Watch:
    """Has the store changed since we last looked? Microseconds on SQLite, one fingerprint query elsewhere.

    SQLite's ``PRAGMA data_version`` changes on a connection whenever another
    connection (of any process) commits; a connection kept for this alone
    therefore sees every write. Any write counts (job logs, heartbeats), so a
    change leads to the fingerprint (:func:`version`), which tells whether
    the charts' tables changed. PostgreSQL has no such counter: always the
    fingerprint.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self._raw: Any = None
        self._seen: Any = None
        self._lock = threading.Lock()

    def changed(self) -> bool:
        if not self.store.is_sqlite:
            return True
        with self._lock:
            try:
                if self._raw is None:
                    self._raw = self.store.engine.raw_connection()
                cur = self._raw.cursor()
                try:
                    cur.execute("PRAGMA data_version")
                    now = cur.fetchone()[0]
                finally:
                    cur.close()
            except Exception:  # noqa: BLE001  (a closed store, a driver without it: fall back to the fingerprint)
                self.close()
                return True
            changed, self._seen = now != self._seen, now
            return changed

    def close(self) -> None:
        if self._raw is not None:
            try:
                self._raw.close()
            except Exception:  # noqa: BLE001
                pass
            self._raw = None
            self._seen = None


class _Shared(Metrics):
    """Metrics whose deployments, lead times and stage times come from a ChartSource's cache, each on first use."""

    def __init__(self, source: "ChartSource", history: Any, rule: Any, keys: dict[str, tuple[int, int]], *,
                 since: Any = None, base: "_Shared | None" = None) -> None:
        super().__init__(history, rule, since=since)
        self.source, self.keys, self.base = source, keys, base

    @cached_property
    def deployments(self) -> pd.DataFrame:
        return self.base.deployments if self.base is not None else self.source._deployments(self)

    @cached_property
    def lead_times(self) -> pd.DataFrame:
        return self.base.lead_times if self.base is not None else self.source._lead_times(self)

    @cached_property
    def stage_times(self) -> pd.DataFrame:
        if self.base is not None:  # the period's stage runs only
            return Metrics.stage_times.func(self)  # type: ignore[attr-defined]
        return self.source._stage_times(self)


def _same_key(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if isinstance(x, pd.DataFrame) or isinstance(y, pd.DataFrame):
            if not (isinstance(x, pd.DataFrame) and isinstance(y, pd.DataFrame) and x.shape == y.shape and x.equals(y)):
                return False
        elif x != y:
            return False
    return True


class ChartSource:
    """The charts' data of one workspace, computed once per store version and period.

    ``days`` is the dashboard's period ("last N days", 0 for all history);
    ``freq`` its bucket (``D``, ``W``, ``M``). Thread-safe: the live refresh
    and a button click may ask at once.
    """

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self._lock = threading.RLock()
        self._version: tuple[Any, ...] | None = None
        self._watch = _Watch(ws.store)
        self._live = LiveHistory(ws.store, parts)  # the frames, brought up to date by reading what changed
        self._derived: dict[str, tuple[tuple[Any, ...], Any]] = {}  # name -> (inputs' key, table)
        self._serial: dict[str, int] = {}  # name -> how many times it was computed
        self.derived: dict[str, str] = {}  # name -> kept, updated or made, the last time it was asked
        self._base: Any = None  # Metrics over all history (deployments, lead times)
        self._memo: dict[tuple[Any, ...], Any] = {}
        self.loads = 0  # how many store versions were read (tests check the cache works)

    # -- the shared computation ----------------------------------------------------------
    def refresh(self) -> tuple[Any, ...]:
        """Check the store's version; read what changed and compute again only when it changed."""
        with self._lock:
            changed = self._watch.changed()  # first: a write after this look is seen by the next one
            if self._version is not None and not changed:
                return self._version
            v = version(self.ws.store)
            if v != self._version:
                self._live.update(v)
                self._base, self._version, self._memo = self._compute(), v, {}
                self.loads += 1
            return v

    @property
    def live(self) -> LiveHistory:
        """The frames in memory (what the last refresh read: ``live.stats``)."""
        return self._live

    def _compute(self) -> Any:
        """This version's whole-history Metrics; its deployments, lead times and stage times come on first use.

        Each chart computes only what it shows (the stage durations need no
        lead times), and each derived table is computed again only when what
        it is computed from changed: a new incident changes the deployments
        but neither the lead times nor the stage times; a CI run changes
        neither the deployments nor the provenance walk. ``keys`` is the
        frames' state at this version (``generation``: the content changed;
        ``epoch``: read whole, rows may have gone), so a Metrics of an older
        version asked late never files its tables under a newer key.
        """
        from ..metrics.model import DeployRule

        rule = DeployRule.from_config(self.ws.config)
        live = self._live
        keys = {s.key: (live.generation(s.key), live.epoch(s.key)) for s in SPECS}
        return _Shared(self, live.history(), rule, keys)

    def _deployments(self, m: "_Shared") -> pd.DataFrame:
        from ..metrics.dora import deployments

        h, rule, keys = m.history, m.rule, m.keys
        with self._lock:
            # deployments read only the production pipelines' runs and stages: a CI run changes none of them
            prod = list(rule.points)
            runs = h.runs.loc[h.runs["pipeline"].isin(prod)].reset_index(drop=True)
            stages = h.stages.loc[h.stages["pipeline"].isin(prod)].reset_index(drop=True)
            key = (rule, runs, stages, keys["incidents"], keys["marks"], keys["rollbacks"])
            return self._derive("deployments", key, lambda: deployments(replace(h, runs=runs, stages=stages), rule))

    def _lead_times(self, m: "_Shared") -> pd.DataFrame:
        from ..metrics.dora import lead_times, reach, reach_few

        h, keys, dep = m.history, m.keys, m.deployments
        with self._lock:
            ok = dep.loc[dep["outcome"] == "succeeded", ["run_id", "deployed_at", "pipeline", "group", "environment"]]
            ok = ok.reset_index(drop=True)
            # the provenance walk depends on which runs deployed when and on the provenance, not on the commits
            okk = ok[["run_id", "deployed_at"]]

            def more(old_key: tuple[Any, ...], old: pd.DataFrame) -> pd.DataFrame | None:
                """Same provenance and runs, deployments added: walk from the new ones only (each walk is its own)."""
                if not _same_key(old_key[1:], (keys["provenance"], keys["runs"][1])):
                    return None
                before = dict(zip(old_key[0]["run_id"].tolist(), old_key[0]["deployed_at"].tolist()))
                now = dict(zip(okk["run_id"].tolist(), okk["deployed_at"].tolist()))
                new = [r for r, t in now.items() if before.get(r) != t]
                gone = [r for r, t in before.items() if now.get(r) != t]
                if len(new) > 64:
                    return None  # many: one walk of them all costs the same
                kept = old.loc[~old["dep"].isin(gone)] if gone else old
                if not new:
                    return kept
                walked = reach_few(h.runs, self._parents(h, keys["provenance"]), dep.loc[dep["run_id"].isin(new)])
                if len(kept) and len(walked) and walked["deployed_at"].min() <= kept["deployed_at"].max():
                    return pd.concat([kept, walked]).sort_values(["deployed_at", "dep"], kind="stable")
                return pd.concat([kept, walked])  # the new deployments are the latest: already in order

            reached = self._derive("reach", (okk, keys["provenance"], keys["runs"][1]),
                                   lambda: reach(h.runs, h.provenance, dep), more)
            ids = h.runs["run_id"]
            runs_key = (len(ids), int(ids.min()) if len(ids) else 0, int(ids.max()) if len(ids) else 0, keys["runs"][1])
            return self._derive("lead_times", (keys["commits"], runs_key, ok, self._serial["reach"]),
                                lambda: lead_times(h, dep, reached=reached))

    def _parents(self, h: Any, key: Any) -> dict[int, list[int]]:
        """The provenance as a dict (run -> its upstream runs), kept while the provenance is the same."""
        from ..metrics.dora import parents_of

        return self._derive("parents", (key,), lambda: parents_of(h.provenance))

    def _stage_times(self, m: "_Shared") -> pd.DataFrame:
        from ..metrics.stages import stage_times

        with self._lock:
            return self._derive("stage_times", (m.keys["stages"], m.keys["approvals"]), lambda: stage_times(m.history))

    def _derive(self, name: str, key: tuple[Any, ...], make: Callable[[], Any],
                update: Callable[[tuple[Any, ...], Any], Any] | None = None) -> Any:
        """``make()``, or the table made last time when ``key`` (what it is computed from) is the same.

        ``update(old_key, old_table)`` may bring the old table up to date
        for less than ``make()`` costs, or return None.
        """
        got = self._derived.get(name)
        if got is not None and _same_key(got[0], key):
            self.derived[name] = "kept"
            return got[1]
        value = update(*got) if got is not None and update is not None else None
        self.derived[name] = "updated"
        if value is None:
            value = make()
            self.derived[name] = "made"
        self._derived[name] = (key, value)
        self._serial[name] = self._serial.get(name, 0) + 1  # a key for what is computed from this table
        return value

    def close(self) -> None:
        self._watch.close()

    def metrics(self, days: int = 0) -> Any:
        """The :class:`~workbench.metrics.Metrics` of the period, sharing the version's deployments and lead times."""
        self.refresh()
        since = None
        if days:
            # to the minute: "last 7 days" asked twice in a minute is the same period (and cache entry)
            since = (pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=days)).floor("min")
        return self._get(("metrics", since), lambda: self._period_metrics(since))

    def _period_metrics(self, since: Any) -> Any:
        base = self._base
        if since is None:
            return base
        # both cover the whole history (recoveries cross periods): the period's share the base's, on first use
        return _Shared(self, base.history, base.rule, base.keys, since=since, base=base)

    def _get(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._memo:
                self._memo[key] = make()
            return self._memo[key]

    # -- one function per chart --------------------------------------------------------------
    def lead_time(self, days: int = 0, freq: str = "W") -> pd.DataFrame:
        m = self.metrics(days)
        return self._get(("lead", m.period, freq), lambda: charts.lead_time_data(m.lead_times, m.period, freq))

    def frequency(self, days: int = 0, freq: str = "W") -> pd.DataFrame:
        m = self.metrics(days)
        return self._get(("freq", m.period, freq), lambda: m.frequency(freq))

    def change_fail_rate(self, days: int = 0, freq: str = "W") -> pd.DataFrame:
        m = self.metrics(days)
        return self._get(("cfr", m.period, freq),
                         lambda: charts.rate_data(m.deployments, "failed_change", m.period, freq))

    def recovery(self, days: int = 0) -> pd.DataFrame:
        m = self.metrics(days)
        return self._get(("recovery", m.period), lambda: charts.recovery_data(m.deployments, m.period))

    def rework_rate(self, days: int = 0, freq: str = "W") -> pd.DataFrame:
        m = self.metrics(days)
        return self._get(("rework", m.period, freq), lambda: charts.rate_data(m.deployments, "rework", m.period, freq))

    def stage_durations(self, days: int = 0) -> pd.DataFrame:
        m = self.metrics(days)
        return self._get(("stages", m.period), lambda: charts.stage_duration_data(m.stage_times))

    def gantt(self, run_id: int) -> pd.DataFrame:
        """One run's bars, from that run's rows only (it may be running: never cached)."""
        stages, jobs = source.run_frames(self.ws.store, int(run_id))
        return charts.gantt_data(stages, jobs, int(run_id))

    def value_stream(self, run_id: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        self.refresh()
        h = self._base.history
        return self._get(("stream", int(run_id)), lambda: charts.value_stream_data(h, int(run_id)))

    def all(self, days: int = 0, freq: str = "W") -> dict[str, Any]:
        """Every metrics chart's data (what the dashboard's Metrics tab draws)."""
        return {"lead": self.lead_time(days, freq), "freq": self.frequency(days, freq),
                "cfr": self.change_fail_rate(days, freq), "recovery": self.recovery(days),
                "rework": self.rework_rate(days, freq), "stages": self.stage_durations(days)}
