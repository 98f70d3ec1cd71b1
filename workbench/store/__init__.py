"""The run-history store: every state change of runs, stages and jobs.

One short transaction per state change (SQLite in WAL mode by default), so a
crash at any point leaves the history consistent, and notebooks can read it
while runs go on. Writes take SQLite's write lock up front (``BEGIN
IMMEDIATE``) so two processes allocating counters cannot interleave. On
PostgreSQL (``postgresql+psycopg://``), for schedulers on several machines,
row locks (``SELECT … FOR UPDATE``), an atomic upsert for counters and an
advisory lock around migrations do that job instead.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import weakref
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError

from ..errors import InvalidState, NotFound, StoreError
from ..status import FINISHED, Status
from . import schema as S
from .records import JobRun, PipelineRun, RunDetail, StageRun

__all__ = ["Store", "PipelineRun", "StageRun", "JobRun", "RunDetail", "DuplicateTrigger", "owner_id"]


class DuplicateTrigger(InvalidState):
    """This revision set already produced a run of that pipeline."""


def owner_id() -> str:
    """Who runs a job: host and pid, so another process can tell an orphan."""
    return f"{socket.gethostname()}:{os.getpid()}"


def now() -> float:
    return time.time()


_MIGRATION_LOCK = 0x776F726B62656E63  # PostgreSQL advisory lock key held while migrating ("workbenc")


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


class Store:
    """Run history behind SQLAlchemy Core; open with :meth:`open`."""

    def __init__(self, engine: sa.Engine, url: str) -> None:
        self.engine = engine
        self.url = url
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._writer = engine.execution_options(wb_write=True)
        # Writers of one process queue on this lock instead of on SQLite's
        # busy handler, whose back-off sleeps cost milliseconds per job.
        self._write_lock = threading.Lock()
        self._writes = 0  # this process's committed writes (change_marker)
        self._marker_lock = threading.Lock()
        self._marker_conn: Any = None
        self._marker_db: Any = None
        # A store nobody closed still hands its pooled connections back to the
        # server when it is collected (PostgreSQL keeps a backend per connection).
        self._finalizer = weakref.finalize(self, engine.dispose)

    # -- opening ---------------------------------------------------------
    @classmethod
    def open(cls, url_or_path: str | Path, *, create: bool = True) -> "Store":
        url = str(url_or_path)
        if "://" not in url:
            path = Path(url)
            if not create and not path.exists():
                raise StoreError(f"no store at {path}")
            path.parent.mkdir(parents=True, exist_ok=True)
            url = _sqlite_url(path)
        try:
            engine = _make_engine(url)
            if engine.dialect.name != "sqlite":  # a server: say "cannot reach it" before anything else
                with engine.connect():
                    pass
            store = cls(engine, url)
            store._migrate()
        except StoreError:
            raise
        except DatabaseError as exc:  # corrupt file, not a database, locked, server unreachable
            raise StoreError(f"cannot open store {_safe_url(url)}: {_short(exc)}") from None
        return store

    def close(self) -> None:
        self._close_marker()
        self._finalizer()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """One write transaction, translated errors."""
        try:
            with self._write_lock, self._writer.begin() as conn:
                yield conn
            self._writes += 1
        except IntegrityError:
            raise
        except OperationalError as exc:
            raise StoreError(f"store write failed: {_short(exc)}") from None

    def change_marker(self) -> Any:
        """A value that differs after any write committed to the store since the last call; None when unknown.

        What the read caches (``workbench.service.cache``) are keyed on. On
        SQLite: this process's write count and ``PRAGMA data_version`` of a
        connection kept for this alone, which changes whenever any other
        connection, of this process or another (a CLI, ``workbench tick``),
        commits. Microseconds. PostgreSQL has no such counter: None, and the
        callers compute again every time.
        """
        if not self.is_sqlite:
            return None
        with self._marker_lock:
            try:
                if self._marker_conn is None:
                    self._marker_conn = self.engine.raw_connection()
                    # the sqlite3 connection under the pool's wrapper: the server asks for the marker once or
                    # twice per request, and the wrapper's cursor cost as much as the pragma itself
                    self._marker_db = self._marker_conn.driver_connection
                version = self._marker_db.execute("PRAGMA data_version").fetchone()[0]
            except Exception:  # noqa: BLE001  (a closed or broken store: unknown, so nothing is cached)
                self._close_marker_locked()
                return None
            return (self._writes, version)

    def _close_marker(self) -> None:
        with self._marker_lock:
            self._close_marker_locked()

    def _close_marker_locked(self) -> None:
        if self._marker_conn is not None:
            try:
                self._marker_conn.close()
            except Exception:  # noqa: BLE001
                pass
            self._marker_conn = self._marker_db = None

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except OperationalError as exc:
            raise StoreError(f"store read failed: {_short(exc)}") from None

    def _migrate(self) -> None:
        from . import extensions  # noqa: F401  (feature modules register their migrations)

        with self.write() as conn:
            if conn.dialect.name == "postgresql":
                # two schedulers opening a new database at once must not both create tables
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            S.meta.create(conn, checkfirst=True)
            row = conn.execute(sa.select(S.meta.c.value).where(S.meta.c.key == "migrations")).scalar()
            applied: list[str] = json.loads(row) if row else []
            known = [mid for mid, _ in S.MIGRATIONS]
            unknown = [m for m in applied if m not in known]
            if unknown:
                raise StoreError(
                    f"the store was written by a newer workbench (unknown migrations: {', '.join(unknown)}); "
                    "upgrade the workbench"
                )
            todo = [(mid, fn) for mid, fn in S.MIGRATIONS if mid not in applied]
            for mid, fn in todo:
                fn(conn)
                applied.append(mid)
            if todo or row is None:
                value = json.dumps(applied)
                if row is None:
                    conn.execute(S.meta.insert().values(key="migrations", value=value))
                else:
                    conn.execute(S.meta.update().where(S.meta.c.key == "migrations").values(value=value))
                conn.execute(sa.delete(S.meta).where(S.meta.c.key == "schema_version"))
                conn.execute(S.meta.insert().values(key="schema_version", value=str(len(applied))))

    @property
    def schema_version(self) -> int:
        with self.read() as conn:
            return int(conn.execute(sa.select(S.meta.c.value).where(S.meta.c.key == "schema_version")).scalar_one())

    # -- pipeline runs ---------------------------------------------------
    def create_pipeline_run(
        self,
        pipeline: str,
        *,
        label_for: Any,  # Callable[[int], str]: label from the allocated counter
        trigger: str,
        triggered_by: str,
        group_name: str = "defaultGroup",
        revisions: Mapping[str, Any] | None = None,
        revision_key: str | None = None,
        environment: str | None = None,
        status: Status = Status.SCHEDULED,
        extra: Any = None,  # Callable[[Connection, int], None]: a feature's rows, same transaction
    ) -> PipelineRun:
        """Allocate the next counter and insert the run, in one transaction.

        ``revision_key`` (when given) makes triggering at-most-once per revision
        set: a second attempt raises :class:`DuplicateTrigger`. ``extra`` writes
        a feature's rows about the new run (materials, commits) in the same
        transaction, so a crash never leaves a run without them.
        """
        t = now()
        try:
            with self.write() as conn:
                counter = _next_counter(conn, pipeline)
                values = dict(
                    pipeline=pipeline,
                    counter=counter,
                    label=str(label_for(counter)),
                    group_name=group_name,
                    trigger=trigger,
                    triggered_by=triggered_by,
                    status=status.value,
                    revisions=dict(revisions or {}),
                    revision_key=revision_key,
                    environment=environment,
                    created_at=t,
                )
                rid = conn.execute(_INSERT_RUN, values).inserted_primary_key[0]
                if extra is not None:
                    extra(conn, rid)
                run = _get_run(conn, rid)  # read back in the same transaction: no read transaction of its own
        except IntegrityError:
            raise DuplicateTrigger(f"{pipeline} already has a run for revisions {revision_key}") from None
        return run

    def set_pipeline_status(self, run_id: int, status: Status, reason: str | None = None, *,
                            conn: sa.Connection | None = None) -> None:
        """With ``conn`` (a transaction from :meth:`write`) the change joins that transaction."""
        t = now()
        values: dict[str, Any] = {"status": status.value}
        if reason is not None:
            values["reason"] = reason
        started = status == Status.RUNNING
        if started:
            values["finished_at"] = None
        if status in FINISHED:
            values["finished_at"] = t
        pr = S.pipeline_runs

        def build() -> Any:
            sets = _sets(values)
            if started:  # the first start counts: keep it when a rerun runs the run again
                sets["started_at"] = sa.func.coalesce(pr.c.started_at, _P("b_started_at"))
            return pr.update().where(pr.c.id == _P("b_id")).values(**sets)

        stmt = _cached(("set_pipeline_status", tuple(values), started), build)
        params = {"b_id": run_id, **_params(values)}
        if started:
            params["b_started_at"] = t
        with nullcontext(conn) if conn is not None else self.write() as tx:
            tx.execute(stmt, params)

    def get_pipeline_run_by_id(self, run_id: int) -> PipelineRun:
        with self.read() as conn:
            return _get_run(conn, run_id)

    def get_pipeline_run(self, pipeline: str, counter: int | str | None = None) -> PipelineRun:
        """A run by counter; None or 'latest' gives the latest."""
        q = sa.select(S.pipeline_runs).where(S.pipeline_runs.c.pipeline == pipeline)
        if counter in (None, "latest"):
            q = q.order_by(S.pipeline_runs.c.counter.desc()).limit(1)
        else:
            q = q.where(S.pipeline_runs.c.counter == int(counter))
        with self.read() as conn:
            row = conn.execute(q).mappings().first()
        if row is None:
            what = f"{pipeline}/{counter}" if counter not in (None, "latest") else pipeline
            raise NotFound(f"no run {what} in the history")
        return _pipeline_run(row)

    def pipeline_runs(
        self, pipeline: str | None = None, *, limit: int | None = None, statuses: Iterable[Status] | None = None
    ) -> list[PipelineRun]:
        q = sa.select(S.pipeline_runs).order_by(S.pipeline_runs.c.id.desc())
        if pipeline:
            q = q.where(S.pipeline_runs.c.pipeline == pipeline)
        if statuses is not None:
            q = q.where(S.pipeline_runs.c.status.in_([s.value for s in statuses]))
        if limit:
            q = q.limit(limit)
        with self.read() as conn:
            return [_pipeline_run(r) for r in conn.execute(q).mappings()]

    def latest_runs(self, pipelines: Iterable[str] | None = None) -> dict[str, PipelineRun]:
        """The latest run of every pipeline that has one (of ``pipelines`` only, when given)."""
        pr = S.pipeline_runs
        latest_q = sa.select(pr.c.pipeline, sa.func.max(pr.c.counter).label("c")).group_by(pr.c.pipeline)
        if pipelines is not None:
            names = sorted(set(pipelines))
            if not names:
                return {}
            latest_q = latest_q.where(pr.c.pipeline.in_(names))
        latest = latest_q.subquery()
        q = sa.select(pr).join(latest, sa.and_(pr.c.pipeline == latest.c.pipeline, pr.c.counter == latest.c.c))
        with self.read() as conn:
            return {r["pipeline"]: _pipeline_run(r) for r in conn.execute(q).mappings()}

    def board_runs(self) -> dict[str, Any]:
        """Every pipeline's latest run with its latest stages and waiting jobs, for the board (:mod:`.board`)."""
        from .board import board_runs

        with self.read() as conn:
            return board_runs(conn)

    def run_detail(self, run: PipelineRun | int, *, jobs: bool = True) -> RunDetail:
        """A run with all its stage runs and, unless ``jobs=False``, their job runs.

        ``jobs=False`` is what the engine asks between stages: the stage rows
        decide the next step, and reading every job row of a wide run there
        cost milliseconds per stage (see benchmarks/README.md).
        """
        with self.read() as conn:
            if isinstance(run, int):
                run = _get_run(conn, run)
            stages = [_stage_run(r) for r in conn.execute(_STAGES_OF_RUN, {"b_id": run.id}).mappings()]
            by_stage: dict[int, list[JobRun]] = {s.id: [] for s in stages}
            if stages and jobs:
                for r in conn.execute(_JOBS_OF_STAGES, {"b_ids": list(by_stage)}).mappings():
                    by_stage[r["stage_run_id"]].append(_job_run(r))
        return RunDetail(run, tuple(stages), {k: tuple(v) for k, v in by_stage.items()})

    def run_details(self, runs: Iterable[PipelineRun], *, jobs: bool = True,
                    job_statuses: Iterable[Status] | None = None) -> dict[int, RunDetail]:
        """:meth:`run_detail` of many runs, by run id, in two queries per 500 runs instead of two per run.

        The board and the history read a thousand runs at once; one
        ``run_detail`` each was ~0.5 s of CPU per board (benchmarks/README.md,
        issue 14). ``job_statuses`` keeps only jobs in those states (the board
        asks for the scheduled ones alone); stages and their order are those
        of ``run_detail``.
        """
        wanted = list({r.id: r for r in runs}.values())
        statuses = None if job_statuses is None else [Status(s).value for s in job_statuses]
        sr, jr = S.stage_runs, S.job_runs
        out: dict[int, RunDetail] = {}
        with self.read() as conn:
            for i in range(0, len(wanted), 500):
                part = wanted[i:i + 500]
                q = (sa.select(sr).where(sr.c.pipeline_run_id.in_([r.id for r in part]))
                     .order_by(sr.c.pipeline_run_id, sr.c.position, sr.c.counter))
                stages: dict[int, list[StageRun]] = {r.id: [] for r in part}
                for row in conn.execute(q).mappings():
                    stages[row["pipeline_run_id"]].append(_stage_run(row))
                by_stage: dict[int, list[JobRun]] = {s.id: [] for ss in stages.values() for s in ss}
                if by_stage and jobs:
                    ids = list(by_stage)
                    for j in range(0, len(ids), 500):
                        jq = sa.select(jr).where(jr.c.stage_run_id.in_(ids[j:j + 500])).order_by(jr.c.id)
                        if statuses is not None:
                            jq = jq.where(jr.c.status.in_(statuses))
                        for row in conn.execute(jq).mappings():
                            by_stage[row["stage_run_id"]].append(_job_run(row))
                for r in part:
                    ss = stages[r.id]
                    out[r.id] = RunDetail(r, tuple(ss), {s.id: tuple(by_stage[s.id]) for s in ss})
        return out

    # -- stage runs ------------------------------------------------------
    def create_stage_run(
        self,
        pipeline_run_id: int,
        name: str,
        position: int,
        *,
        approval_type: str = "success",
        status: Status = Status.SCHEDULED,
        approved_by: str | None = None,
        jobs: Sequence[tuple[str, int, int]] = (),
        expect_stage_runs: int | None = None,
        run_status: Status | None = None,
        open_run: bool = False,
    ) -> tuple[StageRun, list[JobRun]]:
        """Insert a stage run (next counter for that stage) and its job runs at once.

        ``expect_stage_runs`` is the number of stage runs the caller saw when it
        decided: if another process advanced the run meanwhile, nothing is
        written and :class:`InvalidState` is raised, so a stage is never
        scheduled twice by two drivers. With ``status=RUNNING`` the stage is
        created already claimed (``started_at`` set): the engine starts a
        stage in this one transaction instead of three. ``run_status`` sets
        the run's status in the same transaction (:meth:`set_pipeline_status`):
        the engine's first stage marks its run running without a write of its own.
        With ``open_run`` a run that finished meanwhile (cancelled by another
        process) raises :class:`InvalidState` too: the engine starts a next
        stage without reading the run again after the previous one passed.
        """
        t = now()
        with self.write() as conn:
            _lock_run(conn, pipeline_run_id)  # the stage counter below is max()+1: one writer per run at a time
            if expect_stage_runs is not None:
                seen = conn.execute(_COUNT_STAGES, {"b_id": pipeline_run_id}).scalar_one()
                if seen != expect_stage_runs:
                    raise InvalidState("the run was advanced by another process")
            if open_run and Status(conn.execute(_RUN_STATUS, {"b_id": pipeline_run_id}).scalar_one()) in FINISHED:
                raise InvalidState("the run finished meanwhile")
            prev = conn.execute(_MAX_STAGE_COUNTER, {"b_id": pipeline_run_id, "b_name": name}).scalar()
            sid = conn.execute(_INSERT_STAGE, {
                "b_id": pipeline_run_id, "b_name": name, "b_position": position, "b_counter": (prev or 0) + 1,
                "b_status": status.value, "b_approval_type": approval_type, "b_approved_by": approved_by,
                "b_created_at": t, "b_started_at": t if status == Status.RUNNING else None,
            }).inserted_primary_key[0]
            if jobs:
                conn.execute(
                    _INSERT_JOBS,
                    [
                        dict(stage_run_id=sid, name=n, run_index=i, run_count=c, status=Status.SCHEDULED.value, created_at=t)
                        for n, i, c in jobs
                    ],
                )
            if run_status is not None:
                self.set_pipeline_status(pipeline_run_id, run_status, conn=conn)
            stage = _stage_run(conn.execute(_STAGE_BY_ID, {"b_id": sid}).mappings().one())
            job_rows = [_job_run(r) for r in conn.execute(_JOBS_OF_STAGE, {"b_id": sid}).mappings()] if jobs else []
        return stage, job_rows

    def add_job_runs(self, stage_run_id: int, jobs: Sequence[tuple[str, int, int]]) -> list[JobRun]:
        t = now()
        with self.write() as conn:
            conn.execute(
                S.job_runs.insert(),
                [dict(stage_run_id=stage_run_id, name=n, run_index=i, run_count=c, status="scheduled", created_at=t) for n, i, c in jobs],
            )
        return self.job_runs(stage_run_id)

    def start_scheduled_stage(self, stage_run_id: int,
                              jobs: Sequence[tuple[str, int, int]]) -> tuple[StageRun, list[JobRun]]:
        """Claim a SCHEDULED stage (an approved one, a rerun) as RUNNING and give it its job runs, in one transaction.

        Two transactions left a window: a process killed between them left a
        running stage with no job, which recovery could only fail ("the
        process driving this stage died"), an approval applied and then lost.
        Job rows already there (a rerun of failed jobs) are kept as they are.
        """
        t = now()
        with self.write() as conn:
            stage = self.set_stage_status(stage_run_id, Status.RUNNING, expect=[Status.SCHEDULED], conn=conn)
            if jobs and conn.execute(_JOBS_OF_STAGE, {"b_id": stage_run_id}).first() is None:
                conn.execute(S.job_runs.insert(), [dict(stage_run_id=stage_run_id, name=n, run_index=i, run_count=c,
                                                        status="scheduled", created_at=t) for n, i, c in jobs])
            rows = [_job_run(r) for r in conn.execute(_JOBS_OF_STAGE, {"b_id": stage_run_id}).mappings()]
        return stage, rows

    def set_stage_status(
        self,
        stage_run_id: int,
        status: Status,
        reason: str | None = None,
        *,
        expect: Iterable[Status] | None = None,
        approved_by: str | None = None,
        conn: sa.Connection | None = None,
    ) -> StageRun:
        """Change a stage's status; with ``expect``, only from those statuses (compare-and-set).

        The compare-and-set is what makes two people approving the same stage
        at the same moment safe: exactly one update matches. With ``conn`` (a
        transaction from :meth:`write`) the change joins that transaction, so a
        decision and its audit row commit together or not at all.
        """
        t = now()
        sr = S.stage_runs
        values: dict[str, Any] = {"status": status.value}
        if reason is not None:
            values["reason"] = reason
        if approved_by is not None:
            values["approved_by"] = approved_by
        if status == Status.RUNNING:
            values["started_at"] = t
        if status in FINISHED:
            values["finished_at"] = t
        def build() -> Any:
            q = sr.update().where(sr.c.id == _P("b_id"))
            if expect is not None:
                q = q.where(sr.c.status.in_(_P("b_expect", expanding=True)))
            return q.values(**_sets(values))

        stmt = _cached(("set_stage_status", tuple(values), expect is not None), build)
        params = {"b_id": stage_run_id, **_params(values)}
        if expect is not None:
            expect = list(expect)
            params["b_expect"] = [s.value for s in expect]
        with nullcontext(conn) if conn is not None else self.write() as tx:
            n = tx.execute(stmt, params).rowcount
            row = tx.execute(_STAGE_BY_ID, {"b_id": stage_run_id}).mappings().first()
        if row is None:
            raise NotFound(f"no stage run with id {stage_run_id}")
        if n == 0:
            raise InvalidState(f"stage {row['name']} is {row['status']}, not {'/'.join(s.value for s in expect or ())}")
        return _stage_run(row)

    def stage_runs(self, pipeline_run_id: int) -> list[StageRun]:
        return list(self.run_detail(pipeline_run_id).stages)

    def get_stage_run(self, stage_run_id: int) -> StageRun:
        with self.read() as conn:
            row = conn.execute(_STAGE_BY_ID, {"b_id": stage_run_id}).mappings().first()
        if row is None:
            raise NotFound(f"no stage run with id {stage_run_id}")
        return _stage_run(row)

    # -- job runs --------------------------------------------------------
    def start_job(self, job_run_id: int, *, agent: str, log_path: str | None, owner: str | None = None) -> None:
        params = {"b_id": job_run_id, "b_agent": agent, "b_log_path": log_path, "b_owner": owner or owner_id(), "b_t": now()}
        with self.write() as conn:
            conn.execute(_START_JOB, params)

    def set_job_process(self, job_run_id: int, pgid: int, identity: str | None) -> None:
        """The process group the job's current task runs in (see :mod:`workbench.tasks.pgroups`)."""
        jr = S.job_runs
        with self.write() as conn:
            conn.execute(jr.update().where(jr.c.id == job_run_id).values(pgid=pgid, pgid_identity=identity))

    def finish_job(self, job_run_id: int, status: Status, *, exit_code: int | None = None, reason: str | None = None) -> None:
        params = {"b_id": job_run_id, "b_status": status.value, "b_exit_code": exit_code, "b_reason": reason, "b_t": now()}
        with self.write() as conn:
            conn.execute(_FINISH_JOB, params)

    def note_job(self, job_run_id: int, reason: str | None) -> None:
        """Say why a scheduled job has not started (e.g. waiting for an agent); None clears it."""
        jr = S.job_runs
        with self.write() as conn:
            conn.execute(jr.update().where(jr.c.id == job_run_id, jr.c.status == "scheduled").values(reason=reason))

    def heartbeat(self, job_run_ids: Sequence[int]) -> None:
        if not job_run_ids:
            return
        with self.write() as conn:
            conn.execute(S.job_runs.update().where(S.job_runs.c.id.in_(list(job_run_ids))).values(heartbeat_at=now()))

    def job_runs(self, stage_run_id: int) -> list[JobRun]:
        with self.read() as conn:
            return [_job_run(r) for r in conn.execute(_JOBS_OF_STAGE, {"b_id": stage_run_id}).mappings()]

    def active_job_runs(self) -> list[JobRun]:
        with self.read() as conn:
            return [
                _job_run(r)
                for r in conn.execute(
                    sa.select(S.job_runs).where(S.job_runs.c.status.in_(["scheduled", "running"]))
                ).mappings()
            ]

    # -- frames ----------------------------------------------------------
    @property
    def frames(self) -> Any:
        from .frames import Frames

        return Frames(self)

    def integrity_ok(self) -> bool:
        if not self.is_sqlite:
            return True
        with self.read() as conn:
            return conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"


