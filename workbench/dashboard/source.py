"""Reading what the live parts of the dashboard need, cheaply enough to do every second or two.

The board needs the latest few runs of each pipeline, not the history: one
windowed query (``ROW_NUMBER() OVER (PARTITION BY pipeline …)``) and one for
their stage runs, whatever the history's size. Charts read the full frames,
on their own slower refresh.
"""
from __future__ import annotations

from typing import Any, Iterable

import pandas as pd
import sqlalchemy as sa

from ..store import schema as S
from ..store.frames import Frames


def latest_runs(store: Any, per_pipeline: int = 3,
                pipelines: Iterable[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The newest ``per_pipeline`` runs of every pipeline (of ``pipelines`` only, when given: the board's
    page) and all their stage runs."""
    pr, sr = S.pipeline_runs, S.stage_runs
    rn = sa.func.row_number().over(partition_by=pr.c.pipeline, order_by=pr.c.counter.desc()).label("rn")
    inner = sa.select(pr.c.id.label("run_id"), pr.c.pipeline, pr.c.counter, pr.c.label, pr.c.group_name, pr.c.status,
                      pr.c.created_at, pr.c.started_at, pr.c.finished_at, rn)
    if pipelines is not None:
        inner = inner.where(pr.c.pipeline.in_(sorted(set(pipelines)) or [""]))
    sub = inner.subquery()
    q = sa.select(*(c for c in sub.c if c.name != "rn")).where(sub.c.rn <= per_pipeline)
    frames = Frames(store)
    runs = frames.query(q)
    if runs.empty:
        stages = frames.query(sa.select(sr.c.id.label("stage_run_id"), sr.c.pipeline_run_id.label("run_id"),
                                        sr.c.name.label("stage"), sr.c.position, sr.c.counter.label("stage_counter"),
                                        sr.c.status, sr.c.approval_type, sr.c.created_at, sr.c.started_at,
                                        sr.c.finished_at).where(sa.false()))
    else:
        ids = [int(i) for i in runs["run_id"]]
        stages = frames.query(sa.select(
            sr.c.id.label("stage_run_id"), sr.c.pipeline_run_id.label("run_id"), sr.c.name.label("stage"), sr.c.position,
            sr.c.counter.label("stage_counter"), sr.c.status, sr.c.approval_type, sr.c.created_at, sr.c.started_at,
            sr.c.finished_at,
        ).where(sr.c.pipeline_run_id.in_(ids)))
    Frames.utc(runs, "created_at", "started_at", "finished_at")
    Frames.utc(stages, "created_at", "started_at", "finished_at")
    return runs, stages


def layout(cfg: Any, names: Iterable[str] | None = None) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """Pipeline → configured stage names, and pipeline → group, in the config's order (of ``names`` only, in
    their order, when given: the board's page)."""
    pipes = cfg.pipelines if names is None else {n: cfg.pipelines[n] for n in names if n in cfg.pipelines}
    return ({n: tuple(s.name for s in p.stages) for n, p in pipes.items()}, {n: p.group for n, p in pipes.items()})


def recent_runs(store: Any, limit: int = 200) -> list[tuple[str, int]]:
    """(label for a dropdown, run id), newest first."""
    pr = S.pipeline_runs
    q = sa.select(pr.c.id, pr.c.pipeline, pr.c.counter, pr.c.label, pr.c.status).order_by(pr.c.id.desc()).limit(limit)
    with store.read() as conn:
        return [(f"{r.pipeline} #{r.counter} ({r.label}) · {r.status}", int(r.id)) for r in conn.execute(q)]


def run_frames(store: Any, run_id: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One run's stage runs and job runs (for its Gantt), without reading the history."""
    d = store.run_detail(int(run_id))
    to_ts = lambda t: pd.Timestamp(t, unit="s", tz="UTC") if t is not None else pd.NaT  # noqa: E731
    stages = pd.DataFrame([{
        "stage_run_id": s.id, "run_id": s.pipeline_run_id, "stage": s.name, "position": s.position,
        "stage_counter": s.counter, "status": s.status.value, "approval_type": s.approval_type,
        "created_at": to_ts(s.created_at), "started_at": to_ts(s.started_at), "finished_at": to_ts(s.finished_at),
    } for s in d.stages], columns=["stage_run_id", "run_id", "stage", "position", "stage_counter", "status",
                                   "approval_type", "created_at", "started_at", "finished_at"])
    jobs = pd.DataFrame([{
        "job_run_id": j.id, "stage_run_id": j.stage_run_id, "run_id": d.run.id, "job": j.name, "status": j.status.value,
        "started_at": to_ts(j.started_at), "finished_at": to_ts(j.finished_at),
    } for js in d.jobs.values() for j in js], columns=["job_run_id", "stage_run_id", "run_id", "job", "status",
                                                       "started_at", "finished_at"])
    return stages, jobs
