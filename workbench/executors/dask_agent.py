"""The agent side of the Dask executor: what runs on a Dask worker, and how agents are described.

GoCD's agent model maps onto plain Dask worker *resources*, so nothing here is
a protocol of our own:

- a job's ``resources: [rpm, docker]`` asks for worker resources ``rpm`` and
  ``docker``; an agent started with ``--resources rpm,docker`` declares them
  (as many units as it has threads: in GoCD resources are tags, not amounts);
- environments are resources too: an agent in environment ``prod`` declares
  ``env:prod``; a pipeline of environment ``prod`` asks for it. As in GoCD, an
  agent in no environment declares ``env:`` and only serves pipelines that are
  in no environment, and an agent in environments serves only their pipelines.

On the worker, :func:`run_on_worker` runs ``workbench.tasks.run_job`` with a
log file in the worker's own folder and forwards that log, the start and the
outcome to the engine as Dask *events* (``Worker.log_event``, the mechanism
``Client.forward_logging`` uses): non-blocking for the job, ordered per worker,
pushed to the engine's client rather than polled, and nothing for the engine
to fetch from the worker afterwards, so a worker that dies after finishing
cannot make Dask compute the job a second time to recover a lost result.
Cancelling is a Dask ``Event`` per job, polled by a small thread.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

TOPIC = "workbench-jobs"  # one topic for all engines: the scheduler keeps a bounded backlog per topic
CHUNK = 16 * 1024  # largest log piece per event
ENV_PREFIX = "env:"
NO_ENVIRONMENT = ENV_PREFIX  # the tag of agents in no environment (environment names are never empty)
CANCEL_POLL = 0.5  # seconds between looks at the job's cancel flag
LOG_POLL = 0.2  # seconds between log forwards while the job runs

# The agent's folders, when its machine does not share the engine's paths
# (set by ``workbench agent --work-dir/--workspace`` in the worker's environment).
WORK_DIR_VAR = "WORKBENCH_AGENT_WORK_DIR"
WORKSPACE_VAR = "WORKBENCH_AGENT_WORKSPACE"


# -- describing agents and jobs (pure) ----------------------------------------
def environment_tag(environment: str | None) -> str:
    return f"{ENV_PREFIX}{environment}" if environment else NO_ENVIRONMENT


def agent_resources(resources: Iterable[str], environments: Iterable[str], units: float = 1) -> dict[str, float]:
    """The Dask worker resources of an agent with these GoCD resources and environments."""
    tags = {r.strip(): float(units) for r in resources if r.strip()}
    envs = [e.strip() for e in environments if e.strip()]
    for e in envs or [None]:
        tags[environment_tag(e)] = float(units)
    return tags


def job_needs(resources: Iterable[str], environment: str | None) -> dict[str, float]:
    """The Dask resources a job asks for: one unit of each of its resources and of its environment."""
    needs = {r: 1.0 for r in resources}
    needs[environment_tag(environment)] = 1.0
    return needs


def serves(worker_resources: Mapping[str, float], needs: Mapping[str, float]) -> bool:
    return all(worker_resources.get(k, 0) >= v for k, v in needs.items())


def split_tags(worker_resources: Mapping[str, float]) -> tuple[list[str], list[str]]:
    """(GoCD resources, environments) of an agent, for listings; no environment shows as none."""
    resources = sorted(k for k in worker_resources if not k.startswith(ENV_PREFIX))
    envs = sorted(k[len(ENV_PREFIX):] for k in worker_resources if k.startswith(ENV_PREFIX) and k != NO_ENVIRONMENT)
    return resources, envs


def describe_needs(needs: Mapping[str, float]) -> str:
    resources = sorted(k for k in needs if not k.startswith(ENV_PREFIX))
    envs = [k[len(ENV_PREFIX):] for k in needs if k.startswith(ENV_PREFIX)]
    text = "an agent"
    if resources:
        text += " with resources " + ", ".join(resources)
    if envs and envs[0]:
        text += f" in environment {envs[0]}"
    elif envs:
        text += " in no environment"
    return text


def task_key(spec: Any, channel: str, attempt: int) -> str:
    """The Dask key of a job: readable in Dask's dashboard and in ``workbench agents``."""
    return f"workbench:{spec.pipeline}/{spec.counter}/{spec.stage}/{spec.stage_counter}/{spec.job}:{channel}:{attempt}"


def job_of_key(key: Any) -> str | None:
    if isinstance(key, str) and key.startswith("workbench:"):
        return key.split(":")[1]
    return None


def agent_name(worker: Any) -> str:
    """The agent's name as recorded in the store: the worker's name, else host and address."""
    name = worker.name
    if isinstance(name, str) and name:
        return name
    return f"{socket.gethostname()}/{worker.address.split('://')[-1]}"