# -- hot-path statements ------------------------------------------------------
# Built once, executed with parameters: building a SQLAlchemy expression (and
# its cache key) per call cost more than SQLite's own work, several times per
# job (profile in benchmarks/README.md). Names are prefixed ``b_`` because
# SQLAlchemy reserves bare column names for its own VALUES/SET parameters.

_P = sa.bindparam
_STAGES_OF_RUN = (sa.select(S.stage_runs).where(S.stage_runs.c.pipeline_run_id == _P("b_id"))
                  .order_by(S.stage_runs.c.position, S.stage_runs.c.counter))
_STAGE_BY_ID = sa.select(S.stage_runs).where(S.stage_runs.c.id == _P("b_id"))
# create_stage_run's statements, built once (it runs on every stage transition: benchmarks/README.md)
_COUNT_STAGES = sa.select(sa.func.count()).select_from(S.stage_runs).where(S.stage_runs.c.pipeline_run_id == _P("b_id"))
_MAX_STAGE_COUNTER = sa.select(sa.func.max(S.stage_runs.c.counter)).where(
    S.stage_runs.c.pipeline_run_id == _P("b_id"), S.stage_runs.c.name == _P("b_name"))
_INSERT_STAGE = S.stage_runs.insert().values(
    pipeline_run_id=_P("b_id"), name=_P("b_name"), position=_P("b_position"), counter=_P("b_counter"),
    status=_P("b_status"), approval_type=_P("b_approval_type"), approved_by=_P("b_approved_by"),
    created_at=_P("b_created_at"), started_at=_P("b_started_at"))
