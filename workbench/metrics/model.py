"""The inputs of the metrics: a :class:`History` of plain DataFrames and a :class:`DeployRule`.

Both are built once (from a live store, a snapshot or by hand in a test) and
then handed to pure functions, so the arithmetic never touches a store and a
hand-built frame is all a test needs. Column names are the frames' own
(``ws.frames.pipeline_runs`` …); :func:`normalize` fills in what an optional
frame lacks so that a workspace without incidents, traffic or materials still
gets every metric it can.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import pandas as pd

if TYPE_CHECKING:
    from ..config.model import Config

UTC = "UTC"
NAT = pd.NaT

# The columns each input frame must have after normalize(), with their kind:
# "t" tz-aware UTC time, "i" integer id (nullable), "s" text, "b" bool.
COLUMNS: dict[str, dict[str, str]] = {
    "runs": {"run_id": "i", "pipeline": "s", "counter": "i", "label": "s", "group_name": "s", "environment": "s",
             "status": "s", "created_at": "t", "started_at": "t", "finished_at": "t"},
    "stages": {"stage_run_id": "i", "run_id": "i", "pipeline": "s", "counter": "i", "stage": "s", "position": "i",
               "stage_counter": "i", "status": "s", "approval_type": "s", "created_at": "t", "started_at": "t",
               "finished_at": "t"},
    "jobs": {"job_run_id": "i", "stage_run_id": "i", "run_id": "i", "pipeline": "s", "stage": "s",
             "stage_counter": "i", "job": "s", "status": "s", "started_at": "t", "finished_at": "t"},
    "commits": {"sha": "s", "material": "s", "author": "s", "author_time": "t", "commit_time": "t",
                "pipeline_run_id": "i"},
    "provenance": {"upstream_run_id": "i", "downstream_run_id": "i"},
    "incidents": {"incident_id": "i", "title": "s", "severity": "s", "opened_at": "t", "resolved_at": "t",
                  "caused_by_run_id": "i"},
    "marks": {"run_id": "i", "mark": "s", "incident_id": "i"},
    "rollbacks": {"run_id": "i", "at": "t"},
    "approvals": {"pipeline": "s", "counter": "i", "stage": "s", "action": "s", "outcome": "s", "at": "t"},
}

# Other spellings of a column, as other features or older snapshots name them.
ALIASES: dict[str, dict[str, tuple[str, ...]]] = {
    "runs": {"run_id": ("id",), "group_name": ("group",)},
    "stages": {"stage": ("name",), "stage_counter": ("stage_counter",)},
    "commits": {"pipeline_run_id": ("run_id",), "sha": ("revision",)},
    "provenance": {"upstream_run_id": ("upstream_id", "from_run_id", "upstream"),
                   "downstream_run_id": ("downstream_id", "to_run_id", "run_id", "downstream")},
    "incidents": {"incident_id": ("id",), "caused_by_run_id": ("caused_by_id",)},
    "marks": {"run_id": ("pipeline_run_id",)},
    "rollbacks": {"at": ("rolled_back_at",)},
}


def _empty_col(kind: str, n: int = 0) -> pd.Series:
    if kind == "t":
        return pd.Series(pd.NaT, index=range(n), dtype=TIME)
    if kind == "i":
        return pd.Series(pd.NA, index=range(n), dtype="Int64")
    if kind == "b":
        return pd.Series(False, index=range(n), dtype=bool)
    return pd.Series(pd.NA, index=range(n), dtype="object")


TIME = "datetime64[ns, UTC]"  # one unit everywhere: merges refuse to mix ns and us


def as_utc(s: pd.Series) -> pd.Series:
    """Any time column (epoch seconds, naive = UTC, or another zone) as tz-aware UTC nanoseconds."""
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        out = s.dt.tz_convert(UTC) if str(s.dt.tz) != UTC else s
    elif pd.api.types.is_numeric_dtype(s.dtype):
        out = pd.to_datetime(s.astype("float64"), unit="s", utc=True)
    else:
        out = pd.to_datetime(s, utc=True, format="mixed") if len(s) else s.astype(TIME)
    return out if out.dtype == TIME else out.astype(TIME)


def normalize(name: str, df: pd.DataFrame | None) -> pd.DataFrame:
    """One input frame with every documented column (missing ones empty), times in UTC."""
    spec = COLUMNS[name]
    if df is None:
        return pd.DataFrame({c: _empty_col(k) for c, k in spec.items()})
    out = df
    renames = {}
    for col, alts in ALIASES.get(name, {}).items():
        if col not in out.columns:
            for a in alts:
                if a in out.columns and a not in spec:
                    renames[a] = col
                    break
    if renames:
        out = out.rename(columns=renames)
    add = {}
    for col, kind in spec.items():
        if col not in out.columns:
            add[col] = _empty_col(kind, len(out)).set_axis(out.index)
        elif kind == "t" and out[col].dtype != TIME:
            add[col] = as_utc(out[col])
    if add:
        out = out.assign(**add)
    return out


@dataclass(frozen=True)
class History:
    """The recorded history the metrics read: one DataFrame per input (see ``COLUMNS``)."""

    runs: pd.DataFrame
    stages: pd.DataFrame
    jobs: pd.DataFrame | None = None
    commits: pd.DataFrame | None = None
    provenance: pd.DataFrame | None = None
    incidents: pd.DataFrame | None = None
    marks: pd.DataFrame | None = None
    rollbacks: pd.DataFrame | None = None
    approvals: pd.DataFrame | None = None

    @classmethod
    def of(cls, **frames: pd.DataFrame | None) -> "History":
        """Build from any subset of frames; the missing ones are empty with the right columns."""
        known = {f.name for f in fields(cls)}
        unknown = set(frames) - known
        if unknown:
            raise TypeError(f"unknown history frames: {', '.join(sorted(unknown))}")
        return cls(**{n: normalize(n, frames.get(n)) for n in known})


@dataclass(frozen=True)
class DeployRule:
    """Which stage runs are production deployments (declared in the config).

    ``points``: pipeline → the stages whose passing *is* the deployment (the
    last stage, and any stage moving a route to 100%). ``rollout``: pipeline →
    the stages that touch production (the points and every ``traffic:`` step):
    a run that fails after one of those started is a failed deployment; a run
    that fails before never reached production and is no deployment at all.
    """

    points: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    rollout: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    environment: Mapping[str, str] = field(default_factory=dict)  # every pipeline in an environment
    group: Mapping[str, str] = field(default_factory=dict)  # every pipeline's group

    @classmethod
    def from_config(cls, cfg: "Config") -> "DeployRule":
        env_of: dict[str, str] = {}
        production: list[str] = []
        for env in cfg.environments.values():
            for p in env.pipelines:
                env_of.setdefault(p, env.name)
                if env.production and p in cfg.pipelines and p not in production:
                    production.append(p)
        points: dict[str, tuple[str, ...]] = {}
        rollout: dict[str, tuple[str, ...]] = {}
        for name in production:
            stages = cfg.pipelines[name].stages
            if not stages:
                continue
            full = [s.name for s in stages if s.traffic is not None and s.traffic.weight >= 100]
            pts = tuple(dict.fromkeys([*full, stages[-1].name]))
            points[name] = pts
            rollout[name] = tuple(dict.fromkeys([*(s.name for s in stages if s.traffic is not None), *pts]))
        return cls(points, rollout, env_of, {n: p.group for n, p in cfg.pipelines.items()})

    @classmethod
    def explicit(cls, points: Mapping[str, Iterable[str]], rollout: Mapping[str, Iterable[str]] | None = None,
                 **kw: Any) -> "DeployRule":
        """A rule given by hand (tests, notebooks): ``{"prod": ["deploy"]}``."""
        pts = {p: tuple(s) for p, s in points.items()}
        roll = {p: tuple(dict.fromkeys([*(rollout or {}).get(p, ()), *s])) for p, s in pts.items()}
        return cls(pts, roll, **kw)

    def to_frame(self) -> pd.DataFrame:
        """For snapshots: one row per (pipeline, stage) that matters, plus environment/group rows."""
        rows = []
        for p in sorted(set(self.environment) | set(self.group) | set(self.points)):
            stages = self.rollout.get(p) or ("",)
            for s in stages:
                rows.append({"pipeline": p, "stage": s, "point": s in self.points.get(p, ()),
                             "rollout": bool(s), "environment": self.environment.get(p),
                             "group": self.group.get(p)})
        return pd.DataFrame(rows, columns=["pipeline", "stage", "point", "rollout", "environment", "group"])

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> "DeployRule":
        points: dict[str, list[str]] = {}
        rollout: dict[str, list[str]] = {}
        env: dict[str, str] = {}
        grp: dict[str, str] = {}
        for r in df.to_dict("records"):
            p = str(r["pipeline"])
            if r.get("environment") is not None and not pd.isna(r["environment"]):
                env[p] = str(r["environment"])
            if r.get("group") is not None and not pd.isna(r["group"]):
                grp[p] = str(r["group"])
            if bool(r.get("rollout")) and r.get("stage"):
                rollout.setdefault(p, []).append(str(r["stage"]))
            if bool(r.get("point")):
                points.setdefault(p, []).append(str(r["stage"]))
        return cls({p: tuple(s) for p, s in points.items()}, {p: tuple(s) for p, s in rollout.items()}, env, grp)

    def with_points(self, points: Mapping[str, Iterable[str]]) -> "DeployRule":
        return replace(self, points={p: tuple(s) for p, s in points.items()})


# -- periods and time zones -------------------------------------------------------------


def ts(value: Any, tz: str = UTC) -> pd.Timestamp | None:
    """A period bound: None stays None; a naive value is read in ``tz``; the result is UTC."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    t = pd.Timestamp(value)
    if t is pd.NaT:
        return None
    if t.tzinfo is None:
        t = t.tz_localize(tz)
    return t.tz_convert(UTC)


