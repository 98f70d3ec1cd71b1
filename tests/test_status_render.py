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
