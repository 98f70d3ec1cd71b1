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


_ANCESTRY = sa.select(T.run_ancestry.c.pipeline_run_id, T.run_ancestry.c.ancestors).where(
    T.run_ancestry.c.pipeline_run_id.in_(sa.bindparam("b_ids", expanding=True)))


def ancestry(conn: sa.Connection, run_ids: Sequence[int]) -> dict[int, dict[str, str]]:
    if not run_ids:
        return {}
    rows = conn.execute(_ANCESTRY, {"b_ids": list(run_ids)})
    return {rid: dict(anc or {}) for rid, anc in rows}


# a stage's passed runs, newest first, every value bound: built and compiled once per process, for every key
_PASSED = (
    sa.select(S.pipeline_runs.c.id, S.pipeline_runs.c.counter, S.pipeline_runs.c.label,
              S.stage_runs.c.counter.label("sc"), S.pipeline_runs.c.pipeline.label("up_pipeline"),
              S.stage_runs.c.name.label("up_stage"))
    .join(S.stage_runs, S.stage_runs.c.pipeline_run_id == S.pipeline_runs.c.id)
    .where(S.pipeline_runs.c.pipeline == sa.bindparam("b_pipeline"), S.stage_runs.c.name == sa.bindparam("b_stage"),
           S.stage_runs.c.status == "passed")
    .order_by(S.pipeline_runs.c.counter.desc(), S.stage_runs.c.counter.desc())
    .limit(sa.bindparam("b_limit"))
)
_PASSED_AT = _PASSED.where(S.pipeline_runs.c.counter == sa.bindparam("b_counter"))  # one run's passing counters


def _upstream_runs(rows: Sequence[Any], anc: Mapping[int, Mapping[str, str]]) -> list[UpstreamRun]:
    out = []
    for r in rows:
        ancestors = {**anc.get(r.id, {}), pipeline_key(r.up_pipeline): str(r.counter)}
        out.append(UpstreamRun(r.id, r.up_pipeline, r.counter, r.label, r.up_stage, r.sc, ancestors))
    return out


def passed_runs(store: Any, pipeline: str, stage: str, *, limit: int = 10,
                counter: int | None = None) -> list[UpstreamRun]:
    """Runs of ``pipeline`` whose ``stage`` passed, newest first (each passing stage counter is one)."""
    params = {"b_pipeline": pipeline, "b_stage": stage, "b_limit": limit}
    with store.read() as conn:
        if counter is None:
            rows = conn.execute(_PASSED, params).all()
        else:
            rows = conn.execute(_PASSED_AT, {**params, "b_counter": counter}).all()
        anc = ancestry(conn, [r.id for r in rows])
    return _upstream_runs(rows, anc)


BATCH_KEYS = 100  # (pipeline, stage) pairs per ancestry query


def passed_runs_many(store: Any, keys: Iterable[tuple[str, str]], *, limit: int = 10
                     ) -> dict[tuple[str, str], list[UpstreamRun]]:
    """:func:`passed_runs` for many ``(pipeline, stage)`` keys in one read transaction: one
    execution of the same prepared statement per key and one ancestry query per BATCH_KEYS keys.

    A full scheduling pass used to ask twice per dependency material, each
    read its own transaction (``BEGIN`` was a quarter of the decide threads'
    time, profile in benchmarks/README.md). Each key keeps its own
    ``ORDER BY ... LIMIT`` query, so it walks the ``(pipeline, counter)``
    index backwards as the single query does, however long the history is; a
    window function over the whole history would not. It is one statement
    with bound values rather than a ``UNION ALL`` of one term per key: a
    union has a new shape for every number of keys, which SQLAlchemy compiled
    anew (2-6 ms of a 13 ms targeted pass in a fresh process, the step of
    workload (a) in benchmarks/README.md).
    """
    wanted = sorted(set(keys))
    out: dict[tuple[str, str], list[UpstreamRun]] = {k: [] for k in wanted}
    if not wanted:
        return out
    with store.read() as conn:
        for i in range(0, len(wanted), BATCH_KEYS):
            chunk = wanted[i:i + BATCH_KEYS]
            rows = [r for p, s in chunk
                    for r in conn.execute(_PASSED, {"b_pipeline": p, "b_stage": s, "b_limit": limit}).all()]
            anc = ancestry(conn, [r.id for r in rows])
            for r in rows:
                out[(r.up_pipeline, r.up_stage)] += _upstream_runs([r], anc)
    for runs in out.values():  # newest first, as passed_runs gives them
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