_INSERT_JOBS = S.job_runs.insert()
_RUN_STATUS = sa.select(S.pipeline_runs.c.status).where(S.pipeline_runs.c.id == _P("b_id"))
# create_pipeline_run's (the SQLite counter; PostgreSQL's is one upsert)
_INSERT_RUN = S.pipeline_runs.insert()
_COUNTER_OF = (sa.select(S.pipeline_counters.c.counter).where(S.pipeline_counters.c.pipeline == _P("b_pipeline"))
               .with_for_update())
_INSERT_COUNTER = S.pipeline_counters.insert()
_SET_COUNTER = S.pipeline_counters.update().where(S.pipeline_counters.c.pipeline == _P("b_pipeline")).values(
    counter=_P("b_counter"))
_RUN_BY_ID = sa.select(S.pipeline_runs).where(S.pipeline_runs.c.id == _P("b_id"))
_JOBS_OF_STAGE = sa.select(S.job_runs).where(S.job_runs.c.stage_run_id == _P("b_id")).order_by(S.job_runs.c.id)
_JOBS_OF_STAGES = (sa.select(S.job_runs).where(S.job_runs.c.stage_run_id.in_(_P("b_ids", expanding=True)))
                   .order_by(S.job_runs.c.id))
_START_JOB = S.job_runs.update().where(S.job_runs.c.id == _P("b_id")).values(
    status="running", agent=_P("b_agent"), log_path=_P("b_log_path"), owner=_P("b_owner"), started_at=_P("b_t"),
    heartbeat_at=_P("b_t"))
