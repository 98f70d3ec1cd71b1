"""The board at scale: paged, with a filter and every status's count (workbench/dashboard/paging.py).

The pure part with hand-made entries; the widgets against a real workspace of
130 pipelines (three pages), some run: one failing, one waiting for approval.
"""
from __future__ import annotations

from typing import Any

import pytest
import yaml

from workbench.dashboard import paging
from workbench.dashboard.paging import BoardFilter, Entry
from workbench.status import Status

pytestmark = pytest.mark.timeout(300)


def _entries(n: int = 130) -> tuple[Entry, ...]:
    out = []
    for i in range(n):
        status = "failed" if i == 7 else "passed" if i % 2 else "never run"
        out.append(Entry(f"svc-{i:03d}", "web" if i < 100 else "batch", status, i == 120, i == 5))
    return tuple(out)


def test_pages_cover_every_pipeline_once_in_order() -> None:
    entries = _entries()
    pages = [paging.page(entries, BoardFilter(), n, 50) for n in (1, 2, 3)]
    assert [p.pages for p in pages] == [3, 3, 3]
    assert [len(p.entries) for p in pages] == [50, 50, 30]
    assert [e.pipeline for p in pages for e in p.entries] == [e.pipeline for e in entries]
    assert (pages[2].first, pages[2].last, pages[2].matched, pages[2].total) == (101, 130, 130, 130)
    assert paging.page(entries, BoardFilter(), 99, 50).number == 3  # clamped, not empty
    assert paging.page(entries, BoardFilter(), 0, 50).number == 1


def test_counts_are_over_all_pipelines_whatever_the_filter() -> None:
    p = paging.page(_entries(), BoardFilter(text="svc-12"), 1, 50)
    assert p.counts["failed"] == 1 and p.counts["waiting"] == 1 and p.counts["paused"] == 1
    assert p.counts["passed"] == 64 and p.counts["never run"] == 65
    assert sum(p.counts[k] for k in ("failed", "passed", "never run")) == 130
    assert p.matched == 10  # svc-120 .. svc-129
    assert paging.summary(p).startswith("130 pipelines · 1 failing · 1 waiting for approval · 64 passed · 65 never run · 1 paused")
    assert "showing 1–10 of 10 matched, page 1 of 1" in paging.summary(p)


def test_filter_by_name_words_group_and_status() -> None:
    entries = _entries()
    words = [e.pipeline for e in paging.page(entries, BoardFilter(text="SVC 07")).entries]  # every word, any case
    assert words == ["svc-007", *(f"svc-{i:03d}" for i in range(70, 80)), "svc-107"]
    assert paging.page(entries, BoardFilter(group="batch")).matched == 30
    assert [e.pipeline for e in paging.page(entries, BoardFilter(status="failed")).entries] == ["svc-007"]
    assert [e.pipeline for e in paging.page(entries, BoardFilter(status="waiting")).entries] == ["svc-120"]
    assert [e.pipeline for e in paging.page(entries, BoardFilter(status="paused")).entries] == ["svc-005"]
    none = paging.page(entries, BoardFilter(text="nope"))
    assert (none.matched, none.pages, none.entries, none.first) == (0, 1, (), 0)
    assert "no pipeline matches the filter" in paging.summary(none)


def test_index_reads_the_board_rows() -> None:
    rows = [{"pipeline": "a", "group": "g", "status": "waiting", "stages": [{"name": "s", "status": "waiting"}],
             "paused": False},
            {"pipeline": "b", "group": None, "status": "never run", "stages": [], "paused": True}]
    assert paging.index(rows) == (Entry("a", "g", "waiting", True, False), Entry("b", "", "never run", False, True))


# -- the widgets, on a real workspace ------------------------------------------------------------------


