"""The board at scale (issue 17): its config view kept beside the parse cache, its runs in three joined queries.

These pin behaviour, not speed (benchmarks/bench_scale.py measures that):
``Store.board_runs`` gives what the former ``latest_runs`` + ``run_details``
read gave (reruns, waiting jobs, runs never started; SQLite and PostgreSQL);
the cached :class:`BoardView` equals the view of the full config, a changed
file shows up in the very next ``status``, a broken file still reports its
errors; ``history`` does not load the config at all.
"""
from __future__ import annotations

import pytest

from workbench.errors import ConfigError
from workbench.reporting import _stage_list
from workbench.service import reads
from workbench.service.boardview import BoardView, board_view, view_of
from workbench.status import Status
from workbench.store import Store

PIPELINES = """
format_version: 10
pipelines:
  app:
    group: web
    stages:
      - build:
          jobs: {b: {tasks: [{script: "true"}]}}
      - qa:
          jobs: {q: {tasks: [{script: "true"}]}}
  lib:
    stages:
      - build:
          jobs: {b: {tasks: [{script: "true"}]}}
"""


def _old_board(store: Store) -> dict[str, tuple]:
    """What the board read before ``board_runs``: latest runs, then their details (the reference)."""
    latest = store.latest_runs()
    details = store.run_details(latest.values(), job_statuses=[Status.SCHEDULED])
    out = {}
    for name, run in latest.items():
        d = details[run.id]
        waiting = tuple((s.name, j.name, j.reason) for s in d.latest_stages().values() for j in d.jobs.get(s.id, ())
                        if j.status == Status.SCHEDULED and j.reason)
        stages = tuple((s["name"], s["counter"], s["status"], s["approved_by"], s["duration_s"]) for s in _stage_list(d))
        out[name] = (run.id, run.counter, run.label, run.status.value, run.reason, run.created_at, run.started_at,
                     run.finished_at, stages, waiting)
    return out


def _new_board(store: Store) -> dict[str, tuple]:
    out = {}
    for name, r in store.board_runs().items():
        stages = tuple((s[0], s[1], s[2], s[3], None if s[4] is None or s[5] is None else round(s[5] - s[4], 3))
                       for s in r.stages)
        out[name] = (r.id, r.counter, r.label, r.status, r.reason, r.created_at, r.started_at, r.finished_at,
                     stages, r.waiting)
    return out


def test_board_runs_are_the_latest_runs_with_their_details(store_url: str) -> None:
    store = Store.open(store_url)
    try:
        assert store.board_runs() == {}
        for i in range(5):  # p0 and p1 have several runs; only the latest counts
            run = store.create_pipeline_run(f"p{i % 3}", label_for=str, trigger="manual", triggered_by="alice")
            for pos, name in enumerate(("build", "deploy")):
                _, jobs = store.create_stage_run(run.id, name, pos, jobs=[("a", 1, 1), ("b", 1, 1)])
                store.start_job(jobs[0].id, agent="local", log_path=None)
                store.finish_job(jobs[0].id, Status.PASSED if i != 3 else Status.FAILED, exit_code=0)
            store.create_stage_run(run.id, "build", 0, jobs=[("a", 1, 1), ("c", 1, 1)])  # counter 2
        store.create_pipeline_run("never", label_for=str, trigger="manual", triggered_by="bob")  # no stage yet
        old = _old_board(store)
        assert _new_board(store) == old
        assert set(old) == {"p0", "p1", "p2", "never"}
        assert [s[:2] for s in old["p0"][8]] == [("build", 2), ("deploy", 1)]  # the rerun, in run order
    finally:
        store.close()


