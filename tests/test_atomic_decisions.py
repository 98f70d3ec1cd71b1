"""Every decision writes its state change and its audit row in ONE store transaction.

Approve, reject, a manual traffic move and a rollback each change state (a
stage, a run, the recorded weights, a rollback row) and write an audit row. If
the audit row cannot be written, none of the change may stay: a crash or a
failing write between the two would otherwise leave an approval nobody can
account for. The failure is real, not mocked: a database trigger makes every
``ok`` audit insert fail (a "disk full" error on PostgreSQL, an abort on
SQLite), so the write fails at exactly the last statement of the decision's
transaction. On SQLite and on a real PostgreSQL (conftest ``store_url``).

Traffic is the one part outside the database: the provider has already served
the new weights when the transaction fails, so the store keeps the weights it
had and ``reconcile`` (run by every ``tick``) puts the provider back to them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from reliability_fixtures import command_route, invariant_violations, served
from workbench.approvals import approve, reject
from workbench.errors import StoreError
from workbench.status import Status
from workbench.traffic import reconcile, rollback, set_weights

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("workspace_store")]

INJECTED = "injected: the audit write failed"
FAILS = (StoreError, sa.exc.DBAPIError)  # PostgreSQL: disk_full → StoreError; SQLite: the trigger's abort


def pipeline(route: dict[str, Any]) -> str:
    job = {"tasks": [{"exec": {"command": "true"}}]}
    manual = {"type": "manual", "users": ["alice"]}
    return yaml.safe_dump({
        "format_version": 10,
        "routes": {"shop": route},
        "pipelines": {"rel": {"group": "g", "stages": [
            {"build": {"jobs": {"j": job}}},
            {"canary": {"approval": manual, "traffic": {"route": "shop", "weight": 25}, "jobs": {"j": job}}},
            {"full": {"approval": manual, "traffic": {"route": "shop", "weight": 100}, "jobs": {"j": job}}},
        ]}},
    }, sort_keys=False)


def fail_ok_audit_rows(ws: Any, on: bool) -> None:
    """Install (or drop) a trigger that makes every successful decision's audit insert fail."""
    with ws.store.write() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_fails")
            if on:
                conn.exec_driver_sql(
                    "CREATE TRIGGER audit_fails BEFORE INSERT ON audit WHEN NEW.outcome = 'ok' "
                    f"BEGIN SELECT RAISE(ABORT, '{INJECTED}'); END")
        else:
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_fails ON audit")
            if on:
                conn.exec_driver_sql(
                    "CREATE OR REPLACE FUNCTION audit_fails() RETURNS trigger AS $$ BEGIN "
                    "IF NEW.outcome = 'ok' THEN "
                    f"RAISE EXCEPTION '{INJECTED}' USING ERRCODE = 'disk_full'; END IF; "
                    "RETURN NEW; END $$ LANGUAGE plpgsql")
                conn.exec_driver_sql("CREATE TRIGGER audit_fails BEFORE INSERT ON audit "
                                     "FOR EACH ROW EXECUTE FUNCTION audit_fails()")


def snapshot(ws: Any) -> dict[str, Any]:
    """Everything a decision may change, read straight from the store."""
    with ws.store.read() as conn:
        q = lambda sql: [tuple(r) for r in conn.exec_driver_sql(sql)]  # noqa: E731
        return {
            "runs": q("SELECT counter, status, reason FROM pipeline_runs ORDER BY id"),
            "stages": q("SELECT name, status, approved_by, reason FROM stage_runs ORDER BY id"),
            "ok_audit": q("SELECT action, \"user\", target FROM audit WHERE outcome = 'ok' ORDER BY id"),
            "route": q("SELECT weights, live, candidate, run_id FROM traffic_routes"),
            "moves": q("SELECT to_weights, actor FROM traffic_changes WHERE outcome = 'ok' ORDER BY id"),
            "rollbacks": q("SELECT route FROM rollbacks"),
        }


def recorded_weights(ws: Any) -> dict[str, int]:
    with ws.store.read() as conn:
        raw = conn.exec_driver_sql("SELECT weights FROM traffic_routes WHERE route = 'shop'").scalar_one()
    return {k: int(v) for k, v in (json.loads(raw) if isinstance(raw, str) else raw).items()}