_FINISH_JOB = S.job_runs.update().where(S.job_runs.c.id == _P("b_id")).values(
    status=_P("b_status"), exit_code=_P("b_exit_code"), reason=_P("b_reason"), finished_at=_P("b_t"))
_STATEMENTS: dict[Any, Any] = {}


def _cached(key: Any, build: Any) -> Any:
    """A statement whose shape depends on which values are set: built once per shape."""
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        stmt = _STATEMENTS[key] = build()
    return stmt


def _sets(values: Mapping[str, Any]) -> dict[str, Any]:
    """SET column = :b_column for each value (the statement's shape, cached by :func:`_cached`)."""
    return {k: _P(f"b_{k}") for k in values}


def _params(values: Mapping[str, Any]) -> dict[str, Any]:
    return {f"b_{k}": v for k, v in values.items()}


def _get_run(conn: sa.Connection, run_id: int) -> PipelineRun:
    row = conn.execute(_RUN_BY_ID, {"b_id": run_id}).mappings().first()
    if row is None:
        raise NotFound(f"no pipeline run with id {run_id}")
    return _pipeline_run(row)


# -- helpers ----------------------------------------------------------------


SQLITE_POOL_SIZE = 32  # SQLite connections are a file handle and a page cache: cheap to keep


def _busy_timeout() -> float:
    """Seconds a SQLite writer waits for another's lock before "store locked" (exit 4); default 30."""
    try:
        return max(float(os.environ.get("WORKBENCH_STORE_BUSY_TIMEOUT", "30")), 0.0)
    except ValueError:
        return 30.0


