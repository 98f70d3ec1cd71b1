"""Backup and restore of a workspace: its config, its run history and its artifacts.

A backup is a folder that mirrors the workspace (``pipelines/``,
``workbench.yaml``, ``notebooks/``... and from the state folder the store,
``artifacts/``, ``logs/`` and ``packages/``) plus ``manifest.json`` listing
every file with its size and SHA-256. Why each step is done the way it is:

* the store is copied with SQLite's online backup API
  (``sqlite3.Connection.backup``), which reads one consistent snapshot while
  runs go on (WAL readers never block writers), or with ``pg_dump`` (one
  serializable snapshot) for PostgreSQL; the copy is integrity-checked;
* the store is copied *first*, so every artifact the snapshot lists was
  complete before it was recorded; each such file is checked against the
  SHA-256 the store holds, so a backup never pairs rows with other bytes;
* the backup is written beside ``DEST`` and renamed into place at the end:
  a backup that failed half-way is never mistaken for a good one;
* ``restore`` verifies every checksum (and refuses files the manifest does
  not list) *before* it writes anything, copies into a staging folder inside
  the empty target, checks again, and only then moves the files into place;
  on any failure the target is left empty.

The secret key is not copied unless asked (``--with-key``): a backup often
lives on storage that more people can read than the workspace.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .errors import InvalidState, NotFound, StoreError, UsageError

if TYPE_CHECKING:
    from .workspace import Workspace

__all__ = ["BackupReport", "backup", "restore", "verify", "MANIFEST"]

MANIFEST = "manifest.json"
FORMAT = 1
STATE = ".workbench"
STORE_FILE = f"{STATE}/store.db"
PG_DUMP_FILE = "store.pgdump"
KEY_FILE = f"{STATE}/secret.key"
STATE_FOLDERS = ("logs", "packages")  # copied as they are; artifacts are copied from the artifact store
SKIPPED_AT_ROOT = {STATE, ".git", "__pycache__", ".ipynb_checkpoints"}
CHUNK = 1 << 20


@dataclass(frozen=True)
class BackupReport:
    """What a backup or restore did, for the CLI and tests."""

    path: Path
    files: int
    bytes: int
    store: str  # sqlite | postgresql
    runs: int


# -- small helpers ---------------------------------------------------------------------


def _copy_hashed(src: Path, dst: Path) -> tuple[str, int]:
    """Copy ``src`` to ``dst`` (a new file) and return the SHA-256 and size of the bytes written."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    h, size = hashlib.sha256(), 0
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        for chunk in iter(lambda: fin.read(CHUNK), b""):
            fout.write(chunk)
            h.update(chunk)
            size += len(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    shutil.copymode(src, dst)
    return h.hexdigest(), size


def _hash(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _files(folder: Path) -> Iterator[Path]:
    """Regular files under ``folder``, in a stable order, skipping in-flight temporary files."""
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink() and not (path.name.startswith(".") and path.name.endswith(".tmp")):
            yield path


def _config_files(root: Path) -> Iterator[tuple[Path, str]]:
    """The workspace's own files (pipelines, workbench.yaml, notebooks, ...): everything but the state folder."""
    for entry in sorted(root.iterdir()):
        if entry.name in SKIPPED_AT_ROOT or entry.is_symlink():
            continue
        if entry.is_file():
            yield entry, entry.name
        elif entry.is_dir():
            for f in _files(entry):
                if not set(f.relative_to(root).parts) & SKIPPED_AT_ROOT:
                    yield f, f.relative_to(root).as_posix()


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A SQLAlchemy PostgreSQL URL as a libpq one, with the password moved to PGPASSWORD (not on argv)."""
    import sqlalchemy as sa

    u = sa.engine.make_url(url)
    env = {"PGPASSWORD": u.password} if u.password else {}
    plain = u.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _run(argv: list[str], what: str, env: dict[str, str] | None = None) -> None:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **(env or {})},
                           stdin=subprocess.DEVNULL, timeout=3600)
    except FileNotFoundError:
        raise StoreError(f"{what}: {argv[0]} is not installed (Debian package postgresql-client)") from None
    if p.returncode != 0:
        tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-5:])
        raise StoreError(f"{what} failed (exit {p.returncode}): {tail}")


def _sqlite_ok(path: Path) -> str:
    conn = sqlite3.connect(str(path))
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        conn.close()


# -- backup ------------------------------------------------------------------------------


def _backup_store(ws: "Workspace", staging: Path) -> tuple[str, str]:
    """The store's snapshot into ``staging``; returns (kind, file relative to staging)."""
    store = ws.store
    if store.is_sqlite:
        target = staging / STORE_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        source_path = store.url.removeprefix("sqlite:///")
        src = sqlite3.connect(source_path, timeout=30)
        dst = sqlite3.connect(str(target))
        try:
            src.backup(dst)  # one step: a single consistent read snapshot, writers go on (WAL)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file in the backup
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot back up the store {source_path}: {exc}") from None
        finally:
            dst.close()
            src.close()
        verdict = _sqlite_ok(target)
        if verdict != "ok":
            raise StoreError(f"the store's backup copy fails its integrity check: {verdict}")
        return "sqlite", STORE_FILE
    if store.engine.dialect.name == "postgresql":
        url, env = _libpq(store.url)
        _run(["pg_dump", "--format=custom", "--no-owner", "--no-privileges", f"--file={staging / PG_DUMP_FILE}", url],
             "pg_dump", env)
        return "postgresql", PG_DUMP_FILE
    raise UsageError(f"backing up a {store.engine.dialect.name} store is not supported")


def _recorded_artifacts(staging: Path, kind: str, ws: "Workspace") -> dict[str, str]:
    """url -> SHA-256 of every artifact the store *snapshot* lists (read from the copy, not the live store)."""
    import sqlalchemy as sa

    from .artifacts import tables

    a = tables.artifacts
    if kind == "sqlite":
        engine = sa.create_engine(f"sqlite:///{staging / STORE_FILE}")
        try:
            with engine.connect() as conn:
                return {r.url: r.sha256 for r in conn.execute(sa.select(a.c.url, a.c.sha256))}
        except sa.exc.OperationalError:  # a store that never had the artifacts table
            return {}
        finally:
            engine.dispose()
    with ws.store.read() as conn:  # pg_dump's snapshot is earlier than this read: rows only grow meanwhile
        return {r.url: r.sha256 for r in conn.execute(sa.select(a.c.url, a.c.sha256))}


def backup(ws: "Workspace", dest: str | os.PathLike[str], *, include_key: bool = False) -> BackupReport:
    """A consistent copy of ``ws`` into the new (or empty) folder ``dest``; safe while runs go on."""
    from . import features
    from .artifacts.store import ArtifactStore

    features.load()
    dest = Path(dest).expanduser().absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(f"backup destination {dest} exists and is not an empty folder")
    if dest == ws.root or ws.root in dest.parents:
        raise UsageError(f"backup destination {dest} is inside the workspace; choose a folder outside it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.with_name(f".{dest.name}.partial-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    entries: list[dict[str, Any]] = []
    try:
        kind, store_file = _backup_store(ws, staging)  # first: everything after it is at least as new
        recorded = _recorded_artifacts(staging, kind, ws)
        digest, size = _hash(staging / store_file)
        entries.append({"path": store_file, "size": size, "sha256": digest})
        for src, rel in _config_files(ws.root):
            digest, size = _copy_hashed(src, staging / rel)
            entries.append({"path": rel, "size": size, "sha256": digest})
        for name in STATE_FOLDERS:
            for src in _files(ws.state / name):
                rel = f"{STATE}/{name}/{src.relative_to(ws.state / name).as_posix()}"
                digest, size = _copy_hashed(src, staging / rel)
                entries.append({"path": rel, "size": size, "sha256": digest})
        entries += _backup_artifacts(ArtifactStore(ws.artifacts_url), staging, recorded)
        if include_key and (ws.state / "secret.key").is_file():
            digest, size = _copy_hashed(ws.state / "secret.key", staging / KEY_FILE)
            os.chmod(staging / KEY_FILE, 0o600)
            entries.append({"path": KEY_FILE, "size": size, "sha256": digest})
        runs = _count_runs(staging, kind, ws)
        manifest = {
            "format": FORMAT, "created_at": time.time(), "source": str(ws.root), "store": kind,
            "store_file": store_file, "runs": runs, "artifacts_recorded": len(recorded),
            "workbench_version": _version(), "files": entries,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
        if dest.exists():
            dest.rmdir()
        os.rename(staging, dest)  # the commit point: DEST exists only complete
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return BackupReport(dest, len(entries), sum(e["size"] for e in entries), kind, runs)


def _backup_artifacts(arts: Any, staging: Path, recorded: dict[str, str]) -> list[dict[str, Any]]:
    """Every file of the artifact store; those the snapshot lists must have the recorded SHA-256."""
    out = []
    for rel in arts.walk_files(""):
        if Path(rel).name.startswith(".") and rel.endswith(".tmp"):
            continue
        target = staging / STATE / "artifacts" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        h, size = hashlib.sha256(), 0
        with arts.open(rel) as fin, open(target, "xb") as fout:
            for chunk in iter(lambda: fin.read(CHUNK), b""):
                fout.write(chunk)
                h.update(chunk)
                size += len(chunk)
        digest = h.hexdigest()
        expected = recorded.get(arts.url_of(rel))
        if expected is not None and expected != digest:
            raise InvalidState(f"artifact {rel} does not match the SHA-256 the store recorded for it "
                               f"({expected[:12]}…, the file has {digest[:12]}…); it was changed after publishing")
        out.append({"path": f"{STATE}/artifacts/{rel}", "size": size, "sha256": digest})
    return out


def _count_runs(staging: Path, kind: str, ws: "Workspace") -> int:
    if kind == "sqlite":
        conn = sqlite3.connect(str(staging / STORE_FILE))
        try:
            return int(conn.execute("SELECT count(*) FROM pipeline_runs").fetchone()[0])
        finally:
            conn.close()
    return len(ws.store.pipeline_runs())


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("release-workbench")
    except PackageNotFoundError:
        return "unknown"


# -- verify and restore -------------------------------------------------------------------


def verify(src: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of the backup ``src``, after checking every file; InvalidState names the first damage."""
    src = Path(src).expanduser().absolute()
    if not (src / MANIFEST).is_file():
        raise NotFound(f"{src} is not a workbench backup (no {MANIFEST})")
    try:
        manifest = json.loads((src / MANIFEST).read_text())
        files = {e["path"]: e for e in manifest["files"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidState(f"the backup's {MANIFEST} is unreadable: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise InvalidState(f"backup format {manifest.get('format')!r} is not one this workbench reads ({FORMAT})")
    for rel, entry in files.items():
        path = src / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise InvalidState(f"the manifest lists {rel!r}, which is outside the backup")
        if not path.is_file():
            raise InvalidState(f"the backup is damaged: {rel} is missing")
        digest, size = _hash(path)
        if (digest, size) != (entry["sha256"], entry["size"]):
            raise InvalidState(f"the backup is damaged: {rel} does not match its checksum in the manifest")
    extra = [p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()]
    extra = [p for p in extra if p != MANIFEST and p not in files]
    if extra:
        raise InvalidState(f"the backup holds files its manifest does not list: {', '.join(sorted(extra)[:5])}")
    return manifest


def restore(src: str | os.PathLike[str], target: str | os.PathLike[str], *, store_url: str | None = None) -> BackupReport:
    """Bring the backup ``src`` back into the empty folder ``target``, verified; nothing half-restored."""
    src = Path(src).expanduser().absolute()
    target = Path(target).expanduser().absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UsageError(f"{target} is not empty; restore only into a new or empty folder")
    manifest = verify(src)  # every checksum before anything is written
    kind = manifest["store"]
    if kind == "postgresql" and not store_url:
        raise UsageError("this backup's store is PostgreSQL: give an empty database with --store-url URL")
    created = not target.exists()
    target.mkdir(parents=True, exist_ok=True)
    staging = target / f".restore-{uuid.uuid4().hex[:8]}"
    try:
        for entry in manifest["files"]:
            digest, size = _copy_hashed(src / entry["path"], staging / entry["path"])
            if (digest, size) != (entry["sha256"], entry["size"]):
                raise InvalidState(f"{entry['path']} changed while it was restored; nothing was restored")
        old_state, new_state = f"{manifest['source']}/{STATE}/", f"{target}/{STATE}/"
        if kind == "sqlite":
            verdict = _sqlite_ok(staging / manifest["store_file"])
            if verdict != "ok":
                raise InvalidState(f"the backed-up store fails its integrity check: {verdict}; nothing was restored")
            _relocate(f"sqlite:///{staging / manifest['store_file']}", old_state, new_state)
        else:
            _pg_restore(staging / manifest["store_file"], str(store_url))
            (staging / manifest["store_file"]).unlink()
            _relocate(str(store_url), old_state, new_state)
        for entry in sorted(staging.iterdir()):
            os.rename(entry, target / entry.name)
        staging.rmdir()
    except BaseException:
        for entry in list(target.iterdir()) if target.exists() else ():
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        if created:
            shutil.rmtree(target, ignore_errors=True)
        raise
    if (target / KEY_FILE).exists():
        os.chmod(target / KEY_FILE, 0o600)
    files = [e for e in manifest["files"] if e["path"] != manifest["store_file"] or kind == "sqlite"]
    return BackupReport(target, len(files), sum(e["size"] for e in files), kind, int(manifest.get("runs", 0)))


def _relocate(url: str, old: str, new: str) -> None:
    """Paths the history recorded under the old state folder (logs, artifacts, executed notebooks) -> the new one.

    Without this, ``workbench logs`` in the restored workspace would read the
    old workspace's files, or nothing once that is gone.
    """
    import sqlalchemy as sa

    from . import features
    from .store import _driver_url
    from .store import schema as S

    if old == new:
        return
    features.load()
    engine = sa.create_engine(_driver_url(url))
    try:
        with engine.begin() as conn:
            present = set(sa.inspect(conn).get_table_names())
            for table in S.metadata.sorted_tables:
                if table.name not in present:
                    continue
                for col in table.columns:
                    if not isinstance(col.type, (sa.String, sa.Text)) or col.primary_key:
                        continue
                    head = sa.func.substr(col, 1, len(old))
                    conn.execute(table.update().where(head == old)
                                 .values({col.name: sa.literal(new) + sa.func.substr(col, len(old) + 1)}))
    finally:
        engine.dispose()


def _pg_restore(dump: Path, store_url: str) -> None:
    """Load a dump into an EMPTY PostgreSQL database, in one transaction (all of it or nothing)."""
    import sqlalchemy as sa

    from .store import _driver_url

    engine = sa.create_engine(_driver_url(store_url))
    try:
        with engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names()
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"cannot reach the target store: {str(getattr(exc, 'orig', exc)).splitlines()[0]}") from None
    finally:
        engine.dispose()
    if tables:
        raise UsageError(f"the target database is not empty (tables: {', '.join(sorted(tables)[:5])}); "
                         "restore only into an empty database")
    url, env = _libpq(_driver_url(store_url))
    _run(["pg_restore", "--no-owner", "--no-privileges", "--single-transaction", "--exit-on-error", "-d", url,
          str(dump)], "pg_restore", env)
