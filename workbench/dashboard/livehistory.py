"""The charts' input frames, kept in memory and brought up to date by reading only what changed.

Reading the whole history again after every change (a new incident, a stage
finishing) costs 0.6-0.9 s at 10,000 pipeline runs, almost all of it the
SQL fetch and DataFrame conversion of 50,000 stage rows and 10,000 run rows
that have not changed. :class:`LiveHistory` keeps the frames read last time
and, per table, reads only:

* **runs and stages** (rows change while a run progresses, and again when an
  old run's stage is rerun): rows with a new id, rows open when last read,
  and rows unfinished in the store or finished at or after the watermark
  (the latest time read last time, less :data:`SLACK` for writers' clock
  skew). The workbench's writes to an existing row either leave it
  unfinished (start, wait, rerun) or finish it "now" (pass, fail, cancel,
  reject, roll back), so these are all the rows that can differ. The
  merged frame is then checked against the store's
  fingerprint (row count, highest id, sum of status codes); anything that
  does not add up — a deletion, a status change the rule did not foresee, a
  write racing the read — makes that table read whole again.
* **commits, provenance, audit** (append-only): the ids between the last
  highest id and the fingerprint's; fewer rows than the count grew by (a
  deletion) means a whole read.
* **incidents, marks, rollbacks** (small, edited in place): read whole when
  their fingerprint changed.

Only the columns the metrics use are kept (``COLUMNS`` in
:mod:`workbench.metrics.model`), so what stays in memory is exactly what
the checks above keep right. The result equals a fresh full read; the tests
in tests/test_chartdata_incremental.py compare the two after every kind of
change.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable

import numpy as np
import pandas as pd
import sqlalchemy as sa

from ..metrics.model import ALIASES, COLUMNS, History, normalize
from ..status import ALL as STATUSES
from ..status import ACTIVE
from ..store.frames import Frames

SLACK = 60.0  # seconds: a writer whose clock is behind by less than this is still seen by the watermark
_NEVER = 1e18  # an unfinished row's finish time, as far as the watermark is concerned
MAX_OPEN = 2000  # open rows re-read by id; more than that (a stuck store) and a whole read is as cheap


@dataclass(frozen=True)
class Spec:
    """One input of the metrics: its History key, frame, table, and how its rows change."""

    key: str  # History field
    frame: str  # ws.frames name
    table: str  # the SQL table the frame's rows come from
    kind: str  # "mutable" | "append" | "small"
    id_col: str | None = None  # the frame column holding the table's id (mutable tables)


SPECS = (
    Spec("runs", "pipeline_runs", "pipeline_runs", "mutable", "run_id"),
    Spec("stages", "stage_runs", "stage_runs", "mutable", "stage_run_id"),
    Spec("commits", "commits", "commits", "append"),
    Spec("provenance", "provenance", "provenance", "append"),
    Spec("approvals", "approvals", "audit", "append"),
    Spec("incidents", "incidents", "incidents", "small"),
    Spec("marks", "deployment_marks", "deployment_marks", "small"),
    Spec("rollbacks", "rollbacks", "rollbacks", "small"),
)


def _table(name: str) -> sa.Table:
    from ..store import schema as S

    return S.pipeline_runs.metadata.tables[name]


class _Where(Frames):
    """The store's frames with one more WHERE on their main table: the frame builders stay the only queries."""

    def __init__(self, store: Any, cond: Any) -> None:
        super().__init__(store)
        self._cond = cond

    def _query(self, q: Any) -> pd.DataFrame:
        return super()._query(q.where(self._cond))


def _build(store: Any, spec: Spec, cond: Any = None) -> pd.DataFrame:
    frames = Frames(store) if cond is None else _Where(store, cond)
    df = getattr(frames, spec.frame)
    if spec.kind == "small":
        return df.reset_index(drop=True)
    keep = set(COLUMNS[spec.key]) | {a for alts in ALIASES.get(spec.key, {}).values() for a in alts}
    return _canon(df[[c for c in df.columns if c in keep]].reset_index(drop=True))


def status_codes(s: pd.Series) -> int:
    """Σ status codes as the fingerprint counts them (1-based position in ``STATUSES``, 0 for others)."""
    if isinstance(s.dtype, pd.CategoricalDtype) and list(s.cat.categories) == list(STATUSES):
        codes = s.cat.codes.to_numpy()  # the frames' own dtype: no string hashing (10 ms at 50k rows)
    else:
        codes = pd.Categorical(s.astype("object"), categories=list(STATUSES)).codes
    return int((codes.astype("int64") + 1).sum())


