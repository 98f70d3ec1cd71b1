"""GoCD's pause through real processes: the CLI, `workbench tick` on a real git material, a real server."""
from __future__ import annotations

import json
from typing import Any

import pytest
from materials_fixtures import git_material, pipeline, runs, write
from server_fixtures import make_token

pytestmark = pytest.mark.timeout(240)


def test_a_paused_pipeline_triggers_nothing_until_unpaused(workspace: Any, git_repo: Any) -> None:
    repo = git_repo("app")
    ws = write(workspace, pipeline("app", {"code": git_material(repo.url)}))
    assert workspace.cli("tick").code == 0  # app/1 from the first commit
    assert [r.counter for r in runs(ws, "app")] == [1]

    r = workspace.cli("pause", "app", "-m", "db migration in progress", env={"JUPYTERHUB_USER": "carol"})
    assert r.code == 0, r
    assert "app paused by" in r.out
    who = ws.frames.pauses.iloc[-1]["by"]

    repo.commit({"a.txt": "1"}, "a change while paused")
    r = workspace.cli("tick")
    assert r.code == 0, r
    assert [r.counter for r in runs(ws, "app")] == [1]  # the commit triggered nothing

    status = json.loads(workspace.cli("status", "--format", "json").out)
    row = next(x for x in status if x["pipeline"] == "app")
    assert row["paused"] is True and row["pause"]["by"] == who
    assert row["pause"]["reason"] == "db migration in progress" and row["pause"]["since"]
    table = workspace.cli("status").out
    assert "paused" in table and "db migration in progress" in table

    # GoCD: a paused pipeline cannot be triggered by hand either; the refusal says who and why
    r = workspace.cli("trigger", "app")
    assert r.code == 2, r
    assert f"paused by {who}" in r.err and "db migration in progress" in r.err and "Traceback" not in r.err
    r = workspace.cli("run", "app", "-q")
    assert r.code == 2, r
    assert [r.counter for r in runs(ws, "app")] == [1]

    r = workspace.cli("pause", "app", "-m", "again")
    assert r.code == 2 and "already paused" in r.err

    assert workspace.cli("unpause", "app").code == 0
    r = workspace.cli("unpause", "app")
    assert r.code == 2 and "not paused" in r.err
    assert workspace.cli("tick").code == 0
    app = runs(ws, "app")
    assert [r.counter for r in app] == [1, 2] and app[1].revisions["code"]["revision"] == repo.head

    pauses = ws.frames.pauses
    assert list(pauses["action"]) == ["pause", "unpause"]
    audit = ws.frames.audit
    mine = audit[audit["action"].isin(["pause", "unpause"])]
    assert list(mine["outcome"]) == ["ok", "refused", "ok", "refused"]


def test_pause_through_the_server_with_the_client(workspace: Any, git_repo: Any, server_factory: Any) -> None:
    from workbench import Client
    from workbench.errors import InvalidState

    repo = git_repo("app")
    ws = write(workspace, pipeline("app", {"code": git_material(repo.url)}))
    srv = server_factory(workspace.root)
    carol = make_token(workspace.root, "carol")
    client = Client(srv.url, carol)

    done = client.pause("app", "freeze for the audit")
    assert done["paused_by"] == "carol" and done["pause_reason"] == "freeze for the audit"
    board = {row["pipeline"]: row for row in client.board()}
    assert board["app"]["pause"]["by"] == "carol" and board["app"]["pause"]["reason"] == "freeze for the audit"
    with pytest.raises(InvalidState, match="already paused by carol"):
        client.pause("app", "twice")
    with pytest.raises(InvalidState, match="paused by carol: freeze for the audit"):
        client.trigger("app")
    assert [r for r in runs(ws, "app") if r.triggered_by == "carol"] == []  # (the server's own poll may have run app/1)
    assert client.unpause("app")["was_paused_by"] == "carol"
    with pytest.raises(InvalidState, match="not paused"):
        client.unpause("app")
    assert client.board()[0]["paused"] is False
    client.close()


def test_the_dashboard_board_says_who_paused_a_pipeline_and_why() -> None:
    from workbench.dashboard import data

    rows = [data.BoardRow("app", "g", (data.BoardRun(0, 0, "never run", "not run", (), None),))]
    html = data.board_html(rows, {"app": "paused by carol: <freeze>"})
    assert 'class="wb-paused"' in html and "paused by carol: &lt;freeze&gt;" in html
    assert "wb-paused" not in data.board_html(rows)
