"""The dashboard in a real browser: `workbench dashboard` (Voila) on loopback, Debian's Chromium via Playwright.

A release manager opens the page, clicks Approve on the waiting stage, and
the run goes on: the board shows the stage passed and the store has the
approval. The screenshot lands in test-artifacts/ (gitignored).
"""
from __future__ import annotations

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


@pytest.fixture
def dashboard_server(workspace: Any, tmp_path: Path) -> Iterator[tuple[Any, str]]:
    require_service(Path(CHROMIUM).exists(), f"Chromium at {CHROMIUM} (apt-get install chromium)")
    require_service(importlib.util.find_spec("voila") is not None, "Voila (the dashboard extra)")
    require_service(importlib.util.find_spec("playwright") is not None, "the playwright Python package")
    ws = _release_workspace(workspace, tmp_path)
    port = _free_port()
    env = {**os.environ, "JUPYTERHUB_USER": "alice", "WORKBENCH_WORKSPACE": str(ws.root),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_DATA_DIR": str(tmp_path / "data")}
    log = open(tmp_path / "voila.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "dashboard", "--port", str(port)], env=env,
                            cwd=ws.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_port(port, proc)
        yield ws, f"http://127.0.0.1:{port}/"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


def test_approve_in_the_browser(dashboard_server: tuple[Any, str], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    ws, url = dashboard_server
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.goto(url, timeout=60_000)
            page.wait_for_selector('[data-stage="install_shop_5"][data-status="waiting"]', timeout=60_000)
            assert page.locator(".wb-waiting").count() == 1
            assert "signed in as alice" in page.inner_text(".wb-dashboard")
            row = page.locator(".wb-approval", has_text="release/1/install_shop_5")
            row.locator("input").fill("approved from the browser")
            row.locator("button.wb-approve").click()
            # the kernel approves, drives the run on and the live refresh repaints the board
            page.wait_for_selector('[data-stage="install_shop_5"][data-status="passed"]', timeout=45_000)
            page.wait_for_selector('[data-stage="install_shop_100"][data-status="waiting"]', timeout=45_000)
            assert "approved release/1/install_shop_5 as alice" in page.inner_text(".wb-message")
            page.screenshot(path=str(ARTIFACTS / "dashboard-approve.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "dashboard-approve-failed.png"), full_page=True)
            raise
        finally:
            browser.close()
    detail = ws.store.run_detail(ws.store.get_pipeline_run("release", 1)).latest_stages()
    assert detail["install_shop_5"].status == Status.PASSED and detail["install_shop_5"].approved_by == "alice"
    assert detail["install_shop_100"].status == Status.WAITING
    audit = ws.frames.audit
    approved = audit[(audit.action == "approve") & (audit.outcome == "ok")]
    assert approved[["user", "target", "comment"]].values.tolist() == [
        ["alice", "release/1/install_shop_5", "approved from the browser"]]
    assert ws.frames.traffic_weights.set_index("stack")["weight"].to_dict() == {"blue": 95, "green": 5}