@dataclass
class _State:
    frame: pd.DataFrame
    seen: tuple[Any, ...]  # the table's fingerprint when ``frame`` was read
    generation: int = 0  # bumped whenever the frame's content changed
    epoch: int = 0  # bumped whenever the table was read whole again (rows may have gone)
    summary: tuple[float, frozenset[int]] | None = None  # mutable tables: watermark and open ids (None: compute)


@dataclass
class Stats:
    """What the last :meth:`LiveHistory.update` did, per table: ``skip``, ``rows`` (incremental) or ``full``."""

    how: dict[str, str] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)


class LiveHistory:
    """The history frames of one store, updated in place from a fingerprint (see :mod:`.chartdata`)."""

    def __init__(self, store: Any, parts: Callable[[tuple[Any, ...]], dict[str, tuple[Any, ...]]]) -> None:
        self.store = store
        self._parts = parts
        self._state: dict[str, _State] = {}
        self._normal: dict[str, tuple[Any, pd.DataFrame]] = {}  # History field -> (frame's tag, normalized)
        self.stats = Stats()
        self.full_reads = 0  # tables read whole (the first time, and each fallback)

    def generation(self, *keys: str) -> tuple[int, ...]:
        """Per table, a number that changes whenever its frame's content changed."""
        return tuple(self._state[k].generation if k in self._state else -1 for k in keys)

    def epoch(self, *keys: str) -> tuple[int, ...]:
        """Per table, a number that changes whenever it was read whole again (rows may have been deleted)."""
        return tuple(self._state[k].epoch if k in self._state else -1 for k in keys)

    def frame(self, key: str) -> pd.DataFrame | None:
        st = self._state.get(key)
        return None if st is None else st.frame

    def history(self) -> History:
        """The frames as a :class:`History` (normalized once per content: 10 ms saved per version)."""
        frames = {}
        for f in fields(History):
            st = self._state.get(f.name)
            tag = (st.generation, st.epoch, id(st.frame)) if st is not None else None
            got = self._normal.get(f.name)
            if got is None or got[0] != tag:
                got = (tag, normalize(f.name, st.frame if st is not None else None))
                self._normal[f.name] = got
            frames[f.name] = got[1]
        return History(**frames)

    def update(self, version: tuple[Any, ...]) -> None:
        """Bring every frame up to the store as ``version`` (the fingerprint just taken) describes it."""
        from .. import features

        features.load()
        parts = self._parts(version)
        available = set(Frames(self.store).names())
        self.stats = Stats()
        for spec in SPECS:
            if spec.frame not in available or spec.table not in parts:
                continue
            fp = parts[spec.table]
            st = self._state.get(spec.key)
            if st is not None and st.seen == fp:
                self.stats.how[spec.key] = "skip"
                continue
            frame = None
            if st is not None:
                try:
                    frame = self._incremental(spec, st, fp)
                except Exception:  # noqa: BLE001  (anything unexpected: the whole read below is always right)
                    frame = None
            if frame is None:
                frame = _build(self.store, spec)
                self.full_reads += 1
                self.stats.how[spec.key] = "full"
                self.stats.rows[spec.key] = len(frame)
                changed = st is None or not _same(st.frame, frame)
            else:
                frame, changed = frame
            if st is None:
                self._state[spec.key] = _State(frame, fp)
            else:
                st.frame, st.seen = frame, fp
                if self.stats.how[spec.key] == "full":
                    st.summary = None
                if changed:
                    st.generation += 1
                if self.stats.how[spec.key] == "full":
                    st.epoch += 1

    # -- one table -------------------------------------------------------------------------------
    def _incremental(self, spec: Spec, st: _State, fp: tuple[Any, ...]) -> tuple[pd.DataFrame, bool] | None:
        """The table's new frame and whether it changed, or None when only a whole read is safe."""
        if spec.kind == "small":
            return None
        count, top = int(fp[0]), int(fp[1])
        seen_count, seen_top = int(st.seen[0]), int(st.seen[1])
        if count < seen_count or top < seen_top:
            return None  # rows were deleted
        t = _table(spec.table)
        if spec.kind == "append":
            if top == seen_top:
                return (st.frame, False) if count == seen_count else None
            with self.store.read() as conn:
                added = conn.execute(sa.select(sa.func.count()).select_from(t)
                                     .where(t.c.id > seen_top, t.c.id <= top)).scalar_one()
            if count - seen_count != added:
                return None  # some rows went while others came
            new = _build(self.store, spec, sa.and_(t.c.id > seen_top, t.c.id <= top))
            self.stats.how[spec.key], self.stats.rows[spec.key] = "rows", len(new)
            return _append(st.frame, new), len(new) > 0
        return self._mutable(spec, st, fp, t)

    def _mutable(self, spec: Spec, st: _State, fp: tuple[Any, ...], t: sa.Table) -> tuple[pd.DataFrame, bool] | None:
        old, idc = st.frame, spec.id_col
        mark, still_open = st.summary if st.summary is not None else _summary(old, idc)
        open_ids = sorted(still_open)
        if len(open_ids) > MAX_OPEN:
            return None
        since = mark - SLACK
        top, seen_top = int(fp[1]), int(st.seen[1])
        # new rows, rows unfinished now or finished since the watermark, rows open when last read. Nothing
        # else: a started row is unfinished or finished since; a row created since has a new id (or, committed
        # out of id order, fails the count check). One predicate per kind: the scan costs per predicate.
        cond = sa.or_(
            t.c.id > seen_top,
            sa.func.coalesce(t.c.finished_at, _NEVER) >= since,
            *([t.c.id.in_(open_ids)] if open_ids else []),
        )
        new = _build(self.store, spec, sa.and_(t.c.id <= top, cond))
        self.stats.how[spec.key], self.stats.rows[spec.key] = "rows", len(new)
        merged, changed = _replace(old, new, idc)
        # the check: the merged rows must add up to what the store says it holds
        if (len(merged) != int(fp[0]) or (len(merged) and int(merged[idc].max()) != top)
                or status_codes(merged["status"]) != int(fp[2])):
            return None
        # only the rows read can have changed: the watermark and open rows follow from them
        new_mark, new_open = _summary(new, idc)
        st.summary = (max(mark, new_mark), (still_open - set(new[idc].tolist())) | new_open)
        return merged, changed


