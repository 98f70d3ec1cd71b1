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
    """A frame as JSON: ``{"columns": [...], "dtypes": {...}, "data": [[...], ...]}`` (pandas' split form)."""
    import json

    df = frame(ws, name)
    out = json.loads(df.to_json(orient="split", date_format="iso", date_unit="ms", default_handler=str))
    out.pop("index", None)
    out["dtypes"] = {c: str(t) for c, t in df.dtypes.items()}
    return out
