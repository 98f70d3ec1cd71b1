"""What the board needs of the config (names, groups, stage names), kept beside the parse cache.

``workbench status`` at 10,000 pipelines spent over a second unpickling the
whole checked :class:`~workbench.config.model.Config` (18 MB) from the parse
cache (:mod:`workbench.config.cache`) to read three fields of each pipeline.
:class:`BoardView` is those fields alone (~0.5 MB pickled), written under
``.workbench/cache/board-KEY.pickle`` where KEY is the parse cache's own key
(SHA-256 over every pipeline file's name and bytes, the workbench's code and
the registered config extensions): a changed, added or removed file, another
workbench version or another set of extensions gives another key, so a stale
view is never read; and it is only written from a config that loaded without
errors, so a broken file still reports its errors (the full load runs then).

It is used where nothing else needs the full config: when the workspace's
config is already loaded (the server, a notebook) the view comes from it;
with config repositories (``workbench.yaml``'s ``config_repos``) it always
does, because their pipelines do not come from the workspace's files.
``WORKBENCH_CONFIG_CACHE=0`` turns this off with the parse cache.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

VERSION = 1  # of the pickled shape below


@dataclass(frozen=True)
class BoardView:
    """``pipelines``: (name, group, stage names) in config order; ``origins``: pipeline → config repository."""

    pipelines: tuple[tuple[str, str, tuple[str, ...]], ...]
    origins: Mapping[str, str] = field(default_factory=dict)


_last: list[tuple[Any, BoardView]] = []  # (config, its view): a Config is not weak-referenceable (slots)


def view_of(config: Any) -> BoardView:
    """The view of a loaded config (the last one kept: the server asks for it on every board miss)."""
    kept = _last[-1] if _last else None
    if kept is not None and kept[0] is config:
        return kept[1]
    view = BoardView(tuple((name, p.group, tuple(st.name for st in p.stages)) for name, p in config.pipelines.items()),
                     dict(config.extensions.get("config_repo_origins") or {}))
    _last[:] = [(config, view)]
    return view


def board_view(ws: Any) -> tuple[BoardView, Any]:
    """The workspace's view and the token a read cache keys on (the loaded config when there is one).

    Raises the config's errors like ``ws.config`` (the full load runs whenever no view is kept).
    """
    from ..config import cache as parse_cache

    config = ws.__dict__.get("config")
    if config is not None or not parse_cache.enabled() or ws.settings.config_repos:
        config = ws.config
        return view_of(config), config
    key = ws.sources_key()
    if key is None:  # no files, or one unreadable: the full load says so
        config = ws.config
        return view_of(config), config
    entry = parse_cache.entry_path(ws.state / "cache", "board", key)
    kept = ws.__dict__.get("_board_view")
    if kept is not None and kept[0] == entry:  # the same files as this workspace's last read: the same token
        return kept[1], kept[1]
    view = _read(entry)
    if view is not None:
        ws.__dict__["_board_view"] = (entry, view)
        return view, view
    config = ws.config  # errors are raised here, and nothing is written
    view = view_of(config)
    _write(entry, view)
    return view, config


def _read(entry: Path) -> BoardView | None:
    from ..config.cache import unpickle_kept

    found = unpickle_kept(entry)  # only our own file, not writable by others: unpickling runs code
    if isinstance(found, tuple) and len(found) == 3 and found[0] == VERSION:
        return BoardView(found[1], found[2])
    return None  # missing, untrusted, truncated or another shape: rebuilt from the config and overwritten


def _write(entry: Path, view: BoardView) -> None:
    from ..config.cache import write_kept

    write_kept(entry, (VERSION, view.pipelines, dict(view.origins)))  # a read-only workspace goes without
