"""Task kinds and the loop that runs one job's tasks in order.

Each task kind is a small runner chosen by ``task.kind`` from a registry
(``exec``, ``script``, ``fetch``, ``notebook``, and whatever later features
register), like papermill's engines. ``run_job`` is plain and picklable in its
inputs so any executor, local or remote, can call it.
"""
from __future__ import annotations

import shlex
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Callable

from ..config.model import ExecTask, ScriptTask, Task
from ..status import Status
from .process import OutputPump, ProcessResult, run_process


@dataclass
class JobContext:
    """What a task runner gets: the job's spec, its log, its clock, its cancel flag."""

    spec: Any  # executors.base.JobSpec
    log: IO[bytes]
    cancel: threading.Event
    deadline: float | None
    failed: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    pump: OutputPump | None = None
    on_process: Callable[[int], None] | None = None  # told each task process's group id (crash recovery)

    def say(self, message: str) -> None:
        """A workbench line in the job log, GoCD-style (``[go]`` there, ``[workbench]`` here)."""
        stamp = datetime.now(timezone.utc).strftime("%H:%M:%S.%f")[:-3]
        text = message if self.pump is None else self.pump.mask(message.encode()).decode()
        self.log.write(f"[workbench {stamp}] {text}\n".encode())
        self.log.flush()

    def cwd(self, working_directory: str | None) -> str:
        """A task's folder, inside the job's folder (GoCD refuses paths outside it)."""
        base = Path(self.spec.workdir)
        if not working_directory:
            return str(base)
        target = (base / working_directory).resolve()
        if base.resolve() not in (target, *target.parents):
            raise TaskError(f"working_directory {working_directory!r} is outside the job's folder")
        return str(target)

    @property
    def env(self) -> dict[str, str]:
        """The job's environment plus where it runs, so scripts can find workspace files."""
        return {**self.spec.env, "WORKBENCH_WORKSPACE": self.spec.workspace, "WORKBENCH_JOB_DIR": self.spec.workdir,
                "WORKBENCH_PYTHON": sys.executable}  # so a script can call `$WORKBENCH_PYTHON -m workbench ...`

    def process(self, argv: list[str], working_directory: str | None) -> ProcessResult:
        return run_process(
            argv,
            cwd=self.cwd(working_directory),
            env=self.env,
            log=self.log,
            deadline=self.deadline,
            cancel=self.cancel,
            grace=self.spec.kill_grace,
            output_filter=self.pump,
            on_start=self.on_process,
        )


class TaskError(Exception):
    """A task could not run (bad folder, missing artifact, ...): fails the job with this message."""


TaskRunner = Callable[[Task, JobContext], ProcessResult]
RUNNERS: dict[str, TaskRunner] = {}


def register_task_runner(kind: str, runner: TaskRunner) -> None:
    RUNNERS[kind] = runner


def describe(task: Task) -> str:
    if isinstance(task, ExecTask):
        return "exec " + shlex.join([task.command, *task.arguments])
    if isinstance(task, ScriptTask):
        first = task.script.strip().splitlines()[0] if task.script.strip() else ""
        return "script " + (first[:80] + (" …" if len(task.script.strip().splitlines()) > 1 else ""))
    return task.kind


def _run_exec(task: Task, ctx: JobContext) -> ProcessResult:
    assert isinstance(task, ExecTask)
    return ctx.process([task.command, *task.arguments], task.working_directory)


def _run_script(task: Task, ctx: JobContext) -> ProcessResult:
    assert isinstance(task, ScriptTask)
    return ctx.process(["bash", "-c", task.script], task.working_directory)


register_task_runner("exec", _run_exec)
register_task_runner("script", _run_script)


def _should_run(task: Task, failed: bool) -> bool:
    run_if = getattr(task, "run_if", "passed")
    return run_if == "any" or (run_if == "failed") == failed


