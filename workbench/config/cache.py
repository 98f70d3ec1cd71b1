"""A parse cache for the workspace's config, keyed by content: why ``status`` at 10,000 pipelines is not a parse.

Reading and checking 10,000 pipelines takes seconds; most commands (``status``,
``tick``, ``history``, the server's reloads) read files that have not changed
since the last command. The cache keeps the checked :class:`Config` of the
last load, pickled, under ``.workbench/cache/``, with a key that is a SHA-256
over

- every pipeline file's name and bytes (the bytes that are then parsed on a
  miss, so a file changed under a load can never be paired with a stale
  result: the key is computed from what was read, not from mtimes),
- the workbench's own code (size and mtime of every module of the package)
  and the Python version, so an upgrade or an edited extension misses,
- the config extensions registered in this process (sections, keys, task
  kinds, checks), which differ when a feature is not installed.

Only loads without errors are kept (errors are re-reported from the files each
time). A cache entry is a file written atomically (temp file, then rename),
readable by its owner only; one that is not owned by this user, is writable by
others, or does not unpickle is ignored and rewritten, because unpickling runs
code. ``WORKBENCH_CONFIG_CACHE=0`` turns the cache off; removing the folder is
always safe.
"""
from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import pickle
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from .model import Config

Source = tuple[str, bytes | None, str | None]  # (display name, bytes or None, why unreadable)
KEEP = 4  # entries kept: a few, so switching between two branches stays warm
_CODE_STAMP: str | None = None


def enabled() -> bool:
    return os.environ.get("WORKBENCH_CONFIG_CACHE", "1") != "0"


def _code_stamp() -> str:
    """Size and mtime of every module of the workbench package, and the Python version (once per process)."""
    global _CODE_STAMP
    if _CODE_STAMP is None:
        root = str(Path(__file__).resolve().parents[1])
        h = hashlib.sha256(sys.version.encode())
        found = []
        for folder, dirs, files in os.walk(root):  # os.walk + os.stat: a third of rglob's time, on every command
            dirs.sort()
            rel = os.path.relpath(folder, root)
            for name in sorted(files):
                if name.endswith(".py"):
                    st = os.stat(os.path.join(folder, name))
                    found.append(f"{rel}/{name}:{st.st_size}:{st.st_mtime_ns};")
        h.update("".join(sorted(found)).encode())
        _CODE_STAMP = h.hexdigest()
    return _CODE_STAMP


def _extensions_stamp() -> str:
    from . import jobs, loader, validate

    parts = [f"{name}={sorted(table)}" for name, table in (
        ("sections", loader.SECTIONS), ("pipeline_keys", loader.PIPELINE_KEYS),
        ("stage_keys", jobs.STAGE_KEYS), ("task_kinds", jobs.TASK_KINDS))]
    parts.append(f"checks={[getattr(c, '__qualname__', repr(c)) for c in validate.CONFIG_CHECKS]}")
    return ";".join(parts)


def key(sources: list[Source]) -> str:
    h = hashlib.sha256(_code_stamp().encode())
    h.update(_extensions_stamp().encode())
    for display, data, failure in sources:
        h.update(display.encode("utf-8", "surrogatepass") + b"\0")
        if data is None:
            h.update(b"\1" + (failure or "").encode("utf-8", "surrogatepass"))
        else:
            h.update(len(data).to_bytes(8, "big") + data)
    return h.hexdigest()


def _trusted(path: Path) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic GC off while a config or one of its projections is built or read back: hundreds of thousands
    of small objects and no cycles, which the collector would otherwise rescan many times (~15% of a load)."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


# -- kept files: the parse cache and the projections kept beside it under the same key ----------------------
# (the checked Config here; the board's view, workbench.service.boardview; the tick's scheduling inputs,
# workbench.materials.quiet; validate's answer, workbench.service.validate_cache). Each is
# ``.workbench/cache/KIND-KEY32.SUFFIX``, written atomically, the newest KEEP of a kind kept, and read only when
# owned by this user and not writable by others (unpickling runs code).

def entry_path(cache_dir: Path, kind: str, k: str, suffix: str = "pickle") -> Path:
    return cache_dir / f"{kind}-{k[:32]}.{suffix}"


def read_kept(entry: Path) -> bytes | None:
    """A kept file's bytes, or None when it is missing or not to be trusted."""
    if not _trusted(entry):
        return None
    try:
        return entry.read_bytes()
    except OSError:
        return None


def unpickle_kept(entry: Path) -> Any:
    """A kept pickle's object, or None when it is missing, untrusted, truncated or of a class that changed."""
    data = read_kept(entry)
    if data is None:
        return None
    with gc_paused():
        try:
            return pickle.loads(data)
        except Exception:  # rebuilt by the caller and overwritten
            return None


def write_kept(entry: Path, data: Any) -> None:
    """Keep ``data`` (bytes, or an object to pickle) at ``entry``, atomically; older entries of its kind beyond
    KEEP go. Failing to write (a read-only workspace, an unpicklable extension value) is not an error: every
    kept file is only a shortcut."""
    kind, suffix = entry.name.split("-", 1)[0], entry.name.rsplit(".", 1)[-1]
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        if not isinstance(data, bytes):
            with gc_paused():
                data = pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=f".{kind}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, entry)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        old = sorted(entry.parent.glob(f"{kind}-*.{suffix}"), key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in old[KEEP:]:
            stale.unlink(missing_ok=True)
    except (OSError, pickle.PicklingError, TypeError, AttributeError):
        pass


def cached_load(cache_dir: Path, sources: list[Source], load: Callable[[list[Source]], Config]) -> Config:
    """``load(sources)``, or the result a previous load of the same bytes by the same code kept."""
    if not enabled():
        return load(sources)
    entry = entry_path(cache_dir, "config", key(sources))
    found = unpickle_kept(entry)
    if isinstance(found, Config):
        return found
    config = load(sources)  # raises ConfigError: nothing is kept
    write_kept(entry, config)
    return config
