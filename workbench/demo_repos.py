"""Small local git repositories for the Shops example (``make demo``, tests, benchmarks).

Each component (db, batch, search, api, ui) gets a repository with a tiny
``build.sh`` the pipeline tasks can call, and there is one shared ``config``
repository that search, api and ui all build from: the diamond that makes
fan-in matter. Repositories are made with GitPython, committed as a fixed
demo author so runs of the demo look alike.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import git

__all__ = ["COMPONENTS", "make_shops_repos", "commit"]

COMPONENTS = ("db", "batch", "search", "api", "ui")
AUTHOR = git.Actor("Shops Developer", "dev@shops.example")

BUILD_SH = """#!/bin/sh
# {name}: the whole "build" of the demo. Prints what it builds, from which commit,
# with which shared config (when the job checked one out into ./config).
set -e
here=$(cd "$(dirname "$0")" && pwd)
rev=$(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)
cfg=""
if [ -f ../config/settings.env ]; then cfg=" config $(git -C ../config rev-parse --short HEAD 2>/dev/null)"; fi
if [ -f config/settings.env ]; then cfg=" config $(git -C config rev-parse --short HEAD 2>/dev/null)"; fi
echo "building {name} ${{1:-all}} at $rev$cfg"
"""


def commit(path: Path | str, files: dict[str, str], message: str, *, executable: tuple[str, ...] = ()) -> str:
    """Write ``files`` into the repository at ``path`` and commit them; returns the new sha."""
    repo = git.Repo(path)
    try:
        for name, content in files.items():
            f = Path(path) / name
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(content)
            if name in executable:
                f.chmod(f.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        repo.index.add(list(files))
        return repo.index.commit(message, author=AUTHOR, committer=AUTHOR).hexsha
    finally:
        repo.close()


def make_shops_repos(root: Path) -> dict[str, str]:
    """Create (or reuse) the Shops repositories under ``root``; returns name → path."""
    root = Path(root)
    out: dict[str, str] = {}
    for name in (*COMPONENTS, "config"):
        path = root / name
        out[name] = str(path)
        if (path / ".git").is_dir():
            continue
        path.mkdir(parents=True, exist_ok=True)
        repo = git.Repo.init(path, initial_branch="master")
        repo.close()
        if name == "config":
            files = {"settings.env": "FEATURE_FLAGS=basic\nDB_POOL=10\n", "README.md": "# shared config\n"}
        else:
            files = {"build.sh": BUILD_SH.format(name=name), "README.md": f"# {name}\n", "VERSION": "1.0\n"}
        commit(path, files, f"{name}: initial import", executable=("build.sh",))
    return out


if __name__ == "__main__":  # python -m workbench.demo_repos FOLDER
    import sys

    for k, v in make_shops_repos(Path(sys.argv[1] if len(sys.argv) > 1 else os.getcwd())).items():
        print(f"{k}\t{v}")
