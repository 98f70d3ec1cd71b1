"""Rows and tables for the terminal (status, history, logs).

Rows are plain dicts with stable keys: the JSON output is exactly these rows,
so scripts can rely on them.
"""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from .errors import NotFound

COLOURS = {
    "passed": "green", "failed": "red", "running": "yellow", "scheduled": "cyan", "waiting": "magenta",
    "cancelled": "grey50", "rejected": "red3", "skipped": "grey50",
}


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def _secs(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(b - a, 3)


def _stage_list(detail: Any) -> list[dict[str, Any]]:
    return [
        {"name": s.name, "counter": s.counter, "status": s.status.value, "approved_by": s.approved_by,
         "duration_s": _secs(s.started_at, s.finished_at)}
        for s in detail.latest_stages().values()
    ]


def status_rows(ws: Any, view: Any = None) -> list[dict[str, Any]]:
    """One row per configured pipeline: its latest run and that run's stages.

    ``view``: the :class:`~workbench.service.boardview.BoardView` to show (default: that of ``ws.config``).
    """
    if view is None:
        from .service.boardview import view_of

        view = view_of(ws.config)  # config errors first: they must not touch the store
    origins = view.origins
    latest = ws.store.board_runs()  # every latest run, its stages and waiting jobs in three queries
    rows = []
    for name, group, stage_names in view.pipelines:
        run = latest.get(name)
        row: dict[str, Any] = {"pipeline": name, "group": group, "counter": None, "label": None,
                               "status": "never run", "stages": [], "reason": None,
                               "config_repo": origins.get(name)}  # where a config repository's pipeline comes from
        if run is not None:
            done = {s[0]: s for s in run.stages}
            row.update(counter=run.counter, label=run.label, status=run.status, reason=run.reason,
                       started_at=_iso(run.started_at or run.created_at), finished_at=_iso(run.finished_at))
            stages = []
            for st in stage_names:
                s = done.get(st)
                stages.append({"name": st, "counter": 0, "status": "not run", "approved_by": None,
                               "duration_s": None} if s is None else
                              {"name": st, "counter": s[1], "status": s[2], "approved_by": s[3],
                               "duration_s": _secs(s[4], s[5])})
            row["stages"] = stages
            # jobs not started yet with a reason, e.g. "waiting for an agent with resources rpm"
            row["waiting_jobs"] = [{"stage": st, "job": job, "reason": reason} for st, job, reason in run.waiting]
        else:
            row["stages"] = [{"name": st, "counter": 0, "status": "not run", "approved_by": None, "duration_s": None}
                             for st in stage_names]
        rows.append(row)
    errors = _material_errors(ws)
    for row in rows:  # unreachable remotes, bad branches: the pipeline cannot trigger until fixed
        row["material_errors"] = [
            {"material": e["material"], "url": e["url"], "message": e["message"], "since": _iso(e["first_seen"])}
            for e in errors.get(row["pipeline"], ())
        ]
    from .pauses import current_pauses

    paused = current_pauses(ws.store)
    for row in rows:  # GoCD's pause: who stopped the pipeline, why, since when (None when not paused)
        held = paused.get(row["pipeline"])
        row["paused"] = held is not None
        row["pause"] = None if held is None else {"by": held.by, "reason": held.reason,
                                                  "since": _iso(held.since)}
    return rows


def _material_errors(ws: Any) -> dict[str, list[dict[str, Any]]]:
    try:
        from .materials import open_material_errors
    except ImportError:  # the materials feature is not installed
        return {}
    return open_material_errors(ws.store)


def history_rows(ws: Any, pipeline: str | None, limit: int) -> list[dict[str, Any]]:
    runs = ws.store.pipeline_runs(pipeline, limit=limit)
    if pipeline and not runs:
        raise NotFound(f"no history for pipeline {pipeline!r}")
    details = ws.store.run_details(runs)  # a few queries for the page, not one per run
    notebooks = _executed_notebooks(ws, list(details.values()))
    out = []
    for r in runs:
        detail = details[r.id]
        out.append({
            "pipeline": r.pipeline, "counter": r.counter, "label": r.label, "status": r.status.value,
            "trigger": r.trigger, "triggered_by": r.triggered_by, "reason": r.reason,
            "created_at": _iso(r.created_at), "started_at": _iso(r.started_at), "finished_at": _iso(r.finished_at),
            "duration_s": _secs(r.started_at, r.finished_at), "revisions": dict(r.revisions),
            "config_repo": _config_repo(r.revisions),
            "stages": _stage_list(detail),
            "notebooks": notebooks.get(r.id, []),
        })
    return out


def _config_repo(revisions: Any) -> str | None:
    """``ID@REV12`` of the config repository revision a run's pipeline was defined by (None: the workspace's)."""
    for rev in (revisions or {}).values():
        if isinstance(rev, dict) and rev.get("kind") == "configrepo":
            return f"{rev.get('repo')}@{str(rev.get('revision'))[:12]}"
    return None


def _executed_notebooks(ws: Any, details: list[Any]) -> dict[int, list[dict[str, Any]]]:
    """The executed notebooks of each run (each notebook job's record, with a failing cell if any), by run id."""
    try:
        from .notebooks.tables import notebook_runs
    except ImportError:  # the notebooks feature is not installed
        return {}
    import sqlalchemy as sa

    names = {j.id: (d.run.id, s.name, j.name) for d in details for s in d.stages for j in d.jobs.get(s.id, ())}
    if not names:
        return {}
    ids = list(names)
    rows: list[Any] = []
    with ws.store.read() as conn:
        for i in range(0, len(ids), 500):
            q = sa.select(notebook_runs).where(notebook_runs.c.job_run_id.in_(ids[i:i + 500]))
            rows.extend(conn.execute(q).mappings().all())
    out: dict[int, list[dict[str, Any]]] = {}
    for r in sorted(rows, key=lambda r: r["id"]):
        run_id, stage, job = names[r["job_run_id"]]
        out.setdefault(run_id, []).append({
            "stage": stage, "job": job, "notebook": r["notebook"], "executed_path": r["executed_path"],
            "status": r["status"], "failed_cell": r["cell_index"] if r["status"] != "passed" else None,
            "error": r["ename"]})
    return out


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return str(value)


def print_table(rows: list[dict[str, Any]], columns: list[str], *, console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_edge=False, header_style="bold")
    for c in columns:
        table.add_column(c)
    for r in rows:
        cells = []
        for c in columns:
            if c == "stages":
                cells.append(" ".join(f"[{COLOURS.get(s['status'], 'white')}]{s['name']}[/]" for s in r["stages"]))
            elif c == "status":
                cells.append(f"[{COLOURS.get(r['status'], 'white')}]{r['status']}[/]")
            elif c == "started":
                cells.append(_cell(r.get("started_at") or r.get("created_at")))
            elif c == "duration":
                d = r.get("duration_s")
                cells.append("" if d is None else f"{d:.2f}s")
            else:
                cells.append(_cell(r.get(c)))
        table.add_row(*cells)
    (console or Console(width=max(100, _term_width()))).print(table)


def _term_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 120


def config_repo_lines(repos: list[dict[str, Any]]) -> list[str]:
    """One warning line per config repository whose latest revision did not load (its problems follow)."""
    out = []
    for r in repos:
        if not r.get("errors"):
            continue
        good = (r.get("good_revision") or "")[:12]
        keeps = f"pipelines run from last good {good}" if good else "no good revision yet: it defines no pipelines"
        out.append(f"config repository {r['id']} ({r['url']}): revision {(r.get('latest_revision') or '?')[:12]} "
                   f"refused, {keeps}")
        out += [f"  {e}" for e in r["errors"]]
    return out


STATUS_COLUMNS = ("pipeline", "group", "run", "status", "stages")
_STAGE_PIECES: dict[tuple[str, str], tuple[str, str]] = {}


def _status_cells(r: dict[str, Any]) -> list[list[tuple[str, str | None]]]:
    """One status row as cells of (text, style) pieces: no markup to parse, so no escaping either."""
    stages: list[tuple[str, str | None]] = []
    for i, s in enumerate(r["stages"]):
        if i:
            stages.append(("  ", None))
        key = (s["name"], s["status"])
        piece = _STAGE_PIECES.get(key)
        if piece is None:  # a few distinct (name, status) pairs at any size: made once each
            piece = _STAGE_PIECES[key] = (f"{'■' if s['status'] != 'not run' else '□'} {s['name']}",
                                          COLOURS.get(s["status"], "grey50"))
            if len(_STAGE_PIECES) > 65536:
                _STAGE_PIECES.clear()
        stages.append(piece)
    run = "" if r["counter"] is None else f"{r['counter']} ({r['label']})"
    shown: list[tuple[str, str | None]] = [(str(r["status"]), COLOURS.get(r["status"], "white"))]
    if r.get("paused"):
        shown += [(" ", None), ("(paused)", "yellow")]
    return [[(str(r["pipeline"]), None)], [(str(r["group"]), None)], [(run, None)], shown, stages]


def _status_layout(rows: list[dict[str, Any]], width: int) -> tuple[list[Any], list[int]] | None:
    """Every row's cells and the column widths; None when the table would not fit ``width``."""
    cells = [_status_cells(r) for r in rows]
    widths = [_cell_len(c) for c in STATUS_COLUMNS]
    for row in cells:
        for i, cell in enumerate(row):
            n = sum(_cell_len(t) for t, _ in cell) if len(cell) > 1 else _cell_len(cell[0][0])
            if n > widths[i]:
                widths[i] = n
    if sum(widths) + 3 * len(widths) - 1 > width:
        return None
    return cells, widths


def _cell_len(text: str) -> int:
    """Terminal cells of ``text``: its length when it is ASCII (most names), else rich's measure."""
    if text.isascii():
        return len(text)
    from rich.cells import cell_len

    return cell_len(text)


def _status_pieces(cells: list[Any], widths: list[int]) -> Iterator[tuple[str, str | None]]:
    """The board as rich renders a ``Table(show_edge=False)`` of it: (text, style) pieces, newlines included."""
    cell_len = _cell_len
    for i, c in enumerate(STATUS_COLUMNS):
        if i:
            yield "┃", None
        yield " ", "bold"  # rich styles a header's padding apart from its text
        yield c + " " * (widths[i] - cell_len(c)), "bold"
        yield " ", "bold"
    yield "\n" + "╇".join("━" * (w + 2) for w in widths), None
    for row in cells:
        yield "\n", None
        for i, cell in enumerate(row):
            yield ("│ " if i else " "), None
            used = 0
            for text, style in cell:
                yield text, style
                used += cell_len(text)
            yield " " * (widths[i] - used + 1), None


def _status_table(rows: list[dict[str, Any]], width: int) -> Any:
    """The board as one styled rich Text laid out in one pass (rich's Table measures and wraps every cell:
    seconds for a thousand pipelines); None when the table would not fit ``width`` (rich's Table then
    shrinks and wraps columns: the caller lets it)."""
    from rich.text import Text

    layout = _status_layout(rows, width)
    if layout is None:
        return None
    out = Text(no_wrap=True, overflow="ignore", end="\n")
    for text, style in _status_pieces(*layout):
        out.append(text, style)
    return out


def _write_styled(console: Any, pieces: Iterator[tuple[str, str | None]]) -> bool:
    """Write (text, style) pieces to a plain terminal or file as ``console.print`` of the same Text would, with
    each style's escape codes rendered once: rich's own rendering of a 10,000-row Text took over a second.
    False (nothing written) where rich does more than escape codes (Jupyter, recording, legacy Windows)."""
    from rich.color import ColorSystem

    if console.is_jupyter or console.record or console.legacy_windows or console.file is None:
        return False
    system = {"standard": ColorSystem.STANDARD, "256": ColorSystem.EIGHT_BIT, "truecolor": ColorSystem.TRUECOLOR,
              "windows": ColorSystem.WINDOWS}.get(console.color_system or "")
    codes: dict[str | None, tuple[str, str]] = {None: ("", "")}
    out = []
    for text, name in pieces:
        if system is None:
            out.append(text)
            continue
        code = codes.get(name)
        if code is None:
            style = console.get_style(name)
            if console.no_color:
                style = style.without_color
            code = codes[name] = tuple(style.render("\0", color_system=system).split("\0")) if style else ("", "")
        out.append(code[0] + text + code[1] if code[0] else text)
    out.append("\n")
    with console:  # rich's lock and buffer: lines printed before come out first
        console.file.write("".join(out))
    return True


def print_status(rows: list[dict[str, Any]], repos: list[dict[str, Any]] | None = None, *, console: Any = None) -> None:
    from rich.console import Console

    console = console or Console(width=max(100, _term_width()))
    layout = _status_layout(rows, console.width)
    if layout is None:
        print_rich_table(rows, console)
    elif not _write_styled(console, _status_pieces(*layout)):
        console.print(_status_table(rows, console.width), soft_wrap=True)
    notes: list[tuple[str, str | None, bool]] = []  # (line, style, soft_wrap) under the table
    for r in rows:
        if r.get("status") in ("failed", "cancelled", "rejected") and r.get("reason"):
            notes.append((f"{r['pipeline']}/{r['counter']} {r['status']}: {r['reason']}", "red", True))
        for w in r.get("waiting_jobs") or ():
            notes.append((f"{r['pipeline']}/{r['counter']} {w['stage']}/{w['job']}: {w['reason']}", None, False))
        if r.get("pause"):
            why = f": {r['pause']['reason']}" if r["pause"]["reason"] else ""
            notes.append((f"{r['pipeline']}: paused by {r['pause']['by']} since {r['pause']['since']}{why}",
                          "yellow", False))
        for e in r.get("material_errors") or ():
            notes.append((f"{r['pipeline']}: material {e['material']} error since {e['since']}: {e['message']}",
                          "red", False))
    notes += [(line, "yellow", True) for line in config_repo_lines(repos or [])]
    print_lines(console, notes)


def print_lines(console: Any, lines: list[tuple[str, str | None, bool]]) -> None:
    """``console.print(line, markup=False, style=style, soft_wrap=soft)`` for each line, as one print per run
    of lines with the same ``soft``: each line is the same Text (emoji, highlighting, style) and wraps alone,
    but a thousand failed runs are not a thousand renders (a second at 10,000 pipelines with a year of history)."""
    from rich.text import Text

    i = 0
    while i < len(lines):
        j = i
        while j < len(lines) and lines[j][2] == lines[i][2]:
            j += 1
        texts = []
        for text, style, _ in lines[i:j]:
            t = console.render_str(text, markup=False)
            if style:
                t.stylize_before(style)  # under the highlighter's spans, as print(..., style=) puts it
            texts.append(t)
        console.print(Text("\n").join(texts), soft_wrap=lines[i][2])
        i = j



def print_rich_table(rows: list[dict[str, Any]], console: Any) -> None:
    """The board through rich's Table: what the fast rendering must print the same (tests), and the fallback."""
    from rich.table import Table
    from rich.text import Text

    table = Table(show_edge=False, header_style="bold")
    for c in STATUS_COLUMNS:
        table.add_column(c)
    for r in rows:
        table.add_row(*(Text.assemble(*cell) for cell in _status_cells(r)))
    console.print(table)

def job_log_path(ws: Any, locator: str) -> tuple[Path, Any]:
    """``PIPELINE/COUNTER/STAGE[/STAGE_COUNTER]/JOB`` → its log file and job run."""
    from .engine import find_run

    form = "PIPELINE/COUNTER/STAGE[/STAGE_COUNTER]/JOB"
    run, rest = find_run(ws.store, locator, form)
    if len(rest) not in (2, 3):
        raise NotFound(f"{locator!r}: expected {form}")
    stage_name, job_name = rest[0], rest[-1]
    detail = ws.store.run_detail(run)
    stages = [s for s in detail.stages if s.name == stage_name]
    if len(rest) == 3:
        stages = [s for s in stages if str(s.counter) == rest[1]]
    if not stages:
        raise NotFound(f"run {run.locator} has no stage {stage_name!r}" + (f" counter {rest[1]}" if len(rest) == 3 else ""))
    stage = stages[-1]
    jobs = [j for j in detail.jobs.get(stage.id, ()) if j.name == job_name]
    if not jobs:
        names = ", ".join(j.name for j in detail.jobs.get(stage.id, ())) or "none"
        raise NotFound(f"stage {stage_name} of {run.locator} has no job {job_name!r} (jobs: {names})")
    job = jobs[0]
    if not job.log_path:
        raise NotFound(f"job {job_name} of {run.locator}/{stage_name} has not started, so it has no log yet")
    return Path(job.log_path), job