def _summary(df: pd.DataFrame, idc: str) -> tuple[float, frozenset[int]]:
    """The latest time in ``df`` (epoch seconds, 0 for none) and the ids of its open rows."""
    mark = df[["created_at", "started_at", "finished_at"]].max().max()
    open_rows = df["finished_at"].isna() | df["status"].isin([s.value for s in ACTIVE])
    return (mark.timestamp() if not pd.isna(mark) else 0.0), frozenset(int(i) for i in df.loc[open_rows, idc])


def _canon(df: pd.DataFrame) -> pd.DataFrame:
    """Text columns typed as a whole read types them: pandas infers ``str`` only when a value is text.

    A slice whose column is all None is ``object``; glued to a ``str``
    column it stays ``object`` where a whole read gives ``str``.
    """
    for c in df.columns:
        col = df[c]
        if col.dtype == object and pd.api.types.infer_dtype(col, skipna=True) == "string":
            df[c] = col.astype("str")
    return df


def _same(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    try:
        return a.shape == b.shape and a.equals(b)
    except Exception:  # noqa: BLE001
        return False


def _append(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    if new.empty:
        return old
    if old.empty:
        return new
    return _canon(pd.concat([old, new], ignore_index=True))


def _replace(old: pd.DataFrame, new: pd.DataFrame, idc: str) -> tuple[pd.DataFrame, bool]:
    """``old`` (ordered by id) with the rows of ``new`` put in by id; and whether anything differs.

    Rows already there are overwritten in place and new ids appended: no
    50,000-row sort or filter for the handful of rows a change touches.
    """
    if new.empty:
        return old, False
    if old.empty:
        return _canon(new.reset_index(drop=True)), True
    have = old[idc].to_numpy()
    ids = new[idc].to_numpy()
    pos = np.minimum(np.searchsorted(have, ids), len(have) - 1)
    found = have[pos] == ids
    upd, add = new.loc[found].reset_index(drop=True), new.loc[~found]
    if len(add) and int(add[idc].min()) <= int(have[-1]):  # a row committed out of id order: merge and sort
        out = pd.concat([old.loc[~old[idc].isin(ids)], new], ignore_index=True)
        return _canon(out.sort_values(idc, kind="stable").reset_index(drop=True)), True
    out, changed = old, False
    rows = pos[found]
    if len(upd):
        before = old.iloc[rows].reset_index(drop=True)
        cols = [j for j, c in enumerate(old.columns) if not before[c].equals(upd[c])]
        if cols:  # only the columns that changed (a status and a time, typically): ~1 ms per column assigned
            out, changed = old.copy(), True
            for j in cols:
                out.iloc[rows, j] = upd[old.columns[j]].array
    if len(add):
        out, changed = pd.concat([out, add], ignore_index=True), True
    return (_canon(out) if changed else out), changed


__all__ = ["LiveHistory", "SLACK", "SPECS", "Spec", "status_codes"]
