"""`workbench backup` / `restore`: a consistent copy taken while runs go on, verified before it is restored."""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from reliability_fixtures import cli_in_process, record_figures
from workbench import Workspace
from workbench.backup import MANIFEST, backup, restore, verify
from workbench.errors import InvalidState, NotFound, UsageError

pytestmark = pytest.mark.timeout(180)

RELEASE = """
format_version: 10
pipelines:
  release:
    environment_variables:
      GATE: "{gate}"
    stages:
      - build:
          jobs:
            compile:
              tasks:
                - script: mkdir -p dist && head -c 300000 /dev/urandom > dist/app.tgz && echo built
              artifacts:
                - build: {{source: dist/app.tgz, destination: pkg}}
      - deploy:
          jobs:
            wait:
              tasks:
                - script: 'echo waiting; while [ ! -e "$GATE" ]; do sleep 0.05; done; echo deployed'
            side:
              tasks:
                - script: echo side
      - verify:
          jobs:
            check: {{tasks: [script: echo verified]}}
"""

BUSY = """
format_version: 10
pipelines:
  busy:
    stages:
{stages}
"""


def all_frames(ws: Workspace) -> dict[str, pd.DataFrame]:
    return {name: getattr(ws.frames, name) for name in ws.frames.names()}


def relocated(frames: dict[str, pd.DataFrame], old: Path, new: Path) -> dict[str, pd.DataFrame]:
    """The original's frames with its state-folder paths as the restored workspace records them."""
    old_s, new_s = f"{old}/.workbench/", f"{new}/.workbench/"
    out = {}
    for name, df in frames.items():
        df = df.copy()
        for col in df.columns:
            if df[col].dtype == object or pd.api.types.is_string_dtype(df[col].dtype):
                moved = df[col].map(lambda v: new_s + v[len(old_s):] if isinstance(v, str) and v.startswith(old_s) else v)
                df[col] = moved.astype(df[col].dtype)
        out[name] = df
    return out


def assert_frames_equal(got: dict[str, pd.DataFrame], want: dict[str, pd.DataFrame]) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        pd.testing.assert_frame_equal(got[name], want[name], obj=f"frame {name}")


def start_run(root: Path, pipeline: str) -> subprocess.Popen[str]:
    env = {**os.environ, "WORKBENCH_WORKSPACE": str(root)}
    return subprocess.Popen([sys.executable, "-m", "workbench", "run", pipeline, "-q"], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until(check: Any, seconds: float = 60, proc: subprocess.Popen[str] | None = None) -> None:
    end = time.monotonic() + seconds
    while not check():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.communicate()}")
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.05)


def job_status(ws: Workspace, job: str) -> str | None:
    jobs = ws.frames.job_runs
    rows = jobs[jobs["job"] == job]
    return None if rows.empty else str(rows.iloc[-1]["status"])


