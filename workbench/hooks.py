"""Extension points where features plug into a job's and a stage's life.

Job hooks run where the job runs (a local thread or a Dask worker), so they
receive only the plain JobSpec and the job's context: materials are checked
out in ``prepare``; artifacts are published in ``finish``. Run hooks run in
the engine before it triggers a run (to start slow things early); stage hooks run in
the engine, after the stage's result is recorded (traffic steps, triggering
downstream pipelines). Service loops run beside the scheduler of ``workbench serve``
and ``workbench server`` (the notification sender), and tick tasks once at the
end of a ``workbench tick``. Features register at import time of their module;
``workbench.features`` imports them all.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Protocol


class JobHook(Protocol):
    def prepare(self, spec: Any, ctx: Any) -> None:
        """Before the first task; raise tasks.TaskError to fail the job with a message."""

    def finish(self, spec: Any, ctx: Any, outcome: Any) -> Any:
        """After the last task; return the (possibly changed) outcome."""


class StageHook(Protocol):
    def stage_finished(self, engine: Any, run: Any, stage_cfg: Any, stage_run: Any) -> Any:
        """After a stage's result is stored; may return a new StageRun (e.g. traffic step failed)."""


class RunHook(Protocol):
    def run_starting(self, engine: Any, pipeline_cfg: Any) -> None:
        """Before a run is triggered in this process (e.g. start kernels while materials are checked)."""


# (workspace, stop event) -> None: runs in its own thread until ``stop`` is set
ServiceLoop = Callable[[Any, threading.Event], None]
# workspace -> lines for the tick's output
TickTask = Callable[[Any], list[str]]

JOB_HOOKS: list[JobHook] = []
SERVICE_LOOPS: list[ServiceLoop] = []
TICK_TASKS: list[TickTask] = []
STAGE_HOOKS: list[StageHook] = []
RUN_HOOKS: list[RunHook] = []
# (pipeline config, environment config or None) -> Callable[[Connection, run_id], None] | None: rows a feature writes
# about a new run inside the run's own transaction (e.g. the config it was created with, for ``workbench compare``)
RUN_RECORDERS: list[Any] = []


def register_job_hook(hook: JobHook) -> None:
    if hook not in JOB_HOOKS:
        JOB_HOOKS.append(hook)


def register_run_hook(hook: RunHook) -> None:
    if hook not in RUN_HOOKS:
        RUN_HOOKS.append(hook)


def register_stage_hook(hook: StageHook) -> None:
    if hook not in STAGE_HOOKS:
        STAGE_HOOKS.append(hook)


def register_service_loop(loop: ServiceLoop) -> None:
    if loop not in SERVICE_LOOPS:
        SERVICE_LOOPS.append(loop)


def register_tick_task(task: TickTask) -> None:
    if task not in TICK_TASKS:
        TICK_TASKS.append(task)


def register_run_recorder(recorder: Any) -> None:
    if recorder not in RUN_RECORDERS:
        RUN_RECORDERS.append(recorder)
