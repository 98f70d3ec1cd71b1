"""Writing an import: checked first, then all at once, never half.

Before anything is written, the converted pipeline files are loaded with the
files already in the target's ``pipelines/`` folder (those not being
replaced), exactly as ``workbench validate`` will load them: any error (a
pipeline name already defined by an existing file, ...) refuses the import.
Existing files are refused unless ``force``. The files are then written to a
temporary folder inside the target (same file system) and moved into place
with ``os.replace``: when ``pipelines/`` does not exist yet the whole folder
is renamed in one step; otherwise each file is, and a failure part-way puts
back what was there before.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ...errors import ConfigError, ImportRefused
from .convert import Result


def check(result: Result, out: Path, *, force: bool) -> None:
    """Refuse (ImportRefused) when files would be overwritten without ``force`` or the result would not validate."""
    from ... import features
    from ...config import is_json_config, load_texts

    features.load()  # the sections and task kinds of the workspace's own files (routes:, rollout:, ...)
    existing = [rel for rel in result.files if (out / rel).exists()]
    if existing and not force:
        raise ImportRefused(f"{out}: would overwrite {', '.join(sorted(existing))}; nothing was written "
                            "(pass --force to replace them, or --out to write elsewhere)")
    texts = {rel: text for rel, text in result.files.items() if rel.startswith("pipelines/")}
    folder = out / "pipelines"
    if folder.is_dir():
        for f in sorted(folder.iterdir()):
            rel = f"pipelines/{f.name}"
            is_config = f.suffix in (".yaml", ".yml") or is_json_config(f.name)  # what the workspace loads
            if f.is_file() and is_config and not f.name.startswith(".") and rel not in texts:
                try:
                    texts[rel] = f.read_text("utf-8", errors="replace")
                except OSError:
                    continue
    try:
        load_texts(texts)
    except ConfigError as exc:
        shown = "\n".join(str(p) for p in exc.problems[:20])
        more = f"\n... and {len(exc.problems) - 20} more" if len(exc.problems) > 20 else ""
        raise ImportRefused(f"the converted files would not validate in {out}, so nothing was written:\n"
                            f"{shown}{more}") from None


def write(result: Result, out: Path, *, force: bool = False) -> list[Path]:
    """Check, then write every file of ``result`` under ``out``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    check(result, out, force=force)
    staging = Path(tempfile.mkdtemp(prefix=".import-gocd-", dir=out))
    moved: list[tuple[Path, Path | None]] = []  # (target, backup of what was there)
    try:
        for rel, text in result.files.items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        targets = [out / rel for rel in result.files]
        if not (out / "pipelines").exists() and (staging / "pipelines").is_dir():
            os.replace(staging / "pipelines", out / "pipelines")
            moved.append((out / "pipelines", None))
        for rel in result.files:
            source, target = staging / rel, out / rel
            if not source.exists():  # moved with its folder
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            backup = None
            if target.exists():
                backup = staging / ".backup" / rel
                backup.parent.mkdir(parents=True, exist_ok=True)
                os.replace(target, backup)
            os.replace(source, target)
            moved.append((target, backup))
        return targets
    except OSError as exc:
        for target, backup in reversed(moved):
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
            if backup is not None:
                os.replace(backup, target)
        raise ImportRefused(f"{out}: cannot write the converted files ({exc.strerror or exc}); nothing was "
                            "written") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
