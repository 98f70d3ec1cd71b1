"""Chart data (pure pandas) and the plotly figures drawn from it.

Each ``*_data`` function turns metrics frames into exactly the points a chart
shows, and each ``*_figure`` draws those points; the dashboard, the analysis
notebook and the tests share them. Figures are plain ``go.Figure`` objects:
the dashboard wraps them in ``go.FigureWidget`` to update them in place.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..metrics.dora import _bucket_start, _local_naive, ancestors, deployment_counts
from ..metrics.model import History, Period
from .data import STYLES

HOURS = pd.Timedelta(hours=1)


def _period_rows(df: pd.DataFrame, col: str, period: Period) -> pd.DataFrame:
    return df.loc[period.mask(df[col])] if len(df) else df


# -- data ---------------------------------------------------------------------------------------------


def lead_time_data(leads: pd.DataFrame, period: Period | None = None, freq: str = "W") -> pd.DataFrame:
    """One point per counted commit: the bucket of its deployment and its lead time in hours."""
    period = period or Period()
    lt = leads.loc[leads["counted"]] if len(leads) else leads
    lt = _period_rows(lt, "deployed_at", period)
    if lt.empty:
        return pd.DataFrame({"bucket": pd.Series(dtype="datetime64[ns]"), "hours": pd.Series(dtype=float),
                             "sha": pd.Series(dtype=str), "deployed_at": pd.Series(dtype="datetime64[ns, UTC]")})
    return pd.DataFrame({
        "bucket": _bucket_start(_local_naive(lt["deployed_at"], period.tz), freq).to_numpy(),
        "hours": (lt["lead_time"] / HOURS).to_numpy(),
        "sha": lt["sha"].str.slice(0, 10).to_numpy(),
        "deployed_at": lt["deployed_at"].reset_index(drop=True),
    }).sort_values("bucket", kind="stable").reset_index(drop=True)


def rate_data(dep: pd.DataFrame, column: str, period: Period | None = None, freq: str = "W") -> pd.DataFrame:
    """Per bucket: deployments, how many have ``column`` true (failed_change, rework), and the rate."""
    period = period or Period()
    counts = deployment_counts(dep, period, freq=freq)
    if counts.empty:
        return pd.DataFrame({"period": [], "deployments": [], "hits": [], "rate": []})
    d = _period_rows(dep, "at", period)
    keys = _bucket_start(_local_naive(d["at"], period.tz), freq) if len(d) else pd.Series(dtype="datetime64[ns]")
    hits = d[column].astype(bool).groupby(keys.to_numpy()).sum() if len(d) else pd.Series(dtype=int)
    local = counts["period"].dt.tz_localize(None)
    counts["hits"] = hits.reindex(local.to_numpy(), fill_value=0).to_numpy().astype(int)
    counts["rate"] = counts["hits"] / counts["deployments"].where(counts["deployments"] > 0)
    return counts


def recovery_data(dep: pd.DataFrame, period: Period | None = None) -> pd.DataFrame:
    """One point per failed change: when it deployed, hours to recovery (NaN while unrecovered)."""
    period = period or Period()
    d = _period_rows(dep, "at", period)
    d = d.loc[d["failed_change"]] if len(d) else d
    d = d.reset_index(drop=True)
    return pd.DataFrame({
        "at": d["at"] if len(d) else pd.Series(dtype="datetime64[ns, UTC]"),
        "hours": d["recovery_time"] / HOURS if len(d) else pd.Series(dtype=float),
        "label": d["label"] if len(d) else pd.Series(dtype=str),
        "recovered": d["restored_at"].notna() if len(d) else pd.Series(dtype=bool),
    })


def stage_duration_data(times: pd.DataFrame, pipeline: str | None = None) -> pd.DataFrame:
    """Finished stage runs: pipeline, stage (in pipeline order), duration and waits in seconds."""
    t = times.loc[times["duration"].notna()]
    if pipeline:
        t = t.loc[t["pipeline"].astype(str) == pipeline]
    out = pd.DataFrame({
        "pipeline": t["pipeline"].astype(str).to_numpy(), "stage": t["stage"].astype(str).to_numpy(),
        "position": t["position"].to_numpy(),
        "seconds": (t["duration"] / pd.Timedelta(seconds=1)).to_numpy(),
        "queue_seconds": (t["queue_wait"] / pd.Timedelta(seconds=1)).to_numpy(),
        "approval_seconds": (t["approval_wait"] / pd.Timedelta(seconds=1)).to_numpy(),
    })
    return out.sort_values(["pipeline", "position"], kind="stable").reset_index(drop=True)


def gantt_data(stages: pd.DataFrame, jobs: pd.DataFrame, run_id: int) -> pd.DataFrame:
    """Bars of one run: each stage run (its approval wait apart) and each of its jobs, in order."""
    s = stages.loc[stages["run_id"] == run_id].sort_values(["position", "stage_counter"])
    j = jobs.loc[jobs["run_id"] == run_id] if len(jobs) else jobs
    rows = []
    for st in s.itertuples(index=False):
        name = f"{st.stage}" + (f" #{st.stage_counter}" if st.stage_counter > 1 else "")
        if str(st.approval_type) == "manual" and not pd.isna(st.created_at):
            end = st.started_at if not pd.isna(st.started_at) else (st.finished_at if not pd.isna(st.finished_at) else pd.NaT)
            if not pd.isna(end) and end > st.created_at:
                rows.append({"lane": name, "kind": "approval wait", "start": st.created_at, "finish": end,
                             "status": "waiting"})
            elif pd.isna(end):
                rows.append({"lane": name, "kind": "approval wait", "start": st.created_at, "finish": pd.NaT,
                             "status": "waiting"})
        if not pd.isna(st.started_at):
            rows.append({"lane": name, "kind": "stage", "start": st.started_at, "finish": st.finished_at,
                         "status": str(st.status)})
        for jb in j.loc[j["stage_run_id"] == st.stage_run_id].itertuples(index=False) if len(j) else ():
            if pd.isna(jb.started_at):
                continue
            rows.append({"lane": f"{name} / {jb.job}", "kind": "job", "start": jb.started_at,
                         "finish": jb.finished_at, "status": str(jb.status)})
    return pd.DataFrame(rows, columns=["lane", "kind", "start", "finish", "status"])


def value_stream_data(h: History, run_id: int, *, max_commits: int = 40) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Nodes and edges of one run's value stream: its commits → upstream runs → it → downstream runs.

    Runs come from the stored provenance (upstream and downstream of
    ``run_id``); commits are those recorded on the upstream runs and the run
    itself. Each run node carries its processing time, each edge the waiting
    time between its ends: a value stream map's two numbers.
    """
    runs = h.runs.set_index("run_id")
    prov = h.provenance[["upstream_run_id", "downstream_run_id"]].dropna().astype("int64")
    up = ancestors([run_id], prov)
    flipped = prov.rename(columns={"upstream_run_id": "downstream_run_id", "downstream_run_id": "upstream_run_id"})
    down = ancestors([run_id], flipped)
    depth: dict[int, int] = {run_id: 0}
    for sign, pairs, edges in ((-1, up, prov), (1, down, flipped)):
        members = set(pairs["run"]) - {run_id}
        frontier = {run_id}
        d = 0
        while frontier and members:
            d += 1
            nxt = set(edges.loc[edges["downstream_run_id"].isin(frontier), "upstream_run_id"]) & members
            for r in nxt:
                depth.setdefault(int(r), sign * d)
            members -= nxt
            frontier = nxt
    # a run's processing time leaves out the time its stages waited for a person: a value stream map
    # separates waiting from working (issue 16)
    st = h.stages
    waits: dict[int, float] = {}
    if len(st):
        mine = st.loc[st["run_id"].isin(list(depth)) & (st["approval_type"].astype(str) == "manual")]
        span = runs.reindex(mine["run_id"].to_numpy())
        # only the part of the wait inside the run's own span (a first stage's wait may precede its start)
        lo = np.maximum(pd.to_datetime(mine["created_at"], utc=True).to_numpy(),
                        pd.to_datetime(span["started_at"], utc=True).to_numpy())
        hi = np.minimum(pd.to_datetime(mine["started_at"], utc=True).to_numpy(),
                        pd.to_datetime(span["finished_at"], utc=True).to_numpy())
        gap = pd.Series((hi - lo) / np.timedelta64(1, "s"), index=mine.index)
        waits = gap.clip(lower=0).fillna(0).groupby(mine["run_id"].to_numpy()).sum().to_dict()
    nodes = []
    for rid, dp in depth.items():
        if rid not in runs.index:
            continue
        r = runs.loc[rid]
        dur = r["finished_at"] - r["started_at"] if not pd.isna(r["finished_at"]) and not pd.isna(r["started_at"]) else pd.NaT
        waited = float(waits.get(rid, 0.0) or 0.0)
        nodes.append({"id": f"run:{rid}", "kind": "run", "run_id": rid, "label": f"{r['pipeline']} #{r['counter']}",
                      "layer": dp, "status": str(r["status"]), "start": r["created_at"], "finish": r["finished_at"],
                      "process_s": max(dur / pd.Timedelta(seconds=1) - waited, 0.0) if not pd.isna(dur) else np.nan,
                      "approval_wait_s": waited})
    edges = []
    for e in prov.loc[prov["upstream_run_id"].isin(depth) & prov["downstream_run_id"].isin(depth)].itertuples(index=False):
        a, b = runs.loc[e.upstream_run_id], runs.loc[e.downstream_run_id]
        wait = b["created_at"] - a["finished_at"] if not pd.isna(a["finished_at"]) else pd.NaT
        edges.append({"source": f"run:{e.upstream_run_id}", "target": f"run:{e.downstream_run_id}",
                      "wait_s": max(wait / pd.Timedelta(seconds=1), 0.0) if not pd.isna(wait) else np.nan})
    c = h.commits
    mine = c.loc[c["pipeline_run_id"].isin([d for d, v in depth.items() if v <= 0])] if len(c) else c
    if len(mine):
        when = mine["commit_time"].fillna(mine["author_time"])
        mine = mine.assign(when=when).sort_values("when").drop_duplicates("sha", keep="first")
        left = min(depth.values()) - 1
        shown = mine.tail(max_commits)
        for cm in shown.itertuples(index=False):
            rid = int(cm.pipeline_run_id)
            nid = f"commit:{cm.sha}"
            nodes.append({"id": nid, "kind": "commit", "run_id": rid, "label": str(cm.sha)[:8], "layer": left,
                          "status": "commit", "start": cm.when, "finish": cm.when, "process_s": np.nan,
                          "approval_wait_s": np.nan})
            created = runs.loc[rid, "created_at"] if rid in runs.index else pd.NaT
            wait = created - cm.when if not pd.isna(created) and not pd.isna(cm.when) else pd.NaT
            edges.append({"source": nid, "target": f"run:{rid}",
                          "wait_s": max(wait / pd.Timedelta(seconds=1), 0.0) if not pd.isna(wait) else np.nan})
    n = pd.DataFrame(nodes, columns=["id", "kind", "run_id", "label", "layer", "status", "start", "finish", "process_s",
                                     "approval_wait_s"])
    if len(n):
        n["y"] = n.groupby("layer").cumcount() - (n.groupby("layer")["id"].transform("size") - 1) / 2
    else:
        n["y"] = pd.Series(dtype=float)
    return n, pd.DataFrame(edges, columns=["source", "target", "wait_s"])


