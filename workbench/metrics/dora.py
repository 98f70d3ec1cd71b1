"""DORA's five metrics over a :class:`~workbench.metrics.model.History` (pure pandas).

Everything starts from :func:`deployments`, one row per production deployment
with what happened to it (rolled back, hotfixed, incidents, when service came
back); the five metrics are aggregates of that table and of
:func:`lead_times`. The definitions are in the package docstring and in
docs/metrics.md; the tests in tests/test_metrics.py compute them by hand.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from . import bands
from .model import UTC, DeployRule, History, Period, group_col

BAD_END = ("failed", "cancelled", "rejected")

DEPLOYMENT_COLUMNS = [
    "run_id", "pipeline", "counter", "label", "group", "environment", "outcome", "at", "deployed_at",
    "rolled_back_at", "hotfix", "unplanned", "incidents", "hotfix_followed", "failed_change", "restored_at",
    "recovery_time", "rework",
]
LEAD_COLUMNS = ["sha", "material", "author", "commit_time", "commit_run_id", "deployment_run_id", "pipeline",
                "group", "environment", "deployed_at", "lead_time", "counted"]


def _ns(s: pd.Series) -> np.ndarray:
    """UTC times as datetime64[ns] (a tz-aware ``to_numpy()`` would box every value as a Timestamp)."""
    s = pd.to_datetime(s, utc=True)
    return s.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")


def _utc(values: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(values.astype("datetime64[ns]")).tz_localize("UTC")


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})


def _fill_from(values: pd.Series, keys: pd.Series, mapping: dict[str, str]) -> pd.Series:
    """``values`` with gaps filled from ``mapping[key]`` (config facts for old runs)."""
    arr = values.to_numpy(dtype=object, na_value=None).copy()
    missing = pd.isna(arr) | (arr == "")
    if missing.any():  # only those are looked up (the Series round trips cost 10 ms per deployments table)
        arr[missing] = [mapping.get(str(k), np.nan) for k in keys.to_numpy(dtype=object)[missing]]
    return pd.Series(arr, index=values.index, dtype="object")


def deployments(h: History, rule: DeployRule) -> pd.DataFrame:
    """One row per production deployment, oldest first.

    A run of a pipeline in ``rule.points`` is a deployment when one of its
    deploy-point stages passed (``outcome`` ``succeeded``; ``at`` =
    ``deployed_at`` = that stage's finish), or when it ended failed, cancelled
    or rejected after one of its rollout stages had started (``failed``; ``at``
    = when that first rollout stage started, i.e. when production first
    changed). A run that stopped before touching production is no deployment.
    """
    runs, stages = h.runs, h.stages
    prod = list(rule.points)
    if not prod or runs.empty or stages.empty:
        return _empty(DEPLOYMENT_COLUMNS)
    st = stages.loc[stages["pipeline"].isin(prod), ["run_id", "pipeline", "stage", "status", "started_at", "finished_at"]]
    pipeline, stage = st["pipeline"], st["stage"]
    is_point = np.zeros(len(st), dtype=bool)
    is_rollout = np.zeros(len(st), dtype=bool)
    for p in prod:  # a handful of production pipelines: one vectorized pass each
        mine = (pipeline == p).to_numpy()
        is_point |= mine & stage.isin(rule.points[p]).to_numpy()
        is_rollout |= mine & stage.isin((*rule.rollout.get(p, ()), *rule.points[p])).to_numpy()
    passed = st.loc[is_point & (st["status"] == "passed").to_numpy()].groupby("run_id")["finished_at"].min()
    touched = st.loc[is_rollout & st["started_at"].notna().to_numpy()].groupby("run_id")["started_at"].min()
    r = runs.loc[runs["pipeline"].isin(prod)].set_index("run_id")
    deployed_at = passed.reindex(r.index)
    first_touch = touched.reindex(r.index)
    ok = deployed_at.notna()
    failed = ~ok & first_touch.notna() & r["status"].isin(BAD_END)
    keep = (ok | failed).to_numpy()
    r = r.loc[keep]
    dep = pd.DataFrame({
        "run_id": r.index.to_numpy(),
        "pipeline": r["pipeline"].astype(str).to_numpy(),
        "counter": r["counter"].to_numpy(),
        "label": r["label"].astype(str).to_numpy(),
        "group": _fill_from(r["group_name"], r["pipeline"], dict(rule.group)).to_numpy(),
        "environment": _fill_from(r["environment"], r["pipeline"], dict(rule.environment)).to_numpy(),
        "outcome": np.where(ok.to_numpy()[keep], "succeeded", "failed"),
        "at": _utc(_ns(deployed_at.where(ok, first_touch))[keep]),
        "deployed_at": _utc(_ns(deployed_at)[keep]),
    })
    dep = dep.sort_values(["at", "run_id"], kind="stable").reset_index(drop=True)
    return _interventions(h, dep, _serving(runs, prod, touched))


def _serving(runs: pd.DataFrame, prod: list[str], touched: pd.Series) -> pd.DataFrame:
    """Every production run with when its rollout first reached production (``touched``), for blame."""
    all_prod = runs.loc[runs["pipeline"].isin(prod)].set_index("run_id")
    return pd.DataFrame({"run_id": all_prod.index.to_numpy(),
                         "touched": _utc(_ns(touched.reindex(all_prod.index))),
                         "status": all_prod["status"].astype(str).to_numpy(),
                         "finished_at": _utc(_ns(all_prod["finished_at"]))})


def serving_runs(h: History, rule: DeployRule) -> pd.DataFrame:
    """The runs an incident without ``caused_by`` may be blamed on (see :func:`attribute_incidents`)."""
    runs, stages = h.runs, h.stages
    prod = list(rule.points)
    if not prod or runs.empty or stages.empty:
        return pd.DataFrame(columns=["run_id", "touched", "status", "finished_at"])
    st = stages.loc[stages["pipeline"].isin(prod), ["run_id", "pipeline", "stage", "started_at"]]
    is_rollout = np.zeros(len(st), dtype=bool)
    for p in prod:
        mine = (st["pipeline"] == p).to_numpy()
        is_rollout |= mine & st["stage"].isin((*rule.rollout.get(p, ()), *rule.points[p])).to_numpy()
    touched = st.loc[is_rollout & st["started_at"].notna().to_numpy()].groupby("run_id")["started_at"].min()
    return _serving(runs, prod, touched)


def attribute_incidents(h: History, dep: pd.DataFrame, serving: pd.DataFrame | None = None) -> pd.DataFrame:
    """Incidents with ``deployment_run_id``: the deployment they are counted against.

    ``caused_by`` names it. An incident without one is put on the deployment
    that was serving when it opened: the production run whose rollout most
    recently started reaching production before that moment, finished or
    still going (a release live at 50% waiting for its next step is the
    prime suspect, not the one before it), unless it had already ended
    failed, cancelled, rejected or rolled back by then. Four Keys links an
    incident to the deployment of its root-cause change; without a link this
    is the best guess. ``serving`` (``run_id``, ``touched``: first rollout
    stage start, ``status``, ``finished_at``) covers runs not in ``dep`` yet;
    without it, ``dep``'s rows stand in. An incident linked to a run that is
    no production deployment is kept but counted against none.
    """
    inc = h.incidents.copy()
    if inc.empty:
        inc["deployment_run_id"] = pd.Series(dtype="Int64")
        return inc
    linked = inc["caused_by_run_id"].astype("Int64")
    inc["deployment_run_id"] = linked.where(linked.isin(dep["run_id"]))
    free = inc["caused_by_run_id"].isna() & inc["opened_at"].notna()
    if serving is None:
        serving = pd.DataFrame({"run_id": dep["run_id"], "touched": dep["at"],
                                "status": np.where(dep["outcome"] == "succeeded", "passed", "failed"),
                                "finished_at": dep["at"]})
    cand = serving.dropna(subset=["touched"]).sort_values(["touched", "run_id"])
    if free.any() and len(cand):
        touched = _ns(cand["touched"])
        ended_bad = cand["status"].isin(BAD_END).to_numpy()
        finished = _ns(cand["finished_at"])
        run_ids = cand["run_id"].to_numpy()
        opened = _ns(inc.loc[free, "opened_at"])
        blamed = []
        for t in opened:  # incidents are few; each looks back for the newest release still serving then
            ok = (touched <= t) & ~(ended_bad & (finished <= t))
            blamed.append(run_ids[ok][-1] if ok.any() else pd.NA)
        inc.loc[free, "deployment_run_id"] = pd.array(blamed, dtype="Int64")
    inc["deployment_run_id"] = inc["deployment_run_id"].astype("Int64")
    return inc


def _lookup(keys: pd.Series, table: pd.Series) -> pd.Series:
    """``table[key]`` for each key (missing keys and NA give NA), keeping ``keys``' index."""
    if table.empty or keys.empty:
        return pd.Series(pd.NA if table.dtype.kind not in "mM" else pd.NaT, index=keys.index,
                         dtype=table.dtype if table.dtype.kind in "mMf" or str(table.dtype) in ("Int64", "boolean") else "object")
    idx = pd.Index(keys.astype("Float64").to_numpy(dtype="float64", na_value=float("nan")))
    table = table.set_axis(table.index.astype("float64"))
    return table.reindex(idx).set_axis(keys.index)


def _interventions(h: History, dep: pd.DataFrame, serving: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rollbacks, hotfixes and incidents on each deployment; which failed; when service came back."""
    if dep.empty:
        return _empty(DEPLOYMENT_COLUMNS)
    rid = dep["run_id"]
    rb = h.rollbacks
    dep["rolled_back_at"] = _lookup(rid, rb.groupby("run_id")["at"].min()) if len(rb) else pd.NaT
    dep["rolled_back_at"] = pd.to_datetime(dep["rolled_back_at"], utc=True)
    marks = h.marks
    hot = marks.loc[marks["mark"] == "hotfix"]
    dep["hotfix"] = rid.isin(hot["run_id"].dropna())
    dep["unplanned"] = rid.isin(marks.loc[marks["mark"] == "unplanned", "run_id"].dropna())

    inc = attribute_incidents(h, dep, serving)
    counted = inc.dropna(subset=["deployment_run_id"])
    per = counted.groupby("deployment_run_id")
    dep["incidents"] = _lookup(rid, per.size()).fillna(0).astype(int) if len(counted) else 0
    # a hotfix fixes the deployment of the incident it names, else the pipeline's previous deployment
    order = dep.sort_values(["pipeline", "at", "run_id"])
    previous = pd.Series(order.groupby("pipeline")["run_id"].shift(1).to_numpy(), index=order["run_id"].to_numpy())
    hot = hot.loc[hot["run_id"].isin(rid) & ~hot["run_id"].duplicated()]
    by_inc = inc.set_index("incident_id")["deployment_run_id"] if len(inc) else pd.Series(dtype="Int64")
    target = _lookup(hot["incident_id"], by_inc).astype("Float64")
    target = target.fillna(_lookup(hot["run_id"], previous).astype("Float64"))
    when = _lookup(hot["run_id"], dep.set_index("run_id")["deployed_at"])
    fixes = pd.DataFrame({"target": target.to_numpy(), "fixed_at": _utc(_ns(when))}).dropna()
    fixed_at = fixes.groupby("target")["fixed_at"].min() if len(fixes) else pd.Series(dtype="datetime64[ns, UTC]")
    fixed_at.index = fixed_at.index.astype("int64")
    dep["hotfix_followed"] = rid.isin(fixed_at.index)

    failed_run = dep["outcome"] == "failed"
    dep["failed_change"] = (failed_run | dep["rolled_back_at"].notna() | dep["hotfix_followed"]
                            | (dep["incidents"] > 0))
    # when service came back: the first of rollback, hotfix, next good deployment (failed runs)...
    nxt = pd.Series(pd.NaT, index=dep.index, dtype="datetime64[ns, UTC]")
    if failed_run.any():  # per pipeline, the first good deployment strictly after (a searchsorted per pipeline)
        at = _ns(dep["at"])
        pipes = dep["pipeline"].to_numpy(dtype=object)
        good = (dep["outcome"] == "succeeded").to_numpy()
        bad = failed_run.to_numpy()
        after = np.full(len(dep), np.datetime64("NaT"), dtype="datetime64[ns]")
        for p in pd.unique(pipes[bad]):
            mine = pipes == p
            times = np.sort(at[good & mine])
            rows = np.flatnonzero(bad & mine)
            i = np.searchsorted(times, at[rows], side="right")
            hit = i < len(times)
            after[rows[hit]] = times[i[hit]]
        nxt = pd.Series(_utc(after), index=dep.index)
    cand = pd.concat([dep["rolled_back_at"], _lookup(rid, fixed_at).astype("datetime64[ns, UTC]"), nxt], axis=1)
    restored = cand.min(axis=1)
    # ...failing those, when its last incident was resolved (none while one is open)
    if len(counted):
        open_n = counted["resolved_at"].isna().groupby(counted["deployment_run_id"]).sum()
        last = per["resolved_at"].max().where(open_n == 0)
        restored = restored.fillna(_lookup(rid, last))
    dep["restored_at"] = pd.to_datetime(restored.where(dep["failed_change"]), utc=True)
    dep["recovery_time"] = (dep["restored_at"] - dep["at"]).clip(lower=pd.Timedelta(0))
    dep["rework"] = dep["hotfix"] | dep["unplanned"]
    return dep[DEPLOYMENT_COLUMNS]


# -- change lead time ---------------------------------------------------------------------


def ancestors(run_ids: Any, provenance: pd.DataFrame, max_depth: int = 64) -> pd.DataFrame:
    """``(dep, run)`` pairs: every run each of ``run_ids`` descends from, itself included."""
    ids = pd.Series(run_ids, dtype="int64").drop_duplicates()
    seen = pd.DataFrame({"dep": ids.to_numpy(), "run": ids.to_numpy()})
    edges = provenance[["upstream_run_id", "downstream_run_id"]].dropna().astype("int64")
    if edges.empty or seen.empty:
        return seen
    edges = edges.rename(columns={"downstream_run_id": "run", "upstream_run_id": "up"}).drop_duplicates()
    if len(ids) <= _FEW:
        return _walk(ids.tolist(), edges, max_depth)
    frontier = seen
    for _ in range(max_depth):
        step = frontier.merge(edges, on="run")[["dep", "up"]].rename(columns={"up": "run"}).drop_duplicates()
        if step.empty:
            break
        step = step.merge(seen, on=["dep", "run"], how="left", indicator=True)
        step = step.loc[step["_merge"] == "left_only", ["dep", "run"]]
        if step.empty:
            break
        seen = pd.concat([seen, step], ignore_index=True)
        frontier = step
    return seen


_FEW = 16  # up to this many start runs, a plain breadth-first walk beats a dozen DataFrame merges per level


def parents_of(provenance: pd.DataFrame) -> dict[int, list[int]]:
    """Run id -> the runs it was fed by (the provenance as a dict, for walks from a few runs)."""
    edges = provenance[["upstream_run_id", "downstream_run_id"]].dropna().astype("int64")
    parents: dict[int, list[int]] = {}
    for up, run in zip(edges["upstream_run_id"].tolist(), edges["downstream_run_id"].tolist()):
        parents.setdefault(run, []).append(up)
    return parents


def walk(start: int, parents: dict[int, list[int]], max_depth: int = 64) -> list[int]:
    """``start`` and every run it descends from, level by level as :func:`ancestors` finds them."""
    seen, frontier, out = {start}, [start], [start]
    for _ in range(max_depth):
        step = []
        for r in frontier:
            for up in parents.get(r, ()):
                if up not in seen:
                    seen.add(up)
                    step.append(up)
        if not step:
            break
        out.extend(step)
        frontier = step
    return out


def _walk(starts: list[int], edges: pd.DataFrame, max_depth: int) -> pd.DataFrame:
    """:func:`ancestors` for a few runs (a new deployment, one run's value stream): the same levels, in Python."""
    parents: dict[int, list[int]] = {}
    for up, run in zip(edges["up"].tolist(), edges["run"].tolist()):
        parents.setdefault(run, []).append(up)
    deps: list[int] = []
    runs: list[int] = []
    for start in starts:
        found = walk(start, parents, max_depth)
        deps.extend([start] * len(found))
        runs.extend(found)
    return pd.DataFrame({"dep": np.array(deps, dtype="int64"), "run": np.array(runs, dtype="int64")})


def reach_few(runs: pd.DataFrame, parents: dict[int, list[int]], dep: pd.DataFrame) -> pd.DataFrame:
    """:func:`reach` of a few deployments (new ones) by plain walks: the same rows, without the merges.

    ``runs`` must be ordered by ``run_id`` (the frames are); rows come per
    deployment in ``dep``'s order, each deployment's pipelines in any order
    (:func:`lead_times` does not depend on it).
    """
    ok = dep.loc[dep["outcome"] == "succeeded", ["run_id", "deployed_at"]]
    ids = runs["run_id"].to_numpy(dtype="int64")
    pipes = runs["pipeline"].to_numpy(dtype=object)
    counters = runs["counter"].to_numpy(dtype="int64")
    d_rows: list[int] = []
    p_rows: list[Any] = []
    c_rows: list[int] = []
    at_rows: list[Any] = []
    for dep_id, at in zip(ok["run_id"].tolist(), ok["deployed_at"].tolist()):
        found = np.array(walk(int(dep_id), parents), dtype="int64")
        pos = np.minimum(np.searchsorted(ids, found), max(len(ids) - 1, 0))
        known = ids[pos] == found if len(ids) else np.zeros(len(found), dtype=bool)
        best: dict[Any, int] = {}
        for p, c in zip(pipes[pos[known]].tolist(), counters[pos[known]].tolist()):
            if c > best.get(p, -1):
                best[p] = c
        for p, c in best.items():
            d_rows.append(int(dep_id))
            p_rows.append(p)
            c_rows.append(c)
            at_rows.append(at)
    return pd.DataFrame({"dep": np.array(d_rows, dtype="int64"),
                         "pipeline": pd.array(p_rows, dtype=runs["pipeline"].dtype),
                         "counter": np.array(c_rows, dtype="int64"),
                         "deployed_at": pd.Series(at_rows, dtype="datetime64[ns, UTC]").array})


def reach(runs: pd.DataFrame, provenance: pd.DataFrame, dep: pd.DataFrame) -> pd.DataFrame:
    """Per successful deployment and pipeline it descends from: the highest run counter it carries.

    ``(dep, pipeline, counter, deployed_at)``, in deployment order: the
    expensive half of :func:`lead_times` (the provenance walk), which does
    not depend on the commits, so a caller whose deployments and provenance
    did not change can keep it (the dashboard's ChartSource does).
    """
    ok = dep.loc[dep["outcome"] == "succeeded", ["run_id", "deployed_at"]]
    if not len(ok):
        return pd.DataFrame({"dep": pd.Series(dtype="int64"), "pipeline": pd.Series(dtype="object"),
                             "counter": pd.Series(dtype="int64"),
                             "deployed_at": pd.Series(dtype="datetime64[ns, UTC]")})
    runs = runs[["run_id", "pipeline", "counter"]].dropna(subset=["run_id"])
    anc = ancestors(ok["run_id"], provenance)
    anc = anc.merge(runs.rename(columns={"run_id": "run"}).astype({"run": "int64"}), on="run")
    anc = anc.sort_values("counter").drop_duplicates(["dep", "pipeline"], keep="last")
    out = anc.merge(ok.rename(columns={"run_id": "dep"}).astype({"dep": "int64"}), on="dep")
    return out.sort_values(["deployed_at", "dep"], kind="stable")[["dep", "pipeline", "counter", "deployed_at"]]


def lead_times(h: History, dep: pd.DataFrame, *, time_col: str = "commit_time",
               reached: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per commit: its first successful production deployment and the lead time to it.

    A deployment carries the commits recorded on every run it descends from
    (the stored provenance, itself included) and, because a pipeline builds
    its branch forward, those recorded on *earlier* runs of the same
    pipelines. A commit counts once, with the deployment that first delivered
    it; ``counted`` is False for commits not deployed yet and for
    non-positive lead times (clock skew, rebased dates), which Four Keys
    excludes too. ``time_col`` is ``commit_time`` (committer date, falling
    back to the author date) or ``author_time``. ``reached`` is
    :func:`reach` of the same history and deployments, when already known.
    """
    c = h.commits
    if c.empty:
        return _empty(LEAD_COLUMNS)
    runs = h.runs[["run_id", "pipeline", "counter"]].dropna(subset=["run_id"])
    c = c[["sha", "material", "author", "author_time", "commit_time", "pipeline_run_id"]]  # the frame's own run columns vary
    cc = c.merge(runs.rename(columns={"run_id": "pipeline_run_id"}), on="pipeline_run_id", how="left")
    when = cc[time_col]
    if time_col == "commit_time":
        when = when.fillna(cc["author_time"])
    out = pd.DataFrame({
        "sha": cc["sha"].astype(str), "material": cc["material"], "author": cc["author"], "commit_time": when,
        "commit_run_id": cc["pipeline_run_id"],
    })
    first_dep = np.full(len(cc), np.nan)
    first_at = np.full(len(cc), np.datetime64("NaT"), dtype="datetime64[ns]")
    if reached is None:
        reached = reach(runs, h.provenance, dep)
    if len(reached):
        for pipeline, part in reached.groupby("pipeline", sort=False):
            rows = (cc["pipeline"] == pipeline).to_numpy(dtype=bool, na_value=False)  # commits of unknown runs: NA
            if not rows.any():
                continue
            highest = np.maximum.accumulate(part["counter"].to_numpy(dtype="int64"))
            k = cc.loc[rows, "counter"].to_numpy(dtype="int64")
            idx = np.searchsorted(highest, k, side="left")
            hit = idx < len(highest)
            pos = np.flatnonzero(rows)[hit]
            first_dep[pos] = part["dep"].to_numpy()[idx[hit]]
            first_at[pos] = _ns(part["deployed_at"])[idx[hit]]
    out["deployment_run_id"] = pd.array(first_dep, dtype="Float64").astype("Int64")
    out["deployed_at"] = _utc(first_at)
    out = out.sort_values(["deployed_at", "commit_time"], na_position="last", kind="stable")
    out = out.drop_duplicates("sha", keep="first")
    info = dep.set_index("run_id")[["pipeline", "group", "environment"]]
    for col in ("pipeline", "group", "environment"):
        out[col] = out["deployment_run_id"].map(info[col]) if len(info) else None
    out["lead_time"] = out["deployed_at"] - out["commit_time"]
    out["counted"] = (out["lead_time"] > pd.Timedelta(0)).fillna(False).astype(bool)
    return out[LEAD_COLUMNS].reset_index(drop=True)


# -- deployment frequency -----------------------------------------------------------------


def _local_naive(s: pd.Series, tz: str) -> pd.Series:
    return s.dt.tz_convert(tz).dt.tz_localize(None)


def _bucket_start(local: pd.Series, freq: str) -> pd.Series:
    if freq == "D":
        return local.dt.floor("D")
    if freq == "W":  # weeks start on Sunday, as BigQuery's WEEK (Four Keys)
        return local.dt.to_period("W-SAT").dt.start_time
    if freq == "M":
        return local.dt.to_period("M").dt.start_time
    from ..errors import UsageError

    raise UsageError(f"unknown period {freq!r}: use D, W or M")


def deployment_counts(dep: pd.DataFrame, period: Period | None = None, *, freq: str = "D",
                      by: str | None = None, outcome: str | None = None) -> pd.DataFrame:
    """Deployments per day/week/month (in ``period.tz``'s calendar), empty periods as zeros."""
    period = period or Period()
    col = group_col(by)
    d = dep.loc[period.mask(dep["at"])] if len(dep) else dep
    if outcome:
        d = d.loc[d["outcome"] == outcome]
    lo, hi = period.span(dep["at"] if period.since is None or period.until is None else d["at"])
    cols = ["period", *([col] if col else []), "deployments"]
    if lo is None or hi is None:
        return pd.DataFrame({c: [] for c in cols})
    first = _bucket_start(pd.Series([lo]).pipe(_local_naive, period.tz), freq).iloc[0]
    last = _bucket_start(pd.Series([hi - pd.Timedelta(microseconds=1)]).pipe(_local_naive, period.tz), freq).iloc[0]
    alias = {"D": "D", "W": "W-SUN", "M": "MS"}[freq]
    index = pd.date_range(first, last, freq=alias)
    keys = _bucket_start(_local_naive(d["at"], period.tz), freq) if len(d) else pd.Series(dtype="datetime64[ns]")
    if col is None:
        counts = keys.value_counts().reindex(index, fill_value=0)
        out = pd.DataFrame({"period": index, "deployments": counts.to_numpy()})
    else:
        groups = sorted(map(str, dep[col].dropna().unique()))
        table = pd.crosstab(keys, d[col].astype(str)) if len(d) else pd.DataFrame()
        table = table.reindex(index=index, columns=groups, fill_value=0)
        out = table.stack().rename("deployments").reset_index()
        out.columns = ["period", col, "deployments"]
    out["period"] = out["period"].dt.tz_localize(period.tz, nonexistent="shift_forward", ambiguous="NaT")
    return out[cols]


def frequency_bucket(at: pd.Series, period: Period | None = None) -> str | None:
    """Four Keys' bucket: Daily, Weekly, Monthly or Yearly over the period's weeks.

    For each (Sunday-started) week of the period: the days with a deployment
    and whether it had one. Daily when the median week has 3+ deployment
    days; Weekly when the median week has a deployment; Monthly when the
    median, over weeks, of deployment-weeks in the week's month is 1+;
    Yearly otherwise. None when the period has no days.
    """
    period = period or Period()
    lo, hi = period.span(at)
    if lo is None or hi is None or hi <= lo:
        return None
    start = _local_naive(pd.Series([lo]), period.tz).dt.floor("D").iloc[0]
    end = _local_naive(pd.Series([hi - pd.Timedelta(microseconds=1)]), period.tz).dt.floor("D").iloc[0]
    days = pd.Series(pd.date_range(start, end, freq="D"))
    vals = at.loc[period.mask(at)]
    deployed_days = set(_local_naive(vals, period.tz).dt.floor("D")) if len(vals) else set()
    frame = pd.DataFrame({"week": days.dt.to_period("W-SAT").dt.start_time, "deployed": days.isin(deployed_days)})
    weeks = frame.groupby("week")["deployed"].agg(days_deployed="sum", week_deployed="max")
    weeks["week_deployed"] = weeks["week_deployed"].astype(int)
    month = weeks.index.to_period("M")
    monthly = weeks["week_deployed"].groupby(month).transform("sum")
    if weeks["days_deployed"].median() >= 3:
        return "Daily"
    if weeks["week_deployed"].median() >= 1:
        return "Weekly"
    if monthly.median() >= 1:
        return "Monthly"
    return "Yearly"


# -- the summary --------------------------------------------------------------------------


def _median(s: pd.Series) -> Any:
    s = s.dropna()
    return s.median() if len(s) else pd.NaT


def _quantile(s: pd.Series, q: float) -> Any:
    s = s.dropna()
    return s.quantile(q) if len(s) else pd.NaT


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


SUMMARY_COLUMNS = [
    "deployments", "successful", "failed", "per_day", "per_week", "frequency_bucket", "deployment_frequency_band",
    "commits", "lead_time_median", "lead_time_p90", "lead_time_band", "failed_changes", "change_fail_rate",
    "change_fail_rate_band", "recovered", "unrecovered", "recovery_median", "recovery_p90", "recovery_band",
    "rework_deployments", "rework_rate",
]


def summary(dep: pd.DataFrame, leads: pd.DataFrame, period: Period | None = None, *, by: str | None = None) -> pd.DataFrame:
    """DORA's five per group (one row ``all`` without grouping), with their DORA 2024 bands.

    Deployments, failed changes, recoveries and rework are those whose ``at``
    falls in the period; lead times those of commits first deployed in it.
    ``per_day`` is deployments over the period's days (its open ends closed
    at the first and last day with a deployment).
    """
    period = period or Period()
    col = group_col(by)
    days = period.days(dep["at"]) if len(dep) else period.days(pd.Series(dtype="datetime64[ns, UTC]"))
    d = dep.loc[period.mask(dep["at"])] if len(dep) else dep
    lt = leads.loc[leads["counted"] & period.mask(leads["deployed_at"])] if len(leads) else leads
    if col is None:
        parts: list[tuple[str, pd.DataFrame, pd.DataFrame]] = [("all", d, lt)]
    else:
        names = sorted(set(map(str, d[col].dropna())) | set(map(str, lt[col].dropna())) if len(lt) else
                       set(map(str, d[col].dropna())))
        parts = [(n, d.loc[d[col].astype(str) == n], lt.loc[lt[col].astype(str) == n] if len(lt) else lt) for n in names]
    closed = _closed(period, dep)  # every group is bucketed over the same calendar
    rows = []
    for name, g, lg in parts:
        n = len(g)
        failed_changes = int(g["failed_change"].sum()) if n else 0
        rec = g.loc[g["failed_change"], "recovery_time"] if n else pd.Series(dtype="timedelta64[ns]")
        per_day = n / days if days == days and days > 0 else float("nan")
        lead = lg["lead_time"] if len(lg) else pd.Series(dtype="timedelta64[ns]")
        row = {
            "deployments": n,
            "successful": int((g["outcome"] == "succeeded").sum()) if n else 0,
            "failed": int((g["outcome"] == "failed").sum()) if n else 0,
            "per_day": per_day,
            "per_week": per_day * 7,
            "frequency_bucket": frequency_bucket(g["at"], closed) if closed.since is not None else None,
            "commits": len(lead),
            "lead_time_median": _median(lead),
            "lead_time_p90": _quantile(lead, 0.9),
            "failed_changes": failed_changes,
            "change_fail_rate": _ratio(failed_changes, n),
            "recovered": int(rec.notna().sum()),
            "unrecovered": int(rec.isna().sum()),
            "recovery_median": _median(rec),
            "recovery_p90": _quantile(rec, 0.9),
            "rework_deployments": int(g["rework"].sum()) if n else 0,
            "rework_rate": _ratio(int(g["rework"].sum()) if n else 0, n),
        }
        row["deployment_frequency_band"] = bands.frequency_band(row["per_day"])
        row["lead_time_band"] = bands.lead_time_band(row["lead_time_median"])
        row["change_fail_rate_band"] = bands.change_fail_band(row["change_fail_rate"])
        row["recovery_band"] = bands.recovery_band(row["recovery_median"])
        rows.append((name, row))
    index = pd.Index([n for n, _ in rows], name=col or "scope")
    return pd.DataFrame([r for _, r in rows], index=index, columns=SUMMARY_COLUMNS)


def _closed(period: Period, dep: pd.DataFrame) -> Period:
    """The period with open ends closed at the whole history's span (so groups share one calendar)."""
    lo, hi = period.span(dep["at"]) if len(dep) else (period.since, period.until)
    return Period(lo, hi, period.tz)


def four_keys(dep: pd.DataFrame, leads: pd.DataFrame, incidents: pd.DataFrame, period: Period | None = None, *,
              by: str | None = None, precomputed: pd.DataFrame | None = None) -> pd.DataFrame:
    """The classic Four Keys dashboard: four metrics with Four Keys' own buckets.

    As Four Keys: time to restore is each incident's resolved − opened time
    (incidents opened in the period), not our per-deployment recovery time.
    Unlike Four Keys, the change failure rate counts a deployment once
    however many changes it carried (the DORA definition).
    """
    period = period or Period()
    col = group_col(by)
    s = summary(dep, leads, period, by=by) if precomputed is None else precomputed
    inc = incidents.loc[period.mask(incidents["opened_at"])] if len(incidents) else incidents
    if len(inc) and col is not None:
        info = dep.set_index("run_id")[col]
        inc = inc.assign(**{col: inc["deployment_run_id"].map(info)})
    rows = []
    for name in s.index:
        g = inc if col is None or not len(inc) else inc.loc[inc[col].astype(str) == name]
        restore = _median((g["resolved_at"] - g["opened_at"]).dropna()) if len(g) else pd.NaT
        r = s.loc[name]
        rows.append({
            "deployment_frequency": r["frequency_bucket"],
            "lead_time_median": r["lead_time_median"],
            "lead_time": bands.fourkeys_time_bucket(r["lead_time_median"]),
            "time_to_restore_median": restore,
            "time_to_restore": bands.fourkeys_time_bucket(restore),
            "change_fail_rate": r["change_fail_rate"],
            "change_fail_rate_bucket": bands.fourkeys_cfr_bucket(r["change_fail_rate"]),
        })
    return pd.DataFrame(rows, index=s.index)


__all__ = ["ancestors", "attribute_incidents", "serving_runs", "deployment_counts", "deployments", "four_keys", "frequency_bucket",
           "lead_times", "parents_of", "reach", "reach_few", "summary", "UTC", "walk"]
