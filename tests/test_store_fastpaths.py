"""The store's fast paths for the engine (issue 9): same results as the general calls, on SQLite and PostgreSQL.

No timings here (those are in benchmarks/); these pin the behaviour the
engine now relies on: a stage created already running with its jobs, a run
detail without job rows, and statements built once giving the same rows as
before whatever values were set.
"""
from __future__ import annotations

import pytest

from workbench.errors import InvalidState, NotFound
from workbench.status import Status
from workbench.store import Store


@pytest.fixture
def store(store_url: str) -> Store:
    s = Store.open(store_url)
    yield s
    s.close()


def _run(store: Store, pipeline: str = "p"):
    return store.create_pipeline_run(pipeline, label_for=lambda n: f"1.{n}", trigger="manual", triggered_by="alice")


def test_a_stage_created_running_is_claimed_with_its_jobs_in_one_call(store: Store) -> None:
    run = _run(store)
    stage, jobs = store.create_stage_run(run.id, "build", 0, status=Status.RUNNING,
                                         jobs=[("a", 1, 1), ("b-runInstance-1", 1, 2), ("b-runInstance-2", 2, 2)],
                                         expect_stage_runs=0)
    assert stage.status == Status.RUNNING and stage.started_at is not None and stage.counter == 1
    assert [(j.name, j.run_index, j.run_count, j.status) for j in jobs] == [
        ("a", 1, 1, Status.SCHEDULED), ("b-runInstance-1", 1, 2, Status.SCHEDULED), ("b-runInstance-2", 2, 2, Status.SCHEDULED)]
    # nobody can claim it again, and a second driver that saw no stages is refused
    with pytest.raises(InvalidState):
        store.set_stage_status(stage.id, Status.RUNNING, expect=[Status.SCHEDULED])
    with pytest.raises(InvalidState):
        store.create_stage_run(run.id, "build", 0, status=Status.RUNNING, jobs=[("a", 1, 1)], expect_stage_runs=0)
    scheduled, none = store.create_stage_run(run.id, "test", 1)
    assert scheduled.status == Status.SCHEDULED and scheduled.started_at is None and none == []


def test_run_detail_without_jobs_has_the_same_stages(store: Store) -> None:
    run = _run(store)
    s1, _ = store.create_stage_run(run.id, "build", 0, status=Status.RUNNING, jobs=[("a", 1, 1)])
    store.set_stage_status(s1.id, Status.PASSED)
    store.create_stage_run(run.id, "build", 0, jobs=[("a", 1, 1), ("b", 1, 1)])  # a rerun: counter 2
    full, light = store.run_detail(run.id), store.run_detail(run.id, jobs=False)
    assert full.stages == light.stages and [s.counter for s in light.stages] == [1, 2]
    assert light.run == full.run == store.get_pipeline_run_by_id(run.id)
    assert [len(full.jobs[s.id]) for s in full.stages] == [1, 2]
    assert all(light.jobs[s.id] == () for s in light.stages)
    with pytest.raises(NotFound):
        store.run_detail(run.id + 1000, jobs=False)


def test_prebuilt_statements_set_exactly_what_was_asked(store: Store) -> None:
    run = _run(store)
    stage, jobs = store.create_stage_run(run.id, "deploy", 0, approval_type="manual", status=Status.WAITING,
                                         jobs=[("j", 1, 1)])
    # the same statement shape with and without optional values
    store.set_stage_status(stage.id, Status.SCHEDULED, expect=[Status.WAITING], approved_by="carol")
    s = store.set_stage_status(stage.id, Status.RUNNING, expect=[Status.SCHEDULED, Status.WAITING])
    assert (s.status, s.approved_by, s.reason) == (Status.RUNNING, "carol", None) and s.started_at is not None
    s = store.set_stage_status(stage.id, Status.FAILED, "a job failed")
    assert (s.status, s.reason) == (Status.FAILED, "a job failed") and s.finished_at is not None
    with pytest.raises(InvalidState, match="failed, not scheduled"):
        store.set_stage_status(stage.id, Status.RUNNING, expect=[Status.SCHEDULED])

    j = jobs[0]
    store.start_job(j.id, agent="local@x", log_path="/tmp/j.log", owner="h:1")
    got = store.job_runs(stage.id)[0]
    assert (got.status, got.agent, got.log_path, got.owner) == (Status.RUNNING, "local@x", "/tmp/j.log", "h:1")
    assert got.started_at == got.heartbeat_at
    store.finish_job(j.id, Status.FAILED, exit_code=3, reason="task 1 exited with status 3")
    got = store.job_runs(stage.id)[0]
    assert (got.status, got.exit_code, got.reason) == (Status.FAILED, 3, "task 1 exited with status 3")

    # a run's first start is kept when it runs again (rerun), its finish cleared
    store.set_pipeline_status(run.id, Status.RUNNING)
    first = store.get_pipeline_run_by_id(run.id).started_at
    store.set_pipeline_status(run.id, Status.FAILED, "a job failed")
    done = store.get_pipeline_run_by_id(run.id)
    assert done.finished_at is not None and done.reason == "a job failed"
    store.set_pipeline_status(run.id, Status.RUNNING)
    again = store.get_pipeline_run_by_id(run.id)
    assert again.started_at == first and again.finished_at is None and again.status == Status.RUNNING


def test_a_scheduled_stage_is_claimed_with_its_jobs_in_one_transaction(store: Store) -> None:
    """An approved stage (SCHEDULED, no jobs yet) becomes RUNNING with its job rows at once; jobs already there
    (a rerun of failed jobs) are kept; a second claim is refused and adds nothing."""
    run = _run(store)
    stage, none = store.create_stage_run(run.id, "qa", 0, status=Status.SCHEDULED, approval_type="manual")
    assert none == []
    claimed, jobs = store.start_scheduled_stage(stage.id, [("a", 1, 1), ("b", 1, 1)])
    assert claimed.status == Status.RUNNING and claimed.started_at is not None
    assert [(j.name, j.status) for j in jobs] == [("a", Status.SCHEDULED), ("b", Status.SCHEDULED)]
    with pytest.raises(InvalidState):
        store.start_scheduled_stage(stage.id, [("a", 1, 1)])
    assert len(store.job_runs(stage.id)) == 2
    rerun, kept = store.create_stage_run(run.id, "qa", 0, status=Status.SCHEDULED, jobs=[("b", 1, 1)])
    _, jobs = store.start_scheduled_stage(rerun.id, [("a", 1, 1), ("b", 1, 1)])
    assert [j.name for j in jobs] == ["b"] == [j.name for j in kept]