def _make_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        # A pool as large as the threads that read at once (16 drivers, 8 deciders, the job
        # threads): past pool_size, SQLAlchemy opens a connection per checkout and closes
        # it on return, and every open runs the PRAGMAs below (profile in benchmarks/README.md).
        busy = _busy_timeout()
        engine = sa.create_engine(url, connect_args={"timeout": busy, "check_same_thread": False},
                                  pool_size=SQLITE_POOL_SIZE, max_overflow=SQLITE_POOL_SIZE)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(busy * 1000)}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            write = conn.get_execution_options().get("wb_write", False)
            # straight to the driver: through exec_driver_sql this statement alone cost a
            # quarter of a job's store write (profile in benchmarks/README.md); its errors
            # ("database is locked") are wrapped as SQLAlchemy's, as exec_driver_sql did
            import sqlite3

            statement = "BEGIN IMMEDIATE" if write else "BEGIN"
            try:
                conn.connection.driver_connection.execute(statement)
            except sqlite3.Error as exc:
                raise sa.exc.DBAPIError.instance(statement, None, exc, sqlite3.Error) from None

        return engine
    try:
        return sa.create_engine(_driver_url(url), pool_pre_ping=True)
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        raise StoreError(
            f"cannot open store {_safe_url(url)}: its database driver is not installed ({exc}); "
            "for PostgreSQL: pip install 'release-workbench[postgres]'"
        ) from None
    except sa.exc.ArgumentError as exc:
        raise StoreError(f"not a store URL: {_safe_url(url)} ({exc})") from None


