"""GoCD's material filters (format_version 10 names ``includes`` / ``ignore``).

A change set triggers a pipeline unless every file it touches is ignored, or,
with ``includes``, unless none of its files is included. Patterns are Ant
globs as in GoCD (``*.md`` is top level only, ``**/*.md`` anywhere,
``docs/**`` everything below docs); wcmatch implements them.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from wcmatch import glob

_FLAGS = glob.GLOBSTAR | glob.DOTGLOB


def _matches(path: str, patterns: Sequence[str]) -> bool:
    path = path.lstrip("/")
    return any(glob.globmatch(path, p.lstrip("/"), flags=_FLAGS) for p in patterns)


def file_counts(path: str, includes: Sequence[str], ignore: Sequence[str]) -> bool:
    """Does a change to this one file count?"""
    if includes and not _matches(path, includes):
        return False
    return not (ignore and _matches(path, ignore))


def triggers(files: Iterable[str], includes: Sequence[str] = (), ignore: Sequence[str] = ()) -> bool:
    """Does a change set touching ``files`` trigger? Without filters, any change set does."""
    if not includes and not ignore:
        return True
    return any(file_counts(f, includes, ignore) for f in files)


__all__ = ["triggers", "file_counts"]
