"""``workbench migrate --to URL``: a SQLite history copied whole into another store, counts checked.

The target is ``store_url`` (conftest): a new SQLite file and a database on the
throw-away PostgreSQL server, so the copy is proven into both.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest
import sqlalchemy as sa

from conftest import WorkspaceFactory
from workbench.errors import InvalidState, StoreError
from workbench.status import Status
from workbench.store import Store
from workbench.store import schema as S
from workbench.store.migrate import copy_store

PIPELINE = """\
format_version: 10
pipelines:
  release:
    group: g
    label_template: "1.${COUNT}"
    stages:
      - build:
          jobs:
            compile:
              tasks:
                - exec: {command: "true"}
            lint:
              tasks:
                - script: echo lint; exit $LINT_EXIT
      - publish:
          jobs:
            upload:
              tasks:
                - exec: {command: "true"}
"""


@pytest.fixture
def history(workspace: WorkspaceFactory, monkeypatch: pytest.MonkeyPatch) -> WorkspaceFactory:
    """A workspace whose SQLite store holds real runs: one failed, two passed."""
    monkeypatch.delenv("WORKBENCH_STORE_URL", raising=False)
    workspace.write("release.gocd.yaml", PIPELINE)
    with workspace.open() as ws:
        for lint_exit in ("1", "0", "0"):
            monkeypatch.setenv("LINT_EXIT", lint_exit)
            ws.run("release")
    return workspace


@pytest.fixture
def feature_table() -> Iterator[sa.Table]:
    """A feature's own table, added the way features add theirs (schema.register_migration)."""
    table = sa.Table("test_feature_notes", S.metadata,
                     sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                     sa.Column("pipeline_run_id", sa.Integer, sa.ForeignKey("pipeline_runs.id"), nullable=False),
                     sa.Column("note", sa.JSON, nullable=False))
    S.register_migration("test-feature-notes-1", S.tables_created_by(table))
    try:
        yield table
    finally:
        S.MIGRATIONS[:] = [m for m in S.MIGRATIONS if m[0] != "test-feature-notes-1"]
        S.metadata.remove(table)


def _frame(store: Store, table: sa.Table) -> pd.DataFrame:
    with store.read() as conn:
        rows = conn.execute(sa.select(table).order_by(*table.primary_key.columns)).mappings().all()
    return pd.DataFrame([dict(r) for r in rows])


def test_copy_moves_every_table_and_the_target_carries_on(history: WorkspaceFactory, store_url: str,
                                                          feature_table: sa.Table) -> None:
    source = Store.open(history.root / ".workbench" / "store.db")
    with source.write() as conn:
        conn.execute(feature_table.insert().values(pipeline_run_id=2, note={"why": "hotfix", "tags": ["a"]}))
    counts = copy_store(source, store_url)
    assert counts["pipeline_runs"] == 3 and counts["stage_runs"] == 5 and counts["job_runs"] == 8
    assert counts["test_feature_notes"] == 1 and counts["pipeline_counters"] == 1
    target = Store.open(store_url)
    try:
        for table in (S.pipeline_counters, S.pipeline_runs, S.stage_runs, S.job_runs, feature_table):
            pd.testing.assert_frame_equal(_frame(target, table), _frame(source, table), check_dtype=False)
        assert target.frames.job_runs["status"].tolist() == source.frames.job_runs["status"].tolist()
        # counters and ids continue after the copied history
        run = target.create_pipeline_run("release", label_for=lambda n: f"1.{n}", trigger="manual", triggered_by="x")
        assert (run.id, run.counter, run.label) == (4, 4, "1.4")
        stage, jobs = target.create_stage_run(run.id, "build", 0, jobs=[("compile", 1, 1)])
        assert stage.id == 6 and jobs[0].id == 9
    finally:
        target.close()
        source.close()


def test_a_target_with_history_is_refused(history: WorkspaceFactory, store_url: str) -> None:
    target = Store.open(store_url)
    target.create_pipeline_run("other", label_for=str, trigger="manual", triggered_by="x")
    target.close()
    source = Store.open(history.root / ".workbench" / "store.db")
    try:
        with pytest.raises(InvalidState, match="not empty"):
            copy_store(source, store_url)
        with pytest.raises(InvalidState, match="the target is the store being copied"):
            copy_store(source, source.url)
    finally:
        source.close()