def _estate(workspace: Any) -> Any:
    ok = {"jobs": {"j": {"tasks": [{"exec": {"command": "true"}}]}}}
    pipes: dict[str, Any] = {f"svc-{i:03d}": {"group": "web" if i < 100 else "batch", "stages": [{"build": ok}]}
                             for i in range(130)}
    pipes["svc-007"]["stages"] = [{"build": {"jobs": {"j": {"tasks": [{"exec": {"command": "false"}}]}}}}]
    pipes["svc-120"]["stages"] = [{"build": ok}, {"deploy": {"approval": {"type": "manual"}, **ok}}]
    workspace.write("estate.yaml", yaml.safe_dump({"format_version": 10, "pipelines": pipes}, sort_keys=False))
    ws = workspace.open()
    assert ws.run("svc-007").status == Status.FAILED
    assert ws.run("svc-120").status == Status.WAITING
    assert ws.run("svc-121").status == Status.PASSED
    return ws


def _dash(ws: Any) -> Any:
    from workbench.dashboard import dashboard

    return dashboard(ws, user="alice", autostart=False, charts_on_start=False)


def _shown(dash: Any) -> list[str]:
    import re

    return list(dict.fromkeys(re.findall(r'data-pipeline="([^"]+)"', dash.board.value)))


def test_a_pipeline_on_page_3_is_reachable_by_paging_and_by_the_filter(workspace: Any) -> None:
    ws = _estate(workspace)
    dash = _dash(ws)
    assert _shown(dash) == [f"svc-{i:03d}" for i in range(50)]  # 50 rows, not 130
    assert dash.board_prev.disabled and not dash.board_next.disabled
    summary = dash.board_summary.value
    assert "130 pipelines · 1 failing · 1 waiting for approval · 1 passed · 127 never run" in summary
    assert "showing 1–50 of 130 matched, page 1 of 3" in summary
    dash.board_next.click()
    dash.board_next.click()
    assert _shown(dash) == [f"svc-{i:03d}" for i in range(100, 130)]
    assert dash.board_next.disabled and 'data-stage="deploy" data-status="waiting"' in dash.board.value
    dash.board_filter.value = "svc-121"  # from page 3 back to page 1 of what matches
    assert _shown(dash) == ["svc-121"] and dash.page_number == 1
    assert 'data-pipeline="svc-121" data-counter="1"' in dash.board.value
    dash.board_filter.value = ""
    dash.board_status.value = "waiting"
    assert _shown(dash) == ["svc-120"]
    dash.board_status.value = "failed"
    assert _shown(dash) == ["svc-007"]
    dash.board_status.value = None
    dash.board_group.value = "batch"
    assert _shown(dash) == [f"svc-{i:03d}" for i in range(100, 130)]
    assert [v for _, v in dash.board_group.options] == [None, "web", "batch"]


def test_a_refresh_reads_the_board_again_only_when_the_store_changed(workspace: Any) -> None:
    from workbench.service.cache import cache_of

    ws = _estate(workspace)
    dash = _dash(ws)
    dash.board_filter.value = "svc-12"
    computed = cache_of(ws.store).computed
    before = dash.board.value
    dash.refresh_live()
    assert dash.board.value == before and cache_of(ws.store).computed == computed  # nothing written: nothing read
    assert ws.run("svc-122").status == Status.PASSED  # another process's kind of change: a run of one pipeline
    dash.refresh_live()
    assert cache_of(ws.store).computed > computed
    assert 'data-pipeline="svc-122" data-counter="1"' in dash.board.value
    assert "2 passed" in dash.board_summary.value
    assert dash.board_filter.value == "svc-12"  # the filter the person typed stays


def test_the_live_dashboard_shows_page_1_at_once_and_counts_in_the_background(workspace: Any) -> None:
    import time

    from workbench.dashboard import dashboard

    ws = _estate(workspace)
    dash = dashboard(ws, user="alice", autostart=True, interval=0.2, charts_on_start=False)
    try:
        assert _shown(dash) == [f"svc-{i:03d}" for i in range(50)]
        deadline = time.monotonic() + 60
        while "showing" not in dash.board_summary.value:  # the live thread's first refresh counts them
            assert time.monotonic() < deadline, dash.board_summary.value
            time.sleep(0.05)
        assert "130 pipelines · 1 failing · 1 waiting for approval" in dash.board_summary.value
        assert _shown(dash) == [f"svc-{i:03d}" for i in range(50)]
        while dash._warming is None:  # then the charts' warm-up starts
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        dash.close()