def test_waiting_jobs_of_the_latest_stage_counter_only(store_url: str) -> None:
    store = Store.open(store_url)
    try:
        import sqlalchemy as sa

        from workbench.store import schema as S

        run = store.create_pipeline_run("p", label_for=str, trigger="manual", triggered_by="alice")
        _, first = store.create_stage_run(run.id, "build", 0, jobs=[("a", 1, 1)])
        _, second = store.create_stage_run(run.id, "build", 0, jobs=[("a", 1, 1), ("b", 1, 1)])
        _, other = store.create_stage_run(run.id, "test", 1, jobs=[("t", 1, 1)])
        with store.write() as conn:  # the scheduler's reason for each job still waiting
            for j, why in ((first[0], "old counter"), (second[1], "needs rpm"), (other[0], "needs linux")):
                conn.execute(sa.update(S.job_runs).where(S.job_runs.c.id == j.id).values(reason=why))
        assert store.board_runs()["p"].waiting == (("build", "b", "needs rpm"), ("test", "t", "needs linux"))
        assert _new_board(store) == _old_board(store)
    finally:
        store.close()


def _files(ws_root) -> list:
    return sorted((ws_root / ".workbench" / "cache").glob("board-*.pickle"))


def test_the_kept_view_is_the_full_configs_and_follows_the_files(workspace) -> None:
    workspace.write("p.yaml", PIPELINES)
    ws = workspace.open()
    first = reads.board(ws)  # nothing kept yet: the full config is loaded and the view written
    assert "config" in ws.__dict__ and len(_files(workspace.root)) == 1
    full = view_of(ws.config)
    assert full == BoardView((("app", "web", ("build", "qa")), ("lib", "defaultGroup", ("build",))), {})

    again = workspace.open()  # a new process's workspace: the kept view, without the full config
    view, token = board_view(again)
    assert view == full and token is view and "config" not in again.__dict__
    assert reads.board(again) == first and "config" not in again.__dict__

    # a changed file: another key, so the next status shows the new stage and the new pipeline
    workspace.write("p.yaml", PIPELINES.replace("      - qa:", "      - smoke:") + """
  tool:
    group: ops
    stages:
      - build:
          jobs: {b: {tasks: [{script: "true"}]}}
""")
    fresh = workspace.open()
    rows = {r["pipeline"]: r for r in reads.board(fresh)}
    assert [s["name"] for s in rows["app"]["stages"]] == ["build", "smoke"]
    assert rows["tool"]["group"] == "ops" and set(rows) == {"app", "lib", "tool"}
    assert view_of(fresh.config) == board_view(workspace.open())[0]
    out = workspace.cli("status")
    assert out.code == 0 and "smoke" in out.out and "tool" in out.out, out

    # a broken file: its errors, as before (nothing is kept for it)
    kept = _files(workspace.root)
    workspace.write("p.yaml", PIPELINES.replace("stages:", "stagez:", 1))
    with pytest.raises(ConfigError):
        reads.board(workspace.open())
    assert _files(workspace.root) == kept
    bad = workspace.cli("status")
    assert bad.code == ConfigError.exit_code and "p.yaml:" in bad.err and "Traceback" not in bad.err, bad


def test_a_tampered_view_is_not_read(workspace) -> None:
    workspace.write("p.yaml", PIPELINES)
    reads.board(workspace.open())
    [entry] = _files(workspace.root)
    entry.write_bytes(b"not a pickle")
    ws = workspace.open()
    assert [r["pipeline"] for r in reads.board(ws)] == ["app", "lib"] and "config" in ws.__dict__
    entry.chmod(0o666)  # writable by others: never unpickled
    ws = workspace.open()
    assert board_view(ws)[1] is ws.__dict__["config"]


def test_history_does_not_load_the_config(workspace) -> None:
    workspace.write("p.yaml", PIPELINES)
    ws = workspace.open()
    ws.store.create_pipeline_run("lib", label_for=str, trigger="manual", triggered_by="alice")
    assert [r["pipeline"] for r in reads.history(ws, "lib", 50)] == ["lib"]
    assert "config" not in ws.__dict__
    assert reads.cached_read(ws, "history", "lib", 50) is not None  # kept, and found without the config
