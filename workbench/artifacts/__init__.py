"""Artifacts like GoCD's: ``artifacts:`` of a job are published after its tasks,
``fetch:`` brings them into a later job, test reports become a table.

* Publishing runs where the job ran (a :class:`~workbench.hooks.JobHook`),
  for passed and failed jobs alike — a failed job's test report is the one
  people need.  Each file gets a SHA-256 in the ``artifacts`` table; a
  ``build`` source that matches nothing fails an otherwise passing job, as
  in GoCD.
* ``test`` artifacts that are JUnit XML are parsed into ``test_results``.
* The executed notebooks of notebook tasks are published as ``notebooks/``.
* ``fetch`` (:mod:`.fetch`) resolves GoCD's ``pipeline: upstream/parent``
  path through the run history and verifies every checksum.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable

from ..errors import ArtifactError
from ..hooks import register_job_hook
from ..tasks import TaskError, register_task_runner
from . import tables
from .store import ArtifactStore, inside, job_prefix, safe_relative, sha256_file

__all__ = ["ArtifactStore", "collect", "job_store_for", "publish_files", "safe_relative"]

_WILDCARDS = set("*?[")


def job_store_for(spec: Any) -> tuple[ArtifactStore, str]:
    """The artifact store of a job's workspace and the job's folder in it."""
    ctx = spec.context
    url = ctx.get("artifacts_url") or str(Path(spec.workspace) / ".workbench" / "artifacts")
    return ArtifactStore(url), job_prefix(spec.pipeline, spec.counter, spec.stage, spec.stage_counter, spec.job)


def collect(workdir: Path, source: str, destination: str = "") -> list[tuple[Path, str]]:
    """Files matched by an artifact ``source`` (GoCD globs, ``**`` too) and their paths in the store.

    A file goes to ``destination/NAME``; a folder to ``destination/FOLDER/...``;
    glob matches keep their path below the glob's fixed prefix.
    """
    src = safe_relative(source, "artifact source")
    dest = safe_relative(destination, "artifact destination")
    if not src:
        raise ArtifactError("artifact source is empty")

    def under(rel: str) -> str:
        return f"{dest}/{rel}" if dest else rel

    def tree(folder: Path, prefix: str) -> list[tuple[Path, str]]:
        return [(f, under(f"{prefix}/{f.relative_to(folder).as_posix()}" if prefix else f.relative_to(folder).as_posix()))
                for f in sorted(folder.rglob("*")) if f.is_file() and _inside_ok(workdir, f)]

    parts = src.split("/")
    if not any(_WILDCARDS & set(p) for p in parts):
        path = workdir / src
        if not path.exists():
            return []
        real = inside(workdir, path, "artifact source", source)
        if real.is_dir():
            return tree(real, path.name)
        return [(real, under(path.name))]
    fixed = []
    for p in parts:
        if _WILDCARDS & set(p):
            break
        fixed.append(p)
    base = workdir.joinpath(*fixed) if fixed else workdir
    out: dict[str, Path] = {}
    for match in sorted(workdir.glob(src)):
        real = inside(workdir, match, "artifact source", source)
        rel = match.relative_to(base).as_posix()
        if real.is_dir():
            for f, r in tree(real, rel):
                out.setdefault(r, f)
        elif real.is_file():
            out.setdefault(under(rel), real)
    return [(f, r) for r, f in sorted(out.items())]


def _inside_ok(workdir: Path, f: Path) -> bool:
    try:
        inside(workdir, f, "artifact source", str(f))
        return True
    except ArtifactError:
        return False


def publish_files(spec: Any, files: Iterable[tuple[Path, str, str]], *, log: Any = None) -> list[dict[str, Any]]:
    """Store ``(local file, path in the job's folder, type)`` and record their checksums."""
    from ..record import job_store

    store, prefix = job_store_for(spec)
    rows = []
    for local, rel, kind in files:
        target = f"{prefix}/{rel}"
        digest = sha256_file(local)
        dest_local = store.local_path(target)
        if dest_local is None or dest_local.resolve() != local.resolve():
            store.put(local, target)
        rows.append(dict(job_run_id=spec.job_run_id, type=kind, path=rel, size=local.stat().st_size, sha256=digest,
                         url=store.url_of(target), created_at=time.time()))
    url = spec.context.get("store_url")
    if rows and url:
        db = job_store(url)
        with db.write() as conn:
            t = tables.artifacts
            conn.execute(t.delete().where(t.c.job_run_id == spec.job_run_id, t.c.path.in_([r["path"] for r in rows])))
            conn.execute(t.insert(), rows)
    return rows


def _record_tests(spec: Any, ctx: Any, files: list[tuple[Path, str]]) -> int:
    from ..record import job_store
    from .junit import parse_junit

    rows = []
    for local, rel in files:
        if not rel.lower().endswith(".xml"):
            continue
        try:
            cases = parse_junit(local.read_bytes(), rel)
        except ArtifactError as exc:
            ctx.say(f"test report {rel} not read: {exc}")
            continue
        rows += [dict(job_run_id=spec.job_run_id, file=rel, suite=c.suite, classname=c.classname, name=c.name,
                      status=c.status, duration=c.duration, message=c.message) for c in cases]
    if rows and spec.secrets:  # a failure message quoting a secure variable is masked like the log
        from ..secrets import mask_data

        rows = [mask_data(r, spec.secrets) for r in rows]
    url = spec.context.get("store_url")
    if rows and url:
        with job_store(url).write() as conn:
            conn.execute(tables.test_results.insert(), rows)
    return len(rows)


class PublishArtifacts:
    """The job hook: after the tasks, store the job's artifacts and its executed notebooks."""

    def prepare(self, spec: Any, ctx: Any) -> None:
        return None

    def finish(self, spec: Any, ctx: Any, outcome: Any) -> Any:
        from ..status import Status

        workdir = Path(spec.workdir)
        problems: list[str] = []
        todo: list[tuple[Path, str, str]] = []
        tests: list[tuple[Path, str]] = []
        for art in spec.context.get("artifacts") or ():
            kind = getattr(art, "type", "build")
            if kind not in ("build", "test"):
                ctx.say(f"{kind} artifact {art.source} skipped: only build and test artifacts are stored")
                continue
            try:
                found = collect(workdir, art.source, art.destination)
            except ArtifactError as exc:
                problems.append(str(exc))
                continue
            if not found:
                problems.append(f"{kind} artifact source {art.source!r} matched no file in the job's folder")
                continue
            todo += [(f, rel, kind) for f, rel in found]
            if kind == "test":
                tests += found
        for nb in ctx.details.get("notebooks", ()):
            local = Path(nb["local"])
            if local.is_file():
                todo.append((local, nb["artifact"], "notebook"))
        if todo:
            try:
                rows = publish_files(spec, todo)
                ctx.say(f"published {len(rows)} artifact file(s), {sum(r['size'] for r in rows)} bytes")
            except ArtifactError as exc:
                problems.append(str(exc))
        if tests:
            n = _record_tests(spec, ctx, tests)
            ctx.say(f"recorded {n} test result(s) from {len(tests)} test artifact file(s)")
        if problems:
            for p in problems:
                ctx.say(f"artifacts: {p}")
            if outcome.status == Status.PASSED:
                raise TaskError("; ".join(problems))
        return outcome


register_job_hook(PublishArtifacts())


def _run_fetch(task: Any, ctx: Any) -> Any:
    from .fetch import run_fetch

    return run_fetch(task, ctx)


register_task_runner("fetch", _run_fetch)
