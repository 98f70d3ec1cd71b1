"""The engine with the local executor: real processes, a real store."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from workbench import Workspace
from workbench.config.model import Config, Environment, ExecTask, Job, Pipeline, ScriptTask, Stage
from workbench.status import Status

pytestmark = pytest.mark.usefixtures("workspace_store")  # each test on SQLite and on PostgreSQL (conftest)


def make_ws(tmp_path: Path, *pipelines: Pipeline, environments: dict[str, Environment] | None = None) -> Workspace:
    ws = Workspace.open(tmp_path)
    ws.__dict__["config"] = Config(pipelines={p.name: p for p in pipelines}, environments=environments or {})
    return ws


def sh(script: str, **kw: Any) -> ScriptTask:
    return ScriptTask(script, **kw)


def test_stages_in_order_jobs_in_parallel(tmp_path: Path) -> None:
    marker = tmp_path / "order.txt"
    p = Pipeline("p", (
        Stage("one", (Job("a", (sh(f"sleep 0.3; echo one-a >> {marker}"),)), Job("b", (sh(f"sleep 0.3; echo one-b >> {marker}"),)))),
        Stage("two", (Job("c", (sh(f"echo two-c >> {marker}"),)),)),
    ))
    ws = make_ws(tmp_path, p)
    run = ws.run("p")
    assert run.status == Status.PASSED
    lines = marker.read_text().split()
    assert lines[-1] == "two-c" and sorted(lines[:2]) == ["one-a", "one-b"]
    jobs = ws.frames.job_runs.set_index("job")
    # the two jobs of stage one overlapped in time
    assert jobs.loc["a", "started_at"] < jobs.loc["b", "finished_at"]
    assert jobs.loc["b", "started_at"] < jobs.loc["a", "finished_at"]
    # stage two started only after both finished
    assert jobs.loc["c", "started_at"] >= max(jobs.loc["a", "finished_at"], jobs.loc["b", "finished_at"])


def test_failed_job_fails_stage_and_stops_pipeline(tmp_path: Path) -> None:
    p = Pipeline("p", (
        Stage("build", (Job("ok", (sh("true"),)), Job("bad", (sh("echo broken; exit 7"),)))),
        Stage("never", (Job("x", (sh("true"),)),)),
    ))
    ws = make_ws(tmp_path, p)
    run = ws.run("p")
    assert run.status == Status.FAILED and "build" in run.reason
    jr = ws.frames.job_runs.set_index("job")
    assert jr.loc["bad", "exit_code"] == 7 and jr.loc["bad", "status"] == "failed"
    assert jr.loc["ok", "status"] == "passed"
    assert "never" not in set(ws.frames.stage_runs["stage"])
    assert "broken" in Path(jr.loc["bad", "log_path"]).read_text()


def test_a_run_cancelled_by_another_process_between_stages_starts_no_next_stage(tmp_path: Path) -> None:
    """The driver decides the next stage from what it knows after a pass (no read of the run): the
    stage's creation must still refuse a run that another process cancelled in between."""
    from workbench.materials.controls import cancel_now

    p = Pipeline("p", tuple(Stage(name, (Job(f"{name}-job", (sh("true"),)),)) for name in ("one", "two", "three")))
    ws = make_ws(tmp_path, p)

    def listener(event: str, **data: Any) -> None:  # from the second stage on the run was already running
        if event == "stage_finished" and data["stage"].name == "two":  # as `workbench cancel` elsewhere would
            cancel_now(ws, ws.store.run_detail(data["run"].id), "someone else")

    with ws.engine(listener=listener) as engine:
        run = engine.run("p")
    assert run.status == Status.CANCELLED and run.reason == "cancelled by someone else"
    assert list(ws.frames.stage_runs["stage"]) == ["one", "two"]
    assert list(ws.frames.job_runs["job"]) == ["one-job", "two-job"]


