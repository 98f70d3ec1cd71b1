"""The config parse cache (workbench/config/cache.py): keyed by content, never stale, never trusted blindly."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from workbench import Workspace
from workbench.config import load_workspace_config
from workbench.config.cache import cached_load
from workbench.errors import ConfigError

ONE = """format_version: 10
pipelines:
  app:
    group: g
    materials: {m: {git: https://example.com/app.git}}
    stages:
      - build: {jobs: {b: {tasks: [{exec: {command: 'true'}}]}}}
"""


def workspace(tmp_path: Path, text: str = ONE) -> Path:
    (tmp_path / "pipelines").mkdir(parents=True)
    (tmp_path / "pipelines" / "app.gocd.yaml").write_text(text)
    return tmp_path


def counting_loads(cache: Path):
    """Run the real loader through the cache, counting how often it actually parsed."""
    from workbench.config import _load

    calls = []

    def load(sources):
        calls.append(len(sources))
        return _load(sources)

    def run(root: Path):
        files = sorted((root / "pipelines").glob("*.yaml"))
        sources = [(f.name, f.read_bytes(), None) for f in files]
        return cached_load(cache, sources, load)

    return run, calls


def test_same_bytes_are_read_back_and_changed_bytes_are_parsed(tmp_path: Path) -> None:
    root = workspace(tmp_path / "ws")
    cache = tmp_path / "cache"
    run, calls = counting_loads(cache)
    first = run(root)
    again = run(root)
    assert calls == [1] and again == first and list(cache.glob("config-*.pickle"))
    # same size, same mtime second: only the content tells them apart
    path = root / "pipelines" / "app.gocd.yaml"
    st = path.stat()
    path.write_text(ONE.replace("build", "bould"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    changed = run(root)
    assert calls == [1, 1]
    assert [s.name for s in changed.pipelines["app"].stages] == ["bould"]


def test_errors_are_never_cached(tmp_path: Path) -> None:
    root = workspace(tmp_path / "ws", ONE.replace("group: g", "group: g\n    stagez: []"))
    cache = tmp_path / "cache"
    run, calls = counting_loads(cache)
    for _ in range(2):
        with pytest.raises(ConfigError, match="app.gocd.yaml:5:5: unknown key .stagez."):
            run(root)
    assert calls == [1, 1] and not list(cache.glob("config-*.pickle"))


def test_an_entry_others_may_write_or_a_broken_one_is_not_believed(tmp_path: Path) -> None:
    root = workspace(tmp_path / "ws")
    cache = tmp_path / "cache"
    run, calls = counting_loads(cache)
    run(root)
    (entry,) = cache.glob("config-*.pickle")
    entry.chmod(0o666)
    run(root)
    assert calls == [1, 1]  # ignored, parsed again and rewritten for its owner only
    assert entry.stat().st_mode & 0o077 == 0
    entry.write_bytes(b"not a pickle")
    assert run(root).pipelines["app"].stages[0].name == "build"
    assert calls == [1, 1, 1]
    run(root)
    assert calls == [1, 1, 1]


def test_workspace_uses_its_state_folder_and_the_switch_turns_it_off(tmp_path: Path, monkeypatch) -> None:
    root = workspace(tmp_path / "ws")
    ws = Workspace.open(root)
    assert "app" in ws.config.pipelines
    assert list((ws.state / "cache").glob("config-*.pickle"))
    ws.close()
    monkeypatch.setenv("WORKBENCH_CONFIG_CACHE", "0")
    off = tmp_path / "off"
    load_workspace_config(root, cache_dir=off)
    assert not off.exists()
