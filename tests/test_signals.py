"""SIGTERM, SIGHUP and SIGINT stop every command that drives a run the same way (issue 18).

Real processes throughout: the real CLI in its own session, a job whose
grandchild ignores SIGTERM (``trap '' TERM``), a real store. After each stop
no process of the job may exist (found by a marker in their environment, so a
process that left the job's group would be found too), the run is
``cancelled`` with the signal in its reason, the command's exit status is
128 + N (README, "Exit statuses"), the on_cancel task ran, and the store's
invariants hold (tests/reliability_fixtures.py).

The children are started with ``start_new_session`` and every stop signal
reset to its default (or set as the test says) in ``preexec_fn``, so the suite
behaves the same when pytest itself runs under ``nohup … &`` (SIGINT and
SIGHUP ignored); the finalizer kills each child's group and any process
carrying the marker, so a failing test leaves nothing running.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from reliability_fixtures import invariant_violations

pytestmark = pytest.mark.timeout(240)

STOPS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

PIPELINE = """
pipelines:
  p:
    environment_variables:
      SIGTEST_MARKER: {marker}
    stages:
      - first:
          jobs:
            quick:
              tasks:
                - exec: {{command: "true"}}
      - hold:
          approval: {{type: {approval}}}
          jobs:
            j:
              tasks:
                - script:
                    script: |
                      [ -e "$WORKBENCH_WORKSPACE/slow" ] || exit 0
                      ( trap '' TERM; exec sleep 1000 ) &
                      echo $! > "$WORKBENCH_WORKSPACE/grandchild.pid"
                      sleep 1000
                    on_cancel:
                      script: {on_cancel}
"""

ON_CANCEL = 'echo started > "$WORKBENCH_WORKSPACE/on_cancel.started"; sleep {seconds}; ' \
            'echo done > "$WORKBENCH_WORKSPACE/on_cancel.done"'


def _dispositions(ignored: tuple[int, ...]) -> Callable[[], None]:
    """preexec_fn: every stop signal at its default, except those the test wants inherited as ignored."""
    def apply() -> None:
        for sig in (*STOPS, signal.SIGPIPE, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_IGN if sig in ignored else signal.SIG_DFL)
    return apply


def _marked(marker: str) -> list[int]:
    """Live (non-zombie) processes whose environment carries ``marker``: the job's, wherever they went."""
    needle = f"SIGTEST_MARKER={marker}".encode()
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if needle not in Path(f"/proc/{entry.name}/environ").read_bytes():
                continue
            state = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            out.append(int(entry.name))
    return out


