"""Reads of the application layer: the board, history, a run, logs, approvals, traffic, artifacts, ...

Every function returns JSON-ready data; the CLI prints it as tables and the
HTTP API returns it as it is.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from ..errors import NotFound, UsageError
from ..status import Status
from .cache import INDEPENDENT


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def cached_read(ws: Any, name: str, *args: Any, marker: Any = None) -> Any | None:
    """``board``, ``approvals`` or ``history`` (with its arguments) if a fresh answer is kept, else None.

    ``marker``: the store's change marker just read by the caller (``workbench.service.cache.peek``)."""
    from .cache import peek

    key = {"board": "board", "approvals": "approvals"}.get(name) or ("history", *args)
    return peek(ws, key, marker)


def board(ws: Any) -> list[dict[str, Any]]:
    """GoCD's dashboard: the latest run of every pipeline, stage by stage (``workbench status``)."""
    from ..reporting import status_rows
    from .boardview import board_view
    from .cache import cached

    view, token = board_view(ws)  # config errors first; without the full config when a view is kept
    return cached(ws, "board", lambda: status_rows(ws, view), config=token)


def config_repos(ws: Any) -> list[dict[str, Any]]:
    """Each config repository: URL, the revision its pipelines run from, the latest one and its problems."""
    from ..configrepos.compose import describe

    return describe(ws)


