"""The ``fetch`` task: artifacts of an earlier stage or of an ancestor pipeline's run.

GoCD's ``pipeline:`` is a path from the ancestor down to the direct parent
(``grandparent/parent``); each hop is resolved through the run history: the
run of ``parent`` that fed this run, then the run of ``grandparent`` that fed
that one.  Which upstream run fed a run is read from the run's recorded
material revisions (``pipeline_runs.revisions``: a dependency material's
entry names the upstream pipeline and counter, as ``"up/3/stage/1"`` or a
mapping with ``pipeline`` and ``counter``).  Files are checked against the
SHA-256 recorded when they were published.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import sqlalchemy as sa

from ..errors import ArtifactError, NotFound
from ..tasks import JobContext, TaskError
from ..tasks.process import ProcessResult
from . import tables
from .store import ArtifactStore, inside, job_prefix, safe_relative, sha256_file

_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_\-.]*\Z")


def _upstream_ref(key: str, value: Any) -> tuple[str, int] | None:
    """(pipeline, counter) named by one revisions entry, if it is a dependency's."""
    if isinstance(value, Mapping):
        pipe, counter = value.get("pipeline"), value.get("counter") or value.get("pipeline_counter")
        if pipe and str(counter or "").isdigit():
            return str(pipe), int(counter)
        value = value.get("revision") or value.get("label") or ""
    if isinstance(value, str):
        parts = value.split("/")
        if len(parts) in (2, 4) and parts[1].isdigit():
            return parts[0], int(parts[1])
    return None


def upstream_run(store: Any, run: Any, name: str) -> Any:
    """The run of pipeline ``name`` that fed ``run`` (one hop of a fetch path)."""
    candidates = [ref for k, v in (run.revisions or {}).items() if (ref := _upstream_ref(k, v)) and ref[0] == name]
    if not candidates:
        feeders = sorted({ref[0] for k, v in (run.revisions or {}).items() if (ref := _upstream_ref(k, v))})
        raise TaskError(f"pipeline {name} is not an upstream of {run.pipeline}/{run.counter} "
                        f"(its upstream pipelines: {', '.join(feeders) or 'none'})")
    pipe, counter = max(candidates, key=lambda r: r[1])
    try:
        return store.get_pipeline_run(pipe, counter)
    except NotFound:
        raise TaskError(f"{run.pipeline}/{run.counter} was fed by {pipe}/{counter}, which is not in the history") from None


def resolve_run(store: Any, current: Any, path: str | None) -> Any:
    """The pipeline run a fetch reads from: this run, or the ancestor at the end of ``path``."""
    if not path or path == current.pipeline:
        return current
    hops = [p for p in path.strip("/").split("/") if p]
    for hop in hops:
        if not _NAME.match(hop):
            raise TaskError(f"fetch pipeline path {path!r} has an invalid pipeline name {hop!r}")
    run = current
    for hop in reversed(hops):  # GoCD writes ancestor/.../parent: walk up from the parent
        run = upstream_run(store, run, hop)
    return run


def _find_job(store: Any, run: Any, stage: str, job: str) -> tuple[Any, Any]:
    detail = store.run_detail(run)
    stage_run = detail.latest_stages().get(stage)
    if stage_run is None:
        raise TaskError(f"stage {stage} has not run in {run.pipeline}/{run.counter}; nothing to fetch")
    for jr in detail.jobs.get(stage_run.id, ()):
        if jr.name == job:
            return stage_run, jr
    names = ", ".join(j.name for j in detail.jobs.get(stage_run.id, ())) or "none"
    raise TaskError(f"no job {job} in {run.pipeline}/{run.counter}/{stage}/{stage_run.counter} (jobs: {names})")


def run_fetch(task: Any, ctx: JobContext) -> ProcessResult:
    from ..record import job_store

    spec = ctx.spec
    context = spec.context
    if getattr(task, "artifact_origin", "gocd") != "gocd":
        raise TaskError("only artifacts stored by the workbench can be fetched (artifact_origin: gocd)")
    try:
        src = safe_relative(task.source, "fetch source")
        dest = safe_relative(task.destination or "", "fetch destination")
    except ArtifactError as exc:
        raise TaskError(str(exc)) from None
    if not src:
        raise TaskError("fetch source is empty")
    if not context.get("store_url"):
        raise TaskError("fetch needs the run history (no store URL in the job's context)")
    store = job_store(context["store_url"])
    current = store.get_pipeline_run_by_id(int(context["run_id"]))
    run = resolve_run(store, current, task.pipeline)
    stage_run, jr = _find_job(store, run, task.stage, task.job)
    where = f"{run.pipeline}/{run.counter}/{task.stage}/{stage_run.counter}/{task.job}"
    a = tables.artifacts
    with store.read() as conn:
        rows = {r.path: r for r in conn.execute(sa.select(a.c.path, a.c.sha256, a.c.size).where(a.c.job_run_id == jr.id))}
    if task.is_file:
        picked = {src: Path(src).name} if src in rows else {}
    else:
        picked = {p: f"{Path(src).name}/{p[len(src) + 1:]}" for p in rows if p.startswith(src + "/")}
        if not picked and src in rows:
            raise TaskError(f"{src} in {where} is a file: set `is_file: true` to fetch it")
    if not picked:
        known = ", ".join(sorted(rows)[:10]) or "none"
        raise TaskError(f"no artifact {'file' if task.is_file else 'folder'} {src!r} in {where} (artifacts: {known})")
    workdir = Path(spec.workdir)
    target_dir = workdir / dest if dest else workdir
    target_dir.mkdir(parents=True, exist_ok=True)
    try:
        inside(workdir, target_dir, "fetch destination", task.destination)
    except ArtifactError as exc:
        raise TaskError(str(exc)) from None
    arts = ArtifactStore(context.get("artifacts_url") or str(Path(spec.workspace) / ".workbench" / "artifacts"))
    prefix = job_prefix(run.pipeline, run.counter, task.stage, stage_run.counter, task.job)
    total = 0
    for rel, out_rel in sorted(picked.items()):
        local = target_dir / out_rel
        try:
            inside(workdir, local.parent if local.parent.exists() else target_dir, "fetch destination", task.destination)
            arts.get(f"{prefix}/{rel}", local)
        except ArtifactError as exc:
            raise TaskError(str(exc)) from None
        digest = sha256_file(local)
        if digest != rows[rel].sha256:
            local.unlink(missing_ok=True)
            raise TaskError(f"artifact {rel} of {where} does not match its recorded SHA-256 "
                            f"(stored {rows[rel].sha256[:12]}…, got {digest[:12]}…); it was changed after publishing")
        total += rows[rel].size
    ctx.say(f"fetched {len(picked)} file(s), {total} bytes, from {where} into {dest or '.'}")
    return ProcessResult(0)
