"""Crash recovery stops what a killed engine left running: real processes, a real store, the real CLI."""
from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from workbench.status import Status
from workbench.store import Store
from workbench.store import schema as S
from workbench.tasks.pgroups import identity, members, stop_group

pytestmark = pytest.mark.timeout(180)


def _alive(pid: int) -> bool:
    """True if the process exists and is not a zombie (an orphan's zombie may wait for a slow reaper)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def _wait_for(predicate: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def test_kill_9_of_the_workbench_then_tick_stops_the_jobs_processes(workspace: Any) -> None:
    shell_pid, child_pid = workspace.root / "shell.pid", workspace.root / "child.pid"
    workspace.write("p.yaml", f"""
        pipelines:
          p:
            stages:
              - deploy:
                  tasks:
                    - script: sleep 300 & echo $! > {child_pid}; echo $$ > {shell_pid}; wait
        """)
    env = {**os.environ, "WORKBENCH_WORKSPACE": str(workspace.root)}
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "run", "p", "-q"], cwd=workspace.root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ws = workspace.open()
    shell = child = None
    try:
        _wait_for(lambda: child_pid.exists() and child_pid.read_text().strip() and shell_pid.exists()
                  and shell_pid.read_text().strip(), "the job's processes")
        shell, child = int(shell_pid.read_text()), int(child_pid.read_text())
        _wait_for(lambda: _pgid(ws) == shell, "the engine to record the job's process group")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _alive(shell) and _alive(child)  # killing the workbench leaves the job's processes running
        r = subprocess.run([sys.executable, "-m", "workbench", "tick"], cwd=workspace.root, env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "p/1/deploy/1/deploy" in r.stdout
        _wait_for(lambda: not _alive(child) and not _alive(shell), "the group to be gone", timeout=10)
        jobs = ws.frames.job_runs
        assert jobs.status.tolist() == ["failed"]
        reason = jobs.reason[0]
        assert f"({socket.gethostname()}:{proc.pid}) died" in reason
        assert f"its process group {shell} was stopped (SIGTERM)" in reason
        assert ws.store.get_pipeline_run("p").status == Status.FAILED
    finally:
        if shell is not None:
            try:
                os.killpg(shell, signal.SIGKILL)
            except ProcessLookupError:
                pass
        ws.close()


def _pgid(ws: Any) -> int | None:
    with ws.store.read() as conn:
        return conn.execute(sa.select(S.job_runs.c.pgid)).scalar()


def test_a_group_is_stopped_only_while_it_is_still_the_jobs(tmp_path: Path) -> None:
    """A recorded identity that does not match the live leader (pid reuse, another host or boot) stops nothing."""
    proc = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], start_new_session=True)
    try:
        _wait_for(lambda: len(members(proc.pid)) == 2, "the group's two processes")
        mine = identity(proc.pid)
        assert mine is not None and mine.startswith(socket.gethostname() + " ")
        host, boot, ticks = mine.split(" ")
        for stranger in (f"{host} {boot} {int(ticks) + 1}",  # same pid, started at another time: a reused pid
                         f"elsewhere {boot} {ticks}", f"{host} another-boot {ticks}", None):
            assert stop_group(proc.pid, stranger) is None
        assert len(members(proc.pid)) == 2 and proc.poll() is None
        assert stop_group(proc.pid, mine) == f"its process group {proc.pid} was stopped (SIGTERM)"
        proc.wait(timeout=10)
        _wait_for(lambda: not members(proc.pid), "the group to be gone", timeout=10)
        assert stop_group(proc.pid, mine) is None  # nothing left: nothing to say
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_group_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 60 & wait; sleep 60"], start_new_session=True)
    try:
        _wait_for(lambda: len(members(proc.pid)) == 2, "the group's two processes")
        mine = identity(proc.pid)
        assert stop_group(proc.pid, mine, grace=0.5) == f"its process group {proc.pid} was killed (SIGKILL after 0.5s)"
        proc.wait(timeout=10)
        _wait_for(lambda: not members(proc.pid), "the group to be gone", timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_an_existing_store_gains_the_process_group_columns(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    Store.open(path).close()
    con = sqlite3.connect(path)  # make it a store from before the migration
    con.execute("ALTER TABLE job_runs DROP COLUMN pgid")
    con.execute("ALTER TABLE job_runs DROP COLUMN pgid_identity")
    applied = [m for m, _ in S.MIGRATIONS if m != "core-2-job-process-group"]
    con.execute("UPDATE meta SET value = ? WHERE key = 'migrations'", (str(applied).replace("'", '"'),))
    con.commit()
    assert "pgid" not in {row[1] for row in con.execute("PRAGMA table_info(job_runs)")}
    con.close()
    store = Store.open(path)
    try:
        run = store.create_pipeline_run("p", label_for=str, trigger="manual", triggered_by="t")
        _, [job] = store.create_stage_run(run.id, "s", 0, jobs=[("j", 1, 1)])
        store.set_job_process(job.id, 4242, "host boot 1")
        with store.read() as conn:
            row = conn.execute(sa.select(S.job_runs.c.pgid, S.job_runs.c.pgid_identity)).one()
            migrations = conn.execute(sa.select(S.meta.c.value).where(S.meta.c.key == "migrations")).scalar()
        assert tuple(row) == (4242, "host boot 1")
        assert "core-2-job-process-group" in migrations
    finally:
        store.close()


def test_a_notebook_jobs_kernel_is_recorded_as_its_process_group(workspace: Any) -> None:
    """A notebook task's processes are its kernel's group: that is what recovery would stop."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import os\nopen('kernel.pid', 'w').write(str(os.getpid()))")]
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.write(nb, str(workspace.root / "k.ipynb"))
    workspace.write("p.yaml", """
        pipelines:
          p:
            stages:
              - analyse: {tasks: [{notebook: {path: k.ipynb}}]}
        """)
    ws = workspace.open()
    try:
        assert ws.run("p").status == Status.PASSED
        kernel_pid = int(next(workspace.root.rglob("kernel.pid")).read_text())
        assert _pgid(ws) == kernel_pid
    finally:
        ws.close()
