"""The release service's own page (workbench/server/page.py) draws the board a page at a time, with a filter.

A real ``workbench server`` on a workspace of 130 pipelines (three pages; one failing, one waiting for
approval), a real token through the CLI, Debian's Chromium sending it: page 3 is reachable by paging and a
pipeline on it by the filter, and the counts are over every pipeline.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_service
from tests.e2e.test_dashboard_browser import ARGS, CHROMIUM
from tests.server_fixtures import make_token
from tests.test_dashboard_paging import _estate

pytestmark = pytest.mark.timeout(300)


def _rows(page: Any) -> list[str]:
    return page.eval_on_selector_all(".wb-board tbody tr[data-pipeline]", "rs => rs.map(r => r.dataset.pipeline)")


def test_the_server_page_pages_and_filters_the_board(workspace: Any, server_factory: Any) -> None:
    require_service(Path(CHROMIUM).exists(), f"Chromium at {CHROMIUM} (apt-get install chromium)")
    require_service(importlib.util.find_spec("playwright") is not None, "the playwright Python package")
    from playwright.sync_api import sync_playwright

    ws = _estate(workspace)
    srv = server_factory(ws.root)
    token = make_token(ws.root, "alice", scope="read")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(extra_http_headers={"Authorization": f"Bearer {token}"})
            page.goto(srv.url + "/", timeout=60_000)
            page.wait_for_selector("body[data-loaded=true]", timeout=60_000)
            assert _rows(page) == [f"svc-{i:03d}" for i in range(50)]
            summary = page.inner_text(".wb-board-summary")
            assert summary == ("130 pipelines · 1 failing · 1 waiting for approval · 1 passed · 127 never run — "
                               "showing 1–50 of 130 matched, page 1 of 3"), summary
            assert page.is_disabled(".wb-board-prev")
            page.click(".wb-board-next")
            page.click(".wb-board-next")
            assert _rows(page) == [f"svc-{i:03d}" for i in range(100, 130)] and page.is_disabled(".wb-board-next")
            page.fill(".wb-board-filter", "svc-121")
            assert _rows(page) == ["svc-121"]
            page.fill(".wb-board-filter", "")
            page.select_option(".wb-board-status", "waiting")
            assert _rows(page) == ["svc-120"]
            page.select_option(".wb-board-status", "failed")
            assert _rows(page) == ["svc-007"]
        finally:
            browser.close()
