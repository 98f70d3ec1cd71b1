"""A year of run history, written in bulk: issue 17's history workload.

``write_history(ws, job_runs=1_000_000)`` fills a workspace's store (SQLite or
PostgreSQL, whatever the workspace uses) with finished pipeline runs, their
stage runs and job runs, spread over the year before ``end``; plus approvals
(audit rows and ``approved_by`` on the stages with a manual approval),
traffic moves, incidents blamed on runs and deployment marks.

This is the documented bulk path (benchmarks/README.md): not a million runs
of the engine, but rows inserted through the store's own SQLAlchemy tables
(``workbench.store.schema`` and the features' tables, so the columns, types
and migrations are the store's) in batches of ``batch`` rows per statement
and a transaction per batch of pipeline runs. ``pipeline_counters`` is moved
on, so a later trigger continues the counters. Runs start at the next free id
and counter: writing into a workspace that already has runs adds to them.

Every hundredth pipeline is busy (ten times the share of the others), so
``history -n 50`` of one pipeline has fifty runs to show at any size.
Deterministic for the same arguments.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

YEAR = 365 * 86400.0


@dataclass(frozen=True)
class HistoryCounts:
    pipeline_runs: int
    stage_runs: int
    job_runs: int
    approvals: int
    traffic_moves: int
    incidents: int
    marks: int
    seconds: float


def _shares(names: list[str], total: int, rng: random.Random) -> dict[str, int]:
    weights = [10.0 if i % 100 == 0 else 1.0 for i in range(len(names))]
    scale = total / sum(weights)
    return {n: max(1, round(w * scale * rng.uniform(0.8, 1.2))) for n, w in zip(names, weights)}


FAILS = 0.08  # the share of runs that fail, at a stage drawn uniformly


def _expected_jobs(p: Any) -> float:
    """The mean number of job runs one run of ``p`` writes: a failed run stops at its failing stage, so
    dividing by the full count (as before) wrote 963,415 job runs when a million were asked for."""
    per_stage = [len(s.jobs) for s in p.stages]
    full = sum(per_stage)
    partial = sum(sum(per_stage[: k + 1]) for k in range(len(per_stage))) / max(1, len(per_stage))
    return max(1.0, (1 - FAILS) * full + FAILS * partial)


def write_history(ws: Any, job_runs: int = 1_000_000, *, end: float | None = None, batch: int = 5000,
                  seed: int = 17, progress: Any = None) -> HistoryCounts:
    """Write about ``job_runs`` finished job runs (with everything around them) into ``ws.store``."""
    from workbench import features
    from workbench.approvals import audit
    from workbench.metrics_store import deployment_marks, incidents
    from workbench.store import schema as S
    from workbench.traffic.state import traffic_changes

    features.load()  # every feature's tables are in the store's migrations
    started = time.perf_counter()
    rng = random.Random(seed)
    end = time.time() if end is None else end
    cfg = ws.config
    pipelines = [cfg.pipelines[n] for n in sorted(cfg.pipelines)]
    jobs_per_run = {p.name: _expected_jobs(p) for p in pipelines}
    runs_of = _shares([p.name for p in pipelines], job_runs, rng)
    runs_of = {n: max(1, round(c / jobs_per_run[n])) for n, c in runs_of.items()}
    store = ws.store
    pr, sr, jr, pc = S.pipeline_runs, S.stage_runs, S.job_runs, S.pipeline_counters
    with store.read() as conn:
        next_run = int(conn.execute(sa.select(sa.func.max(pr.c.id))).scalar() or 0) + 1
        next_stage = int(conn.execute(sa.select(sa.func.max(sr.c.id))).scalar() or 0) + 1
        next_job = int(conn.execute(sa.select(sa.func.max(jr.c.id))).scalar() or 0) + 1
        counters = dict(conn.execute(sa.select(pc.c.pipeline, pc.c.counter)).all())
    counts = dict(pipeline_runs=0, stage_runs=0, job_runs=0, approvals=0, traffic_moves=0, incidents=0, marks=0)
    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in ("pr", "sr", "jr", "audit", "traffic", "inc", "mark")}
    tables = {"pr": pr, "sr": sr, "jr": jr, "audit": audit, "traffic": traffic_changes, "inc": incidents,
              "mark": deployment_marks}

    def flush(final: bool = False) -> None:
        if not final and len(rows["jr"]) < batch * 4:
            return
        with store.write() as conn:
            for key in ("pr", "sr", "jr", "audit", "traffic", "inc", "mark"):  # parents before children
                for i in range(0, len(rows[key]), batch):
                    conn.execute(tables[key].insert(), rows[key][i:i + batch])
                rows[key].clear()
        if progress:
            progress(counts)

    for p in pipelines:
        n = runs_of[p.name]
        base = int(counters.get(p.name, 0))
        times = sorted(end - YEAR + rng.random() * (YEAR - 3600) for _ in range(n))
        for k, t0 in enumerate(times, start=1):
            counter = base + k
            failed_at = len(p.stages) if rng.random() >= FAILS else rng.randrange(len(p.stages))
            status = "passed" if failed_at == len(p.stages) else "failed"
            t = t0 + rng.uniform(1, 30)
            run_id = next_run
            next_run += 1
            stage_rows = []
            for pos, st in enumerate(p.stages[: failed_at + 1]):
                s_status = "passed" if pos < failed_at else "failed"
                s_start = t
                manual = st.approval.type == "manual"
                approved_by = None
                if manual or (pos and rng.random() < 0.05):
                    approved_by = rng.choice(("alice", "bob", "carol"))
                    rows["audit"].append(dict(at=s_start, user=approved_by, action="approve",
                                              target=f"{p.name}/{counter}/{st.name}", pipeline=p.name,
                                              counter=counter, stage=st.name, comment=None, outcome="ok",
                                              detail=None))
                    counts["approvals"] += 1
                for job in st.jobs:
                    j_start = t
                    t += rng.uniform(2, 120)
                    j_status = s_status if job is st.jobs[-1] else "passed"
                    rows["jr"].append(dict(
                        id=next_job, stage_run_id=next_stage, name=job.name, run_index=1, run_count=1,
                        status=j_status, agent="local", exit_code=0 if j_status == "passed" else 1,
                        reason=None if j_status == "passed" else "exit status 1", log_path=None, owner=None,
                        heartbeat_at=None, created_at=j_start, started_at=j_start, finished_at=t))
                    next_job += 1
                    counts["job_runs"] += 1
                stage_rows.append(dict(
                    id=next_stage, pipeline_run_id=run_id, name=st.name, position=pos, counter=1, status=s_status,
                    approval_type="manual" if manual else "success", approved_by=approved_by,
                    reason=None if s_status == "passed" else "a job failed",
                    created_at=s_start, started_at=s_start, finished_at=t))
                next_stage += 1
                counts["stage_runs"] += 1
            rows["pr"].append(dict(
                id=run_id, pipeline=p.name, counter=counter, label=str(counter), group_name=p.group,
                trigger=rng.choice(("material", "material", "material", "dependency", "manual", "timer")),
                triggered_by="changes", status=status, reason=None if status == "passed" else "stage failed",
                revisions={}, revision_key=f"history:{counter}", environment=None,
                created_at=t0, started_at=t0, finished_at=t))
            rows["sr"].extend(stage_rows)
            counts["pipeline_runs"] += 1
            if status == "passed" and rng.random() < 0.02:
                rows["traffic"].append(dict(
                    at=t, route=f"route-{p.name}", provider="bench", from_weights={"blue": 100},
                    to_weights={"blue": 0, "green": 100}, stack="green", weight=100, actor=f"run {p.name}/{counter}",
                    run_id=run_id, pipeline=p.name, counter=counter, stage=p.stages[-1].name, reason="rollout",
                    outcome="ok", error=None))
                counts["traffic_moves"] += 1
            if status == "passed" and rng.random() < 0.002:
                rows["inc"].append(dict(title=f"{p.name}/{counter} broke checkout", severity="major",
                                        opened_at=t + 600, resolved_at=t + 4000, caused_by=run_id,
                                        opened_by="oncall", resolved_by="oncall", note=None))
                rows["mark"].append(dict(pipeline_run_id=run_id, mark="unplanned", incident_id=None,
                                         marked_by="oncall", marked_at=t + 700, note="after an incident"))
                counts["incidents"] += 1
                counts["marks"] += 1
            flush()
        counters[p.name] = base + n
    flush(final=True)
    with store.write() as conn:
        names = list(runs_of)
        conn.execute(sa.delete(pc).where(pc.c.pipeline.in_(names)))
        for i in range(0, len(names), batch):
            conn.execute(pc.insert(), [{"pipeline": n, "counter": counters[n]} for n in names[i:i + batch]])
    return HistoryCounts(**counts, seconds=time.perf_counter() - started)


def main() -> int:
    import argparse
    from pathlib import Path

    from workbench.workspace import Workspace

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--job-runs", type=int, default=1_000_000)
    args = ap.parse_args()
    ws = Workspace.open(args.workspace)
    got = write_history(ws, args.job_runs, progress=lambda c: print(f"  {c['job_runs']:,} job runs", flush=True))
    print(got)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
