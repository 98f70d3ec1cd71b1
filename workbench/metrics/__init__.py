"""Delivery metrics over the run history: DORA's five, the classic four keys, stage times.

Pure pandas: every function takes DataFrames (a :class:`History`) and a
:class:`DeployRule`, and returns DataFrames; only :func:`load` and
:func:`metrics_from_workspace` read a store or a snapshot. docs/metrics.md
has the same definitions with examples.

**Production deployment** (declared in the config). A pipeline counts when it
is in an environment with ``production: true``. A run of it is a deployment
when its *last stage*, or a stage with ``traffic:`` moving a route to weight
100, passed (``succeeded``, at that stage's finish); or when it ended failed,
cancelled or rejected after a *rollout stage* (a ``traffic:`` stage or a
deploy point) had started (``failed``, at the time production first changed).
Runs that stopped before touching production are not deployments. Traffic
stages of non-production environments (a QA canary) never count.

1. **Deployment frequency**: deployments (succeeded and failed) per day and
   week of the period, a day/week/month series (:meth:`Metrics.frequency`),
   and Four Keys' Daily/Weekly/Monthly/Yearly bucket from the median week.
2. **Change lead time**: per commit recorded by the materials, the time from
   its commit (committer date) to its *first* successful production
   deployment; a deployment carries the commits of every run it descends
   from in the stored provenance and of earlier runs of those pipelines.
   Median and p90 over the commits first deployed in the period;
   non-positive lead times are excluded (as Four Keys does).
3. **Change fail rate**: deployments that needed intervention — failed,
   rolled back, followed by a hotfix, or blamed by an incident — over all
   deployments; a deployment counts once however many changes or incidents.
4. **Failed deployment recovery time**: per failed change, from the
   deployment to the first rollback of it, hotfix deployed for it, or (a
   failed run) the pipeline's next successful deployment; failing those,
   when its last incident was resolved. Open incidents leave it unrecovered.
5. **Deployment rework rate**: deployments marked ``hotfix`` or
   ``unplanned`` (``workbench incident``/:mod:`workbench.metrics_store`)
   over all deployments.

Bands: the DORA 2024 Accelerate State of DevOps Report levels (see
:mod:`workbench.metrics.bands`). Periods are ``[since, until)``; naive bounds
are read in ``tz``, whose calendar also buckets days, weeks (Sunday first,
as Four Keys) and months. Groupings: ``pipeline``, ``group``, ``environment``.
"""
from __future__ import annotations

from functools import cached_property
from typing import Any

import pandas as pd

from . import bands
from .dora import (ancestors, attribute_incidents, serving_runs, deployment_counts, deployments, four_keys, frequency_bucket,
                   lead_times, summary)
from .model import COLUMNS, DeployRule, History, Period
from .stages import failure_rates, reruns, stage_summary, stage_times


class Metrics:
    """Every metric of one history, period and grouping; each part computed once, on first use."""

    def __init__(self, history: History, rule: DeployRule, *, since: Any = None, until: Any = None,
                 by: str | None = None, tz: str | None = None) -> None:
        from .model import group_col

        group_col(by)  # refuse a bad grouping before any work
        self.history = history
        self.rule = rule
        self.period = Period.of(since, until, tz)
        self.by = by

    @cached_property
    def deployments(self) -> pd.DataFrame:
        """All deployments of the history (not only the period's: recoveries may cross it)."""
        return deployments(self.history, self.rule)

    @cached_property
    def lead_times(self) -> pd.DataFrame:
        return lead_times(self.history, self.deployments)

    @cached_property
    def incidents(self) -> pd.DataFrame:
        return attribute_incidents(self.history, self.deployments, serving_runs(self.history, self.rule))

    @cached_property
    def summary(self) -> pd.DataFrame:
        return summary(self.deployments, self.lead_times, self.period, by=self.by)

    @cached_property
    def four_keys(self) -> pd.DataFrame:
        return four_keys(self.deployments, self.lead_times, self.incidents, self.period, by=self.by,
                         precomputed=self.summary)

    def frequency(self, freq: str = "D") -> pd.DataFrame:
        return deployment_counts(self.deployments, self.period, freq=freq, by=self.by)

    @cached_property
    def stage_times(self) -> pd.DataFrame:
        return stage_times(self.history, self.period)

    @cached_property
    def stage_summary(self) -> pd.DataFrame:
        return stage_summary(self.stage_times, self.history, by=self.by)

    @cached_property
    def stage_failures(self) -> pd.DataFrame:
        return failure_rates(self.history, self.period, level="stage", by=self.by)

    @cached_property
    def job_failures(self) -> pd.DataFrame:
        return failure_rates(self.history, self.period, level="job", by=self.by)

    @cached_property
    def reruns(self) -> pd.DataFrame:
        return reruns(self.history, self.period, by=self.by)

    def period_deployments(self) -> pd.DataFrame:
        d = self.deployments
        return d.loc[self.period.mask(d["at"])] if len(d) else d

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the summary rows and the four keys, durations in seconds."""
        def rows(df: pd.DataFrame) -> dict[str, dict[str, Any]]:
            return {str(k): {c: _plain(v) for c, v in r.items()} for k, r in df.iterrows()}

        p = self.period
        return {
            "period": {"since": _plain(p.since), "until": _plain(p.until), "tz": p.tz},
            "by": self.by or "all",
            "bands": bands.REPORT,
            "production": {k: list(v) for k, v in self.rule.points.items()},
            "summary": rows(self.summary),
            "four_keys": rows(self.four_keys),
        }


def _plain(v: Any) -> Any:
    if v is None or v is pd.NaT:
        return None
    if isinstance(v, pd.Timedelta):
        return round(v.total_seconds(), 3)
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    if isinstance(v, float) and v != v:
        return None
    if hasattr(v, "item"):
        return v.item()
    return v


def metrics_from_workspace(ws: Any, *, jobs: bool = True, **options: Any) -> Metrics:
    """The metrics of a workspace's store (or of a snapshot path): the one place that reads data.

    ``jobs=False`` skips reading job runs (the largest frame), for callers that
    need no job failure rates (the dashboard's charts).
    """
    from .io import load

    history, rule = load(ws, jobs=jobs)
    return Metrics(history, rule, **options)


def load(source: Any, **kw: Any) -> tuple[History, DeployRule]:
    from .io import load as _load

    return _load(source, **kw)


__all__ = [
    "COLUMNS", "DeployRule", "History", "Metrics", "Period", "ancestors", "attribute_incidents", "bands",
    "deployment_counts", "deployments", "failure_rates", "four_keys", "frequency_bucket", "lead_times", "load",
    "metrics_from_workspace", "reruns", "stage_summary", "stage_times", "summary",
]