def test_a_failed_copy_writes_nothing(history: WorkspaceFactory, pg_server: object) -> None:
    url = pg_server.create_database()  # type: ignore[attr-defined]
    source = Store.open(history.root / ".workbench" / "store.db")
    # SQLite keeps a label longer than the column allows; PostgreSQL refuses it mid-copy
    run = source.create_pipeline_run("release", label_for=lambda n: "x" * 300, trigger="manual", triggered_by="x")
    source.set_pipeline_status(run.id, Status.FAILED)
    try:
        with pytest.raises(StoreError, match="copy failed, nothing was written"):
            copy_store(source, url)
    finally:
        source.close()
    target = Store.open(url)
    try:
        assert target.pipeline_runs() == [] and target.latest_runs() == {}
    finally:
        target.close()


def test_cli_migrate_to_postgresql(history: WorkspaceFactory, pg_server: object) -> None:
    store_url = pg_server.create_database()  # type: ignore[attr-defined]
    r = history.cli("migrate", "--to", store_url)
    assert r.code == 0, r.err
    assert "pipeline_runs: 3 rows" in r.out and "job_runs: 8 rows" in r.out and "row counts checked" in r.out
    again = history.cli("migrate", "--to", store_url)
    assert again.code == 2 and "not empty" in again.err
    # the workspace now reads its history from the new store
    (history.root / "workbench.yaml").write_text(f"store:\n  url: {store_url}\n")
    (history.root / ".workbench" / "store.db").unlink()
    with history.open() as ws:
        assert ws.store.url == store_url
        assert ws.frames.pipeline_runs["status"].tolist() == ["failed", "passed", "passed"]


def test_workspace_file_chooses_store_executor_and_artifacts(workspace: WorkspaceFactory, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench import Workspace

    monkeypatch.delenv("WORKBENCH_STORE_URL", raising=False)
    monkeypatch.delenv("WORKBENCH_ARTIFACTS_URL", raising=False)
    monkeypatch.setenv("WB_TEST_HOST", "sched.example")
    (workspace.root / "workbench.yaml").write_text(
        "executor: {kind: dask, address: 'tcp://${WB_TEST_HOST}:8786', agent_wait_timeout: 30}\n"
        "store: {url: history/runs.db}\n"
        "artifacts: file:///shared/artifacts\n"
    )
    ws = workspace.open()
    s = ws.settings
    assert s.executor == "dask://tcp://sched.example:8786" and dict(s.executor_options) == {"agent_wait_timeout": 30}
    assert s.executor_for(None) == ("dask://tcp://sched.example:8786", {"agent_wait_timeout": 30})
    assert s.executor_for("dask://local") == ("dask://local", {"agent_wait_timeout": 30})  # same kind: options kept
    assert s.executor_for("local") == ("local", {})
    assert ws.artifacts_url == "file:///shared/artifacts"
    # store: explicit argument > $WORKBENCH_STORE_URL > workbench.yaml > .workbench/store.db
    assert ws.store.url == f"sqlite:///{workspace.root / 'history' / 'runs.db'}"
    ws.close()
    monkeypatch.setenv("WORKBENCH_STORE_URL", str(tmp_path / "env.db"))
    with Workspace.open(workspace.root) as env_ws:
        assert env_ws.store.url == f"sqlite:///{tmp_path / 'env.db'}"
    with Workspace.open(workspace.root, store_url=str(tmp_path / "arg.db")) as arg_ws:
        assert arg_ws.store.url == f"sqlite:///{tmp_path / 'arg.db'}"
    (workspace.root / "workbench.yaml").unlink()
    monkeypatch.delenv("WORKBENCH_STORE_URL")
    with Workspace.open(workspace.root) as plain:
        assert plain.store.url == f"sqlite:///{workspace.root / '.workbench' / 'store.db'}"
        assert plain.settings.executor is None
