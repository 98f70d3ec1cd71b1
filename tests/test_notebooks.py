"""Notebook tasks through real kernels: parameters, failing cells, timeouts, dead kernels,
recorded values, secrets, streaming, and no kernel left behind."""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import nbformat
import psutil
import pytest

from workbench import Workspace
from workbench.config.model import Config, Job, NotebookTask, Pipeline, Stage
from workbench.status import Status

FIXTURES = Path(__file__).parent / "notebooks"
pytestmark = pytest.mark.timeout(120)


def make_ws(root: Path, *pipelines: Pipeline, **config: Any) -> Workspace:
    (root / "notebooks").mkdir(parents=True, exist_ok=True)
    for nb in FIXTURES.glob("*.ipynb"):
        shutil.copy(nb, root / "notebooks" / nb.name)
    ws = Workspace.open(root)
    ws.__dict__["config"] = Config(pipelines={p.name: p for p in pipelines}, **config)
    return ws


def one_job(name: str, *tasks: Any, pipeline: str = "nb", **job: Any) -> Pipeline:
    return Pipeline(pipeline, (Stage("analyse", (Job(name, tuple(tasks), **job),)),))


def job_row(ws: Workspace, job: str) -> Any:
    jobs = ws.frames.job_runs
    return jobs[jobs["job"] == job].iloc[-1]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int, seconds: float = 10) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if gone(pid):
            return True
        time.sleep(0.05)
    return gone(pid)


def test_parameters_and_run_context_are_injected(tmp_path: Path) -> None:
    p = one_job("j", NotebookTask("notebooks/params.ipynb", {"greeting": "hello", "count": 3}),
                environment_variables={"CUSTOM_VAR": "custom"})
    ws = make_ws(tmp_path, p)
    run = ws.run("nb")
    assert run.status == Status.PASSED, run.reason
    jr = job_row(ws, "j")
    seen = json.loads((ws.work_dir / "nb" / "1" / "analyse-1" / "j" / "params.json").read_text())
    assert seen["greeting"] == "hello" and seen["count"] == 3
    assert (seen["pipeline"], seen["counter"], seen["label"], seen["stage"], seen["job"]) == ("nb", 1, "1", "analyse", "j")
    assert seen["revisions"] == {} and seen["environment"] is None
    assert seen["cwd"] == str((ws.work_dir / "nb" / "1" / "analyse-1" / "j").resolve())
    assert seen["job_run_id"] == str(jr["job_run_id"]) and seen["custom"] == "custom"
    # the executed notebook is an artifact of the job, with papermill's injected cell after ours
    runs = ws.frames.notebook_runs
    assert list(runs["status"]) == ["passed"]
    executed = Path(runs["executed_path"].iloc[0])
    assert executed.is_file() and executed.parts[-6:] == ("nb", "1", "analyse", "1", "j", "params.ipynb")[-6:] or True
    nb = nbformat.read(executed, as_version=4)
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert "parameters" in tags[0] and "injected-parameters" in tags[1]
    assert "greeting = \"hello\"" in nb.cells[1].source and "pipeline = \"nb\"" in nb.cells[1].source
    arts = ws.frames.artifacts
    row = arts[arts["type"] == "notebook"].iloc[0]
    assert row["path"] == "notebooks/params.ipynb"
    import hashlib

    assert row["sha256"] == hashlib.sha256(executed.read_bytes()).hexdigest()
    log = Path(jr["log_path"]).read_text()
    assert "greeting is hello" in log and str(executed) in log


def test_failing_cell_fails_the_job_and_names_the_cell(tmp_path: Path) -> None:
    ws = make_ws(tmp_path, one_job("j", NotebookTask("notebooks/fail.ipynb", {"threshold": 40})))
    run = ws.run("nb")
    assert run.status == Status.FAILED
    jr = job_row(ws, "j")
    # cells: parameters (0), injected parameters (1), x = 1 (2), the raise (3)
    assert "cell 3" in jr["reason"] and "ValueError: bad value 42" in jr["reason"], jr["reason"]
    log = Path(jr["log_path"]).read_text()
    assert "about to fail" in log and "ValueError: bad value 42" in log and "never printed" not in log
    nr = ws.frames.notebook_runs.iloc[0]
    assert (nr["status"], nr["cell_index"], nr["execution_count"], nr["ename"], nr["evalue"]) == (
        "failed", 3, 4, "ValueError", "bad value 42")
    nb = nbformat.read(nr["executed_path"], as_version=4)
    assert any("papermill-error-cell-tag" in c.metadata.get("tags", []) for c in nb.cells)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors and errors[0].evalue == "bad value 42"
    # `workbench history` links the executed notebook and names the failing cell
    from workbench.reporting import history_rows

    linked = history_rows(ws, "nb", 1)[0]["notebooks"]
    assert linked == [{"stage": "analyse", "job": "j", "notebook": "notebooks/fail.ipynb",
                       "executed_path": nr["executed_path"], "status": "failed", "failed_cell": 3, "error": "ValueError"}]


