"""Incidents, marks, `workbench metrics`, `export` and `report` end to end on a real workspace.

A real git repository feeds `app`, whose build feeds `prod` (a production
environment) through a dependency material; lead times come from the commits
the materials recorded and the provenance between the runs.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from workbench.errors import InvalidState, NotFound, UsageError
from workbench.status import Status
from workbench.metrics import Metrics, metrics_from_workspace
from workbench.metrics.io import Snapshot, export
from workbench.metrics_store import (list_incidents, mark_hotfix, mark_unplanned, open_incident,
                                     resolve_incident)

pytestmark = pytest.mark.timeout(300)

PIPELINES = """
format_version: 10
environments:
  production:
    production: true
    pipelines: [prod]
pipelines:
  app:
    group: shop
    materials:
      src: {{git: {url}, branch: master}}
    stages:
      - build:
          jobs: {{compile: {{tasks: [{{exec: {{command: "true"}}}}]}}}}
  prod:
    group: release
    materials:
      app: {{pipeline: app, stage: build}}
    stages:
      - deploy:
          jobs: {{install: {{tasks: [{{exec: {{command: "true"}}}}]}}}}
"""


@pytest.fixture
def shop(workspace: Any, git_repo: Any) -> Any:
    repo = git_repo("app")
    repo.commit({"a.txt": "1"}, "first change", date="2024-03-04T08:00:00+01:00")
    workspace.write("shop.yaml", PIPELINES.format(url=repo.url))
    ws = workspace.open()
    assert ws.run("app").status.value == "passed"
    assert ws.run("prod").status.value == "passed"
    repo.commit({"a.txt": "2"}, "second change", date="2024-03-05T09:30:00+00:00")
    assert ws.run("app").status.value == "passed"
    assert ws.run("prod").status.value == "passed"
    ws.repo = repo
    ws.factory = workspace
    return ws


def test_lead_times_from_the_recorded_commits_and_provenance(shop: Any) -> None:
    m = metrics_from_workspace(shop)
    dep = m.deployments
    assert dep["label"].tolist() == ["1", "2"] and dep["outcome"].tolist() == ["succeeded", "succeeded"]
    stages = shop.frames.stage_runs
    deployed = stages.loc[stages["pipeline"] == "prod"].sort_values("run_id")["finished_at"].tolist()
    assert dep["deployed_at"].tolist() == deployed
    lt = m.lead_times.set_index("sha")
    commits = shop.frames.commits.drop_duplicates("sha").set_index("message")
    first = commits.loc["first change"]
    # the first change (07:00 UTC) shipped with prod/1; the second with prod/2
    assert first["commit_time"] == pd.Timestamp("2024-03-04T07:00:00Z")
    assert lt.loc[first["sha"], "lead_time"] == deployed[0] - first["commit_time"]
    second = commits.loc["second change"]
    assert lt.loc[second["sha"], "deployment_run_id"] == dep["run_id"].iloc[1]
    assert lt.loc[second["sha"], "lead_time"] == deployed[1] - pd.Timestamp("2024-03-05T09:30:00Z")


def test_incident_api_blames_a_deployment_and_hotfix_marks_rework(shop: Any) -> None:
    inc = open_incident(shop, "500s on checkout", caused_by="prod/1", severity="critical", user="alice")
    assert inc.caused_by == "prod/1" and inc.open and inc.opened_by == "alice"
    mark_hotfix(shop, "prod/2", incident=inc.id, user="alice")
    with pytest.raises(InvalidState, match="already marked hotfix"):
        mark_hotfix(shop, "prod/2")
    done = resolve_incident(shop, inc.id, user="bob")
    assert not done.open and done.resolved_by == "bob"
    with pytest.raises(InvalidState, match="already resolved by bob"):
        resolve_incident(shop, inc.id)
    with pytest.raises(NotFound):
        open_incident(shop, "x", caused_by="prod/9")
    with pytest.raises(UsageError, match="severity"):
        open_incident(shop, "x", severity="apocalyptic")
    mark_unplanned(shop, "prod/1")
    frames = shop.frames
    assert frames.incidents.loc[0, "caused_by"] == "prod/1"
    assert frames.incidents.loc[0, "duration"] > pd.Timedelta(0)
    assert sorted(frames.deployment_marks["mark"]) == ["hotfix", "unplanned"]
    s = metrics_from_workspace(shop).summary.loc["all"]
    assert s["change_fail_rate"] == 0.5 and s["failed_changes"] == 1  # prod/1 blamed, counted once
    assert s["rework_rate"] == 1.0  # prod/2 hotfix, prod/1 unplanned
    assert s["recovered"] == 1  # prod/1 recovered by the hotfix deployment
    late = open_incident(shop, "late", opened_at="2099-01-01")  # no caused_by: the latest deployment before it
    with pytest.raises(UsageError, match="before it was opened"):
        resolve_incident(shop, late.id)
    assert [i.title for i in list_incidents(shop, open_only=True)] == ["late"]
    s = metrics_from_workspace(shop).summary.loc["all"]
    assert s["change_fail_rate"] == 1.0 and s["unrecovered"] == 1  # prod/2 now blamed, still open


def test_cli_incidents_marks_and_metrics(shop: Any) -> None:
    cli = shop.factory.cli
    r = cli("incident", "open", "checkout slow", "--caused-by", "prod/1", "--at", "2024-03-04T12:00:00+00:00")
    assert r.code == 0 and "incident 1 opened: checkout slow (major, caused by prod/1)" in r.out, r.err
    r = cli("incident", "list", "--format", "json")
    rows = json.loads(r.out)
    assert rows[0]["caused_by"] == "prod/1" and rows[0]["status"] == "open"
    assert rows[0]["opened_at"] == "2024-03-04T12:00:00+00:00"
    r = cli("mark", "prod/2", "hotfix", "--incident", "1")
    assert r.code == 0 and "prod/2 marked hotfix (incident 1)" in r.out
    assert cli("mark", "prod/2", "hotfix").code == 2
    r = cli("incident", "resolve", "1")
    assert r.code == 0 and "resolved after" in r.out
    r = cli("incident", "resolve", "1")
    assert r.code == 2 and "already resolved" in r.err and "Traceback" not in r.err
    r = cli("incident", "open", "x", "--caused-by", "nope/1")
    assert r.code == 2 and "Traceback" not in r.err
    r = cli("metrics", "--format", "json", "--stages")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    s = out["summary"]["all"]
    assert (s["deployments"], s["failed_changes"], s["rework_deployments"]) == (2, 1, 1)
    assert out["production"] == {"prod": ["deploy"]}
    assert out["bands"] == "DORA 2024 Accelerate State of DevOps Report"
    assert {r["stage"] for r in out["stages"]} == {"build", "deploy"}
    r = cli("metrics", "--by", "pipeline")
    assert r.code == 0 and "Deployment frequency" in r.out and "prod" in r.out
    assert cli("metrics", "--by", "colour").code == 2
    r = cli("metrics", "--since", "not a date")
    assert r.code == 2 and "bad period" in r.err and "Traceback" not in r.err


def test_export_round_trip_gives_the_same_metrics(shop: Any, tmp_path: Path) -> None:
    open_incident(shop, "slow", caused_by="prod/1", user="alice")
    live = metrics_from_workspace(shop)
    for target, fmt in ((tmp_path / "h.zip", None), (tmp_path / "h.csv.zip", None), (tmp_path / "folder", "csv")):
        manifest = export(shop, target, fmt=fmt)
        assert manifest["format"] == ("parquet" if target.name == "h.zip" else "csv")
        assert manifest["frames"]["pipeline_runs"]["rows"] == 4
        snap = Snapshot(target)
        assert "config_stages" in snap.names() and "incidents" in snap.names()
        runs = snap.frames.pipeline_runs
        assert str(runs["created_at"].dt.tz) == "UTC"
        assert pd.api.types.is_timedelta64_dtype(runs["duration"].dtype)
        assert isinstance(runs.loc[runs["pipeline"] == "app", "revisions"].iloc[0], dict)
        again = metrics_from_workspace(target)
        pd.testing.assert_frame_equal(again.summary, live.summary, check_dtype=False)
        pd.testing.assert_frame_equal(again.lead_times.reset_index(drop=True), live.lead_times, check_dtype=False)
        assert again.rule.points == {"prod": ("deploy",)}
        snap.close()
    with zipfile.ZipFile(tmp_path / "h.zip") as z:
        assert "manifest.json" in z.namelist() and "job_runs.parquet" in z.namelist()
    with pytest.raises(UsageError, match="exists"):
        export(shop, tmp_path / "h.zip")
    r = shop.factory.cli("metrics", "--from", str(tmp_path / "h.zip"), "--format", "json")
    assert r.code == 0 and json.loads(r.out)["summary"]["all"]["deployments"] == 2
    r = shop.factory.cli("export", str(tmp_path / "cli.zip"))
    assert r.code == 0 and "as parquet" in r.out


def test_report_is_one_self_contained_html_without_secrets(shop: Any, tmp_path: Path) -> None:
    secret = "s3cr3t-value-that-must-not-leak"
    out = tmp_path / "report.html"
    r = shop.factory.cli("report", "--label", "2", "-o", str(out), env={"DEPLOY_TOKEN": secret}, timeout=280)
    assert r.code == 0, r.err[-2000:]
    html = out.read_text()
    assert "Post-release analysis" in html and "DORA" in html
    assert "release <strong>2</strong> (prod #2)" in html
    assert secret not in html
    assert '<script src="http' not in html and "<link rel=\"stylesheet\" href=\"http" not in html
    assert "Plotly.newPlot" in html  # charts carry plotly.js inline
    assert "NaT" not in html and ">NaN<" not in html  # a reader sees a dash (issue 19 item 5)
    assert "IPKernelApp" not in r.err and "KeyboardInterrupt" not in r.err  # no kernel chatter on success
    assert r.err.strip() == "", r.err
    from workbench.metrics.analysis import find_release

    with pytest.raises(NotFound, match="no production deployment labelled 'nope'"):
        find_release(metrics_from_workspace(shop), "nope")  # the notebook's first cell fails with this


def test_metrics_of_a_workspace_without_production_say_so(workspace: Any) -> None:
    workspace.write("p.yaml", """
        format_version: 10
        pipelines:
          p:
            stages:
              - s: {jobs: {j: {tasks: [{exec: {command: "true"}}]}}}
        """)
    ws = workspace.open()
    ws.run("p")
    m = Metrics(*__import__("workbench.metrics", fromlist=["load"]).load(ws))
    assert m.deployments.empty and m.summary.loc["all", "deployments"] == 0
    r = workspace.cli("metrics")
    assert r.code == 0 and "no production deployments are declared" in r.err


def test_an_incident_without_caused_by_blames_the_release_serving_when_it_opened(workspace: Any, tmp_path: Path) -> None:
    """Issue 16 defect 8: not the latest finished deployment while a newer one is live at 50%."""
    import sys

    import yaml

    from workbench.approvals import approve
    from workbench.metrics_store import open_incident

    lb = tmp_path / "lb.py"
    lb.write_text("pass\n")
    doc = {"format_version": 10, "roles": {"rm": ["alice"]},
           "routes": {"shop": {"provider": "command", "stacks": {"blue": "b:1", "green": "g:1"},
                               "argv": [sys.executable, str(lb)]}},
           "environments": {"production": {"production": True, "pipelines": ["release"]}},
           "pipelines": {"release": {"group": "shop", "rollout": {"route": "shop", "steps": [50, 100],
                                                                  "approval": {"type": "manual", "roles": ["rm"]}},
                                     "stages": [{"build": {"jobs": {"b": {"tasks": [{"exec": {"command": "true"}}]}}}}]}}}
    workspace.write("r.yaml", yaml.safe_dump(doc, sort_keys=False))
    ws = workspace.open()
    first = ws.run("release")
    for step in (50, 100):
        approve(ws, f"release/{first.counter}/install_shop_{step}", user="alice")
    second = ws.run("release")
    run2 = approve(ws, f"release/{second.counter}/install_shop_50", user="alice")
    assert run2.status == Status.WAITING  # live at 50%, waiting for its 100% step
    inc = open_incident(ws, "checkout errors", user="alice")
    blamed = metrics_from_workspace(ws).incidents.set_index("incident_id").loc[inc.id, "deployment_run_id"]
    assert blamed == second.id, (blamed, first.id, second.id)
    approve(ws, f"release/{second.counter}/install_shop_100", user="alice")
    dep = metrics_from_workspace(ws).deployments.set_index("run_id")
    assert dep.loc[second.id, "incidents"] == 1 and bool(dep.loc[second.id, "failed_change"])
    assert dep.loc[first.id, "incidents"] == 0


def test_a_first_run_records_every_commit_it_brings(workspace: Any, git_repo: Any) -> None:
    """Issue 16 defect 7: the first run recorded only the head commit, so lead times lost the others."""
    from workbench.materials.git import FIRST_RUN_COMMITS
    from workbench.triggering import tick

    repo = git_repo("app")
    for i in range(4):
        repo.commit({f"f{i}.txt": str(i)}, f"change {i}", date=f"2026-11-0{i + 1}T10:00:00+00:00")
    workspace.write("p.yaml", f"""
        format_version: 10
        environments:
          production: {{production: true, pipelines: [deploy]}}
        pipelines:
          deploy:
            group: g
            materials:
              app: {{git: {repo.url}}}
            stages:
              - install: {{jobs: {{i: {{tasks: [{{exec: {{command: "true"}}}}]}}}}}}
        """)
    ws = workspace.open()
    tick(ws)
    commits = ws.frames.commits
    assert len(commits) == 5 and commits["sha"].nunique() == 5  # the initial commit and the four changes
    lead = metrics_from_workspace(ws).lead_times
    assert int(lead["counted"].sum()) == 5
    assert FIRST_RUN_COMMITS >= 100  # the bound docs/metrics.md names
