"""Package repositories (``qa``, ``prod``, ...) and promotion between them.

A job publishes a built file (rpm, wheel, tarball: any file) as NAME VERSION
into a repository; another pipeline promotes that exact version to the next
repository.  The rules that make this safe to automate:

* a version, once there, never changes: publishing or promoting different
  bytes under an existing NAME VERSION is refused (the same bytes again is a
  no-op, so retries are safe);
* checksums are verified end to end: the source file against its recorded
  SHA-256, the copy against the source, and optionally against the checksum
  a person or a test stage approved (``--sha256``);
* the move is atomic: the file is copied under a temporary name, fsynced and
  renamed, then the version's manifest is written the same way.  The
  manifest is the commit point: a version without one does not exist, so a
  crash anywhere in between leaves the old state, never half of the new.

Layout of a repository folder: ``NAME/VERSION/FILE`` and
``NAME/VERSION/package.json``.  Repositories are configured under the
``package_repositories:`` section (``{qa: {url: /srv/pkgs/qa}}``); any other
name is the folder ``.workbench/packages/NAME`` of the workspace.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import sqlalchemy as sa

from .errors import InvalidState, NotFound, UsageError
from .store import schema as S
from .store.frames import register_frame

MANIFEST = "package.json"
CRASH_ENV = "WORKBENCH_PACKAGES_CRASH_AT"  # test hook: SIGKILL ourselves at a named step
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+\-]{0,199}\Z")
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,99}\Z")


@dataclass(frozen=True)
class Repository:
    name: str
    path: Path


@dataclass(frozen=True)
class Package:
    repository: str
    name: str
    version: str
    file: str
    sha256: str
    size: int
    published_at: float
    promoted_from: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value) or value in (".", "..") or ".." in value:
        raise UsageError(f"invalid package {what} {value!r}: letters, digits and . _ + - only, not starting with "
                         "a dot or dash, no '..' and no '/'")
    return value


def repository(name: str, workspace_root: Path, configured: Mapping[str, Any] | None = None) -> Repository:
    """A named repository: configured URL (a local folder or file:// URL), else the workspace default."""
    if not isinstance(name, str) or not _REPO.match(name):
        raise UsageError(f"invalid repository name {name!r}")
    entry = (configured or {}).get(name)
    url = entry.get("url") if isinstance(entry, Mapping) else None
    if url:
        if "://" in url and not url.startswith("file://"):
            raise UsageError(f"repository {name}: only local folders (or file:// URLs) can be promoted atomically; "
                             f"got {url}")
        path = Path(url[len("file://"):] if url.startswith("file://") else url).expanduser()
        if not path.is_absolute():
            path = workspace_root / path
    else:
        path = workspace_root / ".workbench" / "packages" / name
    return Repository(name, path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _crash_point(step: str) -> None:
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_synced(src: Path, dst: Path) -> str:
    """Copy ``src`` to ``dst`` (a new file), fsync it, and return the SHA-256 of what was written."""
    h = hashlib.sha256()
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        for chunk in iter(lambda: fin.read(1 << 20), b""):
            fout.write(chunk)
            h.update(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return h.hexdigest()


def get(repo: Repository, name: str, version: str) -> Package | None:
    """The committed version, or None (a folder without a manifest is an interrupted, uncommitted copy)."""
    manifest = repo.path / check_name(name, "name") / check_name(version, "version") / MANIFEST
    try:
        data = json.loads(manifest.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InvalidState(f"{repo.name}: manifest of {name} {version} is unreadable: {exc}") from None
    return Package(**{**data, "repository": repo.name})


def list_packages(repo: Repository, name: str | None = None) -> list[Package]:
    out = []
    if not repo.path.is_dir():
        return out
    for nd in sorted(p for p in repo.path.iterdir() if p.is_dir() and (name is None or p.name == name)):
        for vd in sorted(p for p in nd.iterdir() if p.is_dir()):
            pkg = get(repo, nd.name, vd.name) if _NAME.match(nd.name) and _NAME.match(vd.name) else None
            if pkg is not None:
                out.append(pkg)
    return out


def _install(repo: Repository, name: str, version: str, src: Path, expected: str, promoted_from: str | None) -> Package:
    """Copy, verify, rename, then commit the manifest; the existing-version rule is checked first."""
    existing = get(repo, name, version)
    if existing is not None:
        if existing.sha256 == expected:
            return existing  # the same bytes again: a retry, nothing to do
        raise InvalidState(f"{repo.name} already has {name} {version} with different content "
                           f"(sha256 {existing.sha256[:12]}…, this is {expected[:12]}…); versions never change: "
                           "publish a new version")
    folder = repo.path / name / version
    folder.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    tmp = folder / f".{src.name}.{token}.tmp"
    try:
        written = _copy_synced(src, tmp)
        if written != expected:
            raise InvalidState(f"copying {name} {version} into {repo.name} produced different bytes "
                               f"(sha256 {written[:12]}…, expected {expected[:12]}…); nothing was changed")
        _crash_point("after-copy")
        final = folder / src.name
        os.replace(tmp, final)
        _fsync_dir(folder)
        _crash_point("before-commit")
        pkg = Package(repo.name, name, version, src.name, expected, final.stat().st_size, time.time(), promoted_from)
        mtmp = folder / f".{MANIFEST}.{token}.tmp"
        with open(mtmp, "x") as fh:
            json.dump({k: v for k, v in pkg.as_dict().items() if k != "repository"}, fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(mtmp, folder / MANIFEST)  # the commit point
        _fsync_dir(folder)
        return pkg
    finally:
        tmp.unlink(missing_ok=True)


def publish(repo: Repository, name: str, version: str, file: Path) -> Package:
    """Put a built file into ``repo`` as NAME VERSION."""
    check_name(name, "name"), check_name(version, "version")
    if not file.is_file():
        raise NotFound(f"package file {file} does not exist")
    return _install(repo, name, version, file, _sha256(file), None)


def promote(src: Repository, dst: Repository, name: str, version: str, *, expect_sha256: str | None = None) -> Package:
    """Copy NAME VERSION from ``src`` to ``dst`` with checksum verification, atomically."""
    pkg = get(src, name, version)
    if pkg is None:
        have = ", ".join(p.version for p in list_packages(src, name)) or "none"
        raise NotFound(f"{src.name} has no {name} {version} (versions there: {have})")
    if expect_sha256 and expect_sha256.lower() != pkg.sha256:
        raise InvalidState(f"{name} {version} in {src.name} has sha256 {pkg.sha256}, not the expected {expect_sha256}")
    file = src.path / name / version / pkg.file
    actual = _sha256(file)
    if actual != pkg.sha256:
        raise InvalidState(f"checksum mismatch: {src.name}'s {name} {version} ({pkg.file}) has sha256 {actual[:12]}… "
                           f"but was published as {pkg.sha256[:12]}…; refusing to promote a changed file")
    return _install(dst, name, version, file, pkg.sha256, src.name)


# -- history ---------------------------------------------------------------------

package_events = sa.Table(
    "package_events",
    S.metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("action", sa.String(16), nullable=False),  # publish | promote
    sa.Column("repository", sa.String(100), nullable=False),
    sa.Column("from_repository", sa.String(100)),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("version", sa.String(200), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger),
    sa.Column("job_run_id", sa.Integer),
    sa.Column("user", sa.String(255)),
    sa.Column("at", sa.Float, nullable=False),
)
S.register_migration("packages-1", S.tables_created_by(package_events))


def record_event(store: Any, action: str, pkg: Package, *, job_run_id: int | None = None, user: str | None = None) -> None:
    with store.write() as conn:
        conn.execute(package_events.insert().values(
            action=action, repository=pkg.repository, from_repository=pkg.promoted_from, name=pkg.name,
            version=pkg.version, sha256=pkg.sha256, size=pkg.size, job_run_id=job_run_id, user=user, at=time.time()))


def _events_frame(frames: Any) -> Any:
    """Every publish and promotion, oldest first (who moved which bytes where)."""
    e = package_events
    df = frames.query(sa.select(e).order_by(e.c.id))
    return frames.utc(df, "at")


register_frame("packages", _events_frame)


# -- YAML: the config section and the two task kinds ----------------------------------


def _parse_repositories(node: Any, ctx: Any) -> dict[str, dict[str, str]]:
    """``package_repositories: {qa: {url: /srv/packages/qa}, prod: {url: ...}}``."""
    m = ctx.mapping(node, "package_repositories")
    out: dict[str, dict[str, str]] = {}
    if m is None:
        return out
    for key, value in m:
        if not _REPO.match(key.text):
            ctx.error(key, f"invalid repository name {key.text!r}: letters, digits, '_' and '-'")
            continue
        entry = ctx.mapping(value, f"repository {key.text}", key)
        if entry is None:
            continue
        ctx.check_keys(entry, {"url"}, f"repository {key.text}")
        url = ctx.req_text(entry, "url", f"repository {key.text}", key)
        if url:
            out[key.text] = {"url": url}
    return out


def _task_options(node: Any, ctx: Any, kind: str, required: tuple[str, ...], optional: tuple[str, ...]) -> Any:
    from .config.model import GenericTask

    m = ctx.mapping(node, f"{kind} task", null_ok=False)
    if m is None:
        return None
    ctx.check_keys(m, set(required) | set(optional), f"{kind} task")
    options: dict[str, str] = {}
    ok = True
    for key in required:
        value = ctx.req_text(m, key, f"{kind} task", m)
        ok &= value is not None
        options[key] = value or ""
    for key in optional:
        value = ctx.opt_text(m, key, f"{kind} task")
        if value is not None:
            options[key] = value
    for key in ("name", "version"):
        if key in options and "${" not in options[key] and options[key] and not _NAME.match(options[key]):
            ctx.error(m.get(key), f"invalid package {key} {options[key]!r} in {kind} task")
            ok = False
    return GenericTask(kind=kind, options=options) if ok else None


def _parse_publish(node: Any, ctx: Any) -> Any:
    """``- publish_package: {repository: qa, name: api, version: "1.4.${GO_PIPELINE_COUNTER}", file: dist/api.tgz}``."""
    return _task_options(node, ctx, "publish_package", ("repository", "name", "version", "file"), ())


def _parse_promote(node: Any, ctx: Any) -> Any:
    """``- promote_package: {name: api, version: "1.4.7", from: qa, to: prod, sha256: ...}``."""
    return _task_options(node, ctx, "promote_package", ("name", "version", "from", "to"), ("sha256",))


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand(text: str, env: Mapping[str, str]) -> str:
    """``${NAME}`` from the job's environment (the version is often the pipeline label)."""
    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in env:
            raise UsageError(f"{text!r} refers to ${{{m.group(1)}}}, which the job's environment does not have")
        return env[m.group(1)]
    return _VAR.sub(sub, text)


def _configured(workspace_root: Path) -> Mapping[str, Any]:
    from .config import load_workspace_config

    return load_workspace_config(workspace_root).extensions.get("package_repositories") or {}


def _run_task(task: Any, ctx: Any) -> Any:
    from .errors import WorkbenchError
    from .record import job_store
    from .tasks import TaskError
    from .tasks.process import ProcessResult

    spec = ctx.spec
    root = Path(spec.workspace)
    o = dict(task.options)
    try:
        configured = _configured(root)
        name, version = _expand(o["name"], spec.env), _expand(o["version"], spec.env)
        if task.kind == "publish_package":
            rel = _expand(o["file"], spec.env)
            file = Path(ctx.cwd(rel))  # inside the job's folder, or refused
            pkg = publish(repository(o["repository"], root, configured), name, version, file)
            action = "publish"
        else:
            pkg = promote(repository(o["from"], root, configured), repository(o["to"], root, configured), name, version,
                          expect_sha256=o.get("sha256"))
            action = "promote"
    except (WorkbenchError, TaskError) as exc:
        raise TaskError(str(exc)) from None
    ctx.say(f"{action}: {pkg.name} {pkg.version} ({pkg.file}, sha256 {pkg.sha256}) is in {pkg.repository}")
    url = spec.context.get("store_url")
    if url:
        record_event(job_store(url), action, pkg, job_run_id=spec.job_run_id)
    return ProcessResult(0)


def _register() -> None:
    from .config import register_section, register_task_kind
    from .tasks import register_task_runner

    register_section("package_repositories", _parse_repositories)
    register_task_kind("publish_package", _parse_publish)
    register_task_kind("promote_package", _parse_promote)
    register_task_runner("publish_package", _run_task)
    register_task_runner("promote_package", _run_task)


_register()
