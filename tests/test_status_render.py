"""`workbench status`'s table: the one-pass layout prints what rich's Table prints, colours included."""
from __future__ import annotations

import io

import pytest
from rich.console import Console

from workbench.reporting import _status_table, print_rich_table, print_status


def _rows() -> list[dict]:
    rows = []
    for i, status in enumerate(["passed", "failed", "running", "waiting", "cancelled", "not run", "odd"]):
        rows.append({
            "pipeline": f"pipe-{i}" + "x" * (i * 3), "group": "g[bold]" if i == 2 else f"g{i % 3}",
            "counter": None if status == "not run" else i + 1, "label": f"1.{i}", "status": status,
            "paused": i == 3,
            "stages": [{"name": f"s{j}[/]", "status": s} for j, s in enumerate(["passed", status, "not run"][: i % 3 + 1])],
        })
    return rows


@pytest.mark.parametrize("terminal", [False, True])
def test_fast_table_is_what_rich_prints(terminal: bool) -> None:
    outs = []
    for render in (lambda rows, c: print_status(rows, console=c), print_rich_table):
        buf = io.StringIO()
        console = Console(file=buf, width=120, force_terminal=terminal, color_system="truecolor" if terminal else None)
        render(_rows(), console)
        outs.append(buf.getvalue())
    assert outs[0] == outs[1]
    assert "g[bold]" in outs[0] and "s0[/]" in outs[0]  # names are text, never markup
    if terminal:
        assert "\x1b[" in outs[0]


def test_too_wide_falls_back_to_rich_wrapping() -> None:
    rows = _rows()
    rows[0]["pipeline"] = "p" * 150
    assert _status_table(rows, 100) is None
    buf = io.StringIO()
    print_status(rows, console=Console(file=buf, width=100))
    assert max(len(line) for line in buf.getvalue().splitlines()) <= 100
    assert "pipe-1" in buf.getvalue()


def _noted_rows() -> list[dict]:
    rows = _rows()
    rows[1].update(reason="stage build failed: exit 2 at https://ci.example.org/x :smile: [bold]not markup[/]")
    rows[4].update(status="cancelled", reason="cancelled by alice " + "very long reason " * 12)
    rows[2]["waiting_jobs"] = [{"stage": "s0", "job": "j", "reason": "waiting for an agent with resources rpm " * 4}]
    rows[3]["pause"] = {"by": "bob", "reason": "freeze 2026-12-24", "since": "2026-12-03T10:00:00+00:00"}
    rows[3]["material_errors"] = [{"material": "git", "since": "2026-12-03T10:00:00+00:00", "message": "exit 128"}]
    return rows


def _one_print_per_line(rows: list[dict], console: Console) -> None:
    """The lines under the table as they were printed before ``print_lines``: one ``console.print`` each."""
    for r in rows:
        if r.get("status") in ("failed", "cancelled", "rejected") and r.get("reason"):
            console.print(f"{r['pipeline']}/{r['counter']} {r['status']}: {r['reason']}", markup=False, style="red",
                          soft_wrap=True)
        for w in r.get("waiting_jobs") or ():
            console.print(f"{r['pipeline']}/{r['counter']} {w['stage']}/{w['job']}: {w['reason']}", markup=False)
        if r.get("pause"):
            why = f": {r['pause']['reason']}" if r["pause"]["reason"] else ""
            console.print(f"{r['pipeline']}: paused by {r['pause']['by']} since {r['pause']['since']}{why}",
                          markup=False, style="yellow")
        for e in r.get("material_errors") or ():
            console.print(f"{r['pipeline']}: material {e['material']} error since {e['since']}: {e['message']}",
                          markup=False, style="red")


@pytest.mark.parametrize("terminal", [False, True])
def test_the_lines_under_the_table_are_what_one_print_each_gave(terminal: bool) -> None:
    full = io.StringIO()
    c = Console(file=full, width=100, force_terminal=terminal, color_system="truecolor" if terminal else None)
    print_status(_noted_rows(), console=c)
    ref = io.StringIO()
    c = Console(file=ref, width=100, force_terminal=terminal, color_system="truecolor" if terminal else None)
    print_rich_table(_noted_rows(), c)
    _one_print_per_line(_noted_rows(), c)
    assert full.getvalue() == ref.getvalue()
    assert "😄" in full.getvalue()  # rich's emoji codes, as console.print did
    if not terminal:
        assert "[bold]not markup[/]" in full.getvalue()
