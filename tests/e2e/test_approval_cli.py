"""Approvals, rejections, rollback, traffic and audit through the `workbench` CLI, as people use it.

The acting identity is $JUPYTERHUB_USER, as under JupyterHub; there is no flag
to claim another one.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(180)

PIPELINE = """
format_version: 10
roles:
  qa: [carol]
  release-managers: [alice, bob]
routes:
  shop:
    provider: command
    stacks: {{blue: "blue:80", green: "green:80"}}
    argv: ["{python}", "{lb}"]
pipelines:
  qa-deploy:
    group: shop
    stages:
      - install_50:
          traffic: {{route: shop, weight: 50}}
          jobs:
            install: {{tasks: [{{script: echo installing}}]}}
      - install_100:
          approval: {{type: manual, roles: [qa]}}
          traffic: {{route: shop, weight: 100}}
          jobs:
            install: {{tasks: [{{script: echo installing}}]}}
  prod:
    group: shop
    rollout:
      route: shop
      steps: [5, 50, 100]
      approval: {{type: manual, users: [alice], roles: [release-managers]}}
    stages:
      - package:
          jobs:
            build: {{tasks: [{{exec: {{command: "true"}}}}]}}
"""


def as_user(user: str) -> dict[str, str]:
    return {"JUPYTERHUB_USER": user}


@pytest.fixture
def ws(workspace: Any, tmp_path: Path) -> Any:
    lb = tmp_path / "lb.py"
    lb.write_text("import sys, json\nopen(sys.argv[0] + '.weights', 'w').write(json.dumps(sys.argv[2:]))\n")
    workspace.write("shop.yaml", PIPELINE.format(python=sys.executable, lb=lb))
    workspace.lb_weights = Path(str(lb) + ".weights")
    return workspace


def audit(ws: Any) -> list[dict[str, Any]]:
    r = ws.cli("audit", "--format", "json")
    assert r.code == 0, r.err
    return list(reversed(json.loads(r.out)))  # oldest first


def test_run_stops_at_a_manual_stage_naming_who_may_approve(ws: Any) -> None:
    r = ws.cli("run", "qa-deploy", env=as_user("dave"))
    assert r.code == 0, r.err
    assert "qa-deploy/1 (label 1): waiting" in r.out
    assert "stage install_100 awaits approval by role qa" in r.out
    assert "approve: workbench approve qa-deploy/1/install_100" in r.out
    assert ws.lb_weights.read_text() == '["blue=50", "green=50"]'
    r = ws.cli("approvals", "--format", "json")
    [row] = json.loads(r.out)
    assert row["locator"] == "qa-deploy/1/install_100" and row["may_approve"] == ["carol"]
    r = ws.cli("status", "--format", "json")
    [qa] = [p for p in json.loads(r.out) if p["pipeline"] == "qa-deploy"]
    assert qa["status"] == "waiting" and [s["status"] for s in qa["stages"]] == ["passed", "waiting"]


def test_approve_continues_the_run(ws: Any) -> None:
    ws.cli("run", "qa-deploy")
    r = ws.cli("approve", "qa-deploy/1/install_100", "--comment", "QA signed off", env=as_user("carol"))
    assert r.code == 0, r.err
    assert "approved qa-deploy/1/install_100 as carol" in r.out and "qa-deploy/1 (label 1): passed" in r.out
    assert ws.lb_weights.read_text() == '["blue=0", "green=100"]'
    [row] = audit(ws)
    assert (row["user"], row["action"], row["target"], row["comment"], row["outcome"]) == (
        "carol", "approve", "qa-deploy/1/install_100", "QA signed off", "ok")


def test_reject_ends_the_run(ws: Any) -> None:
    ws.cli("run", "qa-deploy")
    r = ws.cli("reject", "qa-deploy/1/install_100", env=as_user("carol"))
    assert r.code == 2 and "--comment" in r.err  # a rejection must say why
    r = ws.cli("reject", "qa-deploy/1/install_100", "-m", "checkout broken on green", env=as_user("carol"))
    assert r.code == 0, r.err
    assert "qa-deploy/1: rejected" in r.out
    r = ws.cli("history", "--format", "json")
    [run] = [h for h in json.loads(r.out) if h["pipeline"] == "qa-deploy"]
    assert run["status"] == "rejected" and run["reason"] == "stage install_100 rejected by carol: checkout broken on green"


def test_unauthorized_is_exit_3_and_audited(ws: Any) -> None:
    ws.cli("run", "qa-deploy")
    for cmd in (["approve", "qa-deploy/1/install_100"], ["reject", "qa-deploy/1/install_100", "-m", "no"]):
        r = ws.cli(*cmd, env=as_user("alice"))  # a release manager, but this stage is QA's
        assert r.code == 3, (cmd, r)
        assert "alice may not" in r.err and "role qa (carol)" in r.err and "Traceback" not in r.err
    rows = audit(ws)
    assert [(a["user"], a["action"], a["outcome"]) for a in rows] == [
        ("alice", "approve", "unauthorized"), ("alice", "reject", "unauthorized")]
    r = ws.cli("approvals", "--format", "json")
    assert json.loads(r.out)[0]["locator"] == "qa-deploy/1/install_100"  # still waiting


def test_double_approval_and_other_invalid_attempts_are_exit_2(ws: Any) -> None:
    ws.cli("run", "qa-deploy")
    assert ws.cli("approve", "qa-deploy/1/install_100", env=as_user("carol")).code == 0
    r = ws.cli("approve", "qa-deploy/1/install_100", env=as_user("carol"))
    assert r.code == 2 and "already approved by carol" in r.err
    r = ws.cli("approve", "qa-deploy/1/install_50", env=as_user("carol"))
    assert r.code == 2 and "not waiting for approval" in r.err
    r = ws.cli("approve", "qa-deploy/7/install_100", env=as_user("carol"))
    assert r.code == 2 and "no run qa-deploy/7" in r.err


def test_concurrent_approvals_from_two_processes_exactly_one_wins(ws: Any) -> None:
    ws.cli("run", "prod")
    env = {**os.environ, "WORKBENCH_WORKSPACE": str(ws.root)}
    results: dict[str, subprocess.CompletedProcess[str]] = {}
    procs = {u: subprocess.Popen([sys.executable, "-m", "workbench", "approve", "prod/1/install_shop_5"],
                                 env={**env, "JUPYTERHUB_USER": u}, cwd=ws.root, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for u in ("alice", "bob")}

    def wait(u: str) -> None:
        out, err = procs[u].communicate(timeout=120)
        results[u] = subprocess.CompletedProcess(procs[u].args, procs[u].returncode, out, err)

    threads = [threading.Thread(target=wait, args=(u,)) for u in procs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.returncode for r in results.values())
    assert codes == [0, 2], {u: (r.returncode, r.stderr) for u, r in results.items()}
    [winner] = [u for u, r in results.items() if r.returncode == 0]
    [loser] = [r for r in results.values() if r.returncode == 2]
    assert f"already approved by {winner}" in loser.stderr
    r = ws.cli("history", "--format", "json")
    [run] = json.loads(r.out)
    names = [s["name"] for s in run["stages"]]
    assert names == ["package", "install_shop_5", "install_shop_50"]  # the step ran once, the next one waits
    assert [a["outcome"] for a in audit(ws)].count("ok") == 1


def test_rollback_and_traffic_commands(ws: Any) -> None:
    assert ws.cli("run", "prod").code == 0
    assert ws.cli("approve", "prod/1/install_shop_5", env=as_user("bob")).code == 0
    r = ws.cli("traffic", "--format", "json")
    [row] = json.loads(r.out)
    assert row["weights"] == {"blue": 95, "green": 5} and row["candidate"] == "green" and row["run"] == "prod/1"
    r = ws.cli("traffic", "shop", "--set", "20", env=as_user("mallory"))
    assert r.code == 3 and "mallory may not traffic route:shop" in r.err
    r = ws.cli("rollback", "prod/1", "--reason", "error budget", env=as_user("carol"))
    assert r.code == 3, r  # QA may not roll back production: only prod's approvers may
    r = ws.cli("rollback", "prod/1", "--reason", "error budget burnt", env=as_user("alice"))
    assert r.code == 0, r.err
    assert "route shop: blue=95% green=5% -> blue=100% green=0%" in r.out
    assert ws.lb_weights.read_text() == '["blue=100", "green=0"]'
    r = ws.cli("approve", "prod/1/install_shop_50", env=as_user("alice"))
    assert r.code == 2 and "cancelled" in r.err
    r = ws.cli("traffic")
    assert r.code == 0 and "shop" in r.out and "blue=100%" in r.out
    actions = [(a["user"], a["action"], a["outcome"]) for a in audit(ws)]
    assert actions == [("bob", "approve", "ok"), ("mallory", "traffic", "unauthorized"),
                       ("carol", "rollback", "unauthorized"), ("alice", "rollback", "ok"), ("alice", "approve", "refused")]


def test_rollback_after_100_is_refused(ws: Any) -> None:
    ws.cli("run", "prod")
    for w in (5, 50, 100):
        assert ws.cli("approve", f"prod/1/install_shop_{w}", "-q", env=as_user("alice")).code == 0
    r = ws.cli("rollback", "prod/1", env=as_user("alice"))
    assert r.code == 2 and "refused after 100%" in r.err and "release a new version" in r.err
    assert ws.lb_weights.read_text() == '["blue=0", "green=100"]'
    r = ws.cli("traffic", "shop", "--set", "10", "-m", "manual canary", env=as_user("bob"))
    assert r.code == 0 and "blue=10% green=90%" in r.out  # the next candidate is the idle stack, blue
