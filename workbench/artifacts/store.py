"""The artifact store: one folder per job run, addressed by an fsspec URL.

GoCD keeps artifacts on the server under ``pipelines/NAME/COUNTER/STAGE/
STAGE_COUNTER/JOB``; we keep the same layout under the workspace's
``artifacts_url`` (``.workbench/artifacts`` by default), so that the store
can later move to shared storage (``s3://…``, ``memory://`` in tests) by
changing one URL.  Every path a user writes (artifact source, destination,
fetch source) is checked here: nothing may climb out of its folder.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from ..errors import ArtifactError

CHUNK = 1 << 20


def safe_relative(path: str, what: str) -> str:
    """``path`` as a clean relative POSIX path; refuses absolute paths and ``..``."""
    text = (path or "").replace("\\", "/").strip()
    if text in ("", "."):
        return ""
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise ArtifactError(f"{what} {path!r} must be a relative path (no leading '/')")
    parts = [p for p in PurePosixPath(text).parts if p not in ("", ".")]
    if ".." in parts:
        raise ArtifactError(f"{what} {path!r} climbs out of its folder with '..'; that is not allowed")
    return "/".join(parts)


def inside(base: Path, path: Path, what: str, original: str) -> Path:
    """``path`` resolved (symlinks too) and checked to stay under ``base``."""
    real_base = base.resolve()
    real = path.resolve()
    if real != real_base and real_base not in real.parents:
        raise ArtifactError(f"{what} {original!r} points outside the job's folder; that is not allowed")
    return real


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def job_prefix(pipeline: str, counter: int, stage: str, stage_counter: int, job: str) -> str:
    return "/".join(safe_relative(str(p), "artifact path part") for p in (pipeline, counter, stage, stage_counter, job))


class ArtifactStore:
    """A thin layer over an fsspec filesystem rooted at ``url``."""

    def __init__(self, url: str) -> None:
        self.url = str(url)

    @cached_property
    def _fs_root(self) -> tuple[Any, str]:
        import fsspec

        try:
            fs, root = fsspec.core.url_to_fs(self.url)
        except (ValueError, ImportError) as exc:
            raise ArtifactError(f"cannot open the artifact store {self.url!r}: {exc}") from None
        return fs, root.rstrip("/") or "/"

    @cached_property
    def _local_root(self) -> str | None:
        """The folder of a store given as a plain path or a ``file://`` URL; None for any other URL.

        Found without fsspec, whose import scans every installed package's
        entry points (~60 ms): a notebook job names its executed notebook's
        path in the store before its kernel is even used, and a cold
        ``workbench run`` would wait for that scan. Other URLs go to fsspec.
        """
        url = self.url
        if url.startswith("file://"):
            url = url[len("file://"):]
        elif "://" in url or "::" in url:
            return None
        return os.path.abspath(os.path.expanduser(url)).replace(os.sep, "/").rstrip("/") or "/"

    @property
    def fs(self) -> Any:
        return self._fs_root[0]

    @property
    def root(self) -> str:
        local = self._local_root
        return local if local is not None else self._fs_root[1]

    @property
    def is_local(self) -> bool:
        if self._local_root is not None:
            return True
        proto = self.fs.protocol
        return "file" in (proto if isinstance(proto, (tuple, list)) else (proto,))

    def full(self, rel: str) -> str:
        rel = safe_relative(rel, "artifact path")
        return posixpath.join(self.root, rel) if rel else self.root

    def local_path(self, rel: str) -> Path | None:
        """A real file-system path for ``rel`` when the store is a local folder."""
        return Path(self.full(rel)) if self.is_local else None

    def url_of(self, rel: str) -> str:
        full = self.full(rel)
        return full if self.is_local else self.fs.unstrip_protocol(full)

    def put(self, local: Path, rel: str) -> None:
        target = self.full(rel)
        try:
            self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
            self.fs.put_file(str(local), target)
        except OSError as exc:
            raise ArtifactError(f"cannot store artifact {rel}: {exc}") from None

    def get(self, rel: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.fs.get_file(self.full(rel), str(local))
        except FileNotFoundError:
            raise ArtifactError(f"artifact {rel} is missing from the store {self.url}") from None
        except OSError as exc:
            raise ArtifactError(f"cannot read artifact {rel}: {exc}") from None

    def open(self, rel: str, mode: str = "rb") -> Any:
        return self.fs.open(self.full(rel), mode)

    def exists(self, rel: str) -> bool:
        return bool(self.fs.exists(self.full(rel)))

    def isdir(self, rel: str) -> bool:
        return bool(self.fs.isdir(self.full(rel)))

    def walk_files(self, rel: str) -> Iterator[str]:
        """Every file under ``rel`` (recursively), as paths relative to the store root."""
        base = self.full(rel)
        if not self.fs.exists(base):
            return
        if not self.fs.isdir(base):
            yield rel
            return
        root = self.root.rstrip("/") + "/"
        for path in sorted(self.fs.find(base)):
            path = "/" + path.lstrip("/") if root.startswith("/") and not path.startswith("/") else path
            yield path[len(root):] if path.startswith(root) else path

    def sha256(self, rel: str) -> str:
        h = hashlib.sha256()
        with self.open(rel) as fh:
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                h.update(chunk)
        return h.hexdigest()
