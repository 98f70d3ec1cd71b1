"""Pipelines as code: GoCD YAML (and JSON) files into a checked, immutable :class:`Config`.

``load_config`` reads every file, then checks references across all of them,
and raises one :class:`~workbench.errors.ConfigError` listing *every* error
as ``FILE:LINE:COL: message`` (sorted), so a user fixes a config in one pass
instead of one error per run.  Nothing a file contains, however broken,
escapes as another exception.  Warnings (GoCD keys the workbench ignores,
plain-text passwords, ...) come back in ``Config.warnings``.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Iterable, Mapping

from ..errors import ConfigError, Problem
from .context import ConfigOrigin, Ctx
from .loader import (FileParts, parse_file, register_pipeline_key, register_section, register_stage_key,
                     register_task_kind)
from .model import (Approval, Artifact, Config, DependencyMaterial, Environment, ExecTask, FetchTask, GenericTask,
                    GitMaterial, Job, Loc, Material, NotebookTask, Pipeline, ScriptTask, Stage, Task, Timer, Traffic)
from .validate import assemble, register_config_check
from .yamlnodes import compose, decode

# *.gocd.yaml is a *.yaml; the JSON plugin's files are named by its patterns (other *.json files are not config)
PIPELINE_PATTERNS = ("*.yaml", "*.yml", "*.gocd.json", "*.gopipeline.json", "*.goenvironment.json")
JSON_SUFFIXES = (".gocd.json", ".gopipeline.json", ".goenvironment.json")


def is_json_config(name: str) -> bool:
    """Whether a file is read as GoCD's JSON config plugin format (by its name, as GoCD's plugins choose)."""
    return name.lower().endswith(JSON_SUFFIXES)


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
    given = [Path(p) for p in paths]
    return _load_kept(_read(given, _displays(given, base) if base is not None else map(str, given)), cache_dir)


def _read(paths: Iterable[Path], displays: Iterable[str]) -> "list[Source]":
    """Each file's bytes under its display name, or why it could not be read (reported at ``NAME:1:1``)."""
    out: list[Source] = []
    for path, display in zip(paths, displays):
        try:
            out.append((display, path.read_bytes(), None))
        except OSError as exc:
            out.append((display, None, f"cannot read the file: {exc.strerror or exc}"))
    return out


def _load_kept(sources: "list[Source]", cache_dir: Path | None) -> Config:
    """``_load(sources)``, through the parse cache in ``cache_dir`` when given."""
    if cache_dir is not None:
        from .cache import cached_load

        return cached_load(cache_dir, sources, _load)
    return _load(sources)


_SUFFIXES = tuple(p[1:] for p in PIPELINE_PATTERNS)  # "*.yaml" -> ".yaml": each pattern is a star and a suffix


def pipeline_files(workspace_dir: Path) -> list[Path]:
    """``pipelines/*.yaml``, ``*.yml`` and the JSON plugin's files of a workspace in name order (dot files skipped).

    One directory listing (a glob per pattern took 13-30 ms for 200 files, on every command).
    """
    folder = Path(workspace_dir) / "pipelines"
    try:
        with os.scandir(folder) as entries:
            names = [e.name for e in entries if e.name.endswith(_SUFFIXES) and not e.name.startswith(".") and e.is_file()]
    except (FileNotFoundError, NotADirectoryError, PermissionError):  # as the globs were: no files
        return []
    return [folder / name for name in sorted(names)]


def _displays(paths: list[Path], base: Path) -> list[str]:
    """``_display`` of many paths, resolving each folder once: a file that is not a symlink resolves to its
    resolved folder plus its name, so only symlinks need their own ``resolve`` (the same names, 200x fewer
    system calls)."""
    try:
        root = base.resolve()
    except OSError:
        return [str(p) for p in paths]
    folders: dict[Path, Path] = {}
    out = []
    for path in paths:
        try:
            if path.is_symlink():
                resolved = path.resolve()
            else:
                parent = folders.get(path.parent)
                if parent is None:
                    parent = folders[path.parent] = path.parent.resolve()
                resolved = parent / path.name
            out.append(resolved.relative_to(root).as_posix())
        except (ValueError, OSError):
            out.append(str(path))
    return out


def load_workspace_config(workspace_dir: Path, *, cache_dir: Path | None = None,
                          sources: "list[Source] | None" = None) -> Config:
    """The config of a workspace: its :func:`pipeline_files` in name order (``cache_dir``: the parse cache).

    ``sources``: the files as :func:`workspace_sources` already read them, so a caller that keyed
    something on those bytes gets the config of exactly those bytes.
    """
    sources = workspace_sources(workspace_dir) if sources is None else list(sources)
    if sources:
        return _load_kept(sources, cache_dir)
    warning = Problem("pipelines", 1, 1, "no pipeline files (*.yaml, *.yml, *.gocd.json, *.gopipeline.json, "
                                         "*.goenvironment.json) in the pipelines folder", "warning")
    return Config(warnings=(warning,))