def _wait_for(predicate: Callable[[], Any], what: str, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


class Bench:
    """One workspace with pipeline ``p`` and the processes a test starts in it."""

    def __init__(self, root: Path, approval: str = "success", on_cancel_seconds: float = 0) -> None:
        self.root = root
        self.marker = uuid.uuid4().hex
        (root / "pipelines").mkdir(parents=True)
        on_cancel = ON_CANCEL.format(seconds=on_cancel_seconds)
        (root / "pipelines" / "p.gocd.yaml").write_text(
            PIPELINE.format(marker=self.marker, approval=approval, on_cancel=json.dumps(on_cancel)))
        self.procs: list[subprocess.Popen[bytes]] = []
        # PYTHONFAULTHANDLER: a command that hangs is made to show where (SIGABRT dumps every thread)
        self.env = {**os.environ, "WORKBENCH_WORKSPACE": str(root), "COLUMNS": "200", "PYTHONFAULTHANDLER": "1"}
        self.env.pop("WORKBENCH_SERVER", None)

    @property
    def db(self) -> Path:
        return self.root / ".workbench" / "store.db"

    def slow(self) -> None:
        """From now on the job ``hold/j`` runs until stopped."""
        (self.root / "slow").touch()

    def start(self, *args: str, ignored: tuple[int, ...] = (), argv: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        out, err = open(self.root / f"cmd{n}.out", "wb"), open(self.root / f"cmd{n}.err", "wb")
        proc = subprocess.Popen([*argv, sys.executable, "-m", "workbench", *args], cwd=self.root, env=self.env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True, preexec_fn=_dispositions(ignored))
        out.close()
        err.close()
        self.procs.append(proc)
        return proc

    def wait(self, proc: subprocess.Popen[bytes], timeout: float = 90) -> int:
        """The command's exit status; a command still running after ``timeout`` fails the test with its stacks."""
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            pytest.fail(f"{proc.args} still running {timeout:g}s after the signal:\n{self.output(proc)}")

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        n = self.procs.index(proc)
        return (self.root / f"cmd{n}.out").read_text() + (self.root / f"cmd{n}.err").read_text()

    def job_running(self) -> None:
        """Wait until the job's grandchild (the one that ignores SIGTERM) runs."""
        pidfile = self.root / "grandchild.pid"
        _wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), "the job's grandchild to start")
        _wait_for(lambda: len(_marked(self.marker)) >= 2, "the job's processes")

    def nothing_left(self) -> None:
        _wait_for(lambda: not _marked(self.marker), f"no process of the job (left: {_marked(self.marker)})",
                  timeout=20)

    def run_row(self, counter: int = 1) -> dict[str, Any]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            return dict(conn.execute("SELECT * FROM pipeline_runs WHERE pipeline = 'p' AND counter = ?",
                                     (counter,)).fetchone())
        finally:
            conn.close()

    def jobs(self) -> list[dict[str, Any]]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute("SELECT * FROM job_runs WHERE name = 'j' ORDER BY id")]
        finally:
            conn.close()

    def close(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        for pid in _marked(self.marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Callable[..., Bench]]:
    made: list[Bench] = []

    def make(approval: str = "success", on_cancel_seconds: float = 0) -> Bench:
        b = Bench(tmp_path / f"ws{len(made)}", approval, on_cancel_seconds)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


# -- each command, each signal ------------------------------------------------------
def _waiting_for_approval(b: Bench) -> None:
    """Run ``p`` in this process up to its manual stage ``hold`` (stage ``first`` passes)."""
    from workbench import Workspace
    from workbench.status import Status

    ws = Workspace.open(b.root)
    try:
        assert ws.run("p").status == Status.WAITING
    finally:
        ws.close()


def _approved(b: Bench) -> None:
    """Approve ``p/1/hold`` without driving it: the next tick, serve or server drives it."""
    from workbench import Workspace
    from workbench.approvals import approve

    _waiting_for_approval(b)
    ws = Workspace.open(b.root)
    try:
        approve(ws, "p/1/hold", user="tester", comment="go", drive=False)
    finally:
        ws.close()


def _passed_once(b: Bench) -> None:
    from workbench import Workspace
    from workbench.status import Status

    ws = Workspace.open(b.root)
    try:
        assert ws.run("p").status == Status.PASSED
    finally:
        ws.close()


# The exit status after a stop signal N (README, "Exit statuses"): 128 + N for a command asked to
# complete a run; 0 for serve and server, for which a signal is the normal way to stop.
DAEMONS = {"serve", "server"}


def stopped_status(command: str, sig: int) -> int:
    return 0 if command in DAEMONS else 128 + sig


# command -> (approval of stage hold, setup in this process, argv, the command's name in the reason)
COMMANDS: dict[str, tuple[str, Callable[[Bench], None] | None, tuple[str, ...], str]] = {
    "run": ("success", None, ("run", "p"), "workbench run"),
    "trigger": ("success", None, ("trigger", "p"), "workbench trigger"),
    "rerun": ("success", _passed_once, ("rerun", "p/1/hold"), "workbench rerun"),
    "approve": ("manual", _waiting_for_approval, ("approve", "p/1/hold", "-m", "go"), "workbench approve"),
    "tick": ("manual", _approved, ("tick",), "workbench tick"),
    "serve": ("manual", _approved, ("serve", "--interval", "1"), "workbench serve"),
    "server": ("manual", _approved, ("server", "--bind", "127.0.0.1:0", "--interval", "1"), "workbench server"),
}


@pytest.mark.parametrize("sig", STOPS, ids=lambda s: s.name)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_stop_signal_cancels_the_run_and_leaves_nothing_running(bench: Any, command: str,
                                                                  sig: signal.Signals) -> None:
    approval, setup, argv, name = COMMANDS[command]
    b = bench(approval=approval)
    if setup is not None:
        setup(b)
    b.slow()
    proc = b.start(*argv)
    b.job_running()
    proc.send_signal(sig)
    code = b.wait(proc, 90)
    out = b.output(proc)
    assert code == stopped_status(command, sig), (code, out)
    assert "Traceback" not in out, out
    assert (b.root / "on_cancel.done").exists(), out  # the graceful stop ran the task's on_cancel
    b.nothing_left()
    run = b.run_row()
    assert run["status"] == "cancelled", (run, out)
    assert f"{name} stopped by {sig.name}" in run["reason"], run["reason"]
    assert "second signal" not in run["reason"]
    job = b.jobs()[-1]
    assert job["status"] == "cancelled", job
    assert invariant_violations(b.db) == []


# -- the inherited dispositions do not matter -----------------------------------------
@pytest.mark.parametrize("sig", STOPS, ids=lambda s: s.name)
def test_a_command_started_with_the_stop_signals_ignored_still_stops_cleanly(bench: Any,
                                                                              sig: signal.Signals) -> None:
    """``nohup cmd &`` ignores SIGHUP and SIGINT; some supervisors ignore SIGTERM: the handlers are installed anyway."""
    b = bench()
    b.slow()
    proc = b.start("run", "p", ignored=STOPS)
    b.job_running()
    proc.send_signal(sig)
    code = b.wait(proc, 90)
    assert code == 128 + sig, b.output(proc)
    assert (b.root / "on_cancel.done").exists()
    b.nothing_left()
    assert b.run_row()["status"] == "cancelled"
    assert invariant_violations(b.db) == []


def test_timeout_delivering_its_sigterm_twice_is_still_one_graceful_stop(bench: Any) -> None:
    """coreutils ``timeout`` sends its signal to the command and then to the command's whole process
    group: two SIGTERMs at once are one request, not an escalation (on_cancel runs to its end)."""
    b = bench(on_cancel_seconds=1)
    b.slow()
    proc = b.start("run", "p", argv=("timeout", "600"))
    b.job_running()
    proc.send_signal(signal.SIGTERM)  # to `timeout`, which passes it on to workbench, then to its group
    code = b.wait(proc, 90)
    out = b.output(proc)
    assert code == 143, (code, out)
    assert (b.root / "on_cancel.done").exists(), out
    assert "received again" not in out
    b.nothing_left()
    run = b.run_row()
    assert run["status"] == "cancelled" and "workbench run stopped by SIGTERM" in run["reason"]
    assert "second signal" not in run["reason"]
    assert invariant_violations(b.db) == []


# -- a second signal ---------------------------------------------------------------------
@pytest.mark.parametrize("command,first,second", [
    ("run", signal.SIGTERM, signal.SIGINT),
    ("run", signal.SIGINT, signal.SIGINT),
    ("server", signal.SIGTERM, signal.SIGTERM),
], ids=["run-TERM-INT", "run-INT-INT", "server-TERM-TERM"])
def test_a_second_signal_kills_at_once_and_still_records_the_outcome(bench: Any, command: str,
                                                                     first: signal.Signals,
                                                                     second: signal.Signals) -> None:
    approval, setup, argv, name = COMMANDS[command]
    b = bench(approval=approval, on_cancel_seconds=600)  # an on_cancel that would hold the graceful stop
    if setup is not None:
        setup(b)
    b.slow()
    proc = b.start(*argv)
    b.job_running()
    proc.send_signal(first)
    _wait_for(lambda: (b.root / "on_cancel.started").exists(), "the on_cancel task to start")
    time.sleep(1.2)  # past the window in which a repeat of the same signal is the same request
    assert proc.poll() is None  # the graceful stop waits for on_cancel
    proc.send_signal(second)
    code = b.wait(proc, 60)
    out = b.output(proc)
    assert code == stopped_status(command, first), (code, out)
    assert "Traceback" not in out, out
    assert not (b.root / "on_cancel.done").exists()  # cut short
    b.nothing_left()
    run = b.run_row()
    assert run["status"] == "cancelled", run
    assert f"{name} stopped by {first.name}" in run["reason"] and "second signal" in run["reason"], run["reason"]
    assert invariant_violations(b.db) == []


# -- workbench cancel of a run whose driver is gone ----------------------------------------
def _recorded_group(b: Bench) -> int:
    return _wait_for(lambda: (b.jobs() or [{}])[-1].get("pgid"), "the engine to record the job's process group")


def test_cancel_of_a_run_whose_driver_died_stops_its_jobs_processes(bench: Any) -> None:
    b = bench()
    b.slow()
    driver = b.start("run", "p")
    b.job_running()
    pgid = _recorded_group(b)
    driver.send_signal(signal.SIGKILL)  # the driver dies without cleaning up; its jobs run on
    driver.wait(30)
    assert len(_marked(b.marker)) >= 2
    cancel = b.start("cancel", "p/1")
    code = b.wait(cancel, 120)
    out = b.output(cancel)
    assert code == 0, out
    assert "p/1: cancelled" in out
    b.nothing_left()
    job = b.jobs()[-1]
    assert job["status"] == "cancelled"
    # the grandchild ignores SIGTERM: the group is killed after the grace period
    assert f"its process group {pgid} was killed (SIGKILL after" in job["reason"], job["reason"]
    run = b.run_row()
    assert run["status"] == "cancelled" and run["reason"].startswith("cancelled by ")
    assert invariant_violations(b.db) == []


def test_cancel_never_signals_a_process_that_reused_the_recorded_pid(bench: Any) -> None:
    """The recorded group's leader now has another start time: it is not the job's, nothing is killed."""
    b = bench()
    b.slow()
    driver = b.start("run", "p")
    b.job_running()
    real = _recorded_group(b)
    driver.send_signal(signal.SIGKILL)
    driver.wait(30)
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True, preexec_fn=_dispositions(()))
    try:
        conn = sqlite3.connect(b.db, timeout=30)
        with conn:  # as if the job's pid had been reused by `bystander`: same pid, another start time
            ident = conn.execute("SELECT pgid_identity FROM job_runs WHERE pgid = ?", (real,)).fetchone()[0]
            host, boot, ticks = ident.split(" ")
            conn.execute("UPDATE job_runs SET pgid = ?, pgid_identity = ? WHERE pgid = ?",
                         (bystander.pid, f"{host} {boot} {int(ticks) - 1}", real))
        conn.close()
        cancel = b.start("cancel", "p/1")
        assert b.wait(cancel, 120) == 0, b.output(cancel)
        assert bystander.poll() is None  # not ours: left alone
        assert b.jobs()[-1]["status"] == "cancelled"
        assert "process group" not in b.jobs()[-1]["reason"]
    finally:
        bystander.kill()
        bystander.wait()
        try:
            os.killpg(real, signal.SIGKILL)  # the real job group, which the test hid from cancel
        except ProcessLookupError:
            pass


