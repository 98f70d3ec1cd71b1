"""The board's read: every pipeline's latest run with its stages, in three joined queries.

``latest_runs`` plus ``run_details`` built a :class:`PipelineRun`, every
:class:`StageRun` and a chunked ``IN (...)`` query per 500 runs: ~1.2 s at
10,000 pipelines (benchmarks/README.md, issue 17). The board needs a few
columns of each, so these queries join on the latest counter of each pipeline
(``uq_pipeline_counter`` answers the ``MAX(counter) ... GROUP BY`` from the
index alone on SQLite and PostgreSQL) and return plain tuples. The rows are
the same the old read gave: ``tests/test_board_view.py`` compares them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

_LATEST = ("SELECT pr.id, pr.pipeline, pr.counter, pr.label, pr.status, pr.reason, pr.created_at, pr.started_at, "
           "pr.finished_at FROM pipeline_runs pr JOIN (SELECT pipeline, MAX(counter) AS c FROM pipeline_runs "
           "GROUP BY pipeline) l ON pr.pipeline = l.pipeline AND pr.counter = l.c")
_STAGES = (
    "SELECT sr.id, sr.pipeline_run_id, sr.name, sr.counter, sr.status, sr.approved_by, sr.started_at, "
    f"sr.finished_at FROM stage_runs sr JOIN ({_LATEST}) r ON sr.pipeline_run_id = r.id "
    "ORDER BY sr.pipeline_run_id, sr.position, sr.counter")
# jobs waiting with a reason ("waiting for an agent with resources rpm"): few, found through ix_job_runs_status
_WAITING = (
    "SELECT jr.stage_run_id, jr.name, jr.reason FROM job_runs jr JOIN stage_runs sr ON sr.id = jr.stage_run_id "
    f"JOIN ({_LATEST}) r ON sr.pipeline_run_id = r.id "
    "WHERE jr.status = 'scheduled' AND jr.reason IS NOT NULL ORDER BY jr.id")


@dataclass(frozen=True)
class BoardRun:
    """A pipeline's latest run as the board shows it; ``stages`` are the latest counter of each stage name in
    run order as (name, counter, status, approved_by, started_at, finished_at); ``waiting`` (stage, job,
    reason) of the jobs of those stages still scheduled with a reason."""

    id: int
    pipeline: str
    counter: int
    label: str
    status: str
    reason: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    stages: tuple[tuple[Any, ...], ...]
    waiting: tuple[tuple[str, str, str], ...]


def board_runs(conn: sa.Connection) -> dict[str, BoardRun]:
    """Pipeline name → its latest :class:`BoardRun`, for every pipeline with a run."""
    # the driver's own cursor (sqlite3, psycopg): the statements have no parameters, and 50,000 stage rows
    # through SQLAlchemy's Row objects cost about as much again as the query
    cur = conn.connection.cursor()
    try:
        return _board_runs(cur)
    finally:
        cur.close()


def _board_runs(cur: Any) -> dict[str, BoardRun]:
    cur.execute(_LATEST)
    runs = cur.fetchall()
    latest: dict[int, dict[str, tuple[Any, ...]]] = {r[0]: {} for r in runs}
    stage_ids: dict[int, tuple[int, int, str]] = {}  # latest stage run id → (run id, order, name)
    for sid, rid, name, counter, status, by, started, finished in _all(cur, _STAGES):
        stages = latest.get(rid)
        if stages is None:  # a run newer than the first query's (a write between them): shown next time
            continue
        old = stages.get(name)
        if old is None or counter > old[1]:
            stages[name] = (name, counter, status, by, started, finished, sid)
    for rid, stages in latest.items():
        for i, s in enumerate(stages.values()):
            stage_ids[s[6]] = (rid, i, s[0])
    waiting: dict[int, list[tuple[int, str, str, str]]] = {}
    for sid, job, reason in _all(cur, _WAITING):
        where = stage_ids.get(sid)
        if where is not None:
            waiting.setdefault(where[0], []).append((where[1], where[2], job, reason))
    out = {}
    for rid, pipeline, counter, label, status, reason, created, started, finished in runs:
        w = sorted(waiting.get(rid, ()), key=lambda x: x[0])  # stage order, then job id (stable)
        out[pipeline] = BoardRun(rid, pipeline, counter, label, status, reason, created, started, finished,
                                 tuple(s[:6] for s in latest[rid].values()), tuple(x[1:] for x in w))
    return out


def _all(cur: Any, sql: str) -> list[tuple[Any, ...]]:
    cur.execute(sql)
    return cur.fetchall()
