"""The store as pandas DataFrames, the way notebooks want it.

Datetimes are tz-aware UTC, durations are timedeltas, statuses categorical;
stage and job frames carry the pipeline name, counter and label so that a
notebook never has to join by ids.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import sqlalchemy as sa

from ..status import ALL as STATUSES
from . import schema as S

if TYPE_CHECKING:
    import pandas as pd

    from . import Store


def _time_cols(df: "pd.DataFrame", cols: list[str]) -> None:
    import pandas as pd

    for c in cols:
        df[c] = pd.to_datetime(df[c].astype("float64"), unit="s", utc=True)


def _finish(df: "pd.DataFrame", start: str = "started_at", end: str = "finished_at") -> "pd.DataFrame":
    import pandas as pd

    _time_cols(df, [c for c in ("created_at", "started_at", "finished_at", "heartbeat_at") if c in df])
    df["duration"] = df[end] - df[start]
    df["status"] = pd.Categorical(df["status"], categories=list(STATUSES))
    return df


FrameBuilder = Callable[["Frames"], "pd.DataFrame"]
EXTRA_FRAMES: dict[str, FrameBuilder] = {}


def register_frame(name: str, builder: FrameBuilder) -> None:
    """Let a feature add a frame (``commits``, ``values``, ``approvals``, ...)."""
    EXTRA_FRAMES[name] = builder


class Frames:
    """Read-only DataFrame views over a store; each attribute queries afresh.

    The core frames are properties below; features add more through
    :func:`register_frame`, reachable as attributes all the same.
    """

    def __init__(self, store: "Store") -> None:
        self._store = store

    def __getattr__(self, name: str) -> "pd.DataFrame":
        builder = EXTRA_FRAMES.get(name)
        if builder is None:
            raise AttributeError(f"no frame named {name!r}; frames: {', '.join(self.names())}")
        return builder(self)

    def names(self) -> list[str]:
        return ["pipeline_runs", "stage_runs", "job_runs", *sorted(EXTRA_FRAMES)]

    def __dir__(self) -> list[str]:
        """Tab completion in JupyterLab offers every frame, the features' too (they come through __getattr__)."""
        return sorted(set(super().__dir__()) | set(self.names()))

    def doc(self, name: str) -> str:
        """What frame ``name`` holds (its builder's docstring)."""
        builder = getattr(type(self), name, None) if name in ("pipeline_runs", "stage_runs", "job_runs") else \
            EXTRA_FRAMES.get(name)
        if builder is None:
            raise AttributeError(f"no frame named {name!r}; frames: {', '.join(self.names())}")
        fn = builder.fget if isinstance(builder, property) else builder
        return (fn.__doc__ or "").strip()

    def describe(self) -> "pd.DataFrame":
        """Every frame with a line saying what it holds: ``ws.frames.describe()`` in a notebook."""
        import pandas as pd

        return pd.DataFrame({"frame": self.names(), "holds": [self.doc(n).split("\n")[0] for n in self.names()]})

    def query(self, q: Any) -> "pd.DataFrame":
        """Run a SQLAlchemy select and return it as a DataFrame (for feature frames)."""
        return self._query(q)

    @staticmethod
    def utc(df: "pd.DataFrame", *cols: str) -> "pd.DataFrame":
        """Turn epoch-second columns into tz-aware UTC datetimes."""
        _time_cols(df, list(cols))
        return df

    def _query(self, q: Any) -> "pd.DataFrame":
        import pandas as pd

        with self._store.read() as conn:
            result = conn.execute(q)
            # plain tuples: given SQLAlchemy Rows, pandas probes each one for ``_fields`` and friends
            # through Row.__getattr__'s exception path (0.6 s of 1 s for 50k stage runs)
            return pd.DataFrame([tuple(r) for r in result], columns=list(result.keys()))

    @property
    def pipeline_runs(self) -> "pd.DataFrame":
        """One row per pipeline run."""
        pr = S.pipeline_runs
        q = sa.select(
            pr.c.id.label("run_id"), pr.c.pipeline, pr.c.counter, pr.c.label, pr.c.group_name, pr.c.trigger,
            pr.c.triggered_by, pr.c.status, pr.c.reason, pr.c.revisions, pr.c.environment,
            pr.c.created_at, pr.c.started_at, pr.c.finished_at,
        ).order_by(pr.c.id)
        df = self._query(q)
        for c in ("counter",):
            df[c] = df[c].astype("int64")
        df["pipeline"] = df["pipeline"].astype("string")
        df["label"] = df["label"].astype("string")
        return _finish(df)

    @property
    def stage_runs(self) -> "pd.DataFrame":
        """One row per stage run (each rerun is its own row, ``stage_counter``)."""
        pr, sr = S.pipeline_runs, S.stage_runs
        q = (
            sa.select(
                sr.c.id.label("stage_run_id"), pr.c.id.label("run_id"), pr.c.pipeline, pr.c.counter, pr.c.label,
                sr.c.name.label("stage"), sr.c.position, sr.c.counter.label("stage_counter"), sr.c.status,
                sr.c.approval_type, sr.c.approved_by, sr.c.reason, sr.c.created_at, sr.c.started_at, sr.c.finished_at,
            )
            .join(pr, pr.c.id == sr.c.pipeline_run_id)
            .order_by(sr.c.id)
        )
        df = _finish(self._query(q))
        # time spent waiting to start (for approvals: waiting for a person)
        df["wait"] = df["started_at"] - df["created_at"]
        return df

    @property
    def job_runs(self) -> "pd.DataFrame":
        """One row per job run, with its stage and pipeline."""
        pr, sr, jr = S.pipeline_runs, S.stage_runs, S.job_runs
        q = (
            sa.select(
                jr.c.id.label("job_run_id"), sr.c.id.label("stage_run_id"), pr.c.id.label("run_id"), pr.c.pipeline,
                pr.c.counter, pr.c.label, sr.c.name.label("stage"), sr.c.counter.label("stage_counter"),
                jr.c.name.label("job"), jr.c.run_index, jr.c.run_count, jr.c.status, jr.c.agent, jr.c.exit_code,
                jr.c.reason, jr.c.log_path, jr.c.created_at, jr.c.started_at, jr.c.finished_at,
            )
            .join(sr, sr.c.id == jr.c.stage_run_id)
            .join(pr, pr.c.id == sr.c.pipeline_run_id)
            .order_by(jr.c.id)
        )
        df = _finish(self._query(q))
        df["exit_code"] = df["exit_code"].astype("Int64")
        return df

    def __repr__(self) -> str:
        return f"Frames({', '.join(self.names())})"
