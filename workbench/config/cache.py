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

import gc
import hashlib
import os
import pickle
import stat
import sys
import tempfile
from pathlib import Path
from typing import Callable

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


def cached_load(cache_dir: Path, sources: list[Source], load: Callable[[list[Source]], Config]) -> Config:
    """``load(sources)``, or the result a previous load of the same bytes by the same code kept."""
    if not enabled():
        return load(sources)
    k = key(sources)
    entry = cache_dir / f"config-{k[:32]}.pickle"
    if _trusted(entry):
        paused = gc.isenabled()
        gc.disable()  # hundreds of thousands of small objects, no cycles: the GC would rescan them many times
        try:
            with open(entry, "rb") as f:
                found = pickle.load(f)
            if isinstance(found, Config):
                return found
        except Exception:  # truncated, or from a class that changed shape: parse again and overwrite
            pass
        finally:
            if paused:
                gc.enable()
    config = load(sources)  # raises ConfigError: nothing is kept
    _store(cache_dir, entry, config)
    return config


def _store(cache_dir: Path, entry: Path, config: Config) -> None:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".config-", suffix=".tmp")
        paused = gc.isenabled()
        gc.disable()
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump(config, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, entry)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        finally:
            if paused:
                gc.enable()
        old = sorted(cache_dir.glob("config-*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in old[KEEP:]:
            stale.unlink(missing_ok=True)
    except (OSError, pickle.PicklingError, TypeError, AttributeError):
        pass  # a read-only workspace or an unpicklable extension value: the cache is only a shortcut
