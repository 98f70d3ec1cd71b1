"""Issue 19 item 6: every terminating signal to `workbench dashboard` stops Voila and its kernels.

Real processes: the CLI, Voila and the kernel it starts for a page. The CLI is
started with SIGINT ignored (as a background job of a shell is) to show it does
not depend on the dispositions it inherits.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.conftest import require_service
from tests.e2e.test_dashboard_browser import _free_port, _release_workspace, _wait_port

pytestmark = pytest.mark.timeout(150)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_stops_voila_and_its_kernels(workspace, tmp_path: Path, sig: int) -> None:
    import importlib.util

    require_service(importlib.util.find_spec("voila") is not None, "Voila (the dashboard extra)")
    ws = _release_workspace(workspace, tmp_path)
    port = _free_port()
    env = {**os.environ, "WORKBENCH_WORKSPACE": str(ws.root), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTER_DATA_DIR": str(tmp_path / "data")}
    log = open(tmp_path / "dash.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "dashboard", "--port", str(port)], cwd=ws.root,
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_ignore_sigint)
    family: list[psutil.Process] = []
    try:
        _wait_port(port, proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=90) as r:  # runs the page's kernel
            assert r.status == 200
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            family = psutil.Process(proc.pid).children(recursive=True)
            if any("ipykernel" in " ".join(p.cmdline()) for p in family if p.is_running()):
                break
            time.sleep(0.2)
        assert any("ipykernel" in " ".join(p.cmdline()) for p in family), [p.cmdline() for p in family]
        proc.send_signal(sig)
        assert proc.wait(60) == 0
        gone, alive = psutil.wait_procs(family, timeout=20)
        assert alive == [], [p.cmdline() for p in alive]
        assert "dashboard stopped" in (tmp_path / "dash.log").read_text()
    finally:
        for p in [psutil.Process(proc.pid)] if proc.poll() is None else []:
            p.kill()
        for p in family:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        proc.wait(10)
        log.close()
