"""The Dask executor against a real cluster: a LocalCluster scheduler and real agents.

The agents are ``workbench agent`` processes (a Dask nanny and worker each)
with different resources and environments, so routing, waiting for an agent,
run-on-all-agents, a worker killed mid-job, log streaming and cancel are all
exercised through Dask itself, nothing mocked.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from dask_fixtures import agent_cluster, require_distributed  # noqa: E402

require_distributed()

from conftest import WorkspaceFactory  # noqa: E402
from workbench.errors import ConfigError, ExecutionError, UsageError  # noqa: E402
from workbench.executors import make_executor  # noqa: E402
from workbench.executors.dask_agent import agent_resources, job_needs, serves, split_tags  # noqa: E402
from workbench.status import Status  # noqa: E402

AGENTS = {  # name -> workbench agent options ({work} = a folder of the agent's own)
    "rpm-1": ["--resources", "rpm,linux", "--work-dir", "{work}"],
    "docker-1": ["--resources", "docker,linux", "--work-dir", "{work}"],
    "prod-1": ["--resources", "linux", "--environment", "prod"],
    "doomed": ["--resources", "doomed"],
}

PIPELINES = """\
format_version: 10
environments:
  prod:
    pipelines: [deploy]
pipelines:
  build:
    group: g
    stages:
      - compile:
          jobs:
            rpm:
              resources: [rpm]
              tasks:
                - script: echo "packaging on $(hostname) as $GO_JOB_NAME"; exit 3
            image:
              resources: [docker]
              tasks:
                - exec: {command: sh, arguments: [-c, "echo image built"]}
            plain:
              tasks:
                - exec: {command: "true"}
  deploy:
    group: g
    stages:
      - go:
          jobs:
            d:
              tasks:
                - script: echo "deploying to $GO_ENVIRONMENT_NAME"
  everywhere:
    group: g
    stages:
      - s:
          jobs:
            probe:
              run_instances: all
              resources: [linux]
              tasks:
                - script: echo "copy $GO_JOB_RUN_INDEX of $GO_JOB_RUN_COUNT"
  gpu:
    group: g
    stages:
      - train:
          jobs:
            fit:
              resources: [gpu]
              tasks:
                - exec: {command: "true"}
            tune:
              resources: [tpu]
              tasks:
                - exec: {command: "true"}
  doomed:
    group: g
    stages:
      - s:
          jobs:
            victim:
              resources: [doomed]
              tasks:
                - script: |
                    echo run >> "$MARK/runs.txt"
                    echo "$$" > "$MARK/pgid"
                    echo "$PPID" > "$MARK/worker.pid"
                    echo started
                    sleep 60
                    echo never
            bystander:
              resources: [doomed]
              tasks:
                - script: echo ran >> "$MARK/bystander.txt"
  chatty:
    group: g
    stages:
      - s:
          jobs:
            talk:
              resources: [rpm]
              tasks:
                - script: |
                    echo first line
                    for i in $(seq 300); do [ -e "$MARK/go" ] && break; sleep 0.1; done
                    echo second line
  shared:
    group: g
    parameters: {release: "2.0"}
    stages:
      - make:
          jobs:
            pack:
              resources: [rpm]
              artifacts:
                - build: {source: out/app.txt, destination: dist}
              tasks:
                - script: mkdir -p out && echo "built by $GO_JOB_NAME in $PWD" > out/app.txt
      - use:
          jobs:
            unpack:
              resources: [docker]
              tasks:
                - fetch: {stage: make, job: pack, source: dist/app.txt, is_file: true}
                - script: cat app.txt; echo "unpacked in $PWD"
            report:
              resources: [rpm]
              tasks:
                - notebook: {path: notebooks/report.ipynb, parameters: {release: "#{release}"}}
  long:
    group: g
    stages:
      - s:
          jobs:
            wait:
              resources: [docker]
              tasks:
                - script: |
                    echo "$$" > "$MARK/pgid"
                    sleep 60 &
                    echo "$!" > "$MARK/sleep.pid"
                    wait
                    echo never > "$MARK/never"
