"""The engine: turns scheduling decisions into stage and job runs.

It is the side-effecting edge around :mod:`workbench.scheduler`: it asks the
pure scheduler what comes next, records the decision in the store (one
transaction per state change), hands resolved jobs to an executor and records
what comes back. Any number of engines, in any number of processes, may drive
the same run: creating and claiming stages are compare-and-set operations in
the store, so each stage runs once.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import Future, as_completed
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .config.model import Job, Pipeline, Stage
from .errors import InvalidState, NotFound, WorkbenchError
from .executors import Executor, JobOutcome, JobSpec, make_executor
from .hooks import RUN_HOOKS, RUN_RECORDERS, STAGE_HOOKS
from .identity import current_user
from .scheduler import AwaitApproval, Busy, Finish, RunStage, StageSnapshot, job_instances, next_step, render_label
from .status import Status
from .store import PipelineRun, RunDetail, StageRun

if TYPE_CHECKING:
    from .workspace import Workspace

Listener = Callable[..., None]

AGENT_LOST_RERUN = "workbench (agent lost)"  # who reran a stage automatically (stage_runs.approved_by)
HEARTBEAT_SECONDS = 5.0
CANCEL_POLL_SECONDS = 1.0  # how soon a `workbench cancel` from another process is noticed

# Features plug into triggering and cancelling without the engine importing
# them: workbench.materials registers a planner that resolves each trigger's
# material revisions (and refuses a locked pipeline), and a source of cancel
# requests recorded by other processes.
TriggerPlanner = Callable[["Engine", Pipeline, "Mapping[str, Any] | None", str], Any]
CancelSource = Callable[[Any, list[int]], set[int]]
TRIGGER_PLANNERS: list[TriggerPlanner] = []
CANCEL_SOURCES: list[CancelSource] = []


def register_trigger_planner(planner: TriggerPlanner) -> None:
    """``planner(engine, pipeline_cfg, requested_revisions, trigger)`` → a plan or None.

    A plan has ``.revisions`` (kept on the run) and ``.record(conn, run_id)`` (the
    feature's rows, written in the run's own transaction).
    """
    if planner not in TRIGGER_PLANNERS:
        TRIGGER_PLANNERS.append(planner)


RunOrigin = Callable[["Engine", Pipeline], "tuple[str, dict[str, Any], Callable[[Any, int], None]] | None"]
RUN_ORIGINS: list[RunOrigin] = []


def register_run_origin(origin: RunOrigin) -> None:
    """``origin(engine, pipeline_cfg)`` → (name, revision, record) where the pipeline's definition came from
    (a config repository's revision), kept on each run like a material; or None."""
    if origin not in RUN_ORIGINS:
        RUN_ORIGINS.append(origin)


def register_cancel_source(source: CancelSource) -> None:
    """``source(store, run_ids)`` → the ids among them that someone asked to cancel."""
    if source not in CANCEL_SOURCES:
        CANCEL_SOURCES.append(source)


class Engine:
    """Drives pipeline runs of one workspace with one executor."""

    def __init__(
        self,
        ws: "Workspace",
        *,
        executor: Executor | str | None = None,
        max_parallel: int | None = None,
        listener: Listener | None = None,
        one_shot: bool = False,
    ) -> None:
        """``one_shot``: this process ends after its run (``workbench run``), so features keep
        nothing warm for later runs."""
        from . import features

        features.load()
        self.ws = ws
        self.store = ws.store
        if isinstance(executor, Executor):
            self.executor = executor
        else:  # the name given (--executor), else workbench.yaml's, else local
            spec, options = ws.settings.resolve_executor(executor, max_parallel)
            self.executor = make_executor(spec, **options)
        self._owns_executor = not isinstance(executor, Executor)
        if hasattr(self.executor, "bind"):  # e.g. the Dask executor records "waiting for an agent" in the store
            self.executor.bind(self)
        self.listener = listener or (lambda *a, **k: None)
        self.one_shot = one_shot
        self.cancel_event = threading.Event()
        self.cancel_reason: str | None = None  # why cancel() was called (a signal), for the records
        self._run_cancel: dict[int, threading.Event] = {}  # per run: `workbench cancel P/C` stops one run only
        self._driving: dict[int, int] = {}  # run id -> drivers in this engine (cancel requests are polled for these)
        self._running_jobs: set[int] = set()
        self._lock = threading.Lock()
        self._heartbeat: threading.Thread | None = None
        self._stop = threading.Event()

    # -- lifecycle -------------------------------------------------------------
    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._owns_executor:
            self.executor.close()

    def cancel(self, reason: str | None = None) -> None:
        """Cancel everything this engine runs (Ctrl-C, SIGTERM, SIGHUP): jobs are killed, on_cancel runs.

        ``reason`` (e.g. "workbench run stopped by SIGTERM") becomes
        the cancelled stages' and runs' reason, so `workbench status` says why
        a run stopped; the first reason given stands.
        """
        with self._lock:
            if reason and self.cancel_reason is None:
                self.cancel_reason = reason
            self.cancel_event.set()
            events = list(self._run_cancel.values())
        for ev in events:
            ev.set()

    def kill_now(self, why: str | None = None) -> list[int]:
        """The immediate stop (a second signal): SIGKILL every job process group of this process at once.

        The graceful stop is under way (the cancel event is set); this only
        removes its waits: task groups die now, on_cancel tasks are skipped or
        killed, and the drivers still record each job, stage and run as
        cancelled. ``why`` is added to the cancel reason. Returns the groups killed.
        """
        from .tasks.process import kill_all_now

        with self._lock:
            if why:
                self.cancel_reason = f"{self.cancel_reason}; {why}" if self.cancel_reason else why
        self.cancel()
        return kill_all_now()

    def cancel_run(self, run_id: int) -> None:
        """Cancel one run this engine drives; the others go on."""
        self._cancel_for(run_id).set()

    def _cancelled_why(self, default: str) -> str:
        """The reason a cancelled stage or run is recorded with: the engine's cancel reason when it has one."""
        return self.cancel_reason if self.cancel_event.is_set() and self.cancel_reason else default

    def _cancel_for(self, run_id: int) -> threading.Event:
        with self._lock:
            ev = self._run_cancel.get(run_id)
            if ev is None:
                ev = self._run_cancel[run_id] = threading.Event()
        if self.cancel_event.is_set():
            ev.set()
        return ev

    # -- triggering ------------------------------------------------------------
    def trigger(
        self,
        pipeline: str,
        *,
        triggered_by: str | None = None,
        trigger: str = "manual",
        revisions: Mapping[str, Any] | None = None,
        revision_key: str | None = None,
        plan: Any = None,
    ) -> PipelineRun:
        """Create a run. Without a ``plan`` the registered planner resolves the materials:
        each at its latest revision, or at the one ``revisions`` names (``{material: rev}``)."""
        cfg = self.ws.config.pipeline(pipeline)
        env = self.ws.config.environment_of(pipeline)
        if plan is None:
            requested = {k: _rev_str(v) for k, v in revisions.items()} if revisions else None
            for planner in TRIGGER_PLANNERS:
                plan = planner(self, cfg, requested, trigger)
                if plan is not None:
                    break
        writers: list[Callable[[Any, int], None]] = []  # features' rows, written in the run's own transaction
        if plan is not None:
            revisions = plan.revisions
            writers += [plan.record] if plan.record is not None else []
        for origin_of in RUN_ORIGINS:
            found = origin_of(self, cfg)
            if found is not None:
                name, rev, record = found
                revisions = {**(revisions or {}), name: rev}
                writers.append(record)
        writers += [w for w in (r(cfg, env) for r in RUN_RECORDERS) if w is not None]

        def record_all(conn: Any, run_id: int) -> None:
            for w in writers:
                w(conn, run_id)

        extra = record_all if writers else None
        run = self.store.create_pipeline_run(
            pipeline,
            label_for=lambda n: render_label(cfg.label_template, n,
                                             {k: _label_value(v) for k, v in (revisions or {}).items()}),
            trigger=trigger,
            triggered_by=triggered_by or current_user(),
            group_name=cfg.group,
            revisions=revisions,
            revision_key=revision_key,
            environment=env.name if env else None,
            extra=extra,
        )
        self.listener("run_created", run=run)
        return run

    def run(self, pipeline: str, **trigger_options: Any) -> PipelineRun:
        """Trigger and drive in this process until the run finishes or waits."""
        cfg = self.ws.config.pipeline(pipeline)
        for hook in RUN_HOOKS:  # e.g. kernels boot while the variables and materials are checked
            hook.run_starting(self, cfg)
        env_cfg = self.ws.config.environment_of(pipeline)
        for stage in cfg.stages:  # a missing or unsafe key is refused here, before anything is written
            for job in stage.jobs:
                self._variables(cfg, stage, job, env_cfg)
        return self.drive(self.trigger(pipeline, **trigger_options))

    def rerun(self, run: PipelineRun | int, stage: str, *, failed_jobs: bool = False,
              by: str | None = None) -> PipelineRun:
        """GoCD's rerun: a new counter of ``stage`` in the same run (its original revisions), from the current config.

        With ``failed_jobs`` only the jobs that did not pass run again; the
        passed ones are carried into the new counter as passed. The run is
        left SCHEDULED for :meth:`drive` (here, or any tick or serve).
        """
        detail = self.store.run_detail(run if isinstance(run, int) else run.id)
        run = detail.run
        pipeline = self.ws.config.pipeline(run.pipeline)
        stage_cfg = pipeline.stage(stage)
        if stage_cfg is None:
            names = ", ".join(s.name for s in pipeline.stages)
            raise NotFound(f"pipeline {run.pipeline} has no stage {stage!r} (stages: {names})")
        position = [s.name for s in pipeline.stages].index(stage)
        latest = detail.latest_stages()
        busy = [s for s in latest.values() if s.status in (Status.SCHEDULED, Status.RUNNING)]
        if busy:
            raise InvalidState(f"{run.locator}: stage {busy[0].name} is {busy[0].status}; "
                               "wait for it or cancel the run first")
        previous = latest.get(stage)
        if previous is None and any(
            latest.get(s.name) is None or latest[s.name].status != Status.PASSED for s in pipeline.stages[:position]
        ):
            raise InvalidState(f"stage {stage} never ran in {run.locator} and the stages before it did not all pass")
        wanted = [inst for job in stage_cfg.jobs for inst in job_instances(job, self._agent_count(job, pipeline))]
        keep: dict[str, Any] = {}
        if failed_jobs:
            if previous is None:
                raise InvalidState(f"stage {stage} never ran in {run.locator}: there are no failed jobs to rerun")
            before = detail.jobs.get(previous.id, ())
            if all(j.status == Status.PASSED for j in before):
                raise InvalidState(f"stage {stage} of {run.locator} has no failed jobs to rerun")
            keep = {j.name: j for j in before if j.status == Status.PASSED}
        user = by or current_user()
        created, job_rows = self.store.create_stage_run(
            run.id, stage, position, approval_type=stage_cfg.approval.type, approved_by=user, jobs=wanted,
            expect_stage_runs=len(detail.stages),
        )
        for jr in job_rows:
            if jr.name in keep:
                old = keep[jr.name]
                counter = previous.counter if previous else "?"
                self.store.finish_job(jr.id, Status.PASSED, exit_code=old.exit_code,
                                      reason=f"passed in {stage} counter {counter}; not rerun")
        self.store.set_pipeline_status(run.id, Status.SCHEDULED, reason=f"rerun of {stage} by {user}")
        self.listener("stage_rerun", run=run, stage=created)
        return self.store.get_pipeline_run_by_id(run.id)

    # -- driving ---------------------------------------------------------------
    def drive(self, run: PipelineRun | int) -> PipelineRun:
        """Advance a run as far as it can go here; returns its latest record."""
        run_id = run if isinstance(run, int) else run.id
        with self._lock:
            self._driving[run_id] = self._driving.get(run_id, 0) + 1
        try:
            return self._drive(run_id)
        finally:
            with self._lock:
                left = self._driving.pop(run_id, 1) - 1
                if left > 0:
                    self._driving[run_id] = left
                else:
                    self._run_cancel.pop(run_id, None)

    def _drive(self, run_id: int) -> PipelineRun:
        known: RunDetail | None = None  # the run as this driver left it after a stage it ran passed
        while True:
            # the stage rows decide; jobs are read when needed
            detail = known if known is not None else self.store.run_detail(run_id, jobs=False)
            run = detail.run
            if run.status.finished:
                return run
            pipeline = self.ws.config.pipeline(run.pipeline)
            latest = detail.latest_stages()
            snapshots = [StageSnapshot(s.name, s.status) for s in latest.values()]
            decision = next_step(pipeline, snapshots, manually_triggered=run.trigger == "manual")
            if known is not None:
                known = None
                if not isinstance(decision, RunStage):  # only starting a stage re-checks the run in its transaction
                    continue
            if isinstance(decision, Finish):
                reason = decision.reason
                ended = latest.get(decision.stage) if decision.stage else None
                if ended is not None and ended.reason and decision.status == Status.FAILED:
                    reason = f"{reason}: {ended.reason}"  # e.g. the traffic provider's own message
                if decision.status == Status.CANCELLED and self.cancel_event.is_set() and self.cancel_reason:
                    reason = f"{self.cancel_reason} ({reason})"
                self.store.set_pipeline_status(run_id, decision.status, reason)
                run = self.store.get_pipeline_run_by_id(run_id)
                self.listener("run_finished", run=run)
                return run
            if isinstance(decision, Busy):
                return run
            if isinstance(decision, AwaitApproval):
                if decision.stage not in latest or latest[decision.stage].status != Status.WAITING:
                    try:
                        self.store.create_stage_run(
                            run_id, decision.stage, decision.position, approval_type="manual",
                            status=Status.WAITING, expect_stage_runs=len(detail.stages),
                        )
                    except InvalidState:
                        continue
                if run.status != Status.WAITING:
                    self.store.set_pipeline_status(run_id, Status.WAITING)
                run = self.store.get_pipeline_run_by_id(run_id)
                self.listener("run_waiting", run=run, stage=decision.stage)
                return run
            assert isinstance(decision, RunStage)
            stage_cfg = pipeline.stages[decision.position]
            existing = latest.get(decision.stage)
            marked = False  # the run's RUNNING status written with the stage (one transaction fewer per run)
            try:
                wanted = [i for job in stage_cfg.jobs for i in job_instances(job, self._agent_count(job, pipeline))]
                if existing is not None and existing.status == Status.SCHEDULED:
                    # claimed with its jobs in one transaction: a crash never leaves it running without them
                    stage_run, jobs = self.store.start_scheduled_stage(existing.id, wanted)
                else:  # created already running, with its jobs: one transaction (benchmarks/README.md)
                    stage_run, jobs = self.store.create_stage_run(
                        run_id, stage_cfg.name, decision.position, approval_type=stage_cfg.approval.type,
                        status=Status.RUNNING, jobs=wanted, expect_stage_runs=len(detail.stages),
                        run_status=Status.RUNNING if run.status != Status.RUNNING else None, open_run=True,
                    )
                    marked = True
            except InvalidState:
                continue  # another driver got there first, or the run was cancelled; look again
            if run.status != Status.RUNNING and not marked:
                self.store.set_pipeline_status(run_id, Status.RUNNING)
            final = self._run_stage(run, pipeline, stage_cfg, stage_run, jobs)
            if final is not None and final.status == Status.PASSED and run.status == Status.RUNNING:
                # Decide the next step from the stage rows read before plus the stage just passed, without
                # reading the run again (a read transaction per stage step, benchmarks/README.md): starting
                # the next stage is a compare-and-set on the run's stage count and open status, so a rerun
                # or cancel from another process meanwhile sends this loop back to the store; any other
                # decision (finish, approval) is taken only after a fresh read.
                stages = sorted([s for s in detail.stages if s.id != final.id] + [final],
                                key=lambda s: (s.position, s.counter))
                known = replace(detail, stages=tuple(stages), jobs={})

    # -- stages and jobs -----------------------------------------------------
    def _run_stage(self, run: PipelineRun, pipeline: Pipeline, stage: Stage, stage_run: StageRun,
                   jobs: list[Any]) -> StageRun | None:
        """Run the stage's jobs; returns the stage as recorded at its end (None: a new counter was scheduled)."""
        if not jobs:
            wanted = [(job, inst) for job in stage.jobs for inst in job_instances(job, self._agent_count(job, pipeline))]
            jobs = self.store.add_job_runs(stage_run.id, [inst for _, inst in wanted])
            by_name = {inst[0]: job for job, inst in wanted}
        else:
            by_name = {inst[0]: job for job in stage.jobs for inst in job_instances(job, self._agent_count(job, pipeline))}
        self.listener("stage_started", run=run, stage=stage_run, jobs=jobs)
        cancel = self._cancel_for(run.id)
        specs: dict[Future[JobOutcome], Any] = {}
        done_before = [jr for jr in jobs if jr.status.finished]  # kept from the previous counter (rerun of failed jobs)
        unstartable = False
        for jr in jobs:
            if jr.status.finished:
                continue
            job_cfg = by_name.get(jr.name)
            if job_cfg is None:  # config changed under a scheduled stage
                self.store.finish_job(jr.id, Status.FAILED, reason=f"job {jr.name} is no longer in the config")
                unstartable = True
                continue
            try:
                spec = self._job_spec(run, pipeline, stage, stage_run, job_cfg, jr)
            except WorkbenchError as exc:  # e.g. an unsafe key file: the stage fails saying why, never stays running
                self.store.finish_job(jr.id, Status.FAILED, reason=f"job could not start: {exc}")
                unstartable = True
                continue
            with self._lock:  # heartbeats cover queued jobs too, so a crash before they start is noticed
                self._running_jobs.add(jr.id)
            specs[self.executor.submit(spec, cancel, self._on_job_start, self._on_job_process)] = (jr, spec)
        self._ensure_heartbeat()
        failed = unstartable or any(jr.status == Status.FAILED for jr in done_before)
        failed_otherwise = failed  # a failure that is not a lost agent: never rerun automatically
        lost: list[str] = []  # jobs whose agent was lost mid-job
        cancelled = any(jr.status == Status.CANCELLED for jr in done_before)
        first_failure: tuple[str, str | None] | None = next(
            ((jr.name, jr.reason) for jr in done_before if jr.status == Status.FAILED), None)
        for fut in as_completed(specs):  # one waiter per job; wait(FIRST_COMPLETED) in a loop was O(jobs²)
            jr, spec = specs[fut]
            try:
                outcome = fut.result()
            except Exception as exc:  # an executor bug or a lost agent: the job fails, the run goes on
                outcome = JobOutcome(Status.FAILED, reason=f"executor error: {exc}")
            self.store.finish_job(jr.id, outcome.status, exit_code=outcome.exit_code, reason=outcome.reason)
            with self._lock:
                self._running_jobs.discard(jr.id)
            failed |= outcome.status == Status.FAILED
            if outcome.status == Status.FAILED:
                first_failure = first_failure or (jr.name, outcome.reason)
                if outcome.agent_lost:
                    lost.append(jr.name)
                else:
                    failed_otherwise = True
            cancelled |= outcome.status == Status.CANCELLED
            self.listener("job_finished", run=run, stage=stage_run, job=jr, outcome=outcome)
        if failed or (jobs and not specs and not done_before):
            status, reason = Status.FAILED, "a job failed"
            if first_failure is not None:  # say which, and why: the reason reaches `run`, `status`, dashboards
                name, why = first_failure
                reason = f"job {name} failed" + (f": {why}" if why else "")
        elif cancelled or cancel.is_set():
            status, reason = Status.CANCELLED, self._cancelled_why("cancelled")
        else:
            status, reason = Status.PASSED, None
        if status == Status.PASSED:
            # Stage hooks (a traffic step) act *before* the pass is recorded: a crash in between
            # leaves the stage running, which recovery fails ("rerun it"), never a pass whose
            # traffic did not move (found by tests/test_faults.py).
            final = self._stage_hooks(run, stage, replace(stage_run, status=status, reason=reason))
            if final.status == Status.PASSED:
                try:
                    final = self.store.set_stage_status(stage_run.id, status, reason, expect=[Status.RUNNING])
                except InvalidState:  # failed meanwhile (recovery took this process for dead): that stands
                    final = self.store.get_stage_run(stage_run.id)
        else:
            again = None
            if status == Status.FAILED and lost and not failed_otherwise and not cancel.is_set():
                again = self._agent_lost_rerun(run, stage, lost, by_name)
                if again is not None:
                    reason = again
            final = self._stage_hooks(run, stage, self.store.set_stage_status(stage_run.id, status, reason))
            if again is not None and final.status == Status.FAILED:
                self.listener("stage_finished", run=run, stage=final)
                try:  # a new stage counter with only the lost jobs; _drive picks it up next
                    self.rerun(run.id, stage.name, failed_jobs=True, by=AGENT_LOST_RERUN)
                except InvalidState:  # another driver decided first: its decision stands
                    pass
                return None
        self.listener("stage_finished", run=run, stage=final)
        return final

    def _stage_hooks(self, run: PipelineRun, stage: Stage, final: Any) -> Any:
        """The stage as the stage hooks leave it (a traffic step may fail a pass)."""
        for hook in STAGE_HOOKS:
            changed = hook.stage_finished(self, run, stage, final)
            if changed is not None:
                final = changed
        return final

    def _agent_lost_rerun(self, run: PipelineRun, stage: Stage, lost: list[str], by_name: Mapping[str, Job]) -> str | None:
        """The failed stage's reason when its lost jobs may run again (``rerun_on_agent_lost``), else None.

        Only jobs that opted in are rerun (a deploy half-done on a dead agent is
        not safe to repeat unless its author says so), at most N times per
        stage of a run: earlier automatic reruns are the stage counters created
        by :data:`AGENT_LOST_RERUN`. Each attempt stays in the store as its own
        stage counter, the lost one failed with "agent lost".
        """
        allowed = min(by_name[name].rerun_on_agent_lost if name in by_name else 0 for name in lost)
        if allowed <= 0:
            return None
        done = sum(1 for s in self.store.stage_runs(run.id) if s.name == stage.name and s.approved_by == AGENT_LOST_RERUN)
        if done >= allowed:
            return None
        return (f"agent lost running {', '.join(lost)}; rerun automatically on another agent "
                f"({done + 1} of {allowed}, rerun_on_agent_lost)")

    def _on_job_start(self, spec: JobSpec, agent: str) -> None:
        self.store.start_job(spec.job_run_id, agent=agent, log_path=spec.log_path)
        with self._lock:
            self._running_jobs.add(spec.job_run_id)
        self.listener("job_started", job_run_id=spec.job_run_id, job=spec.job, stage=spec.stage, agent=agent)

    def _on_job_process(self, spec: JobSpec, pgid: int) -> None:
        """Record the process group a job's task runs in, so recovery can stop it if this process dies."""
        from .tasks.pgroups import identity

        self.store.set_job_process(spec.job_run_id, pgid, identity(pgid))

    def _agent_count(self, job: Job | None = None, pipeline: Pipeline | None = None) -> int:
        """Agents that can run ``job`` (``run_instances: all``): its resources and environment decide."""
        agents_for = getattr(self.executor, "agents_for", None)
        if agents_for is not None and job is not None and pipeline is not None:
            env = self.ws.config.environment_of(pipeline.name)
            return int(agents_for(job.resources, env.name if env else None))
        return int(getattr(self.executor, "agent_count", 1))

    def _job_spec(self, run: PipelineRun, pipeline: Pipeline, stage: Stage, stage_run: StageRun, job: Job, jr: Any) -> JobSpec:
        ws = self.ws
        rel = Path(run.pipeline) / str(run.counter) / f"{stage.name}-{stage_run.counter}" / jr.name
        workdir = ws.work_dir / rel
        log_path = ws.logs_dir / rel.parent / f"{jr.name}.log"
        env_cfg = ws.config.environment_of(pipeline.name)
        plain, secrets = self._variables(pipeline, stage, job, env_cfg)
        env = dict(os.environ)
        env.update(plain)
        env.update(secrets)
        if secrets:  # which variables are secret, so workbench.record() in the job masks their values too
            env["WORKBENCH_SECRET_NAMES"] = ",".join(sorted(secrets))
        env.update(self._go_env(run, pipeline, stage, stage_run, jr, env_cfg.name if env_cfg else None))
        env["WORKBENCH_STORE_URL"] = self.store.url  # workbench.record() in the job writes here
        return JobSpec(
            job_run_id=jr.id,
            pipeline=run.pipeline,
            counter=run.counter,
            stage=stage.name,
            stage_counter=stage_run.counter,
            job=jr.name,
            tasks=job.tasks,
            env=env,
            workdir=str(workdir),
            log_path=str(log_path),
            workspace=str(ws.root),
            timeout=job.timeout,
            secrets=tuple(v for v in secrets.values() if v),
            resources=job.resources,
            context={
                "pipeline": run.pipeline, "counter": run.counter, "label": run.label, "stage": stage.name,
                "stage_counter": stage_run.counter, "job": jr.name, "revisions": dict(run.revisions),
                "environment": env_cfg.name if env_cfg else None, "run_id": run.id, "stage_run_id": stage_run.id,
                "store_url": self.store.url, "artifacts_url": ws.artifacts_url,
                "materials": _checkouts(pipeline, run.revisions) if stage.fetch_materials else [],
                "artifacts": job.artifacts,  # published by workbench.artifacts' job hook
                "run_instances": job.run_instances,  # "all": the Dask executor pins instance i to agent i
            },
        )

    def _variables(self, pipeline: Pipeline, stage: Stage, job: Job, env_cfg: Any) -> tuple[dict[str, str], dict[str, str]]:
        """Plain and (decrypted) secure variables with GoCD's precedence: job > stage > pipeline > environment.

        A name set at a nearer level wins whether it is plain or secure there,
        so a job's plain value is not overridden by an environment's secret.
        """
        plain: dict[str, str] = {}
        secure: dict[str, str] = {}
        levels = [(env_cfg.environment_variables, env_cfg.secure_variables) if env_cfg else ({}, {}),
                  (pipeline.environment_variables, pipeline.secure_variables),
                  (stage.environment_variables, stage.secure_variables),
                  (job.environment_variables, job.secure_variables)]
        for level_plain, level_secure in levels:
            for name, value in (level_plain or {}).items():
                plain[name] = value
                secure.pop(name, None)
            for name, value in (level_secure or {}).items():
                secure[name] = value
                plain.pop(name, None)
        if not secure:
            return plain, {}
        from .secrets import decrypt_variables

        return plain, decrypt_variables(secure, self.ws)

    @staticmethod
    def _go_env(run: PipelineRun, pipeline: Pipeline, stage: Stage, stage_run: StageRun, jr: Any, env_name: str | None) -> dict[str, str]:
        env = {
            "GO_PIPELINE_NAME": run.pipeline,
            "GO_PIPELINE_COUNTER": str(run.counter),
            "GO_PIPELINE_LABEL": run.label,
            "GO_PIPELINE_GROUP_NAME": pipeline.group,
            "GO_STAGE_NAME": stage.name,
            "GO_STAGE_COUNTER": str(stage_run.counter),
            "GO_JOB_NAME": jr.name,
            # GoCD: the person who approved (or reran) this stage; else whoever or whatever triggered the run
            "GO_TRIGGER_USER": stage_run.approved_by or run.triggered_by,
            "WORKBENCH_RUN_ID": str(run.id),
            "WORKBENCH_STAGE_RUN_ID": str(stage_run.id),
            "WORKBENCH_JOB_RUN_ID": str(jr.id),
        }
        if jr.run_count > 1 or "-runInstance-" in jr.name or "-runOnAll-" in jr.name:
            env["GO_JOB_RUN_INDEX"] = str(jr.run_index)
            env["GO_JOB_RUN_COUNT"] = str(jr.run_count)
        if env_name:
            env["GO_ENVIRONMENT_NAME"] = env_name
        for name, rev in run.revisions.items():
            key = _env_key(name)
            env[f"GO_REVISION_{key}"] = _rev_str(rev)
            if isinstance(rev, Mapping):
                if "changed" in rev:
                    env[f"GO_MATERIAL_{key}_HAS_CHANGED"] = "true" if rev.get("changed") else "false"
                if rev.get("kind") == "git":
                    env[f"GO_TO_REVISION_{key}"] = _rev_str(rev)
                    env[f"GO_FROM_REVISION_{key}"] = str(rev.get("previous") or _rev_str(rev))
                elif rev.get("kind") == "dependency":
                    for n in {name, str(rev.get("pipeline") or name)}:
                        env[f"GO_DEPENDENCY_LABEL_{_env_key(n)}"] = str(rev.get("label", ""))
                        env[f"GO_DEPENDENCY_LOCATOR_{_env_key(n)}"] = str(rev.get("revision", ""))
        if any(isinstance(r, Mapping) and r.get("changed") for r in run.revisions.values()):
            env["GO_MATERIAL_HAS_CHANGED"] = "true"
        return env

    # -- heartbeat -------------------------------------------------------------
    def _ensure_heartbeat(self) -> None:
        if self._heartbeat is not None and self._heartbeat.is_alive():
            return
        self._heartbeat = threading.Thread(target=self._beat, name="wb-heartbeat", daemon=True)
        self._heartbeat.start()

    def _beat(self) -> None:
        import time

        last = time.monotonic()
        while not self._stop.wait(CANCEL_POLL_SECONDS if CANCEL_SOURCES else HEARTBEAT_SECONDS):
            with self._lock:
                driving = list(self._driving)
            if driving and CANCEL_SOURCES:
                self._poll_cancels(driving)
            if time.monotonic() - last < HEARTBEAT_SECONDS - 0.01:
                continue
            last = time.monotonic()
            with self._lock:
                ids = list(self._running_jobs)
            try:
                self.store.heartbeat(ids)
            except Exception:  # a busy store must not kill the heartbeat thread
                pass

    def _poll_cancels(self, run_ids: list[int]) -> None:
        """Act on `workbench cancel` requests that other processes recorded for runs driven here."""
        for source in CANCEL_SOURCES:
            try:
                wanted = source(self.store, run_ids)
            except Exception:  # like the heartbeat: never die on a busy store
                continue
            for run_id in wanted:
                ev = self._cancel_for(run_id)
                if not ev.is_set():
                    ev.set()
                    self.listener("run_cancel_requested", run_id=run_id)


def _env_key(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).upper()


def _rev_str(rev: Any) -> str:
    if isinstance(rev, Mapping):
        return str(rev.get("revision") or rev.get("label") or "")
    return str(rev)


def _label_value(rev: Any) -> str:
    """``${material}`` in a label template: a git sha, or an upstream pipeline's label (as in GoCD)."""
    if isinstance(rev, Mapping) and rev.get("kind") == "dependency":
        return str(rev.get("label") or "")
    return _rev_str(rev)


def _checkouts(pipeline: Pipeline, revisions: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What a job checks out: each git material of the config at the run's revision (plain data for any worker)."""
    gits = [m for m in pipeline.materials if getattr(m, "kind", None) == "git"]
    out = []
    for m in gits:
        rev = revisions.get(m.name)
        if not isinstance(rev, Mapping) or rev.get("kind") != "git" or not rev.get("revision"):
            continue
        dest = m.destination or ("" if len(gits) == 1 else m.name)
        out.append({"name": m.name, "url": rev.get("url") or m.url, "revision": rev["revision"], "destination": dest,
                    "shallow": m.shallow_clone})
    return out


def find_run(store: Any, locator: str, expected: str = "PIPELINE/COUNTER[/STAGE[/JOB]]") -> tuple[PipelineRun, list[str]]:
    """``PIPELINE/COUNTER[/STAGE[/JOB]]`` → the run and the rest of the path.

    ``expected`` is the form the caller wants, named in the error for a locator too short."""
    parts = [p for p in locator.strip("/").split("/") if p]
    if len(parts) < 2:
        raise NotFound(f"{locator!r}: expected {expected}")
    pipeline, counter = parts[0], parts[1]
    if counter != "latest" and not counter.isdigit():
        raise NotFound(f"{locator!r}: counter must be a number or 'latest'")
    return store.get_pipeline_run(pipeline, counter), parts[2:]


__all__ = ["Engine", "find_run", "RunDetail"]
