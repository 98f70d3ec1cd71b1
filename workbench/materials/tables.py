"""The materials feature's tables and DataFrames.

Per run: the revision of each material, the commits it brought (the basis of
lead-time metrics), which upstream runs fed it (provenance, for value
streams) and its ancestry (what fan-in compares). Per workspace: material
errors (shown by ``status``), timer bookkeeping, cancel requests and
manual unlocks. Defined here, created by a named migration on the shared
metadata, so the core store never has to know about materials.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..store import schema as S
from ..store.frames import register_frame

if TYPE_CHECKING:
    import pandas as pd

    from ..store.frames import Frames

md = S.metadata

material_revisions = sa.Table(
    "material_revisions", md,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("pipeline_run_id", sa.Integer, sa.ForeignKey("pipeline_runs.id"), nullable=False),
    sa.Column("material", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),  # git | dependency
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("revision", sa.String(255), nullable=False),  # sha, or upstream/counter/stage/stage_counter
    sa.Column("previous_revision", sa.String(255)),
    sa.Column("changed", sa.Boolean, nullable=False, default=False),
    sa.Column("url", sa.Text),
    sa.Column("branch", sa.String(255)),
    sa.Column("upstream_pipeline", sa.String(255)),
    sa.Column("upstream_counter", sa.Integer),
    sa.Column("upstream_label", sa.String(255)),
    sa.Column("upstream_stage", sa.String(255)),
    sa.Column("upstream_stage_counter", sa.Integer),
)
sa.Index("ix_material_revisions_run", material_revisions.c.pipeline_run_id)

commits = sa.Table(
    "commits", md,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("pipeline_run_id", sa.Integer, sa.ForeignKey("pipeline_runs.id"), nullable=False),
    sa.Column("material", sa.String(255), nullable=False),
    sa.Column("sha", sa.String(64), nullable=False),
    sa.Column("author", sa.String(255), nullable=False),
    sa.Column("author_email", sa.String(255)),
    sa.Column("author_time", sa.Float, nullable=False),
    sa.Column("commit_time", sa.Float, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
)
sa.Index("ix_commits_run", commits.c.pipeline_run_id)
sa.Index("ix_commits_sha", commits.c.sha)

provenance = sa.Table(
    "provenance", md,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("upstream_run_id", sa.Integer, sa.ForeignKey("pipeline_runs.id"), nullable=False),
    sa.Column("downstream_run_id", sa.Integer, sa.ForeignKey("pipeline_runs.id"), nullable=False),
    sa.Column("material", sa.String(255), nullable=False),
    sa.Column("upstream_stage", sa.String(255), nullable=False),
    sa.Column("upstream_stage_counter", sa.Integer, nullable=False),
)
sa.Index("ix_provenance_up", provenance.c.upstream_run_id)
sa.Index("ix_provenance_down", provenance.c.downstream_run_id)

run_ancestry = sa.Table(
    "run_ancestry", md,
    sa.Column("pipeline_run_id", sa.Integer, sa.ForeignKey("pipeline_runs.id"), primary_key=True),
    sa.Column("ancestors", sa.JSON, nullable=False),  # key -> revision (git fingerprints, pipeline:NAME -> counter)
)

material_errors = sa.Table(
    "material_errors", md,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("pipeline", sa.String(255), nullable=False),
    sa.Column("material", sa.String(255), nullable=False),
    sa.Column("url", sa.Text),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("first_seen", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float, nullable=False),
    sa.Column("resolved_at", sa.Float),
)
sa.Index("ix_material_errors_open", material_errors.c.pipeline, material_errors.c.resolved_at)

timer_state = sa.Table(
    "timer_state", md,
    sa.Column("pipeline", sa.String(255), primary_key=True),
    sa.Column("spec", sa.String(255), nullable=False),
    sa.Column("last_checked", sa.Float, nullable=False),
    sa.Column("last_fired", sa.Float),
)

cancel_requests = sa.Table(
    "cancel_requests", md,
    sa.Column("pipeline_run_id", sa.Integer, sa.ForeignKey("pipeline_runs.id"), primary_key=True),
    sa.Column("requested_by", sa.String(255), nullable=False),
    sa.Column("requested_at", sa.Float, nullable=False),
)

pipeline_unlocks = sa.Table(
    "pipeline_unlocks", md,
    sa.Column("pipeline", sa.String(255), primary_key=True),
    sa.Column("through_counter", sa.Integer, nullable=False),  # runs up to this counter no longer hold the lock
    sa.Column("unlocked_by", sa.String(255), nullable=False),
    sa.Column("unlocked_at", sa.Float, nullable=False),
)

ALL = (material_revisions, commits, provenance, run_ancestry, material_errors, timer_state, cancel_requests,
       pipeline_unlocks)
S.register_migration("materials-1", S.tables_created_by(*ALL))


# -- frames ---------------------------------------------------------------------


def _run_cols() -> list[sa.ColumnElement]:
    pr = S.pipeline_runs
    return [pr.c.pipeline, pr.c.counter, pr.c.label]


def _commits_frame(frames: "Frames") -> "pd.DataFrame":
    """One row per (run, commit): what each run shipped; lead time = run finish - commit time."""
    pr, c = S.pipeline_runs, commits
    q = (
        sa.select(c.c.pipeline_run_id.label("run_id"), *_run_cols(), pr.c.status.label("run_status"), c.c.material,
                  c.c.sha, c.c.author, c.c.author_email, c.c.author_time, c.c.commit_time, c.c.message,
                  pr.c.created_at.label("run_created_at"), pr.c.finished_at.label("run_finished_at"))
        .join(pr, pr.c.id == c.c.pipeline_run_id).order_by(c.c.id)
    )
    return frames.utc(frames.query(q), "author_time", "commit_time", "run_created_at", "run_finished_at")


def _revisions_frame(frames: "Frames") -> "pd.DataFrame":
    """One row per (run, material): the revision each run built from (git sha, or upstream P/C/S/SC)."""
    pr, m = S.pipeline_runs, material_revisions
    q = (
        sa.select(m.c.pipeline_run_id.label("run_id"), *_run_cols(), m.c.material, m.c.kind, m.c.revision,
                  m.c.previous_revision, m.c.changed, m.c.url, m.c.branch, m.c.upstream_pipeline, m.c.upstream_counter,
                  m.c.upstream_label, m.c.upstream_stage, m.c.upstream_stage_counter, pr.c.created_at)
        .join(pr, pr.c.id == m.c.pipeline_run_id).order_by(m.c.id)
    )
    return frames.utc(frames.query(q), "created_at")


def _provenance_frame(frames: "Frames") -> "pd.DataFrame":
    """Edges of the value stream: which upstream run fed which downstream run."""
    up, down, p = S.pipeline_runs.alias("up"), S.pipeline_runs.alias("down"), provenance
    q = (
        sa.select(p.c.upstream_run_id, up.c.pipeline.label("upstream_pipeline"), up.c.counter.label("upstream_counter"),
                  up.c.label.label("upstream_label"), p.c.upstream_stage, p.c.upstream_stage_counter,
                  p.c.downstream_run_id, down.c.pipeline.label("downstream_pipeline"),
                  down.c.counter.label("downstream_counter"), down.c.label.label("downstream_label"), p.c.material,
                  down.c.created_at.label("triggered_at"))
        .join(up, up.c.id == p.c.upstream_run_id).join(down, down.c.id == p.c.downstream_run_id).order_by(p.c.id)
    )
    return frames.utc(frames.query(q), "triggered_at")


def _errors_frame(frames: "Frames") -> "pd.DataFrame":
    """Materials that could not be read (unreachable remote, bad branch): first and last seen, resolved."""
    e = material_errors
    q = sa.select(e.c.pipeline, e.c.material, e.c.url, e.c.message, e.c.first_seen, e.c.last_seen,
                  e.c.resolved_at).order_by(e.c.id)
    df = frames.utc(frames.query(q), "first_seen", "last_seen", "resolved_at")
    df["open"] = df["resolved_at"].isna()
    return df


register_frame("commits", _commits_frame)
register_frame("material_revisions", _revisions_frame)
register_frame("provenance", _provenance_frame)
register_frame("material_errors", _errors_frame)
