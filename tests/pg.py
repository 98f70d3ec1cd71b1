"""A real, throw-away PostgreSQL server for the store tests.

Debian's server binaries (``initdb``, ``pg_ctl``; package ``postgresql``,
installed by scripts/system-deps.sh) make a cluster in a temporary folder,
listening on a free loopback port only, with ``fsync`` off because nothing in
it outlives the session. ``initdb`` refuses to run as root, so as root the
cluster belongs to the ``postgres`` system user (or ``nobody``). Each test gets
its own database, so tests never see each other's rows.

Missing binaries or a server that does not start are a skip locally and a
failure under ``CI=true`` (``conftest.require_service``).
"""
from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

USER = "wb"  # the database superuser created by initdb


def _bin_dir() -> Path | None:
    """The folder holding initdb and pg_ctl: $PATH first, then Debian's versioned folders."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(d, "initdb").exists() and Path(d, "pg_ctl").exists():
            return Path(d)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> str | None:
    """The system user to run the server as when we are root (initdb refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return None


@dataclass
class PgServer:
    """A running throw-away cluster; :meth:`create_database` gives each test a fresh database."""

    root: Path
    port: int
    bin_dir: Path
    run_as: str | None
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        import psycopg

        name = f"wbtest{next(self._names)}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user=USER, dbname="postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def _cmd(self, *argv: str) -> list[str]:
        cmd = [str(self.bin_dir / argv[0]), *argv[1:]]
        return ["runuser", "-u", self.run_as, "--", *cmd] if self.run_as else cmd

    def start(self) -> None:
        data = self.root / "data"
        subprocess.run(
            self._cmd("initdb", "-D", str(data), "-U", USER, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"),
            check=True, capture_output=True, text=True, timeout=120,
        )
        opts = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        subprocess.run(
            self._cmd("pg_ctl", "-D", str(data), "-l", str(self.root / "server.log"), "-w", "-t", "60", "-o", opts,
                      "start"),
            check=True, capture_output=True, text=True, timeout=90,
        )

    def stop(self) -> None:
        subprocess.run(self._cmd("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop"),
                       capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


def start_server() -> tuple[PgServer | None, str]:
    """Start a cluster; (server, "") or (None, why not)."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        return None, "PostgreSQL server binaries (initdb, pg_ctl: Debian package postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return None, "psycopg (pip install 'psycopg[binary]')"
    run_as = _run_as()
    if os.geteuid() == 0 and run_as is None:
        return None, "a non-root user to run PostgreSQL as"
    root = Path(tempfile.mkdtemp(prefix="wb-pg-"))
    if run_as:
        entry = pwd.getpwnam(run_as)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    server = PgServer(root, _free_port(), bin_dir, run_as)
    try:
        server.start()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", "") or ""
        log = root / "server.log"
        if log.exists():
            detail += log.read_text()[-2000:]
        server.stop()
        return None, f"a PostgreSQL server (start failed: {exc}; {detail.strip()[-500:]})"
    return server, ""


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One throw-away PostgreSQL cluster for the whole session, removed at the end."""
    from conftest import require_service

    server, why = start_server()
    require_service(server is not None, why)
    assert server is not None
    try:
        yield server
    finally:
        server.stop()
