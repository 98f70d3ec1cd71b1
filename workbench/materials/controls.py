"""GoCD's run controls that need state beyond the core store: locks, unlocks, cancel requests.

``workbench cancel`` may be typed in a terminal while the run is driven by a
``serve`` loop or a cron ``tick`` in another process: the request is a row in
the store, the driving engine's heartbeat thread polls for it and cancels its
jobs (on_cancel tasks run). A run nobody is driving (waiting for approval,
scheduled, or orphaned by a crash) is cancelled on the spot.
"""
from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from ..errors import InvalidState
from ..identity import current_user
from ..scheduler import lock_holder
from ..status import Status
from ..store import schema as S
from . import tables as T

__all__ = ["pending_cancels", "request_cancel", "cancel_now", "pipeline_lock", "pipeline_locks", "unlock", "check_unlocked"]


def pending_cancels(store: Any, run_ids: list[int]) -> set[int]:
    """The runs among ``run_ids`` someone asked to cancel (the engine's cancel source)."""
    if not run_ids:
        return set()
    c = T.cancel_requests
    with store.read() as conn:
        return {r for (r,) in conn.execute(sa.select(c.c.pipeline_run_id).where(c.c.pipeline_run_id.in_(run_ids)))}


def _record_request(store: Any, run_id: int, by: str) -> None:
    c = T.cancel_requests
    with store.write() as conn:
        exists = conn.execute(sa.select(c.c.pipeline_run_id).where(c.c.pipeline_run_id == run_id)).first()
        if exists is None:
            conn.execute(c.insert().values(pipeline_run_id=run_id, requested_by=by, requested_at=time.time()))


def request_cancel(ws: Any, run: Any, *, by: str | None = None) -> bool:
    """Ask for ``run`` to be cancelled. True when it was cancelled here and now; False when a live
    process runs its jobs and will cancel them (the caller may wait for the run to finish)."""
    from .recovery import owner_alive

    by = by or current_user()
    store = ws.store
    detail = store.run_detail(run.id)
    if detail.run.status.finished:
        raise InvalidState(f"{detail.run.locator} already finished: {detail.run.status}")
    _record_request(store, run.id, by)
    live = [
        j for s in detail.stages if s.status == Status.RUNNING for j in detail.jobs.get(s.id, ())
        if not j.status.finished and (j.owner is None or owner_alive(j.owner) is not False)
    ]
    if live:
        return False
    cancel_now(ws, detail, by)
    return True


def cancel_now(ws: Any, detail: Any, by: str) -> None:
    """Cancel a run that no live process drives: its open stages and jobs, then the run.

    A driver that died (``kill -9``, a crash, a SIGKILL from a supervisor)
    leaves its jobs' task processes running: each runs in its own session, so
    nothing stops them with their engine. Each open job's recorded process
    group is stopped first (SIGTERM, SIGKILL after the grace period), with the
    identity checks the orphan recovery uses (:func:`workbench.tasks.pgroups.stop_group`:
    same host, same boot, the leader's start time), so a pid since reused by
    an unrelated process is never signalled. on_cancel tasks cannot run: the
    process that knew them is gone; the job's reason says what was stopped.
    """
    store = ws.store
    reason = f"cancelled by {by}"
    open_jobs = [j for s in detail.stages if not s.status.finished for j in detail.jobs.get(s.id, ())
                 if not j.status.finished]
    stopped = _stop_job_groups(store, [j.id for j in open_jobs])
    for s in detail.stages:
        if s.status.finished:
            continue
        for j in detail.jobs.get(s.id, ()):
            if not j.status.finished:
                why = stopped.get(j.id)
                store.finish_job(j.id, Status.CANCELLED, reason=f"{reason}; {why}" if why else reason)
        try:
            store.set_stage_status(s.id, Status.CANCELLED, reason, expect=[s.status])
        except InvalidState:  # someone approved or finished it meanwhile; the request row still stands
            pass
    store.set_pipeline_status(detail.run.id, Status.CANCELLED, reason)


def _stop_job_groups(store: Any, job_ids: list[int]) -> dict[int, str]:
    """Stop what the jobs ``job_ids`` left running on this machine; job id -> what was done."""
    if not job_ids:
        return {}
    from ..tasks.pgroups import stop_group

    jr = S.job_runs
    with store.read() as conn:
        rows = conn.execute(sa.select(jr.c.id, jr.c.pgid, jr.c.pgid_identity)
                            .where(jr.c.id.in_(job_ids), jr.c.pgid.is_not(None))).all()
    done: dict[int, str] = {}
    for job_id, pgid, ident in rows:
        what = stop_group(int(pgid), ident)
        if what:
            done[job_id] = what
    return done


