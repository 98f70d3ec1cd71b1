"""The dashboard's widgets driven from Python, against a real workspace, store and traffic command.

Clicks go through the approvals module's authorization: an allowed click
changes the store, a refused one changes nothing but the audit.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from workbench.dashboard import actions
from workbench.status import Status

pytestmark = pytest.mark.timeout(120)


def _route(tmp_path: Path) -> dict[str, Any]:
    """A real load balancer stand-in: a program that writes the weights it is given."""
    out = tmp_path / "weights.json"
    script = tmp_path / "lb.py"
    script.write_text("import json, os, sys\n"
                      f"json.dump(json.loads(os.environ['WORKBENCH_WEIGHTS']), open({str(out)!r}, 'w'))\n")
    return {"provider": "command", "stacks": {"blue": "blue:80", "green": "green:80"},
            "argv": [sys.executable, str(script)]}


def _workspace(workspace: Any, tmp_path: Path) -> Any:
    doc = {
        "format_version": 10,
        "roles": {"release-managers": ["alice", "bob"], "qa": ["carol"]},
        "routes": {"shop": _route(tmp_path)},
        "environments": {"production": {"production": True, "pipelines": ["release"]}},
        "pipelines": {"release": {
            "group": "shop",
            "rollout": {"route": "shop", "steps": [5, 25, 100],
                        "approval": {"type": "manual", "roles": ["release-managers"]}},
            "stages": [{"build": {"jobs": {"package": {"tasks": [{"exec": {"command": "true"}}]}}}}],
        }},
    }
    workspace.write("release.yaml", yaml.safe_dump(doc, sort_keys=False))
    ws = workspace.open()
    run = ws.run("release")
    assert run.status == Status.WAITING
    return ws


def _dash(ws: Any, user: str) -> Any:
    from workbench.dashboard import dashboard

    return dashboard(ws, user=user, autostart=False, charts_on_start=False)


def _row(dash: Any, locator: str) -> Any:
    rows = [r for r in dash.approvals.children if getattr(r, "pending", None) and r.pending.locator == locator]
    assert rows, [getattr(r, "pending", r) for r in dash.approvals.children]
    return rows[0]


def _stage(ws: Any, counter: int, name: str) -> Any:
    detail = ws.store.run_detail(ws.store.get_pipeline_run("release", counter))
    return detail.latest_stages()[name]


def _weights(tmp_path: Path) -> dict[str, int]:
    return json.loads((tmp_path / "weights.json").read_text())


def test_approve_click_goes_through_authorization_and_the_run_goes_on(workspace: Any, tmp_path: Path) -> None:
    ws = _workspace(workspace, tmp_path)
    dash = _dash(ws, "alice")
    assert 'data-stage="install_shop_5" data-status="waiting"' in dash.board.value
    row = _row(dash, "release/1/install_shop_5")
    assert not row.approve.disabled and row.pending.may
    row.comment.value = "canary looks fine"
    row.approve.click()
    actions.wait_for_drivers(60)
    dash.refresh_live()
    stage = _stage(ws, 1, "install_shop_5")
    assert stage.status == Status.PASSED and stage.approved_by == "alice"
    assert _stage(ws, 1, "install_shop_25").status == Status.WAITING  # the run went on to the next step
    assert _weights(tmp_path) == {"blue": 95, "green": 5}
    audit = ws.frames.audit
    ok = audit[(audit.action == "approve") & (audit.outcome == "ok")]
    assert ok[["user", "target", "comment"]].values.tolist() == [["alice", "release/1/install_shop_5", "canary looks fine"]]
    assert "approved release/1/install_shop_5 as alice" in dash.message.value
    assert 'data-stage="install_shop_5" data-status="passed"' in dash.board.value
    dash.close()


def test_unauthorized_click_changes_nothing_but_the_audit(workspace: Any, tmp_path: Path) -> None:
    ws = _workspace(workspace, tmp_path)
    dash = _dash(ws, "carol")
    row = _row(dash, "release/1/install_shop_5")
    assert row.approve.disabled and not row.pending.may
    assert "carol may not approve this: allowed are role release-managers (alice, bob)" in row.info.value
    row.approve.click()  # a stale page, a crafted message: the action checks again
    actions.wait_for_drivers(60)
    assert "carol may not approve release/1/install_shop_5" in dash.message.value
    assert _stage(ws, 1, "install_shop_5").status == Status.WAITING
    assert _stage(ws, 1, "install_shop_5").approved_by is None
    audit = ws.frames.audit
    assert audit[["user", "action", "outcome"]].values.tolist() == [["carol", "approve", "unauthorized"]]
    row.comment.value = "no"
    row.reject.click()
    assert _stage(ws, 1, "install_shop_5").status == Status.WAITING
    dash.close()


def test_reject_needs_a_comment_and_then_ends_the_run(workspace: Any, tmp_path: Path) -> None:
    ws = _workspace(workspace, tmp_path)
    dash = _dash(ws, "bob")
    row = _row(dash, "release/1/install_shop_5")
    row.reject.click()
    assert "needs a comment" in dash.message.value
    assert _stage(ws, 1, "install_shop_5").status == Status.WAITING
    row.comment.value = "wrong build"
    row.reject.click()
    assert _stage(ws, 1, "install_shop_5").status == Status.REJECTED
    assert ws.store.get_pipeline_run("release", 1).status == Status.REJECTED
    dash.close()


def test_traffic_slider_moves_weights_only_after_confirm(workspace: Any, tmp_path: Path) -> None:
    ws = _workspace(workspace, tmp_path)
    dash = _dash(ws, "alice")
    _row(dash, "release/1/install_shop_5").approve.click()
    actions.wait_for_drivers(60)
    dash.refresh_live()
    route = dash._routes["shop"]
    assert route.slider.value == 5 and "green 5%" in route.weights.value
    route.slider.value = 50
    route.move.click()
    assert route.confirm_box.layout.display == "flex"
    assert "Move route shop to 50% on green and 50% on blue (now 5% on green)?" in route.confirm_text.value
    assert _weights(tmp_path) == {"blue": 95, "green": 5}  # nothing moved before the confirm
    route.cancel.click()
    assert route.confirm_box.layout.display == "none"
    route.slider.value = 50
    route.move.click()
    route.reason.value = "speed up"
    route.confirm.click()
    assert _weights(tmp_path) == {"blue": 50, "green": 50}
    assert ws.frames.traffic_weights.set_index("stack")["weight"].to_dict() == {"blue": 50, "green": 50}
    assert "green 50%" in route.weights.value
    dash.close()
    # someone who may not move this route's traffic: the confirm is refused and nothing moves
    other = _dash(ws, "carol")
    r = other._routes["shop"]
    r.slider.value = 100
    r.move.click()
    r.confirm.click()
    assert "carol may not traffic route:shop" in other.message.value
    assert _weights(tmp_path) == {"blue": 50, "green": 50}
    other.close()


def test_rollback_button_with_confirm_and_disabled_afterwards(workspace: Any, tmp_path: Path) -> None:
    ws = _workspace(workspace, tmp_path)
    dash = _dash(ws, "alice")
    _row(dash, "release/1/install_shop_5").approve.click()
    actions.wait_for_drivers(60)
    dash.refresh_live()
    route = dash._routes["shop"]
    assert not route.rollback.disabled
    route.rollback.click()
    assert "Roll back release/1: 100% back on blue?" in route.confirm_text.value
    route.reason.value = "errors on green"
    route.confirm.click()
    assert _weights(tmp_path) == {"blue": 100, "green": 0}
    assert ws.frames.rollbacks[["pipeline", "counter", "by"]].values.tolist() == [["release", 1, "alice"]]
    assert route.rollback.disabled  # no rollout in progress any more
    assert "no rollout in progress" in route.rollback.tooltip
    dash.close()


def test_charts_and_run_view_build_from_the_store(workspace: Any, tmp_path: Path) -> None:
    ws = _workspace(workspace, tmp_path)
    from workbench.dashboard import dashboard

    dash = dashboard(ws, user="alice", autostart=False)
    # built in the background while the board shows (plotly.js loads in the page meanwhile), or on first look
    assert dash._warming is not None
    dash._warming.join(60)
    assert dash.metrics_figure is not None
    dash.tabs.selected_index = 2
    assert set(dash.figures) == {"lead", "freq", "cfr", "recovery", "rework", "stages"}
    # one figure holds them all (issue 16 defect 10), shown as plotly's mime bundle in one Output
    assert list(dash.chart_box.children) == [dash.metrics_output]
    (out,) = dash.metrics_output.outputs
    shown = out["data"]["application/vnd.plotly.v1+json"]
    titles = [a["text"] for a in shown["layout"]["annotations"]]
    for f in dash.figures.values():
        assert f.layout.title.text in titles
    assert len(shown["data"]) == sum(len(f.data) for f in dash.figures.values())
    assert "width" not in shown["layout"] and shown["layout"]["autosize"] is True
    dash.refresh_charts()  # again: the same Output, its one figure replaced
    assert list(dash.chart_box.children) == [dash.metrics_output] and len(dash.metrics_output.outputs) == 1
    assert "Deployment frequency" in dash.metrics_html.value
    run_id = ws.store.get_pipeline_run("release", 1).id
    dash.tabs.selected_index = 3
    assert dash.runs.value == run_id and dash.gantt is not None
    lanes = set(dash.gantt.data[0].y) | set(dash.gantt.data[-1].y)
    assert "build" in lanes
    dash.close()


def test_the_warm_up_prepares_the_run_tab_without_showing_anything_older_than_the_click(workspace: Any,
                                                                                       tmp_path: Path) -> None:
    """The warm-up builds the newest run's figures once (the Run tab's first use) but fills nothing: a run made
    after it is the one the tab shows when it opens, and the rows are built from the store at that moment."""
    ws = _workspace(workspace, tmp_path)
    from workbench.approvals import reject
    from workbench.dashboard import dashboard

    dash = dashboard(ws, user="alice", autostart=False)
    try:
        dash._warming.join(60)
        assert not dash._warming.is_alive() and dash.metrics_figure is not None
        assert dash.runs.options == () and dash.gantt is None and list(dash.run_box.children) == [dash.runs]
        reject(ws, "release/1/install_shop_5", user="alice", comment="not this one")
        second = ws.run("release")
        dash.tabs.selected_index = 3
        assert dash.runs.value == second.id and dash.runs.options[0][1] == second.id
        assert [v for _, v in dash.runs.options] == [second.id, ws.store.get_pipeline_run("release", 1).id]
        first = ws.store.get_pipeline_run("release", 1)
        assert dict((v, k) for k, v in dash.runs.options)[first.id].endswith(f"· {first.status.value}")
        assert dash.gantt is not None and "build" in set(dash.gantt.data[0].y) | set(dash.gantt.data[-1].y)
    finally:
        dash.close()


def test_live_refresh_thread_updates_the_board(workspace: Any, tmp_path: Path) -> None:
    import time

    ws = _workspace(workspace, tmp_path)
    from workbench.dashboard import dashboard

    dash = dashboard(ws, user="alice", autostart=True, interval=0.2, charts_on_start=False)
    try:
        from workbench.approvals import approve

        approve(ws, "release/1/install_shop_5", user="bob", comment="from the CLI", drive=True)
        deadline = time.monotonic() + 20
        while 'data-stage="install_shop_5" data-status="passed"' not in dash.board.value:
            assert time.monotonic() < deadline, "the board did not refresh by itself"
            time.sleep(0.1)
    finally:
        dash.close()


def test_dashboard_cli_serves_only_on_loopback(workspace: Any, tmp_path: Path) -> None:
    _workspace(workspace, tmp_path)
    r = workspace.cli("dashboard", "--ip", "0.0.0.0", timeout=60)
    assert r.code == 2 and "not a loopback address" in r.err and "Traceback" not in r.err


def test_the_package_is_callable_like_the_function(workspace: Any, tmp_path: Path) -> None:
    import workbench.dashboard as module

    ws = _workspace(workspace, tmp_path)
    dash = module(ws, user="alice", autostart=False)  # workbench.dashboard(ws) works whichever name it resolves to
    assert "release/1/install_shop_5" in [r.pending.locator for r in dash.approvals.children]
    dash.close()


def test_chart_data_is_computed_once_per_store_version(workspace: Any, tmp_path: Path) -> None:
    """Every chart draws from one computation; a write by this process or another one is seen."""
    from workbench.approvals import approve
    from workbench.dashboard.chartdata import ChartSource

    ws = _workspace(workspace, tmp_path)
    cs = ChartSource(ws)
    try:
        first = cs.all(0, "W")
        assert set(first) == {"lead", "freq", "cfr", "recovery", "rework", "stages"}
        assert first["freq"]["deployments"].sum() == 0  # the rollout waits: nothing deployed yet
        again = cs.all(0, "W")
        assert cs.loads == 1 and all(again[k] is first[k] for k in first)  # the same frames, not recomputed
        run_id = ws.store.get_pipeline_run("release", 1).id
        assert "build" in set(cs.gantt(run_id)["lane"])
        nodes, _ = cs.value_stream(run_id)
        assert f"run:{run_id}" in set(nodes["id"])

        approve(ws, "release/1/install_shop_5", user="alice", comment="ok", drive=True)
        for stage in ("install_shop_25", "install_shop_100"):
            approve(ws, f"release/1/{stage}", user="alice", comment="ok", drive=True)
        assert ws.store.get_pipeline_run("release", 1).status == Status.PASSED
        freq = cs.frequency(0, "W")
        assert cs.loads == 2 and freq["deployments"].sum() == 1
        assert cs.change_fail_rate(0, "W")["hits"].sum() == 0

        # another process blames the deployment: the change fail rate follows
        r = workspace.cli("incident", "open", "checkout down", "--caused-by", "release/1")
        assert r.code == 0, r.err
        cfr = cs.change_fail_rate(0, "W")
        assert cs.loads == 3 and cfr["hits"].sum() == 1 and cfr["rate"].max() == 1.0
        assert cs.change_fail_rate(0, "W") is cfr and cs.loads == 3
    finally:
        cs.close()


def test_a_failing_step_after_approve_shows_the_real_outcome_and_its_reason(workspace: Any, tmp_path: Path) -> None:
    """Issue 16 defect 2: the page said "approved … goes on" in green while the stage failed."""
    ws = _workspace(workspace, tmp_path)
    (tmp_path / "lb.py").write_text("import sys\nprint('LB refused: pool drained', file=sys.stderr)\nsys.exit(1)\n")
    dash = _dash(ws, "alice")
    _row(dash, "release/1/install_shop_5").approve.click()
    actions.wait_for_drivers(60)
    assert _stage(ws, 1, "install_shop_5").status == Status.FAILED
    text = dash.message.value
    assert "failed" in text and "LB refused: pool drained" in text, text
    assert "#c62828" in text  # shown as a failure, not in green
    dash.close()


def test_a_live_refresh_never_undoes_a_slider_being_moved_and_its_label_follows_the_stack(
        workspace: Any, tmp_path: Path) -> None:
    """Issue 16 defects 4 and 5: the 2 s refresh reset the slider before "Move…"; the label went stale."""
    ws = _workspace(workspace, tmp_path)
    dash = _dash(ws, "alice")
    route = dash._routes["shop"]
    assert route.slider.value == 0 and route.slider.description == "green %"
    route.slider.value = 25  # a person drags it...
    for _ in range(3):
        dash.refresh_live()  # ...while the live refresh goes on
    assert route.slider.value == 25
    # when the recorded weight really changes (here: a release reaches 100%, green goes live), it follows
    from workbench.traffic import move

    move(ws, "shop", 100, actor="alice", reason="to green")
    dash.refresh_live()
    assert route.slider.value == 0 and route.slider.description == "blue %", route.slider.description
    dash.close()