# -- figures --------------------------------------------------------------------------------------------


def _go() -> Any:
    import plotly.graph_objects as go

    return go


def _layout(fig: Any, title: str, **kw: Any) -> Any:
    # plotly's default template; naming another one per figure costs ~30 ms of deep copies each.
    # No width: the figure fills its box, so a 1920 px screen is used (autosize, issue 16).
    fig.update_layout(title=title, margin=dict(l=50, r=20, t=40, b=40), height=kw.pop("height", 300),
                      plot_bgcolor="white", autosize=True, **kw)
    fig.update_xaxes(gridcolor="#eee")
    fig.update_yaxes(gridcolor="#eee")
    return fig


def _empty_note(fig: Any, text: str) -> Any:
    """A chart with nothing to draw says why, instead of showing an empty -1..6 axis."""
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.add_annotation(text=text, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=14, color="#666"))
    return fig


def time_unit(hours: Any) -> tuple[str, float]:
    """The unit a set of durations (in hours) reads best in, and the factor from hours to it."""
    values = pd.Series(hours, dtype=float).dropna()
    top = float(values.max()) if len(values) else 0.0
    if top < 2 / 60:
        return "seconds", 3600.0
    if top < 2:
        return "minutes", 60.0
    if top < 72:
        return "hours", 1.0
    return "days", 1 / 24


