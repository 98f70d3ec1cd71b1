"""A pipeline's history newest first has its own index, on both back ends and in stores made before it."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import sqlalchemy as sa

from workbench.store import Store
from workbench.store import schema as S


def _indexes(store: Store) -> dict[str, list[str]]:
    return {ix["name"]: ix["column_names"] for ix in sa.inspect(store.engine).get_indexes("pipeline_runs")}


def test_a_new_store_has_the_history_index(store_url: str) -> None:
    store = Store.open(store_url)
    try:
        assert _indexes(store)["ix_pipeline_runs_pipeline_id"] == ["pipeline", "id"]
        for i in range(3):
            store.create_pipeline_run("other" if i % 2 else "app", label_for=str, trigger="manual", triggered_by="t")
        assert [r.counter for r in store.pipeline_runs("app", limit=50)] == [2, 1]
    finally:
        store.close()


def test_an_existing_store_gains_it_and_sqlite_reads_history_through_it(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    Store.open(path).close()
    con = sqlite3.connect(path)  # a store from before the migration
    con.execute("DROP INDEX ix_pipeline_runs_pipeline_id")
    applied = [m for m, _ in S.MIGRATIONS if m != "core-3-pipeline-history-index"]
    con.execute("UPDATE meta SET value = ? WHERE key = 'migrations'", (json.dumps(applied),))
    con.commit()
    con.close()
    store = Store.open(path)
    try:
        assert "ix_pipeline_runs_pipeline_id" in _indexes(store)
        q = sa.select(S.pipeline_runs).where(S.pipeline_runs.c.pipeline == "app").order_by(S.pipeline_runs.c.id.desc()).limit(50)
        sql = str(q.compile(store.engine, compile_kwargs={"literal_binds": True}))
        with store.read() as conn:
            plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
        assert "ix_pipeline_runs_pipeline_id" in plan and "TEMP B-TREE" not in plan, plan
    finally:
        store.close()
