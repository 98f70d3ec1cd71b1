"""Crash safety: find jobs whose process died and fail them, with a reason that says so.

Every job row names its owner (``host:pid``) and carries a heartbeat the
driving engine refreshes every few seconds, queued jobs included. A job is an
orphan when its owner is a dead process on this host, or when its heartbeat
is older than the threshold (the owner is on another host, or hangs). The
job, its stage and its run are marked failed in compare-and-set updates, so a
live process that finishes the job at the same moment wins, and the run can
then be rerun with ``workbench rerun``.

A job's own processes do not die with the engine that started them (each task
runs in its own session). Before an orphan is marked failed, the process group
recorded for it is stopped (SIGTERM, then SIGKILL), but only when it can be
shown to still be that job's group (:func:`workbench.tasks.pgroups.stop_group`):
otherwise a rerun would race the old job in the same folders and on the same
deploy targets.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ..errors import InvalidState
from ..status import Status
from ..store import schema as S

__all__ = ["Recovered", "owner_alive", "recover_orphans", "recently_moved", "STALE_AFTER"]

STALE_AFTER = float(os.environ.get("WORKBENCH_HEARTBEAT_TIMEOUT", "60"))  # 12 missed heartbeats


@dataclass(frozen=True)
class Recovered:
    locator: str  # PIPELINE/COUNTER/STAGE/STAGE_COUNTER/JOB (or without JOB for a stage)
    reason: str


def owner_alive(owner: str) -> bool | None:
    """Is the process ``host:pid`` alive? None when it is on another host (only its heartbeat can tell)."""
    host, _, pid_text = owner.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child nobody reaped yet is a zombie: dead for our purpose
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def recover_orphans(store: Any, *, now: float | None = None, stale_after: float = STALE_AFTER) -> list[Recovered]:
    """Fail the jobs (then stages and runs) whose process died; returns what was recovered."""
    now = time.time() if now is None else now
    pr, sr, jr = S.pipeline_runs, S.stage_runs, S.job_runs
    with store.read() as conn:
        stages = conn.execute(
            sa.select(sr.c.id, sr.c.name, sr.c.counter, sr.c.started_at, sr.c.created_at, pr.c.id.label("run_id"),
                      pr.c.pipeline, pr.c.counter.label("run_counter"))
            .join(pr, pr.c.id == sr.c.pipeline_run_id).where(sr.c.status == Status.RUNNING.value)
        ).all()
        if not stages:
            return []
        jobs = conn.execute(sa.select(jr).where(jr.c.stage_run_id.in_([s.id for s in stages]))).mappings().all()
    by_stage: dict[int, list[Any]] = {}
    for j in jobs:
        by_stage.setdefault(j["stage_run_id"], []).append(j)
    out: list[Recovered] = []
    for s in stages:
        where = f"{s.pipeline}/{s.run_counter}/{s.name}/{s.counter}"
        recovered_here: list[str] = []
        open_jobs = 0
        for j in by_stage.get(s.id, ()):
            if Status(j["status"]).finished:
                continue
            reason = _orphan_reason(j, now, stale_after)
            if reason is None:
                open_jobs += 1
                continue
            stopped = _stop_processes(j)
            if stopped:
                reason = f"{reason}; {stopped}"
            if _fail_job(store, j["id"], reason):
                recovered_here.append(f"{j['name']}: {reason}")
                out.append(Recovered(f"{where}/{j['name']}", reason))
            else:
                open_jobs += 1
        if open_jobs:
            continue
        stage_jobs = by_stage.get(s.id, ())
        last_end = max((j["finished_at"] or 0.0 for j in stage_jobs), default=s.started_at or s.created_at)
        if not recovered_here and now - (last_end or now) <= stale_after:
            continue  # its driver is recording the result right now
        reason = (f"job {recovered_here[0]}" if recovered_here
                  else "the process driving this stage died before recording its result; rerun it")
        try:
            store.set_stage_status(s.id, Status.FAILED, reason, expect=[Status.RUNNING])
        except InvalidState:
            continue
        if not recovered_here:
            out.append(Recovered(where, reason))
        run = store.get_pipeline_run_by_id(s.run_id)
        if not run.status.finished:
            store.set_pipeline_status(s.run_id, Status.FAILED, f"stage {s.name} failed: {reason}")
    return out


def _orphan_reason(job: Any, now: float, stale_after: float) -> str | None:
    owner = job["owner"]
    alive = owner_alive(owner) if owner else None
    if alive is False:
        return f"the process running it ({owner}) died (killed or crashed) while the job ran"
    if alive is True:
        return None
    last = max(t for t in (job["heartbeat_at"], job["started_at"], job["created_at"], 0.0) if t is not None)
    age = now - last
    if age > stale_after:
        who = owner or "the process that scheduled it"
        return f"no heartbeat from {who} for {age:.0f}s: the process running it died or hangs"
    return None


def _stop_processes(job: Any) -> str | None:
    """Stop what the job left running on this machine; None when nothing of it was left (or it is not ours)."""
    if not job.get("pgid"):
        return None
    from ..tasks.pgroups import stop_group

    return stop_group(int(job["pgid"]), job.get("pgid_identity"))


def _fail_job(store: Any, job_run_id: int, reason: str) -> bool:
    """Compare-and-set: only a job still open is failed (its owner may have just finished it)."""
    jr = S.job_runs
    with store.write() as conn:
        n = conn.execute(
            jr.update().where(jr.c.id == job_run_id, jr.c.status.in_([Status.SCHEDULED.value, Status.RUNNING.value]))
            .values(status=Status.FAILED.value, reason=reason, finished_at=time.time())
        ).rowcount
    return n == 1


def recently_moved(store: Any, run_ids: list[int], since: float) -> set[int]:
    """Runs whose own row, a stage or a job changed after ``since``, except approved stages waiting for a driver."""
    pr, sr, jr = S.pipeline_runs, S.stage_runs, S.job_runs
    moved: set[int] = set()
    approved: set[int] = set()
    with store.read() as conn:
        for rid, created in conn.execute(sa.select(pr.c.id, pr.c.created_at).where(pr.c.id.in_(run_ids))):
            if created > since:
                moved.add(rid)
        for rid, status, kind, *times in conn.execute(
            sa.select(sr.c.pipeline_run_id, sr.c.status, sr.c.approval_type, sr.c.created_at, sr.c.started_at,
                      sr.c.finished_at).where(sr.c.pipeline_run_id.in_(run_ids))
        ):
            if status == Status.SCHEDULED.value and kind == "manual":
                approved.add(rid)
            if any(t is not None and t > since for t in times):
                moved.add(rid)
        for rid, *times in conn.execute(
            sa.select(sr.c.pipeline_run_id, jr.c.started_at, jr.c.finished_at, jr.c.heartbeat_at)
            .join(sr, sr.c.id == jr.c.stage_run_id).where(sr.c.pipeline_run_id.in_(run_ids))
        ):
            if any(t is not None and t > since for t in times):
                moved.add(rid)
    return moved - approved
