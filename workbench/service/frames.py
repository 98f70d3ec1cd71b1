"""Frames by name, for the API (``/api/v1/frames/{name}``) and ``Local.frame``."""
from __future__ import annotations

from typing import Any

from ..errors import NotFound


def names(ws: Any) -> list[str]:
    from .. import features

    features.load()  # features register their frames when loaded
    return ws.frames.names()


def frame(ws: Any, name: str) -> Any:
    known = names(ws)
    if name not in known:
        raise NotFound(f"no frame {name!r} (frames: {', '.join(known)})")
    return getattr(ws.frames, name)


def frame_records(ws: Any, name: str) -> dict[str, Any]:
    """A frame as JSON: ``{"columns": [...], "dtypes": {...}, "data": [[...], ...]}`` (pandas' split form).

    Datetimes and durations are integers of nanoseconds (since the epoch, UTC): ISO strings
    or milliseconds would round them, and the client's frame must equal the local one.
    """
    import json

    import pandas as pd

    df = frame(ws, name)
    enc = df.copy()
    for col, dtype in df.dtypes.items():  # pandas' own to_json rounds these to microseconds
        if pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype):
            ns, missing = df[col].array.asi8, df[col].isna().to_numpy()
            enc[col] = pd.Series([None if m else int(v) for v, m in zip(ns, missing)], index=df.index, dtype=object)
    out = json.loads(enc.to_json(orient="split", default_handler=str))
    out.pop("index", None)
    out["dtypes"] = {c: str(t) for c, t in df.dtypes.items()}
    return out