# -- a signal the kernel hands to another thread --------------------------------------------
def test_a_signal_delivered_to_another_thread_cancels_at_once_while_the_main_thread_waits(tmp_path: Path) -> None:
    """The kernel may give a process's signal to any of its threads, and CPython runs a Python handler
    only when the main thread next runs bytecode; ``workbench run``'s main thread waits for its jobs with
    no timeout. The stop must still act at once (the C handler's wakeup byte wakes Stop's own thread):
    handling it in the Python handler alone waited here until the watchdog (and in ``workbench run``
    until the jobs ended by themselves)."""
    import threading

    from workbench import Workspace
    from workbench.signals import Stop

    (tmp_path / "pipelines").mkdir()
    ws = Workspace.open(tmp_path)
    lines: list[str] = []
    other_ready, other_done = threading.Event(), threading.Event()
    other = threading.Thread(target=lambda: (other_ready.set(), other_done.wait()), daemon=True)
    try:
        with ws.engine() as engine, Stop("workbench test", say=lines.append) as stop:
            stop.attach(engine)
            other.start()
            other_ready.wait()
            sender = threading.Timer(0.2, signal.pthread_kill, args=(other.ident, signal.SIGTERM))  # to `other`
            watchdog = threading.Timer(60, engine.cancel_event.set)
            sender.start()
            watchdog.start()
            engine.cancel_event.wait()  # no timeout: the main thread is not woken by a signal another thread got
            watchdog.cancel()
            assert engine.cancel_reason == "workbench test stopped by SIGTERM", "only the watchdog woke it"
            assert stop.exit_code == 143
        assert lines and "SIGTERM received" in lines[0]
    finally:
        other_done.set()
        ws.close()
