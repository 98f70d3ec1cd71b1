"""``rerun_on_agent_lost: N``: a job whose Dask agent dies mid-job runs again on a live agent.

Against a real cluster: a LocalCluster scheduler and two ``workbench agent``
processes (a Dask nanny and worker each). The worker process running the job
is killed with SIGKILL. The lost attempt stays in the store as a failed job
("agent lost") in a failed stage counter; the rerun is a new stage counter
(GoCD's representation of a rerun) holding only the lost job; at most N
reruns; never a double success. A job without the option is covered by
tests/test_dask.py (it fails as "agent lost" and never runs again).
"""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from dask_fixtures import agent_cluster, require_distributed  # noqa: E402

require_distributed()

from conftest import WorkspaceFactory  # noqa: E402
from workbench.engine import AGENT_LOST_RERUN  # noqa: E402
from workbench.executors import make_executor  # noqa: E402
from workbench.status import Status  # noqa: E402

pytestmark = pytest.mark.timeout(240)

AGENTS = ("flaky-1", "flaky-2")

# Each attempt of `victim` appends to runs.txt and says which worker runs it; the attempts
# listed in $MARK/hang hang until killed, the others pass and append to done.txt.
ATTEMPT = """\
echo run >> "$MARK/runs.txt"
n=$(wc -l < "$MARK/runs.txt")
echo "$PPID" > "$MARK/worker-$n.pid"
echo "started attempt $n"
if grep -qx "$n" "$MARK/hang"; then sleep 120; echo never; exit 0; fi
echo done >> "$MARK/done.txt"
"""

PIPELINES = f"""\
format_version: 10
pipelines:
  flaky:
    group: g
    stages:
      - build:
          jobs:
            first: {{resources: [flaky], tasks: [{{exec: {{command: "true"}}}}]}}
      - deploy:
          jobs:
            victim:
              resources: [flaky]
              rerun_on_agent_lost: 1
              tasks:
                - script: |
{''.join('                    ' + line + chr(10) for line in ATTEMPT.splitlines())}
            bystander:
              resources: [flaky]
              tasks:
                - script: echo ran >> "$MARK/bystander.txt"
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A LocalCluster scheduler (no workers of its own) with two agents that have resource ``flaky``."""
    with agent_cluster(tmp_path_factory.mktemp("agents"), {name: ["--resources", "flaky"] for name in AGENTS}) as cl:
        yield cl


def _until(predicate: Any, what: str, timeout: float = 60) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _run(cluster: Any, workspace: WorkspaceFactory, mark: Path, kills: int) -> tuple[Any, Any]:
    """Run ``flaky``, SIGKILL the worker running attempt 1..kills of ``victim``; returns (run, workspace)."""
    w = workspace.open()
    ex = make_executor(f"dask://{cluster.scheduler_address}", poll_interval=0.3)
    result: dict[str, Any] = {}
    try:
        with w.engine(executor=ex) as engine:
            t = threading.Thread(target=lambda: result.setdefault("run", engine.run("flaky")), daemon=True)
            t.start()
            for n in range(1, kills + 1):
                pid = mark / f"worker-{n}.pid"
                _until(lambda: pid.exists() and pid.read_text().strip(), f"attempt {n} to start")
                os.kill(int(pid.read_text()), signal.SIGKILL)  # the worker process running the job
            t.join(150)
            assert not t.is_alive(), "the run hung after its agent was lost"
    finally:
        ex.close()
    return result["run"], w


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None  # NULL comes back as None or NaN


def _stages(w: Any) -> list[tuple[str, int, str, str | None, str | None]]:
    df = w.frames.stage_runs.sort_values(["stage", "stage_counter"])
    return [(r.stage, int(r.stage_counter), r.status, _text(r.approved_by), _text(r.reason)) for r in df.itertuples()]


def _victims(w: Any) -> list[tuple[int, str, str]]:
    df = w.frames.job_runs
    df = df[df["job"] == "victim"].sort_values("stage_counter")
    return [(int(r.stage_counter), r.status, _text(r.reason) or "") for r in df.itertuples()]


@pytest.fixture
def mark(workspace: WorkspaceFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    workspace.write("flaky.gocd.yaml", PIPELINES)
    mark = tmp_path / "mark"
    mark.mkdir()
    monkeypatch.setenv("MARK", str(mark))  # the engine's environment reaches the job's
    return mark


def test_a_lost_agent_reruns_the_job_once_on_a_live_agent(cluster: Any, workspace: WorkspaceFactory,
                                                           mark: Path) -> None:
    (mark / "hang").write_text("1\n")  # the first attempt hangs until its worker is killed
    run, w = _run(cluster, workspace, mark, kills=1)
    assert run.status == Status.PASSED, run
    deploy = [s for s in _stages(w) if s[0] == "deploy"]
    assert [(c, st, by) for _, c, st, by, _ in deploy] == [(1, "failed", None), (2, "passed", AGENT_LOST_RERUN)]
    assert "agent lost running victim; rerun automatically" in deploy[0][4] and "1 of 1" in deploy[0][4]
    victims = _victims(w)
    assert [(c, st) for c, st, _ in victims] == [(1, "failed"), (2, "passed")]
    assert victims[0][2].startswith("agent lost: ")  # the lost attempt is recorded as lost
    # two attempts, one success; the bystander ran once (carried into the rerun, not run again)
    assert _lines(mark / "runs.txt") == ["run", "run"] and _lines(mark / "done.txt") == ["done"]
    assert _lines(mark / "bystander.txt") == ["ran"]
    by = w.frames.job_runs.set_index(["job", "stage_counter"])
    assert by.loc[("bystander", 2), "status"] == "passed" and "not rerun" in by.loc[("bystander", 2), "reason"]
    assert len(w.frames.stage_runs.query("stage == 'build'")) == 1  # earlier stages are not repeated
    time.sleep(1.0)  # a late retry of the lost attempt anywhere would show up here
    assert _lines(mark / "runs.txt") == ["run", "run"] and _lines(mark / "done.txt") == ["done"]


def test_at_most_n_reruns_then_the_job_fails_as_agent_lost(cluster: Any, workspace: WorkspaceFactory,
                                                           mark: Path) -> None:
    (mark / "hang").write_text("1\n2\n")  # both attempts hang; both workers get killed
    run, w = _run(cluster, workspace, mark, kills=2)
    assert run.status == Status.FAILED
    deploy = [s for s in _stages(w) if s[0] == "deploy"]
    assert [(c, st, by) for _, c, st, by, _ in deploy] == [(1, "failed", None), (2, "failed", AGENT_LOST_RERUN)]
    assert deploy[1][4].startswith("job ") and "agent lost" in deploy[1][4]  # no third attempt: rerun_on_agent_lost is 1
    victims = _victims(w)
    assert [(c, st) for c, st, _ in victims] == [(1, "failed"), (2, "failed")]
    assert all(reason.startswith("agent lost: ") for _, _, reason in victims)
    assert _lines(mark / "runs.txt") == ["run", "run"] and _lines(mark / "done.txt") == []
