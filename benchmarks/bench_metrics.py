"""Benchmarks of the delivery metrics and the dashboard, each against a baseline measured in the same run.

1. Every metric (DORA's five, four keys, stage times and waits, failure rates
   by stage and job, reruns) over synthetic histories of 10k, 100k and 1M job
   runs (1k, 10k, 100k pipeline runs); baseline: the same core numbers (per-job
   failure rates, deployments, median lead time) in a plain per-row Python
   loop over the same frames. Target (issue 6): ≤ 1 s at 1M job runs.
2. The dashboard's live refresh (board, approvals, routes) over a real SQLite
   store of 10k pipeline runs; baseline: reading the full run and stage frames
   a naive board would start from. Target: ≤ 300 ms.
3. Every chart's data at that size (lead time, deployment frequency, change
   fail rate, recovery time, rework rate, stage durations, Gantt, value
   stream) as the dashboard gets it from its ChartSource: right after a store
   change (the new version's read and computation included) and with the
   store unchanged; baseline: each chart reading the store and computing on
   its own, as the dashboard did before. Target: ≤ 200 ms.

    .venv/bin/python benchmarks/bench_metrics.py [--sizes 10000,100000,1000000] [--repeat 3]

Medians of ``--repeat`` runs after one warm-up. Synthetic data are built with
numpy (not timed). The machine is a shared 2-core box: compare ours/baseline
ratios of one run rather than absolute numbers across runs.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402

from workbench.metrics import DeployRule, History, Metrics  # noqa: E402

N_PIPELINES = 20
PROD = ("deploy_eu", "deploy_us")  # the production pipelines
STAGES = ("build", "test", "package", "approve", "release")
JOBS_PER_STAGE = 2
T0 = pd.Timestamp("2024-01-01", tz="UTC")


def synthetic(job_runs: int, seed: int = 7) -> tuple[History, DeployRule]:
    """``job_runs`` job runs: runs of 20 pipelines × 5 stages × 2 jobs, 2 of them production."""
    rng = np.random.default_rng(seed)
    n_runs = job_runs // (len(STAGES) * JOBS_PER_STAGE)
    names = [f"ci_{i}" for i in range(N_PIPELINES - len(PROD))] + list(PROD)
    pipe = rng.choice(len(names), size=n_runs, p=[0.8 / (N_PIPELINES - 2)] * (N_PIPELINES - 2) + [0.1, 0.1])
    start_ns = np.datetime64("2024-01-01T00:00:00", "ns") + np.sort(rng.uniform(0, 365 * 86400e9, n_runs)).astype("timedelta64[ns]")
    start = pd.to_datetime(start_ns, utc=True)
    run_id = np.arange(1, n_runs + 1)
    pipe_names = np.array(names)[pipe]
    counter = pd.Series(pipe_names).groupby(pipe_names).cumcount().to_numpy() + 1
    status = np.where(rng.random(n_runs) < 0.08, "failed", "passed")
    runs = pd.DataFrame({"run_id": run_id, "pipeline": pipe_names, "counter": counter, "label": counter.astype(str),
                         "group_name": np.where(np.isin(pipe_names, PROD), "release", "ci"),
                         "environment": np.where(np.isin(pipe_names, PROD), "production", None), "status": status,
                         "created_at": start, "started_at": start, "finished_at": start + pd.Timedelta(minutes=30)})
    # stages: 5 per run; a failed run fails at a random stage and skips the rest
    s_run = np.repeat(run_id, len(STAGES))
    pos = np.tile(np.arange(len(STAGES)), n_runs)
    fail_at = np.where(status == "failed", rng.integers(0, len(STAGES), n_runs), len(STAGES))
    fa = np.repeat(fail_at, len(STAGES))
    s_status = np.where(pos < fa, "passed", np.where(pos == fa, "failed", "skipped"))
    s_start = np.repeat(start_ns, len(STAGES)) + (pos * 6 * 60 * 1e9).astype("timedelta64[ns]")
    manual = np.array([s == "approve" for s in STAGES])[pos]
    created = s_start - np.where(manual, rng.exponential(3600e9, len(pos)), 5e9).astype("timedelta64[ns]")
    stage_counter = np.where(rng.random(len(pos)) < 0.02, 2, 1)
    stages = pd.DataFrame({
        "stage_run_id": np.arange(1, len(pos) + 1), "run_id": s_run, "pipeline": np.repeat(pipe_names, len(STAGES)),
        "counter": np.repeat(counter, len(STAGES)), "stage": np.array(STAGES)[pos], "position": pos,
        "stage_counter": stage_counter, "status": s_status,
        "approval_type": np.where(manual, "manual", "success"),
        "created_at": pd.to_datetime(created, utc=True), "started_at": pd.to_datetime(s_start, utc=True),
        "finished_at": pd.to_datetime(s_start + np.timedelta64(5 * 60, "s"), utc=True)})
    j_idx = np.repeat(np.arange(len(stages)), JOBS_PER_STAGE)
    jobs = pd.DataFrame({
        "job_run_id": np.arange(1, len(j_idx) + 1), "stage_run_id": stages["stage_run_id"].to_numpy()[j_idx],
        "run_id": s_run[j_idx], "pipeline": stages["pipeline"].to_numpy()[j_idx],
        "stage": stages["stage"].to_numpy()[j_idx], "stage_counter": stage_counter[j_idx],
        "job": np.tile(["unit", "lint"], len(stages)), "status": s_status[j_idx],
        "started_at": stages["started_at"].to_numpy()[j_idx], "finished_at": stages["finished_at"].to_numpy()[j_idx]})
    # one commit per CI run; each production run descends from the latest run of two CI pipelines
    ci = runs.loc[~runs["pipeline"].isin(PROD)]
    commits = pd.DataFrame({"sha": [f"{i:040x}" for i in ci["run_id"]], "material": "repo", "author": "dev",
                            "author_time": ci["created_at"] - pd.Timedelta(hours=3),
                            "commit_time": ci["created_at"] - pd.Timedelta(hours=2),
                            "pipeline_run_id": ci["run_id"].to_numpy()})
    prod = runs.loc[runs["pipeline"].isin(PROD)]
    edges = []
    for k in range(2):
        src = ci.loc[ci["pipeline"] == f"ci_{k}", ["run_id", "created_at"]].rename(columns={"run_id": "upstream_run_id"})
        m = pd.merge_asof(prod[["run_id", "created_at"]], src, on="created_at", direction="backward").dropna()
        edges.append(pd.DataFrame({"upstream_run_id": m["upstream_run_id"].astype("int64"),
                                   "downstream_run_id": m["run_id"]}))
    provenance = pd.concat(edges, ignore_index=True)
    pr = prod["run_id"].to_numpy()
    incidents = pd.DataFrame({"incident_id": np.arange(1, len(pr) // 50 + 1), "title": "x", "severity": "major"})
    blamed = rng.choice(pr, len(incidents), replace=False) if len(incidents) else pr[:0]
    opened = runs.set_index("run_id").loc[blamed, "finished_at"].to_numpy() if len(blamed) else []
    incidents["caused_by_run_id"] = blamed
    incidents["opened_at"] = pd.to_datetime(opened, utc=True) + pd.Timedelta(hours=1)
    incidents["resolved_at"] = incidents["opened_at"] + pd.Timedelta(hours=3)
    rb = rng.choice(pr, len(pr) // 40, replace=False) if len(pr) >= 40 else pr[:0]
    rollbacks = pd.DataFrame({"run_id": rb, "at": pd.to_datetime(runs.set_index("run_id").loc[rb, "finished_at"].to_numpy(), utc=True)})
    marks = pd.DataFrame({"run_id": rng.choice(pr, len(pr) // 60, replace=False) if len(pr) >= 60 else pr[:0],
                          "mark": "unplanned", "incident_id": pd.NA})
    h = History.of(runs=runs, stages=stages, jobs=jobs, commits=commits, provenance=provenance, incidents=incidents,
                   marks=marks, rollbacks=rollbacks)
    rule = DeployRule.explicit({p: ["release"] for p in PROD}, environment={p: "production" for p in PROD})
    return h, rule


def everything(h: History, rule: DeployRule) -> Metrics:
    m = Metrics(h, rule)
    for part in ("summary", "four_keys", "stage_summary", "stage_failures", "job_failures", "reruns"):
        getattr(m, part)
    m.frequency("W")
    return m


def naive(h: History, rule: DeployRule) -> dict[str, Any]:
    """The core numbers with per-row Python loops: what a hand-written script would do."""
    fail: dict[tuple[str, str, str], list[int]] = {}
    for r in h.jobs.itertuples(index=False):
        c = fail.setdefault((r.pipeline, r.stage, r.job), [0, 0])
        c[0] += r.status == "failed"
        c[1] += r.status in ("passed", "failed")
    deployed: dict[int, Any] = {}
    points = {(p, s) for p, ss in rule.points.items() for s in ss}
    for r in h.stages.itertuples(index=False):
        if (r.pipeline, r.stage) in points and r.status == "passed":
            deployed[r.run_id] = min(deployed.get(r.run_id, r.finished_at), r.finished_at)
    ups: dict[int, list[int]] = {}
    for r in h.provenance.itertuples(index=False):
        ups.setdefault(r.upstream_run_id, []).append(r.downstream_run_id)
    leads = []
    for r in h.commits.itertuples(index=False):
        times = [deployed[d] for d in ups.get(r.pipeline_run_id, ()) if d in deployed]
        if times:
            leads.append((min(times) - r.commit_time).total_seconds())
    return {"failure_rates": {k: a / b for k, (a, b) in fail.items() if b}, "deployments": len(deployed),
            "median_lead_s": statistics.median(leads) if leads else None}


def timed(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm-up
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def row(what: str, ours: float, base: float, target: float | None, base_name: str) -> None:
    ok = "" if target is None else ("  (target ≤ %.0f ms: %s)" % (target * 1000, "met" if ours <= target else "MISSED"))
    print(f"{what:<44} ours {ours * 1000:9.1f} ms   {base_name} {base * 1000:10.1f} ms   "
          f"baseline/ours {base / ours:6.1f}x{ok}", flush=True)


# -- the store-backed parts --------------------------------------------------------------------------


def store_workspace(root: Path, h: History) -> Any:
    """A real workspace whose SQLite store holds ``h`` (bulk-inserted) and whose config matches it."""
    import yaml

    from workbench.store import schema as S
    from workbench.workspace import Workspace

    pipelines = {}
    for name in sorted(h.runs["pipeline"].unique()):
        stages = []
        for s in STAGES:
            body: dict[str, Any] = {"jobs": {j: {"tasks": [{"exec": {"command": "true"}}]} for j in ("unit", "lint")}}
            if s == "approve":
                body["approval"] = {"type": "manual", "roles": ["release-managers"]}
            stages.append({s: body})
        pipelines[name] = {"group": "release" if name in PROD else "ci", "stages": stages}
    doc = {"format_version": 10, "roles": {"release-managers": ["alice"]},
           "environments": {"production": {"production": True, "pipelines": list(PROD)}}, "pipelines": pipelines}
    (root / "pipelines").mkdir(parents=True)
    (root / "pipelines" / "bench.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    ws = Workspace.open(root)
    _ = ws.config  # load (and check) it before the bulk insert
    secs = lambda s: (pd.to_datetime(s, utc=True) - pd.Timestamp(0, tz="UTC")).dt.total_seconds()  # noqa: E731
    r = h.runs
    last = r.groupby("pipeline")["counter"].transform("max") == r["counter"]
    status = np.where(last & (r.index % 7 == 0), "waiting", r["status"].astype(str))  # a few runs wait for approval
    with ws.store.write() as conn:
        conn.execute(S.pipeline_runs.insert(), pd.DataFrame({
            "id": r["run_id"], "pipeline": r["pipeline"], "counter": r["counter"], "label": r["label"],
            "group_name": r["group_name"], "trigger": "manual", "triggered_by": "bench", "status": status,
            "revisions": [{}] * len(r), "environment": r["environment"], "created_at": secs(r["created_at"]),
            "started_at": secs(r["started_at"]), "finished_at": secs(r["finished_at"])}).to_dict("records"))
        s = h.stages
        waiting_runs = set(r.loc[status == "waiting", "run_id"])
        st = np.where(s["run_id"].isin(waiting_runs) & (s["stage"] == "approve"), "waiting", s["status"].astype(str))
        conn.execute(S.stage_runs.insert(), pd.DataFrame({
            "id": s["stage_run_id"], "pipeline_run_id": s["run_id"], "name": s["stage"], "position": s["position"],
            "counter": 1, "status": st, "approval_type": s["approval_type"], "created_at": secs(s["created_at"]),
            "started_at": secs(s["started_at"]), "finished_at": secs(s["finished_at"])}).to_dict("records"))
        j = h.jobs
        conn.execute(S.job_runs.insert(), pd.DataFrame({
            "id": j["job_run_id"], "stage_run_id": j["stage_run_id"], "name": j["job"], "run_index": 1, "run_count": 1,
            "status": j["status"], "created_at": secs(j["started_at"]), "started_at": secs(j["started_at"]),
            "finished_at": secs(j["finished_at"])}).to_dict("records"))
        # what the charts read besides runs and stages: commits, provenance, incidents, marks, rollbacks
        from workbench.materials.tables import commits, provenance
        from workbench.metrics_store import deployment_marks, incidents
        from workbench.traffic.state import rollbacks

        c = h.commits
        conn.execute(commits.insert(), pd.DataFrame({
            "pipeline_run_id": c["pipeline_run_id"], "material": c["material"], "sha": c["sha"], "author": c["author"],
            "author_time": secs(c["author_time"]), "commit_time": secs(c["commit_time"]), "message": "change"}
        ).to_dict("records"))
        conn.execute(provenance.insert(), pd.DataFrame({
            "upstream_run_id": h.provenance["upstream_run_id"], "downstream_run_id": h.provenance["downstream_run_id"],
            "material": "upstream", "upstream_stage": "release", "upstream_stage_counter": 1}).to_dict("records"))
        i = h.incidents
        if len(i):
            conn.execute(incidents.insert(), pd.DataFrame({
                "id": i["incident_id"], "title": i["title"], "severity": i["severity"],
                "opened_at": secs(i["opened_at"]), "resolved_at": secs(i["resolved_at"]),
                "caused_by": i["caused_by_run_id"], "opened_by": "bench"}).to_dict("records"))
        mk = h.marks
        if len(mk):
            conn.execute(deployment_marks.insert(), pd.DataFrame({
                "pipeline_run_id": mk["run_id"], "mark": mk["mark"], "marked_by": "bench",
                "marked_at": secs(r.set_index("run_id").loc[mk["run_id"], "finished_at"]).to_numpy()}
            ).to_dict("records"))
        rb = h.rollbacks.merge(r[["run_id", "pipeline", "counter"]], on="run_id")
        if len(rb):
            conn.execute(rollbacks.insert(), pd.DataFrame({
                "at": secs(rb["at"]), "run_id": rb["run_id"], "pipeline": rb["pipeline"], "counter": rb["counter"],
                "route": "shop", "by": "bench", "automatic": False}).to_dict("records"))
    return ws


def _load() -> str:
    return "%.1f %.1f %.1f" % os.getloadavg()


Change = tuple[Callable[[], None], Callable[[], None]]  # (prepare, untimed; the change itself)


def _changes(ws: Any, h: History, touch: Callable[[], None]) -> dict[str, Change]:
    """Store changes as the workbench makes them (in SQL, to time only what the charts pay for them).

    Each is repeatable: every call is a new change. ``rows`` in the output means
    the table was brought up to date by reading what changed, ``full`` read whole.
    """
    r = h.runs
    prod_run = int(r.loc[r["pipeline"] == PROD[0], "run_id"].iloc[-2])  # an old finished production run
    ci_run = int(r.loc[r["pipeline"] == "ci_0", "run_id"].iloc[0])
    state = {"counter": 10_000_000}

    def ids(conn: Any) -> tuple[int, int]:
        run = conn.execute(sa.text("SELECT max(id) FROM pipeline_runs")).scalar_one()
        st = conn.execute(sa.text("SELECT max(id) FROM stage_runs")).scalar_one()
        return int(run), int(st)

    def new_run(pipeline: str, status: str) -> int:
        now = time.time()
        state["counter"] += 1
        prod = pipeline in PROD
        with ws.store.write() as conn:
            run, st = ids(conn)
            conn.execute(sa.text(
                "INSERT INTO pipeline_runs (id, pipeline, counter, label, group_name, trigger, triggered_by, status, "
                "revisions, environment, created_at, started_at) VALUES (:i, :p, :c, :c, :g, 'manual', 'bench', "
                ":s, '{}', :e, :t, :t)"), {"i": run + 1, "p": pipeline, "c": state["counter"], "s": status, "t": now,
                                           "g": "release" if prod else "ci", "e": "production" if prod else None})
            for pos, name in enumerate(STAGES):
                conn.execute(sa.text(
                    "INSERT INTO stage_runs (id, pipeline_run_id, name, position, counter, status, approval_type, "
                    "created_at, started_at) VALUES (:i, :r, :n, :pos, 1, :s, 'success', :t, :t)"),
                    {"i": st + 1 + pos, "r": run + 1, "n": name, "pos": pos, "t": now,
                     "s": "running" if pos == 0 else "scheduled"})
            conn.execute(sa.text(
                "INSERT INTO commits (pipeline_run_id, material, sha, author, author_time, commit_time, message) "
                "VALUES (:r, 'repo', :sha, 'dev', :t, :t, 'change')"),
                {"r": run + 1, "sha": f"{run + 1:040x}", "t": now - 60})
        return run + 1

    def finish(run: int) -> None:
        now = time.time()
        with ws.store.write() as conn:
            conn.execute(sa.text("UPDATE stage_runs SET status = 'passed', started_at = coalesce(started_at, :t), "
                                 "finished_at = :t WHERE pipeline_run_id = :r"), {"r": run, "t": now})
            conn.execute(sa.text("UPDATE pipeline_runs SET status = 'passed', finished_at = :t WHERE id = :r"),
                         {"r": run, "t": now})

    pending: list[int] = []

    def a_new_run() -> None:  # a CI run starts, with the commit it builds
        new_run("ci_0", "running")

    def a_deployment() -> None:  # a production run finishes: a new deployment (lead times change)
        finish(pending.pop())

    def a_stage_rerun() -> None:  # an old run's stage runs again: a new stage row, the old run row changes
        now = time.time()
        with ws.store.write() as conn:
            _, st = ids(conn)
            n = conn.execute(sa.text("SELECT coalesce(max(counter), 1) FROM stage_runs WHERE pipeline_run_id = :r "
                                     "AND name = 'test'"), {"r": ci_run}).scalar_one()
            conn.execute(sa.text(
                "INSERT INTO stage_runs (id, pipeline_run_id, name, position, counter, status, approval_type, "
                "created_at, started_at, finished_at) VALUES (:i, :r, 'test', 1, :n, 'passed', 'success', :t, :t, :t)"),
                {"i": st + 1, "r": ci_run, "n": int(n) + 1, "t": now})
            conn.execute(sa.text("UPDATE pipeline_runs SET status = 'passed', finished_at = :t WHERE id = :r"),
                         {"r": ci_run, "t": now})

    def a_rollback() -> None:  # a production run is rolled back (a small table, read whole)
        from workbench.traffic.state import rollbacks

        with ws.store.write() as conn:
            conn.execute(rollbacks.insert().values(at=time.time(), run_id=prod_run, pipeline=PROD[0], counter=1,
                                                   route="shop", by="bench", automatic=False))

    def a_deletion() -> None:  # a retention script deletes an old stage run: the stage table is read whole again
        with ws.store.write() as conn:
            sid = conn.execute(sa.text("SELECT min(id) FROM stage_runs")).scalar_one()
            conn.execute(sa.text("DELETE FROM job_runs WHERE stage_run_id = :s"), {"s": sid})
            conn.execute(sa.text("DELETE FROM stage_runs WHERE id = :s"), {"s": sid})

    nothing = lambda: None  # noqa: E731
    return {"a new incident": (nothing, touch), "a new CI run (+commit)": (nothing, a_new_run),
            "a run finishing (deployment)": (lambda: pending.append(new_run(PROD[0], "running")), a_deployment),
            "a stage rerun of an old run": (nothing, a_stage_rerun), "a rollback": (nothing, a_rollback),
            "a deletion (stage read whole)": (nothing, a_deletion)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000", help="job runs per synthetic history")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dashboard-runs", type=int, default=10000, help="pipeline runs in the dashboard's store")
    args = ap.parse_args(argv)
    print(f"pandas {pd.__version__}, numpy {np.__version__}; medians of {args.repeat} runs after a warm-up")
    print("\n1. every metric over the history (in memory)")
    for size in [int(s) for s in args.sizes.split(",")]:
        h, rule = synthetic(size)
        ours = timed(lambda: everything(h, rule), args.repeat)
        base = timed(lambda: naive(h, rule), 1 if size >= 1_000_000 else args.repeat)
        target = 1.0 if size >= 1_000_000 else None
        row(f"{size:>9,} job runs ({len(h.runs):,} pipeline runs)", ours, base, target, "per-row loop")

    print(f"\n2./3. dashboard and chart data over a SQLite store of {args.dashboard_runs:,} pipeline runs")
    h, rule = synthetic(args.dashboard_runs * len(STAGES) * JOBS_PER_STAGE)
    with tempfile.TemporaryDirectory(prefix="wb-bench-") as tmp:
        ws = store_workspace(Path(tmp), h)
        from workbench.dashboard import charts
        from workbench.dashboard.widgets import Dashboard
        from workbench.metrics import metrics_from_workspace

        from workbench.dashboard.chartdata import ChartSource
        from workbench.store import schema as S

        dash = Dashboard(ws, user="alice", autostart=False)
        full = lambda: (ws.frames.pipeline_runs, ws.frames.stage_runs)  # noqa: E731
        row("dashboard live refresh", timed(dash.refresh_live, args.repeat), timed(full, args.repeat), 0.3,
            "read run+stage frames")

        # the baseline: what the dashboard did before (and what a notebook does): every chart reads the
        # store and computes the metrics it needs on its own
        def before(chart: str) -> Callable[[], Any]:
            def fn() -> Any:
                if chart == "gantt":
                    stages, jobs = source.run_frames(ws.store, run_id)
                    return charts.gantt_data(stages, jobs, run_id)
                if chart == "value stream":
                    f = ws.frames
                    return charts.value_stream_data(History.of(runs=f.pipeline_runs, commits=f.commits,
                                                               provenance=f.provenance), run_id)
                m = metrics_from_workspace(ws, jobs=False)
                return {"lead time": lambda: charts.lead_time_data(m.lead_times, m.period, "W"),
                        "deployment frequency": lambda: m.frequency("W"),
                        "change fail rate": lambda: charts.rate_data(m.deployments, "failed_change", m.period, "W"),
                        "recovery time": lambda: charts.recovery_data(m.deployments, m.period),
                        "rework rate": lambda: charts.rate_data(m.deployments, "rework", m.period, "W"),
                        "stage durations": lambda: charts.stage_duration_data(m.stage_times)}[chart]()
            return fn

        from workbench.dashboard import source

        run_id = int(h.runs.loc[h.runs["pipeline"] == PROD[0], "run_id"].iloc[-1])
        cs = ChartSource(ws)
        ours = {"lead time": lambda: cs.lead_time(0, "W"), "deployment frequency": lambda: cs.frequency(0, "W"),
                "change fail rate": lambda: cs.change_fail_rate(0, "W"), "recovery time": lambda: cs.recovery(0),
                "rework rate": lambda: cs.rework_rate(0, "W"), "stage durations": lambda: cs.stage_durations(0),
                "gantt": lambda: cs.gantt(run_id), "value stream": lambda: cs.value_stream(run_id)}

        def touch() -> None:  # a new incident: the charts' data must be computed again
            with ws.store.write() as conn:
                conn.execute(sa.text("UPDATE incidents SET note = :n WHERE id = 1"), {"n": str(time.time())})
                conn.execute(sa.text("INSERT INTO incidents (title, severity, opened_at, opened_by) "
                                     "VALUES ('bench', 'minor', :t, 'bench')"), {"t": time.time()})

        def after_change() -> None:
            touch()
            cs.all(0, "W")

        del S
        print(f"   chart data: ours = from the dashboard's ChartSource (reads only what changed since the last "
              f"version, recomputes what depends on it, then cached); baseline = each chart reads the store and "
              f"computes on its own; load average {_load()}")
        cs.all(0, "W")
        for name, fn in ours.items():
            changed, same = [], []
            for _ in range(args.repeat):
                touch()  # a new version: this chart's data includes detecting it, reading what changed, computing
                t = time.perf_counter()
                fn()
                changed.append(time.perf_counter() - t)
                cs.all(0, "W")  # the dashboard's refresh has drawn every chart of this version
                t = time.perf_counter()
                fn()  # asked again, nothing changed (the period or bucket dropdown, a redraw)
                same.append(time.perf_counter() - t)
            base = timed(before(name), args.repeat)
            row(f"{name}: after a store change", statistics.median(changed), base, 0.2, "read+compute alone")
            row(f"{name}: store unchanged", statistics.median(same), base, 0.2, "read+compute alone")
        row("all charts' data after a store change", timed(after_change, args.repeat),
            timed(lambda: [before(n)() for n in ours], 1), None, "each chart alone")
        print(f"   (incl. the change itself: one write; the new version's read and computation is shared by "
              f"every chart; load average {_load()})")

        print("   after each kind of change (the first chart asked, lead time, and then all six charts; "
              "how the tables were brought up to date):")
        base_lead = timed(before("lead time"), args.repeat)
        for kind, (prepare, change) in _changes(ws, h, touch).items():
            first, every, how = [], [], {}
            for _ in range(args.repeat):
                prepare()
                cs.all(0, "W")  # the dashboard has drawn the store as it was before the change
                change()
                t = time.perf_counter()
                cs.lead_time(0, "W")
                first.append(time.perf_counter() - t)
                how = {k: v for k, v in cs.live.stats.how.items() if v != "skip"}
                t = time.perf_counter()
                cs.all(0, "W")
                every.append(first[-1] + time.perf_counter() - t)
            row(f"{kind}: lead time chart", statistics.median(first), base_lead, 0.2, "read+compute alone")
            row(f"{kind}: all six charts", statistics.median(every), base_lead * 6, None, "each chart alone")
            print(f"      {' '.join(f'{k}={v}' for k, v in how.items())}", flush=True)
        print(f"   load average {_load()}")
        cs.close()
        dash.close()
        ws.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
