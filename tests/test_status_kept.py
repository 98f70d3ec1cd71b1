"""``workbench status``'s kept answer (workbench/cli/kept.py): printed again only while nothing it shows differs.

Real CLI processes on a real SQLite store. What could go wrong is a stale
answer, so each test changes one input (a run, an approval-free rerun, a
pipeline file, the format, the width) and checks the very next ``status``
shows it; and that a kept answer is byte for byte what computing prints.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from workbench.cli import kept

PIPELINES = """
format_version: 10
pipelines:
  app:
    group: web
    stages:
      - build:
          jobs: {b: {tasks: [{script: "true"}]}}
  lib:
    stages:
      - build:
          jobs: {b: {tasks: [{script: "exit 3"}]}}
"""


def _kept(root: Path) -> list[Path]:
    return sorted((root / ".workbench" / "cache").glob("status-*.txt"))


def _quiet() -> None:
    time.sleep(kept.QUIET_SECONDS + 0.2)  # the store's last write is old enough for its stamp to be trusted


def test_kept_answer_is_what_computing_prints_and_every_change_shows(workspace):
    workspace.write("a.gocd.yaml", PIPELINES)
    assert workspace.cli("run", "app").code == 0
    _quiet()
    first = workspace.cli("status")
    assert first.code == 0 and "app" in first.out and "passed" in first.out
    assert len(_kept(workspace.root)) == 1
    entry = _kept(workspace.root)[0]
    again = workspace.cli("status")
    assert again.out == first.out
    assert entry.stat().st_mtime_ns == _kept(workspace.root)[0].stat().st_mtime_ns  # read, not written again
    computed = workspace.cli("status", env={"WORKBENCH_CONFIG_CACHE": "0"})
    assert computed.out == first.out  # the kept bytes are exactly what computing prints

    # a run in another process: the very next status shows it (the store's stamp changed)
    assert workspace.cli("run", "lib").code == 1
    after = workspace.cli("status")
    assert "exit" in after.out or "failed" in after.out
    assert after.out != first.out
    assert after.out == workspace.cli("status", env={"WORKBENCH_CONFIG_CACHE": "0"}).out

    # a pipeline file changed: a new pipeline shows at once
    workspace.write("b.gocd.yaml", """
        format_version: 10
        pipelines:
          web2:
            stages:
              - build:
                  jobs: {b: {tasks: [{script: "true"}]}}
    """)
    assert "web2" in workspace.cli("status").out

    # another format and another width are other answers
    _quiet()
    as_json = workspace.cli("status", "--format", "json")
    assert as_json.out.lstrip().startswith("[") and '"web2"' in as_json.out
    assert workspace.cli("status", "--format", "json").out == as_json.out
    wide, narrow = workspace.cli("status", env={"COLUMNS": "220"}), workspace.cli("status", env={"COLUMNS": "100"})
    assert wide.out == workspace.cli("status", env={"COLUMNS": "220", "WORKBENCH_CONFIG_CACHE": "0"}).out
    assert narrow.out == workspace.cli("status", env={"COLUMNS": "100", "WORKBENCH_CONFIG_CACHE": "0"}).out


def test_a_broken_file_is_reported_not_hidden_by_a_kept_answer(workspace):
    path = workspace.write("a.gocd.yaml", PIPELINES)
    assert workspace.cli("run", "app").code == 0
    _quiet()
    assert workspace.cli("status").code == 0 and _kept(workspace.root)
    path.write_text(path.read_text().replace("group: web", "group: [web"))
    bad = workspace.cli("status")
    assert bad.code == 2 and "a.gocd.yaml:" in bad.err


def test_a_store_written_just_now_is_not_trusted_and_a_bad_entry_is_recomputed(workspace):
    workspace.write("a.gocd.yaml", PIPELINES)
    assert workspace.cli("run", "app").code == 0
    ws = workspace.open()
    db = ws.state / "store.db"
    os.utime(db)  # what any commit does to the file: its mtime is now
    found = kept.lookup(ws, "json")
    assert found is not None and found.text is None and found.keep is False
    _quiet()
    found = kept.lookup(ws, "json")
    assert found is not None and found.keep is True
    found.entry.parent.mkdir(parents=True, exist_ok=True)
    found.entry.write_bytes(b"\xff\xfe not utf-8")
    found.entry.chmod(0o600)
    assert kept.lookup(ws, "json").text is None  # unreadable: computed again and overwritten
    out = workspace.cli("status", "--format", "json")
    assert out.code == 0 and '"app"' in out.out
    assert found.entry.read_text() == out.out
    found.entry.chmod(0o666)  # writable by others: not trusted (it would be printed as our answer)
    assert kept.lookup(ws, "json").text is None
    ws.close()


def test_nothing_is_kept_for_another_store(workspace, tmp_path):
    workspace.write("a.gocd.yaml", PIPELINES)
    env = {"WORKBENCH_STORE_URL": str(tmp_path / "elsewhere.db")}
    assert workspace.cli("run", "app", env=env).code == 0
    _quiet()
    assert "passed" in workspace.cli("status", env=env).out
    assert not _kept(workspace.root)


def test_history_is_kept_per_pipeline_and_limit_until_the_store_changes(workspace):
    workspace.write("a.gocd.yaml", PIPELINES)
    assert workspace.cli("run", "app").code == 0
    _quiet()
    for fmt in ("table", "csv", "json"):
        first = workspace.cli("history", "-p", "app", "-n", "5", "--format", fmt)
        assert first.code == 0 and "app" in first.out
        assert workspace.cli("history", "-p", "app", "-n", "5", "--format", fmt).out == first.out
        computed = workspace.cli("history", "-p", "app", "-n", "5", "--format", fmt,
                                 env={"WORKBENCH_CONFIG_CACHE": "0"})
        assert computed.out == first.out
    kept_files = sorted((workspace.root / ".workbench" / "cache").glob("history-*.txt"))
    assert len(kept_files) == 3
    missing = workspace.cli("history", "-p", "lib")  # an error is never kept: it is reported each time
    assert missing.code != 0 and "no history" in missing.err
    assert workspace.cli("history", "-p", "lib").err == missing.err
    assert workspace.cli("run", "app").code == 0  # a second run: the very next history shows it
    rows = workspace.cli("history", "-p", "app", "-n", "5", "--format", "json").out
    assert '"counter": 2' in rows
