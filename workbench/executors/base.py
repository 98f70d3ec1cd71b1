"""The one seam between the engine and whatever runs jobs.

An executor takes a fully resolved :class:`JobSpec` (argv lists, environment,
folders: nothing that needs the config or the store) and returns a future of a
:class:`JobOutcome`. Keeping the spec plain data is what lets the same job run
in a local thread or on a Dask worker on another machine.
"""
from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..config.model import Task
from ..status import Status


@dataclass(frozen=True)
class JobSpec:
    job_run_id: int
    pipeline: str
    counter: int
    stage: str
    stage_counter: int
    job: str
    tasks: tuple[Task, ...]
    env: Mapping[str, str]
    workdir: str
    log_path: str
    workspace: str
    timeout: float | None = None  # seconds for the whole job
    secrets: tuple[str, ...] = ()  # plain values to mask in output
    resources: tuple[str, ...] = ()
    context: Mapping[str, Any] = field(default_factory=dict)  # run context for notebooks and fetch
    kill_grace: float = 3.0


@dataclass(frozen=True)
class JobOutcome:
    status: Status
    exit_code: int | None = None
    reason: str | None = None
    agent: str = "local"
    details: Mapping[str, Any] = field(default_factory=dict)  # e.g. failing notebook cell
    agent_lost: bool = False  # the agent died or left mid-job (a job with rerun_on_agent_lost runs again)


StartCallback = Callable[[JobSpec, str], None]  # (spec, agent name) when the job really starts
ProcessCallback = Callable[[JobSpec, int], None]  # (spec, process group id) as each task's process starts


class Executor(ABC):
    """Runs jobs; one method does the work (like httpx's ``handle_request``)."""

    name = "abstract"
    runs_jobs_here = False  # jobs run in this process: resources warmed here (kernels) serve them

    @abstractmethod
    def submit(self, spec: JobSpec, cancel: threading.Event, on_start: StartCallback | None = None,
               on_process: ProcessCallback | None = None) -> "Future[JobOutcome]":
        """Start the job (now or when a slot frees) and return its future.

        ``on_process`` is for executors whose jobs run on the engine's machine
        as its children (local): others may ignore it.
        """

    def close(self) -> None:  # pragma: no cover - default no-op
        """Release threads, clients, clusters."""


EXECUTORS: dict[str, Callable[..., Executor]] = {}


def register_executor(name: str, factory: Callable[..., Executor]) -> None:
    EXECUTORS[name] = factory


def make_executor(spec: str | None = None, **options: Any) -> Executor:
    """``local`` (default) or ``dask://HOST:PORT`` / ``dask://local``."""
    from ..errors import UsageError

    spec = spec or "local"
    kind, _, address = spec.partition("://")
    if kind not in EXECUTORS:
        known = ", ".join(sorted(EXECUTORS))
        raise UsageError(f"unknown executor {spec!r} (known: {known})")
    if address:
        options["address"] = address
    return EXECUTORS[kind](**options)
