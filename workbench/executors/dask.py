"""Jobs on Dask workers: GoCD's agents as a Dask distributed cluster.

``dask://HOST:PORT`` (or ``tcp://``/``tls://`` addresses) connects to a running
scheduler whose workers are agents (``workbench agent``); ``dask://local``
starts an in-process ``LocalCluster`` that stands for this machine and, like
the local executor, serves every job whatever its resources.

Routing is Dask's own: a job asks for worker resources (its GoCD resources and
its environment, see :mod:`.dask_agent`), ``run_instances: all`` pins copy *i*
to the *i*-th matching worker. What Dask does not do, this class does:

- Dask leaves a task that no worker can serve pending forever. A watcher
  compares each unstarted job's needs with the live workers; when none can
  serve it, the job's reason in the store says what it waits for, and after
  ``agent_wait_timeout`` seconds the job fails.
- A worker that dies mid-job must fail the job ("agent lost"), never rerun it
  silently and never count it twice (a job with ``rerun_on_agent_lost: N`` is
  rerun by the engine, as a new stage counter, not here). The executor asks the scheduler not to
  retry tasks of dead workers (``allowed_failures = 0``, so Dask raises
  ``KilledWorker``), notices a started job's worker leaving, and treats a
  second start of the same job (a scheduler that retried anyway) as a lost
  agent, stopping that second attempt through the job's cancel event. A job
  only queued on the lost worker never started, so it is sent again.
- Logs, starts and outcomes arrive as Dask events and are handled in arrival
  order by one dispatcher thread: a job's log is complete before its outcome.
"""
from __future__ import annotations

import inspect
import logging
import os
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import IO, Any, Iterable, Mapping

import dask
from distributed import Client, Event, LocalCluster
from distributed.scheduler import KilledWorker

from ..errors import ExecutionError, UsageError
from ..status import Status
from .base import Executor, JobOutcome, JobSpec, StartCallback
from .dask_agent import (
    TOPIC, describe_needs, job_needs, job_of_key, outcome_of, run_on_worker, running_keys, serves, split_tags, task_key,
)

log = logging.getLogger(__name__)

RESUBMITS = 5  # a job queued on lost workers (never started) is sent again at most this often
_ALL_WORKERS = {"n_workers": -1} if "n_workers" in inspect.signature(Client.scheduler_info).parameters else {}


def normalize_address(address: str) -> str:
    """``HOST:PORT`` → ``tcp://HOST:PORT``; ``tcp://`` and ``tls://`` addresses are kept."""
    if "://" in address:
        return address
    return f"tcp://{address}"


@dataclass(eq=False)
class _Job:
    spec: JobSpec
    future: "Future[JobOutcome]"
    on_start: StartCallback | None
    cancel: threading.Event
    needs: dict[str, float]
    pin: list[str] | None
    cancel_name: str
    submissions: int = 0
    dask_future: Any = None
    attempt: str | None = None  # the worker attempt that started (its id)
    agent: str | None = None
    worker: str | None = None  # that worker's address
    waiting_since: float | None = None
    missing_since: float | None = None
    cancel_sent: bool = False
    done: bool = False
    log: IO[bytes] | None = None


