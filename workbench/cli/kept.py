"""``workbench status``'s and ``history``'s printed answers, kept until anything they show could differ.

At 10,000 pipelines a fresh ``workbench status`` spent 1.5 s importing
SQLAlchemy and every feature, reading the store and rendering 10,000 rows,
to print what it had printed a second before: nothing had changed. So the
bytes it printed are kept in ``.workbench/cache/status-KEY.txt`` and printed
again when KEY is the same (``history`` likewise, ``history-KEY.txt``, its
pipeline and ``-n`` in the key). KEY (SHA-256) covers everything the answer is
made of or rendered with:

- the workbench's code and the Python version (the parse cache's code stamp:
  every module's size and mtime; the config extensions the features register
  are that code's, so they are covered too);
- every pipeline file's name and bytes (status; history shows the store
  alone), and ``workbench.yaml``'s bytes;
- the store: size, inode and mtime (ns) of ``store.db`` and its write-ahead log
  ``store.db-wal``. Every commit, by any process, writes one of them;
- the output: ``--format``, and for the table the terminal's width, colour
  system and whether it is a terminal, and the installed rich.

A file's mtime comes from a clock that ticks every few milliseconds, so a
commit in the same tick as the one before could leave the stamp unchanged:
an answer is only kept when the store was last written more than
``QUIET_SECONDS`` before its stamp was read, so any later commit gets a later
mtime. Only the default SQLite store is stamped this way; another store URL,
a release service (``$WORKBENCH_SERVER``), config repositories (their
pipelines come from other repositories' revisions) or
``WORKBENCH_CONFIG_CACHE=0`` compute every time. An entry is written
atomically and read only when owned by this user (``config.cache``).
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VERSION = 1  # of the key's recipe
QUIET_SECONDS = 1.0


@dataclass(frozen=True)
class Kept:
    """Where the answer for this key lives, the answer if it is there, and the console to render a new one for."""

    entry: Path
    text: str | None
    console: Any  # the real rich Console (table format), or None (json)
    keep: bool  # False: the store was written too recently to trust its stamp; compute and print, do not keep


def lookup(ws: Any, fmt: str, what: tuple[Any, ...] = ("status",), *, config: bool = True) -> Kept | None:
    """The kept answer of the command ``what`` (``("status",)``, ``("history", pipeline, limit)``) printed as
    ``fmt`` for ``ws`` as it is now; None where nothing is kept. ``config``: the answer shows the pipeline files."""
    from ..config import cache, workspace_sources

    if not cache.enabled() or ws._store_url or os.environ.get("WORKBENCH_SERVER"):
        return None
    settings = ws.settings
    if settings.store_url or settings.server.url or settings.config_repos:
        return None
    store = _store_stamp(ws.state / "store.db")
    if store is None:
        return None
    stamp, newest = store
    sources = workspace_sources(ws.root) if config else []
    if config and (not sources or any(data is None for _, data, _ in sources)):
        return None  # a missing or unreadable file: the full path reports it
    h = hashlib.sha256(f"{what!r}:{VERSION}:{cache._code_stamp()}:{stamp}:{fmt}".encode())
    console = None
    if fmt == "table":
        console = _console()
        if console.is_jupyter or console.legacy_windows:
            return None
        import rich

        h.update(repr((console.width, console.color_system, console.is_terminal, console.no_color,
                       console.encoding, os.stat(rich.__file__).st_mtime_ns)).encode())
    try:
        h.update(b"settings\0" + (ws.root / "workbench.yaml").read_bytes())
    except FileNotFoundError:
        h.update(b"no settings\0")
    for display, data, _ in sources:
        h.update(display.encode("utf-8", "surrogatepass") + b"\0" + len(data).to_bytes(8, "big") + data)
    entry = cache.entry_path(ws.state / "cache", str(what[0]), h.hexdigest(), "txt")
    data = cache.read_kept(entry)
    text = None
    if data is not None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    return Kept(entry, text, console, keep=time.time() - newest > QUIET_SECONDS)


def keep(kept: Kept, text: str) -> None:
    """Keep ``text`` as the answer of ``kept``'s key (a failure to write is not an error: it is a shortcut)."""
    if kept.keep:
        from ..config.cache import write_kept

        write_kept(kept.entry, text.encode("utf-8"))


def capture_console(real: Any) -> tuple[Any, Any]:
    """A console rendering exactly as ``real`` would, into a buffer: (console, buffer)."""
    import io

    from rich.console import Console

    buf = io.StringIO()
    return Console(file=buf, width=real.width, color_system=real.color_system, force_terminal=real.is_terminal,
                   no_color=real.no_color, force_jupyter=False, legacy_windows=False), buf


def _console() -> Any:
    from rich.console import Console

    from ..reporting import _term_width

    return Console(width=max(100, _term_width()))  # as print_status makes it


def _store_stamp(db: Path) -> tuple[str, float] | None:
    """(stamp of the SQLite file and its log, the newest of their mtimes); None when there is no store yet."""
    parts, newest = [], 0.0
    for path in (db, db.with_name(db.name + "-wal")):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if path is db:
                return None
            parts.append("none")
            continue
        parts.append(f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}")
        newest = max(newest, st.st_mtime_ns / 1e9)
    return ",".join(parts), newest


def write_out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
