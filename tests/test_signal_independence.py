"""Issue 16 defect 13: the suite behaves the same when started with SIGINT and SIGQUIT ignored.

A shell's background job (``nohup make test &``) inherits SIGINT and SIGQUIT
ignored. The tests that stop a child with SIGINT (``workbench run`` cancelled by
Ctrl-C, ``workbench serve`` stopped by Ctrl-C) run here in a child pytest started
exactly so; they must pass, and no process they started may outlive it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import REPO

pytestmark = pytest.mark.timeout(420)

SIGNALLING_TESTS = [
    "tests/e2e/test_cli.py::test_ctrl_c_cancels_runs_on_cancel_and_exits_130",
    "tests/e2e/test_tick_cli.py::test_serve_picks_up_notify_and_stops_cleanly_on_ctrl_c",
]


def _as_a_background_job() -> None:
    """What ``nohup … &`` gives a job: SIGINT and SIGQUIT ignored (SIGHUP too, by nohup)."""
    os.setsid()
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def _under(path: Path) -> list[psutil.Process]:
    """Live processes whose command line or working directory is inside ``path``."""
    out = []
    for p in psutil.process_iter(["cmdline", "cwd"]):
        try:
            text = " ".join(p.info["cmdline"] or []) + " " + (p.info["cwd"] or "")
        except psutil.Error:
            continue
        if str(path) in text and p.pid != os.getpid():
            out.append(p)
    return out


def test_the_signalling_tests_pass_with_sigint_and_sigquit_ignored(tmp_path: Path) -> None:
    base = tmp_path / "inner"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={base}", *SIGNALLING_TESTS],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=_as_a_background_job)
    try:
        out, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode == 0, out[-4000:]
    assert f"{len(SIGNALLING_TESTS)} passed" in out, out[-4000:]
    deadline = time.monotonic() + 10
    while _under(base) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _under(base)
    assert left == [], [p.info["cmdline"] for p in left]  # nothing the inner tests started is still running
