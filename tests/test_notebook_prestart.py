"""Kernels started before a run's first notebook job asks for one, with real kernels and processes:
the job still gets its own folder, environment and parameters; a one-shot `workbench run` starts
no spare kernel and leaves no kernel process behind."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest

from workbench import Workspace
from workbench.config.model import Config, Job, NotebookTask, Pipeline, Stage
from workbench.kernels import POOL, KernelPool, _neutral_env
from workbench.status import Status

from conftest import CliResult

FIXTURES = Path(__file__).parent / "notebooks"
pytestmark = pytest.mark.timeout(120)


def kernels_tagged(tag: str) -> list[psutil.Process]:
    """Live kernel processes whose environment carries ``tag`` (whoever their parent is now)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if "ipykernel" in " ".join(p.info["cmdline"] or ()) and p.status() != psutil.STATUS_ZOMBIE \
                    and p.environ().get("WB_TEST_TAG") == tag:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def wait_until(cond: Any, seconds: float = 15) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return bool(cond())


@pytest.fixture
def pool() -> Iterator[Any]:
    """The process's pool, emptied before and after, its spare policy restored."""
    POOL.shutdown()
    keep = POOL.keep_spare
    yield POOL
    POOL.keep_spare = keep
    wait_until(lambda: POOL._starting == 0)
    POOL.shutdown()


def make_ws(root: Path, *pipelines: Pipeline) -> Workspace:
    (root / "notebooks").mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / "params.ipynb", root / "notebooks" / "params.ipynb")
    ws = Workspace.open(root)
    ws.__dict__["config"] = Config(pipelines={p.name: p for p in pipelines})
    return ws


def test_acquire_takes_the_kernel_being_launched_instead_of_starting_another(tmp_path: Path) -> None:
    p = KernelPool(enabled=True)
    try:
        p.prewarm("python3", 1)  # the launch is in flight in a background thread
        kernel = p.acquire("python3", _neutral_env(), str(tmp_path))
        try:
            assert kernel.warm and kernel.alive()
            assert p._starting == 0 and p.idle_pids() == []
        finally:
            kernel.dispose()
            p.release(kernel)
        assert wait_until(lambda: not kernel.alive())
    finally:
        p.close()


def test_one_shot_run_prestarts_the_kernel_and_keeps_no_spare(tmp_path: Path, pool: Any) -> None:
    jobs = (Job("a", (NotebookTask("notebooks/params.ipynb", {"greeting": "first"}),)),
            Job("b", (NotebookTask("notebooks/params.ipynb", {"greeting": "second"}),)))
    ws = make_ws(tmp_path, Pipeline("nb", (Stage("s", jobs),)))
    with ws.engine(one_shot=True, max_parallel=2) as engine:
        run = engine.run("nb")
    assert run.status == Status.PASSED, run.reason
    frame = ws.frames.job_runs
    for name, greeting in (("a", "first"), ("b", "second")):
        seen = json.loads((ws.work_dir / "nb" / "1" / "s-1" / name / "params.json").read_text())
        assert seen["greeting"] == greeting and seen["job"] == name  # a prestarted kernel, this job's parameters
        assert seen["cwd"] == str((ws.work_dir / "nb" / "1" / "s-1" / name).resolve())
        log = Path(frame[frame["job"] == name]["log_path"].iloc[-1]).read_text()
        assert "(warm," in log  # both kernels were started by the run hook, before the jobs asked
    # the run had two notebook jobs and got two kernels: none was started for a later run
    assert wait_until(lambda: pool._starting == 0)
    assert pool.idle_pids() == []
    me = psutil.Process(os.getpid())
    assert wait_until(lambda: not [c for c in me.children(recursive=True) if "ipykernel" in " ".join(c.cmdline())])


def test_long_lived_engine_keeps_a_spare_kernel(tmp_path: Path, pool: Any) -> None:
    pool.keep_spare = False  # as a one-shot run earlier in this process (an in-process CLI call) leaves it
    ws = make_ws(tmp_path, Pipeline("nb", (Stage("s", (Job("a", (NotebookTask("notebooks/params.ipynb"),)),)),)))
    run = ws.run("nb")
    assert run.status == Status.PASSED, run.reason
    assert wait_until(lambda: len(pool.idle_pids()) == 1)  # the next run's kernel, as before


def two_notebook_jobs(workspace: Any) -> None:
    (workspace.root / "notebooks").mkdir()
    shutil.copy(FIXTURES / "params.ipynb", workspace.root / "notebooks" / "params.ipynb")
    workspace.write("nb.gocd.yaml", """
        format_version: 10
        pipelines:
          nbp:
            group: g
            stages:
              - s:
                  jobs:
                    a: {tasks: [{notebook: {path: notebooks/params.ipynb, parameters: {greeting: a}}}]}
                    b: {tasks: [{notebook: {path: notebooks/params.ipynb, parameters: {greeting: b}}}]}
        """)


