"""Fault injection: SIGKILL the scheduling process at random points of real runs, then recover and check.

Each iteration maybe commits to a real git repository, starts a real
``workbench tick`` / ``serve`` / ``run`` / ``approve`` process, kills it with
SIGKILL after a random delay, restarts ``workbench tick`` until nothing is
left scheduled or running, and checks every invariant
(``reliability_fixtures.invariant_violations``): the store's integrity, every
run finished with a reason or waiting for a person, counters without gaps or
repeats, no revision set triggered twice, no approval lost or applied twice,
and the traffic weights in the store equal to what the provider serves.

``make test`` runs a bounded number of kills; ``--soak-seconds N`` (or
``$WORKBENCH_SOAK_SECONDS``) keeps killing for N seconds. The other tests
here: a git remote that goes away, a traffic provider failing mid-rollout, a
notebook kernel that dies, the artifacts disk filling up, a corrupt or locked
store file.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from conftest import require_service
from reliability_fixtures import command_route, invariant_violations, record_figures, served

pytestmark = pytest.mark.timeout(900)

STALE = "6"  # seconds without a heartbeat before a job is an orphan (the engine beats every 5 s)
ENV = {"WORKBENCH_HEARTBEAT_TIMEOUT": STALE, "WORKBENCH_WARM_KERNELS": "0", "COLUMNS": "200"}
TRAFFIC_STAGES = {("deploy", "canary"), ("deploy", "full")}


def release_yaml(repo_url: str, route: dict[str, Any]) -> str:
    def job(seconds: float, text: str) -> dict[str, Any]:
        return {"tasks": [{"script": f"sleep {seconds}; echo {text}"}]}

    doc = {
        "format_version": 10,
        "roles": {"release-managers": ["alice", "bob"]},
        "routes": {"shop": route},
        "pipelines": {
            "build": {
                "materials": {"code": {"git": repo_url}},
                "trigger": "each_commit",
                "stages": [
                    {"compile": {"jobs": {"a": job(0.3, "a"), "b": job(0.4, "b"), "c": job(0.2, "c")}}},
                    {"test": {"jobs": {"unit": job(0.3, "unit"), "lint": job(0.1, "lint")}}},
                ],
            },
            "deploy": {
                "materials": {"up": {"pipeline": "build", "stage": "test"}},
                "stages": [
                    {"package": {"jobs": {"pkg": job(0.2, "pkg")}}},
                    {"canary": {"approval": {"type": "manual", "roles": ["release-managers"]},
                                "traffic": {"route": "shop", "weight": 25}, "jobs": {"go": job(0.2, "canary")}}},
                    {"full": {"approval": {"type": "manual", "roles": ["release-managers"]},
                              "traffic": {"route": "shop", "weight": 100}, "jobs": {"go": job(0.2, "full")}}},
                ],
            },
        },
    }
    return yaml.safe_dump(doc, sort_keys=False)


class Rig:
    """A workspace, its repository and its load balancer; starts, kills and recovers workbench processes."""

    def __init__(self, workspace: Any, repo: Any, lb: Path) -> None:
        self.ws, self.repo = workspace, repo
        self.route, self.state = command_route(lb)
        workspace.write("release.yaml", release_yaml(repo.url, self.route))
        (workspace.root / "workbench.yaml").write_text("executor: {kind: local, max_parallel: 8}\n")
        self.env = {**os.environ, "WORKBENCH_WORKSPACE": str(workspace.root), **ENV}
        self.db = workspace.root / ".workbench" / "store.db"
        self.recovered = 0
        self.tracebacks: list[str] = []

    def start(self, *args: str, user: str = "alice") -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "workbench", *args], cwd=self.ws.root,
                                env={**self.env, "JUPYTERHUB_USER": user}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    def cli(self, *args: str, user: str = "alice", timeout: float = 180) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([sys.executable, "-m", "workbench", *args], cwd=self.ws.root, capture_output=True,
                           text=True, env={**self.env, "JUPYTERHUB_USER": user}, timeout=timeout)
        if "Traceback" in p.stderr:
            self.tracebacks.append(f"{args}: {p.stderr[-2000:]}")
        return p

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        if not self.db.exists():
            return []
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:  # no tables yet
            return []
        finally:
            conn.close()

    def busy(self) -> int:
        return len(self.query("SELECT id FROM pipeline_runs WHERE status IN ('scheduled', 'running')"))

    def waiting_stages(self) -> list[str]:
        return [f"{p}/{c}/{s}" for p, c, s in self.query(
            "SELECT r.pipeline, r.counter, s.name FROM stage_runs s JOIN pipeline_runs r ON r.id = s.pipeline_run_id "
            "WHERE s.status = 'waiting' AND r.status = 'waiting'")]

    def recover(self, deadline: float = 90, *, restart: bool = True) -> int:
        """Restart the scheduler (`workbench tick`) until no run is scheduled or running; returns the ticks.

        ``restart=False``: only when something is left busy (after a tick that ran to its end).
        """
        end = time.monotonic() + deadline
        ticks = 0
        if not restart and not self.busy():
            return 0
        while True:
            out = self.cli("tick")
            ticks += 1
            assert out.returncode in (0, 1), out.stderr[-2000:]
            self.recovered += sum(1 for line in out.stdout.splitlines() if line.startswith("recovered "))
            if not self.busy():
                return ticks
            busy = self.query("SELECT pipeline, counter, status FROM pipeline_runs WHERE status IN ('scheduled', 'running')")
            assert time.monotonic() < end, f"still busy after {deadline}s of recovery: {busy}"
            time.sleep(0.2)  # a tick process takes a second to start anyway

    def violations(self) -> list[str]:
        if not self.db.exists():
            return []
        return invariant_violations(self.db, served_weights={"shop": served(self.state)}, traffic_stages=TRAFFIC_STAGES)


def kill_at_random(rig: Rig, rng: random.Random) -> dict[str, Any]:
    """One iteration: maybe a commit, one process, SIGKILL at a random moment."""
    if rng.random() < 0.7:
        rig.repo.commit({"v.txt": f"{time.time()}"}, "change")
    waiting = rig.waiting_stages()
    roll = rng.random()
    if waiting and roll < 0.3:
        what = ("approve", rng.choice(waiting))
    elif roll < 0.6:
        what = ("tick",)
    elif roll < 0.85:
        what = ("serve", "--interval", "1")
    else:
        what = ("run", "build", "-q")
    proc = rig.start(*what)
    # a process needs ~1.2 s to start; tick/approve/run then work for a second or two, serve until killed
    delay = rng.uniform(1.0, 4.0) if what[0] == "serve" else rng.uniform(0.8, 2.6)
    try:
        proc.wait(timeout=delay)
        alive = False
    except subprocess.TimeoutExpired:
        alive = True
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    out, err = proc.communicate()
    if b"Traceback" in err:
        rig.tracebacks.append(f"{what}: {err.decode()[-2000:]}")
    return {"what": what[0], "delay": round(delay, 2), "killed": alive}


def test_sigkill_the_scheduler_at_random_points_and_nothing_is_lost(workspace: Any, git_repo: Any, tmp_path: Path,
                                                                     soak_seconds: float) -> None:
    seed = int(os.environ.get("WORKBENCH_FAULT_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    rig = Rig(workspace, git_repo("app"), tmp_path / "lb")
    started = time.monotonic()
    want_kills, max_iterations = 8, 14  # bounded: eight processes killed mid-flight (or 14 tries)
    log: list[dict[str, Any]] = []
    while True:
        step = kill_at_random(rig, rng)
        step["ticks"] = rig.recover()
        log.append(step)
        problems = rig.violations()
        assert not problems, f"seed {seed}, after {log[-3:]}: " + "\n".join(problems)
        assert not rig.tracebacks, rig.tracebacks
        killed = sum(1 for s in log if s["killed"])
        if soak_seconds:
            done = time.monotonic() - started >= soak_seconds
        else:
            done = killed >= want_kills or len(log) >= max_iterations
        if done:
            break
    runs = rig.query("SELECT pipeline, status FROM pipeline_runs")
    assert killed >= 3, log  # processes were killed mid-flight, not only after they finished
    assert runs, "nothing ran"
    statuses: dict[str, int] = {}
    for _, status in runs:
        statuses[status] = statuses.get(status, 0) + 1
    record_figures("faults_sigkill", {
        "seed": seed, "iterations": len(log), "SIGKILLs mid-flight": killed,
        "by process": {k: sum(1 for s in log if s["what"] == k and s["killed"]) for k in ("tick", "serve", "run", "approve")},
        "jobs recovered as orphans": rig.recovered, "runs": len(runs), "run statuses": statuses,
        "traffic served": served(rig.state), "invariant checks passed": len(log),
        "seconds": round(time.monotonic() - started, 1)})


def lb_children(state: Path) -> list[psutil.Process]:
    """This test's provider processes applying a change (live ones: other tests may have left theirs behind)."""
    out = []
    for p in psutil.process_iter(["cmdline", "status"]):
        argv = p.info["cmdline"] or []
        if "set" in argv and str(state) in argv and p.info["status"] != psutil.STATUS_ZOMBIE:
            out.append(p)
    return out


