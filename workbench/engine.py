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
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .config.model import Job, Pipeline, Stage
from .errors import InvalidState, NotFound
from .executors import Executor, JobOutcome, JobSpec, make_executor
from .hooks import STAGE_HOOKS
from .identity import current_user
from .scheduler import AwaitApproval, Busy, Finish, RunStage, StageSnapshot, job_instances, merge_env, next_step, render_label
from .status import Status
from .store import PipelineRun, RunDetail, StageRun

if TYPE_CHECKING:
    from .workspace import Workspace

Listener = Callable[..., None]

HEARTBEAT_SECONDS = 5.0


class Engine:
    """Drives pipeline runs of one workspace with one executor."""

    def __init__(
        self,
        ws: "Workspace",
        *,
        executor: Executor | str | None = None,
        max_parallel: int | None = None,
        listener: Listener | None = None,
    ) -> None:
        from . import features

        features.load()
        self.ws = ws
        self.store = ws.store
        self.executor = executor if isinstance(executor, Executor) else make_executor(executor, max_parallel=max_parallel)
        self._owns_executor = not isinstance(executor, Executor)
        self.listener = listener or (lambda *a, **k: None)
        self.cancel_event = threading.Event()
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

    def cancel(self) -> None:
        """Cancel everything this engine runs (Ctrl-C): jobs are killed, on_cancel runs."""
        self.cancel_event.set()

    # -- triggering ------------------------------------------------------------
    def trigger(
        self,
        pipeline: str,
        *,
        triggered_by: str | None = None,
        trigger: str = "manual",
        revisions: Mapping[str, Any] | None = None,
        revision_key: str | None = None,
    ) -> PipelineRun:
        cfg = self.ws.config.pipeline(pipeline)
        env = self.ws.config.environment_of(pipeline)
        run = self.store.create_pipeline_run(
            pipeline,
            label_for=lambda n: render_label(cfg.label_template, n, {k: _rev_str(v) for k, v in (revisions or {}).items()}),
            trigger=trigger,
            triggered_by=triggered_by or current_user(),
            group_name=cfg.group,
            revisions=revisions,
            revision_key=revision_key,
            environment=env.name if env else None,
        )
        self.listener("run_created", run=run)
        return run

    def run(self, pipeline: str, **trigger_options: Any) -> PipelineRun:
        """Trigger and drive in this process until the run finishes or waits."""
        return self.drive(self.trigger(pipeline, **trigger_options))

    # -- driving ---------------------------------------------------------------
    def drive(self, run: PipelineRun | int) -> PipelineRun:
        """Advance a run as far as it can go here; returns its latest record."""
        run_id = run if isinstance(run, int) else run.id
        while True:
            detail = self.store.run_detail(run_id)
            run = detail.run
            if run.status.finished:
                return run
            pipeline = self.ws.config.pipeline(run.pipeline)
            latest = detail.latest_stages()
            snapshots = [StageSnapshot(s.name, s.status) for s in latest.values()]
            decision = next_step(pipeline, snapshots, manually_triggered=run.trigger == "manual")
            if isinstance(decision, Finish):
                self.store.set_pipeline_status(run_id, decision.status, decision.reason)
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
            try:
                if existing is not None and existing.status == Status.SCHEDULED:
                    stage_run = self.store.set_stage_status(existing.id, Status.RUNNING, expect=[Status.SCHEDULED])
                    jobs = list(detail.jobs.get(existing.id, ()))
                else:
                    created, _ = self.store.create_stage_run(
                        run_id, stage_cfg.name, decision.position,
                        approval_type=stage_cfg.approval.type, expect_stage_runs=len(detail.stages),
                    )
                    stage_run = self.store.set_stage_status(created.id, Status.RUNNING, expect=[Status.SCHEDULED])
                    jobs = []
            except InvalidState:
                continue  # another driver got there first; look again
            if run.status != Status.RUNNING:
                self.store.set_pipeline_status(run_id, Status.RUNNING)
            self._run_stage(run, pipeline, stage_cfg, stage_run, jobs)

    # -- stages and jobs -----------------------------------------------------
    def _run_stage(self, run: PipelineRun, pipeline: Pipeline, stage: Stage, stage_run: StageRun, jobs: list[Any]) -> None:
        if not jobs:
            wanted = [(job, inst) for job in stage.jobs for inst in job_instances(job, self._agent_count())]
            jobs = self.store.add_job_runs(stage_run.id, [inst for _, inst in wanted])
            by_name = {inst[0]: job for job, inst in wanted}
        else:
            by_name = {inst[0]: job for job in stage.jobs for inst in job_instances(job, self._agent_count())}
        self.listener("stage_started", run=run, stage=stage_run, jobs=jobs)
        specs: dict[Future[JobOutcome], Any] = {}
        for jr in jobs:
            job_cfg = by_name.get(jr.name)
            if job_cfg is None:  # config changed under a scheduled stage
                self.store.finish_job(jr.id, Status.FAILED, reason=f"job {jr.name} is no longer in the config")
                continue
            spec = self._job_spec(run, pipeline, stage, stage_run, job_cfg, jr)
            specs[self.executor.submit(spec, self.cancel_event, self._on_job_start)] = (jr, spec)
        self._ensure_heartbeat()
        failed = cancelled = False
        pending = set(specs)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                jr, spec = specs[fut]
                try:
                    outcome = fut.result()
                except Exception as exc:  # an executor bug or a lost agent: the job fails, the run goes on
                    outcome = JobOutcome(Status.FAILED, reason=f"executor error: {exc}")
                self.store.finish_job(jr.id, outcome.status, exit_code=outcome.exit_code, reason=outcome.reason)
                with self._lock:
                    self._running_jobs.discard(jr.id)
                failed |= outcome.status == Status.FAILED
                cancelled |= outcome.status == Status.CANCELLED
                self.listener("job_finished", run=run, stage=stage_run, job=jr, outcome=outcome)
        if failed or (jobs and not specs):
            status, reason = Status.FAILED, "a job failed"
        elif cancelled or self.cancel_event.is_set():
            status, reason = Status.CANCELLED, "cancelled"
        else:
            status, reason = Status.PASSED, None
        final = self.store.set_stage_status(stage_run.id, status, reason)
        for hook in STAGE_HOOKS:
            changed = hook.stage_finished(self, run, stage, final)
            if changed is not None:
                final = changed
        self.listener("stage_finished", run=run, stage=final)

    def _on_job_start(self, spec: JobSpec, agent: str) -> None:
        self.store.start_job(spec.job_run_id, agent=agent, log_path=spec.log_path)
        with self._lock:
            self._running_jobs.add(spec.job_run_id)
        self.listener("job_started", job_run_id=spec.job_run_id, job=spec.job, stage=spec.stage, agent=agent)

    def _agent_count(self) -> int:
        return int(getattr(self.executor, "agent_count", 1))

    def _job_spec(self, run: PipelineRun, pipeline: Pipeline, stage: Stage, stage_run: StageRun, job: Job, jr: Any) -> JobSpec:
        ws = self.ws
        rel = Path(run.pipeline) / str(run.counter) / f"{stage.name}-{stage_run.counter}" / jr.name
        workdir = ws.work_dir / rel
        log_path = ws.logs_dir / rel.parent / f"{jr.name}.log"
        env_cfg = ws.config.environment_of(pipeline.name)
        plain = merge_env(
            env_cfg.environment_variables if env_cfg else None,
            pipeline.environment_variables,
            stage.environment_variables,
            job.environment_variables,
        )
        secrets = self._secrets(pipeline, stage, job, env_cfg)
        env = dict(os.environ)
        env.update(plain)
        env.update(secrets)
        env.update(self._go_env(run, pipeline, stage, stage_run, jr, env_cfg.name if env_cfg else None))
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
            },
        )

    def _secrets(self, pipeline: Pipeline, stage: Stage, job: Job, env_cfg: Any) -> dict[str, str]:
        levels = [env_cfg.secure_variables if env_cfg else None, pipeline.secure_variables, stage.secure_variables, job.secure_variables]
        if not any(levels):
            return {}
        from .secrets import decrypt_variables

        return decrypt_variables(merge_env(*levels), self.ws)

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
            "GO_TRIGGER_USER": run.triggered_by,
            "WORKBENCH_RUN_ID": str(run.id),
            "WORKBENCH_STAGE_RUN_ID": str(stage_run.id),
            "WORKBENCH_JOB_RUN_ID": str(jr.id),
        }
        if jr.run_count > 1 or jr.name != jr.name.split("-runInstance-")[0]:
            env["GO_JOB_RUN_INDEX"] = str(jr.run_index)
            env["GO_JOB_RUN_COUNT"] = str(jr.run_count)
        if env_name:
            env["GO_ENVIRONMENT_NAME"] = env_name
        for name, rev in run.revisions.items():
            key = _env_key(name)
            env[f"GO_REVISION_{key}"] = _rev_str(rev)
        return env

    # -- heartbeat -------------------------------------------------------------
    def _ensure_heartbeat(self) -> None:
        if self._heartbeat is not None and self._heartbeat.is_alive():
            return
        self._heartbeat = threading.Thread(target=self._beat, name="wb-heartbeat", daemon=True)
        self._heartbeat.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            with self._lock:
                ids = list(self._running_jobs)
            try:
                self.store.heartbeat(ids)
            except Exception:  # a busy store must not kill the heartbeat thread
                pass


def _env_key(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).upper()


def _rev_str(rev: Any) -> str:
    if isinstance(rev, Mapping):
        return str(rev.get("revision") or rev.get("label") or "")
    return str(rev)


def find_run(store: Any, locator: str) -> tuple[PipelineRun, list[str]]:
    """``PIPELINE/COUNTER[/STAGE[/JOB]]`` → the run and the rest of the path."""
    parts = [p for p in locator.strip("/").split("/") if p]
    if len(parts) < 2:
        raise NotFound(f"{locator!r}: expected PIPELINE/COUNTER[/STAGE[/JOB]]")
    pipeline, counter = parts[0], parts[1]
    if counter != "latest" and not counter.isdigit():
        raise NotFound(f"{locator!r}: counter must be a number or 'latest'")
    return store.get_pipeline_run(pipeline, counter), parts[2:]


__all__ = ["Engine", "find_run", "RunDetail"]