def run_watching_kernels(workspace: Any, *args: str, env: dict[str, str] | None = None) -> tuple[Any, set[int]]:
    """``workbench ARGS`` in a fresh process, and the pid of every kernel it had while it ran."""
    tag = uuid.uuid4().hex
    seen: set[int] = set()
    full_env = {**os.environ, "WB_TEST_TAG": tag, "WORKBENCH_WORKSPACE": str(workspace.root), **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "workbench", *args], cwd=workspace.root,
                            env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def watch() -> None:
        while proc.poll() is None:
            seen.update(k.pid for k in kernels_tagged(tag))
            time.sleep(0.01)

    watching = threading.Thread(target=watch)
    watching.start()
    out, err = proc.communicate(timeout=120)
    watching.join()
    assert wait_until(lambda: kernels_tagged(tag) == [], 10), [k.pid for k in kernels_tagged(tag)]  # none left
    return CliResult(proc.returncode, out, err), seen


def test_workbench_run_cli_boots_each_first_stage_kernel_once_and_leaves_none(workspace: Any) -> None:
    """The CLI starts the kernels from its first look at the file; the run hook then starts none more,
    each job gets its own parameters on one of them, and no kernel outlives the process."""
    two_notebook_jobs(workspace)
    r, seen = run_watching_kernels(workspace, "run", "nbp", "-q", "-j", "2")
    assert r.code == 0, r.out + r.err
    assert len(seen) == 2, seen  # two jobs, two kernels: none started twice, no spare
    for job in ("a", "b"):
        params = json.loads((workspace.root / ".workbench" / "work" / "nbp" / "1" / "s-1" / job / "params.json").read_text())
        assert params["greeting"] == job and params["job"] == job
        assert "(warm," in workspace.cli("logs", f"nbp/1/s/{job}").out  # started before the job asked


def test_workbench_run_boots_no_kernel_here_when_workbench_yaml_sends_jobs_to_dask(workspace: Any) -> None:
    two_notebook_jobs(workspace)
    (workspace.root / "workbench.yaml").write_text("executor: dask://tcp://127.0.0.1:9\n")  # nobody listens
    r, seen = run_watching_kernels(workspace, "run", "nbp", "-q",
                                   env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"})
    assert r.code != 0 and "cannot reach the Dask scheduler" in r.err, r.out + r.err
    assert seen == set()  # the jobs were never going to run in this process


def test_kernels_are_the_standard_ipython_kernel_without_debugpy_loaded(tmp_path: Path) -> None:
    from jupyter_client import BlockingKernelClient

    p = KernelPool(enabled=True)
    kernel = p.launch("python3", dict(os.environ), str(tmp_path))
    try:
        kc = BlockingKernelClient(connection_file=kernel.km.connection_file)
        kc.load_connection_file()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=60)
            info = kc.kernel_info(reply=True, timeout=30)["content"]
            assert info["implementation"] == "ipython" and info["language_info"]["name"] == "python"
            out: list[str] = []
            reply = kc.execute_interactive(
                "import sys, os\nprint('debugpy' in sys.modules, os.getcwd())\nimport debugpy\nprint(debugpy.__name__)",
                timeout=30, output_hook=lambda m: out.append(m["content"].get("text", "")))
            assert reply["content"]["status"] == "ok"
            # debugpy was not imported at start, a notebook can still import it; the kernel runs in its folder
            assert "".join(out).split() == ["False", str(tmp_path), "debugpy"]
        finally:
            kc.stop_channels()
    finally:
        kernel.dispose()
        p.close()
    assert not kernel.alive()


def test_the_engine_process_does_not_import_ipython(tmp_path: Path) -> None:
    """Only kernels run IPython; finding the kernel spec must not import it in the engine (0.1 s).

    Nor does a run without git materials import GitPython (0.1-0.2 s), nor papermill's
    requests (0.1 s), nor fsspec for a local artifact folder (60 ms): each is imported when first used."""

    make_ws(tmp_path)
    script = f"""
import sys
from workbench import Workspace
from workbench.config.model import Config, Job, NotebookTask, Pipeline, Stage
ws = Workspace.open({str(tmp_path)!r})
ws.__dict__["config"] = Config(pipelines={{"nb": Pipeline("nb", (Stage("s", (Job("a", (NotebookTask("notebooks/params.ipynb", {{"greeting": "hi"}}),)),)),))}})
run = ws.run("nb")
print(run.status.value, *(m in sys.modules for m in ("IPython", "git", "urllib3", "fsspec")))
import papermill.iorw, requests
print(papermill.iorw.requests.get is requests.get, requests.Session.__module__, "urllib3" in sys.modules)
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-2].split() == ["passed", "False", "False", "False", "False"]
    assert lines[-1].split() == ["True", "requests.sessions", "True"]  # and the real module once it is used
