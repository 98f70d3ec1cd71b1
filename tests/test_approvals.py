"""Manual approvals, rejections, roles and the one authorization path (Python API).

The CLI paths are in tests/e2e/test_approval_cli.py; both end in the same
``workbench.approvals.authorize``.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from workbench.approvals import approve, approvers, authorize, may, pending_approvals, reject
from workbench.config.model import Approval, Config, Job, Pipeline, ScriptTask, Stage
from workbench.errors import InvalidState, NotFound, Unauthorized, UsageError
from workbench.status import Status

pytestmark = pytest.mark.timeout(180)

PIPELINE = """
format_version: 10
roles:
  qa: [carol, dave]
  release-managers: [alice, bob]
  empty-role: []
pipelines:
  rel:
    group: shop
    stages:
      - build:
          jobs:
            compile: {{tasks: [{{exec: {{command: "true"}}}}]}}
      - deploy:
          approval: {approval}
          jobs:
            install: {{tasks: [{{exec: {{command: "true"}}}}]}}
      - smoke:
          jobs:
            check: {{tasks: [{{exec: {{command: "true"}}}}]}}
"""

MANUAL = "{type: manual, users: [erin], roles: [release-managers]}"


def waiting_ws(workspace: Any, approval: str = MANUAL) -> Any:
    """A workspace whose pipeline ``rel`` ran to its manual stage ``deploy`` and waits there."""
    workspace.write("rel.yaml", PIPELINE.format(approval=approval))
    ws = workspace.open()
    run = ws.run("rel")
    assert run.status == Status.WAITING
    return ws


def stage_status(ws: Any, name: str, counter: int = 1) -> Status:
    run = ws.store.get_pipeline_run("rel", counter)
    return ws.store.run_detail(run).latest_stages()[name].status


def audit_rows(ws: Any) -> list[dict[str, Any]]:
    return ws.frames.audit.to_dict("records")


# -- who may approve (pure) ---------------------------------------------------------

CFG = Config(roles={"qa": ("carol", "dave"), "release-managers": ("alice", "bob"), "empty-role": ()})


@pytest.mark.parametrize(
    "approval, user, allowed",
    [
        (Approval("manual", users=("erin",)), "erin", True),  # named user
        (Approval("manual", users=("erin",)), "alice", False),  # not named
        (Approval("manual", roles=("qa",)), "carol", True),  # member of the role
        (Approval("manual", roles=("qa",)), "alice", False),  # member of another role
        (Approval("manual", users=("erin",), roles=("qa",)), "erin", True),  # user when both are given
        (Approval("manual", users=("erin",), roles=("qa",)), "dave", True),  # role member when both are given
        (Approval("manual", users=("erin",), roles=("qa",)), "mallory", False),
        (Approval("manual", roles=("qa", "release-managers")), "bob", True),  # any of several roles
        (Approval("manual", roles=("empty-role",)), "alice", False),  # a role with nobody
        (Approval("manual", roles=("undefined",)), "alice", False),  # a role the config does not define
        (Approval("manual"), "anybody", True),  # nobody named: open, as in GoCD without group permissions
        (Approval("manual", users=("Erin",)), "erin", False),  # names are exact
    ],
)
def test_who_may_approve(approval: Approval, user: str, allowed: bool) -> None:
    assert may(CFG, approval, user) is allowed


def test_pipeline_level_approvers_are_the_union_of_its_manual_stages() -> None:
    job = (Job("j", (ScriptTask("true"),)),)
    p = Pipeline("p", (
        Stage("a", job),
        Stage("b", job, approval=Approval("manual", users=("erin",))),
        Stage("c", job, approval=Approval("manual", roles=("qa",))),
        Stage("d", job, approval=Approval("success", users=("zed",))),  # not manual: does not count
    ))
    who = approvers(CFG, p)
    assert who.members == {"erin", "carol", "dave"} and not who.anyone
    assert "role qa (carol, dave)" in who.describe(CFG)
    assert approvers(CFG, Pipeline("q", (Stage("a", job),))).anyone


# -- approve through the Python API ---------------------------------------------------


@pytest.mark.parametrize("user", ["erin", "alice", "bob"])
def test_authorized_approval_continues_the_run(workspace: Any, user: str) -> None:
    ws = waiting_ws(workspace)
    run = approve(ws, "rel/1/deploy", user=user, comment="looks good")
    assert run.status == Status.PASSED
    stages = ws.frames.stage_runs.set_index("stage")
    assert stages.loc["deploy", "approved_by"] == user
    assert stages.loc["smoke", "status"] == "passed"
    rows = ws.frames.approvals.to_dict("records")
    assert [(r["user"], r["action"], r["target"], r["comment"], r["outcome"]) for r in rows] == [
        (user, "approve", "rel/1/deploy", "looks good", "ok")]
    assert str(rows[0]["at"].tz) == "UTC"


@pytest.mark.parametrize("user", ["carol", "mallory", "root"])
def test_unauthorized_approval_is_refused_audited_and_changes_nothing(workspace: Any, user: str) -> None:
    ws = waiting_ws(workspace)
    with pytest.raises(Unauthorized) as err:
        approve(ws, "rel/1/deploy", user=user, comment="let me")
    assert err.value.exit_code == 3
    assert f"{user} may not approve rel/1/deploy" in str(err.value)
    assert "erin" in str(err.value) and "role release-managers (alice, bob)" in str(err.value)
    assert stage_status(ws, "deploy") == Status.WAITING
    assert ws.store.get_pipeline_run("rel", 1).status == Status.WAITING
    [row] = audit_rows(ws)
    assert (row["user"], row["action"], row["outcome"], row["comment"]) == (user, "approve", "unauthorized", "let me")


def test_unauthorized_rejection_is_refused_too(workspace: Any) -> None:
    ws = waiting_ws(workspace)
    with pytest.raises(Unauthorized):
        reject(ws, "rel/1/deploy", user="carol", comment="no")
    assert stage_status(ws, "deploy") == Status.WAITING
    assert [r["outcome"] for r in audit_rows(ws)] == ["unauthorized"]


def test_identity_comes_from_jupyterhub_user(workspace: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = waiting_ws(workspace)
    monkeypatch.setenv("JUPYTERHUB_USER", "mallory")
    with pytest.raises(Unauthorized, match="mallory may not"):
        approve(ws, "rel/1/deploy")
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    assert approve(ws, "rel/1/deploy").status == Status.PASSED
    assert [(r["user"], r["outcome"]) for r in audit_rows(ws)] == [("mallory", "unauthorized"), ("alice", "ok")]


def test_open_approval_lets_anyone_approve(workspace: Any) -> None:
    ws = waiting_ws(workspace, "manual")
    assert approve(ws, "rel/1/deploy", user="whoever").status == Status.PASSED


def test_role_only_approval(workspace: Any) -> None:
    ws = waiting_ws(workspace, "{type: manual, roles: [qa]}")
    with pytest.raises(Unauthorized):
        approve(ws, "rel/1/deploy", user="alice")
    assert approve(ws, "rel/1/deploy", user="dave").status == Status.PASSED


# -- invalid attempts change nothing ---------------------------------------------------


def test_approving_twice_is_a_clear_error(workspace: Any) -> None:
    ws = waiting_ws(workspace)
    approve(ws, "rel/1/deploy", user="alice")
    with pytest.raises(InvalidState, match="already approved by alice"):
        approve(ws, "rel/1/deploy", user="bob")
    stages = ws.frames.stage_runs
    assert list(stages["stage"]) == ["build", "deploy", "smoke"]  # nothing ran twice
    assert stages.set_index("stage").loc["deploy", "approved_by"] == "alice"
    assert [(r["user"], r["outcome"]) for r in audit_rows(ws)] == [("alice", "ok"), ("bob", "refused")]


def test_approving_a_stage_that_is_not_waiting(workspace: Any) -> None:
    ws = waiting_ws(workspace)
    with pytest.raises(InvalidState, match="smoke of rel/1 is not waiting"):
        approve(ws, "rel/1/smoke", user="alice")  # not reached
    with pytest.raises(InvalidState, match="build of rel/1 is passed, not waiting"):
        approve(ws, "rel/1/build", user="alice")  # an automatic stage that ran
    assert stage_status(ws, "deploy") == Status.WAITING


def test_approving_a_cancelled_run(workspace: Any) -> None:
    ws = waiting_ws(workspace)
    run = ws.store.get_pipeline_run("rel", 1)
    ws.store.set_pipeline_status(run.id, Status.CANCELLED, "cancelled by alice")
    with pytest.raises(InvalidState, match="was cancelled"):
        approve(ws, "rel/1/deploy", user="alice")
    assert stage_status(ws, "deploy") == Status.WAITING


def test_unknown_run_stage_and_bad_locators(workspace: Any) -> None:
    ws = waiting_ws(workspace)
    with pytest.raises(NotFound, match="no run rel/9"):
        approve(ws, "rel/9/deploy", user="alice")
    with pytest.raises(NotFound, match="has no stage 'deplyo'"):
        approve(ws, "rel/1/deplyo", user="alice")
    with pytest.raises(NotFound, match="PIPELINE/COUNTER/STAGE"):
        approve(ws, "rel/1", user="alice")


def test_allow_only_on_success_refuses_after_the_previous_stage_failed(workspace: Any) -> None:
    ws = waiting_ws(workspace, "{type: manual, users: [alice], allow_only_on_success: true}")
    run = ws.store.get_pipeline_run("rel", 1)
    # the previous stage was rerun and failed meanwhile (its latest counter is what counts)
    rerun, _ = ws.store.create_stage_run(run.id, "build", 0, status=Status.FAILED)
    with pytest.raises(InvalidState, match="only on success.*build is failed"):
        approve(ws, "rel/1/deploy", user="alice")
    assert stage_status(ws, "deploy") == Status.WAITING


def test_concurrent_approvals_exactly_one_wins(workspace: Any) -> None:
    ws = waiting_ws(workspace)
    barrier = threading.Barrier(2)
    results: dict[str, Any] = {}

    def go(user: str) -> None:
        from workbench import Workspace

        mine = Workspace.open(ws.root)  # a store connection of its own, as another process would have
        barrier.wait()
        try:
            results[user] = approve(mine, "rel/1/deploy", user=user, drive=False)
        except InvalidState as exc:
            results[user] = exc
        finally:
            mine.close()

    threads = [threading.Thread(target=go, args=(u,)) for u in ("alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    wins = [u for u, r in results.items() if not isinstance(r, Exception)]
    losses = [r for r in results.values() if isinstance(r, Exception)]
    assert len(wins) == 1 and len(losses) == 1
    assert f"already approved by {wins[0]}" in str(losses[0])
    assert sorted(r["outcome"] for r in audit_rows(ws)) == ["ok", "refused"]


# -- detached approval, rejection ---------------------------------------------------------


def test_detached_approval_leaves_the_run_to_a_driver(workspace: Any) -> None:
    ws = waiting_ws(workspace)
    run = approve(ws, "rel/1/deploy", user="alice", drive=False)
    assert run.status == Status.SCHEDULED
    assert stage_status(ws, "deploy") == Status.SCHEDULED
    with ws.engine() as engine:  # what `workbench tick`/`serve` do with a run
        assert engine.drive(run.id).status == Status.PASSED


def test_reject_ends_the_run_with_the_comment(workspace: Any) -> None:
    ws = waiting_ws(workspace)
    with pytest.raises(UsageError, match="needs a comment"):
        reject(ws, "rel/1/deploy", user="alice", comment="  ")
    run = reject(ws, "rel/1/deploy", user="alice", comment="QA found a blocker")
    assert run.status == Status.REJECTED
    assert run.reason == "stage deploy rejected by alice: QA found a blocker"
    stages = ws.frames.stage_runs.set_index("stage")
    assert stages.loc["deploy", "status"] == "rejected" and stages.loc["deploy", "approved_by"] == "alice"
    assert "smoke" not in stages.index
    with pytest.raises(InvalidState, match="already rejected by alice"):
        approve(ws, "rel/1/deploy", user="bob")
    with ws.engine() as engine:  # a driver does not revive it
        assert engine.drive(run.id).status == Status.REJECTED
    assert [(r["action"], r["outcome"]) for r in ws.frames.approvals.to_dict("records")] == [
        ("reject", "ok"), ("approve", "refused")]


def test_pending_approvals_say_who_may_approve(workspace: Any) -> None:
    ws = waiting_ws(workspace)
    [row] = pending_approvals(ws)
    assert row["locator"] == "rel/1/deploy"
    assert row["may_approve"] == ["alice", "bob", "erin"]
    assert "role release-managers (alice, bob)" in row["approvers"]
    approve(ws, "rel/1/deploy", user="alice")
    assert pending_approvals(ws) == []


def test_authorize_is_the_path_for_other_actions(workspace: Any) -> None:
    ws = waiting_ws(workspace)
    stage = ws.config.pipeline("rel").stage("deploy")
    assert authorize(ws, stage, "bob", "traffic", target="route:shop") == "bob"
    with pytest.raises(Unauthorized):
        authorize(ws, stage, "eve", "traffic", target="route:shop", comment="sneaky")
    [row] = audit_rows(ws)
    assert (row["user"], row["action"], row["target"], row["outcome"]) == ("eve", "traffic", "route:shop", "unauthorized")


def test_waiting_run_shows_in_frames_and_status(workspace: Any) -> None:
    from workbench.reporting import status_rows

    ws = waiting_ws(workspace)
    stages = ws.frames.stage_runs.set_index("stage")
    assert stages.loc["deploy", "status"] == "waiting" and stages.loc["deploy", "approval_type"] == "manual"
    [row] = status_rows(ws)
    assert row["status"] == "waiting"
    assert [s["status"] for s in row["stages"]] == ["passed", "waiting", "not run"]


def test_approvals_audit_traffic_and_rollback_on_postgresql(workspace: Any, pg_server: Any, tmp_path: Path) -> None:
    """The same path on PostgreSQL: compare-and-set approvals, the audit ("user" is a reserved word there), traffic."""
    import sys

    from workbench import Workspace
    from workbench.traffic import rollback

    lb = tmp_path / "lb.py"
    lb.write_text("import sys\nopen(sys.argv[0] + '.out', 'w').write(' '.join(sys.argv[1:]))\n")
    url = pg_server.create_database()
    text = PIPELINE.format(approval=MANUAL).replace("pipelines:\n", (
        "routes:\n  shop:\n    provider: command\n    stacks: {blue: 'b:1', green: 'g:1'}\n"
        f"    argv: ['{sys.executable}', '{lb}']\n"
        "pipelines:\n")).replace("      - smoke:\n", "          traffic: {route: shop, weight: 50}\n      - smoke:\n")
    workspace.write("rel.yaml", text)
    ws = Workspace.open(workspace.root, store_url=url)
    assert ws.store.engine.dialect.name == "postgresql"
    assert ws.run("rel").status == Status.WAITING
    results: dict[str, Any] = {}
    barrier = threading.Barrier(2)

    def go(user: str) -> None:
        mine = Workspace.open(workspace.root, store_url=url)
        barrier.wait()
        try:
            results[user] = approve(mine, "rel/1/deploy", user=user)
        except InvalidState as exc:
            results[user] = exc
        finally:
            mine.close()

    threads = [threading.Thread(target=go, args=(u,)) for u in ("alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(type(r).__name__ for r in results.values()) == ["InvalidState", "PipelineRun"]
    assert (lb.parent / "lb.py.out").read_text() == "shop blue=50 green=50"
    with pytest.raises(Unauthorized):
        rollback(ws, "rel/1", user="carol")
    rollback(ws, "rel/1", user="erin", reason="pg")
    assert (lb.parent / "lb.py.out").read_text() == "shop blue=100 green=0"
    assert sorted(r["outcome"] for r in audit_rows(ws)) == ["ok", "ok", "refused", "unauthorized"]
    assert ws.frames.rollbacks.loc[0, "by"] == "erin" and len(ws.frames.traffic) == 2
    ws.close()
