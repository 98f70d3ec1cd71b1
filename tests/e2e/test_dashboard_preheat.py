"""`workbench dashboard`'s pre-heated kernel (issue 17): the notebook runs before anyone opens the page, and the
page still shows what the store holds when it is opened, not what it held when the kernel ran the notebook.

Real processes throughout: the CLI, Voila, its pooled kernel, Debian's Chromium. The store is changed (an
approval, through the workbench's own ``approve``) after the pooled kernel has drawn the board, then the page
is opened: the stage approved must show as passed, from the pre-heated kernel (Voila's log says it used one).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.e2e.test_dashboard_browser import (_free_port, _page, _release_workspace, _require_browser, _serving)
from workbench.approvals import approve

pytestmark = pytest.mark.timeout(200)


def _kernel_has_run_the_notebook(server_pid: int, store: Path, deadline: float) -> None:
    """Wait until a kernel under the server has the workspace's store open (the notebook's dashboard read it)
    and the whole process tree has gone quiet (the board, its counts and the warm-ups are done)."""
    server = psutil.Process(server_pid)

    def family() -> list[psutil.Process]:
        return [server, *server.children(recursive=True)]

    def store_open() -> bool:
        for p in family():
            try:
                if "ipykernel" in " ".join(p.cmdline()) and any(Path(f.path) == store for f in p.open_files()):
                    return True
            except psutil.Error:
                pass
        return False

    def cpu() -> float:
        total = 0.0
        for p in family():
            try:
                c = p.cpu_times()
                total += c.user + c.system
            except psutil.Error:
                pass
        return total

    while not store_open():
        assert time.monotonic() < deadline, "no pooled kernel opened the store: the notebook was not run ahead"
        time.sleep(0.2)
    before = cpu()
    while True:
        time.sleep(1.0)
        now = cpu()
        if now - before < 0.05:
            return
        assert time.monotonic() < deadline, "the pooled kernel never went quiet"
        before = now


def test_a_change_after_the_kernel_preheated_shows_when_the_page_opens(workspace: Any, tmp_path: Path) -> None:
    _require_browser("voila", "Voila (the dashboard extra)")
    ws = _release_workspace(workspace, tmp_path)
    port = _free_port()
    env = {**os.environ, "JUPYTERHUB_USER": "alice", "WORKBENCH_WORKSPACE": str(ws.root),
           "WORKBENCH_DASHBOARD_INTERVAL": "0.5",
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_DATA_DIR": str(tmp_path / "data")}
    log = tmp_path / "voila.log"
    with _serving([sys.executable, "-m", "workbench", "dashboard", "--port", str(port)], port,
                  env=env, cwd=ws.root, log_path=log) as url:
        server = next(p for p in psutil.Process(os.getpid()).children()
                      if "dashboard" in p.cmdline() and str(port) in p.cmdline())
        store = Path(ws.root, ".workbench", "store.db").resolve()
        _kernel_has_run_the_notebook(server.pid, store, time.monotonic() + 120)
        assert "Using pre-heated kernel" not in log.read_text()  # nobody has opened the page yet
        # the pooled kernel drew install_shop_5 waiting; the store changes before anyone looks
        approve(ws, "release/1/install_shop_5", user="alice", comment="approved before the page opened")
        with _page({"width": 1300, "height": 900}, "dashboard-preheat-failed.png") as page:
            page.goto(url, timeout=60_000)
            page.wait_for_selector('[data-stage="install_shop_5"][data-status="passed"]', timeout=45_000)
            page.wait_for_selector('[data-stage="install_shop_100"][data-status="waiting"]', timeout=45_000)
            assert page.locator('[data-stage="install_shop_5"][data-status="waiting"]').count() == 0
            assert "signed in as alice" in page.inner_text(".wb-dashboard")
            # the approval list follows too: only the next step waits
            page.wait_for_selector(".wb-approval", timeout=45_000)
            assert "release/1/install_shop_100" in page.inner_text(".wb-approvals")
            assert "install_shop_5" not in page.inner_text(".wb-approvals")
        assert "Using pre-heated kernel" in log.read_text()


def test_pool_size_zero_runs_a_kernel_per_visit(workspace: Any, tmp_path: Path) -> None:
    _require_browser("voila", "Voila (the dashboard extra)")
    ws = _release_workspace(workspace, tmp_path)
    port = _free_port()
    env = {**os.environ, "JUPYTERHUB_USER": "alice", "WORKBENCH_WORKSPACE": str(ws.root),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_DATA_DIR": str(tmp_path / "data")}
    log = tmp_path / "voila.log"
    with _serving([sys.executable, "-m", "workbench", "dashboard", "--port", str(port), "--pool-size", "0"], port,
                  env=env, cwd=ws.root, log_path=log) as url:
        server = next(p for p in psutil.Process(os.getpid()).children()
                      if "dashboard" in p.cmdline() and str(port) in p.cmdline())
        assert not [p for p in server.children(recursive=True) if "ipykernel" in " ".join(p.cmdline())]
        with _page({"width": 1300, "height": 900}, "dashboard-pool0-failed.png") as page:
            page.goto(url, timeout=60_000)
            page.wait_for_selector('[data-stage="install_shop_5"][data-status="waiting"]', timeout=60_000)
    assert "pre-heated" not in log.read_text()