def _naive(s: pd.Series) -> list[str]:
    """UTC times as plain date strings: plotly.js reads neither offsets nor plotly.py's binary datetime arrays."""
    return [v.strftime("%Y-%m-%d %H:%M:%S.%f") if not pd.isna(v) else None for v in pd.to_datetime(s, utc=True)]


def _day(s: pd.Series) -> list[str]:
    """Bucket starts as day labels: a category axis keeps one bar readable (a date axis zooms to 0.4 ms)."""
    return [pd.Timestamp(v).strftime("%Y-%m-%d") for v in s]


def lead_time_figure(data: pd.DataFrame) -> Any:
    """Lead time per commit, in the unit its values read best in (seconds for a demo, days for a slow team)."""
    go = _go()
    unit, factor = time_unit(data["hours"])
    fig = go.Figure(go.Box(x=_day(data["bucket"]), y=data["hours"] * factor, boxpoints="all", jitter=0.3,
                           name="lead time", text=data["sha"],
                           hovertemplate="%{text}: %{y:.1f} " + unit + "<extra></extra>"))
    _layout(fig, f"Change lead time per commit ({unit})", yaxis_title=unit, showlegend=False, xaxis_type="category")
    if data.empty:
        _empty_note(fig, "no commits deployed in this period")
    return fig