def _unlocked_through(conn: sa.Connection, pipeline: str) -> int:
    u = T.pipeline_unlocks
    return int(conn.execute(sa.select(u.c.through_counter).where(u.c.pipeline == pipeline)).scalar() or 0)


def pipeline_lock(store: Any, pipeline: Any) -> int | None:
    """The counter of the run that holds ``pipeline``'s lock (per its lock_behavior), or None."""
    if pipeline.lock_behavior not in ("lockOnFailure", "unlockWhenFinished"):
        return None
    pr = S.pipeline_runs
    with store.read() as conn:
        through = _unlocked_through(conn, pipeline.name)
        rows = conn.execute(
            sa.select(pr.c.counter, pr.c.status).where(pr.c.pipeline == pipeline.name, pr.c.counter > through)
            .order_by(pr.c.counter.desc()).limit(50)
        ).all()
    return lock_holder(pipeline.lock_behavior, [(c, Status(st)) for c, st in rows])


def pipeline_locks(store: Any, pipelines: Any) -> dict[str, int | None]:
    """:func:`pipeline_lock` of many pipelines in two reads (a scheduling pass asks it of every pipeline).

    Pipelines without a lock behaviour are not read at all and answer None.
    """
    locking = {p.name: p.lock_behavior for p in pipelines if p.lock_behavior in ("lockOnFailure", "unlockWhenFinished")}
    out: dict[str, int | None] = {}
    if not locking:
        return out
    pr, u = S.pipeline_runs, T.pipeline_unlocks
    names = sorted(locking)
    rows: dict[str, list[tuple[int, Status]]] = {n: [] for n in names}
    with store.read() as conn:
        for i in range(0, len(names), 500):  # bounded IN lists (SQLite's variable limit)
            chunk = names[i:i + 500]
            through = dict(conn.execute(sa.select(u.c.pipeline, u.c.through_counter).where(u.c.pipeline.in_(chunk))).all())
            newest = sa.func.row_number().over(partition_by=pr.c.pipeline, order_by=pr.c.counter.desc()).label("n")
            inner = sa.select(pr.c.pipeline, pr.c.counter, pr.c.status, newest).where(pr.c.pipeline.in_(chunk)).subquery()
            for name, counter, status in conn.execute(
                sa.select(inner.c.pipeline, inner.c.counter, inner.c.status).where(inner.c.n <= 50)
                .order_by(inner.c.pipeline, inner.c.counter.desc())
            ):
                if counter > int(through.get(name) or 0):
                    rows[name].append((counter, Status(status)))
    for name in names:
        out[name] = lock_holder(locking[name], rows[name])
    return out


def check_unlocked(store: Any, pipeline: Any, *, allow_run: int | None = None) -> None:
    """Refuse to start ``pipeline`` while another run holds its lock."""
    holder = pipeline_lock(store, pipeline)
    if holder is not None and holder != allow_run:
        raise InvalidState(
            f"pipeline {pipeline.name} is locked by {pipeline.name}/{holder} "
            f"(lock_behavior: {pipeline.lock_behavior}); "
            f"let it finish, rerun it, or `workbench unlock {pipeline.name}`"
        )


def unlock(ws: Any, pipeline: Any, *, by: str | None = None) -> int | None:
    """Release a lockOnFailure lock held by a finished run; returns the counter that held it."""
    holder = pipeline_lock(ws.store, pipeline)
    if holder is None:
        raise InvalidState(f"pipeline {pipeline.name} is not locked")
    run = ws.store.get_pipeline_run(pipeline.name, holder)
    if not run.status.finished:
        raise InvalidState(f"{run.locator} is still {run.status}: a running pipeline cannot be unlocked (cancel it)")
    u = T.pipeline_unlocks
    with ws.store.write() as conn:
        conn.execute(sa.delete(u).where(u.c.pipeline == pipeline.name))
        conn.execute(u.insert().values(pipeline=pipeline.name, through_counter=holder, unlocked_by=by or current_user(),
                                       unlocked_at=time.time()))
    return holder