@pytest.mark.parametrize("step", ["canary", "full"])  # the route's first move, and a later one
def test_killed_while_the_provider_moves_traffic(workspace: Any, git_repo: Any, tmp_path: Path, step: str) -> None:
    """SIGKILL exactly while the provider applies a step: the step fails, store and provider agree again."""
    rig = Rig(workspace, git_repo("app"), tmp_path / "lb")
    rig.cli("tick")
    rig.recover(restart=False)
    if step == "full":
        assert rig.cli("approve", "deploy/1/canary", "-q").returncode == 0
    before = served(rig.state)
    rig.env["LB_DELAY"] = "1"  # the provider takes 1 s to apply: time to kill the scheduler in the middle
    proc = rig.start("approve", f"deploy/1/{step}", "-q")
    end = time.monotonic() + 60
    while not lb_children(rig.state):
        assert proc.poll() is None and time.monotonic() < end, proc.communicate()
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    for child in lb_children(rig.state):  # the provider's own process finishes its change after the scheduler died
        child.wait(30)
    assert served(rig.state) != before  # the provider did move ...
    del rig.env["LB_DELAY"]
    rig.recover()  # ... and the restarted scheduler fails the step and puts the recorded weights back
    assert served(rig.state) == before
    status, reason = rig.query(f"SELECT status, reason FROM stage_runs WHERE name = '{step}'")[0]
    assert status == "failed" and "died" in reason, (status, reason)
    run_status, run_reason = rig.query("SELECT status, reason FROM pipeline_runs WHERE pipeline = 'deploy'")[0]
    assert run_status == "failed" and step in run_reason
    assert rig.violations() == [] and not rig.tracebacks