def frequency_figure(counts: pd.DataFrame) -> Any:
    go = _go()
    fig = go.Figure(go.Bar(x=_day(counts["period"]), y=counts["deployments"], name="deployments",
                           marker_color=STYLES["passed"][0]))
    _layout(fig, "Deployment frequency", yaxis_title="deployments", xaxis_type="category")
    if counts.empty:
        _empty_note(fig, "no production deployments in this period")
    return fig


def rate_figure(data: pd.DataFrame, title: str, colour: str) -> Any:
    """A rate per period; each bar says "N% of M deployments", so a 0% period is a visible zero, not a gap."""
    go = _go()
    labels = [f"{(r if r == r else 0):.0%} of {int(d)}" for r, d in zip(data["rate"], data["deployments"])]
    fig = go.Figure(go.Bar(x=_day(data["period"]), y=data["rate"].fillna(0), marker_color=colour,
                           text=labels, textposition="outside", cliponaxis=False,
                           customdata=np.stack([data["hits"], data["deployments"]], axis=-1) if len(data) else None,
                           hovertemplate="%{y:.0%} (%{customdata[0]} of %{customdata[1]})<extra></extra>"))
    _layout(fig, title, yaxis_tickformat=".0%", yaxis_range=[0, 1.1], xaxis_type="category")
    fig.add_hline(y=0, line_color="#999", line_width=1)
    if data.empty:
        _empty_note(fig, "no production deployments in this period")
    return fig


def recovery_figure(data: pd.DataFrame) -> Any:
    go = _go()
    rec = data.loc[data["recovered"]] if len(data) else data
    unit, factor = time_unit(rec["hours"] if len(rec) else [])
    fig = go.Figure(go.Scatter(x=_naive(rec["at"]), y=rec["hours"] * factor, mode="markers", text=rec["label"],
                               name="recovered", marker=dict(size=9, color=STYLES["failed"][0]),
                               hovertemplate="%{text}: %{y:.1f} " + unit + "<extra></extra>"))
    _layout(fig, f"Failed deployment recovery time ({unit})", yaxis_title=unit, showlegend=False)
    if data.empty:
        _empty_note(fig, "no failed deployments in this period")
    elif rec.empty:
        _empty_note(fig, f"{len(data)} failed deployment{'s' if len(data) != 1 else ''}, none recovered yet")
    return fig


MAX_STAGE_BOXES = 50


def slowest_stages(data: pd.DataFrame, n: int = MAX_STAGE_BOXES) -> tuple[pd.DataFrame, int]:
    """The durations of the ``n`` pipeline/stages with the longest median (in pipeline order), and how many
    pipeline/stages there are in all.

    At 10,000 pipelines the chart had 43,666 boxes: 200 s to build in plotly and unreadable; the slowest
    stages are the ones a person looks for there (one pipeline's stages: ``workbench metrics``).
    """
    if data.empty:
        return data, 0
    med = data.groupby(["pipeline", "stage"], sort=False)["seconds"].median()
    if len(med) <= n:
        return data, len(med)
    keep = set(med.nlargest(n).index)
    mask = [k in keep for k in zip(data["pipeline"], data["stage"])]
    return data.loc[mask], len(med)


