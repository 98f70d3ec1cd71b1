"""Reading a config repository: poll its branch, list its config files at one revision.

Files are read from the git objects of the revision in the workspace's mirror
(``.workbench/mirrors/``, shared with git materials of the same URL), never
from a working tree, so what loads is exactly what was committed.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import MaterialError, Problem
from ..materials.git import Mirror, auth_url
from .model import ConfigRepo

MAX_FILE_BYTES = 5_000_000  # a config file larger than this is refused (named), not parsed

RepoFiles = tuple[tuple[str, bytes], ...]


def mirror_for(repo: ConfigRepo, mirrors_dir: Path) -> Mirror:
    remote = auth_url(repo.url, repo.username, repo.password) if repo.password or repo.username else None
    return Mirror(mirrors_dir, repo.url, remote_url=remote, secret=repo.password)


def poll_head(mirror: Mirror, repo: ConfigRepo) -> str:
    """The branch head now (one ``ls-remote``; a fetch only when it moved); MaterialError when unreachable."""
    head = mirror.poll([repo.branch])[repo.branch]
    if isinstance(head, MaterialError):
        raise head
    return head


def display(repo_id: str, revision: str, path: str) -> str:
    """How a config repository's file is named in problems: ``REPO@REV8/PATH``."""
    return f"{repo_id}@{revision[:8]}/{path}"


def read_files(mirror: Mirror, repo: ConfigRepo, revision: str) -> tuple[RepoFiles, list[Problem]]:
    """The files of ``revision`` matching the repository's patterns, in path order, from git objects."""
    try:
        commit = mirror.repo().commit(revision)
        blobs = [b for b in commit.tree.traverse() if b.type == "blob" and repo.wants(b.path)]
    except (ValueError, MaterialError, OSError) as exc:
        raise MaterialError(f"config repository {repo.id!r}: revision {revision[:12]} cannot be read: {exc}") from None
    except Exception as exc:  # noqa: BLE001  (GitPython's own errors: BadName, BadObject, GitCommandError)
        raise MaterialError(f"config repository {repo.id!r}: revision {revision[:12]} cannot be read: "
                            f"{type(exc).__name__}: {exc}") from None
    files: list[tuple[str, bytes]] = []
    problems: list[Problem] = []
    for b in sorted(blobs, key=lambda b: b.path):
        if b.size > MAX_FILE_BYTES:
            problems.append(Problem(display(repo.id, revision, b.path), 1, 1,
                                    f"the file has {b.size} bytes, more than the {MAX_FILE_BYTES} a config file may "
                                    "have; not read"))
            continue
        files.append((b.path, b.data_stream.read()))
    return tuple(files), problems
