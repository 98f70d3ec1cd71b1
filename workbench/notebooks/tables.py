"""Store tables of the notebook feature: executed notebooks and recorded values.

Kept apart from the runner so that :mod:`workbench.record`, which runs inside
a kernel, can write a value without importing papermill.  The ``values`` of a
job are written by the job itself (its kernel or its script), straight into
the store named by ``WORKBENCH_STORE_URL``: no round trip through the engine,
so a value recorded just before a crash is not lost.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..store import schema as S
from ..store.frames import register_frame

if TYPE_CHECKING:
    import pandas as pd

    from ..store.frames import Frames

# One row per notebook task run: where the executed notebook is and, when it
# failed, which cell and with what error (papermill's cell index: 0-based, in
# the executed notebook, which has the injected-parameters cell).
notebook_runs = sa.Table(
    "notebook_runs",
    S.metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_run_id", sa.Integer, sa.ForeignKey("job_runs.id"), nullable=False),
    sa.Column("notebook", sa.Text, nullable=False),  # the source notebook, relative to the workspace
    sa.Column("executed_path", sa.Text, nullable=False),  # the executed notebook (file or fsspec URL)
    sa.Column("status", sa.String(16), nullable=False),  # running | passed | failed | timed_out | cancelled
    sa.Column("kernel", sa.String(255)),
    sa.Column("cell_index", sa.Integer),  # failing (or running, on timeout/kernel death) cell
    sa.Column("execution_count", sa.Integer),
    sa.Column("ename", sa.String(255)),
    sa.Column("evalue", sa.Text),
    sa.Column("parameters", sa.JSON),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
)
sa.Index("ix_notebook_runs_job", notebook_runs.c.job_run_id)

# ``workbench.record(key, value)``: named values a job hands to later analysis.
# (The table is not called ``values``: that is an SQL keyword, awkward in the
# raw SQL people type in notebooks.  The frame is ``ws.frames.values``.)
recorded_values = sa.Table(
    "recorded_values",
    S.metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("pipeline_runs.id")),
    sa.Column("stage_run_id", sa.Integer),
    sa.Column("job_run_id", sa.Integer),
    sa.Column("pipeline", sa.String(255)),
    sa.Column("counter", sa.Integer),
    sa.Column("stage", sa.String(255)),
    sa.Column("job", sa.String(255)),
    sa.Column("key", sa.String(255), nullable=False),
    sa.Column("value", sa.JSON),
    sa.Column("recorded_at", sa.Float, nullable=False),
)
sa.Index("ix_recorded_values_run", recorded_values.c.run_id)
sa.Index("ix_recorded_values_key", recorded_values.c.key)

S.register_migration("notebooks-1", S.tables_created_by(notebook_runs, recorded_values))


def _values_frame(frames: "Frames") -> "pd.DataFrame":
    """One row per recorded value, with the run's label; ``value`` is the decoded JSON."""
    v, pr = recorded_values, S.pipeline_runs
    q = (
        sa.select(
            v.c.id.label("value_id"), v.c.run_id, v.c.pipeline, v.c.counter, pr.c.label, v.c.stage, v.c.job,
            v.c.job_run_id, v.c.key, v.c.value, v.c.recorded_at.label("time"),
        )
        .select_from(v.outerjoin(pr, pr.c.id == v.c.run_id))
        .order_by(v.c.id)
    )
    df = frames.query(q)
    df["counter"] = df["counter"].astype("Int64")
    return frames.utc(df, "time")


def _notebook_runs_frame(frames: "Frames") -> "pd.DataFrame":
    """One row per executed notebook with its run, stage, job and failing cell."""
    nr, jr, sr, pr = notebook_runs, S.job_runs, S.stage_runs, S.pipeline_runs
    q = (
        sa.select(
            nr.c.id.label("notebook_run_id"), nr.c.job_run_id, pr.c.id.label("run_id"), pr.c.pipeline, pr.c.counter,
            pr.c.label, sr.c.name.label("stage"), sr.c.counter.label("stage_counter"), jr.c.name.label("job"),
            nr.c.notebook, nr.c.executed_path, nr.c.status, nr.c.kernel, nr.c.cell_index, nr.c.execution_count,
            nr.c.ename, nr.c.evalue, nr.c.parameters, nr.c.started_at, nr.c.finished_at,
        )
        .select_from(nr.join(jr, jr.c.id == nr.c.job_run_id).join(sr, sr.c.id == jr.c.stage_run_id)
                     .join(pr, pr.c.id == sr.c.pipeline_run_id))
        .order_by(nr.c.id)
    )
    df = frames.query(q)
    for c in ("cell_index", "execution_count"):
        df[c] = df[c].astype("Int64")
    df = frames.utc(df, "started_at", "finished_at")
    df["duration"] = df["finished_at"] - df["started_at"]
    return df


register_frame("values", _values_frame)
register_frame("notebook_runs", _notebook_runs_frame)
