"""The CLI as a client of the release service: with ``server.url`` every acting command goes through the API.

A real ``workbench server`` on a loopback port; the CLI runs as real
processes. The identity is the token's, whatever ``$JUPYTERHUB_USER`` says.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from server_fixtures import make_token

PIPELINE = """
format_version: 10
roles:
  qa: [carol]
pipelines:
  app:
    group: shop
    materials: {}
    stages:
      - build:
          jobs:
            compile: {tasks: [{exec: {command: "true"}}]}
      - qa:
          approval: {type: manual, roles: [qa]}
          jobs:
            deploy: {tasks: [{script: "echo deployed"}]}
"""


def _wait_status(ws_root: Path, want: str, timeout: float = 30) -> dict:
    from workbench import Workspace

    deadline = time.monotonic() + timeout
    while True:
        with Workspace.open(ws_root) as ws:
            run = ws.store.pipeline_runs("app", limit=1)[0]
        if run.status.value == want or time.monotonic() > deadline:
            return {"status": run.status.value, "counter": run.counter}
        time.sleep(0.1)


def test_cli_acts_through_the_server_as_the_tokens_user(workspace, server_factory) -> None:
    workspace.write("app.gocd.yaml", PIPELINE)
    assert workspace.cli("run", "app", "-q").code == 0  # waits at qa
    srv = server_factory(workspace.root)
    (workspace.root / "workbench.yaml").write_text(f"server:\n  url: {srv.url}\n")
    carol = make_token(workspace.root, "carol")

    # no token: $JUPYTERHUB_USER is not believed; exit 3 (not signed in), nothing changes, the attempt audited
    r = workspace.cli("approve", "app/1/qa", env={"JUPYTERHUB_USER": "carol", "WORKBENCH_TOKEN": "",
                                                  "JUPYTERHUB_API_TOKEN": ""})
    assert r.code == 3, r
    assert "not_signed_in" in r.err or "sign in" in r.err
    assert "Traceback" not in r.err
    assert _wait_status(workspace.root, "waiting", timeout=0)["status"] == "waiting"

    # reads go through the server too
    r = workspace.cli("approvals", "--format", "json", env={"WORKBENCH_TOKEN": carol})
    assert r.code == 0, r
    assert [a["locator"] for a in json.loads(r.out)] == ["app/1/qa"]

    r = workspace.cli("approve", "app/1/qa", "-m", "checked", env={"WORKBENCH_TOKEN": carol,
                                                                     "JUPYTERHUB_USER": "mallory"})
    assert r.code == 0, r
    assert "approved app/1/qa as carol" in r.out and "release service continues" in r.out
    assert _wait_status(workspace.root, "passed")["status"] == "passed"  # the server drove it

    r = workspace.cli("audit", "--format", "json", env={"WORKBENCH_TOKEN": carol})
    rows = json.loads(r.out)
    ok = [a for a in rows if a["action"] == "approve" and a["outcome"] == "ok"]
    assert [(a["user"], a["comment"]) for a in ok] == [("carol", "checked")]
    refused = [a for a in rows if a["action"] == "approve" and a["outcome"] == "unauthorized"]
    assert refused and refused[0]["user"] == "(not signed in)"

    # approving twice: 409 on the wire, exit 2 here, as locally
    r = workspace.cli("approve", "app/1/qa", env={"WORKBENCH_TOKEN": carol})
    assert r.code == 2 and "already approved by carol" in r.err, r

    # trigger through the server: the server runs it to the approval
    r = workspace.cli("trigger", "app", env={"WORKBENCH_TOKEN": carol})
    assert r.code == 0 and "triggered app/2" in r.out, r
    assert _wait_status(workspace.root, "waiting")["counter"] == 2

    # a read token may look but not act (403, exit 3)
    reader = make_token(workspace.root, "carol", scope="read")
    r = workspace.cli("reject", "app/2/qa", "-m", "no", env={"WORKBENCH_TOKEN": reader})
    assert r.code == 3 and "read scope" in r.err, r

    # --local bypasses the server (the server's own account, maintenance)
    r = workspace.cli("--local", "status", "--format", "json")
    assert r.code == 0 and json.loads(r.out)[0]["counter"] == 2


def test_cli_says_when_the_server_does_not_answer(workspace) -> None:
    workspace.write("app.gocd.yaml", PIPELINE)
    r = workspace.cli("status", env={"WORKBENCH_SERVER": "http://127.0.0.1:9", "WORKBENCH_TOKEN": "wb_1_x"})
    assert r.code == 4, r
    assert "does not answer" in r.err and "Traceback" not in r.err
