"""The run-history store: counters, compare-and-set, migrations, frames."""
from __future__ import annotations

import multiprocessing as mp
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from workbench.errors import InvalidState, StoreError
from workbench.status import Status
from workbench.store import DuplicateTrigger, Store


@pytest.fixture
def store(store_url: str) -> Store:
    s = Store.open(store_url)  # SQLite (tmp_path / "store.db") and PostgreSQL, see conftest.store_url
    yield s
    s.close()


def _run(store: Store, pipeline: str = "p", **kw: object):
    return store.create_pipeline_run(pipeline, label_for=lambda n: f"1.{n}", trigger="manual", triggered_by="alice", **kw)


def test_counters_are_per_pipeline_and_labels_follow(store: Store) -> None:
    a1, a2, b1 = _run(store, "a"), _run(store, "a"), _run(store, "b")
    assert (a1.counter, a2.counter, b1.counter) == (1, 2, 1)
    assert a2.label == "1.2"


def test_wal_mode_and_schema_version(store: Store, tmp_path: Path) -> None:
    if store.is_sqlite:
        con = sqlite3.connect(tmp_path / "store.db")
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        con.close()
    assert store.schema_version >= 1
    assert store.integrity_ok()


def test_revision_key_triggers_at_most_once(store: Store) -> None:
    _run(store, revision_key="git:abc")
    with pytest.raises(DuplicateTrigger):
        _run(store, revision_key="git:abc")
    # the counter was not consumed by the refused attempt
    assert _run(store).counter == 2


def test_stage_compare_and_set(store: Store) -> None:
    run = _run(store)
    stage, _ = store.create_stage_run(run.id, "deploy", 0, approval_type="manual", status=Status.WAITING)
    store.set_stage_status(stage.id, Status.SCHEDULED, expect=[Status.WAITING], approved_by="carol")
    with pytest.raises(InvalidState):
        store.set_stage_status(stage.id, Status.SCHEDULED, expect=[Status.WAITING], approved_by="dave")
    assert store.get_stage_run(stage.id).approved_by == "carol"


def test_create_stage_run_refuses_a_stale_decision(store: Store) -> None:
    run = _run(store)
    store.create_stage_run(run.id, "build", 0, expect_stage_runs=0)
    with pytest.raises(InvalidState):
        store.create_stage_run(run.id, "build", 0, expect_stage_runs=0)
    assert len(store.run_detail(run).stages) == 1


def test_stage_counters_for_reruns(store: Store) -> None:
    run = _run(store)
    s1, _ = store.create_stage_run(run.id, "build", 0)
    s2, _ = store.create_stage_run(run.id, "build", 0)
    assert (s1.counter, s2.counter) == (1, 2)
    assert store.run_detail(run).latest_stages()["build"].id == s2.id


def test_frames_have_proper_dtypes(store: Store) -> None:
    run = _run(store)
    stage, jobs = store.create_stage_run(run.id, "build", 0, jobs=[("compile", 1, 1), ("lint", 1, 1)])
    store.set_stage_status(stage.id, Status.RUNNING)
    for j in jobs:
        store.start_job(j.id, agent="local", log_path="/tmp/x.log")
    store.finish_job(jobs[0].id, Status.PASSED, exit_code=0)
    store.finish_job(jobs[1].id, Status.FAILED, exit_code=2, reason="lint errors")
    store.set_stage_status(stage.id, Status.FAILED)
    store.set_pipeline_status(run.id, Status.FAILED, "stage build failed")
    f = store.frames
    pr, sr, jr = f.pipeline_runs, f.stage_runs, f.job_runs
    assert str(pr["created_at"].dtype) .startswith("datetime64") and str(pr["created_at"].dt.tz) == "UTC"
    assert isinstance(pr["status"].dtype, pd.CategoricalDtype)
    assert pd.api.types.is_timedelta64_dtype(jr["duration"])
    assert list(jr["job"]) == ["compile", "lint"]
    assert list(jr["exit_code"]) == [0, 2]
    assert jr.loc[1, "status"] == "failed" and jr.loc[1, "pipeline"] == "p"
    assert sr.loc[0, "stage"] == "build" and sr.loc[0, "status"] == "failed"
    assert pd.api.types.is_timedelta64_dtype(sr["wait"])


def test_newer_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    Store.open(path).close()
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value = '[\"core-1\", \"from-the-future\"]' WHERE key = 'migrations'")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="newer workbench"):
        Store.open(path)


def test_corrupt_store_is_a_clear_error_never_a_reset(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StoreError, match="cannot open store"):
        Store.open(path)
    assert path.read_bytes().startswith(b"this is not a database")


def _allocate(path: str, n: int, q: "mp.Queue[list[int]]") -> None:
    s = Store.open(path)
    got = [_run(s).counter for _ in range(n)]
    s.close()
    q.put(got)


def test_counters_never_reused_across_processes(store_url: str) -> None:
    path = store_url
    Store.open(path).close()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_allocate, args=(path, 25, q)) for _ in range(3)]
    for p in procs:
        p.start()
    got = sorted(c for _ in procs for c in q.get(timeout=60))
    for p in procs:
        p.join(timeout=60)
    assert got == list(range(1, 76))