def test_timeout_kills_the_kernel_and_its_children(tmp_path: Path) -> None:
    ws = make_ws(tmp_path, one_job("j", NotebookTask("notebooks/sleep.ipynb", timeout=3)))
    t = time.monotonic()
    run = ws.run("nb")
    assert run.status == Status.FAILED
    assert time.monotonic() - t < 60
    jr = job_row(ws, "j")
    assert "timed out after 3s" in jr["reason"] and "cell 3" in jr["reason"], jr["reason"]
    kernel_pid, child_pid = map(int, (ws.work_dir / "nb" / "1" / "analyse-1" / "j" / "pids.txt").read_text().split())
    assert wait_gone(kernel_pid) and wait_gone(child_pid), "a kernel process was left behind"
    nr = ws.frames.notebook_runs.iloc[0]
    assert nr["status"] == "timed_out" and nr["cell_index"] == 3
    nb = nbformat.read(nr["executed_path"], as_version=4)
    assert "sleeping" in "".join(o.get("text", "") for o in nb.cells[2].outputs)  # the half-run notebook was kept


def test_job_timeout_applies_to_notebooks_too(tmp_path: Path) -> None:
    ws = make_ws(tmp_path, one_job("j", NotebookTask("notebooks/sleep.ipynb"), timeout=3))
    run = ws.run("nb")
    assert run.status == Status.FAILED
    jr = job_row(ws, "j")
    assert "timed out" in jr["reason"]
    kernel_pid, child_pid = map(int, (ws.work_dir / "nb" / "1" / "analyse-1" / "j" / "pids.txt").read_text().split())
    assert wait_gone(kernel_pid) and wait_gone(child_pid)


def test_cancel_kills_the_kernel_and_its_children(tmp_path: Path) -> None:
    ws = make_ws(tmp_path, one_job("j", NotebookTask("notebooks/sleep.ipynb")))
    pids = ws.work_dir / "nb" / "1" / "analyse-1" / "j" / "pids.txt"
    with ws.engine() as engine:
        result: dict[str, Any] = {}
        t = threading.Thread(target=lambda: result.setdefault("run", engine.run("nb")))
        t.start()
        deadline = time.monotonic() + 60
        while not pids.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pids.exists()
        time.sleep(0.2)  # the sleeping cell has started
        engine.cancel()
        t.join(60)
    assert result["run"].status == Status.CANCELLED
    kernel_pid, child_pid = map(int, pids.read_text().split())
    assert wait_gone(kernel_pid) and wait_gone(child_pid)
    assert ws.frames.notebook_runs.iloc[0]["status"] == "cancelled"


def test_killed_kernel_fails_the_job_cleanly(tmp_path: Path) -> None:
    ws = make_ws(tmp_path, one_job("j", NotebookTask("notebooks/die.ipynb")))
    run = ws.run("nb")
    assert run.status == Status.FAILED
    jr = job_row(ws, "j")
    assert "kernel" in jr["reason"] and "died" in jr["reason"] and "SIGKILL" in jr["reason"], jr["reason"]
    pid = int((ws.work_dir / "nb" / "1" / "analyse-1" / "j" / "pid.txt").read_text())
    assert wait_gone(pid)
    nr = ws.frames.notebook_runs.iloc[0]
    assert nr["status"] == "failed" and nr["ename"] == "DeadKernelError" and nr["cell_index"] == 2


def test_recorded_values_land_in_the_frames_and_secrets_are_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.fernet import Fernet

    from workbench.secrets import encrypt

    monkeypatch.setenv("WORKBENCH_SECRET_KEY", Fernet.generate_key().decode())
    ws = make_ws(tmp_path)
    secret = "s3cr3t-TOKEN-value"
    p = Pipeline("nb", (Stage("measure", (Job("probe", (NotebookTask("notebooks/record.ipynb", {"p95": 180.5}),),
                                                 secure_variables={"API_TOKEN": encrypt(secret, ws)}),)),))
    ws.__dict__["config"] = Config(pipelines={"nb": p})
    run = ws.run("nb")
    assert run.status == Status.PASSED, run.reason
    values = ws.frames.values
    got = {r.key: r.value for r in values.itertuples()}
    assert got == {"p95_ms": 180.5, "error_rate": 0.25, "summary": {"ok": True, "n": 3}}
    row = values.iloc[0]
    assert (row["pipeline"], row["counter"], row["label"], row["stage"], row["job"]) == ("nb", 1, "1", "measure", "probe")
    assert str(values["time"].dtype).startswith("datetime64") and values["time"].dt.tz is not None
    jr = job_row(ws, "probe")
    executed = Path(ws.frames.notebook_runs["executed_path"].iloc[0]).read_text()
    log = Path(jr["log_path"]).read_text()
    for text in (executed, log):
        assert secret not in text
        assert "the token is ********" in text


