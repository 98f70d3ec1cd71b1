"""Reading what two runs were and brought: the store, and the materials' git mirrors (GitPython).

The commits between two runs are taken per git repository from the runs'
*ancestry* (``run_ancestry``: every git revision a run descends from, through
its upstream pipelines' provenance), so comparing two production deploys lists
the application commits the newer one brings even though production's only
material is an upstream pipeline. They are read from the workspace's bare
mirror of the repository (``.workbench/mirrors``); without a mirror, the commits
the store recorded for the runs in between are used, and a note says so.
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ..errors import MaterialError, NotFound
from ..store import PipelineRun
from ..store import schema as S
from .diff import compare
from .snapshot import run_configs

COMMIT_LIMIT = 200  # per repository and direction; the output says when a list was cut


def _dur(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else round(end - start, 3)


def _iso(t: float | None) -> str | None:
    from datetime import datetime, timezone

    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def find(ws: Any, spec: str) -> PipelineRun:
    """``PIPELINE/COUNTER``, ``PIPELINE/latest`` or ``PIPELINE/LABEL`` → the run (a label: its newest run)."""
    from ..engine import find_run

    parts = [p for p in spec.strip().strip("/").split("/") if p]
    if len(parts) != 2:
        raise NotFound(f"{spec!r}: expected PIPELINE/COUNTER (or PIPELINE/LABEL, PIPELINE/latest)")
    pipeline, which = parts
    if which == "latest" or which.isdigit():
        try:
            return find_run(ws.store, spec)[0]
        except NotFound:
            if not which.isdigit():
                raise
    r = S.pipeline_runs
    with ws.store.read() as conn:
        row = conn.execute(sa.select(r.c.counter).where(r.c.pipeline == pipeline, r.c.label == which)
                           .order_by(r.c.counter.desc()).limit(1)).first()
    if row is None:
        raise NotFound(f"{pipeline} has no run with counter or label {which!r}")
    return find_run(ws.store, f"{pipeline}/{row.counter}")[0]


def facts(ws: Any, run: PipelineRun) -> dict[str, Any]:
    """One run's recorded facts: summary, materials, ancestry, config, stages, jobs, artifacts, packages."""
    from ..materials import tables as T

    detail = ws.store.run_detail(run)
    latest = detail.latest_stages()
    stages = [{"stage": s.name, "counter": s.counter, "status": s.status.value,
               "duration_s": _dur(s.started_at, s.finished_at)} for s in latest.values()]
    jobs = [{"stage": s.name, "job": j.name, "status": j.status.value, "duration_s": _dur(j.started_at, j.finished_at)}
            for s in latest.values() for j in detail.jobs.get(s.id, ())]
    job_ids = [j.id for s in latest.values() for j in detail.jobs.get(s.id, ())]
    with ws.store.read() as conn:
        mats = [dict(m._mapping) for m in conn.execute(
            sa.select(T.material_revisions).where(T.material_revisions.c.pipeline_run_id == run.id)
            .order_by(T.material_revisions.c.id))]
        anc = conn.execute(sa.select(T.run_ancestry.c.ancestors)
                           .where(T.run_ancestry.c.pipeline_run_id == run.id)).scalar()
        cfg = conn.execute(sa.select(run_configs.c.config, run_configs.c.digest)
                           .where(run_configs.c.pipeline_run_id == run.id)).first()
        packages = _packages(conn, job_ids)
    artifacts = _artifacts(ws, run, set(job_ids))
    return {
        "run": {"locator": f"{run.pipeline}/{run.counter}", "pipeline": run.pipeline, "counter": run.counter,
                "label": run.label, "status": run.status.value, "trigger": run.trigger,
                "triggered_by": run.triggered_by, "environment": run.environment,
                "created_at": _iso(run.created_at), "duration_s": _dur(run.started_at, run.finished_at)},
        "materials": mats, "ancestors": dict(anc or {}), "stages": stages, "jobs": jobs,
        "config": dict(cfg.config) if cfg else None, "config_digest": cfg.digest if cfg else None,
        "artifacts": artifacts, "packages": packages,
    }


def _artifacts(ws: Any, run: PipelineRun, latest_jobs: set[int]) -> list[dict[str, Any]]:
    from ..artifacts import tables as A

    a, jr, sr = A.artifacts, S.job_runs, S.stage_runs
    q = (sa.select(sr.c.name.label("stage"), jr.c.name.label("job"), jr.c.id.label("job_id"), a.c.path, a.c.sha256,
                   a.c.size)
         .select_from(a.join(jr, jr.c.id == a.c.job_run_id).join(sr, sr.c.id == jr.c.stage_run_id))
         .where(sr.c.pipeline_run_id == run.id))
    with ws.store.read() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    return [{k: v for k, v in r.items() if k != "job_id"} for r in rows if r["job_id"] in latest_jobs]


def _packages(conn: sa.Connection, job_ids: list[int]) -> list[dict[str, Any]]:
    if not job_ids:
        return []
    from ..packages import package_events as e

    rows = conn.execute(sa.select(e.c.action, e.c.repository, e.c.name, e.c.version, e.c.sha256)
                        .where(e.c.job_run_id.in_(job_ids)).order_by(e.c.id))
    return [dict(r._mapping) for r in rows]


