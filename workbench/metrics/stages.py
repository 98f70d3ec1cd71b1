"""Where time goes inside pipelines: stage durations and waits, failure rates, reruns.

Pure pandas over the ``stages`` and ``jobs`` frames. A stage's *wait* is
created → started; for a manual approval it is split in two: *approval wait*
(created → the approval, or the rejection) and *queue wait* (the approval →
started), so a slow approver is not mistaken for a busy executor.
"""
from __future__ import annotations

import pandas as pd

from .model import History, Period, group_col

STAGE_TIME_COLUMNS = ["stage_run_id", "run_id", "pipeline", "counter", "stage", "position", "stage_counter",
                      "status", "approval_type", "created_at", "started_at", "finished_at", "approved_at",
                      "duration", "wait", "approval_wait", "queue_wait"]


def _with_groups(df: pd.DataFrame, h: History, col: str | None) -> pd.DataFrame:
    """Add the run's ``group``/``environment`` when grouping by them."""
    if col in (None, "pipeline") or col in df.columns:
        return df
    src = {"group": "group_name", "environment": "environment"}[col]
    info = h.runs.set_index("run_id")[src]
    return df.assign(**{col: df["run_id"].map(info).astype("object")})


def stage_times(h: History, period: Period | None = None) -> pd.DataFrame:
    """One row per stage run (created in the period) with its duration and waits."""
    period = period or Period()
    s = h.stages
    if len(s) and (period.since is not None or period.until is not None):
        s = s.loc[period.mask(s["created_at"])]
    s = s.copy()
    manual = (s["approval_type"] == "manual").to_numpy()
    approved = pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns, UTC]")
    a = h.approvals
    if manual.any() and len(a):
        ok = a.loc[(a["action"] == "approve") & (a["outcome"] == "ok") & a["at"].notna()]
        if len(ok):
            key = ok["pipeline"].astype(str) + "/" + ok["counter"].astype("Int64").astype(str) + "/" + ok["stage"].astype(str)
            right = pd.DataFrame({"key": key.to_numpy(), "approved_at": ok["at"].to_numpy()}).sort_values("approved_at")
            m = s.loc[manual, ["pipeline", "counter", "stage", "created_at"]]
            left = pd.DataFrame({
                "idx": m.index.to_numpy(),
                "key": (m["pipeline"].astype(str) + "/" + m["counter"].astype("Int64").astype(str) + "/"
                        + m["stage"].astype(str)).to_numpy(),
                "created_at": m["created_at"].to_numpy(),
            }).sort_values("created_at")
            right["approved_at"] = pd.to_datetime(right["approved_at"], utc=True)
            left["created_at"] = pd.to_datetime(left["created_at"], utc=True)
            j = pd.merge_asof(left, right, left_on="created_at", right_on="approved_at", by="key", direction="forward")
            approved.loc[j["idx"].to_numpy()] = j["approved_at"].to_numpy()
    # no audit row (a manual trigger satisfying the first stage, an old store): approved when it started
    decided = s["started_at"].where(s["status"] != "rejected", s["finished_at"])
    s["approved_at"] = approved.where(~pd.Series(manual, index=s.index) | approved.notna(), pd.NaT)
    s.loc[manual, "approved_at"] = s.loc[manual, "approved_at"].fillna(decided.loc[manual])
    s["duration"] = s["finished_at"] - s["started_at"]
    s["wait"] = s["started_at"] - s["created_at"]
    s["approval_wait"] = (s["approved_at"] - s["created_at"]).where(pd.Series(manual, index=s.index))
    s["queue_wait"] = (s["started_at"] - s["approved_at"]).where(pd.Series(manual, index=s.index), s["wait"])
    return s[STAGE_TIME_COLUMNS].reset_index(drop=True)


def stage_summary(times: pd.DataFrame, h: History | None = None, *, by: str | None = None) -> pd.DataFrame:
    """Per (group,) pipeline and stage: runs, duration median/p90, wait medians (approval apart)."""
    col = group_col(by)
    t = _with_groups(times, h, col) if h is not None else times
    keys = [*([col] if col and col != "pipeline" else []), "pipeline", "stage"]
    if t.empty:
        return pd.DataFrame(columns=["stage_runs", "duration_median", "duration_p90", "queue_wait_median",
                                     "approval_wait_median", "approvals"]).rename_axis(keys)
    g = t.groupby(keys, sort=True, observed=True)
    out = pd.DataFrame({
        "stage_runs": g.size(),
        "duration_median": g["duration"].median(),
        "duration_p90": g["duration"].quantile(0.9),
        "queue_wait_median": g["queue_wait"].median(),
        "approval_wait_median": g["approval_wait"].median(),
        "approvals": g["approval_wait"].count(),
    })
    return out


def failure_rates(h: History, period: Period | None = None, *, level: str = "stage", by: str | None = None) -> pd.DataFrame:
    """Per stage (or job): finished runs, failures and ``failed / (passed + failed)``.

    Cancelled, rejected and skipped runs are counted in ``finished`` but
    neither fail nor pass: nobody let them run to a result.
    """
    period = period or Period()
    col = group_col(by)
    if level not in ("stage", "job"):
        from ..errors import UsageError

        raise UsageError("level must be stage or job")
    df = h.stages if level == "stage" else h.jobs
    when = "created_at" if level == "stage" else "started_at"
    if len(df) and (period.since is not None or period.until is not None) and when in df:
        df = df.loc[period.mask(df[when])]
    df = _with_groups(df, h, col)
    keys = [*([col] if col and col != "pipeline" else []), "pipeline", "stage", *(["job"] if level == "job" else [])]
    status = df["status"]
    frame = df[keys].copy(deep=False)
    frame["passed"] = (status == "passed").to_numpy()
    frame["failed"] = (status == "failed").to_numpy()
    frame["finished"] = status.isin(["passed", "failed", "cancelled", "rejected", "skipped"]).to_numpy()
    g = frame.groupby(keys, sort=True, observed=True)
    out = g[["finished", "passed", "failed"]].sum()
    decided = out["passed"] + out["failed"]
    out["failure_rate"] = out["failed"] / decided.where(decided > 0)
    return out


def reruns(h: History, period: Period | None = None, *, by: str | None = None) -> pd.DataFrame:
    """Per stage: stage runs, reruns (``stage_counter > 1``), runs that needed one, highest counter."""
    period = period or Period()
    col = group_col(by)
    s = h.stages
    if len(s) and (period.since is not None or period.until is not None):
        s = s.loc[period.mask(s["created_at"])]
    s = _with_groups(s, h, col)
    keys = [*([col] if col and col != "pipeline" else []), "pipeline", "stage"]
    frame = s[[*keys, "run_id", "stage_counter"]].copy(deep=False)
    frame["rerun"] = (s["stage_counter"] > 1).to_numpy()
    g = frame.groupby(keys, sort=True, observed=True)
    out = pd.DataFrame({"stage_runs": g.size(), "reruns": g["rerun"].sum(), "max_counter": g["stage_counter"].max()})
    rr = frame.loc[frame["rerun"]]
    out["runs_rerun"] = rr.groupby(keys)["run_id"].nunique().reindex(out.index, fill_value=0) if len(rr) else 0
    return out
