"""``workbench.record(key, value)``: values out of a notebook (or any job) into the store.

A stage notebook measures something (a p95 latency, an error rate, a test
count) and hands it to later notebooks — canary analysis, post-release
analysis — through the run history, where it shows up as
``ws.frames.values``.  Inside a workbench job the job's environment says which
run it belongs to (``WORKBENCH_RUN_ID``, ``WORKBENCH_JOB_RUN_ID``, ``GO_*``)
and where the store is (``WORKBENCH_STORE_URL``), so the value is written
directly, in its own short transaction.  Outside the workbench (the same
notebook run by hand or by the ``papermill`` CLI) it only prints, so a
notebook never needs an ``if`` around it.

This module is imported inside kernels: it keeps its imports to the standard
library until a value is actually written.
"""
from __future__ import annotations

import json
import math
import os
import threading
import time
from typing import Any

__all__ = ["record", "glue", "in_workbench_job", "job_store"]

_STORES: dict[str, Any] = {}
_LOCK = threading.Lock()


def in_workbench_job() -> bool:
    """True when this process runs as (part of) a workbench job that can record values."""
    return bool(os.environ.get("WORKBENCH_JOB_RUN_ID") and os.environ.get("WORKBENCH_STORE_URL"))


def _plain(value: Any) -> Any:
    """JSON-able copy of ``value``: numpy and pandas scalars become Python numbers."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # JSON has no NaN; a missing value is what it means
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        return _plain(value.item())  # numpy / pandas scalar
    if hasattr(value, "tolist") and callable(value.tolist):
        return _plain(value.tolist())
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    from .errors import UsageError

    raise UsageError(f"workbench.record: cannot record a {type(value).__name__}; record numbers, text, "
                     "lists or dicts of them")


def _int_env(name: str) -> int | None:
    raw = os.environ.get(name, "")
    return int(raw) if raw.isdigit() else None


def job_store(url: str) -> Any:
    """The store at ``url``, opened once per process (jobs, kernels and hooks share it)."""
    with _LOCK:
        store = _STORES.get(url)
        if store is None:
            from .store import Store

            store = _STORES[url] = Store.open(url, create=False)
        return store


def record(key: str, value: Any) -> Any:
    """Record ``value`` under ``key`` for this job's run; returns ``value``.

    Values are numbers, text, booleans, None, or lists/dicts of them (numpy
    scalars and arrays are converted).  Recording the same key twice keeps
    both rows: the frame shows every value with its time.
    """
    from .errors import UsageError

    if not isinstance(key, str) or not key.strip() or len(key) > 255:
        raise UsageError("workbench.record: the key must be a non-empty string of at most 255 characters")
    plain = _plain(value)
    names = [n for n in os.environ.get("WORKBENCH_SECRET_NAMES", "").split(",") if n]
    if names:  # a secure variable's value never lands in the store, even inside a recorded URL or dict
        from .secrets import mask_data

        plain = mask_data(plain, [os.environ[n] for n in names if os.environ.get(n)])
    if not in_workbench_job():
        print(f"workbench.record: {key} = {json.dumps(plain)} (not inside a workbench job: printed, not stored)")
        return value
    from .notebooks.tables import recorded_values

    row = dict(
        run_id=_int_env("WORKBENCH_RUN_ID"),
        stage_run_id=_int_env("WORKBENCH_STAGE_RUN_ID"),
        job_run_id=_int_env("WORKBENCH_JOB_RUN_ID"),
        pipeline=os.environ.get("GO_PIPELINE_NAME"),
        counter=_int_env("GO_PIPELINE_COUNTER"),
        stage=os.environ.get("GO_STAGE_NAME"),
        job=os.environ.get("GO_JOB_NAME"),
        key=key,
        value=plain,
        recorded_at=time.time(),
    )
    store = job_store(os.environ["WORKBENCH_STORE_URL"])
    with store.write() as conn:
        conn.execute(recorded_values.insert().values(**row))
    return value


def glue(name: str, value: Any, display: bool = False) -> Any:
    """scrapbook's ``glue`` spelling of :func:`record`; ``display=True`` also shows the value."""
    record(name, value)
    if display:
        try:
            from IPython.display import display as show
        except ImportError:  # not in IPython: printing is the display
            print(f"{name}: {value!r}")
        else:
            show(value)
    return value
