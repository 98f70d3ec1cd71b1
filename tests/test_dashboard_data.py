"""The dashboard's data preparation, without widgets: board cells, approvals, routes, chart points."""
from __future__ import annotations

import pandas as pd
import pytest

from workbench.dashboard import charts, data
from workbench.metrics import DeployRule, History, Period, deployments, lead_times

T = pd.Timestamp("2024-03-03 10:00", tz="UTC")  # a Sunday


def at(hours: float) -> pd.Timestamp:
    return T + pd.Timedelta(hours=hours)


def _runs(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame([dict(run_id=r, pipeline=p, counter=c, label=f"{p}-{c}", group_name=g, status=s,
                              created_at=at(r), started_at=at(r), finished_at=None) for r, p, c, g, s in rows])


def _stages(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame([dict(stage_run_id=i + 1, run_id=r, stage=s, position=pos, stage_counter=sc, status=st,
                              approval_type="manual" if st == "waiting" else "success", created_at=at(r),
                              started_at=at(r), finished_at=None) for i, (r, s, pos, sc, st) in enumerate(rows)])


def test_board_shows_latest_counter_of_each_stage_and_not_run_cells():
    runs = _runs([(1, "api", 1, "shops", "failed"), (2, "api", 2, "shops", "running"), (3, "prod", 1, "release", "waiting")])
    stages = _stages([(1, "build", 0, 1, "failed"), (2, "build", 0, 1, "failed"), (2, "build", 0, 2, "passed"),
                      (2, "test", 1, 1, "running"), (3, "p5", 0, 1, "passed"), (3, "p25", 1, 1, "waiting")])
    layout = {"api": ("build", "test", "package"), "prod": ("p5", "p25", "p100"), "ui": ("build",)}
    rows = data.board(runs, stages, layout, {"api": "shops", "prod": "release", "ui": "shops"})
    assert [r.pipeline for r in rows] == ["api", "prod", "ui"]
    api = rows[0]
    assert [r.counter for r in api.runs] == [2, 1]  # newest first
    newest = api.runs[0]
    assert [(c.stage, c.status, c.counter) for c in newest.cells] == [
        ("build", "passed", 2), ("test", "running", 1), ("package", "not run", 0)]
    prod = rows[1].runs[0]
    assert [c.status for c in prod.cells] == ["passed", "waiting", "not run"]
    assert rows[2].runs[0].label == "never run"
    html = data.board_html(rows)
    # running and waiting are told apart by class, symbol and words, not by colour alone
    assert 'class="wb-cell wb-running" data-stage="test" data-status="running"' in html
    assert 'class="wb-cell wb-waiting" data-stage="p25" data-status="waiting"' in html
    assert "▶ test" in html and "‖ p25" in html
    assert "awaiting approval" in html and "@keyframes" in html


def test_approvals_for_puts_mine_first_and_says_why_for_the_others():
    pending = [
        {"locator": "prod/1/p25", "label": "prod-1", "stage": "p25", "waiting_since": at(1).timestamp(),
         "approvers": "role release-managers (alice, bob)"},
        {"locator": "qa/3/q100", "label": "qa-3", "stage": "q100", "waiting_since": at(2).timestamp(),
         "approvers": "role qa (carol)"},
    ]
    rows = data.approvals_for(pending, "carol", lambda p: "carol" in p["approvers"])
    assert [r.locator for r in rows] == ["qa/3/q100", "prod/1/p25"]
    assert rows[0].may and rows[0].why == ""
    assert not rows[1].may
    assert rows[1].why == "carol may not approve this: allowed are role release-managers (alice, bob)"
    assert rows[1].waiting_since == at(1)


def _changes(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame([dict(pipeline=p, counter=c, weight=w, outcome=o) for p, c, w, o in rows],
                        columns=["pipeline", "counter", "weight", "outcome"])


def test_route_views_rollback_rules():
    status = [
        {"route": "shop", "weights": {"blue": 75, "green": 25}, "live": "blue", "candidate": "green",
         "run": "prod/4", "stacks": {"blue": "a", "green": "b"}},
        {"route": "api", "weights": {"blue": 100, "green": 0}, "live": "blue", "candidate": None, "run": None,
         "stacks": {"blue": "a", "green": "b"}},
        {"route": "done", "weights": {"blue": 0, "green": 100}, "live": "green", "candidate": "blue", "run": "prod/5",
         "stacks": {"blue": "a", "green": "b"}},
        {"route": "again", "weights": {"blue": 95, "green": 5}, "live": "blue", "candidate": "green", "run": "prod/6",
         "stacks": {"blue": "a", "green": "b"}},
    ]
    changes = _changes([("prod", 4, 5, "ok"), ("prod", 4, 25, "ok"), ("prod", 4, 100, "failed"),
                        ("prod", 5, 100, "ok"), ("prod", 6, 5, "ok")])
    rollbacks = pd.DataFrame([dict(pipeline="prod", counter=6)])
    views = {v.route: v for v in data.route_views(status, changes, rollbacks)}
    shop = views["shop"]
    assert shop.can_rollback and shop.candidate == "green" and shop.candidate_weight == 25  # the failed 100% does not count
    assert views["api"].candidate == "green" and views["api"].candidate_weight == 0
    assert not views["api"].can_rollback and views["api"].why_not == "no rollout in progress on this route"
    assert not views["done"].can_rollback and "100%" in views["done"].why_not
    assert not views["again"].can_rollback and views["again"].why_not == "run prod/6 was already rolled back"
    assert data.move_summary(shop, 50) == "Move route shop to 50% on green and 50% on blue (now 25% on green)?"


# -- charts ---------------------------------------------------------------------------------------------------

RULE = DeployRule.explicit({"prod": ["go"]})


def _history() -> History:
    runs, stages, commits, prov, jobs = [], [], [], [], []
    rid = 0

    def run(pipeline: str, start: pd.Timestamp, status: str = "passed", up: list[int] = ()) -> int:
        nonlocal rid
        rid += 1
        n = sum(r["pipeline"] == pipeline for r in runs) + 1
        runs.append(dict(run_id=rid, pipeline=pipeline, counter=n, label=f"{pipeline}-{n}", group_name="g",
                         status=status, created_at=start, started_at=start, finished_at=start + pd.Timedelta(minutes=10)))
        name = "go" if pipeline == "prod" else "build"
        stages.append(dict(stage_run_id=rid, run_id=rid, pipeline=pipeline, counter=n, stage=name, position=0,
                           stage_counter=1, status=status, approval_type="manual" if pipeline == "prod" else "success",
                           created_at=start - pd.Timedelta(minutes=30), started_at=start,
                           finished_at=start + pd.Timedelta(minutes=10)))
        jobs.append(dict(job_run_id=rid, stage_run_id=rid, run_id=rid, pipeline=pipeline, stage=name, stage_counter=1,
                         job="j", status=status, started_at=start + pd.Timedelta(minutes=1),
                         finished_at=start + pd.Timedelta(minutes=9)))
        for u in up:
            prov.append(dict(upstream_run_id=u, downstream_run_id=rid))
        return rid

    b1 = run("build", at(0))
    commits.append(dict(sha="a" * 40, material="repo", author="d", author_time=at(-2), commit_time=at(-2), pipeline_run_id=b1))
    commits.append(dict(sha="b" * 40, material="repo", author="d", author_time=at(-1), commit_time=at(-1), pipeline_run_id=b1))
    run("prod", at(1), up=[b1])  # deployed at +1h10m: lead times 3h10 and 2h10, week of 03-03
    b2 = run("build", at(24 * 7))
    commits.append(dict(sha="c" * 40, material="repo", author="d", author_time=at(24 * 7 - 4), commit_time=at(24 * 7 - 4),
                        pipeline_run_id=b2))
    run("prod", at(24 * 7 + 1), status="failed", up=[b2])  # failed deployment the next week
    run("prod", at(24 * 7 + 3), up=[b2])  # deployed 2h10 after the failure started; carries commit c: 7h10
    return History.of(runs=pd.DataFrame(runs), stages=pd.DataFrame(stages), jobs=pd.DataFrame(jobs),
                      commits=pd.DataFrame(commits), provenance=pd.DataFrame(prov))


def test_lead_time_and_rate_chart_points():
    h = _history()
    dep = deployments(h, RULE)
    lt = lead_times(h, dep)
    points = charts.lead_time_data(lt, Period(), "W")
    assert list(points["hours"].round(3)) == [3.167, 2.167, 7.167]
    assert [str(b.date()) for b in points["bucket"]] == ["2024-03-03", "2024-03-03", "2024-03-10"]
    cfr = charts.rate_data(dep, "failed_change", Period(), "W")
    assert cfr[["deployments", "hits"]].values.tolist() == [[1, 0], [2, 1]]
    assert cfr["rate"].tolist() == [0.0, 0.5]
    rec = charts.recovery_data(dep)
    assert rec["hours"].round(3).tolist() == [2.167] and rec["recovered"].tolist() == [True]
    fig = charts.lead_time_figure(points)
    assert list(fig.data[0].y) == list(points["hours"])


def test_gantt_has_approval_wait_stage_and_job_bars():
    h = _history()
    g = charts.gantt_data(h.stages, h.jobs, 2)
    assert g[["lane", "kind"]].values.tolist() == [["go", "approval wait"], ["go", "stage"], ["go / j", "job"]]
    assert (g.loc[0, "finish"] - g.loc[0, "start"]) == pd.Timedelta(minutes=30)
    fig = charts.gantt_figure(g)
    assert {t.name for t in fig.data} == {"approval wait", "stage", "job"}


def test_value_stream_goes_from_commits_through_runs_to_the_deployment():
    h = _history()
    nodes, edges = charts.value_stream_data(h, 2)
    runs = nodes.loc[nodes["kind"] == "run"].set_index("run_id")
    assert runs.loc[1, "layer"] == -1 and runs.loc[2, "layer"] == 0  # build upstream, the deployment at 0
    commits = nodes.loc[nodes["kind"] == "commit"]
    assert sorted(commits["label"]) == ["aaaaaaaa", "bbbbbbbb"] and set(commits["layer"]) == {-2}
    e = edges.set_index(["source", "target"])
    # the build finished at +10m and the deployment run was created at +1h: 50 minutes of waiting
    assert e.loc[("run:1", "run:2"), "wait_s"] == pytest.approx(3000)
    assert e.loc[("commit:" + "a" * 40, "run:1"), "wait_s"] == pytest.approx(7200)
    assert runs.loc[2, "process_s"] == pytest.approx(600)
    # from the build's side: the deployment is downstream
    nodes_b, _ = charts.value_stream_data(h, 1)
    assert nodes_b.loc[nodes_b["kind"] == "run"].set_index("run_id").loc[2, "layer"] == 1
    fig = charts.value_stream_figure(nodes, edges)
    assert any("wait 50m" == a.text for a in fig.layout.annotations)


def test_stage_duration_points_in_pipeline_order():
    from workbench.metrics import stage_times

    t = stage_times(_history())
    d = charts.stage_duration_data(t)
    assert d["pipeline"].tolist()[:2] == ["build", "build"]
    assert set(d["seconds"]) == {600.0}
    assert d.loc[d["pipeline"] == "prod", "approval_seconds"].tolist() == [1800.0, 1800.0, 1800.0]


def test_charts_read_well_whatever_the_data() -> None:
    """Issue 16 item 9: units from the data, visible zeros, a reason instead of an empty axis, room per row."""
    assert charts.time_unit([0.001, 0.004])[0] == "seconds" and charts.time_unit([0.5])[0] == "minutes"
    assert charts.time_unit([5, 30])[0] == "hours" and charts.time_unit([100])[0] == "days"
    pts = pd.DataFrame({"bucket": pd.to_datetime(["2024-03-03"] * 2), "hours": [10 / 3600, 40 / 3600],
                        "sha": ["a", "b"], "deployed_at": pd.to_datetime(["2024-03-04"] * 2, utc=True)})
    fig = charts.lead_time_figure(pts)
    assert "seconds" in fig.layout.title.text and list(fig.data[0].y) == pytest.approx([10, 40])
    zero = pd.DataFrame({"period": pd.to_datetime(["2024-03-03", "2024-03-10"], utc=True), "deployments": [3, 2],
                         "hits": [0, 0], "rate": [0.0, 0.0]})
    fig = charts.rate_figure(zero, "Change fail rate", "#d00")
    assert list(fig.data[0].text) == ["0% of 3", "0% of 2"]  # a 0% week is a visible, labelled zero
    empty = charts.recovery_data(pd.DataFrame({"at": pd.Series(dtype="datetime64[ns, UTC]"),
                                               "failed_change": pd.Series(dtype=bool),
                                               "recovery_time": pd.Series(dtype="timedelta64[ns]"),
                                               "label": pd.Series(dtype=str),
                                               "restored_at": pd.Series(dtype="datetime64[ns, UTC]")}))
    fig = charts.recovery_figure(empty)
    assert [a.text for a in fig.layout.annotations] == ["no failed deployments in this period"]
    many = pd.DataFrame({"pipeline": ["p"] * 35, "stage": [f"s{i}" for i in range(35)], "position": range(35),
                         "seconds": [1.0] * 35, "queue_seconds": [0.0] * 35, "approval_seconds": [0.0] * 35})
    fig = charts.stage_duration_figure(many)
    assert fig.layout.height >= 22 * 35 and all(t.orientation == "h" for t in fig.data)
    assert fig.layout.width is None and fig.layout.autosize  # fills its box on any screen
    # 10,000 pipelines had 43,666 stage boxes (200 s in plotly): the 50 slowest by median, and the title says so
    wide = pd.DataFrame({"pipeline": [f"p{i}" for i in range(80)], "stage": ["s"] * 80, "position": [0] * 80,
                         "seconds": [float(i) for i in range(80)], "queue_seconds": [0.0] * 80,
                         "approval_seconds": [0.0] * 80})
    fig = charts.stage_duration_figure(wide)
    assert sorted(t.name for t in fig.data) == sorted(f"p{i}/s" for i in range(30, 80))
    assert fig.layout.title.text.endswith("the 50 slowest of 80 stages by median")


def test_value_stream_processing_leaves_out_the_approval_wait() -> None:
    h = _history()
    runs = h.runs.copy()
    stages = h.stages.copy()
    # the deployment's stage waited 20 minutes for a person inside the run's span
    i = stages.index[stages["run_id"] == 2][0]
    stages.loc[i, "created_at"] = runs.loc[runs["run_id"] == 2, "started_at"].iloc[0]
    stages.loc[i, "started_at"] = stages.loc[i, "created_at"] + pd.Timedelta(minutes=20)
    runs.loc[runs["run_id"] == 2, "finished_at"] = stages.loc[i, "started_at"] + pd.Timedelta(minutes=10)
    h2 = History.of(runs=runs, stages=stages, jobs=h.jobs, commits=h.commits, provenance=h.provenance)
    n, _ = charts.value_stream_data(h2, 2)
    node = n.loc[(n["kind"] == "run") & (n["run_id"] == 2)].iloc[0]
    assert node["process_s"] == pytest.approx(600) and node["approval_wait_s"] == pytest.approx(1200)


def test_the_metrics_tab_is_one_figure_with_every_charts_content() -> None:
    """Issue 16 defect 10: one figure (one plotly widget), and nothing of the six charts lost on the way."""
    h = _history()
    dep = deployments(h, RULE)
    lt = lead_times(h, dep)
    no_failures = dep.assign(failed_change=False, rework=False)
    d = {"lead": charts.lead_time_data(lt, Period(), "W"),
         "freq": charts.rate_data(dep, "failed_change", Period(), "W")[["period", "deployments"]],
         "cfr": charts.rate_data(no_failures, "failed_change", Period(), "W"),
         "recovery": charts.recovery_data(no_failures),
         "rework": charts.rate_data(no_failures, "rework", Period(), "W"),
         "stages": pd.DataFrame({"pipeline": ["p"] * 35, "stage": [f"s{i}" for i in range(35)], "position": range(35),
                                 "seconds": [1.0] * 35, "queue_seconds": [0.0] * 35, "approval_seconds": [0.0] * 35})}
    parts = charts.metrics_figures(d)
    fig = charts.combine(parts)
    # every trace of every chart, with its points
    assert len(fig.data) == sum(len(f.data) for f in parts.values())
    assert list(fig.data[0].y) == list(parts["lead"].data[0].y)
    titles = [a.text for a in fig.layout.annotations]
    for f in parts.values():
        assert f.layout.title.text in titles
    assert any("(hours)" in t for t in titles if t.startswith("Change lead time"))  # the unit from the data
    # the recovery chart's reason, in its own cell (not across the whole figure)
    (note,) = [a for a in fig.layout.annotations if a.text == "no failed deployments in this period"]
    rec = fig.get_subplot(2, 2)
    assert note.xref == f"{rec.xaxis.plotly_name.replace('axis', '')} domain"
    assert fig.layout[rec.xaxis.plotly_name].visible is False
    # 0% rates: labelled zeros, the zero line of each rate chart in its cell, the axis as a percentage
    cfr_trace = next(t for t in fig.data if t.marker.color == parts["cfr"].data[0].marker.color and t.text)
    assert all(t.startswith("0% of ") for t in cfr_trace.text)
    cfr = fig.get_subplot(2, 1)
    assert fig.layout[cfr.yaxis.plotly_name].tickformat == ".0%"
    zero_lines = [s for s in fig.layout.shapes if s.y0 == 0 and s.y1 == 0]
    assert {s.yref for s in zero_lines} == {cfr.yaxis.plotly_name.replace("axis", ""),
                                            fig.get_subplot(3, 1).yaxis.plotly_name.replace("axis", "")}
    # the stage row is as tall as its 35 rows; the figure fills its box's width
    stages = fig.get_subplot(4, 1)
    lo, hi = fig.layout[stages.yaxis.plotly_name].domain
    assert (hi - lo) * fig.layout.height >= 20 * 35
    assert fig.layout[stages.yaxis.plotly_name].autorange == "reversed"
    assert fig.layout.width is None and fig.layout.autosize
    # the rework rate and the stage durations span the width, the others share a row
    assert fig.layout[stages.xaxis.plotly_name].domain == pytest.approx((0.0, 1.0))
    assert fig.layout[fig.get_subplot(1, 1).xaxis.plotly_name].domain[1] < 0.5