def dask_setup(worker: Any) -> None:
    """Dask preload hook (``workbench agent`` passes ``--preload`` of this module): the feature
    modules are imported while the agent starts, not in its first job's time."""
    from .. import features

    features.load()


def running_keys(dask_worker: Any = None) -> list[str]:
    """Run on a worker by ``workbench agents`` (``Client.run``): the keys it is executing now."""
    return [str(ts.key) for ts in dask_worker.state.executing]


# -- on the worker ------------------------------------------------------------
def run_on_worker(spec: Any, base_env: Mapping[str, str], channel: str, cancel_name: str) -> None:
    """One attempt at a job on this worker; everything it reports goes out as events."""
    from distributed import Event, get_client, get_worker

    from ..status import Status
    from ..tasks import run_job
    from .base import JobOutcome

    worker = get_worker()
    agent = agent_name(worker)
    attempt = uuid.uuid4().hex[:12]

    def send(**msg: Any) -> None:
        worker.log_event(TOPIC, {"ch": channel, "job": spec.job_run_id, "at": attempt, **msg})

    # No look at the cancel flag before starting: that is a round trip to the
    # scheduler per job (milliseconds). A job cancelled before it starts is
    # cancelled as a Dask task; one that slips through stops at the first poll.
    # the worker's client, resolved here: the watcher thread is not a task thread
    remote = Event(cancel_name, client=get_client())
    send(kind="start", agent=agent, worker=worker.address)
    local = _localize(spec, base_env, Path(worker.local_directory), attempt)
    cancel, stop = threading.Event(), threading.Event()
    threading.Thread(target=_watch_cancel, args=(remote, cancel, stop), name="wb-cancel", daemon=True).start()
    forwarder = _LogForwarder(Path(local.log_path), lambda data: send(kind="log", data=data))
    try:
        outcome = run_job(local, cancel, agent=agent)
    except Exception as exc:  # a bug or a broken agent: the engine must still hear about it
        outcome = JobOutcome(Status.FAILED, reason=f"the job crashed on agent {agent}: {exc}", agent=agent)
    finally:
        stop.set()
        forwarder.close()
        Path(local.log_path).unlink(missing_ok=True)
    send(kind="done", outcome=_plain(outcome))


def _localize(spec: Any, base_env: Mapping[str, str], local_dir: Path, attempt: str) -> Any:
    """The spec as this agent runs it: its own environment under the job's, its own log file.

    ``base_env`` is the engine's process environment; the agent's environment
    (PATH, HOME, ...) wins over it, and the job's variables win over both, as
    a GoCD agent's own environment underlies the job's variables.
    """
    env = {**base_env, **os.environ, **spec.env}
    rel = Path(spec.pipeline) / str(spec.counter) / f"{spec.stage}-{spec.stage_counter}" / spec.job
    workdir = str(Path(os.environ[WORK_DIR_VAR]) / rel) if os.environ.get(WORK_DIR_VAR) else spec.workdir
    workspace = os.environ.get(WORKSPACE_VAR) or spec.workspace
    log = local_dir / "workbench-logs" / f"{spec.job_run_id}-{attempt}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    return replace(spec, env=env, workdir=workdir, workspace=workspace, log_path=str(log))


def _watch_cancel(remote: Any, cancel: threading.Event, stop: threading.Event) -> None:
    while not stop.wait(CANCEL_POLL):
        try:
            if remote.is_set():
                cancel.set()
                return
        except Exception:  # scheduler briefly unreachable: keep the job running, look again
            continue


class _LogForwarder:
    """Tails the job's log file and sends what is new, in order, until closed."""

    def __init__(self, path: Path, send: Callable[[bytes], None]) -> None:
        self.path = path
        self.send = send
        self.offset = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="wb-log", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(LOG_POLL):
            self._forward()

    def _forward(self) -> None:
        with self._lock:
            try:
                with open(self.path, "rb") as fh:
                    fh.seek(self.offset)
                    while True:
                        data = fh.read(CHUNK)
                        if not data:
                            return
                        self.offset += len(data)
                        self.send(data)
            except FileNotFoundError:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._forward()


def _plain(outcome: Any) -> dict[str, Any]:
    """A JobOutcome as msgpack-able data (details through JSON, anything odd as text)."""
    return {
        "status": outcome.status.value, "exit_code": outcome.exit_code, "reason": outcome.reason,
        "agent": outcome.agent, "details": json.loads(json.dumps(dict(outcome.details or {}), default=str)),
    }


def outcome_of(data: Mapping[str, Any]) -> Any:
    from .base import JobOutcome
    from ..status import Status

    return JobOutcome(Status(data["status"]), data.get("exit_code"), data.get("reason"), data.get("agent") or "dask",
                      data.get("details") or {})


__all__ = [
    "TOPIC", "agent_name", "agent_resources", "describe_needs", "environment_tag", "job_needs", "job_of_key",
    "outcome_of", "run_on_worker", "running_keys", "serves", "split_tags", "task_key",
]
