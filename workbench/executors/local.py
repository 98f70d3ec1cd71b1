"""The default executor: jobs run in threads of this process, no extra daemons."""
from __future__ import annotations

import os
import socket
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from ..status import Status
from .base import Executor, JobOutcome, JobSpec, ProcessCallback, StartCallback


def local_slots(max_parallel: int | None) -> int:
    """How many jobs the local executor runs at once: ``max_parallel``, else one per CPU."""
    return max_parallel or os.cpu_count() or 2


class LocalExecutor(Executor):
    name = "local"
    runs_jobs_here = True

    def __init__(self, max_parallel: int | None = None, **_: object) -> None:
        self.max_parallel = local_slots(max_parallel)
        self._pool = ThreadPoolExecutor(max_workers=self.max_parallel, thread_name_prefix="wb-job")
        self.agent = f"local@{socket.gethostname()}"

    def submit(self, spec: JobSpec, cancel: threading.Event, on_start: StartCallback | None = None,
               on_process: ProcessCallback | None = None) -> "Future[JobOutcome]":
        return self._pool.submit(self._run, spec, cancel, on_start, on_process)

    def _run(self, spec: JobSpec, cancel: threading.Event, on_start: StartCallback | None,
             on_process: ProcessCallback | None = None) -> JobOutcome:
        from ..tasks import run_job

        if cancel.is_set():
            return JobOutcome(Status.CANCELLED, reason="cancelled before it started", agent=self.agent)
        if on_start:
            on_start(spec, self.agent)
        return run_job(spec, cancel, agent=self.agent,
                       on_process=(lambda pgid: on_process(spec, pgid)) if on_process else None)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