def _driver_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3, the driver the ``postgres`` extra installs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url


def _lock_run(conn: sa.Connection, pipeline_run_id: int) -> None:
    """Row lock on PostgreSQL; SQLite's BEGIN IMMEDIATE already serializes writers."""
    if conn.dialect.name != "sqlite":
        conn.execute(sa.select(S.pipeline_runs.c.id).where(S.pipeline_runs.c.id == pipeline_run_id).with_for_update())


def _next_counter(conn: sa.Connection, pipeline: str) -> int:
    pc = S.pipeline_counters
    if conn.dialect.name == "postgresql":
        # One statement, atomic under concurrency: a SELECT ... FOR UPDATE finds no
        # row to lock for a pipeline's first run, and two schedulers would both insert.
        from sqlalchemy.dialects.postgresql import insert

        stmt = insert(pc).values(pipeline=pipeline, counter=1)
        stmt = stmt.on_conflict_do_update(index_elements=[pc.c.pipeline], set_={"counter": pc.c.counter + 1})
        return int(conn.execute(stmt.returning(pc.c.counter)).scalar_one())
    cur = conn.execute(_COUNTER_OF, {"b_pipeline": pipeline}).scalar()
    if cur is None:
        conn.execute(_INSERT_COUNTER, {"pipeline": pipeline, "counter": 1})
        return 1
    conn.execute(_SET_COUNTER, {"b_pipeline": pipeline, "b_counter": cur + 1})
    return int(cur) + 1