"""


NOTEBOOK = {
    "cells": [
        {"cell_type": "code", "execution_count": None, "id": "p", "metadata": {"tags": ["parameters"]}, "outputs": [],
         "source": ["release = 'dev'"]},
        {"cell_type": "code", "execution_count": None, "id": "c", "metadata": {}, "outputs": [],
         "source": ["print(f'releasing {release}')"]},
    ],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                 "language_info": {"name": "python"}},
    "nbformat": 4, "nbformat_minor": 5,
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A LocalCluster scheduler (no workers of its own) with four ``workbench agent`` processes."""
    logs = tmp_path_factory.mktemp("agents")
    with agent_cluster(logs, {name: [o.format(work=logs / f"work-{name}") for o in opts]
                              for name, opts in AGENTS.items()}) as cl:
        yield cl


@pytest.fixture
def ws(workspace: WorkspaceFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WorkspaceFactory:
    workspace.write("all.gocd.yaml", PIPELINES)
    mark = tmp_path / "mark"
    mark.mkdir()
    monkeypatch.setenv("MARK", str(mark))  # the engine's environment reaches the job's
    workspace.mark = mark  # type: ignore[attr-defined]
    return workspace


def _executor(cluster: Any, **options: Any) -> Any:
    return make_executor(f"dask://{cluster.scheduler_address}", poll_interval=0.3, **options)


def _run_in_thread(engine: Any, pipeline: str) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}
    t = threading.Thread(target=lambda: result.setdefault("run", engine.run(pipeline)), daemon=True)
    t.start()
    return t, result


def _until(predicate: Any, what: str, timeout: float = 30) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def _jobs(w: Any) -> Any:
    return w.frames.job_runs.set_index("job")


# -- pure pieces --------------------------------------------------------------
def test_agent_tags_follow_gocd_rules() -> None:
    prod = agent_resources(["rpm"], ["prod"])
    free = agent_resources(["rpm"], [])
    assert serves(prod, job_needs(["rpm"], "prod")) and not serves(prod, job_needs(["rpm"], None))
    assert serves(free, job_needs(["rpm"], None)) and not serves(free, job_needs(["rpm"], "prod"))
    assert not serves(free, job_needs(["rpm", "docker"], None))
    assert split_tags(agent_resources(["rpm", "docker"], ["prod", "qa"])) == (["docker", "rpm"], ["prod", "qa"])


def test_job_spec_survives_pickling(ws: WorkspaceFactory) -> None:
    """What goes to an agent is plain data: tasks of every kind, artifacts, context."""
    from workbench.executors import JobSpec

    w = ws.open()
    stages = w.config.pipeline("shared").stages
    for job in (stages[0].jobs[0], *stages[1].jobs):
        spec = JobSpec(7, "shared", 1, "s", 1, job.name, job.tasks, {"A": "1"}, "/w", "/l.log", "/ws",
                       resources=job.resources, context={"artifacts": job.artifacts, "revisions": {"git": "abc"}})
        assert pickle.loads(pickle.dumps(spec)) == spec


def test_bad_executor_settings_are_clear_errors(ws: WorkspaceFactory) -> None:
    with pytest.raises(UsageError, match="unknown option"):
        make_executor("dask://127.0.0.1:1", agent_wait_timout=3)
    with pytest.raises(ExecutionError, match="cannot reach the Dask scheduler"):
        make_executor("dask://127.0.0.1:9", connect_timeout=0.5)
    (ws.root / "workbench.yaml").write_text("executor:\n  kind: dask\nstore: {url: x, pool: 3}\n")
    with pytest.raises(ConfigError) as err:
        ws.open().settings
    text = str(err.value)
    assert "workbench.yaml:1:1: executor kind dask needs address" in text
    assert "workbench.yaml:3:1: unknown store key" in text


