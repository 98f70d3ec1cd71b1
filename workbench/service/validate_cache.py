"""The answer of ``workbench validate`` kept by content: why a validate with no file changed is not a load.

At 10,000 pipelines even reading the checked :class:`Config` back from the
parse cache (:mod:`workbench.config.cache`, an 18 MB pickle) takes seconds,
and importing every feature so that its config extensions are registered
costs more than the whole answer is allowed to. ``validate`` only prints
``ok``, two counts and the warnings, so that answer is what is kept here, in
``.workbench/cache/validate-*.json``, under a SHA-256 over

- every pipeline file's name and bytes (read now: a file changed since the
  last run, even to the same size within the same mtime second, misses),
- the workbench's own code (size and mtime of every module) and the Python
  version, the config extensions registered in this process so far and
  whether the features were already loaded (they register more), and the
  names of the ``VALIDATE_CHECKS``,
- ``workbench.yaml``'s bytes (it is also parsed every time, so its own errors
  are reported fresh),

plus, checked after the key matches, the files the checks read (for the
notebook check: each notebook a task names, by its bytes, or its absence).
A check that cannot say what it reads (no ``inputs`` attribute) turns the
cache off for that validate. Only an ``ok`` answer is kept: a load that has
an error raises before anything is written, so an error is never served from
here. Entries are JSON (no code runs on reading one), written atomically and
read only when owned by this user and not writable by others; a workspace
with ``config_repos:`` (whose config depends on the store) is not cached.
``WORKBENCH_CONFIG_CACHE=0`` turns this off with the parse cache.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Iterable

from ..config import cache as parse_cache
from ..config import Source, workspace_sources

Check = Callable[[Any, Any], list[Any]]


def _file_state(path: Path) -> str | None:
    """A file's SHA-256, or None when there is no readable file there (what the check would see)."""
    try:
        if not path.is_file():
            return None
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def key(root: Path, checks: Iterable[Check], sources: list[Source]) -> str:
    from .. import features
    from ..settings import FILE_NAME

    h = hashlib.sha256(parse_cache.key(sources).encode())
    h.update(f";features={getattr(features, '_loaded', False)}".encode())
    h.update((";checks=" + ",".join(getattr(c, "__module__", "?") + "." + getattr(c, "__qualname__", repr(c))
                                     for c in checks)).encode())
    settings = root / FILE_NAME
    h.update(b";settings=" + (_file_state(settings) or "none").encode())
    return h.hexdigest()


def lookup(cache_dir: Path, root: Path, k: str) -> dict[str, Any] | None:
    """The kept answer for key ``k`` if every file the checks read is as it was, else None."""
    data = parse_cache.read_kept(parse_cache.entry_path(cache_dir, "validate", k, "json"))
    if data is None:
        return None
    try:
        found = json.loads(data)
        if found.get("key") != k or not isinstance(found.get("result"), dict) or found["result"].get("ok") is not True:
            return None
        for rel, state in found["inputs"]:
            if _file_state(root / rel) != state:
                return None
        return found["result"]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def inputs(checks: Iterable[Check], config: Any, root: Path) -> list[str] | None:
    """Every file the checks read (relative to the workspace, or absolute), None if a check cannot tell."""
    out: list[str] = []
    for check in checks:
        reads = getattr(check, "inputs", None)
        if reads is None:
            return None
        out.extend(str(p) for p in reads(config, root))
    return sorted(set(out))


def store(cache_dir: Path, k: str, result: dict[str, Any], states: list[list[Any]]) -> None:
    """Keep an ``ok`` answer; a read-only workspace just goes without."""
    if result.get("ok") is not True:
        return
    body = json.dumps({"key": k, "result": result, "inputs": states}).encode()
    parse_cache.write_kept(parse_cache.entry_path(cache_dir, "validate", k, "json"), body)


def cached_validate(ws: Any, checks: list[Check], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``compute()`` (which reads ``ws.config``), or the answer it gave for the same bytes and code.

    On a miss the config is loaded from the very bytes the key was computed
    over (not read again), as ``Workspace.config`` would load it, so a file
    changed meanwhile cannot pair its new answer with the old bytes' key.
    """
    if not parse_cache.enabled() or ws.settings.config_repos or "config" in ws.__dict__:
        return compute()  # off; config from the store; or a config already in memory is cheaper than a key
    root, cache_dir = Path(ws.root), Path(ws.state) / "cache"
    sources = workspace_sources(root)
    k = key(root, checks, sources)  # before the features load: they register extensions (part of the key)
    found = lookup(cache_dir, root, k)
    if found is not None:
        return found
    config = ws.config_of(sources)  # Workspace.config, of the very bytes keyed above
    read = inputs(checks, config, root)
    states = None if read is None else [[rel, _file_state(root / rel)] for rel in read]  # before the checks read them
    result = compute()  # a ConfigError propagates: nothing is kept
    if states is not None:
        store(cache_dir, k, result, states)
    return result