def history(ws: Any, pipeline: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Past runs, newest first (``workbench history``)."""
    from ..reporting import history_rows
    from .cache import cached

    if limit < 1:
        raise UsageError(f"limit must be at least 1 (got {limit})")
    # the config plays no part in history: it is not loaded (a second at 10,000 pipelines)
    return cached(ws, ("history", pipeline, limit), lambda: history_rows(ws, pipeline, limit), config=INDEPENDENT)


def run_detail(ws: Any, locator: str) -> dict[str, Any]:
    """One run (``PIPELINE/COUNTER``, counter may be ``latest``): its stages with their jobs."""
    from ..engine import find_run

    run, rest = find_run(ws.store, locator)
    if rest:
        raise NotFound(f"{locator!r}: expected PIPELINE/COUNTER")
    detail = ws.store.run_detail(run)
    stages = []
    for s in detail.stages:
        stages.append({
            "name": s.name, "counter": s.counter, "status": s.status.value, "approval_type": s.approval_type,
            "approved_by": s.approved_by, "reason": s.reason, "created_at": _iso(s.created_at),
            "started_at": _iso(s.started_at), "finished_at": _iso(s.finished_at),
            "jobs": [{"name": j.name, "status": j.status.value, "exit_code": j.exit_code, "reason": j.reason,
                      "agent": j.agent, "started_at": _iso(j.started_at), "finished_at": _iso(j.finished_at),
                      "log": f"{run.pipeline}/{run.counter}/{s.name}/{s.counter}/{j.name}"}
                     for j in detail.jobs.get(s.id, ())],
        })
    return {"pipeline": run.pipeline, "counter": run.counter, "label": run.label, "status": run.status.value,
            "reason": run.reason, "trigger": run.trigger, "triggered_by": run.triggered_by,
            "environment": run.environment, "revisions": dict(run.revisions), "created_at": _iso(run.created_at),
            "started_at": _iso(run.started_at), "finished_at": _iso(run.finished_at), "stages": stages}


def job_log_chunks(ws: Any, locator: str, *, follow: bool = False, poll: float = 0.2,
                   stop: Any = None) -> Iterator[bytes]:
    """A job's log as chunks; with ``follow`` until the job finishes (``workbench logs -f``)."""
    from ..reporting import job_log_path

    path, job = job_log_path(ws, locator)
    if not path.exists():
        raise NotFound(f"log file {path.name} of {locator} is missing")
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(65536)
            if chunk:
                yield chunk
                continue
            if not follow or (stop is not None and stop()):
                return
            jobs = {j.id: j for j in ws.store.job_runs(job.stage_run_id)}
            if Status(jobs[job.id].status).finished:
                rest = fh.read()
                if rest:
                    yield rest
                return
            time.sleep(poll)


def compare(ws: Any, a: str, b: str) -> dict[str, Any]:
    """Two runs (``P/COUNTER``, ``P/LABEL`` or ``P/latest``) side by side (``workbench compare``): commits per
    repository through upstream provenance, config changed, stages and jobs, artifacts and packages by SHA-256."""
    from ..compare.gather import compare_runs

    return compare_runs(ws, a, b)


def pending_approvals(ws: Any) -> list[dict[str, Any]]:
    """Stages waiting for a person, with who may approve each."""
    from ..approvals import pending_approvals as pending

    from .cache import cached

    def compute() -> list[dict[str, Any]]:
        return [{**r, "waiting_since": _iso(r["waiting_since"])} for r in pending(ws)]

    return cached(ws, "approvals", compute)


def traffic(ws: Any, route: str | None = None, *, reconcile: bool = True) -> dict[str, Any]:
    """The routes' recorded weights; with ``reconcile`` a provider that lost them gets them back.

    ``notes`` says what was re-applied, or that a provider does not answer.
    """
    from ..errors import TrafficError
    from ..traffic import reconcile as do_reconcile, route_of, route_status
    from ..traffic.providers import provider_for

    if route is not None:
        route_of(ws.config, route, ws.root)  # NotFound naming the known routes
    notes = []
    if reconcile:
        for row in route_status(ws):
            if route is not None and row["route"] != route:
                continue
            try:
                r = do_reconcile(ws, row["route"])
            except TrafficError as exc:
                notes.append(f"route {row['route']}: the provider does not answer; weights shown are the "
                             f"recorded ones: {exc}")
                continue
            if r.get("reapplied"):
                notes.append(f"route {row['route']}: the provider served {_pct(r['served'])}; "
                             f"re-applied the recorded {_pct(r['recorded'])}")
            r_cfg = route_of(ws.config, row["route"], ws.root)
            why = provider_for(r_cfg).unanswered(r_cfg)
            if why:
                notes.append(f"route {row['route']}: the provider does not answer: {why}; the weights shown are "
                             "the recorded ones, re-applied once it answers again (`workbench traffic`)")
    rows = [r for r in route_status(ws) if route is None or r["route"] == route]
    return {"routes": rows, "notes": notes}


def _pct(w: dict[str, int] | None) -> str:
    return " ".join(f"{k}={v}%" for k, v in (w or {}).items())


def artifacts(ws: Any, locator: str) -> list[dict[str, Any]]:
    """What a run (``P/C``), a stage (``P/C/S``) or a job (``P/C/S/J``) stored, with SHA-256 each."""
    import sqlalchemy as sa

    from ..artifacts import tables
    from ..engine import find_run
    from ..store import schema as S

    run, rest = find_run(ws.store, locator)
    if len(rest) > 2:
        raise NotFound(f"{locator!r}: expected PIPELINE/COUNTER[/STAGE[/JOB]]")
    a, jr, sr = tables.artifacts, S.job_runs, S.stage_runs
    q = (sa.select(sr.c.name.label("stage"), sr.c.counter.label("stage_counter"), jr.c.name.label("job"), a.c.type,
                   a.c.path, a.c.size, a.c.sha256, a.c.url)
         .select_from(a.join(jr, jr.c.id == a.c.job_run_id).join(sr, sr.c.id == jr.c.stage_run_id))
         .where(sr.c.pipeline_run_id == run.id).order_by(sr.c.position, sr.c.counter, jr.c.name, a.c.path))
    if rest:
        q = q.where(sr.c.name == rest[0])
    if len(rest) > 1:
        q = q.where(jr.c.name == rest[1])
    with ws.store.read() as conn:
        rows: list[dict[str, Any]] = [dict(r._mapping) for r in conn.execute(q)]
    if not rows and rest:
        detail = ws.store.run_detail(run)
        if rest[0] not in detail.latest_stages():
            raise NotFound(f"{run.pipeline}/{run.counter} has no stage {rest[0]}")
    for r in rows:
        r["locator"] = f"{run.pipeline}/{run.counter}/{r['stage']}/{r['job']}"
    return rows


def artifact_file(ws: Any, locator: str, path: str) -> tuple[dict[str, Any], Iterator[bytes]]:
    """One artifact of a job (``P/C/S/J``): its row (with ``sha256``) and its bytes as chunks."""
    import fsspec

    rows = [r for r in artifacts(ws, locator) if r["path"] == path]
    if len(locator.split("/")) != 4:
        raise UsageError(f"{locator!r}: an artifact download needs PIPELINE/COUNTER/STAGE/JOB")
    if not rows:
        raise NotFound(f"{locator} has no artifact {path!r}")
    row = rows[-1]
    url = row["url"]

    def chunks() -> Iterator[bytes]:
        if "://" not in url or url.startswith("file://"):
            fh = open(Path(url.removeprefix("file://")), "rb")
        else:
            fh = fsspec.open(url, "rb").open()
        with fh:
            while chunk := fh.read(65536):
                yield chunk

    return row, chunks()


def packages(ws: Any, name: str | None = None, repos: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Package versions in the repositories (committed versions only: an interrupted copy is not listed)."""
    from .. import packages as P

    configured = ws.config.extensions.get("package_repositories") or {}
    names = list(repos) or sorted(set(configured) | {p.name for p in (ws.state / "packages").glob("*") if p.is_dir()})
    return [pkg.as_dict() for r in names for pkg in P.list_packages(P.repository(r, ws.root, configured), name)]


def metrics(ws: Any, *, since: str | None = None, until: str | None = None, by: str | None = None,
            tz: str = "UTC") -> dict[str, Any]:
    """DORA's five metrics with their bands (``workbench metrics --format json``)."""
    from ..metrics import metrics_from_workspace

    try:
        m = metrics_from_workspace(ws, since=since, until=until, by=by, tz=tz)
    except (ValueError, TypeError, KeyError) as exc:  # an unreadable date or zone
        raise UsageError(f"bad period or time zone: {exc}") from None
    return m.to_dict()


def incidents(ws: Any, *, open_only: bool = False) -> list[dict[str, Any]]:
    from ..metrics_store import list_incidents

    return [_incident(i) for i in list_incidents(ws, open_only=open_only)]


def _incident(i: Any) -> dict[str, Any]:
    return {"id": i.id, "title": i.title, "severity": i.severity, "opened_at": _iso(i.opened_at),
            "resolved_at": _iso(i.resolved_at), "caused_by": i.caused_by, "opened_by": i.opened_by,
            "resolved_by": i.resolved_by, "status": "open" if i.open else "resolved"}


def audit_rows(ws: Any, limit: int = 50) -> list[dict[str, Any]]:
    """Every decision and refused attempt, newest first."""
    if limit < 1:
        raise UsageError(f"limit must be at least 1 (got {limit})")
    df = ws.frames.audit.tail(limit).iloc[::-1]
    return [{**r, "at": r["at"].isoformat(timespec="seconds"),
             "counter": None if r["counter"] is None or str(r["counter"]) == "<NA>" else int(r["counter"])}
            for r in df.astype(object).where(df.notna(), None).to_dict("records")]


def validate(ws: Any) -> dict[str, Any]:
    """Load every pipeline file (and workbench.yaml); problems raise ConfigError with FILE:LINE:COL."""
    from ..cli import VALIDATE_CHECKS
    from .validate_cache import cached_validate

    _ = ws.settings  # parsed every time: its errors are never served from the cache

    def compute() -> dict[str, Any]:
        cfg = ws.config
        warnings = [str(w) for w in cfg.warnings]
        for check in VALIDATE_CHECKS:
            warnings.extend(str(w) for w in check(cfg, ws.root))
        return {"ok": True, "pipelines": len(cfg.pipelines), "files": len(cfg.files), "warnings": warnings}

    return cached_validate(ws, list(VALIDATE_CHECKS), compute)  # the same answer, kept by content


def notifications(ws: Any, state: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The notification outbox, newest first: event, run, recipient, channel, state, attempts, last error."""
    from ..notifications.outbox import STATES, rows

    if limit < 1:
        raise UsageError(f"limit must be at least 1 (got {limit})")
    if state is not None and state not in STATES:
        raise UsageError(f"unknown notification state {state!r}: one of {', '.join(STATES)}")
    return [{**r, "created_at": _iso(r["created_at"]), "sent_at": _iso(r["sent_at"]) if r["sent_at"] else None,
             "next_attempt_at": _iso(r["next_attempt_at"])} for r in rows(ws.store, state=state, limit=limit)]