def stage_duration_figure(data: pd.DataFrame) -> Any:
    """One horizontal box per pipeline/stage (the 50 slowest by median when there are more), the plot as
    tall as its rows."""
    go = _go()
    fig = go.Figure()
    shown, of = slowest_stages(data)
    rows = 0
    for (pipeline, stage), g in shown.groupby(["pipeline", "stage"], sort=False):
        fig.add_trace(go.Box(x=g["seconds"], name=f"{pipeline}/{stage}", boxpoints=False, orientation="h"))
        rows += 1
    fig.update_yaxes(autorange="reversed", automargin=True)
    title = "Stage durations (seconds)" if rows == of else \
        f"Stage durations (seconds): the {rows} slowest of {of:,} stages by median"
    _layout(fig, title, showlegend=False, height=max(240, 22 * rows + 90), xaxis_title="seconds")
    if data.empty:
        _empty_note(fig, "no finished stages in this period")
    return fig


def gantt_figure(data: pd.DataFrame, title: str = "Run timeline") -> Any:
    go = _go()
    fig = go.Figure()
    now = pd.Timestamp.now(tz="UTC")
    for kind, g in data.groupby("kind", sort=False):
        start = pd.to_datetime(g["start"], utc=True)
        finish = pd.to_datetime(g["finish"], utc=True).fillna(now)
        ms = (finish - start) / pd.Timedelta(milliseconds=1)
        colours = [STYLES.get(s, STYLES["not run"])[0] if kind != "approval wait" else "#c9b3e6" for s in g["status"]]
        # stages solid, jobs hatched and lighter: the two kinds of bar differ at a glance (issue 16)
        marker: dict[str, Any] = {"color": colours}
        if kind == "job":
            marker.update(opacity=0.55, pattern={"shape": "/", "fgcolor": "#ffffff", "size": 6},
                          line={"color": "#555", "width": 0.5})
        fig.add_trace(go.Bar(y=g["lane"], x=ms, base=_naive(start), orientation="h", name=kind, marker=marker,
                             customdata=g["status"], hovertemplate="%{y}: %{customdata}<extra>" + kind + "</extra>"))
    fig.update_yaxes(autorange="reversed", type="category", categoryorder="array",
                     categoryarray=list(dict.fromkeys(data["lane"])))
    fig.update_xaxes(type="date", title_text="UTC")
    return _layout(fig, title, barmode="overlay", height=max(220, 26 * max(1, data["lane"].nunique()) + 80))


def value_stream_figure(nodes: pd.DataFrame, edges: pd.DataFrame, title: str = "Value stream") -> Any:
    go = _go()
    fig = go.Figure()
    pos = {r.id: (r.layer, r.y) for r in nodes.itertuples(index=False)}
    xs: list[Any] = []
    ys: list[Any] = []
    notes = []
    for e in edges.itertuples(index=False):
        if e.source in pos and e.target in pos:
            (x0, y0), (x1, y1) = pos[e.source], pos[e.target]
            xs += [x0, x1, None]
            ys += [y0, y1, None]
            if not pd.isna(e.wait_s):
                notes.append(dict(x=(x0 + x1) / 2, y=(y0 + y1) / 2, text=f"wait {_short(e.wait_s)}", showarrow=False,
                                  font=dict(size=10, color="#7a3fb5")))
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="#bbb", width=1.5), hoverinfo="skip"))
    for kind, g in nodes.groupby("kind", sort=False):
        colours = [STYLES.get(s, ("#555",))[0] if kind == "run" else "#4a6fa5" for s in g["status"]]
        text = [f"{lbl}<br>{_short(p)}" + (f" (+{_short(w)} waiting for approval)" if w and not pd.isna(w) else "")
                if not pd.isna(p) else lbl for lbl, p, w in zip(g["label"], g["process_s"], g["approval_wait_s"])]
        fig.add_trace(go.Scatter(x=g["layer"], y=g["y"], mode="markers+text", text=text, textposition="top center",
                                 marker=dict(size=16 if kind == "run" else 9, color=colours,
                                             symbol="square" if kind == "run" else "circle",
                                             line=dict(width=1, color="#333")), name=kind))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title, annotations=notes, showlegend=False, height=360)


def _short(seconds: float) -> str:
    s = float(seconds)
    if s < 90:
        return f"{s:.0f}s"
    if s < 5400:
        return f"{s / 60:.0f}m"
    if s < 172800:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


# -- the Metrics tab as one figure ------------------------------------------------------------------------

# (key, row, col): two charts a row, the rework rate and the stage durations across the whole width
METRICS_GRID = (("lead", 1, 1), ("freq", 1, 2), ("cfr", 2, 1), ("recovery", 2, 2), ("rework", 3, 1),
                ("stages", 4, 1))