def _material_names(ws: Any, keys: list[str]) -> dict[str, str]:
    """fingerprint → the material name pipelines give it (the first recorded)."""
    from ..materials import tables as T

    if not keys:
        return {}
    m = T.material_revisions
    with ws.store.read() as conn:
        rows = conn.execute(sa.select(m.c.fingerprint, m.c.material).where(m.c.fingerprint.in_(keys))
                            .order_by(m.c.id))
        out: dict[str, str] = {}
        for fp, name in rows:
            out.setdefault(fp, name)
    return out


def _commit_dict(c: Any) -> dict[str, Any]:
    return {"sha": c.sha, "author": c.author, "time": _iso(c.commit_time),
            "message": c.message.splitlines()[0] if c.message else ""}


def _stored_commits(ws: Any, url: str, old: str, new: str) -> list[dict[str, Any]]:
    """Without a mirror: the commits the store recorded for this repository, from ``old`` (excluded) to ``new``."""
    from ..materials import tables as T

    c, m = T.commits, T.material_revisions
    q = (sa.select(c.c.sha, c.c.author, c.c.commit_time, c.c.message, c.c.id)
         .select_from(c.join(m, (m.c.pipeline_run_id == c.c.pipeline_run_id) & (m.c.material == c.c.material)))
         .where(m.c.url == url).order_by(c.c.commit_time.desc(), c.c.id.desc()))
    with ws.store.read() as conn:
        rows = list(conn.execute(q))
    shas = [r.sha for r in rows]
    if new not in shas:
        return []
    out, seen = [], set()
    for r in rows[shas.index(new):]:
        if r.sha == old:
            break
        if r.sha not in seen:
            seen.add(r.sha)
            out.append({"sha": r.sha, "author": r.author, "time": _iso(r.commit_time),
                        "message": (r.message or "").splitlines()[0] if r.message else ""})
    return out


def commits_between(ws: Any, a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Per git repository either run descends from: its revision in each, and the commits between them."""
    from ..materials.git import Mirror

    keys = sorted(k for k in set(a["ancestors"]) | set(b["ancestors"]) if k.startswith("git:"))
    names = _material_names(ws, keys)
    own = {m["fingerprint"] for f in (a, b) for m in f["materials"] if m["kind"] == "git"}
    out = []
    for key in keys:
        url, _, branch = key[len("git:"):].rpartition("#")
        ra, rb = a["ancestors"].get(key), b["ancestors"].get(key)
        row: dict[str, Any] = {"material": names.get(key, url.rsplit("/", 1)[-1]), "url": url, "branch": branch,
                               "via": "material" if key in own else "upstream", "a": ra, "b": rb,
                               "commits": [], "removed": [], "note": None}
        out.append(row)
        if ra == rb or ra is None or rb is None:
            if ra != rb:
                row["note"] = f"only {'B' if ra is None else 'A'} descends from this repository"
            continue
        mirror = Mirror(ws.state / "mirrors", url)
        try:
            if not (mirror.exists and mirror.has(ra) and mirror.has(rb)):
                raise MaterialError("no mirror")
            row["commits"] = [_commit_dict(c) for c in mirror.commits(ra, rb, limit=COMMIT_LIMIT + 1)]
            row["removed"] = [_commit_dict(c) for c in mirror.commits(rb, ra, limit=COMMIT_LIMIT + 1)]
        except MaterialError:
            row["commits"] = _stored_commits(ws, url, ra, rb)[:COMMIT_LIMIT + 1]
            row["note"] = "the repository's mirror is not here: commits as the store recorded them"
        for side in ("commits", "removed"):
            if len(row[side]) > COMMIT_LIMIT:
                row[side] = row[side][:COMMIT_LIMIT]
                row["note"] = f"more than {COMMIT_LIMIT} commits; the newest {COMMIT_LIMIT} are listed"
    return out


def upstream_runs(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """The upstream pipelines' runs each run descends from (``pipeline:NAME`` ancestry keys)."""
    keys = sorted(k for k in set(a["ancestors"]) | set(b["ancestors"]) if k.startswith("pipeline:"))
    return [{"pipeline": k[len("pipeline:"):], "a": a["ancestors"].get(k), "b": b["ancestors"].get(k),
             "change": "same" if a["ancestors"].get(k) == b["ancestors"].get(k) else "changed"} for k in keys]


def compare_runs(ws: Any, spec_a: str, spec_b: str) -> dict[str, Any]:
    """``workbench compare A B``: everything that differs between two runs, as JSON-ready data."""
    ra, rb = find(ws, spec_a), find(ws, spec_b)
    fa, fb = facts(ws, ra), facts(ws, rb)
    out = compare(fa, fb)
    out["materials"] = commits_between(ws, fa, fb)
    out["upstream"] = upstream_runs(fa, fb)
    if ra.pipeline != rb.pipeline:
        out["notes"].append(f"the runs are of two pipelines ({ra.pipeline}, {rb.pipeline})")
    return out
