"""Dependency materials (``pipeline:`` + ``stage:``): upstream runs as revisions.

An upstream revision is GoCD's locator ``pipeline/counter/stage/stage_counter``:
a rerun of the upstream stage that passes again is a new revision and
triggers the downstream once more, as in GoCD. Each candidate carries the
upstream run's ancestry so that fan-in can compare what it was built from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import sqlalchemy as sa

from ..store import schema as S
from . import tables as T

__all__ = ["UpstreamRun", "passed_runs", "passed_runs_many", "ancestry", "dependency_env", "pipeline_key"]


def pipeline_key(pipeline: str) -> str:
    return f"pipeline:{pipeline}"


@dataclass(frozen=True)
class UpstreamRun:
    run_id: int
    pipeline: str
    counter: int
    label: str
    stage: str
    stage_counter: int
    ancestors: Mapping[str, str] = field(default_factory=dict)  # includes pipeline:<pipeline> -> counter

    @property
    def locator(self) -> str:
        return f"{self.pipeline}/{self.counter}/{self.stage}/{self.stage_counter}"

    @property
    def order(self) -> tuple[int, int]:
        return (self.counter, self.stage_counter)


def ancestry(conn: sa.Connection, run_ids: Sequence[int]) -> dict[int, dict[str, str]]:
    if not run_ids:
        return {}
    a = T.run_ancestry
    rows = conn.execute(sa.select(a.c.pipeline_run_id, a.c.ancestors).where(a.c.pipeline_run_id.in_(list(run_ids))))
    return {rid: dict(anc or {}) for rid, anc in rows}


def _passed_query(pipeline: str, stage: str, limit: int, counter: int | None = None) -> sa.Select[Any]:
    pr, sr = S.pipeline_runs, S.stage_runs
    q = (
        sa.select(pr.c.id, pr.c.counter, pr.c.label, sr.c.counter.label("sc"),
                  pr.c.pipeline.label("up_pipeline"), sr.c.name.label("up_stage"))
        .join(sr, sr.c.pipeline_run_id == pr.c.id)
        .where(pr.c.pipeline == pipeline, sr.c.name == stage, sr.c.status == "passed")
        .order_by(pr.c.counter.desc(), sr.c.counter.desc())
        .limit(limit)
    )
    if counter is not None:
        q = q.where(pr.c.counter == counter)
    return q


def _upstream_runs(rows: Sequence[Any], anc: Mapping[int, Mapping[str, str]]) -> list[UpstreamRun]:
    out = []
    for r in rows:
        ancestors = {**anc.get(r.id, {}), pipeline_key(r.up_pipeline): str(r.counter)}
        out.append(UpstreamRun(r.id, r.up_pipeline, r.counter, r.label, r.up_stage, r.sc, ancestors))
    return out


def passed_runs(store: Any, pipeline: str, stage: str, *, limit: int = 10,
                counter: int | None = None) -> list[UpstreamRun]:
    """Runs of ``pipeline`` whose ``stage`` passed, newest first (each passing stage counter is one)."""
    with store.read() as conn:
        rows = conn.execute(_passed_query(pipeline, stage, limit, counter)).all()
        anc = ancestry(conn, [r.id for r in rows])
    return _upstream_runs(rows, anc)


BATCH_KEYS = 100  # (pipeline, stage) pairs per UNION ALL statement (SQLite allows 500 compound terms)


def passed_runs_many(store: Any, keys: Iterable[tuple[str, str]], *, limit: int = 10
                     ) -> dict[tuple[str, str], list[UpstreamRun]]:
    """:func:`passed_runs` for many ``(pipeline, stage)`` keys in one read transaction: one
    statement and one ancestry query per BATCH_KEYS keys.

    A full scheduling pass used to ask twice per dependency material, each
    read its own transaction (``BEGIN`` was a quarter of the decide threads'
    time, profile in benchmarks/README.md). Each key keeps its own
    ``ORDER BY ... LIMIT`` subquery (``UNION ALL`` of them), so every term
    walks the ``(pipeline, counter)`` index backwards as the single query
    does, however long the history is; a window function over the whole
    history would not.
    """
    wanted = sorted(set(keys))
    out: dict[tuple[str, str], list[UpstreamRun]] = {k: [] for k in wanted}
    if not wanted:
        return out
    with store.read() as conn:
        for i in range(0, len(wanted), BATCH_KEYS):
            chunk = wanted[i:i + BATCH_KEYS]
            terms = [sa.select(q.c) for q in (_passed_query(p, s, limit).subquery() for p, s in chunk)]
            rows = conn.execute(terms[0] if len(terms) == 1 else sa.union_all(*terms)).all()
            anc = ancestry(conn, [r.id for r in rows])
            for r in rows:
                out[(r.up_pipeline, r.up_stage)] += _upstream_runs([r], anc)
    for runs in out.values():  # UNION ALL promises no order across its terms: newest first again
        runs.sort(key=lambda u: u.order, reverse=True)
    return out


def dependency_env(revisions: Mapping[str, Any], env_key: Any) -> dict[str, str]:
    """``GO_DEPENDENCY_LABEL_<NAME>`` / ``GO_DEPENDENCY_LOCATOR_<NAME>`` for each dependency material.

    GoCD names them after the material, whose name defaults to the upstream
    pipeline's; when a material was renamed we set both spellings.
    """
    env: dict[str, str] = {}
    for name, rev in revisions.items():
        if not isinstance(rev, Mapping) or rev.get("kind") != "dependency":
            continue
        for n in {name, str(rev.get("pipeline") or name)}:
            key = env_key(n)
            env[f"GO_DEPENDENCY_LABEL_{key}"] = str(rev.get("label", ""))
            env[f"GO_DEPENDENCY_LOCATOR_{key}"] = str(rev.get("revision", ""))
    return env


def provenance_rows(run_id: int, upstream: Iterable[tuple[str, UpstreamRun]]) -> list[dict[str, Any]]:
    return [
        dict(upstream_run_id=u.run_id, downstream_run_id=run_id, material=name, upstream_stage=u.stage,
             upstream_stage_counter=u.stage_counter)
        for name, u in upstream
    ]
