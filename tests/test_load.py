"""Load: 50 pipelines triggered together (1,000 jobs), two schedulers at once, two approvers at once.

Two separate processes schedule the same workspace at the same time (a
``workbench serve`` and ``workbench tick`` passes); the store's compare-and-set
claims must make every run, stage and job happen exactly once. Then pairs of
people approve the same stage at the same instant from separate processes:
exactly one approval wins each time.

Figures (runs/min, p95 stage-to-stage latency, peak memory of the schedulers)
are printed, never asserted. ``--soak-seconds N`` runs a bigger variant.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from reliability_fixtures import invariant_violations, record_figures

pytestmark = pytest.mark.timeout(900)


def pipelines_yaml(url: str, pipelines: int, stages: int, jobs: int) -> str:
    job = "{tasks: [exec: {command: 'true'}]}"
    stage_items = "\n".join(
        f"      - s{i}:\n          jobs:\n" + "".join(f"            j{k}: {job}\n" for k in range(jobs))
        for i in range(stages))
    return "pipelines:\n" + "".join(
        f"  p{n:03d}:\n    materials:\n      code: {{git: {json.dumps(url)}}}\n    stages:\n{stage_items}"
        for n in range(pipelines))


class Peak:
    """Peak RSS of some processes, sampled every 0.1 s from another thread."""

    def __init__(self) -> None:
        self.procs: list[psutil.Process] = []
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def watch(self, pid: int) -> None:
        try:
            self.procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            for p in list(self.procs):
                try:
                    self.peak_mb = max(self.peak_mb, p.memory_info().rss / 1e6)
                except psutil.Error:
                    self.procs.remove(p)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_mb


def p95(values: list[float]) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))] if values else float("nan")


def test_fifty_pipelines_a_thousand_jobs_two_schedulers(workspace: Any, git_repo: Any, soak_seconds: float) -> None:
    pipelines, stages, jobs = (50, 2, 10) if not soak_seconds else (100, 3, 10)
    repo = git_repo("app")
    workspace.write("many.yaml", pipelines_yaml(repo.url, pipelines, stages, jobs))
    (workspace.root / "workbench.yaml").write_text("executor: {kind: local, max_parallel: 8}\n")
    env = {**os.environ, "WORKBENCH_WORKSPACE": str(workspace.root), "COLUMNS": "200"}
    peak = Peak()
    started = time.time()
    from procs import kill_group, popen

    # signals reset in the child: the suite may run with SIGINT ignored (nohup … &), issue 16 defect 13
    serve = popen([sys.executable, "-m", "workbench", "serve", "--interval", "2", "-q"], cwd=workspace.root,
                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak.watch(serve.pid)
    ticks = 0
    db = workspace.root / ".workbench" / "store.db"
    try:
        while True:  # the second scheduler: tick after tick, at the same time as the serve
            tick = subprocess.Popen([sys.executable, "-m", "workbench", "tick"], cwd=workspace.root, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            peak.watch(tick.pid)
            out, err = tick.communicate(timeout=600)
            ticks += 1
            assert tick.returncode == 0 and "Traceback" not in err, (out, err)
            assert serve.poll() is None, serve.communicate()
            finished = _count(db, "SELECT count(*) FROM pipeline_runs WHERE status IN ('passed', 'failed')")
            if finished >= pipelines:
                break
            assert time.time() - started < 600, "the load did not finish in 10 minutes"
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            s_out, s_err = serve.communicate(timeout=120)
        finally:
            kill_group(serve)
    elapsed = time.time() - started
    peak_mb = peak.stop()
    assert "Traceback" not in s_err, s_err
    with workspace.open() as ws:
        runs = ws.frames.pipeline_runs
        stage_runs = ws.frames.stage_runs
        job_runs = ws.frames.job_runs
    assert len(runs) == pipelines and set(runs["status"].astype(str)) == {"passed"}, runs[["pipeline", "status"]]
    assert sorted(runs["pipeline"]) == [f"p{n:03d}" for n in range(pipelines)] and set(runs["counter"]) == {1}
    assert len(stage_runs) == pipelines * stages and set(stage_runs["stage_counter"]) == {1}  # no stage twice
    assert len(job_runs) == pipelines * stages * jobs and set(job_runs["status"].astype(str)) == {"passed"}
    assert not job_runs.duplicated(["run_id", "stage", "job"]).any()
    assert invariant_violations(db) == []
    owners = {o for (o,) in _rows(db, "SELECT DISTINCT owner FROM job_runs")}
    # stage-to-stage: from a stage's end to the next stage's start, per run
    gaps = []
    for _, g in stage_runs.sort_values("position").groupby("run_id"):
        ends, starts = list(g["finished_at"])[:-1], list(g["started_at"])[1:]
        gaps += [(b - a).total_seconds() for a, b in zip(ends, starts)]
    first_start = runs["started_at"].min()
    last_end = runs["finished_at"].max()
    busy_minutes = (last_end - first_start).total_seconds() / 60
    record_figures("load" if not soak_seconds else "load_soak", {
        "pipelines": pipelines, "jobs": len(job_runs), "schedulers": 2, "processes that ran jobs": len(owners),
        "tick passes": ticks, "runs/min": round(pipelines / busy_minutes, 1),
        "jobs/s": round(len(job_runs) / (busy_minutes * 60), 1),
        "p95 stage-to-stage latency s": round(p95(gaps), 3), "max stage-to-stage latency s": round(max(gaps), 3),
        "peak scheduler RSS MB": round(peak_mb), "wall seconds": round(elapsed, 1)})


APPROVER = textwrap.dedent("""
    import json, sys, time
    from workbench import Workspace
    from workbench.approvals import approve
    from workbench.errors import WorkbenchError
    root, user, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ws = Workspace.open(root)
    ws.store.pipeline_runs()          # connected and warm before the first moment
    print("ready", flush=True)
    base = float(sys.stdin.readline())  # the same instants for both processes
    for n in range(1, rounds + 1):
        at = base + 0.3 * (n - 1)     # race n: its own instant, 0.3 s after the previous one
        time.sleep(max(at - time.time() - 0.05, 0))
        while time.time() < at:      # the last 50 ms spinning, for precision
            pass
        t = time.time()
        locator = f"gate/{n}/ship"
        try:
            approve(ws, locator, user=user, comment="go", drive=False)
            print(json.dumps({"user": user, "locator": locator, "ok": True, "at": t}), flush=True)
        except WorkbenchError as exc:
            print(json.dumps({"user": user, "locator": locator, "ok": False, "error": str(exc), "at": t}), flush=True)
