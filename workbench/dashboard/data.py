"""Everything the dashboard shows, computed as plain data (no widgets, no store).

The widgets in :mod:`workbench.dashboard.widgets` only read these results, so
what a person sees — which cell is running, who may approve, whether a
rollback is still possible, a chart's points — is tested here without a
browser or a kernel.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import pandas as pd

# status → (fill, text colour, symbol, words). Running and waiting must differ at a glance,
# also without colour: running has a moving stripe and ▶, waiting a dashed outline and ‖ (pause).
STYLES: dict[str, tuple[str, str, str, str]] = {
    "passed": ("#2e9e44", "#fff", "✓", "passed"),
    "failed": ("#d9342b", "#fff", "✗", "failed"),
    "running": ("#f0ad1e", "#222", "▶", "running"),
    "waiting": ("#ffffff", "#7a3fb5", "‖", "awaiting approval"),
    "scheduled": ("#9fc9ee", "#123", "…", "scheduled"),
    "cancelled": ("#9e9e9e", "#fff", "■", "cancelled"),
    "rejected": ("#8b1d1d", "#fff", "⊘", "rejected"),
    "skipped": ("#e0e0e0", "#555", "–", "skipped"),
    "not run": ("#ffffff", "#999", "○", "not run"),
}

BOARD_CSS = """
<style>
.wb-board{font-family:system-ui,sans-serif;font-size:13px;border-collapse:collapse;width:100%}
.wb-board td,.wb-board th{padding:3px 6px;border-bottom:1px solid #eee;vertical-align:middle;text-align:left}
.wb-board .wb-group{background:#f5f5f5;font-weight:600}
.wb-board .wb-run{white-space:nowrap;color:#333}
.wb-board .wb-old{opacity:.55;font-size:11px}
.wb-cell{display:inline-block;min-width:26px;height:20px;line-height:20px;margin:1px;padding:0 5px;border-radius:3px;
 text-align:center;font-size:11px;box-sizing:border-box;border:1px solid rgba(0,0,0,.15)}
.wb-running{background-image:repeating-linear-gradient(45deg,rgba(255,255,255,.35) 0 6px,transparent 6px 12px);
 background-size:34px 34px;animation:wb-move 1s linear infinite}
@keyframes wb-move{from{background-position:0 0}to{background-position:34px 0}}
.wb-waiting{border:2px dashed #7a3fb5;font-weight:700}
.wb-notrun{border:1px dashed #bbb}
</style>
"""


def style(status: str) -> tuple[str, str, str, str]:
    return STYLES.get(status, STYLES["not run"])


# -- the pipeline board ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    stage: str
    status: str
    counter: int  # stage counter (0 = not run)
    title: str

    @property
    def css(self) -> str:
        return {"running": "wb-running", "waiting": "wb-waiting", "not run": "wb-notrun"}.get(self.status, "")


@dataclass(frozen=True)
class BoardRun:
    run_id: int
    counter: int
    label: str
    status: str
    cells: tuple[Cell, ...]
    started_at: pd.Timestamp | None


@dataclass(frozen=True)
class BoardRow:
    pipeline: str
    group: str
    runs: tuple[BoardRun, ...]  # newest first


def board(runs: pd.DataFrame, stages: pd.DataFrame, layout: Mapping[str, tuple[str, ...]],
          groups: Mapping[str, str] | None = None) -> list[BoardRow]:
    """Rows of GoCD's pipeline dashboard: each pipeline's runs (newest first), one cell per stage.

    ``runs`` are the runs to show (already limited per pipeline), ``stages``
    their stage runs (every counter), ``layout`` pipeline → configured stage
    names in order. A stage's cell shows its highest counter, as GoCD does.
    """
    groups = dict(groups or {})
    # plain loops over the rows, not pandas per pipeline: a 50-pipeline page took 0.8 s in drop_duplicates and
    # one sort_values per pipeline; the cell shows each (run, stage)'s highest counter
    by_run: dict[int, dict[str, Any]] = {}
    for r in stages.itertuples(index=False):
        have = by_run.setdefault(int(r.run_id), {})
        cur = have.get(str(r.stage))
        if cur is None or r.stage_counter >= cur.stage_counter:
            have[str(r.stage)] = r
    by_run = {k: dict(sorted(v.items())) for k, v in by_run.items()}  # stages not in the layout: by name
    out = []
    per: dict[str, list[Any]] = {}
    for r in runs.sort_values("counter", ascending=False, kind="stable").itertuples(index=False) if len(runs) else ():
        per.setdefault(str(r.pipeline), []).append(r)
    names = list(layout) + sorted(set(per) - set(layout))
    for name in names:
        pr = per.get(name)
        brs = []
        if pr is not None:
            for r in pr:
                have = by_run.get(int(r.run_id), {})
                order = list(layout.get(name, ())) or [s for s in have]
                order += [s for s in have if s not in order]
                cells = []
                for st in order:
                    sr = have.get(st)
                    if sr is None:
                        cells.append(Cell(st, "not run", 0, f"{st}: not run"))
                        continue
                    status = str(sr.status)
                    title = f"{st} #{sr.stage_counter}: {style(status)[3]}"
                    if status == "waiting" and _has(sr, "created_at"):
                        title += f" since {_hhmm(sr.created_at)}"
                    cells.append(Cell(st, status, int(sr.stage_counter), title))
                brs.append(BoardRun(int(r.run_id), int(r.counter), str(r.label), str(r.status), tuple(cells),
                                    r.started_at if _has(r, "started_at") else None))
        else:
            cells = tuple(Cell(st, "not run", 0, f"{st}: not run") for st in layout.get(name, ()))
            brs = [BoardRun(0, 0, "never run", "not run", cells, None)] if cells else []
        group = groups.get(name) or (str(getattr(pr[0], "group_name", "") or "") if pr is not None else "")
        out.append(BoardRow(name, group, tuple(brs)))
    return out


def _has(row: Any, attr: str) -> bool:
    v = getattr(row, attr, None)
    return v is not None and not pd.isna(v)


def _hhmm(t: Any) -> str:
    return pd.Timestamp(t).strftime("%Y-%m-%d %H:%M UTC")


def board_html(rows: Iterable[BoardRow], paused: Mapping[str, str] | None = None) -> str:
    """The board as an HTML table (CSS included): coloured cells, running and waiting distinct.

    ``paused`` maps a paused pipeline to who paused it and why (GoCD shows the pause on the board,
    so nobody wonders why a commit did not trigger it).
    """
    paused = dict(paused or {})
    parts = [BOARD_CSS, '<table class="wb-board"><tr><th>pipeline</th><th>run</th><th>stages</th></tr>']
    current = None
    for row in rows:
        if row.group != current:
            current = row.group
            parts.append(f'<tr class="wb-group"><td colspan="3">{html.escape(row.group or "")}</td></tr>')
        for i, run in enumerate(row.runs):
            cls = "" if i == 0 else ' class="wb-old"'
            name = f"<b>{html.escape(row.pipeline)}</b>" if i == 0 else ""
            if i == 0 and row.pipeline in paused:
                name += (f' <span class="wb-paused" style="color:#8a6d00">&#9208; '
                         f'{html.escape(paused[row.pipeline])}</span>')
            shown = "" if run.label == str(run.counter) else f" {html.escape(run.label)}"
            label = "never run" if run.counter == 0 else f"#{run.counter}{shown} · {html.escape(run.status)}"
            cells = "".join(_cell_html(c) for c in run.cells)
            parts.append(f'<tr{cls} data-pipeline="{html.escape(row.pipeline)}" data-counter="{run.counter}">'
                         f'<td>{name}</td><td class="wb-run">{label}</td><td>{cells}</td></tr>')
    parts.append("</table>")
    return "".join(parts)


def warnings_html(lines: Iterable[str]) -> str:
    """Warning lines above the board (a config repository's refused revision and its problems)."""
    return "".join(f'<div class="wb-warning" style="color:#8a6d00;white-space:pre-wrap">&#9888; {html.escape(line)}'
                   "</div>" for line in lines)


def _cell_html(c: Cell) -> str:
    fill, fg, sym, _words = style(c.status)
    return (f'<span class="wb-cell {c.css}" data-stage="{html.escape(c.stage)}" data-status="{c.status}" '
            f'style="background-color:{fill};color:{fg}" title="{html.escape(c.title)}">{sym} '
            f'{html.escape(c.stage)}</span>')


# -- approvals ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    locator: str  # PIPELINE/COUNTER/STAGE
    label: str
    stage: str
    waiting_since: pd.Timestamp | None
    approvers: str
    may: bool
    why: str  # why not (empty when may)


def approvals_for(pending: Iterable[Mapping[str, Any]], user: str, allowed: Callable[[Mapping[str, Any]], bool]) -> list[Pending]:
    """Waiting stages, the current user's first; each says whether ``user`` may decide and, if not, why."""
    out = []
    for p in pending:
        may = bool(allowed(p))
        since = p.get("waiting_since")
        when = pd.Timestamp(since, unit="s", tz="UTC") if isinstance(since, (int, float)) else since
        why = "" if may else f"{user} may not approve this: allowed are {p.get('approvers') or 'nobody'}"
        out.append(Pending(str(p["locator"]), str(p.get("label", "")), str(p["stage"]), when,
                           str(p.get("approvers", "")), may, why))
    out.sort(key=lambda x: (not x.may, x.waiting_since or pd.Timestamp.max.tz_localize("UTC"), x.locator))
    return out


# -- traffic -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteView:
    route: str
    weights: Mapping[str, int]
    live: str
    candidate: str | None  # the stack a move would put traffic on
    candidate_weight: int  # the share on it now
    run: str | None  # the run owning the rollout (P/C)
    can_rollback: bool
    why_not: str  # why rollback is not possible (empty when it is)


def route_views(status_rows: Iterable[Mapping[str, Any]], changes: pd.DataFrame, rollbacks: pd.DataFrame) -> list[RouteView]:
    """Per route: live weights, the slider's value, and whether its run can still be rolled back.

    The rules are traffic.rollback's: only a run that moved the route and is
    still its owner, never after one of its steps reached 100%, and once.
    """
    out = []
    for r in status_rows:
        weights = {str(k): int(v) for k, v in (r.get("weights") or {}).items()}
        live = str(r.get("live"))
        stacks = list((r.get("stacks") or weights).keys())
        other = next((s for s in stacks if s != live), None)
        cand = r.get("candidate") or other
        run = r.get("run")
        why = ""
        if not r.get("candidate") or not run:
            why = "no rollout in progress on this route"
        else:
            pipe, _, counter = str(run).partition("/")
            mine = changes.loc[(changes["pipeline"].astype(str) == pipe) & (changes["counter"].astype("Int64") == int(counter))
                               & (changes["outcome"].astype(str) == "ok")] if len(changes) else changes
            done = rollbacks.loc[(rollbacks["pipeline"].astype(str) == pipe)
                                 & (rollbacks["counter"].astype("Int64") == int(counter))] if len(rollbacks) else rollbacks
            if len(done):
                why = f"run {run} was already rolled back"
            elif len(mine) and (mine["weight"].astype("Int64") == 100).any():
                why = f"run {run} already moved a route to 100%; release a new version instead"
        out.append(RouteView(str(r["route"]), weights, live, cand, int(weights.get(cand, 0)) if cand else 0,
                             str(run) if run else None, why == "", why))
    return out


def move_summary(view: RouteView, weight: int) -> str:
    """The confirm step's question."""
    if view.candidate is None:
        return f"route {view.route} has a single stack; nothing to move"
    return (f"Move route {view.route} to {weight}% on {view.candidate} and {100 - weight}% on {view.live} "
            f"(now {view.candidate_weight}% on {view.candidate})?")
