"""Store tables of artifacts: one row per stored file (with its SHA-256) and per test case."""
from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..store import schema as S
from ..store.frames import register_frame

if TYPE_CHECKING:
    import pandas as pd

    from ..store.frames import Frames

artifacts = sa.Table(
    "artifacts",
    S.metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_run_id", sa.Integer, sa.ForeignKey("job_runs.id"), nullable=False),
    sa.Column("type", sa.String(16), nullable=False),  # build | test | notebook
    sa.Column("path", sa.Text, nullable=False),  # relative to the job's artifact folder
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("url", sa.Text, nullable=False),  # where it is in the artifact store
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("job_run_id", "path", name="uq_artifact_path"),
)
sa.Index("ix_artifacts_job", artifacts.c.job_run_id)

test_results = sa.Table(
    "test_results",
    S.metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_run_id", sa.Integer, sa.ForeignKey("job_runs.id"), nullable=False),
    sa.Column("file", sa.Text, nullable=False),  # the JUnit report, relative to the job's artifact folder
    sa.Column("suite", sa.Text),
    sa.Column("classname", sa.Text),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # passed | failed | error | skipped
    sa.Column("duration", sa.Float),  # seconds
    sa.Column("message", sa.Text),
)
sa.Index("ix_test_results_job", test_results.c.job_run_id)

S.register_migration("artifacts-1", S.tables_created_by(artifacts, test_results))


def _job_columns() -> list[sa.ColumnElement]:
    jr, sr, pr = S.job_runs, S.stage_runs, S.pipeline_runs
    return [pr.c.id.label("run_id"), pr.c.pipeline, pr.c.counter, pr.c.label, sr.c.name.label("stage"),
            sr.c.counter.label("stage_counter"), jr.c.name.label("job")]


def _joined(table: sa.Table) -> sa.FromClause:
    jr, sr, pr = S.job_runs, S.stage_runs, S.pipeline_runs
    return (table.join(jr, jr.c.id == table.c.job_run_id).join(sr, sr.c.id == jr.c.stage_run_id)
            .join(pr, pr.c.id == sr.c.pipeline_run_id))


def _artifacts_frame(frames: "Frames") -> "pd.DataFrame":
    """One row per stored artifact file with its checksum and run."""
    a = artifacts
    q = sa.select(a.c.id.label("artifact_id"), a.c.job_run_id, *_job_columns(), a.c.type, a.c.path, a.c.size,
                  a.c.sha256, a.c.url, a.c.created_at).select_from(_joined(a)).order_by(a.c.id)
    return frames.utc(frames.query(q), "created_at")


def _test_results_frame(frames: "Frames") -> "pd.DataFrame":
    """One row per test case of every JUnit report published as a ``test`` artifact."""
    import pandas as pd

    t = test_results
    q = sa.select(t.c.id.label("test_id"), t.c.job_run_id, *_job_columns(), t.c.file, t.c.suite, t.c.classname,
                  t.c.name, t.c.status, t.c.duration, t.c.message).select_from(_joined(t)).order_by(t.c.id)
    df = frames.query(q)
    df["status"] = pd.Categorical(df["status"], categories=["passed", "failed", "error", "skipped"])
    df["duration"] = pd.to_timedelta(df["duration"].astype("float64"), unit="s")
    return df


register_frame("artifacts", _artifacts_frame)
register_frame("test_results", _test_results_frame)