def test_backup_during_a_running_pipeline_restores_the_frames_of_that_moment(workspace: Any, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    workspace.write("release.yaml", RELEASE.format(gate=gate))
    proc = start_run(workspace.root, "release")
    ws = workspace.open()
    try:
        wait_until(lambda: job_status(ws, "wait") == "running" and job_status(ws, "side") == "passed", proc=proc)
        before = all_frames(ws)
        report = backup(ws, tmp_path / "bk")
        after = all_frames(ws)
    finally:
        gate.write_text("go")
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, (out, err)
    assert_frames_equal(after, before)  # nothing moved while the backup ran: the moment is well defined
    assert report.runs == 1 and report.store == "sqlite"
    manifest = json.loads((tmp_path / "bk" / MANIFEST).read_text())
    paths = {e["path"] for e in manifest["files"]}
    assert {"pipelines/release.yaml", ".workbench/store.db", ".workbench/artifacts/release/1/build/1/compile/pkg/app.tgz",
            ".workbench/logs/release/1/build-1/compile.log"} <= paths
    assert ".workbench/secret.key" not in paths and not any(p.startswith(".workbench/work/") for p in paths)

    target = tmp_path / "restored"
    restore(tmp_path / "bk", target)
    with Workspace.open(target) as restored:
        assert_frames_equal(all_frames(restored), relocated(before, workspace.root, target))
        assert restored.store.integrity_ok()
        [run] = restored.store.pipeline_runs()
        assert str(run.status) == "running"  # as it was at the backup, though the original has finished since
        art = restored.frames.artifacts.iloc[0]
        assert Path(art["url"]).is_file() and hashlib.sha256(Path(art["url"]).read_bytes()).hexdigest() == art["sha256"]
    assert str(ws.store.get_pipeline_run("release", 1).status) == "passed"
    logs = subprocess.run([sys.executable, "-m", "workbench", "-w", str(target), "logs", "release/1/build/compile"],
                          capture_output=True, text=True, timeout=60)
    assert logs.returncode == 0 and "built" in logs.stdout
    ws.close()


def test_backups_taken_while_many_jobs_write_are_each_consistent(workspace: Any, tmp_path: Path) -> None:
    stages = "".join(f"      - s{i}:\n          jobs:\n" + "".join(
        f"            j{k}: {{tasks: [exec: {{command: 'true'}}]}}\n" for k in range(6)) for i in range(6))
    workspace.write("busy.yaml", BUSY.format(stages=stages))
    proc = start_run(workspace.root, "busy")
    ws = workspace.open()
    taken = []
    while proc.poll() is None or not taken:
        dest = tmp_path / f"bk{len(taken)}"
        backup(ws, dest)
        taken.append(dest)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, (out, err)
    for dest in taken:
        verify(dest)
        conn = sqlite3.connect(dest / ".workbench" / "store.db")
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
            # a stage recorded as passed has all its jobs recorded as passed: no half-written state change
            bad = conn.execute("""SELECT s.id FROM stage_runs s JOIN job_runs j ON j.stage_run_id = s.id
                                  WHERE s.status = 'passed' AND j.status != 'passed'""").fetchall()
            assert bad == []
            counters = conn.execute("SELECT counter FROM pipeline_counters WHERE pipeline = 'busy'").fetchall()
            runs = conn.execute("SELECT count(*) FROM pipeline_runs WHERE pipeline = 'busy'").fetchone()[0]
            assert counters in ([], [(runs,)])
        finally:
            conn.close()
    record_figures("backup_under_load", {"backups taken while 36 jobs ran": len(taken), "all consistent": True})
    ws.close()


def test_restore_verifies_first_and_leaves_nothing_behind(workspace: Any, tmp_path: Path) -> None:
    workspace.write("release.yaml", RELEASE.format(gate=tmp_path))  # the gate exists: no wait
    with workspace.open() as ws:
        assert str(ws.run("release").status) == "passed"
        backup(ws, tmp_path / "good")
    original = tmp_path / "good"

    def damaged(name: str, harm: Any) -> Path:
        copy = tmp_path / name
        subprocess.run(["cp", "-a", str(original), str(copy)], check=True)
        harm(copy)
        return copy

    cases = {
        "changed": (lambda p: (p / "pipelines" / "release.yaml").write_text("pipelines: {}\n"), "does not match"),
        "missing": (lambda p: (p / ".workbench" / "store.db").unlink(), "is missing"),
        "extra": (lambda p: (p / "pipelines" / "evil.yaml").write_text("x: 1\n"), "does not list"),
        "manifest": (lambda p: (p / MANIFEST).write_text("{not json"), "unreadable"),
        "climbing": (lambda p: (p / MANIFEST).write_text(json.dumps({
            **json.loads((p / MANIFEST).read_text()), "files": [{"path": "../x", "size": 1, "sha256": "0"}]})),
            "outside the backup"),
    }
    for name, (harm, message) in cases.items():
        src = damaged(name, harm)
        target = tmp_path / f"into-{name}"
        with pytest.raises(InvalidState, match=message):
            restore(src, target)
        assert not target.exists(), f"{name}: something was restored"
        cli = workspace.cli("restore", str(src), str(target))
        assert cli.code == 2 and message in cli.err and "Traceback" not in cli.err, (name, cli)
        assert not target.exists()
    # a store that fails its integrity check, with a manifest that matches it
    bad = damaged("corrupt-store", lambda p: None)
    db = bad / ".workbench" / "store.db"
    data = bytearray(db.read_bytes())
    data[4096:8192] = b"\xff" * 4096  # wreck a b-tree page
    db.write_bytes(bytes(data))
    manifest = json.loads((bad / MANIFEST).read_text())
    for e in manifest["files"]:
        if e["path"] == ".workbench/store.db":
            e["sha256"], e["size"] = hashlib.sha256(bytes(data)).hexdigest(), len(data)
    (bad / MANIFEST).write_text(json.dumps(manifest))
    empty = tmp_path / "empty-target"
    empty.mkdir()
    with pytest.raises(InvalidState, match="integrity check"):
        restore(bad, empty)
    assert empty.is_dir() and list(empty.iterdir()) == []  # the empty folder stays, empty
    # a target that is not empty, a backup that is not one, a destination that exists
    with pytest.raises(UsageError, match="not empty"):
        restore(original, workspace.root)
    with pytest.raises(NotFound, match="not a workbench backup"):
        restore(tmp_path, tmp_path / "x")
    with workspace.open() as ws, pytest.raises(UsageError, match="not an empty folder"):
        backup(ws, original)
    with workspace.open() as ws, pytest.raises(UsageError, match="inside the workspace"):
        backup(ws, workspace.root / "pipelines" / "bk")
    assert not list(tmp_path.glob(".*partial*")), "a failed backup left its staging folder"


def test_cli_round_trip_and_the_secret_key_only_when_asked(workspace: Any, tmp_path: Path) -> None:
    workspace.write("release.yaml", RELEASE.format(gate=tmp_path))
    assert cli_in_process(workspace.root, "encrypt", "hush")[0] == 0  # creates .workbench/secret.key
    assert workspace.cli("run", "release", "-q").code == 0
    out = workspace.cli("backup", str(tmp_path / "plain"))
    assert out.code == 0 and "backed up 1 runs" in out.out, out
    assert not (tmp_path / "plain" / ".workbench" / "secret.key").exists()
    keyed = workspace.cli("backup", "--with-key", str(tmp_path / "keyed"))
    assert keyed.code == 0, keyed
    restored = tmp_path / "restored"
    res = workspace.cli("restore", str(tmp_path / "keyed"), str(restored))
    assert res.code == 0 and "every checksum verified" in res.out, res
    key = restored / ".workbench" / "secret.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes() == (workspace.root / ".workbench" / "secret.key").read_bytes()
    # the restored history, read in this process (the backup and restore above were real processes)
    code, hist = cli_in_process(restored, "history", "--format", "json")
    code_orig, orig = cli_in_process(workspace.root, "history", "--format", "json")
    assert code == code_orig == 0 and json.loads(hist) == json.loads(orig)
    again = workspace.cli("restore", str(tmp_path / "keyed"), str(restored))
    assert again.code == 2 and "not empty" in again.err


@pytest.mark.usefixtures("pg_server")
def test_postgresql_store_backup_and_restore(workspace: Any, tmp_path: Path, pg_server: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    source_db, target_db = pg_server.create_database(), pg_server.create_database()
    monkeypatch.setenv("WORKBENCH_STORE_URL", source_db)
    workspace.write("release.yaml", RELEASE.format(gate=tmp_path))
    with workspace.open() as ws:
        assert str(ws.run("release").status) == "passed"
        before = all_frames(ws)
        report = backup(ws, tmp_path / "pgbk")
    assert report.store == "postgresql" and (tmp_path / "pgbk" / "store.pgdump").is_file()
    with pytest.raises(UsageError, match="--store-url"):
        restore(tmp_path / "pgbk", tmp_path / "r0")
    with pytest.raises(UsageError, match="not empty"):
        restore(tmp_path / "pgbk", tmp_path / "r1", store_url=source_db)
    assert not (tmp_path / "r1").exists()
    restore(tmp_path / "pgbk", tmp_path / "r2", store_url=target_db)
    with Workspace.open(tmp_path / "r2", store_url=target_db) as restored:
        assert_frames_equal(all_frames(restored), relocated(before, workspace.root, tmp_path / "r2"))