class DaskExecutor(Executor):
    """Runs each job as one Dask task on an agent (worker) that has what the job needs."""

    name = "dask"

    def __init__(
        self,
        address: str = "local",
        *,
        max_parallel: int | None = None,
        agent_wait_timeout: float = 600.0,
        n_workers: int | None = None,
        memory_limit: str = "1GiB",
        connect_timeout: float = 10.0,
        poll_interval: float = 1.0,
        **unknown: Any,
    ) -> None:
        if unknown:
            raise UsageError(
                f"unknown option(s) for the dask executor: {', '.join(sorted(unknown))} "
                "(known: address, agent_wait_timeout, n_workers, memory_limit, connect_timeout, poll_interval)"
            )
        self.agent_wait_timeout = float(agent_wait_timeout)
        self.poll_interval = float(poll_interval)
        self.local = address in ("", "local")
        self._cluster: LocalCluster | None = None
        try:
            if self.local:
                with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
                    self._cluster = LocalCluster(
                        n_workers=n_workers or max_parallel or os.cpu_count() or 2, threads_per_worker=1,
                        processes=True, dashboard_address="127.0.0.1:0", memory_limit=memory_limit,
                        silence_logs=logging.ERROR,
                    )
                self.client = Client(self._cluster, set_as_default=False)
            else:
                self.client = Client(normalize_address(address), timeout=connect_timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            if self._cluster is not None:
                self._cluster.close()
            raise ExecutionError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        self.address = str(self.client.scheduler.address)
        self._channel = uuid.uuid4().hex[:10]
        self._jobs: dict[int, _Job] = {}
        self._lock = threading.Lock()
        self._inbox: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._closed = threading.Event()
        self._engine: Any = None
        self._set_events: set[str] = set()
        self._no_retries()
        self.client.subscribe_topic(TOPIC, self._on_event)
        self._dispatcher = threading.Thread(target=self._dispatch, name="wb-dask-dispatch", daemon=True)
        self._watcher = threading.Thread(target=self._watch, name="wb-dask-watch", daemon=True)
        self._dispatcher.start()
        self._watcher.start()

    # -- what the engine uses ----------------------------------------------------
    def bind(self, engine: Any) -> None:
        """The engine whose store and listener hear about jobs waiting for an agent."""
        self._engine = engine

    @property
    def agent_count(self) -> int:
        return len(self.workers())

    def agents_for(self, resources: Iterable[str], environment: str | None) -> int:
        """Live agents that could run a job with these resources in this environment."""
        workers = self.workers()
        if self.local:
            return len(workers)
        needs = job_needs(resources, environment)
        return sum(1 for w in workers.values() if serves(w.get("resources") or {}, needs))

    def workers(self) -> dict[str, Mapping[str, Any]]:
        """Live workers by address (all of them: some Dask versions list 5 unless told otherwise)."""
        return dict(self.client.scheduler_info(**_ALL_WORKERS)["workers"])

    def submit(self, spec: JobSpec, cancel: threading.Event, on_start: StartCallback | None = None,
               on_process: Any = None) -> "Future[JobOutcome]":  # jobs run on agents, not as our children
        future: Future[JobOutcome] = Future()
        if cancel.is_set() or self._closed.is_set():
            future.set_result(JobOutcome(Status.CANCELLED, reason="cancelled before it started", agent="dask"))
            return future
        needs = {} if self.local else job_needs(spec.resources, spec.context.get("environment"))
        rec = _Job(spec, future, on_start, cancel, needs, self._pin(spec, needs),
                   f"workbench-cancel-{self._channel}-{spec.job_run_id}")
        with self._lock:
            self._jobs[spec.job_run_id] = rec
        self._send(rec)
        return future

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._inbox.put(("call", self._abandon_all))
        self._inbox.put(None)
        self._closed.set()
        self._dispatcher.join(timeout=30)
        self._watcher.join(timeout=5)
        for name in self._set_events:  # set events stay on the scheduler until cleared
            try:
                Event(name, client=self.client).clear()
            except Exception:
                pass
        try:
            self.client.unsubscribe_topic(TOPIC)
            self.client.close()
        finally:
            if self._cluster is not None:
                self._cluster.close()

    def _no_retries(self) -> None:
        """Ask the scheduler never to rerun a task whose worker died (Dask's default is to try 4 times).

        A job may have deployed half-way on the lost agent: rerunning it behind
        the engine's back is what GoCD never does. The function goes by value
        (cloudpickle), so a plain ``dask scheduler`` without the workbench
        installed accepts it; if the scheduler refuses, the double-start guard
        still fails such a job as "agent lost".
        """
        if self.local:
            return  # set in the LocalCluster's config

        def disable(dask_scheduler: Any = None) -> None:
            dask_scheduler.allowed_failures = 0

        try:
            self.client.run_on_scheduler(disable)
        except Exception:
            log.info("the scheduler at %s refused run_on_scheduler; relying on the double-start guard", self.address)

    # -- sending -------------------------------------------------------------------
    def _pin(self, spec: JobSpec, needs: Mapping[str, float]) -> list[str] | None:
        """``run_instances: all``: copy i goes to the i-th matching worker (by name)."""
        if spec.context.get("run_instances") != "all":
            return None
        index = int(spec.env.get("GO_JOB_RUN_INDEX", "1"))
        workers = self.workers()
        matching = sorted((a for a, w in workers.items() if serves(w.get("resources") or {}, needs)),
                          key=lambda a: (str(workers[a].get("name")), a))
        return [matching[index - 1]] if 0 < index <= len(matching) else None

    def _send(self, rec: _Job) -> None:
        rec.submissions += 1
        base_env = {k: v for k, v in rec.spec.env.items() if os.environ.get(k) == v}
        own_env = {k: v for k, v in rec.spec.env.items() if k not in base_env}
        n = rec.submissions
        dfut = self.client.submit(
            run_on_worker, replace(rec.spec, env=own_env), base_env, self._channel, rec.cancel_name,
            key=task_key(rec.spec, self._channel, n), pure=False, resources=rec.needs or None,
            workers=rec.pin, allow_other_workers=False,
        )
        rec.dask_future = dfut
        dfut.add_done_callback(lambda f: self._inbox.put(("finished", rec, f, n)))

    # -- everything that happens to a job, one at a time ------------------------------
    def _on_event(self, event: tuple[float, Any]) -> None:  # in the client's event loop: only enqueue
        msg = event[1]
        if isinstance(msg, dict) and msg.get("ch") == self._channel:
            self._inbox.put(("event", msg))

    def _dispatch(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                return
            try:
                if item[0] == "event":
                    self._handle_event(item[1])
                elif item[0] == "finished":
                    self._handle_finished(*item[1:])
                else:
                    item[1]()
            except Exception as exc:  # the dispatcher must outlive any one job's trouble
                log.exception("workbench dask executor: while handling %s", item[0])
                rec = _job_of_item(item, self._jobs)
                if rec is not None and not rec.done:
                    self._resolve(rec, JobOutcome(Status.FAILED, reason=f"executor error: {type(exc).__name__}: {exc}"))

    def _handle_event(self, msg: Mapping[str, Any]) -> None:
        rec = self._jobs.get(msg["job"])
        if rec is None or rec.done:
            return
        kind = msg.get("kind")
        if kind == "start":
            if rec.attempt is None:
                rec.attempt, rec.agent, rec.worker = msg["at"], msg["agent"], msg["worker"]
                if rec.waiting_since is not None:
                    rec.waiting_since = None
                    self._note(rec, None)
                if rec.on_start is not None:
                    rec.on_start(rec.spec, rec.agent)
            elif msg["at"] != rec.attempt:
                self._lost(rec, f"agent lost: {rec.agent} went away while running the job "
                                f"(the scheduler started it again on {msg['agent']}; stopped there)")
        elif kind == "log":
            if msg["at"] == rec.attempt:
                self._write_log(rec, msg["data"])
        elif kind == "done" and (msg["at"] == rec.attempt or rec.attempt is None):
            self._resolve(rec, outcome_of(msg["outcome"]))

    def _handle_finished(self, rec: _Job, dfut: Any, n: int) -> None:
        if rec.done or n != rec.submissions:
            return
        if dfut.status == "error":
            exc = dfut.exception()
            if isinstance(exc, KilledWorker):
                if rec.attempt is None and rec.submissions < RESUBMITS and not rec.cancel.is_set():
                    self._send(rec)  # it was only queued on the lost agent: it never ran
                    return
                self._lost(rec, f"agent lost: {rec.agent or 'its agent'} died while running the job")
                return
            self._resolve(rec, JobOutcome(Status.FAILED, reason=f"executor error: {type(exc).__name__}: {exc}",
                                          agent=rec.agent or "dask"))
        elif dfut.status == "cancelled":
            if rec.cancel.is_set():
                self._resolve(rec, JobOutcome(Status.CANCELLED, reason="cancelled", agent=rec.agent or "dask"))
            else:  # nobody here cancelled it: the scheduler went away or restarted
                self._resolve(rec, JobOutcome(Status.FAILED, agent=rec.agent or "dask",
                                              reason="the Dask scheduler dropped the job (restarted or unreachable)"))
        else:
            self._resolve(rec, JobOutcome(Status.FAILED, reason="the agent finished without reporting an outcome",
                                          agent=rec.agent or "dask"))

    def _lost(self, rec: _Job, reason: str) -> None:
        self._set_cancel(rec)  # a second attempt, anywhere, stops at once
        if rec.dask_future is not None:
            rec.dask_future.cancel()
        self._write_log(rec, f"[workbench] {reason}\n".encode())
        self._resolve(rec, JobOutcome(Status.FAILED, reason=reason, agent=rec.agent or "dask", agent_lost=True))

    def _resolve(self, rec: _Job, outcome: JobOutcome) -> None:
        rec.done = True
        with self._lock:
            self._jobs.pop(rec.spec.job_run_id, None)
        if rec.log is not None:
            rec.log.close()
            rec.log = None
        rec.dask_future = None  # releases the task on the scheduler
        if not rec.future.done():
            rec.future.set_result(outcome)

    def _write_log(self, rec: _Job, data: bytes) -> None:
        if rec.log is None:
            path = Path(rec.spec.log_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            rec.log = open(path, "ab", buffering=0)
        rec.log.write(data)

    def _set_cancel(self, rec: _Job) -> None:
        Event(rec.cancel_name, client=self.client).set()
        self._set_events.add(rec.cancel_name)

    def _note(self, rec: _Job, reason: str | None) -> None:
        if self._engine is None:
            return
        try:
            self._engine.store.note_job(rec.spec.job_run_id, reason)
        except Exception:  # a busy store must not stop the dispatcher
            log.warning("could not record the waiting reason of job %s", rec.spec.job_run_id, exc_info=True)
        if reason:
            self._engine.listener("job_waiting", job_run_id=rec.spec.job_run_id, stage=rec.spec.stage,
                                  job=rec.spec.job, reason=reason)

    def _abandon_all(self) -> None:
        with self._lock:
            recs = list(self._jobs.values())
        for rec in recs:
            if rec.attempt is not None:
                self._set_cancel(rec)
            self._resolve(rec, JobOutcome(Status.CANCELLED, reason="the executor was closed",
                                          agent=rec.agent or "dask"))

    # -- the watcher: cancels, agents that are missing or gone ---------------------
    def _watch(self) -> None:
        next_look = 0.0
        while not self._closed.wait(0.2):
            with self._lock:
                recs = [r for r in self._jobs.values() if not r.done]
            for r in recs:
                if r.cancel.is_set() and not r.cancel_sent:
                    r.cancel_sent = True
                    self._inbox.put(("call", partial(self._cancel_job, r)))
            now = time.monotonic()
            if not recs or now < next_look:
                continue
            next_look = now + self.poll_interval
            try:
                workers = self.workers()
            except Exception:  # scheduler unreachable for a moment: the client reconnects
                continue
            for r in recs:
                if r.attempt is None:
                    ok = any(serves(w.get("resources") or {}, r.needs) and (r.pin is None or a in r.pin)
                             for a, w in workers.items())
                    self._inbox.put(("call", partial(self._availability, r, ok, now)))
                elif r.worker not in workers:
                    self._inbox.put(("call", partial(self._missing, r, now)))

    def _cancel_job(self, rec: _Job) -> None:
        if rec.done:
            return
        self._set_cancel(rec)
        if rec.attempt is None and rec.dask_future is not None:
            rec.dask_future.cancel()

    def _availability(self, rec: _Job, ok: bool, now: float) -> None:
        if rec.done or rec.attempt is not None:
            return
        if ok:
            if rec.waiting_since is not None:
                rec.waiting_since = None
                self._note(rec, None)
            return
        if rec.waiting_since is None:
            rec.waiting_since = now
            self._note(rec, f"waiting for {self._wanted(rec)} (none is connected to {self.address})")
        elif now - rec.waiting_since >= self.agent_wait_timeout:
            if rec.dask_future is not None:
                rec.dask_future.cancel()
            self._resolve(rec, JobOutcome(
                Status.FAILED, agent="none",
                reason=f"no agent came: waited {self.agent_wait_timeout:g}s for {self._wanted(rec)}",
            ))

    def _wanted(self, rec: _Job) -> str:
        text = describe_needs(rec.needs) if rec.needs else "an agent"
        if rec.pin:
            text += f" (copy {rec.spec.env.get('GO_JOB_RUN_INDEX', '?')} of run on all agents: {rec.pin[0]})"
        return text

    def _missing(self, rec: _Job, now: float) -> None:
        """The started job's worker left; after a grace (its last events may be in flight) it is lost."""
        if rec.done:
            return
        if rec.missing_since is None:
            rec.missing_since = now
        elif now - rec.missing_since >= 2 * self.poll_interval:
            self._lost(rec, f"agent lost: {rec.agent} left the cluster while running the job")


def _job_of_item(item: tuple[Any, ...], jobs: Mapping[int, _Job]) -> _Job | None:
    if item[0] == "finished":
        return item[1]
    if item[0] == "event":
        return jobs.get(item[1].get("job"))
    target = getattr(item[1], "args", ())
    return target[0] if target and isinstance(target[0], _Job) else None


# -- ``workbench agents`` ---------------------------------------------------------
def list_agents(address: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The agents (workers) of a scheduler: name, resources, environments, the jobs they run."""
    try:
        client = Client(normalize_address(address), timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ExecutionError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    try:
        workers = client.scheduler_info(**_ALL_WORKERS)["workers"]
        try:
            running = client.run(running_keys)
        except Exception:  # workers without the workbench installed: what the scheduler assigned them
            running = client.processing()
        rows = []
        for addr, w in sorted(workers.items(), key=lambda kv: str(kv[1].get("name"))):
            resources, envs = split_tags(w.get("resources") or {})
            jobs = [j for j in (job_of_key(k) for k in running.get(addr, ())) if j]
            rows.append({"name": str(w.get("name")), "address": addr, "host": w.get("host"),
                         "threads": w.get("nthreads"), "resources": resources, "environments": envs, "running": jobs})
        return rows
    finally:
        client.close()


__all__ = ["DaskExecutor", "list_agents", "normalize_address"]