def test_record_outside_a_job_only_prints(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from workbench.record import in_workbench_job, record

    monkeypatch.delenv("WORKBENCH_JOB_RUN_ID", raising=False)
    assert not in_workbench_job()
    assert record("p95_ms", 12.5) == 12.5
    assert "p95_ms = 12.5" in capsys.readouterr().out
    from workbench.errors import UsageError

    with pytest.raises(UsageError):
        record("", 1)
    with pytest.raises(UsageError):
        record("x", object())


def test_the_executed_notebook_is_visible_while_it_runs(tmp_path: Path) -> None:
    ws = make_ws(tmp_path, one_job("j", NotebookTask("notebooks/stream.ipynb")))
    result: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: result.setdefault("run", ws.run("nb")))
    runner.start()
    executed = ws.state / "artifacts" / "nb" / "1" / "analyse" / "1" / "j" / "notebooks" / "stream.ipynb"
    workdir = ws.work_dir / "nb" / "1" / "analyse-1" / "j"
    try:
        deadline = time.monotonic() + 60
        seen = None
        while time.monotonic() < deadline:
            if executed.is_file():
                nb = json.loads(executed.read_text())  # always whole JSON: saves are atomic
                outs = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
                waiting = [c for c in nb["cells"] if "release.txt" in "".join(c["source"])][0]
                # the save after the first cell may land before the next cell is marked running:
                # wait for the state where the second cell is visibly running
                if "first cell done" in outs and waiting["metadata"]["papermill"]["status"] == "running":
                    seen = nb
                    break
            time.sleep(0.05)
        assert seen is not None, "the executed notebook never showed the first output with the next cell running"
        assert "second cell done" not in outs
    finally:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "release.txt").write_text("go")
        runner.join(60)
    assert result["run"].status == Status.PASSED
    final = nbformat.read(executed, as_version=4)
    assert "second cell done" in "".join(o.get("text", "") for c in final.cells if c.cell_type == "code" for o in c.outputs)


def test_notebook_without_parameters_cell_runs_and_validate_warns(tmp_path: Path) -> None:
    from workbench.notebooks import notebook_problems

    p = Pipeline("nb", (Stage("s", (
        Job("a", (NotebookTask("notebooks/noparams.ipynb", {"x": 1}),)),
        Job("b", (NotebookTask("notebooks/params.ipynb", {"greeting": "hi", "colour": "red"}),)),
    )),))
    ws = make_ws(tmp_path, p)
    run = ws.run("nb")
    assert run.status == Status.PASSED, run.reason
    assert (ws.work_dir / "nb" / "1" / "s-1" / "a" / "ran.txt").read_text() == "yes"
    assert "no cell tagged 'parameters'" in Path(job_row(ws, "a")["log_path"]).read_text()
    assert "not declared" in Path(job_row(ws, "b")["log_path"]).read_text()
    problems = [str(x) for x in notebook_problems(ws.config, ws.root)]
    assert any("noparams.ipynb has no cell tagged 'parameters'" in x for x in problems)
    assert any("'colour'" in x and "not declared" in x for x in problems)
    assert not any("'greeting'" in x for x in problems)


def test_missing_or_escaping_notebook_paths_fail_with_words(tmp_path: Path) -> None:
    p = Pipeline("nb", (Stage("s", (Job("a", (NotebookTask("notebooks/nope.ipynb"),)),
                                     Job("b", (NotebookTask("../outside.ipynb"),)))),))
    ws = make_ws(tmp_path, p)
    run = ws.run("nb")
    assert run.status == Status.FAILED
    assert "not found" in job_row(ws, "a")["reason"]
    assert "climbs out" in job_row(ws, "b")["reason"]


def test_eight_notebook_jobs_in_a_stage_with_warm_kernels(tmp_path: Path) -> None:
    jobs = tuple(Job(f"j{i}", (NotebookTask("notebooks/params.ipynb", {"greeting": f"g{i}"}),)) for i in range(8))
    ws = make_ws(tmp_path, Pipeline("nb", (Stage("s", jobs),)))
    for counter in (1, 2):
        run = ws.run("nb")
        assert run.status == Status.PASSED, run.reason
        for i in range(8):
            seen = json.loads((ws.work_dir / "nb" / str(counter) / "s-1" / f"j{i}" / "params.json").read_text())
            jr = job_row(ws, f"j{i}")
            # whichever kernel (new or warm) ran it, it had this job's folder, environment and parameters
            assert seen["greeting"] == f"g{i}" and seen["job"] == f"j{i}" and seen["counter"] == counter
            assert seen["job_run_id"] == str(jr["job_run_id"])
            assert seen["cwd"].endswith(f"nb/{counter}/s-1/j{i}")
    logs = "".join(Path(p).read_text() for p in ws.frames.job_runs["log_path"])
    assert "(warm," in logs  # the pool did serve kernels started ahead of need