# -- a git remote that goes away ---------------------------------------------------------------------

def test_a_git_remote_that_goes_away_is_reported_and_nothing_is_triggered_twice(workspace: Any, git_repo: Any,
                                                                                  tmp_path: Path) -> None:
    repo = git_repo("app")
    rig = Rig(workspace, repo, tmp_path / "lb")
    first = rig.cli("tick")
    assert "triggered build/1" in first.stdout, first
    rig.recover(restart=False)
    gone = Path(repo.path).with_name("app-moved")
    os.rename(repo.path, gone)
    try:
        out = rig.cli("tick")
        assert out.returncode in (0, 1) and "material error: build/code: cannot reach" in out.stdout, out
        code, text = in_process(workspace.root, "status", "--format", "json")
        rows = {r["pipeline"]: r for r in json.loads(text)}
        assert "cannot reach" in rows["build"]["material_errors"][0]["message"]
        assert rig.query("SELECT count(*) FROM pipeline_runs WHERE pipeline = 'build'") == [(1,)]
    finally:
        os.rename(gone, repo.path)
    repo.commit({"v.txt": "back"}, "back")
    again = rig.cli("tick")
    assert "triggered build/2" in again.stdout, again
    rig.recover(restart=False)
    assert rig.cli("tick").stdout.count("triggered build/") == 0  # the same revision never triggers twice
    status = json.loads(in_process(workspace.root, "status", "--format", "json")[1])
    assert {r["pipeline"]: r for r in status}["build"]["material_errors"] == []  # resolved once it answered
    assert rig.violations() == [] and not rig.tracebacks


# -- a traffic provider failing mid-rollout --------------------------------------------------------------

def test_a_traffic_provider_failing_mid_rollout_keeps_weights_consistent(workspace: Any, git_repo: Any,
                                                                         tmp_path: Path) -> None:
    rig = Rig(workspace, git_repo("app"), tmp_path / "lb")
    rig.cli("tick")
    rig.recover(restart=False)
    assert rig.waiting_stages() == ["deploy/1/canary"]
    assert rig.cli("approve", "deploy/1/canary", "-q").returncode == 0
    assert served(rig.state) == {"blue": 75, "green": 25}
    # the provider refuses the next step: the stage fails saying why, the weights stay where they were
    Path(f"{rig.state}.fail").write_text("down")
    out = rig.cli("approve", "deploy/1/full", "-q")
    assert out.returncode == 1 and "failed" in out.stdout, out
    reason = rig.query("SELECT reason FROM stage_runs WHERE name = 'full'")[0][0]
    assert "traffic step failed" in reason and "refused the change" in reason, reason
    assert served(rig.state) == {"blue": 75, "green": 25}
    assert rig.violations() == []
    changes = rig.query("SELECT outcome FROM traffic_changes ORDER BY id")
    assert changes == [("ok",), ("failed",)]  # the failed attempt is recorded too
    # a provider that half-applies and then fails (serves new weights, reports an error)
    Path(f"{rig.state}.fail").unlink()
    rig.state.write_text(json.dumps({"blue": 40, "green": 60}))  # what it serves now, unknown to the store
    problems = rig.violations()
    assert problems and "provider serves" in problems[0]  # the check sees the drift ...
    shown = rig.cli("traffic")  # ... and `workbench traffic` puts the recorded weights back
    assert "re-applied the recorded blue=75% green=25%" in shown.stderr, shown
    assert served(rig.state) == {"blue": 75, "green": 25} and rig.violations() == []
    # the step can be retried once the provider is back
    assert rig.cli("rerun", "deploy/1/full", "-q").returncode == 0
    assert served(rig.state) == {"blue": 0, "green": 100} and rig.violations() == []