@dataclass(frozen=True)
class Period:
    """``[since, until)`` in UTC (either end open), and the zone whose calendar buckets days and weeks."""

    since: pd.Timestamp | None = None
    until: pd.Timestamp | None = None
    tz: str = UTC

    @classmethod
    def of(cls, since: Any = None, until: Any = None, tz: str | None = None) -> "Period":
        zone = tz or UTC
        return cls(ts(since, zone), ts(until, zone), zone)

    def mask(self, s: pd.Series) -> pd.Series:
        m = s.notna()
        if self.since is not None:
            m &= s >= self.since
        if self.until is not None:
            m &= s < self.until
        return m

    def span(self, s: pd.Series) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
        """The period's ends, closing an open end at the data's first/last calendar day."""
        lo, hi = self.since, self.until
        vals = s.dropna()
        if lo is None and len(vals):
            lo = vals.min().tz_convert(self.tz).floor("D").tz_convert(UTC)
        if hi is None and len(vals):
            hi = (vals.max().tz_convert(self.tz).floor("D") + pd.Timedelta(days=1)).tz_convert(UTC)
        return lo, hi

    def days(self, s: pd.Series) -> float:
        lo, hi = self.span(s)
        if lo is None or hi is None or hi <= lo:
            return float("nan")
        return (hi - lo) / pd.Timedelta(days=1)


GROUPINGS = {"pipeline": "pipeline", "group": "group", "environment": "environment"}


def group_col(by: str | None) -> str | None:
    """The column for a ``by`` choice (None: everything in one row named ``all``)."""
    if by in (None, "", "all"):
        return None
    if by not in GROUPINGS:
        from ..errors import UsageError

        raise UsageError(f"cannot group metrics by {by!r}: choose pipeline, group or environment")
    return GROUPINGS[by]