def load_texts(texts: dict[str, str]) -> Config:
    """Load in-memory files (name -> YAML or JSON text, told apart by the name as on disk); for tests and linters."""
    return _load([(name, text.encode("utf-8", "surrogatepass"), None) for name, text in texts.items()])


Source = tuple[str, "bytes | None", "str | None"]  # (display name, content or None, why it could not be read)
LoadCheck = Callable[[list[FileParts], Config, Ctx], None]


def workspace_sources(workspace_dir: Path) -> list[Source]:
    """The workspace's pipeline files as sources for :func:`load_sources` (names relative to the workspace)."""
    files = pipeline_files(workspace_dir)
    return _read(files, _displays(files, Path(workspace_dir)))


def load_sources(sources: list[Source], check: LoadCheck | None = None,
                 origins: Mapping[str, ConfigOrigin] | None = None) -> Config:
    """Load files given as bytes (from anywhere: a git revision, a store) together, like :func:`load_config`.

    Each file goes through the same per-file parse as a workspace file.
    ``check(parts, config, ctx)`` may report more problems (config-repo rules)
    before the errors are collected, so they come out sorted with the rest.
    ``origins`` maps a display-name prefix to the config repository its files
    come from (for GoCD's ``type: configrepo`` material).
    """
    return _load(sources, check, origins)


def _load(sources: list[tuple[str, bytes | None, str | None]], check: LoadCheck | None = None,
          origins: Mapping[str, ConfigOrigin] | None = None) -> Config:
    from .cache import gc_paused

    with gc_paused():  # many small objects and no lasting cycles: ~15% of a 200-pipeline config's load
        return _load_all(sources, check, origins)


def _load_all(sources: list[tuple[str, bytes | None, str | None]], check: LoadCheck | None = None,
              origins: Mapping[str, ConfigOrigin] | None = None) -> Config:
    ctx = Ctx()
    parts: list[FileParts] = []
    for display, data, failure in sources:
        if data is None:
            ctx.error(Loc(display, 1, 1), failure or "cannot read the file")
            continue
        ctx.origin = next((o for prefix, o in (origins or {}).items() if display.startswith(prefix)), None)
        try:
            fp = read_source(display, data, ctx)
        except Exception as exc:  # a bug must not hide the user's other problems behind a traceback
            ctx.error(Loc(display, 1, 1), f"internal error while reading this file ({type(exc).__name__}: {exc}); "
                                          "please report it")
            continue
        if fp is not None:
            fp.origin = ctx.origin
            parts.append(fp)
    ctx.origin = None
    try:
        config = assemble(parts, ctx, tuple(display for display, _, _ in sources))
    except Exception as exc:
        ctx.error(Loc(sources[0][0] if sources else "<config>", 1, 1),
                  f"internal error while checking the config ({type(exc).__name__}: {exc}); please report it")
        config = Config()
    if check is not None:
        check(parts, config, ctx)
    problems = sorted(set(ctx.problems), key=lambda p: (p.file, p.line, p.col, p.message))
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise ConfigError(errors)
    return dataclasses.replace(config, warnings=tuple(p for p in problems if p.severity != "error"))


def read_source(display: str, data: bytes, ctx: Ctx) -> FileParts | None:
    """One config file's pipelines, templates and environments: THE entry point for every folder of files.

    The workspace's ``pipelines/`` and config repositories both read files
    through here, so a file loads (and fails, at ``FILE:LINE:COL``) the same
    wherever it lives.  ``display`` is the name used in messages; its ending
    picks the format (:func:`is_json_config`, else YAML).  Problems go to
    ``ctx``; None means nothing usable was read.  Pipelines stay as nodes
    until :func:`~workbench.config.validate.assemble` has every file.
    """
    text, problems = decode(data, display)
    ctx.problems.extend(problems)
    if text is None:
        return None
    json_format = is_json_config(display)
    if json_format:  # GoCD's JSON plugin format: its modules are imported only for such a file
        from .gocdjson import reshape
        from .jsonnodes import compose_json

        node, problems = compose_json(text, display)
    else:
        node, problems = compose(text, display)
    ctx.problems.extend(problems)
    if node is None:
        if not problems:
            ctx.warn(Loc(display, 1, 1), "the file is empty")
        return None
    try:
        if json_format:
            node = reshape(node, ctx, display)
            if node is None:
                return None
        return parse_file(node, ctx, display)
    except RecursionError:
        ctx.error(Loc(display, 1, 1), "the file is nested too deeply to read")
        return None


__all__ = [
    "Approval", "Artifact", "Config", "ConfigError", "DependencyMaterial", "Environment", "ExecTask", "FetchTask",
    "GenericTask", "GitMaterial", "Job", "Loc", "Material", "NotebookTask", "PIPELINE_PATTERNS", "Pipeline", "Problem",
    "ScriptTask", "Stage", "Task", "Timer", "Traffic", "is_json_config", "load_config", "load_sources", "load_texts",
    "load_workspace_config", "read_source", "register_config_check", "register_pipeline_key", "register_section",
    "register_stage_key", "register_task_kind", "workspace_sources",
]