# -- a notebook kernel that dies -------------------------------------------------------------------------

def test_a_notebook_kernel_killed_from_outside_fails_the_job_and_the_next_run_works(workspace: Any,
                                                                                      tmp_path: Path) -> None:
    import nbformat

    pid_file = tmp_path / "kernel.pid"
    (workspace.root / "notebooks").mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        f"import os, time, pathlib\nif not pathlib.Path({str(tmp_path / 'spare')!r}).exists():\n"
        f"    pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))\n    time.sleep(120)\nprint('ok')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(workspace.root / "notebooks" / "analysis.ipynb"))
    workspace.write("nb.yaml", "pipelines:\n  nb:\n    stages: [s: {jobs: {j: {tasks: [notebook: {path: notebooks/analysis.ipynb}]}}}]\n")
    env = {**os.environ, "WORKBENCH_WORKSPACE": str(workspace.root), **ENV}
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "run", "nb", "-q"], cwd=workspace.root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 90
    while not pid_file.exists():
        assert proc.poll() is None and time.monotonic() < end, proc.communicate()
        time.sleep(0.05)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in err, (out, err)
    with workspace.open() as ws:
        job = ws.frames.job_runs.iloc[-1]
        assert str(job["status"]) == "failed" and "kernel" in job["reason"] and "died" in job["reason"], job["reason"]
        assert str(ws.store.get_pipeline_run("nb", 1).status) == "failed"
    (tmp_path / "spare").write_text("")
    again = workspace.cli("run", "nb", "-q")
    assert again.code == 0, again
    db = workspace.root / ".workbench" / "store.db"
    assert invariant_violations(db) == []


# -- the artifacts disk fills up -----------------------------------------------------------------------------