def run_job(spec: Any, cancel: threading.Event, *, agent: str = "local",
            on_process: Callable[[int], None] | None = None) -> Any:
    """Run a job's tasks in order honouring ``run_if``; returns a JobOutcome.

    ``on_process(pgid)`` is called as each task's process starts (the engine
    records it, so that recovery can stop the group if the engine dies).
    """
    from ..executors.base import JobOutcome

    Path(spec.workdir).mkdir(parents=True, exist_ok=True)
    Path(spec.log_path).parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + spec.timeout if spec.timeout else None
    with open(spec.log_path, "ab", buffering=0) as log:
        ctx = JobContext(spec, log, cancel, deadline, pump=OutputPump(log, spec.secrets) if spec.secrets else None,
                         on_process=on_process)
        ctx.say(f"job {spec.pipeline}/{spec.counter}/{spec.stage}/{spec.stage_counter}/{spec.job} on {agent}")
        from .. import features
        from ..hooks import JOB_HOOKS

        features.load()
        try:
            for hook in JOB_HOOKS:
                hook.prepare(spec, ctx)
        except TaskError as exc:
            ctx.say(f"job could not start: {exc}")
            return _finish(ctx, JobOutcome(Status.FAILED, None, str(exc), agent, ctx.details))
        exit_code: int | None = 0
        reason: str | None = None
        status = Status.PASSED
        for i, task in enumerate(spec.tasks, 1):
            if not _should_run(task, ctx.failed):
                ctx.say(f"task {i} skipped (run_if {getattr(task, 'run_if', 'passed')}): {describe(task)}")
                continue
            ctx.say(f"task {i}: {describe(task)}")
            runner = RUNNERS.get(task.kind)
            try:
                if runner is None:
                    raise TaskError(f"task kind {task.kind!r} is not available in this installation")
                result = runner(task, ctx)
            except TaskError as exc:
                result = ProcessResult(None, error=str(exc))
            if result.timed_out or result.cancelled:
                why = f"timed out after {spec.timeout:g}s" if result.timed_out else "cancelled"
                ctx.say(f"task {i} {why}; killed its process group")
                _on_cancel(task, ctx)
                status = Status.FAILED if result.timed_out else Status.CANCELLED
                return _finish(ctx, JobOutcome(status, result.exit_code, f"task {i} {why}", agent, ctx.details))
            if result.error:
                ctx.say(f"task {i} failed: {result.error}")
                exit_code, reason, ctx.failed = None, f"task {i}: {result.error}", True
            elif result.exit_code != 0:
                ctx.say(f"task {i} exited with status {result.exit_code}")
                exit_code, reason, ctx.failed = result.exit_code, f"task {i} exited with status {result.exit_code}", True
            else:
                ctx.say(f"task {i} passed")
        if ctx.failed:
            status = Status.FAILED
        return _finish(ctx, JobOutcome(status, exit_code, reason, agent, ctx.details))


def _on_cancel(task: Task, ctx: JobContext) -> None:
    hook = getattr(task, "on_cancel", None)
    if hook is None:
        return
    from .process import immediate_stop

    if immediate_stop():  # a second stop signal: clean-up is what the person chose to skip
        ctx.say(f"on_cancel skipped (immediate stop): {describe(hook)}")
        return
    ctx.say(f"on_cancel: {describe(hook)}")
    runner = RUNNERS.get(hook.kind)
    if runner is None:
        return
    own_cancel, ctx.cancel = ctx.cancel, threading.Event()
    deadline, ctx.deadline = ctx.deadline, time.monotonic() + 60  # bounded clean-up
    try:
        result = runner(hook, ctx)
        if immediate_stop():
            ctx.say("on_cancel cut short: a second stop signal killed it")
        else:
            ctx.say(f"on_cancel finished with status {result.exit_code}")
    except TaskError as exc:
        ctx.say(f"on_cancel failed: {exc}")
    finally:
        ctx.cancel, ctx.deadline = own_cancel, deadline


def _finish(ctx: JobContext, outcome: Any) -> Any:
    from ..hooks import JOB_HOOKS

    for hook in JOB_HOOKS:
        try:
            outcome = hook.finish(ctx.spec, ctx, outcome)
        except TaskError as exc:
            from ..executors.base import JobOutcome

            ctx.say(f"after the tasks: {exc}")
            outcome = JobOutcome(Status.FAILED, outcome.exit_code, str(exc), outcome.agent, ctx.details)
    ctx.say(f"job {outcome.status}" + (f": {outcome.reason}" if outcome.reason else ""))
    return outcome


__all__ = ["JobContext", "RUNNERS", "TaskError", "describe", "register_task_runner", "run_job"]
