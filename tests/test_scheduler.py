"""The pure scheduler, driven with plain data: no processes, no store."""
from __future__ import annotations

from workbench.config.model import Approval, ExecTask, Job, Pipeline, Stage
from workbench.scheduler import (
    AwaitApproval, Busy, Finish, RunStage, StageSnapshot, job_instances, merge_env, next_step, render_label,
)
from workbench.status import Status

JOB = Job("j", (ExecTask("true"),))


def pipe(*stages: Stage) -> Pipeline:
    return Pipeline("p", tuple(stages))


def st(name: str, manual: bool = False) -> Stage:
    return Stage(name, (JOB,), approval=Approval("manual") if manual else Approval())


def snap(**statuses: Status) -> list[StageSnapshot]:
    return [StageSnapshot(k, v) for k, v in statuses.items()]


P = pipe(st("build"), st("test"), st("deploy", manual=True))


def test_first_stage_runs_first() -> None:
    assert next_step(P, []) == RunStage("build", 0)


def test_stages_run_in_order() -> None:
    assert next_step(P, snap(build=Status.PASSED)) == RunStage("test", 1)


def test_running_stage_means_busy() -> None:
    assert next_step(P, snap(build=Status.RUNNING)) == Busy("build")


def test_scheduled_stage_is_claimed() -> None:
    assert next_step(P, snap(build=Status.PASSED, test=Status.SCHEDULED)) == RunStage("test", 1)


def test_failure_stops_the_pipeline() -> None:
    d = next_step(P, snap(build=Status.FAILED))
    assert isinstance(d, Finish) and d.status == Status.FAILED and "build" in (d.reason or "")


def test_manual_stage_waits_then_runs_when_approved() -> None:
    assert next_step(P, snap(build=Status.PASSED, test=Status.PASSED)) == AwaitApproval("deploy", 2)
    assert next_step(P, snap(build=Status.PASSED, test=Status.PASSED, deploy=Status.WAITING)) == AwaitApproval("deploy", 2)
    # approval flips WAITING to SCHEDULED
    assert next_step(P, snap(build=Status.PASSED, test=Status.PASSED, deploy=Status.SCHEDULED)) == RunStage("deploy", 2)


def test_rejection_ends_the_run() -> None:
    d = next_step(P, snap(build=Status.PASSED, test=Status.PASSED, deploy=Status.REJECTED))
    assert isinstance(d, Finish) and d.status == Status.REJECTED


def test_all_passed_finishes_passed() -> None:
    d = next_step(P, snap(build=Status.PASSED, test=Status.PASSED, deploy=Status.PASSED))
    assert d == Finish(Status.PASSED)


def test_manual_first_stage_is_satisfied_by_a_manual_trigger_only() -> None:
    p = pipe(st("go", manual=True), st("after"))
    assert next_step(p, [], manually_triggered=True) == RunStage("go", 0)
    assert next_step(p, [], manually_triggered=False) == AwaitApproval("go", 0)


def test_rerun_of_an_earlier_stage_is_waited_for() -> None:
    d = next_step(P, snap(build=Status.RUNNING, test=Status.PASSED))
    assert d == Busy("build")
    d = next_step(P, snap(build=Status.FAILED, test=Status.PASSED))
    assert isinstance(d, Finish) and d.status == Status.FAILED


def test_rerun_of_failed_stage_that_passes_goes_on() -> None:
    # snapshots hold the latest counter of each stage: test's rerun passed
    assert next_step(P, snap(build=Status.PASSED, test=Status.PASSED)) == AwaitApproval("deploy", 2)


def test_cancelled_stage_cancels_the_run() -> None:
    d = next_step(P, snap(build=Status.CANCELLED))
    assert isinstance(d, Finish) and d.status == Status.CANCELLED


def test_job_instances() -> None:
    assert job_instances(JOB) == [("j", 1, 1)]
    three = Job("c", (ExecTask("true"),), run_instances=3)
    assert job_instances(three) == [("c-runInstance-1", 1, 3), ("c-runInstance-2", 2, 3), ("c-runInstance-3", 3, 3)]
    every = Job("c", (ExecTask("true"),), run_instances="all")  # GoCD: run on all agents is NAME-runOnAll-N
    assert job_instances(every, agents=2) == [("c-runOnAll-1", 1, 2), ("c-runOnAll-2", 2, 2)]


def test_label_template() -> None:
    revs = {"mygit": "0123456789abcdef"}
    assert render_label("${COUNT}", 7) == "7"
    assert render_label("r${count}", 7) == "r7"
    assert render_label("1.0-${COUNT}-${mygit[:7]}", 12, revs) == "1.0-12-0123456"
    assert render_label("${mygit}", 1, revs) == "0123456789abcdef"


def test_env_precedence_job_over_stage_over_pipeline_over_environment() -> None:
    merged = merge_env({"A": "env", "B": "env", "C": "env", "D": "env"}, {"B": "pipe", "C": "pipe", "D": "pipe"},
                       {"C": "stage", "D": "stage"}, {"D": "job"})
    assert merged == {"A": "env", "B": "pipe", "C": "stage", "D": "job"}
