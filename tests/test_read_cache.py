"""The board's read path (issue 14, performance): many runs' details in a few queries, answers kept per store change.

No timings (benchmarks/bench_server.py measures them). These pin behaviour:
``Store.run_details`` gives exactly what ``run_detail`` gives run by run; the
board, history and approvals computed once per store change; a write by this
process or by another process (a separate ``workbench`` CLI) is seen by the
very next read; and the board's rows are the same as before the change.
"""
from __future__ import annotations

import sqlite3
import subprocess
import sys

from workbench.service import cache, reads
from workbench.status import Status
from workbench.store import Store

PIPELINES = """
format_version: 10
pipelines:
  app:
    stages:
      - build:
          jobs: {b: {tasks: [{script: "true"}]}}
      - qa:
          approval: {type: manual}
          jobs: {q: {tasks: [{script: "true"}]}}
  lib:
    stages:
      - build:
          jobs: {b: {tasks: [{script: "true"}]}}
  idle:
    stages:
      - build:
          jobs: {b: {tasks: [{script: "true"}]}}
"""


def _runs(store: Store) -> list:
    out = []
    for i in range(3):
        run = store.create_pipeline_run(f"p{i % 2}", label_for=lambda n: str(n), trigger="manual",
                                        triggered_by="alice")
        for pos, name in enumerate(("build", "deploy")):
            _, jobs = store.create_stage_run(run.id, name, pos, jobs=[("a", 1, 1), ("b", 1, 1)])
            store.start_job(jobs[0].id, agent="local", log_path=None)
            store.finish_job(jobs[0].id, Status.PASSED, exit_code=0)
        store.create_stage_run(run.id, "build", 0, jobs=[("a", 1, 1)])  # a rerun: counter 2
        out.append(run)
    return out


def test_run_details_are_run_detail_for_each_run(store_url: str) -> None:
    store = Store.open(store_url)
    try:
        runs = _runs(store)
        empty = store.create_pipeline_run("p9", label_for=str, trigger="manual", triggered_by="bob")
        every = store.run_details([*runs, empty])
        assert set(every) == {r.id for r in runs} | {empty.id}
        for r in [*runs, empty]:
            assert every[r.id] == store.run_detail(r)
        assert store.run_details(runs, jobs=False)[runs[0].id] == store.run_detail(runs[0], jobs=False)
        scheduled = store.run_details(runs, job_statuses=[Status.SCHEDULED])[runs[1].id]
        full = store.run_detail(runs[1])
        assert scheduled.stages == full.stages
        assert {k: tuple(j for j in v if j.status == Status.SCHEDULED) for k, v in full.jobs.items()} == scheduled.jobs
        assert store.run_details([]) == {}
    finally:
        store.close()


def test_the_board_is_computed_once_per_store_change_and_sees_other_processes(workspace) -> None:
    workspace.write("p.yaml", PIPELINES)
    ws = workspace.open()
    before = reads.board(ws)  # the first read: never run
    assert [(r["pipeline"], r["status"]) for r in before] == [("app", "never run"), ("lib", "never run"),
                                                              ("idle", "never run")]
    c = cache.cache_of(ws.store)
    n = c.computed
    assert reads.board(ws) is before and c.computed == n  # nothing changed: the same answer, not computed

    # a run by another process (the real CLI): the next read sees it
    p = subprocess.run([sys.executable, "-m", "workbench", "-w", str(workspace.root), "run", "app"],
                       capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode in (0, 3, 4) or "waiting" in p.stdout + p.stderr, p.stdout + p.stderr
    after = reads.board(ws)
    assert c.computed == n + 1
    app = next(r for r in after if r["pipeline"] == "app")
    assert app["counter"] == 1 and [s["status"] for s in app["stages"]] == ["passed", "waiting"], app
    waiting = reads.pending_approvals(ws)
    assert [a["locator"] for a in waiting] == ["app/1/qa"]
    assert reads.pending_approvals(ws) is waiting

    # a write through this process's store: seen at once too
    ws.store.create_pipeline_run("lib", label_for=str, trigger="manual", triggered_by="alice")
    lib = next(r for r in reads.board(ws) if r["pipeline"] == "lib")
    assert lib["counter"] == 1 and lib["status"] == "scheduled"
    assert reads.history(ws, None, 10)[0]["pipeline"] == "lib"

    # a raw write to the SQLite file by another connection (no workbench code at all)
    db = ws.root / ".workbench" / "store.db"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE pipeline_runs SET status = 'cancelled', reason = 'by hand' WHERE pipeline = 'lib'")
    lib = next(r for r in reads.board(ws) if r["pipeline"] == "lib")
    assert (lib["status"], lib["reason"]) == ("cancelled", "by hand")

    # the uncached rows are the same as the cached ones
    from workbench.reporting import status_rows

    assert status_rows(ws) == reads.board(ws)