def test_a_decision_whose_audit_row_fails_leaves_no_trace(workspace: Any, tmp_path: Path, store_url: str) -> None:
    route, lb = command_route(tmp_path / "lb")
    workspace.write("rel.yaml", pipeline(route))
    ws = workspace.open()
    assert ws.run("rel").status == Status.WAITING

    fail_ok_audit_rows(ws, True)
    before = snapshot(ws)
    assert ("canary", "waiting", None, None) in before["stages"]
    # approve and reject: the stage and the run stay waiting, nobody is recorded as the approver
    with pytest.raises(FAILS, match=INJECTED):
        approve(ws, "rel/1/canary", user="alice")
    assert snapshot(ws) == before
    with pytest.raises(FAILS, match=INJECTED):
        reject(ws, "rel/1/canary", user="alice", comment="not today")
    assert snapshot(ws) == before
    assert served(lb) == {"blue": 100, "green": 0}

    # the same decision goes through once the audit can be written, with its row
    fail_ok_audit_rows(ws, False)
    assert approve(ws, "rel/1/canary", user="alice").status == Status.WAITING  # now at `full`
    assert served(lb) == {"blue": 75, "green": 25} and recorded_weights(ws) == {"blue": 75, "green": 25}
    assert snapshot(ws)["ok_audit"] == [("approve", "alice", "rel/1/canary")]

    # a manual traffic move: the provider moved, the store did not record it (no change, no state, no audit)
    fail_ok_audit_rows(ws, True)
    before = snapshot(ws)
    with pytest.raises(FAILS, match=INJECTED):
        set_weights(ws, "shop", 50, user="alice", reason="by hand")
    assert snapshot(ws) == before
    assert served(lb) == {"blue": 50, "green": 50}  # served, unrecorded: what reconcile is for
    # a rollback: the provider went back to blue, but no rollback row, no mark on the run, no audit row
    with pytest.raises(FAILS, match=INJECTED):
        rollback(ws, "rel/1", user="alice", reason="bad canary")
    assert snapshot(ws) == before
    assert served(lb) == {"blue": 100, "green": 0}
    # recovery (tick's reconcile) makes the provider serve what the store recorded
    assert reconcile(ws, "shop")["reapplied"] is True
    assert served(lb) == recorded_weights(ws) == {"blue": 75, "green": 25}
    if "://" not in store_url:
        fail_ok_audit_rows(ws, False)
        db = workspace.root / ".workbench" / "store.db"
        assert invariant_violations(db, served_weights={"shop": served(lb)}) == []

    # and with the audit back, each decision lands whole: move + state + audit, rollback + mark + audit
    fail_ok_audit_rows(ws, False)
    assert set_weights(ws, "shop", 50, user="alice", reason="by hand") == {"blue": 50, "green": 50}
    rollback(ws, "rel/1", user="alice", reason="bad canary")
    after = snapshot(ws)
    assert [a[0] for a in after["ok_audit"]] == ["approve", "traffic", "rollback"]
    assert after["rollbacks"] == [("shop",)]
    assert after["runs"][0][1] == "failed" and "rolled back by alice" in after["runs"][0][2]
    assert served(lb) == recorded_weights(ws) == {"blue": 100, "green": 0}
    if "://" not in store_url:  # the fault checker agrees, and would see a decision without its row
        assert invariant_violations(db, served_weights={"shop": served(lb)}) == []
        with ws.store.write() as conn:
            conn.exec_driver_sql("DELETE FROM audit WHERE action = 'rollback'")
        assert invariant_violations(db, served_weights={"shop": served(lb)}) == [
            "rollbacks [('rel', 1, 'alice')] but audited rollbacks []"]


def test_a_rejection_whose_audit_row_fails_leaves_the_run_waiting(workspace: Any, tmp_path: Path) -> None:
    route, _lb = command_route(tmp_path / "lb")
    workspace.write("rel.yaml", pipeline(route))
    ws = workspace.open()
    ws.run("rel")
    fail_ok_audit_rows(ws, True)
    before = snapshot(ws)
    with pytest.raises(FAILS, match=INJECTED):
        reject(ws, "rel/1/canary", user="alice", comment="broken")
    assert snapshot(ws) == before and before["runs"][0][1] == "waiting"
    fail_ok_audit_rows(ws, False)
    assert reject(ws, "rel/1/canary", user="alice", comment="broken").status == Status.REJECTED
    after = snapshot(ws)
    assert after["ok_audit"] == [("reject", "alice", "rel/1/canary")]
    assert ("canary", "rejected", "alice", "rejected by alice: broken") in after["stages"]