def _short(exc: Exception) -> str:
    return str(getattr(exc, "orig", exc)).splitlines()[0]


def _pipeline_run(r: Mapping[str, Any]) -> PipelineRun:
    return PipelineRun(
        id=r["id"], pipeline=r["pipeline"], counter=r["counter"], label=r["label"], group_name=r["group_name"],
        trigger=r["trigger"], triggered_by=r["triggered_by"], status=Status(r["status"]), reason=r["reason"],
        revisions=r["revisions"] or {}, environment=r["environment"], created_at=r["created_at"],
        started_at=r["started_at"], finished_at=r["finished_at"],
    )


def _stage_run(r: Mapping[str, Any]) -> StageRun:
    return StageRun(
        id=r["id"], pipeline_run_id=r["pipeline_run_id"], name=r["name"], position=r["position"], counter=r["counter"],
        status=Status(r["status"]), approval_type=r["approval_type"], approved_by=r["approved_by"], reason=r["reason"],
        created_at=r["created_at"], started_at=r["started_at"], finished_at=r["finished_at"],
    )


def _job_run(r: Mapping[str, Any]) -> JobRun:
    return JobRun(
        id=r["id"], stage_run_id=r["stage_run_id"], name=r["name"], run_index=r["run_index"], run_count=r["run_count"],
        status=Status(r["status"]), agent=r["agent"], exit_code=r["exit_code"], reason=r["reason"], log_path=r["log_path"],
        owner=r["owner"], heartbeat_at=r["heartbeat_at"], created_at=r["created_at"], started_at=r["started_at"],
        finished_at=r["finished_at"],
    )