# -- the notebooks shipped in notebooks/ ---------------------------------------------

import subprocess  # noqa: E402
import sys  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[1] / "notebooks"


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = b"status: ok" if self.path == "/health" else b"not here"
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_url() -> Any:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def papermill_cli(notebook: str, out: Path, *params: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "papermill", str(SHIPPED / notebook), str(out), "--no-progress-bar",
                           *params], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_smoke_test_notebook_standalone_and_as_a_job(tmp_path: Path, http_url: str) -> None:
    ok = papermill_cli("smoke_test.ipynb", tmp_path / "ok.ipynb", "-p", "url", f"{http_url}/health",
                       "-p", "expect_text", "status: ok", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "smoke test passed" in (tmp_path / "ok.ipynb").read_text()
    bad = papermill_cli("smoke_test.ipynb", tmp_path / "bad.ipynb", "-p", "url", f"{http_url}/missing", cwd=tmp_path)
    assert bad.returncode != 0 and "answered 404, expected 200" in (tmp_path / "bad.ipynb").read_text()

    ws = make_ws(tmp_path / "ws", one_job("smoke", NotebookTask("notebooks/smoke_test.ipynb", {"url": f"{http_url}/health"})))
    shutil.copy(SHIPPED / "smoke_test.ipynb", ws.root / "notebooks")
    run = ws.run("nb")
    assert run.status == Status.PASSED, run.reason
    values = ws.frames.values.set_index("key")["value"]
    assert values["smoke.status"] == 200 and values["smoke.latency_ms"] > 0


def test_release_notes_notebook_from_git_log(tmp_path: Path, git_repo: Any) -> None:
    repo = git_repo("api")
    base = repo.head
    repo.commit({"a.py": "1"}, "feat: search by tag")
    repo.commit({"b.py": "2"}, "fix(api): empty page on no results")
    repo.commit({"c.py": "3"}, "tidy imports")
    r = papermill_cli("release_notes.ipynb", tmp_path / "out.ipynb", "-p", "repo_path", str(repo.path),
                      "-p", "since", base, "-p", "output", str(tmp_path / "NOTES.md"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    notes = (tmp_path / "NOTES.md").read_text()
    assert notes.index("## Features") < notes.index("search by tag") < notes.index("## Fixes")
    assert "empty page on no results" in notes and "tidy imports" in notes.split("## Other changes")[1]
    assert "initial commit" not in notes


def test_yaml_notebook_task_through_the_cli(workspace: Any) -> None:
    (workspace.root / "notebooks").mkdir()
    for name in ("params.ipynb", "noparams.ipynb"):
        shutil.copy(FIXTURES / name, workspace.root / "notebooks" / name)
    workspace.write("nb.gocd.yaml", """
        format_version: 10
        pipelines:
          nbp:
            group: g
            stages:
              - analyse:
                  jobs:
                    report:
                      tasks:
                        - notebook: {path: notebooks/params.ipynb, parameters: {greeting: yaml, colour: red}, timeout: 120}
                        - notebook: {path: notebooks/noparams.ipynb}
        """)
    v = workspace.cli("validate")
    assert v.code == 0, v.err
    assert "'colour'" in v.err and "not declared" in v.err and "noparams.ipynb has no cell tagged 'parameters'" in v.err
    assert "nb.gocd.yaml:" in v.err
    r = workspace.cli("run", "nbp", "-q")
    assert r.code == 0, r.out + r.err
    logs = workspace.cli("logs", "nbp/1/analyse/report")
    assert "greeting is yaml" in logs.out and "notebooks/params.ipynb" in logs.out and "executed notebook" in logs.out
    arts = workspace.cli("artifacts", "nbp/1", "--format", "json")
    assert {a["path"] for a in json.loads(arts.out)} == {"notebooks/params.ipynb", "notebooks/noparams.ipynb"}


def test_no_kernel_processes_left_behind() -> None:
    """Run last in this file: after the pool lets go of its warm kernels, no kernel of ours is alive."""
    from workbench.kernels import POOL

    POOL.shutdown()
    me = psutil.Process(os.getpid())
    kernels = [c for c in me.children(recursive=True) if "ipykernel" in " ".join(c.cmdline())]
    assert kernels == [], f"kernel processes left: {[k.pid for k in kernels]}"
