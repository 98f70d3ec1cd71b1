"""Where the metrics' inputs come from: a live store, or a snapshot written by ``workbench export``.

A snapshot is one file per frame (Parquet through pyarrow, or CSV) plus
``manifest.json`` with each column's kind, in a folder or a ``.zip``. It also
carries ``config_stages`` — every pipeline's stages, which of them are
production deployments, environments and groups — so that a notebook on
Binder computes the same metrics with no pipeline files and no store. Frames
hold run history only: no environment values, secrets or logs are exported.
"""
from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from ..errors import NotFound, UsageError
from .model import DeployRule, History

# history input -> frame name in the store / snapshot
SOURCES = {
    "runs": "pipeline_runs", "stages": "stage_runs", "jobs": "job_runs", "commits": "commits",
    "provenance": "provenance", "incidents": "incidents", "marks": "deployment_marks", "rollbacks": "rollbacks",
    "approvals": "approvals",
}
MANIFEST = "manifest.json"
CONFIG_FRAME = "config_stages"


def has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


# -- the config as a frame -----------------------------------------------------------------


def config_stages(cfg: Any) -> pd.DataFrame:
    """Every pipeline's stages with what the metrics and the board need from the config."""
    rule = DeployRule.from_config(cfg)
    rows = []
    for name, p in cfg.pipelines.items():
        env = rule.environment.get(name)
        for i, s in enumerate(p.stages):
            t = s.traffic
            rows.append({
                "pipeline": name, "group": p.group, "environment": env, "position": i, "stage": s.name,
                "approval_type": s.approval.type, "approval_users": ",".join(s.approval.users),
                "approval_roles": ",".join(s.approval.roles), "traffic_route": t.route if t else None,
                "traffic_weight": t.weight if t else None, "point": s.name in rule.points.get(name, ()),
                "rollout": s.name in rule.rollout.get(name, ()),
                "production": name in rule.points,
            })
    cols = ["pipeline", "group", "environment", "position", "stage", "approval_type", "approval_users",
            "approval_roles", "traffic_route", "traffic_weight", "point", "rollout", "production"]
    df = pd.DataFrame(rows, columns=cols)
    df["traffic_weight"] = df["traffic_weight"].astype("Int64")
    return df


# -- reading ------------------------------------------------------------------------------------


