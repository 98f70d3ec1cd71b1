"""Shared fixtures: temporary workspaces, a git repository factory, the CLI."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "gocd-yaml-corpus"


def corpus_dir() -> Path:
    """The GoCD YAML corpus beside the checkout; absent is a skip locally, a failure in CI."""
    if not CORPUS.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"GoCD YAML corpus missing at {CORPUS} (CI is set: this must not skip)")
        pytest.skip(f"GoCD YAML corpus not found at {CORPUS}")
    return CORPUS


def require_module(name: str, install: str) -> Any:
    """A Python package a test file needs, like a service: missing is a skip locally and a failure under CI
    (call at module level; returns the module)."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required under CI ({install})", pytrace=False)
        pytest.skip(f"{name} not installed", allow_module_level=True)


def require_service(ok: bool, what: str) -> None:
    """A test needing a real service skips locally when it is missing, and fails under CI."""
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"{what} is required under CI (make test installs it)")
        pytest.skip(f"{what} not available")


@dataclass
class CliResult:
    code: int
    out: str
    err: str


class WorkspaceFactory:
    """A workspace in a temporary folder, with helpers to write pipelines and run the CLI."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "pipelines").mkdir(parents=True, exist_ok=True)

    def write(self, name: str, text: str) -> Path:
        path = self.root / "pipelines" / name
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    def open(self) -> Any:
        from workbench import Workspace

        return Workspace.open(self.root)

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120, input: str | None = None) -> CliResult:
        full_env = {**os.environ, "WORKBENCH_WORKSPACE": str(self.root), "COLUMNS": "200", **(env or {})}
        p = subprocess.run(
            [sys.executable, "-m", "workbench", *args],
            cwd=self.root, env=full_env, capture_output=True, text=True, timeout=timeout, input=input,
        )
        return CliResult(p.returncode, p.stdout, p.stderr)


@pytest.fixture
def workspace(tmp_path: Path) -> WorkspaceFactory:
    return WorkspaceFactory(tmp_path / "ws")


class GitRepo:
    """A real git repository in a temporary folder, for material tests."""

    def __init__(self, path: Path, branch: str = "master") -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", branch)
        self.git("config", "user.email", "dev@example.com")
        self.git("config", "user.name", "Dev")
        self.git("config", "commit.gpgsign", "false")

    @property
    def url(self) -> str:
        return str(self.path)

    def git(self, *args: str) -> str:
        return subprocess.run(["git", *args], cwd=self.path, check=True, capture_output=True, text=True).stdout.strip()

    def commit(self, files: dict[str, str] | None = None, message: str = "change", *, date: str | None = None) -> str:
        for name, content in (files or {"file.txt": message}).items():
            f = self.path / name
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(content)
            self.git("add", name)
        env = {**os.environ}
        if date:
            env.update(GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
        subprocess.run(["git", "commit", "-q", "-m", message], cwd=self.path, check=True, env=env, capture_output=True)
        return self.git("rev-parse", "HEAD")

    @property
    def head(self) -> str:
        return self.git("rev-parse", "HEAD")


@pytest.fixture
def git_repo(tmp_path: Path) -> Any:
    """Factory: ``git_repo("api")`` makes a repository with one commit."""

    def make(name: str = "repo", branch: str = "master", initial: bool = True) -> GitRepo:
        repo = GitRepo(tmp_path / "repos" / name, branch)
        if initial:
            repo.commit({"README.md": f"# {name}\n"}, "initial commit")
        return repo

    return make


# -- store back ends: every store-touching test can run on SQLite and on a real PostgreSQL --
from pg import pg_server  # noqa: E402,F401  (session fixture: a throw-away PostgreSQL cluster)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store: a SQLite file path, or a new database on the test PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    return request.getfixturevalue("pg_server").create_database()


@pytest.fixture
def workspace_store(store_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Workspaces opened in the test use ``store_url`` (PostgreSQL through $WORKBENCH_STORE_URL).

    For SQLite the variable stays unset, so workspaces keep their default
    ``.workbench/store.db``; use with ``pytest.mark.usefixtures("workspace_store")``.
    """
    if "://" in store_url:
        monkeypatch.setenv("WORKBENCH_STORE_URL", store_url)
    return store_url


# -- soak mode (tests/test_faults.py, test_load.py, test_hostile_input.py; `make soak`) --
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak-seconds", type=float, default=None, metavar="N",
                     help="Run the fault, load and hostile-input tests for about N seconds each "
                          "(default: $WORKBENCH_SOAK_SECONDS, else a bounded run for `make test`).")


@pytest.fixture
def soak_seconds(request: pytest.FixtureRequest) -> float:
    """0 in a normal run; the seconds asked for with --soak-seconds / $WORKBENCH_SOAK_SECONDS."""
    value = request.config.getoption("--soak-seconds")
    if value is None:
        value = float(os.environ.get("WORKBENCH_SOAK_SECONDS") or 0)
    return max(float(value), 0.0)


from server_fixtures import server_factory  # noqa: E402,F401  (a real `workbench server` per test)
