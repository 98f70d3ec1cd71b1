"""A workspace: pipeline files plus the ``.workbench/`` state folder.

The workspace is the unit a release manager points the CLI, a notebook or a
cron job at; everything the workbench writes lives under its state folder
(store, logs, job folders, artifacts) so it can be backed up or thrown away
as one thing.
"""
from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:
    from .config.model import Config
    from .config import Source
    from .engine import Engine
    from .settings import Settings
    from .store import Store
    from .store.frames import Frames

STATE_DIR = ".workbench"
FREEZE_FROM = 1000  # pipelines: a config this large is moved out of the cyclic GC's sight once loaded


def _settled(config: Config) -> Config:
    """``config``, after ``gc.freeze()`` when it is large: its millions of objects hold no cycles and live as
    long as the workspace, yet every full collection walked them all (over a second of a 10,000-pipeline
    server's board read, benchmarks/README.md issue 17). Frozen objects are still freed by reference count
    when the config is replaced; only cyclic garbage that exists at that moment stays uncollected."""
    if len(config.pipelines) >= FREEZE_FROM:
        import gc

        gc.freeze()
    return config


class Workspace:
    def __init__(self, root: Path, *, store_url: str | None = None) -> None:
        self.root = root
        self.state = root / STATE_DIR
        self._store_url = store_url or os.environ.get("WORKBENCH_STORE_URL")

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, *, store_url: str | None = None) -> "Workspace":
        """``path``, else ``$WORKBENCH_WORKSPACE``, else the current folder."""
        chosen = path or os.environ.get("WORKBENCH_WORKSPACE") or os.getcwd()
        root = Path(chosen).expanduser().resolve()
        if not root.is_dir():
            raise UsageError(f"workspace {root} is not a folder")
        return cls(root, store_url=store_url)

    # -- paths ---------------------------------------------------------------
    @property
    def pipelines_dir(self) -> Path:
        return self.root / "pipelines"

    @property
    def logs_dir(self) -> Path:
        return self.state / "logs"

    @property
    def work_dir(self) -> Path:
        return self.state / "work"

    @property
    def artifacts_url(self) -> str:
        return os.environ.get("WORKBENCH_ARTIFACTS_URL") or self.settings.artifacts_url or str(self.state / "artifacts")

    # -- loaded things -------------------------------------------------------
    @cached_property
    def config(self) -> Config:
        """The pipelines as code; raises ConfigError listing every problem."""
        return self._load_config()

    def config_of(self, sources: "list[Source]") -> Config:
        """``config``, loaded from these bytes of the pipeline files (as :func:`workspace_sources` read them):
        what keys something on those bytes (the validate answer) gets the config of exactly them."""
        self.__dict__["config"] = config = self._load_config(sources)
        return config

    def _load_config(self, sources: "list[Source] | None" = None) -> Config:
        from . import features

        features.load()
        if self.settings.config_repos:  # plus each config repository at its last good revision
            from .configrepos.compose import workspace_config

            return _settled(workspace_config(self))
        from .config import load_workspace_config

        return _settled(load_workspace_config(self.root, cache_dir=self.state / "cache", sources=sources))

    def sources_key(self) -> str | None:
        """The parse cache's key of the pipeline files as they are now, which the projections kept beside it
        (the board's view, the tick's inputs) are kept under; None when the cache is off or a file is missing
        or unreadable (the full load then reports it)."""
        from . import features
        from .config import cache, workspace_sources

        features.load()  # the key covers the config extensions the features register, as the Config's load sees
        if not cache.enabled():
            return None
        sources = workspace_sources(self.root)
        if not sources or any(data is None for _, data, _ in sources):
            return None
        return cache.key(sources)

    def reload(self) -> Config:
        self.__dict__.pop("config", None)
        return self.config

    @cached_property
    def settings(self) -> "Settings":
        """``workbench.yaml`` at the root (optional): executor and store of this installation."""
        from .settings import load_settings

        return load_settings(self.root)

    @cached_property
    def store(self) -> "Store":
        from .store import Store

        # explicit argument > $WORKBENCH_STORE_URL > workbench.yaml > .workbench/store.db
        url = self._store_url or self.settings.store_url or str(self.state / "store.db")
        return Store.open(url)

    @property
    def frames(self) -> "Frames":
        """The history as pandas DataFrames: ``pipeline_runs``, ``stage_runs``, ``job_runs``."""
        return self.store.frames

    def engine(self, **options: Any) -> "Engine":
        from .engine import Engine

        return Engine(self, **options)

    def run(self, pipeline: str, **options: Any) -> Any:
        """Trigger ``pipeline`` and drive it here until it finishes or waits for a person."""
        with self.engine() as engine:
            return engine.run(pipeline, **options)

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()
            del self.__dict__["store"]

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"
