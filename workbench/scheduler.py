"""Pure scheduling decisions: what a pipeline run should do next.

No processes, no store, no clock: functions over the config and plain
snapshots of the run's stages, so that stage advancement, approvals and
labels are testable in microseconds (like luigi's scheduler, which never
imports its worker).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

from .config.model import Job, Pipeline
from .status import Status


@dataclass(frozen=True)
class StageSnapshot:
    """The latest counter of one stage of a run."""

    name: str
    status: Status


@dataclass(frozen=True)
class RunStage:
    """Run this stage now: create its stage run, or claim the scheduled one."""

    stage: str
    position: int


@dataclass(frozen=True)
class AwaitApproval:
    """Create (or keep) this stage waiting for a person."""

    stage: str
    position: int


@dataclass(frozen=True)
class Busy:
    """A stage is scheduled or running: nothing to decide."""

    stage: str


@dataclass(frozen=True)
class Finish:
    """The run is over with this result."""

    status: Status
    reason: str | None = None
    stage: str | None = None  # the stage that ended it (its own reason completes the run's)


Decision = RunStage | AwaitApproval | Busy | Finish


def next_step(pipeline: Pipeline, stages: Sequence[StageSnapshot], *, manually_triggered: bool = True) -> Decision:
    """Decide the next step of a run from its stages' latest statuses.

    A manual approval on the first stage is satisfied by a manual trigger (as
    in GoCD, where such a pipeline only starts by hand).
    """
    latest: dict[str, Status] = {s.name: s.status for s in stages}
    last_index = -1
    for i, st in enumerate(pipeline.stages):
        if st.name in latest:
            last_index = i
    if last_index == -1:
        first = pipeline.stages[0]
        if first.approval.manual and not manually_triggered:
            return AwaitApproval(first.name, 0)
        return RunStage(first.name, 0)
    stage = pipeline.stages[last_index]
    status = latest[stage.name]
    # earlier stages rerun since this one ran decide first
    for i, earlier in enumerate(pipeline.stages[:last_index]):
        s = latest.get(earlier.name)
        if s is None or s == Status.PASSED:
            continue
        return _decide(earlier.name, i, s)
    if status != Status.PASSED:
        return _decide(stage.name, last_index, status)
    if last_index + 1 >= len(pipeline.stages):
        return Finish(Status.PASSED)
    nxt = pipeline.stages[last_index + 1]
    if nxt.approval.manual:
        return AwaitApproval(nxt.name, last_index + 1)
    return RunStage(nxt.name, last_index + 1)


def _decide(name: str, position: int, status: Status) -> Decision:
    if status == Status.SCHEDULED:
        return RunStage(name, position)  # created or approved, not yet claimed by a driver
    if status == Status.RUNNING:
        return Busy(name)
    if status == Status.WAITING:
        return AwaitApproval(name, position)
    if status == Status.REJECTED:
        return Finish(Status.REJECTED, f"stage {name} was rejected", name)
    if status == Status.CANCELLED:
        return Finish(Status.CANCELLED, f"stage {name} was cancelled", name)
    return Finish(Status.FAILED, f"stage {name} {status.value}", name)


def job_instances(job: Job, agents: int = 1) -> list[tuple[str, int, int]]:
    """The job runs a job expands to: ``(name, run_index, run_count)``.

    Named as GoCD names them, since scripts read ``GO_JOB_NAME``:
    ``run_instances: N`` gives N runs ``job-runInstance-1`` …, and ``all``
    one per agent, ``job-runOnAll-1`` ….
    """
    n = job.run_instances
    if n is None:
        return [(job.name, 1, 1)]
    count = agents if n == "all" else int(n)
    count = max(count, 1)
    infix = "runOnAll" if n == "all" else "runInstance"
    return [(f"{job.name}-{infix}-{i}", i, count) for i in range(1, count + 1)]


_LABEL_VAR = re.compile(r"\$\{([^}\[]+)(?:\[:(\d+)\])?\}")


def render_label(template: str, counter: int, revisions: Mapping[str, str] | None = None) -> str:
    """GoCD's label template: ``${COUNT}``, ``${material}``, ``${material[:7]}``."""
    revisions = revisions or {}

    def sub(m: re.Match[str]) -> str:
        name, cut = m.group(1), m.group(2)
        if name.upper() == "COUNT":  # GoCD accepts ${COUNT} in any case
            value = str(counter)
        else:
            value = str(revisions.get(name, ""))
        return value[: int(cut)] if cut else value

    return _LABEL_VAR.sub(sub, template)


def merge_env(*levels: Mapping[str, str] | None) -> dict[str, str]:
    """GoCD's precedence: later levels win (environment < pipeline < stage < job)."""
    out: dict[str, str] = {}
    for level in levels:
        if level:
            out.update(level)
    return out


LOCKING_FAILURES = frozenset({Status.FAILED, Status.CANCELLED})


def lock_holder(behavior: str, runs: Sequence[tuple[int, Status]]) -> int | None:
    """GoCD's pipeline locking: the counter of the run holding the lock, or None.

    ``runs`` are (counter, status) newest first, only those after the last
    manual unlock. With ``unlockWhenFinished`` a run holds the lock until it
    finishes; with ``lockOnFailure`` also afterwards when it failed or was
    cancelled, until it is rerun to success or unlocked by hand. A run waiting
    for approval holds the lock: it may still deploy.
    """
    if behavior not in ("lockOnFailure", "unlockWhenFinished"):
        return None
    for counter, status in runs:
        if not status.finished:
            return counter
    if behavior == "lockOnFailure" and runs and runs[0][1] in LOCKING_FAILURES:
        return runs[0][0]
    return None