# -- on the cluster -------------------------------------------------------------
@pytest.mark.timeout(90)
@pytest.mark.usefixtures("workspace_store")
def test_jobs_run_only_on_agents_that_have_their_resources(cluster: Any, ws: WorkspaceFactory) -> None:
    w = ws.open()
    ex = _executor(cluster)
    try:
        with w.engine(executor=ex) as engine:
            build = engine.run("build")
            deploy = engine.run("deploy")
    finally:
        ex.close()
    assert build.status == Status.FAILED and deploy.status == Status.PASSED
    jobs = _jobs(w)
    assert jobs.loc["rpm", "agent"] == "rpm-1" and jobs.loc["rpm", "exit_code"] == 3
    assert jobs.loc["image", "agent"] == "docker-1" and jobs.loc["image", "status"] == "passed"
    assert jobs.loc["plain", "agent"] in {"rpm-1", "docker-1", "doomed"}  # never the prod agent
    assert jobs.loc["d", "agent"] == "prod-1"  # the only agent in environment prod
    rpm_log = Path(jobs.loc["rpm", "log_path"]).read_text()
    assert "packaging on" in rpm_log and "as rpm" in rpm_log and "on rpm-1" in rpm_log
    assert "deploying to prod" in Path(jobs.loc["d", "log_path"]).read_text()


@pytest.mark.timeout(90)
def test_run_on_all_agents_runs_one_copy_per_matching_agent(cluster: Any, ws: WorkspaceFactory) -> None:
    w = ws.open()
    ex = _executor(cluster)
    try:
        with w.engine(executor=ex) as engine:
            run = engine.run("everywhere")
    finally:
        ex.close()
    assert run.status == Status.PASSED
    jobs = w.frames.job_runs
    # linux is on rpm-1, docker-1 and prod-1, but prod-1 only serves environment prod
    assert sorted(jobs["agent"]) == ["docker-1", "rpm-1"]
    assert sorted(jobs["job"]) == ["probe-runOnAll-1", "probe-runOnAll-2"]
    texts = sorted(m for p in jobs["log_path"] for m in re.findall(r"^copy \d of \d$", Path(p).read_text(), re.M))
    assert texts == ["copy 1 of 2", "copy 2 of 2"]


