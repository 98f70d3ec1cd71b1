"""The charts' data after each kind of store change equals a fresh full read (SQLite and PostgreSQL).

A ChartSource kept open across the changes reads only what changed
(:mod:`workbench.dashboard.livehistory`); after every change its frames and
every chart's data are compared with those of a new ChartSource, which reads
the whole history. Changes go through the product's own paths: runs driven by
the engine, approvals, a stage rerun, incidents, marks, a rollback; a deletion
(no workbench command deletes history, a retention script might) is done in
SQL and must make the table be read whole.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from workbench.status import Status

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("workspace_store")]


def _config(repo_url: str, tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "weights.json"
    script = tmp_path / "lb.py"
    script.write_text("import json, os, sys\n"
                      f"json.dump(json.loads(os.environ['WORKBENCH_WEIGHTS']), open({str(out)!r}, 'w'))\n")
    job = {"jobs": {"compile": {"tasks": [{"exec": {"command": "true"}}]}}}
    return {
        "format_version": 10,
        "roles": {"release-managers": ["alice"]},
        "routes": {"shop": {"provider": "command", "stacks": {"blue": "blue:80", "green": "green:80"},
                            "argv": [sys.executable, str(script)]}},
        "environments": {"production": {"production": True, "pipelines": ["release"]}},
        "pipelines": {
            "app": {"group": "shop", "materials": {"src": {"git": repo_url, "branch": "master"}},
                    "stages": [{"build": job}, {"test": job}]},
            "release": {
                "group": "shop", "materials": {"app": {"pipeline": "app", "stage": "test"}},
                "rollout": {"route": "shop", "steps": [5, 25, 100],
                            "approval": {"type": "manual", "roles": ["release-managers"]}},
                "stages": [{"package": job}],
            },
        },
    }


@pytest.fixture
def shop(workspace: Any, git_repo: Any, tmp_path: Path) -> Any:
    repo = git_repo("app")
    workspace.write("shop.yaml", yaml.safe_dump(_config(repo.url, tmp_path), sort_keys=False))
    ws = workspace.open()
    assert ws.run("app").status == Status.PASSED
    ws.repo = repo
    yield ws
    ws.close()


def _fresh(ws: Any) -> Any:
    from workbench.dashboard.chartdata import ChartSource

    return ChartSource(ws)


def _check(cs: Any, ws: Any) -> None:
    """``cs`` (kept across changes) shows exactly what a new ChartSource reading everything shows."""
    from workbench.dashboard.livehistory import SPECS, _build

    full = _fresh(ws)
    try:
        mine, theirs = cs.all(0, "W"), full.all(0, "W")
        for key in theirs:
            pd.testing.assert_frame_equal(mine[key], theirs[key], obj=key)
        for days in (7, 3650):
            pd.testing.assert_frame_equal(cs.lead_time(days, "D"), full.lead_time(days, "D"), obj=f"lead {days}")
            pd.testing.assert_frame_equal(cs.recovery(days), full.recovery(days), obj=f"recovery {days}")
        pd.testing.assert_frame_equal(cs.metrics().deployments, full.metrics().deployments, obj="deployments")
        pd.testing.assert_frame_equal(cs.metrics().lead_times, full.metrics().lead_times, obj="lead times")
        pd.testing.assert_frame_equal(cs.metrics().stage_times, full.metrics().stage_times, obj="stage times")
        for run_id in ws.frames.pipeline_runs["run_id"]:
            a, b = cs.value_stream(int(run_id)), full.value_stream(int(run_id))
            pd.testing.assert_frame_equal(a[0], b[0], obj=f"value stream nodes {run_id}")
            pd.testing.assert_frame_equal(a[1], b[1], obj=f"value stream edges {run_id}")
        for spec in SPECS:  # and the frames themselves equal a whole read of the store now
            kept = cs.live.frame(spec.key)
            if kept is not None:
                pd.testing.assert_frame_equal(kept, _build(ws.store, spec), obj=spec.key)
    finally:
        full.close()


def _how(cs: Any) -> dict[str, str]:
    """How the last refresh brought each table up to date: skip, rows (read what changed) or full."""
    how = dict(cs.live.stats.how)
    cs.history_of_how.append(how)
    return how


def test_every_kind_of_change_gives_the_data_of_a_full_read(shop: Any) -> None:
    from workbench.approvals import approve
    from workbench.metrics_store import mark_hotfix, open_incident, resolve_incident
    from workbench.traffic.rollback import rollback

    ws = shop
    cs = _fresh(ws)
    cs.history_of_how = []
    try:
        _check(cs, ws)
        assert cs.loads == 1 and set(_how(cs).values()) == {"full"}

        # a new run that waits for approval (new run, stage, commit and provenance rows)
        assert ws.run("release").status == Status.WAITING
        _check(cs, ws)
        how = _how(cs)
        assert how["runs"] == "rows" and how["stages"] == "rows" and how["provenance"] == "rows", how
        assert cs.metrics().deployments.empty

        # approvals: each one starts the next stage; the last one finishes the run (a deployment)
        for step in (5, 25):
            approve(ws, f"release/1/install_shop_{step}", user="alice", comment="ok", drive=True)
            _check(cs, ws)
            assert _how(cs)["approvals"] == "rows"
        approve(ws, "release/1/install_shop_100", user="alice", comment="ok", drive=True)
        assert ws.store.get_pipeline_run("release", 1).status == Status.PASSED
        _check(cs, ws)
        assert len(cs.metrics().deployments) == 1 and _how(cs)["stages"] == "rows"
        assert cs.metrics().lead_times["counted"].sum() >= 1

        # a new commit and a new upstream run, then a second release that is rolled back at 25%
        ws.repo.commit({"a.txt": "2"}, "second change")
        assert ws.run("app").status == Status.PASSED
        _check(cs, ws)
        assert _how(cs)["commits"] == "rows"
        ws.run("release")
        approve(ws, "release/2/install_shop_5", user="alice", comment="ok", drive=True)
        approve(ws, "release/2/install_shop_25", user="alice", comment="ok", drive=True)
        _check(cs, ws)
        rollback(ws, "release/2", user="alice", reason="errors")
        assert ws.store.get_pipeline_run("release", 2).status == Status.FAILED
        _check(cs, ws)
        how = _how(cs)
        assert how["rollbacks"] == "full" and how["runs"] == "rows" and how["stages"] == "rows", how
        dep = cs.metrics().deployments.set_index("counter")
        assert dep.loc[2, "failed_change"] and dep.loc[2, "rolled_back_at"] is not pd.NaT

        # an incident blaming the first release, resolved later; a hotfix mark
        inc = open_incident(ws, "checkout down", caused_by="release/1", user="alice")
        _check(cs, ws)
        how = _how(cs)
        assert how["incidents"] == "full" and how["runs"] == "skip" and how["stages"] == "skip", how
        assert {k: cs.derived[k] for k in ("deployments", "reach", "lead_times", "stage_times")} == {
            "deployments": "made", "reach": "kept", "lead_times": "kept", "stage_times": "kept"}
        assert bool(cs.metrics().deployments.set_index("counter").loc[1, "failed_change"])
        resolve_incident(ws, inc.id, user="alice")
        _check(cs, ws)
        assert not pd.isna(cs.metrics().deployments.set_index("counter").loc[1, "restored_at"])
        mark_hotfix(ws, "release/2", incident=inc.id, user="alice")
        _check(cs, ws)
        assert _how(cs)["marks"] == "full"

        # a third release, deployed: the provenance walk goes from the new deployment only
        ws.repo.commit({"a.txt": "3"}, "third change")
        assert ws.run("app").status == Status.PASSED
        ws.run("release")
        for step in (5, 25):
            approve(ws, f"release/3/install_shop_{step}", user="alice", comment="ok", drive=True)
        _check(cs, ws)
        approve(ws, "release/3/install_shop_100", user="alice", comment="ok", drive=True)
        _check(cs, ws)
        assert cs.derived["reach"] == "updated" and cs.derived["lead_times"] == "made", cs.derived
        assert list(cs.metrics().deployments["counter"]) == [1, 2, 3]
        leads = cs.metrics().lead_times.set_index("sha")
        assert leads.loc[ws.repo.head, "deployment_run_id"] == ws.store.get_pipeline_run("release", 3).id

        # a stage rerun of an old run: a new stage row, and the old, finished run row changes
        old = ws.store.get_pipeline_run("app", 1)
        with ws.engine() as engine:
            assert engine.drive(engine.rerun(old, "test")).status == Status.PASSED
        _check(cs, ws)
        how = _how(cs)
        assert how["runs"] == "rows" and how["stages"] == "rows", how
        st = cs.live.frame("stages")
        assert st.loc[(st["run_id"] == old.id) & (st["stage"] == "test"), "stage_counter"].max() == 2
        # after the first read, the growing tables were never read whole again
        later = cs.history_of_how[1:]
        assert later and all(h.get(k) != "full" for h in later
                             for k in ("runs", "stages", "commits", "provenance", "approvals")), later
    finally:
        cs.close()


def test_a_finished_row_changed_without_a_new_time_is_caught_by_the_check(shop: Any) -> None:
    """A status change the watermark cannot see (no new time) still shows: the status sum disagrees."""
    ws = shop
    rid = int(ws.frames.pipeline_runs["run_id"].iloc[0])
    ws.repo.commit({"b.txt": "1"}, "another change")
    assert ws.run("app").status == Status.PASSED
    with ws.store.write() as conn:  # the first run is old: its times are far behind the watermark
        conn.execute(sa.text("UPDATE pipeline_runs SET created_at = created_at - 86400, started_at = started_at - "
                             "86400, finished_at = finished_at - 86400 WHERE id = :i"), {"i": rid})
        conn.execute(sa.text("UPDATE stage_runs SET created_at = created_at - 86400, started_at = started_at - "
                             "86400, finished_at = finished_at - 86400 WHERE pipeline_run_id = :i"), {"i": rid})
    cs = _fresh(ws)
    cs.history_of_how = []
    try:
        cs.all(0, "W")
        with ws.store.write() as conn:
            conn.execute(sa.text("UPDATE pipeline_runs SET status = 'failed' WHERE id = :i"), {"i": rid})
        _check(cs, ws)
        assert _how(cs)["runs"] == "full"
        assert str(cs.live.frame("runs").set_index("run_id").loc[rid, "status"]) == "failed"
    finally:
        cs.close()


def test_deleted_history_is_read_whole_again(shop: Any) -> None:
    ws = shop
    ws.repo.commit({"b.txt": "1"}, "another change")
    assert ws.run("app").status == Status.PASSED
    cs = _fresh(ws)
    cs.history_of_how = []
    try:
        cs.all(0, "W")
        assert ws.run("app").status == Status.PASSED  # rows added, then some removed: the counts do not add up
        last = ws.store.get_pipeline_run("app", 1).id
        with ws.store.write() as conn:
            stage_ids = [r[0] for r in conn.execute(sa.text("SELECT id FROM stage_runs WHERE pipeline_run_id = :r "
                                                            "AND name = 'test'"), {"r": last})]
            for sid in stage_ids:
                conn.execute(sa.text("DELETE FROM job_runs WHERE stage_run_id = :s"), {"s": sid})
                conn.execute(sa.text("DELETE FROM stage_runs WHERE id = :s"), {"s": sid})
            conn.execute(sa.text("DELETE FROM commits WHERE id = (SELECT min(id) FROM commits)"))
        _check(cs, ws)
        how = _how(cs)
        assert how["stages"] == "full" and how["commits"] == "full" and how["runs"] == "rows", how
    finally:
        cs.close()
