"""Tables of the run-history store and the migrations that create them.

Plain SQLAlchemy Core so that the same schema serves SQLite (the default) and
PostgreSQL. Times are UTC epoch seconds (floats): exact, cheap to write on the
hot path, and turned into tz-aware datetimes by the frames. Every schema change
is a new named entry in ``MIGRATIONS``; a store that has migrations this
code does not know is refused rather than silently used.
"""
from __future__ import annotations

from typing import Callable

import sqlalchemy as sa

metadata = sa.MetaData()

meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

pipeline_counters = sa.Table(
    "pipeline_counters",
    metadata,
    sa.Column("pipeline", sa.String(255), primary_key=True),
    sa.Column("counter", sa.Integer, nullable=False),
)

pipeline_runs = sa.Table(
    "pipeline_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("pipeline", sa.String(255), nullable=False),
    sa.Column("counter", sa.Integer, nullable=False),
    sa.Column("label", sa.String(255), nullable=False),
    sa.Column("group_name", sa.String(255), nullable=False, default="defaultGroup"),
    sa.Column("trigger", sa.String(32), nullable=False),  # manual | material | timer | dependency
    sa.Column("triggered_by", sa.String(255), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("revisions", sa.JSON, nullable=False, default=dict),  # material name -> revision
    sa.Column("revision_key", sa.String(255)),  # canonical revision set, for at-most-once triggering
    sa.Column("environment", sa.String(255)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.UniqueConstraint("pipeline", "counter", name="uq_pipeline_counter"),
    sa.UniqueConstraint("pipeline", "revision_key", name="uq_pipeline_revision_key"),
)
sa.Index("ix_pipeline_runs_status", pipeline_runs.c.status)
# a pipeline's runs newest first (``history -p``): without it PostgreSQL walks the primary key backwards
# through every pipeline's runs, and SQLite sorts all of the pipeline's runs, for the newest 50
ix_pipeline_runs_pipeline_id = sa.Index("ix_pipeline_runs_pipeline_id", pipeline_runs.c.pipeline, pipeline_runs.c.id)

stage_runs = sa.Table(
    "stage_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("pipeline_run_id", sa.Integer, sa.ForeignKey("pipeline_runs.id"), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),  # index of the stage in the pipeline
    sa.Column("counter", sa.Integer, nullable=False),  # GoCD's stage counter (reruns)
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("approval_type", sa.String(16), nullable=False, default="success"),
    sa.Column("approved_by", sa.String(255)),
    sa.Column("reason", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.UniqueConstraint("pipeline_run_id", "name", "counter", name="uq_stage_counter"),
)
sa.Index("ix_stage_runs_run", stage_runs.c.pipeline_run_id)

job_runs = sa.Table(
    "job_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("stage_run_id", sa.Integer, sa.ForeignKey("stage_runs.id"), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("run_index", sa.Integer, nullable=False, default=1),
    sa.Column("run_count", sa.Integer, nullable=False, default=1),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("agent", sa.String(255)),
    sa.Column("exit_code", sa.Integer),
    sa.Column("reason", sa.Text),
    sa.Column("log_path", sa.Text),
    sa.Column("owner", sa.String(255)),  # host:pid of the process running it (crash recovery)
    sa.Column("heartbeat_at", sa.Float),
    # the process group of the task it runs and its leader's identity (``host boot_id start_ticks``), so that
    # recovery stops the group a dead engine left behind, and never a stranger that reused the pid
    sa.Column("pgid", sa.Integer),
    sa.Column("pgid_identity", sa.String(255)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
)
sa.Index("ix_job_runs_stage", job_runs.c.stage_run_id)
sa.Index("ix_job_runs_status", job_runs.c.status)


def _core_v1(conn: sa.Connection) -> None:
    for table in (pipeline_counters, pipeline_runs, stage_runs, job_runs):
        table.create(conn, checkfirst=True)


def _core_job_process_group(conn: sa.Connection) -> None:
    """``job_runs.pgid`` and ``pgid_identity`` for stores made before them (new stores get them from core-1)."""
    have = {c["name"] for c in sa.inspect(conn).get_columns("job_runs")}
    for column in (job_runs.c.pgid, job_runs.c.pgid_identity):
        if column.name not in have:
            kind = column.type.compile(dialect=conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE job_runs ADD COLUMN {column.name} {kind}"))


# Ordered, named migrations. Applied ids are recorded in ``meta`` so that
# feature modules (materials, approvals, traffic, ...) can each add their own
# tables without fighting over version numbers. Append, never edit or reorder.
MIGRATIONS: list[tuple[str, Callable[[sa.Connection], None]]] = [("core-1", _core_v1)]


def register_migration(migration_id: str, fn: Callable[[sa.Connection], None]) -> None:
    """Add a feature's schema step; called at import time of the feature's store module."""
    if any(mid == migration_id for mid, _ in MIGRATIONS):
        return
    MIGRATIONS.append((migration_id, fn))


register_migration("core-2-job-process-group", _core_job_process_group)


def _core_pipeline_history_index(conn: sa.Connection) -> None:
    """``ix_pipeline_runs_pipeline_id`` for stores made before it (issue 17: a year of history)."""
    ix_pipeline_runs_pipeline_id.create(conn, checkfirst=True)


register_migration("core-3-pipeline-history-index", _core_pipeline_history_index)


def tables_created_by(*tables: sa.Table) -> Callable[[sa.Connection], None]:
    """The common migration: create these tables."""

    def create(conn: sa.Connection) -> None:
        for table in tables:
            table.create(conn, checkfirst=True)

    return create
