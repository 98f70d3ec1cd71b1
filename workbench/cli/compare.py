"""``workbench compare A B`` (or ``compare PIPELINE C1 C2``): two runs side by side, before approving production."""
from __future__ import annotations

import json
from typing import Any

import click

from ..errors import UsageError
from . import _service, main


@main.command("compare")
@click.argument("runs", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def compare_cmd(ctx: click.Context, runs: tuple[str, ...], fmt: str) -> None:
    """Compare two runs: P/C1 P/C2, or PIPELINE C1 C2 (a counter, a label or 'latest').

    Shows the commits between them per repository (through upstream pipelines), the
    upstream runs, the config that changed (secure values by name only), stages and jobs
    with their durations, and the artifacts and packages whose SHA-256 differs."""
    if len(runs) == 3:
        a, b = f"{runs[0]}/{runs[1]}", f"{runs[0]}/{runs[2]}"
    elif len(runs) == 2:
        a, b = runs
    else:
        raise UsageError("compare takes two runs (P/C1 P/C2) or a pipeline and two counters or labels (P C1 C2)")
    result = _service(ctx, reading=True).compare(a, b)
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
        return
    print_comparison(result)


def _s(v: Any) -> str:
    return "" if v is None else f"{v:.2f}s" if isinstance(v, float) else str(v)


def print_comparison(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ..reporting import COLOURS, _term_width

    con = Console(width=max(100, _term_width()))
    a, b = r["a"], r["b"]
    con.print(f"[bold]A[/] {escape(a['locator'])} (label {escape(a['label'])}, {a['status']}, {a['created_at']})  "
              f"[bold]B[/] {escape(b['locator'])} (label {escape(b['label'])}, {b['status']}, {b['created_at']})")

    def table(title: str, cols: list[str]) -> Table:
        t = Table(title=title, title_justify="left", show_edge=False, header_style="bold")
        for c in cols:
            t.add_column(c)
        return t

    def status(s: str | None) -> str:
        return "" if s is None else f"[{COLOURS.get(s, 'white')}]{s}[/]"

    t = table("Materials (commits in B not in A)", ["material", "via", "A", "B", "commits"])
    for m in r["materials"]:
        t.add_row(escape(m["material"]), m["via"], (m["a"] or "")[:12], (m["b"] or "")[:12],
                  "same" if m["a"] == m["b"] else str(len(m["commits"])) + (f" (A has {len(m['removed'])} B lacks)"
                                                                         if m["removed"] else ""))
    con.print(t)
    for m in r["materials"]:
        if m["commits"] or m["removed"] or m["note"]:
            c = table(f"{m['material']}: {m['a'] and m['a'][:12]}..{m['b'] and m['b'][:12]}",
                      ["", "sha", "author", "time", "message"])
            for x in m["commits"]:
                c.add_row("+", x["sha"][:12], escape(x["author"]), x["time"] or "", escape(x["message"]))
            for x in m["removed"]:
                c.add_row("-", x["sha"][:12], escape(x["author"]), x["time"] or "", escape(x["message"]))
            con.print(c)
            if m["note"]:
                con.print(f"  note: {escape(m['note'])}")
    if r["upstream"]:
        t = table("Upstream runs", ["pipeline", "A", "B", ""])
        for u in r["upstream"]:
            t.add_row(escape(u["pipeline"]), u["a"] or "", u["b"] or "", u["change"])
        con.print(t)
    if r["config"]:
        t = table("Config changed", ["key", "A", "B", ""])
        for c in r["config"]:
            t.add_row(escape(c["key"]), escape(c["a"] or ""), escape(c["b"] or ""), c["change"])
        con.print(t)
    elif r["config_same"]:
        con.print("Config: the same")
    t = table("Stages and jobs", ["stage / job", "A", "B", "A time", "B time", "change"])
    for s in r["stages"]:
        t.add_row(f"[bold]{escape(s['stage'])}[/]", status(s["a_status"]), status(s["b_status"]),
                  _s(s["a_duration_s"]), _s(s["b_duration_s"]), "" if s["delta_s"] is None else f"{s['delta_s']:+.2f}s")
        for j in r["jobs"]:
            if j["stage"] == s["stage"]:
                t.add_row(f"  {escape(j['job'])}", status(j["a_status"]), status(j["b_status"]),
                          _s(j["a_duration_s"]), _s(j["b_duration_s"]),
                          "" if j["delta_s"] is None else f"{j['delta_s']:+.2f}s")
    con.print(t)
    for what, cols in (("artifacts", ["stage", "job", "path"]), ("packages", ["action", "repository", "name"])):
        part = r[what]
        if part["changed"]:
            extra = ["A version", "B version"] if what == "packages" else []
            t = table(f"{what.capitalize()} that differ (SHA-256); {part['unchanged']} the same",
                      [*cols, *extra, "A sha256", "B sha256", ""])
            for x in part["changed"]:
                vals = [escape(str(x[c])) for c in cols]
                if extra:
                    vals += [str(x.get("a_version") or ""), str(x.get("b_version") or "")]
                t.add_row(*vals, (x["a_sha256"] or "")[:16], (x["b_sha256"] or "")[:16], x["change"])
            con.print(t)
        elif part["unchanged"]:
            con.print(f"{what.capitalize()}: {part['unchanged']} the same (SHA-256)")
    for n in r["notes"]:
        con.print(f"note: {escape(n)}")
