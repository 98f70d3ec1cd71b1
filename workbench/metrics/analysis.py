"""Helpers of notebooks/post_release_analysis.ipynb: open a source, find a release, show a chart.

Kept here (tested) so that the notebook stays a short story a release
manager can read and change, and runs the same from cron, papermill,
JupyterLab and Binder.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..errors import NotFound
from . import Metrics
from .io import Snapshot, is_snapshot, load
from .model import DeployRule, History


@dataclass
class Source:
    """What the analysis reads: a live workspace or a snapshot, as frames and a deploy rule."""

    name: str
    frames: Any  # ws.frames or Snapshot.frames
    history: History
    rule: DeployRule

    def frame(self, name: str) -> pd.DataFrame | None:
        """An optional frame (``test_results``…), None when the source has none."""
        try:
            names = self.frames.names()
        except AttributeError:
            names = []
        return getattr(self.frames, name) if name in names else None


def open_source(workspace: str | None = None, snapshot: str | None = None) -> Source:
    """A snapshot when given (or when ``workspace`` is one), else the workspace (default: the current one)."""
    if snapshot or (workspace and is_snapshot(workspace)):
        snap = Snapshot(snapshot or workspace)  # type: ignore[arg-type]
        h, rule = load(snap)
        return Source(f"snapshot {snap.path.name}", snap.frames, h, rule)
    from ..workspace import Workspace

    ws = Workspace.open(workspace)
    h, rule = load(ws)
    return Source(f"workspace {ws.root.name}", ws.frames, h, rule)


@dataclass(frozen=True)
class Release:
    run_id: int
    pipeline: str
    counter: int
    label: str
    deployed_at: pd.Timestamp  # (a failed release: when it first changed production)
    previous_at: pd.Timestamp | None  # the pipeline's previous deployment: the release's window starts there


def find_release(m: Metrics, label: str) -> Release:
    """The production deployment labelled ``label`` (the latest one if a label repeats)."""
    d = m.deployments
    hit = d.loc[d["label"].astype(str) == str(label)] if len(d) else d
    if hit.empty:
        known = ", ".join(map(str, d["label"].tail(10))) if len(d) else "none"
        raise NotFound(f"no production deployment labelled {label!r} (latest: {known})")
    row = hit.iloc[-1]
    same = d.loc[(d["pipeline"] == row["pipeline"]) & (d["at"] < row["at"])]
    prev = same["at"].max() if len(same) else None
    return Release(int(row["run_id"]), str(row["pipeline"]), int(row["counter"]), str(row["label"]),
                   row["deployed_at"] if not pd.isna(row["deployed_at"]) else row["at"],
                   None if prev is None or pd.isna(prev) else prev)


def release_commits(m: Metrics, release: Release) -> pd.DataFrame:
    """The commits this release delivered to production first, with their lead times."""
    lt = m.lead_times
    if lt.empty:
        return lt
    mine = lt.loc[lt["deployment_run_id"] == release.run_id]
    return mine[["sha", "material", "author", "commit_time", "lead_time"]].assign(sha=mine["sha"].str.slice(0, 10))


def release_runs(m: Metrics, release: Release) -> list[int]:
    """The release run and every run it descends from (its builds, tests, QA deploys)."""
    from .dora import ancestors

    return sorted(set(ancestors([release.run_id], m.history.provenance)["run"]))


def test_summary(results: pd.DataFrame | None, run_ids: list[int] | None = None) -> pd.DataFrame:
    """Test cases per pipeline and status (of the given runs)."""
    if results is None or results.empty:
        return pd.DataFrame()
    r = results if run_ids is None else results.loc[results["run_id"].isin(run_ids)]
    if r.empty:
        return pd.DataFrame()
    table = pd.crosstab([r["pipeline"].astype(str), r["counter"]], r["status"].astype(str))
    return table


def show(fig: Any, _state: dict[str, bool] = {"loaded": False}) -> None:  # noqa: B006 (once per kernel)
    """Display a figure as HTML carrying plotly.js once, so the exported report needs no network."""
    from IPython.display import HTML, display

    include = not _state["loaded"]
    _state["loaded"] = True
    display(HTML(fig.to_html(full_html=False, include_plotlyjs=include, config={"displaylogo": False})))


def table(df: pd.DataFrame) -> Any:
    """A frame with durations shown as hours/minutes and rates as percentages, for reading."""
    from .bands import HOUR

    def duration(v: Any) -> str:
        if v >= HOUR:
            return f"{v / HOUR:.1f} h"
        return f"{v.total_seconds() / 60:.1f} min" if v.total_seconds() >= 60 else f"{v.total_seconds():.1f} s"

    out = df.copy()
    for c in out.columns:
        s = out[c]
        if pd.api.types.is_timedelta64_dtype(s.dtype):
            out[c] = s.map(lambda v: "–" if pd.isna(v) else duration(v))
        elif str(c).endswith("_rate"):
            out[c] = s.map(lambda v: "–" if pd.isna(v) else f"{v:.0%}")
        elif pd.api.types.is_float_dtype(s.dtype):
            out[c] = s.map(lambda v: "–" if pd.isna(v) else f"{v:.2f}")
        elif pd.api.types.is_datetime64_any_dtype(s.dtype):
            out[c] = s.map(lambda v: "–" if pd.isna(v) else v.strftime("%Y-%m-%d %H:%M:%S %Z").strip())
        elif s.dtype == object:
            out[c] = s.map(lambda v: "–" if v is None or (not isinstance(v, str) and pd.isna(v)) else v)
    return out.astype(object).where(out.notna(), "–")  # Int64 <NA>, ...: a reader sees a dash, never NaT/NaN