class Snapshot:
    """An exported history, read back: ``snap.frames.pipeline_runs`` like a workspace's."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise NotFound(f"no snapshot at {self.path}")
        self._zip = zipfile.ZipFile(self.path) if self.path.is_file() else None
        try:
            self.manifest = json.loads(self._read(MANIFEST))
        except (KeyError, FileNotFoundError, ValueError):
            raise UsageError(f"{self.path} is not a workbench snapshot (no readable {MANIFEST})") from None
        self.frames = _SnapshotFrames(self)

    def _read(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(name)
        return (self.path / name).read_bytes()

    def names(self) -> list[str]:
        return sorted(self.manifest["frames"])

    def frame(self, name: str) -> pd.DataFrame:
        info = self.manifest["frames"].get(name)
        if info is None:
            raise AttributeError(f"the snapshot has no frame {name!r}; frames: {', '.join(self.names())}")
        data = self._read(info["file"])
        if info["file"].endswith(".parquet"):
            df = pd.read_parquet(io.BytesIO(data))
        else:
            df = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, na_values=[""])
        return _decode(df, info["columns"])

    @property
    def rule(self) -> DeployRule:
        return DeployRule.from_frame(self.frame(CONFIG_FRAME)) if CONFIG_FRAME in self.manifest["frames"] else DeployRule()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def __repr__(self) -> str:
        return f"Snapshot({str(self.path)!r}, {len(self.manifest['frames'])} frames)"


class _SnapshotFrames:
    def __init__(self, snap: Snapshot) -> None:
        self._snap = snap

    def __getattr__(self, name: str) -> pd.DataFrame:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._snap.frame(name)

    def names(self) -> list[str]:
        return self._snap.names()


def is_snapshot(source: Any) -> bool:
    if isinstance(source, Snapshot):
        return True
    if isinstance(source, (str, Path)):
        p = Path(source).expanduser()
        return (p.is_file() and zipfile.is_zipfile(p)) or (p / MANIFEST).is_file()
    return False


def load(source: Any, *, jobs: bool = True) -> tuple[History, DeployRule]:
    """``(History, DeployRule)`` from a Workspace, a Snapshot, or a snapshot path."""
    if is_snapshot(source):
        snap = source if isinstance(source, Snapshot) else Snapshot(source)
        names = set(snap.names())
        frames = {k: snap.frame(v) for k, v in SOURCES.items() if v in names and (jobs or k != "jobs")}
        return History.of(**frames), snap.rule
    ws = source
    if isinstance(source, (str, Path)):
        from ..workspace import Workspace

        path = Path(source).expanduser()
        if not path.is_dir():
            raise NotFound(f"{path} is neither a snapshot (from `workbench export`) nor a workspace folder")
        ws = Workspace.open(path)
    from .. import features

    features.load()
    available = set(ws.frames.names())
    frames = {}
    for key, name in SOURCES.items():
        if name in available and (jobs or key != "jobs"):
            frames[key] = getattr(ws.frames, name)
    return History.of(**frames), DeployRule.from_config(ws.config)


# -- writing ------------------------------------------------------------------------------------


def _kind(s: pd.Series) -> str:
    dt = s.dtype
    if isinstance(dt, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(dt):
        return "datetime"
    if pd.api.types.is_timedelta64_dtype(dt):
        return "timedelta"
    if isinstance(dt, pd.CategoricalDtype):
        return "category"
    if pd.api.types.is_bool_dtype(dt):
        return "bool"
    if pd.api.types.is_integer_dtype(dt):
        return "int"
    if pd.api.types.is_float_dtype(dt):
        return "float"
    if dt == object and s.map(lambda v: isinstance(v, (dict, list))).any():
        return "json"
    return "str"


def _encode(df: pd.DataFrame, kinds: dict[str, str], csv: bool) -> pd.DataFrame:
    out = {}
    for c, k in kinds.items():
        s = df[c]
        if k == "json":
            s = s.map(lambda v: None if v is None or (isinstance(v, float) and v != v) else json.dumps(v, sort_keys=True))
        elif k == "datetime":
            s = pd.to_datetime(s, utc=True)
            if csv:
                s = s.map(lambda v: None if v is pd.NaT else v.isoformat())
        elif k == "timedelta" and csv:
            s = s.dt.total_seconds()
        elif k == "category":
            s = s.astype("object").where(s.notna(), None)
        elif k == "str":
            s = s.astype("object").where(s.notna(), None).map(lambda v: v if v is None else str(v))
        out[c] = s
    return pd.DataFrame(out, index=df.index)


def _decode(df: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    for c, k in kinds.items():
        if c not in df:
            continue
        s = df[c]
        if k == "json":
            df[c] = s.map(lambda v: None if v is None or (isinstance(v, float) and v != v) else json.loads(v))
        elif k == "datetime":
            df[c] = pd.to_datetime(s, utc=True, format="ISO8601") if s.dtype == object or pd.api.types.is_string_dtype(s) else pd.to_datetime(s, utc=True)
        elif k == "timedelta" and not pd.api.types.is_timedelta64_dtype(s.dtype):
            df[c] = pd.to_timedelta(pd.to_numeric(s), unit="s")
        elif k == "int":
            df[c] = pd.to_numeric(s).astype("Int64")
        elif k == "float":
            df[c] = pd.to_numeric(s)
        elif k == "bool" and not pd.api.types.is_bool_dtype(s.dtype):
            df[c] = s.map({"True": True, "False": False, "true": True, "false": False, True: True, False: False})
        elif k == "category":
            df[c] = s.astype("category")
    return df


def export(ws: Any, target: str | Path, *, fmt: str | None = None, frames: Iterable[str] | None = None) -> dict[str, Any]:
    """Write the history of ``ws`` to ``target`` (a folder, or a ``.zip``); returns the manifest.

    ``fmt`` is ``parquet`` or ``csv``; by default CSV when a suffix of the
    target is ``.csv`` or pyarrow is missing, else Parquet.
    """
    from .. import __version__, features

    features.load()
    target = Path(target).expanduser()
    suffixes = [s.lower() for s in target.suffixes]
    if suffixes and suffixes[-1] in (".parquet", ".pq"):
        # a snapshot is one file per frame plus a manifest: a name like history.parquet would make a folder
        # that pandas.read_parquet cannot read; say what to do instead (issue 16)
        raise UsageError(f"{target.name}: a snapshot holds one file per frame and a manifest, so it is a folder or "
                         f"a .zip (e.g. {target.with_suffix('.zip').name}); "
                         "for one frame as a file: ws.frames.NAME.to_parquet(PATH)")
    if fmt is None:
        fmt = "csv" if ".csv" in suffixes or not has_pyarrow() else "parquet"
    if fmt not in ("parquet", "csv"):
        raise UsageError(f"unknown export format {fmt!r}: parquet or csv")
    if fmt == "parquet" and not has_pyarrow():
        raise UsageError("Parquet needs pyarrow (pip install pyarrow), or export CSV (--format csv)")
    as_zip = bool(suffixes) and suffixes[-1] == ".zip"
    if target.exists() and not (target.is_dir() and not as_zip and not any(target.iterdir())):
        raise UsageError(f"{target} exists; choose a new name (nothing was written)")
    names = list(frames) if frames else list(ws.frames.names())
    manifest: dict[str, Any] = {"format": fmt, "created_at": time.time(), "workbench": __version__, "frames": {},
                                "skipped": {}}
    files: dict[str, bytes] = {}
    tables: dict[str, pd.DataFrame] = {}
    for name in names:
        try:
            tables[name] = getattr(ws.frames, name)
        except Exception as exc:  # a frame a feature cannot build here must not lose the others
            manifest["skipped"][name] = f"{type(exc).__name__}: {exc}"
    tables[CONFIG_FRAME] = config_stages(ws.config)
    for name, df in tables.items():
        df = df.reset_index(drop=True)
        kinds = {str(c): _kind(df[c]) for c in df.columns}
        enc = _encode(df, kinds, csv=fmt == "csv")
        buf = io.BytesIO()
        if fmt == "parquet":
            enc.to_parquet(buf, index=False)
            fname = f"{name}.parquet"
        else:
            enc.to_csv(buf, index=False)
            fname = f"{name}.csv"
        files[fname] = buf.getvalue()
        manifest["frames"][name] = {"file": fname, "rows": len(df), "columns": kinds}
    files[MANIFEST] = json.dumps(manifest, indent=2).encode()
    if as_zip:
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for fname, data in files.items():
                z.writestr(fname, data)
    else:
        target.mkdir(parents=True, exist_ok=True)
        for fname, data in files.items():
            (target / fname).write_bytes(data)
    return manifest