""")


def test_two_people_approving_the_same_stage_at_the_same_moment(workspace: Any, soak_seconds: float) -> None:
    rounds = 8 if not soak_seconds else 40
    workspace.write("gate.yaml", """
        roles: {release-managers: [alice, bob]}
        pipelines:
          gate:
            stages:
              - build: {jobs: {j: {tasks: [exec: {command: 'true'}]}}}
              - ship:
                  approval: {type: manual, roles: [release-managers]}
                  jobs: {j: {tasks: [exec: {command: 'true'}]}}
        """)
    with workspace.open() as ws:
        for _ in range(rounds):
            assert str(ws.run("gate").status) == "waiting"
    # two processes (alice's and bob's), each with its own connection, race for every stage in turn
    procs = [subprocess.Popen([sys.executable, "-c", APPROVER, str(workspace.root), user, str(rounds)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for user in ("alice", "bob")]
    for p in procs:  # both started, connected and waiting
        assert p.stdout is not None and p.stdout.readline().strip() == "ready", p.communicate()
    base = time.time() + 0.5
    for p in procs:  # the same instants for both: race n at base + 0.3 (n - 1)
        assert p.stdin is not None
        p.stdin.write(f"{base}\n")
        p.stdin.flush()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and "Traceback" not in err, err
        lines = out.strip().splitlines()
        assert len(lines) == rounds, out
        results += [json.loads(line) for line in lines]
    pair_skew = max(abs(a["at"] - b["at"]) for n in range(1, rounds + 1)
                    for a, b in [[r for r in results if r["locator"] == f"gate/{n}/ship"]])
    for n in range(1, rounds + 1):
        pair = [r for r in results if r["locator"] == f"gate/{n}/ship"]
        winners = [r for r in pair if r["ok"]]
        assert len(winners) == 1, pair  # exactly one approval wins
        loser = next(r for r in pair if not r["ok"])
        assert f"already approved by {winners[0]['user']}" in loser["error"], loser
    out = workspace.cli("tick")  # drive the approved stages: each runs once
    assert out.code == 0, out
    with workspace.open() as ws:
        stages = ws.frames.stage_runs
        ships = stages[stages["stage"] == "ship"]
        assert len(ships) == rounds and set(ships["status"].astype(str)) == {"passed"}
        audit = ws.frames.audit
        approvals = audit[audit["action"] == "approve"]
        assert (approvals["outcome"] == "ok").sum() == rounds and (approvals["outcome"] == "refused").sum() == rounds
        for n in range(1, rounds + 1):
            ship = ships[ships["counter"] == n].iloc[0]
            ok = approvals[(approvals["counter"] == n) & (approvals["outcome"] == "ok")]
            assert list(ok["user"]) == [ship["approved_by"]]
    assert invariant_violations(workspace.root / ".workbench" / "store.db") == []
    wins = {u: sum(1 for r in results if r["ok"] and r["user"] == u) for u in ("alice", "bob")}
    record_figures("approval_race", {"stages raced": rounds, "approvals won": wins,
                                     "max skew within a pair ms": round(pair_skew * 1000, 2), "double approvals": 0})


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def _count(db: Path, sql: str) -> int:
    rows = _rows(db, sql) if db.exists() else []
    return int(rows[0][0]) if rows else 0