@pytest.fixture
def tiny_disk(tmp_path: Path) -> Any:
    """A 2 MB tmpfs (we are root in CI); elsewhere a skip locally, a failure under CI."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    ok = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                                              capture_output=True).returncode == 0
    require_service(ok, "a small tmpfs mount for the artifacts (needs root: mount -t tmpfs)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_the_artifacts_disk_filling_up_fails_the_job_clearly(workspace: Any, tiny_disk: Path) -> None:
    (workspace.root / "workbench.yaml").write_text(f"artifacts: {{url: {tiny_disk}}}\n")
    workspace.write("a.yaml", """
        pipelines:
          big:
            stages:
              - make:
                  jobs:
                    j:
                      tasks: [script: "head -c 1500000 /dev/urandom > one.bin && head -c 1500000 /dev/urandom > two.bin"]
                      artifacts: [build: {source: one.bin}, build: {source: two.bin}]
          small:
            stages:
              - make:
                  jobs:
                    j:
                      tasks: [script: "echo small > s.txt"]
                      artifacts: [build: {source: s.txt}]
        """)
    out = workspace.cli("run", "big", "-q")
    assert out.code == 1 and "Traceback" not in out.err, out
    with workspace.open() as ws:
        job = ws.frames.job_runs.iloc[-1]
        assert str(job["status"]) == "failed"
        assert "No space left on device" in job["reason"] and "cannot store artifact" in job["reason"], job["reason"]
        run = ws.store.get_pipeline_run("big", 1)
        assert str(run.status) == "failed" and run.reason
        assert ws.frames.artifacts.empty  # no row points at a file that is not whole
    # space freed: the next run stores its artifact, and the history is intact
    for f in tiny_disk.rglob("*"):
        if f.is_file():
            f.unlink()
    assert workspace.cli("run", "small", "-q").code == 0
    with workspace.open() as ws:
        assert list(ws.frames.artifacts["path"]) == ["s.txt"]
    assert invariant_violations(workspace.root / ".workbench" / "store.db") == []


# -- a corrupt or locked store ----------------------------------------------------------------------------------

def in_process(root: Path, *args: str) -> tuple[int, str]:
    """``workbench ARGS`` in this process (the same click command, without a second start-up)."""
    from click.testing import CliRunner

    from workbench.cli import main

    result = CliRunner().invoke(main, ["-w", str(root), *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_a_corrupt_or_locked_store_is_a_clear_error_never_a_silent_reset(workspace: Any, tmp_path: Path) -> None:
    """Locked: a writer waits for the lock, then exits 4; corrupt (four ways): exit 4, the file untouched."""
    from conftest import WorkspaceFactory

    pipeline = "pipelines: {p: {stages: [s: {jobs: {j: {tasks: [exec: {command: 'true'}]}}}]}}\n"
    locked_ws = WorkspaceFactory(tmp_path / "locked")
    locked_ws.write("p.yaml", pipeline)
    assert locked_ws.cli("run", "p", "-q").code == 0
    locked_db = locked_ws.root / ".workbench" / "store.db"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, sys, time\n"
        f"c = sqlite3.connect({str(locked_db)!r}, isolation_level=None)\n"
        "c.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\ntime.sleep(120)\n")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    env = {**os.environ, "WORKBENCH_WORKSPACE": str(locked_ws.root), "WORKBENCH_STORE_BUSY_TIMEOUT": "5"}
    started = time.monotonic()
    waiter = subprocess.Popen([sys.executable, "-m", "workbench", "run", "p", "-q"], cwd=locked_ws.root, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # meanwhile (the writer waits for the lock): the corrupt files, in another workspace
        tried = corrupt_store_checks(workspace)
        out, err = waiter.communicate(timeout=120)
        waited = time.monotonic() - started
    finally:
        holder.kill()
        holder.communicate()
        if waiter.poll() is None:
            waiter.kill()
            waiter.communicate()
    assert waiter.returncode == 4 and "locked" in err and "Traceback" not in err, (out, err)
    assert waited >= 5  # it waited for the lock (the busy timeout, 30 s unless set) before giving up
    code, text = in_process(locked_ws.root, "history", "--format", "json")
    assert code == 0 and [r["counter"] for r in json.loads(text)] == [1]  # nothing lost, nothing half-written
    assert invariant_violations(locked_db) == []
    record_figures("faults_store", {"corruptions": 4, "commands tried on them": tried, "silent resets": 0,
                                    "locked store: seconds waited before exit 4": round(waited, 1)})


def corrupt_store_checks(workspace: Any) -> int:
    workspace.write("p.yaml", "pipelines: {p: {stages: [s: {jobs: {j: {tasks: [exec: {command: 'true'}]}}}]}}\n")
    for _ in range(3):
        assert in_process(workspace.root, "run", "p", "-q")[0] == 0
    db = workspace.root / ".workbench" / "store.db"
    good = db.read_bytes()
    page = 4096

    def header(data: bytes) -> bytes:
        return b"this is not a database".ljust(100, b"\0") + data[100:]

    def truncated(data: bytes) -> bytes:
        return data[: len(data) // 2 + 17]

    def wrecked_pages(data: bytes) -> bytes:
        return data[:page] + bytes((b * 7 + 13) % 256 for b in data[page:])

    def zeroed(data: bytes) -> bytes:
        return b"\0" * len(data)

    tried = 0
    for harm in (header, truncated, wrecked_pages, zeroed):
        bad = harm(good)
        db.write_bytes(bad)
        for name in ("store.db-wal", "store.db-shm"):
            (db.parent / name).unlink(missing_ok=True)
        digest = hashlib.sha256(bad).hexdigest()
        real = workspace.cli("run", "p", "-q")  # a real process ...
        assert real.code == 4 and "store" in real.err and "Traceback" not in real.err, (harm.__name__, real)
        tried += 1
        for args in (("history",), ("tick",), ("status",), ("run", "p", "-q")):  # ... and every kind of command
            code, text = in_process(workspace.root, *args)
            tried += 1
            assert code == 4 and "store" in text and "Traceback" not in text, (harm.__name__, args, text)
        assert hashlib.sha256(db.read_bytes()).hexdigest() == digest, f"{harm.__name__}: the file was changed"
        assert sorted(p.name for p in db.parent.glob("*.db*")) == ["store.db"], "a new store appeared beside it"
    db.write_bytes(good)
    assert in_process(workspace.root, "run", "p", "-q")[0] == 0  # the real file back: the history goes on from 3
    code, text = in_process(workspace.root, "history", "--format", "json")
    assert [r["counter"] for r in json.loads(text)] == [4, 3, 2, 1]
    return tried