def test_run_if_and_argv_never_through_a_shell(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    p = Pipeline("p", (Stage("s", (Job("j", (
        ExecTask("sh", ("-c", "exit 1")),
        ExecTask("sh", ("-c", f"echo skipped >> {out}")),  # run_if passed: skipped after a failure
        ExecTask("sh", ("-c", f"echo on-failure >> {out}"), run_if="failed"),
        ExecTask("sh", ("-c", f"echo always >> {out}"), run_if="any"),
        ExecTask("echo", ("$HOME", "; rm -rf /", "`id`")),
    )),)),))
    ws = make_ws(tmp_path, p)
    run = ws.run("p")
    assert run.status == Status.FAILED
    assert out.read_text().split() == ["on-failure", "always"]
    log = Path(ws.frames.job_runs["log_path"].iloc[0]).read_text()
    assert "skipped (run_if passed)" in log


def test_arguments_are_not_interpreted(tmp_path: Path) -> None:
    p = Pipeline("p", (Stage("s", (Job("j", (ExecTask("echo", ("$HOME", "; touch pwned", "`id`")),)),)),))
    ws = make_ws(tmp_path, p)
    assert ws.run("p").status == Status.PASSED
    log = Path(ws.frames.job_runs["log_path"].iloc[0]).read_text()
    assert "$HOME ; touch pwned `id`" in log
    assert not list(tmp_path.rglob("pwned"))


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    p = Pipeline("p", (Stage("s", (Job("slow", (sh(f"sleep 60 & echo $! > {pidfile}; wait"),), timeout=1.0),)),))
    ws = make_ws(tmp_path, p)
    t = time.monotonic()
    run = ws.run("p")
    assert time.monotonic() - t < 30
    assert run.status == Status.FAILED
    jr = ws.frames.job_runs.iloc[0]
    assert "timed out" in jr["reason"]
    child = int(pidfile.read_text())
    assert not _alive(child)


def _alive(pid: int) -> bool:
    """True if the process exists and is not a zombie waiting for its reaper."""
    for _ in range(50):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.1)
    return True


def test_cancel_runs_on_cancel_and_marks_cancelled(tmp_path: Path) -> None:
    flag = tmp_path / "cleaned"
    p = Pipeline("p", (Stage("s", (Job("j", (
        ExecTask("sleep", ("60",), on_cancel=ExecTask("touch", (str(flag),))),
    )),)),))
    ws = make_ws(tmp_path, p)
    engine = ws.engine()

    def cancel_once_the_job_runs() -> None:  # not after a fixed delay: under load the job may not run yet
        me, end = psutil.Process(), time.monotonic() + 60
        while time.monotonic() < end:
            try:
                if any(c.cmdline() == ["sleep", "60"] for c in me.children(recursive=True)):
                    break
            except psutil.Error:
                pass
            time.sleep(0.05)
        engine.cancel()

    threading.Thread(target=cancel_once_the_job_runs, daemon=True).start()
    run = engine.run("p")
    engine.close()
    assert run.status == Status.CANCELLED
    assert flag.exists()
    assert ws.frames.job_runs.iloc[0]["status"] == "cancelled"


def test_go_environment_variables_and_precedence(tmp_path: Path) -> None:
    dump = tmp_path / "env.txt"
    job = Job("compile", (sh(f"env > {dump}"),), environment_variables={"LEVEL": "job"}, run_instances=2)
    stage = Stage("build", (job,), environment_variables={"LEVEL": "stage", "STAGE_ONLY": "s"})
    p = Pipeline("shop", (stage,), group="shops", environment_variables={"LEVEL": "pipeline", "PIPE_ONLY": "p"},
                 label_template="1.${COUNT}")
    env = Environment("qa", pipelines=("shop",), environment_variables={"LEVEL": "env", "ENV_ONLY": "e"})
    ws = make_ws(tmp_path, p, environments={"qa": env})
    run = ws.run("shop")
    assert run.status == Status.PASSED
    got = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    assert got["LEVEL"] == "job"
    assert (got["STAGE_ONLY"], got["PIPE_ONLY"], got["ENV_ONLY"]) == ("s", "p", "e")
    assert got["GO_PIPELINE_NAME"] == "shop" and got["GO_PIPELINE_COUNTER"] == "1"
    assert got["GO_PIPELINE_LABEL"] == "1.1" and got["GO_STAGE_NAME"] == "build" and got["GO_STAGE_COUNTER"] == "1"
    assert got["GO_JOB_NAME"].startswith("compile-runInstance-") and got["GO_JOB_RUN_COUNT"] == "2"
    assert got["GO_ENVIRONMENT_NAME"] == "qa" and got["GO_PIPELINE_GROUP_NAME"] == "shops"
    assert len(ws.frames.job_runs) == 2