_TITLE_GAP = 70  # px between rows: the next row's title and this row's axis labels


def _ref(axis_name: str) -> str:
    """``xaxis3`` → ``x3`` (the name a trace, shape or annotation refers to the axis by)."""
    return axis_name.replace("axis", "")


def combine(figs: dict[str, Any], grid: tuple[tuple[str, int, int], ...] = METRICS_GRID) -> Any:
    """The charts of ``figs`` as ONE figure (``make_subplots``), each in its cell with all of its content.

    One figure is one plotly widget in the browser, and each widget instance pays plotly.js's start-up
    (parsing and initialising its ~5 MB bundle): six widgets made the Metrics tab take ~11 s in Chromium
    (issue 16 defect 10). Everything each chart had is carried over: its traces, its axes' settings (the
    unit chosen from the data, category axes, the rate's 0-110 % range and tick format, the reversed
    stage axis), its title as the cell's title, its zero line (shapes) and its "no ... in this period"
    note (annotations), re-anchored to the cell; rows are as tall as each chart asked (the stage
    durations' row grows with its stages) and the figure has no width, so it fills the screen's.
    """
    from plotly.subplots import make_subplots

    rows = max(r for _, r, _ in grid)
    cols = max(c for _, _, c in grid)
    row_h = [max((figs[k].layout.height or 300) - 80 for k, r, _ in grid if r == i) for i in range(1, rows + 1)]
    specs: list[list[Any]] = [[None] * cols for _ in range(rows)]
    for k, r, c in grid:  # a chart alone in its row spans the whole width
        specs[r - 1][c - 1] = {"colspan": cols} if sum(1 for _, r2, _ in grid if r2 == r) == 1 else {}
    total = sum(row_h) + _TITLE_GAP * (rows - 1) + 80
    order = sorted(grid, key=lambda t: (t[1], t[2]))
    titles = [figs[k].layout.title.text or "" for k, _, _ in order]
    fig = make_subplots(rows=rows, cols=cols, specs=specs, subplot_titles=titles, row_heights=row_h,
                        vertical_spacing=_TITLE_GAP / total, horizontal_spacing=0.07)
    notes = list(fig.layout.annotations)  # the cells' titles
    shapes = []
    for k, r, c in order:
        src = figs[k]
        sub = fig.get_subplot(r, c)
        xname, yname = sub.xaxis.plotly_name, sub.yaxis.plotly_name
        x, y = _ref(xname), _ref(yname)
        for tr in src.data:
            fig.add_trace(tr, row=r, col=c)
        for axis, name in (("xaxis", xname), ("yaxis", yname)):
            props = src.layout[axis].to_plotly_json()
            for drop in ("domain", "anchor", "overlaying", "position"):
                props.pop(drop, None)
            fig.layout[name].update(props)
        for a in src.layout.annotations:
            a = a.to_plotly_json()
            a["xref"] = f"{x} domain" if a.get("xref", "paper") in ("paper", "x domain") else x
            a["yref"] = f"{y} domain" if a.get("yref", "paper") in ("paper", "y domain") else y
            notes.append(a)
        for s in src.layout.shapes:
            s = s.to_plotly_json()
            s["xref"] = f"{x} domain" if s.get("xref") in ("paper", "x domain") else x
            s["yref"] = f"{y} domain" if s.get("yref") in ("paper", "y domain") else y
            shapes.append(s)
    fig.update_layout(annotations=notes, shapes=shapes, height=total, showlegend=False, autosize=True,
                      plot_bgcolor="white", margin=dict(l=50, r=20, t=40, b=40), barmode="group")
    return fig


def metrics_figure(d: dict[str, Any]) -> Any:
    """The Metrics tab's six charts from ``ChartSource.all()``'s data, as one figure (see :func:`combine`)."""
    return combine(metrics_figures(d))


def metrics_figures(d: dict[str, Any]) -> dict[str, Any]:
    """The six charts as separate figures (a notebook may want one alone)."""
    return {
        "lead": lead_time_figure(d["lead"]),
        "freq": frequency_figure(d["freq"]),
        "cfr": rate_figure(d["cfr"], "Change fail rate", STYLES["failed"][0]),
        "recovery": recovery_figure(d["recovery"]),
        "rework": rate_figure(d["rework"], "Deployment rework rate", STYLES["running"][0]),
        "stages": stage_duration_figure(d["stages"]),
    }
