"""Helpers shared by the reliability tests (faults, load, security, hostile input).

* a real ``command`` traffic provider: a small program that keeps the served
  weights in a JSON file (and fails on demand), so tests can compare the
  weights the store recorded with the weights "the load balancer" serves;
* the invariants every fault and load test checks on a store;
* figures printed and kept under ``test-artifacts/reliability/`` for RELIABILITY.md.
"""
from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FIGURES = REPO / "test-artifacts" / "reliability"

LB = r'''
import json, os, sys, time
mode, state = sys.argv[1], sys.argv[2]
if mode == "read":
    try:
        print(json.dumps(json.load(open(state))))
    except FileNotFoundError:
        print(json.dumps({"blue": 100, "green": 0}))
    sys.exit(0)
if os.path.exists(state + ".fail"):
    print("the load balancer refused the change (backend down)", file=sys.stderr)
    sys.exit(1)
delay = float(os.environ.get("LB_DELAY", "0") or 0)
if delay:
    time.sleep(delay)
weights = {k: int(v) for k, v in (a.split("=", 1) for a in sys.argv[4:])}
tmp = f"{state}.{os.getpid()}.tmp"
with open(tmp, "w") as fh:
    json.dump(weights, fh)
os.replace(tmp, state)
'''


def command_route(folder: Path, name: str = "shop") -> tuple[dict[str, Any], Path]:
    """A ``routes:`` entry for the command provider, and the file holding what it serves."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "lb.py"
    script.write_text(LB)
    state = folder / f"{name}-served.json"
    route = {"provider": "command", "stacks": {"blue": "127.0.0.1:8001", "green": "127.0.0.1:8002"},
             "argv": [sys.executable, str(script), "set", str(state)],
             "read": [sys.executable, str(script), "read", str(state)]}
    return route, state


def served(state: Path) -> dict[str, int]:
    try:
        return {k: int(v) for k, v in json.loads(state.read_text()).items()}
    except FileNotFoundError:
        return {"blue": 100, "green": 0}


def cli_in_process(root: Path, *args: str) -> tuple[int, str]:
    """``workbench ARGS`` in this process: the same click command without paying a second start-up.

    Any exception other than the command's own exit is a failure (in a real
    process it would have been a traceback).
    """
    from click.testing import CliRunner

    from workbench.cli import main

    result = CliRunner().invoke(main, ["-w", str(root), *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception)
    return result.exit_code, result.output


def record_figures(name: str, figures: dict[str, Any]) -> None:
    """Print the figures and keep them for RELIABILITY.md (test-artifacts/ is not committed)."""
    print(f"\n[{name}] " + ", ".join(f"{k}: {v}" for k, v in figures.items()))
    FIGURES.mkdir(parents=True, exist_ok=True)
    (FIGURES / f"{name}.json").write_text(json.dumps({**figures, "at": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1))


FINISHED = {"passed", "failed", "cancelled", "rejected"}


def invariant_violations(db: Path, *, served_weights: dict[str, dict[str, int]] | None = None,
                         traffic_stages: set[tuple[str, str]] | None = None) -> list[str]:
    """Everything wrong with the store at ``db`` after recovery; [] when every invariant holds.

    * ``PRAGMA integrity_check`` is ok and no foreign key dangles;
    * every run is finished (failed/cancelled/rejected ones with a reason), or
      waits for a person at a stage that is WAITING;
    * no stage or job is left scheduled or running;
    * per pipeline the counters are 1..N with none skipped or reused, and the
      counter table agrees;
    * no revision set triggered twice (material and timer runs);
    * each approval applied once: an audited ``approve ok`` matches a stage run
      approved by that person that left WAITING, no stage run has two, and no
      approved stage lacks its audit row; rejected stages, rollbacks and manual
      traffic moves match their ``ok`` audit rows one for one;
    * traffic: the weights recorded in the store are the ones the provider
      serves, and every passed stage with a ``traffic:`` step moved its route.
    """
    out: list[str] = []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        verdict = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if verdict != "ok":
            return [f"integrity_check: {verdict}"]
        for row in conn.execute("PRAGMA foreign_key_check"):
            out.append(f"dangling foreign key in {row[0]} (rowid {row[1]})")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        runs = [dict(r) for r in conn.execute("SELECT * FROM pipeline_runs ORDER BY id")]
        stages = [dict(r) for r in conn.execute("SELECT * FROM stage_runs ORDER BY id")]
        jobs = [dict(r) for r in conn.execute("SELECT * FROM job_runs ORDER BY id")]
        by_run: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for s in stages:
            by_run[s["pipeline_run_id"]].append(s)
        for r in runs:
            where = f"{r['pipeline']}/{r['counter']}"
            if r["status"] in FINISHED:
                if r["status"] != "passed" and not r["reason"]:
                    out.append(f"{where} is {r['status']} without a reason")
            elif r["status"] == "waiting":
                if not any(s["status"] == "waiting" for s in by_run[r["id"]]):
                    out.append(f"{where} is waiting but none of its stages is")
            else:
                out.append(f"{where} is still {r['status']} after recovery")
        for s in stages:
            if s["status"] in ("scheduled", "running"):
                out.append(f"stage run {s['id']} ({s['name']}) is still {s['status']}")
            elif s["status"] in ("failed", "cancelled") and not s["reason"]:
                out.append(f"stage run {s['id']} ({s['name']}) is {s['status']} without a reason")
        for j in jobs:
            if j["status"] in ("scheduled", "running"):
                out.append(f"job run {j['id']} ({j['name']}) is still {j['status']}")
        counters = {r[0]: r[1] for r in conn.execute("SELECT pipeline, counter FROM pipeline_counters")}
        per_pipeline: dict[str, list[int]] = defaultdict(list)
        for r in runs:
            per_pipeline[r["pipeline"]].append(r["counter"])
        for name, got in per_pipeline.items():
            if sorted(got) != list(range(1, len(got) + 1)):
                out.append(f"{name}: counters {sorted(got)} skip or repeat one")
            if counters.get(name) != len(got):
                out.append(f"{name}: counter table says {counters.get(name)}, {len(got)} runs exist")
        seen: dict[tuple[str, str], str] = {}
        for r in runs:
            if r["trigger"] == "manual":
                continue
            key = (r["pipeline"], r["revision_key"] or json.dumps(r["revisions"], sort_keys=True))
            if key in seen:
                out.append(f"{r['pipeline']}/{r['counter']} triggered again for the revisions of {seen[key]}")
            seen[key] = f"{r['pipeline']}/{r['counter']}"
        if "audit" in tables:
            out += _approval_violations(conn, runs, stages)
        if "traffic_routes" in tables:
            out += _traffic_violations(conn, runs, stages, served_weights or {}, traffic_stages or set())
    finally:
        conn.close()
    return out


def _approval_violations(conn: sqlite3.Connection, runs: list[dict[str, Any]],
                         stages: list[dict[str, Any]]) -> list[str]:
    out = []
    run_of = {r["id"]: r for r in runs}
    approved: dict[tuple[str, int, str], list[dict[str, Any]]] = defaultdict(list)
    for s in stages:
        if s["approval_type"] == "manual" and s["approved_by"] and s["status"] not in ("waiting", "rejected"):
            r = run_of[s["pipeline_run_id"]]
            approved[(r["pipeline"], r["counter"], s["name"])].append(s)
    oks: dict[tuple[str, int, str], list[str]] = defaultdict(list)
    for a in conn.execute("SELECT * FROM audit WHERE action = 'approve' AND outcome = 'ok'"):
        oks[(a["pipeline"], a["counter"], a["stage"])].append(a["user"])
    for key, users in oks.items():
        got = approved.get(key, [])
        if not got:
            out.append(f"approval of {'/'.join(map(str, key))} by {users[0]} was lost (the stage never left waiting)")
        if len(users) > len(got):
            out.append(f"{'/'.join(map(str, key))} approved {len(users)} times for {len(got)} stage run(s)")
        if got and got[-1]["approved_by"] not in users:
            out.append(f"{'/'.join(map(str, key))} approved by {got[-1]['approved_by']}, audited for {users}")
    for key, got in approved.items():
        if key not in oks:
            out.append(f"{'/'.join(map(str, key))} was approved by {got[0]['approved_by']} with no audit row")
    # rejections, rollbacks and manual traffic moves: each state change has exactly its audit row
    # (they are written in one transaction; any gap, even one statement wide, is a violation)
    rejected = sorted((run_of[s["pipeline_run_id"]]["pipeline"], run_of[s["pipeline_run_id"]]["counter"], s["name"],
                       s["approved_by"]) for s in stages if s["status"] == "rejected" and s["approved_by"])
    audited = sorted((a["pipeline"], a["counter"], a["stage"], a["user"]) for a in conn.execute(
        "SELECT * FROM audit WHERE action = 'reject' AND outcome = 'ok'"))
    if rejected != audited:
        out.append(f"rejected stages {rejected} but audited rejections {audited}")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "rollbacks" in tables:
        rolled = sorted({(r["pipeline"], r["counter"], r["by"]) for r in conn.execute("SELECT * FROM rollbacks")})
        audited = sorted((a["pipeline"], a["counter"], a["user"]) for a in conn.execute(
            "SELECT * FROM audit WHERE action = 'rollback' AND outcome = 'ok'"))
        if rolled != audited:
            out.append(f"rollbacks {rolled} but audited rollbacks {audited}")
    if "traffic_changes" in tables:
        by_hand = sorted(r["actor"] for r in conn.execute(
            "SELECT actor FROM traffic_changes WHERE outcome = 'ok' AND run_id IS NULL AND actor != 'workbench'"))
        audited = sorted(a["user"] for a in conn.execute(
            "SELECT * FROM audit WHERE action = 'traffic' AND outcome = 'ok'"))
        if by_hand != audited:
            out.append(f"traffic moved by hand by {by_hand} but audited for {audited}")
    return out


def _traffic_violations(conn: sqlite3.Connection, runs: list[dict[str, Any]], stages: list[dict[str, Any]],
                        served_weights: dict[str, dict[str, int]], traffic_stages: set[tuple[str, str]]) -> list[str]:
    out = []
    for row in conn.execute("SELECT route, weights FROM traffic_routes"):
        recorded = {k: int(v) for k, v in json.loads(row["weights"]).items()}
        if row["route"] in served_weights and served_weights[row["route"]] != recorded:
            out.append(f"route {row['route']}: the store says {recorded}, the provider serves {served_weights[row['route']]}")
    for route, weights in served_weights.items():
        if weights.get("blue") != 100 and not conn.execute("SELECT 1 FROM traffic_routes WHERE route = ?", (route,)).fetchone():
            out.append(f"route {route}: the provider serves {weights} but the store has never recorded a move")
    moved = {(r["run_id"], r["stage"]) for r in conn.execute("SELECT run_id, stage FROM traffic_changes WHERE outcome = 'ok'")}
    run_of = {r["id"]: r for r in runs}
    for s in stages:
        r = run_of[s["pipeline_run_id"]]
        if s["status"] == "passed" and (r["pipeline"], s["name"]) in traffic_stages and (r["id"], s["name"]) not in moved:
            out.append(f"{r['pipeline']}/{r['counter']}/{s['name']} passed but never moved its traffic")
    return out