@pytest.mark.timeout(120)
def test_a_job_no_agent_can_serve_is_reported_starts_when_one_comes_else_fails(
        cluster: Any, ws: WorkspaceFactory, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from workbench.cli import main

    w = ws.open()
    ex = _executor(cluster, agent_wait_timeout=15)
    late = None
    try:
        with w.engine(executor=ex) as engine:
            t, result = _run_in_thread(engine, "gpu")
            reasons = _until(lambda: (r := w.frames.job_runs.set_index("job")["reason"].dropna().to_dict()) and
                             len(r) == 2 and r, "both waiting reasons")
            assert reasons["fit"].startswith("waiting for an agent with resources gpu in no environment")
            assert reasons["tune"].startswith("waiting for an agent with resources tpu in no environment")
            assert set(w.frames.job_runs["status"]) == {"scheduled"}
            shown = CliRunner().invoke(main, ["--workspace", str(ws.root), "status", "--format", "json"])
            row = next(r for r in json.loads(shown.output) if r["pipeline"] == "gpu")
            assert {(j["job"], j["reason"]) for j in row["waiting_jobs"]} == set(reasons.items())
            # an agent with a gpu arrives: fit starts there; nothing ever comes for tune
            late = subprocess.Popen([sys.executable, "-m", "workbench", "agent", "--scheduler",
                                     cluster.scheduler_address, "--name", "gpu-1", "--resources", "gpu"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            t.join(60)
    finally:
        ex.close()
        if late is not None:
            late.send_signal(signal.SIGTERM)
            try:
                late.wait(20)
            finally:
                try:
                    os.killpg(late.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    assert not t.is_alive()
    assert result["run"].status == Status.FAILED
    jobs = _jobs(w)
    assert jobs.loc["fit", "status"] == "passed" and jobs.loc["fit", "agent"] == "gpu-1"
    assert pd_isna(jobs.loc["fit", "reason"])
    assert jobs.loc["tune", "status"] == "failed"
    assert jobs.loc["tune", "reason"] == "no agent came: waited 15s for an agent with resources tpu in no environment"


@pytest.mark.timeout(120)
def test_a_worker_killed_mid_job_fails_it_as_agent_lost_and_never_reruns_it(cluster: Any, ws: WorkspaceFactory) -> None:
    from distributed import Client

    w = ws.open()
    mark: Path = ws.mark  # type: ignore[attr-defined]
    client = Client(cluster.scheduler_address, set_as_default=False)
    ex = _executor(cluster)

    def doomed_at() -> set[str]:
        return {a for a, wk in client.scheduler_info()["workers"].items() if wk["name"] == "doomed"}

    before = doomed_at()
    try:
        with w.engine(executor=ex) as engine:
            t, result = _run_in_thread(engine, "doomed")
            job_of = lambda: w.frames.job_runs.set_index("job")  # noqa: E731
            log_path = _until(lambda: job_of()["log_path"].dropna().get("victim"), "the victim to start")
            _until(lambda: Path(log_path).exists() and "started" in Path(log_path).read_text(), "its log to arrive")
            os.kill(int((mark / "worker.pid").read_text()), signal.SIGKILL)  # the worker process running the job
            t.join(60)
        assert not t.is_alive()
        assert result["run"].status == Status.FAILED
        job = _jobs(w).loc["victim"]
        assert job["status"] == "failed" and job["reason"].startswith("agent lost: doomed")
        assert _jobs(w).loc["bystander", "status"] == "passed"  # it never started on the lost worker
        log = Path(job["log_path"]).read_text()
        assert "started" in log and "agent lost" in log and "never" not in log
        # the nanny brings a fresh worker named doomed back; the job must not run there again
        _until(lambda: doomed_at() - before, "the agent to come back", 60)
        time.sleep(1.0)
        assert (mark / "runs.txt").read_text().split() == ["run"]
        assert (mark / "bystander.txt").read_text().split() == ["ran"]
    finally:
        ex.close()
        client.close()
        _kill_group(mark)


@pytest.mark.timeout(90)
def test_logs_stream_back_while_the_job_runs(cluster: Any, ws: WorkspaceFactory) -> None:
    w = ws.open()
    mark: Path = ws.mark  # type: ignore[attr-defined]
    ex = _executor(cluster)
    follower = None
    try:
        with w.engine(executor=ex) as engine:
            t, result = _run_in_thread(engine, "chatty")
            log_path = _until(lambda: next(iter(w.frames.job_runs["log_path"].dropna()), None), "the job to start")
            _until(lambda: Path(log_path).exists() and "first line" in Path(log_path).read_text(), "the first line")
            assert "second line" not in Path(log_path).read_text()  # the job is still waiting for "go"
            follower = subprocess.Popen(
                [sys.executable, "-m", "workbench", "logs", "-f", "chatty/1/s/talk"],
                env={**os.environ, "WORKBENCH_WORKSPACE": str(ws.root)}, stdout=subprocess.PIPE,
            )
            seen = _read_until(follower, b"first line")
            assert b"second line" not in seen
            (mark / "go").touch()
            rest, _ = follower.communicate(timeout=30)
            t.join(30)
    finally:
        ex.close()
        if follower is not None and follower.poll() is None:
            follower.kill()
    assert result["run"].status == Status.PASSED and follower.returncode == 0
    assert b"second line" in seen + rest
    text = Path(log_path).read_text()
    assert text.index("first line") < text.index("second line") < text.index("job passed")


@pytest.mark.timeout(90)
def test_agents_publish_and_fetch_artifacts_through_a_shared_url(cluster: Any, ws: WorkspaceFactory, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Two agents with job folders of their own meet only at the artifact URL (a shared folder here)."""
    shared = tmp_path / "shared-artifacts"
    monkeypatch.setenv("WORKBENCH_ARTIFACTS_URL", shared.as_uri())
    (ws.root / "notebooks").mkdir()
    (ws.root / "notebooks" / "report.ipynb").write_text(json.dumps(NOTEBOOK))
    w = ws.open()
    ex = _executor(cluster)
    try:
        with w.engine(executor=ex) as engine:
            run = engine.run("shared")
    finally:
        ex.close()
    jobs = _jobs(w)
    assert run.status == Status.PASSED, Path(jobs.loc["unpack", "log_path"]).read_text()
    assert (jobs.loc["pack", "agent"], jobs.loc["unpack", "agent"]) == ("rpm-1", "docker-1")
    published = shared / "shared" / "1" / "make" / "1" / "pack" / "dist" / "app.txt"
    made_in = published.read_text().split(" in ")[1].strip()
    assert "work-rpm-1" in made_in and str(ws.root) not in made_in  # rpm-1's own folder, not the engine's
    unpack_log = Path(jobs.loc["unpack", "log_path"]).read_text()
    assert f"built by pack in {made_in}" in unpack_log and "work-docker-1" in unpack_log
    arts = w.frames.artifacts.set_index("path")
    assert arts.loc["dist/app.txt", "url"].endswith(str(published)) and len(arts.loc["dist/app.txt", "sha256"]) == 64
    # the executed notebook of a job on an agent is published to the same URL
    executed = shared / "shared" / "1" / "use" / "1" / "report" / "notebooks" / "report.ipynb"
    assert arts.loc["notebooks/report.ipynb", "type"] == "notebook" and jobs.loc["report", "agent"] == "rpm-1"
    cells = json.loads(executed.read_text())["cells"]
    assert any("releasing 2.0" in "".join(o.get("text", "")) for c in cells for o in c.get("outputs", []))


@pytest.mark.timeout(90)
def test_cancel_reaches_the_job_on_its_agent(cluster: Any, ws: WorkspaceFactory) -> None:
    w = ws.open()
    mark: Path = ws.mark  # type: ignore[attr-defined]
    ex = _executor(cluster)
    try:
        with w.engine(executor=ex) as engine:
            t, result = _run_in_thread(engine, "long")
            sleeper = int(_until(lambda: (mark / "sleep.pid").exists() and (mark / "sleep.pid").read_text().strip(),
                                 "the job"))
            engine.cancel()
            t.join(30)
    finally:
        ex.close()
    assert result["run"].status == Status.CANCELLED
    assert w.frames.job_runs["status"].iloc[0] == "cancelled"
    assert not _alive(sleeper)  # the job's whole process group was killed on the agent
    assert not (mark / "never").exists()


@pytest.mark.timeout(120)
def test_cli_run_with_the_workspace_executor_and_agents_listing(cluster: Any, ws: WorkspaceFactory) -> None:
    (ws.root / "workbench.yaml").write_text(
        f"executor:\n  kind: dask\n  address: {cluster.scheduler_address}\n  agent_wait_timeout: 30\n"
    )
    r = ws.cli("run", "deploy", "-q")
    assert r.code == 0, r.err
    assert ws.open().frames.job_runs["agent"].tolist() == ["prod-1"]
    from click.testing import CliRunner

    from workbench.cli import main

    listing = CliRunner().invoke(main, ["agents", "--scheduler", cluster.scheduler_address, "--format", "json"])
    assert listing.exit_code == 0, listing.output
    agents = {a["name"]: a for a in json.loads(listing.output)}
    assert set(agents) == set(AGENTS)
    assert agents["rpm-1"]["resources"] == ["linux", "rpm"] and agents["rpm-1"]["environments"] == []
    assert agents["prod-1"]["environments"] == ["prod"]


@pytest.mark.timeout(90)
def test_dask_local_starts_its_own_cluster_that_serves_every_job(ws: WorkspaceFactory) -> None:
    w = ws.open()
    ex = make_executor("dask://local", n_workers=2)
    try:
        with w.engine(executor=ex) as engine:
            run = engine.run("everywhere")  # needs linux: resources are ignored here, as locally
    finally:
        ex.close()
    assert run.status == Status.PASSED
    jobs = w.frames.job_runs
    assert sorted(jobs["job"]) == ["probe-runOnAll-1", "probe-runOnAll-2"]
    assert len(set(jobs["agent"])) == 2  # one copy on each of the two workers


def _read_until(proc: subprocess.Popen[bytes], needle: bytes, timeout: float = 30) -> bytes:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    seen = b""
    end = time.monotonic() + timeout
    while needle not in seen:
        if time.monotonic() > end or not sel.select(timeout=max(0.0, end - time.monotonic())):
            raise AssertionError(f"no {needle!r} from workbench logs -f; got {seen!r}")
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        seen += chunk
    return seen


def pd_isna(value: Any) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


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


def _kill_group(mark: Path) -> None:
    """A killed worker leaves its job's processes behind (they are in their own group)."""
    pgid_file = mark / "pgid"
    if pgid_file.exists():
        try:
            os.killpg(int(pgid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
