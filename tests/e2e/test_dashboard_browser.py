"""The dashboard in a real browser: Voila (`workbench dashboard`) and JupyterLab on loopback, Debian's Chromium.

A release manager opens the page (Voila) or the notebook (JupyterLab: Run →
Run All Cells), clicks Approve on the waiting stage, and the run goes on: the
board shows the stage passed and the store has the approval. Screenshots
land in test-artifacts/ (gitignored). Plain Playwright drives both.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from tests.conftest import REPO, require_service
from workbench.status import Status

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
ARTIFACTS = REPO / "test-artifacts"

pytestmark = pytest.mark.timeout(150)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"workbench dashboard exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def _release_workspace(workspace: Any, tmp_path: Path) -> Any:
    weights = tmp_path / "weights.json"
    lb = tmp_path / "lb.py"
    lb.write_text(f"import json, os\njson.dump(json.loads(os.environ['WORKBENCH_WEIGHTS']), open({str(weights)!r}, 'w'))\n")
    doc = {
        "format_version": 10,
        "roles": {"release-managers": ["alice", "bob"]},
        "routes": {"shop": {"provider": "command", "stacks": {"blue": "blue:80", "green": "green:80"},
                            "argv": [sys.executable, str(lb)]}},
        "environments": {"production": {"production": True, "pipelines": ["release"]}},
        "pipelines": {"release": {
            "group": "shop",
            "rollout": {"route": "shop", "steps": [5, 100],
                        "approval": {"type": "manual", "roles": ["release-managers"]}},
            "stages": [{"build": {"jobs": {"package": {"tasks": [{"exec": {"command": "true"}}]}}}}],
        }},
    }
    workspace.write("release.yaml", yaml.safe_dump(doc, sort_keys=False))
    ws = workspace.open()
    assert ws.run("release").status == Status.WAITING
    return ws


def _require_browser(server: str, what: str) -> None:
    """Chromium, Playwright and the Python package that serves the page (fails under CI when missing)."""
    require_service(Path(CHROMIUM).exists(), f"Chromium at {CHROMIUM} (apt-get install chromium)")
    require_service(importlib.util.find_spec(server) is not None, what)
    require_service(importlib.util.find_spec("playwright") is not None, "the playwright Python package")


@pytest.fixture
def dashboard_server(workspace: Any, tmp_path: Path) -> Iterator[tuple[Any, str]]:
    _require_browser("voila", "Voila (the dashboard extra)")
    ws = _release_workspace(workspace, tmp_path)
    port = _free_port()
    env = {**os.environ, "JUPYTERHUB_USER": "alice", "WORKBENCH_WORKSPACE": str(ws.root),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_DATA_DIR": str(tmp_path / "data")}
    with _serving([sys.executable, "-m", "workbench", "dashboard", "--port", str(port)], port,
                  env=env, cwd=ws.root, log_path=tmp_path / "voila.log") as url:
        yield ws, url


def test_approve_in_the_browser(dashboard_server: tuple[Any, str], tmp_path: Path) -> None:
    ws, url = dashboard_server
    with _page({"width": 1300, "height": 900}, "dashboard-approve-failed.png") as page:
        page.goto(url, timeout=60_000)
        page.wait_for_selector('[data-stage="install_shop_5"][data-status="waiting"]', timeout=60_000)
        assert page.locator(".wb-waiting").count() == 1
        assert "signed in as alice" in page.inner_text(".wb-dashboard")
        _approve_in_page(page, "approved from the browser", "dashboard-approve.png")
    _assert_approved_in_store(ws, "approved from the browser")
    assert ws.frames.traffic_weights.set_index("stack")["weight"].to_dict() == {"blue": 95, "green": 5}


# -- the same in JupyterLab: the notebook opened, its cells run, Approve clicked in the output ----------------


@pytest.fixture
def lab_server(workspace: Any, tmp_path: Path) -> Iterator[tuple[Any, str]]:
    _require_browser("jupyterlab", "JupyterLab (the test extra)")
    ws = _release_workspace(workspace, tmp_path)
    root = tmp_path / "lab"
    root.mkdir()
    (root / "release_dashboard.ipynb").write_bytes((REPO / "notebooks" / "release_dashboard.ipynb").read_bytes())
    port = _free_port()
    # nothing of the user's Jupyter setup: config, data, runtime, settings and workspaces all in tmp_path
    env = {**os.environ, "JUPYTERHUB_USER": "alice", "WORKBENCH_WORKSPACE": str(ws.root),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTER_DATA_DIR": str(tmp_path / "data")}
    with _serving(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
             "--ServerApp.port_retries=0", "--IdentityProvider.token=", "--ServerApp.password=",
             f"--ServerApp.root_dir={root}", f"--LabApp.user_settings_dir={tmp_path / 'settings'}",
             f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}", "--LabApp.news_url=None",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             # the legacy JSON kernel websocket protocol. Observed here (jupyter_server 2.21.1, JupyterLab 4.6.6,
             # ipykernel 7.4.0, headless Chromium): with the default binary protocol three runs in three never ran a
             # cell (the page kept re-sending kernel_info requests); with this one, Run All sometimes does nothing
             # too, hence the retry below. Why is not known yet; it is JupyterLab's kernel connection, not the dashboard
             "--ServerApp.kernel_ws_protocol=",
             "--allow-root"],  # containers and CI run tests as root; JupyterLab refuses that unless told
            port, env=env, cwd=root, log_path=tmp_path / "lab.log") as url:
        yield ws, url


def test_approve_in_jupyterlab(lab_server: tuple[Any, str], tmp_path: Path) -> None:
    ws, url = lab_server
    with _page({"width": 1400, "height": 1000}, "dashboard-approve-jupyterlab-failed.png") as page:
        page.goto(url + "lab/tree/release_dashboard.ipynb", timeout=60_000)
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=60_000)
        page.locator(".jp-Notebook .jp-Cell").first.click()
        board = '[data-stage="install_shop_5"][data-status="waiting"]'
        choose = page.locator(".jp-Dialog", has_text="Select Kernel")
        for attempt in range(3):  # Run → Run All Cells, again if JupyterLab dropped it (see lab_server)
            if choose.count():  # on a loaded machine JupyterLab may lose the kernel's session and ask
                try:
                    choose.locator("button.jp-mod-accept").click(timeout=5_000)  # "Select" (Python 3)
                except Exception:  # noqa: BLE001  (the dialog went away by itself meanwhile)
                    pass
            else:
                page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            try:
                page.wait_for_selector(board, timeout=30_000)
                break
            except Exception:
                if attempt == 2:
                    raise
        assert "signed in as alice" in page.inner_text(".wb-dashboard")
        _approve_in_page(page, "approved in JupyterLab", "dashboard-approve-jupyterlab.png")
    _assert_approved_in_store(ws, "approved in JupyterLab")


def _approve_in_page(page: Any, comment: str, screenshot: str) -> None:
    """Approve the waiting canary step with a comment, as a person would, and wait for the board to show it."""
    row = page.locator(".wb-approval", has_text="release/1/install_shop_5")
    row.locator("input").fill(comment)
    row.locator("button.wb-approve").click()
    # the kernel approves, drives the run on and the live refresh repaints the board
    page.wait_for_selector('[data-stage="install_shop_5"][data-status="passed"]', timeout=45_000)
    page.wait_for_selector('[data-stage="install_shop_100"][data-status="waiting"]', timeout=45_000)
    assert "approved release/1/install_shop_5 as alice" in page.inner_text(".wb-message")
    page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)


def _assert_approved_in_store(ws: Any, comment: str) -> None:
    detail = ws.store.run_detail(ws.store.get_pipeline_run("release", 1)).latest_stages()
    assert detail["install_shop_5"].status == Status.PASSED and detail["install_shop_5"].approved_by == "alice"
    assert detail["install_shop_100"].status == Status.WAITING
    audit = ws.frames.audit
    approved = audit[(audit.action == "approve") & (audit.outcome == "ok")]
    assert approved[["user", "target", "comment"]].values.tolist() == [["alice", "release/1/install_shop_5", comment]]


@contextlib.contextmanager
def _serving(argv: list[str], port: int, *, env: dict[str, str], cwd: Path, log_path: Path) -> Iterator[str]:
    """A server process in its own session, its URL once it listens; the whole group stopped afterwards."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_port(port, proc)
            yield f"http://127.0.0.1:{port}/"
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)


@contextlib.contextmanager
def _page(viewport: dict[str, int], failed_screenshot: str) -> Iterator[Any]:
    """A page in Debian's headless Chromium; a screenshot of it in test-artifacts/ when the test fails there."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport=viewport)
            try:
                yield page
            except Exception:
                page.screenshot(path=str(ARTIFACTS / failed_screenshot), full_page=True)
                raise
        finally:
            browser.close()
