"""Pipelines as code: GoCD YAML files into a checked, immutable :class:`Config`.

``load_config`` reads every file, then checks references across all of them,
and raises one :class:`~workbench.errors.ConfigError` listing *every* error
as ``FILE:LINE:COL: message`` (sorted), so a user fixes a config in one pass
instead of one error per run.  Nothing a file contains, however broken,
escapes as another exception.  Warnings (GoCD keys the workbench ignores,
plain-text passwords, ...) come back in ``Config.warnings``.
"""
from __future__ import annotations

import dataclasses
import gc
from pathlib import Path
from typing import Iterable

from ..errors import ConfigError, Problem
from .context import Ctx
from .loader import (FileParts, parse_file, register_pipeline_key, register_section, register_stage_key,
                     register_task_kind)
from .model import (Approval, Artifact, Config, DependencyMaterial, Environment, ExecTask, FetchTask, GenericTask,
                    GitMaterial, Job, Loc, Material, NotebookTask, Pipeline, ScriptTask, Stage, Task, Timer, Traffic)
from .validate import assemble, register_config_check
from .yamlnodes import compose, decode

PIPELINE_PATTERNS = ("*.yaml", "*.yml")  # *.gocd.yaml is a *.yaml


def _display(path: Path, base: Path | None) -> str:
    if base is not None:
        try:
            return path.resolve().relative_to(base.resolve()).as_posix()
        except (ValueError, OSError):
            pass
    return str(path)


def load_config(paths: Iterable[Path] | Iterable[str], *, base: Path | None = None,
                cache_dir: Path | None = None) -> Config:
    """Load and check pipeline files together; file names in problems are relative to ``base``.

    With ``cache_dir``, a load of the same bytes by the same code is read back from there (:mod:`.cache`).
    """
    sources: list[tuple[str, bytes | None, str | None]] = []
    for p in paths:
        path = Path(p)
        display = _display(path, base)
        try:
            sources.append((display, path.read_bytes(), None))
        except OSError as exc:
            sources.append((display, None, f"cannot read the file: {exc.strerror or exc}"))
    if cache_dir is not None:
        from .cache import cached_load

        return cached_load(cache_dir, sources, _load)
    return _load(sources)


def pipeline_files(workspace_dir: Path) -> list[Path]:
    """``pipelines/*.yaml`` and ``*.yml`` of a workspace in name order (dot files skipped)."""
    folder = Path(workspace_dir) / "pipelines"
    found = {f for pattern in PIPELINE_PATTERNS for f in folder.glob(pattern)} if folder.is_dir() else set()
    return sorted((f for f in found if not f.name.startswith(".") and f.is_file()), key=lambda f: f.name)


def load_workspace_config(workspace_dir: Path, *, cache_dir: Path | None = None) -> Config:
    """The config of a workspace: ``pipelines/*.yaml`` and ``*.yml`` in name order (dot files skipped)."""
    files = pipeline_files(workspace_dir)
    if not files:
        warning = Problem("pipelines", 1, 1, "no pipeline files (*.yaml, *.yml) in the pipelines folder", "warning")
        return Config(warnings=(warning,))
    return load_config(files, base=Path(workspace_dir), cache_dir=cache_dir)


def load_texts(texts: dict[str, str]) -> Config:
    """Load in-memory files (name -> YAML text); for tests and tools that lint unsaved text."""
    return _load([(name, text.encode("utf-8", "surrogatepass"), None) for name, text in texts.items()])


def _load(sources: list[tuple[str, bytes | None, str | None]]) -> Config:
    # Loading allocates many small objects and no lasting cycles: pausing the
    # cyclic GC meanwhile saves ~15% of the time of a 200-pipeline config.
    paused = gc.isenabled()
    gc.disable()
    try:
        return _load_all(sources)
    finally:
        if paused:
            gc.enable()


def _load_all(sources: list[tuple[str, bytes | None, str | None]]) -> Config:
    ctx = Ctx()
    parts: list[FileParts] = []
    for display, data, failure in sources:
        if data is None:
            ctx.error(Loc(display, 1, 1), failure or "cannot read the file")
            continue
        try:
            fp = _read(display, data, ctx)
        except Exception as exc:  # a bug must not hide the user's other problems behind a traceback
            ctx.error(Loc(display, 1, 1), f"internal error while reading this file ({type(exc).__name__}: {exc}); "
                                          "please report it")
            continue
        if fp is not None:
            parts.append(fp)
    try:
        config = assemble(parts, ctx, tuple(display for display, _, _ in sources))
    except Exception as exc:
        ctx.error(Loc(sources[0][0] if sources else "<config>", 1, 1),
                  f"internal error while checking the config ({type(exc).__name__}: {exc}); please report it")
        config = Config()
    problems = sorted(set(ctx.problems), key=lambda p: (p.file, p.line, p.col, p.message))
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise ConfigError(errors)
    return dataclasses.replace(config, warnings=tuple(p for p in problems if p.severity != "error"))


def _read(display: str, data: bytes, ctx: Ctx) -> FileParts | None:
    text, problems = decode(data, display)
    ctx.problems.extend(problems)
    if text is None:
        return None
    node, problems = compose(text, display)
    ctx.problems.extend(problems)
    if node is None:
        if not problems:
            ctx.warn(Loc(display, 1, 1), "the file is empty")
        return None
    try:
        return parse_file(node, ctx, display)
    except RecursionError:
        ctx.error(Loc(display, 1, 1), "the file is nested too deeply to read")
        return None


__all__ = [
    "Approval", "Artifact", "Config", "ConfigError", "DependencyMaterial", "Environment", "ExecTask", "FetchTask",
    "GenericTask", "GitMaterial", "Job", "Loc", "Material", "NotebookTask", "Pipeline", "Problem", "ScriptTask",
    "Stage", "Task", "Timer", "Traffic", "load_config", "load_texts", "load_workspace_config", "register_config_check",
    "register_pipeline_key", "register_section", "register_stage_key", "register_task_kind",
]