def test_working_directory_outside_job_folder_is_refused(tmp_path: Path) -> None:
    p = Pipeline("p", (Stage("s", (Job("j", (ExecTask("true", working_directory="../../.."),)),)),))
    ws = make_ws(tmp_path, p)
    run = ws.run("p")
    assert run.status == Status.FAILED
    assert "outside the job's folder" in ws.frames.job_runs.iloc[0]["reason"]


def test_missing_command_fails_the_job_with_a_message(tmp_path: Path) -> None:
    p = Pipeline("p", (Stage("s", (Job("j", (ExecTask("no-such-command-xyz"),)),)),))
    ws = make_ws(tmp_path, p)
    assert ws.run("p").status == Status.FAILED
    assert "command not found: no-such-command-xyz" in ws.frames.job_runs.iloc[0]["reason"]


def test_log_is_streamed_while_the_job_runs(tmp_path: Path) -> None:
    p = Pipeline("p", (Stage("s", (Job("j", (sh("echo first-line; sleep 2; echo second-$((1+1))"),)),)),))
    ws = make_ws(tmp_path, p)
    engine = ws.engine()
    seen: dict[str, str] = {}

    def peek() -> None:
        time.sleep(1.0)
        logs = list((tmp_path / ".workbench" / "logs").rglob("*.log"))
        seen["text"] = logs[0].read_text() if logs else ""

    t = threading.Thread(target=peek)
    t.start()
    run = engine.run("p")
    t.join()
    engine.close()
    assert run.status == Status.PASSED
    assert "first-line\n" in seen["text"] and "second-2" not in seen["text"]


def test_secrets_masked_in_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    monkeypatch.setenv("WORKBENCH_SECRET_KEY", key)
    token = Fernet(key.encode()).encrypt(b"hunter2-very-secret").decode()
    p = Pipeline("p", (Stage("s", (Job("j", (sh("echo pw=$DB_PASSWORD"),), secure_variables={"DB_PASSWORD": token}),)),))
    ws = make_ws(tmp_path, p)
    assert ws.run("p").status == Status.PASSED
    log = Path(ws.frames.job_runs.iloc[0]["log_path"]).read_text()
    assert "pw=********" in log and "hunter2" not in log


def test_nearer_plain_variable_beats_a_farther_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    monkeypatch.setenv("WORKBENCH_SECRET_KEY", key)
    token = Fernet(key.encode()).encrypt(b"env-level-secret").decode()
    dump = tmp_path / "env.txt"
    job = Job("j", (sh(f"echo X=$X > {dump}"),), environment_variables={"X": "job-plain"})
    p = Pipeline("p", (Stage("s", (job,)),))
    env = Environment("e", pipelines=("p",), secure_variables={"X": token})
    ws = make_ws(tmp_path, p, environments={"e": env})
    assert ws.run("p").status == Status.PASSED
    assert dump.read_text().strip() == "X=job-plain"


def test_script_tasks_from_yaml_honour_run_if_and_on_cancel(tmp_path: Path) -> None:
    """Both spellings a GoCD file can use (the mapping form and the script-executor plugin form) run as written."""
    out = tmp_path / "out.txt"
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "p.yaml").write_text(f"""\
pipelines:
  p:
    stages:
      - s:
          tasks:
            - script: exit 3
            - script: echo skipped >> {out}
            - script: {{script: echo on-failure >> {out}, run_if: failed}}
            - plugin:
                configuration: {{id: script-executor, version: 1}}
                options: {{script: echo always >> {out}}}
                run_if: any
      - slow:
          timeout: 1s
          tasks:
            - script: {{script: sleep 60, on_cancel: {{script: echo cleaned >> {out}}}}}
""")
    ws = Workspace.open(tmp_path)
    run = ws.run("p")
    assert run.status == Status.FAILED
    assert out.read_text().split() == ["on-failure", "always"]
    (tmp_path / "pipelines" / "p.yaml").write_text((tmp_path / "pipelines" / "p.yaml").read_text()
                                                   .replace("- script: exit 3", "- script: 'true'")
                                                   .replace("- script: echo skipped", "- script: echo ran"))
    ws = Workspace.open(tmp_path)
    run = ws.run("p")
    assert run.status == Status.FAILED  # the slow stage timed out
    assert out.read_text().split() == ["on-failure", "always", "ran", "always", "cleaned"]
