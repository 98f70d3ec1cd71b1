"""The validate answer cache (workbench/service/validate_cache.py): served only for the same bytes, never for an error."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from workbench import Workspace
from workbench.errors import ConfigError
from workbench.service import reads

NOTEBOOKS = Path(__file__).parent / "notebooks"

ONE = """format_version: 10
pipelines:
  app:
    group: g
    materials: {m: {git: https://example.com/app.git}}
    stages:
      - build: {jobs: {b: {tasks: [{exec: {command: 'true'}}]}}}
"""

NOTEBOOK = """format_version: 10
pipelines:
  nbp:
    group: g
    materials: {m: {git: https://example.com/app.git}}
    stages:
      - analyse: {jobs: {report: {tasks: [{notebook: {path: notebooks/report.ipynb}}]}}}
"""


def workspace(root: Path, text: str = ONE) -> Path:
    (root / "pipelines").mkdir(parents=True)
    (root / "pipelines" / "app.gocd.yaml").write_text(text)
    return root


def validate(root: Path) -> tuple[dict, bool]:
    """One validate as the CLI does it (a fresh Workspace); True when the config itself had to be loaded."""
    ws = Workspace.open(root)
    try:
        result = reads.validate(ws)
        return result, "config" in ws.__dict__
    finally:
        ws.close()


def rewrite_keeping_stat(path: Path, text: str) -> None:
    st = path.stat()
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def entries(root: Path) -> list[Path]:
    return sorted((root / ".workbench" / "cache").glob("validate-*.json"))


def test_a_second_validate_is_answered_without_loading_and_an_edit_is_seen(tmp_path: Path) -> None:
    root = workspace(tmp_path / "ws")
    validate(root)  # this process may load the features now: they are part of the key
    first, loaded = validate(root)
    again, loaded_again = validate(root)
    assert first == again and first["pipelines"] == 1 and not loaded_again and entries(root)
    # one file edited to the same size within the same mtime: only its bytes tell
    path = root / "pipelines" / "app.gocd.yaml"
    rewrite_keeping_stat(path, ONE.replace("  app:", "  apq:"))
    changed, loaded = validate(root)
    assert loaded and changed["pipelines"] == 1
    assert "apq" in Workspace.open(root).config.pipelines
    # a second file appears
    (root / "pipelines" / "more.gocd.yaml").write_text(ONE.replace("  app:", "  other:"))
    assert validate(root)[0]["files"] == 2


def test_an_error_is_never_served_from_the_cache(tmp_path: Path) -> None:
    root = workspace(tmp_path / "ws")
    validate(root)
    validate(root)
    kept = entries(root)
    path = root / "pipelines" / "app.gocd.yaml"
    rewrite_keeping_stat(path, ONE.replace("group: g", "stagez: g"))
    for _ in range(2):
        with pytest.raises(ConfigError, match=r"app.gocd.yaml:4:5: unknown key .stagez."):
            validate(root)
    assert entries(root) == kept  # nothing was kept for the broken bytes
    rewrite_keeping_stat(path, ONE)
    result, loaded = validate(root)  # the good bytes' answer is still right for the good bytes
    assert result["ok"] and not loaded


def test_workbench_yaml_is_checked_every_time_and_is_part_of_the_key(tmp_path: Path) -> None:
    root = workspace(tmp_path / "ws")
    validate(root)
    validate(root)
    (root / "workbench.yaml").write_text("store: [not, a, url\n")
    with pytest.raises(ConfigError, match="workbench.yaml"):
        validate(root)
    (root / "workbench.yaml").write_text("# settings\n")
    result, loaded = validate(root)
    assert result["ok"] and loaded  # other settings bytes: loaded again
    assert not validate(root)[1]


def test_a_notebook_the_check_reads_is_part_of_the_answer(tmp_path: Path) -> None:
    root = workspace(tmp_path / "ws", NOTEBOOK)
    validate(root)
    missing, _ = validate(root)
    assert any("notebooks/report.ipynb of nbp/analyse/report is not in the workspace" in w for w in missing["warnings"])
    (root / "notebooks").mkdir()
    shutil.copy(NOTEBOOKS / "noparams.ipynb", root / "notebooks" / "report.ipynb")
    found, loaded = validate(root)
    assert loaded and any("has no cell tagged 'parameters'" in w for w in found["warnings"])
    assert validate(root) == (found, False)
    shutil.copy(NOTEBOOKS / "params.ipynb", root / "notebooks" / "report.ipynb")
    declared, loaded = validate(root)
    assert loaded and not any("has no cell tagged 'parameters'" in w for w in declared["warnings"])


def test_an_entry_others_may_write_or_a_broken_one_is_not_believed(tmp_path: Path) -> None:
    root = workspace(tmp_path / "ws")
    validate(root)
    validate(root)
    (entry,) = entries(root)
    entry.chmod(0o666)
    assert validate(root)[1]  # ignored: loaded again (and rewritten for its owner only)
    assert entry.stat().st_mode & 0o077 == 0
    assert not validate(root)[1]
    entry.write_text('{"key": "forged", "result": {"ok": true, "pipelines": 99}, "inputs": []}')
    result, loaded = validate(root)
    assert loaded and result["pipelines"] == 1


def test_the_switch_turns_it_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = workspace(tmp_path / "ws")
    monkeypatch.setenv("WORKBENCH_CONFIG_CACHE", "0")
    validate(root)
    assert validate(root)[1] and not entries(root)


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("WORKBENCH_CONFIG_CACHE", None)
    return subprocess.run([sys.executable, "-m", "workbench", "-w", str(root), *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_the_cli_reports_an_edit_under_a_cached_validate(tmp_path: Path) -> None:
    root = workspace(tmp_path / "ws")
    for _ in range(2):
        done = cli(root, "validate")
        assert done.returncode == 0 and done.stdout.strip() == "ok: 1 pipeline in 1 file", done.stderr
    assert entries(root)
    rewrite_keeping_stat(root / "pipelines" / "app.gocd.yaml", ONE.replace("group: g", "stagez: g"))
    broken = cli(root, "validate")
    assert broken.returncode == 2 and "app.gocd.yaml:4:5: unknown key 'stagez'" in broken.stderr
    assert "Traceback" not in broken.stderr
    rewrite_keeping_stat(root / "pipelines" / "app.gocd.yaml", ONE.replace("group: g", "group: h"))
    again = cli(root, "validate")
    assert again.returncode == 0 and again.stdout.strip() == "ok: 1 pipeline in 1 file", again.stderr
