"""Scheduling passes against real git repositories: batching, fan-in, timers, locks, crashes, reruns."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from materials_fixtures import git_material, job_log, pipeline, runs, write

from workbench.errors import InvalidState, NotFound
from workbench.status import Status
from workbench.triggering import tick

pytestmark = pytest.mark.timeout(180)


def sha_of(run: Any, material: str) -> str:
    return run.revisions[material]["revision"]


def test_batching_builds_the_latest_commit_once(workspace: Any, git_repo: Any) -> None:
    repo = git_repo("app")
    ws = write(workspace, pipeline("app", {"code": git_material(repo.url)}))
    tick(ws)
    shas = [repo.commit({f"f{i}.txt": str(i)}, f"change {i}") for i in range(3)]
    report = tick(ws)
    assert len(report.triggered) == 1 and "3 commits" in report.triggered[0]
    app = runs(ws, "app")
    assert [r.counter for r in app] == [1, 2] and sha_of(app[1], "code") == shas[-1]
    assert app[1].trigger == "material" and app[1].triggered_by == "changes"


def test_each_commit_builds_every_commit_in_order(workspace: Any, git_repo: Any) -> None:
    repo = git_repo("app")
    ws = write(workspace, pipeline("app", {"code": git_material(repo.url, ignore=["docs/**"])}, trigger="each_commit"))
    tick(ws)
    c1 = repo.commit({"a.txt": "1"}, "one")
    repo.commit({"docs/x.md": "2"}, "docs only")
    c3 = repo.commit({"b.txt": "3"}, "three")
    tick(ws)
    app = runs(ws, "app")
    assert [sha_of(r, "code") for r in app[1:]] == [c1, c3]  # one run per commit, the ignored one skipped
    commits = ws.frames.commits
    assert len(commits[commits.run_id == app[2].id]) == 2  # the docs commit ships with the next run
    assert all(r.status == Status.PASSED for r in app)


def test_filters_stop_a_change_set_of_ignored_files(workspace: Any, git_repo: Any) -> None:
    repo = git_repo("app")
    ws = write(workspace,
               pipeline("code_only", {"code": git_material(repo.url, ignore=["docs/**", "*.md"])}),
               pipeline("src_only", {"code": git_material(repo.url, includes=["src/**"])}))
    tick(ws)
    repo.commit({"docs/guide.md": "x", "NOTES.md": "y"}, "docs")
    assert tick(ws).triggered == []
    repo.commit({"tests/t.py": "x"}, "tests")
    assert [t.split()[0] for t in tick(ws).triggered] == ["code_only/2"]  # not ignored, but not included
    repo.commit({"src/main.py": "x", "docs/more.md": "z"}, "mixed")
    assert sorted(t.split()[0] for t in tick(ws).triggered) == ["code_only/3", "src_only/2"]
    src = runs(ws, "src_only")[-1]
    assert len(ws.frames.commits.query(f"run_id == {src.id}")) == 3  # it ships all three commits


def _diamond(workspace: Any, git_repo: Any, block: Path) -> tuple[Any, dict[str, Any]]:
    repos = {n: git_repo(n) for n in ("search", "api", "ui", "config")}
    comps = []
    for name in ("search", "api", "ui"):
        script = f"test ! -e {block} || [ {name} != ui ]"  # the ui build fails while the block file exists
        comps.append(pipeline(name, {
            "code": git_material(repos[name].url, destination="code"),
            "config": git_material(repos["config"].url, destination="config"),
        }, script))
    deps = {n: {"pipeline": n, "stage": "build"} for n in ("search", "api", "ui")}
    ws = write(workspace, *comps, pipeline("qa_deploy", deps), pipeline("qa_nofanin", deps, fan_in=False))
    return ws, repos


def _configs(ws: Any, run: Any) -> dict[str, str]:
    """Which config commit each upstream of a qa run was built with."""
    out = {}
    for name in ("search", "api", "ui"):
        up = ws.store.get_pipeline_run(name, run.revisions[name]["counter"])
        out[name] = up.revisions["config"]["revision"]
    return out


@pytest.mark.usefixtures("workspace_store")  # SQLite and PostgreSQL (conftest)
def test_diamond_waits_for_matching_upstreams_and_the_opt_out_does_not(
        workspace: Any, git_repo: Any, tmp_path: Path) -> None:
    block = tmp_path / "block-ui"
    ws, repos = _diamond(workspace, git_repo, block)
    c1 = repos["config"].head
    tick(ws)
    first = runs(ws, "qa_deploy")
    assert len(first) == 1 and set(_configs(ws, first[0]).values()) == {c1}
    # fan-out: one config commit triggers all three components
    block.write_text("ui is broken")
    c2 = repos["config"].commit({"settings.env": "v=2"}, "config v2")
    report = tick(ws)
    assert sorted(t.split()[0] for t in report.triggered if not t.startswith("qa")) == ["api/2", "search/2", "ui/2"]
    assert runs(ws, "ui")[-1].status == Status.FAILED
    assert len(runs(ws, "qa_deploy")) == 1  # search and api have config v2, ui only v1: fan-in waits
    assert any(w.startswith("qa_deploy: fan-in") and "config@master" in w for w in report.waiting)
    mixed = runs(ws, "qa_nofanin")[-1]  # fan_in: false takes the newest of each, whatever they were built from
    assert _configs(ws, mixed) == {"search": c2, "api": c2, "ui": c1}
    # fix ui and rerun its build: now all three were built from config v2
    block.unlink()
    with ws.engine() as engine:
        assert engine.drive(engine.rerun(runs(ws, "ui")[-1], "build")).status == Status.PASSED
    tick(ws)
    qa = runs(ws, "qa_deploy")
    assert len(qa) == 2 and set(_configs(ws, qa[-1]).values()) == {c2}
    assert {qa[-1].revisions[n]["counter"] for n in ("search", "api", "ui")} == {2}
    assert tick(ws).triggered == []  # and nothing more


def test_timers_with_an_injected_clock(workspace: Any, git_repo: Any) -> None:
    repo = git_repo("app")
    ws = write(workspace,
               pipeline("nightly", {"code": git_material(repo.url)}, timer={"spec": "0 0 2 * * ?"}),
               pipeline("nightly_changes", {"code": git_material(repo.url, auto_update=False)},
                        timer={"spec": "0 2 * * *", "only_on_changes": True}))
    t0 = time.time()
    tick(ws, now=t0)  # first runs (first revision), and the timers start counting
    assert [len(runs(ws, p)) for p in ("nightly", "nightly_changes")] == [1, 1]
    assert tick(ws, now=t0 + 60).triggered == []  # no 02:00 in between
    report = tick(ws, now=t0 + 86400)  # a 02:00 passed
    nightly = runs(ws, "nightly")
    assert len(nightly) == 2 and nightly[1].trigger == "timer" and nightly[1].triggered_by == "timer"
    assert sha_of(nightly[1], "code") == sha_of(nightly[0], "code")  # same revisions, another fire
    assert any("nightly_changes: fired" in t and "only_on_changes" in t for t in report.timers)
    assert tick(ws, now=t0 + 86400 + 60).triggered == []  # that fire was acted on once
    new = repo.commit({"x.txt": "x"}, "x")
    report = tick(ws, now=t0 + 86400 + 120)  # a timer does not stop material triggers (auto_update: true)
    assert [t.split()[0] for t in report.triggered] == ["nightly/3"] and runs(ws, "nightly")[2].trigger == "material"
    assert len(runs(ws, "nightly_changes")) == 1  # auto_update: false, and no fire yet
    tick(ws, now=t0 + 2 * 86400)
    changes = runs(ws, "nightly_changes")
    assert len(changes) == 2 and sha_of(changes[1], "code") == new and changes[1].trigger == "timer"


def _race(ws_root: Path, n: int, lock: bool) -> list[subprocess.CompletedProcess[str]]:
    """Start ``n`` tick processes that wait at a barrier, then release them at once."""
    go = ws_root / "go"
    code = (
        "import os, sys, time\n"
        "from workbench import Workspace\n"
        "from workbench.triggering import tick\n"
        "ws = Workspace.open(sys.argv[1]); ws.config; ws.store\n"
        "open(sys.argv[2], 'w').close()\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.001)\n"
        f"r = tick(ws, lock={lock})\n"
        "print(len(r.triggered), r.duplicates)\n"
    )
    ready = [ws_root / f"ready{i}" for i in range(n)]
    procs = [subprocess.Popen([sys.executable, "-c", code, str(ws_root), str(r)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in ready]
    deadline = time.monotonic() + 60
    while not all(r.exists() for r in ready):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.01)
    go.write_text("go")
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    go.unlink()
    return out


@pytest.mark.usefixtures("workspace_store")  # SQLite and PostgreSQL (conftest)
@pytest.mark.parametrize("lock", [True, False], ids=["with-lock", "store-constraint-only"])
def test_concurrent_ticks_in_separate_processes_trigger_once(workspace: Any, git_repo: Any, lock: bool) -> None:
    a, b = git_repo("a"), git_repo("b")
    ws = write(workspace,
               pipeline("batch", {"code": git_material(a.url)}),
               pipeline("each", {"code": git_material(b.url)}, trigger="each_commit"))
    tick(ws)
    a.commit({"x": "1"}, "a1")
    for i in range(3):
        b.commit({f"y{i}": "1"}, f"b{i}")
    results = _race(ws.root, 4, lock)
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    batch, each = runs(ws, "batch"), runs(ws, "each")
    assert len(batch) == 2 and len(each) == 4  # one run per revision set, whoever got there first
    assert [sha_of(r, "code") for r in each[1:]] == b.git("rev-list", "--reverse", "HEAD~3..HEAD").split()
    import sqlalchemy as sa

    from workbench.store import schema as S

    with ws.store.read() as conn:
        keys = conn.execute(sa.select(S.pipeline_runs.c.pipeline, S.pipeline_runs.c.revision_key)).all()
    assert len(keys) == len(set(keys)) == 6
    assert sum(int(r.stdout.split()[0]) for r in results) == 4  # 1 + 3 new runs in all, across the four processes
    assert all(r.status == Status.PASSED for r in batch + each)
    assert ws.store.integrity_ok()


def test_kill_9_mid_job_is_recovered_on_the_next_tick(workspace: Any, git_repo: Any, tmp_path: Path) -> None:
    repo = git_repo("app")
    started, pidfile, fixed = tmp_path / "started", tmp_path / "job.pid", tmp_path / "fixed"
    script = f"test -e {fixed} && exit 0; echo $$ > {pidfile}; touch {started}; sleep 60"
    ws = write(workspace, pipeline("app", {"code": git_material(repo.url)}, script))
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "tick"], cwd=ws.root,
                            env={**os.environ, "WORKBENCH_WORKSPACE": str(ws.root)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the tick ended before the job started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if pidfile.exists():  # the job's own process group outlives its killed parent: end it
            try:
                os.killpg(int(pidfile.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
    report = tick(ws)
    assert len(report.recovered) == 1 and "app/1/build/1/job" in report.recovered[0]
    jobs = ws.frames.job_runs
    assert jobs.status.tolist() == ["failed"] and "died" in jobs.reason[0] and str(proc.pid) in jobs.reason[0]
    run = runs(ws, "app")[0]
    assert run.status == Status.FAILED and "died" in run.reason
    assert report.triggered == []  # same revision: not triggered again, it is rerun by hand
    assert ws.store.integrity_ok()
    fixed.write_text("")
    with ws.engine() as engine:
        again = engine.drive(engine.rerun(run, "build"))
    assert again.status == Status.PASSED


def test_rerun_failed_jobs_only(workspace: Any, git_repo: Any, tmp_path: Path) -> None:
    repo = git_repo("app")
    marker, count = tmp_path / "fixed", tmp_path / "ok-count"
    stages = [{"build": {"jobs": {
        "ok": {"tasks": [{"script": f"echo run >> {count}"}]},
        "flaky": {"tasks": [{"script": f"test -e {marker}"}]},
    }}}]
    ws = write(workspace, pipeline("app", {"code": git_material(repo.url)}, stages=stages))
    run = ws.engine().run("app")
    assert run.status == Status.FAILED
    marker.write_text("")
    with ws.engine() as engine:
        with pytest.raises(NotFound, match="has no stage 'nope'"):
            engine.rerun(run, "nope")
        again = engine.drive(engine.rerun(run, "build", failed_jobs=True))
    assert again.status == Status.PASSED and again.id == run.id
    assert count.read_text().split() == ["run"]  # the passed job was not run again
    jobs = ws.frames.job_runs.set_index(["stage_counter", "job"])
    assert jobs.loc[(2, "ok"), "status"] == "passed" and "not rerun" in jobs.loc[(2, "ok"), "reason"]
    assert jobs.loc[(2, "flaky"), "status"] == "passed"
    with ws.engine() as engine, pytest.raises(InvalidState, match="no failed jobs"):
        engine.rerun(run, "build", failed_jobs=True)


def test_cancel_from_another_process_stops_the_job_and_runs_on_cancel(
        workspace: Any, git_repo: Any, tmp_path: Path) -> None:
    repo = git_repo("app")
    started, cleaned = tmp_path / "started", tmp_path / "cleaned"
    stages = [{"build": {"jobs": {"job": {"tasks": [{"exec": {
        "command": "sh", "arguments": ["-c", f"touch {started}; sleep 60"],
        "on_cancel": {"exec": {"command": "touch", "arguments": [str(cleaned)]}}}}]}}}}]
    ws = write(workspace, pipeline("app", {"code": git_material(repo.url)}, stages=stages))
    result: dict[str, Any] = {}

    def drive() -> None:
        try:
            with ws.engine() as engine:
                result["run"] = engine.run("app")
        except Exception as exc:  # pragma: no cover - reported by the assertion below
            result["error"] = exc

    driver = threading.Thread(target=drive)
    driver.start()
    deadline = time.monotonic() + 60
    while not started.exists():
        assert "error" not in result and time.monotonic() < deadline, result
        time.sleep(0.05)
    out = workspace.cli("cancel", "app/1")
    driver.join(60)
    assert out.code == 0, out.err
    assert "cancel requested" in out.out and "app/1: cancelled" in out.out
    assert result["run"].status == Status.CANCELLED and cleaned.exists()


@pytest.mark.usefixtures("workspace_store")  # SQLite and PostgreSQL (conftest)
def test_cancel_a_run_nobody_drives(workspace: Any, git_repo: Any) -> None:
    repo = git_repo("app")
    stages = [{"build": {"jobs": {"job": {"tasks": [{"script": "true"}]}}}},
              {"deploy": {"approval": {"type": "manual"}, "jobs": {"job": {"tasks": [{"script": "true"}]}}}}]
    ws = write(workspace, pipeline("app", {"code": git_material(repo.url)}, stages=stages))
    assert "app/1 waits for approval of stage deploy" in tick(ws).finished
    assert runs(ws, "app")[0].status == Status.WAITING
    assert tick(ws).lines() == []  # still waiting is not news
    out = workspace.cli("cancel", "app/1")
    assert out.code == 0 and "app/1: cancelled" in out.out
    run = runs(ws, "app")[0]
    assert run.status == Status.CANCELLED and "cancelled by" in run.reason
    assert ws.frames.stage_runs.set_index("stage").loc["deploy", "status"] == "cancelled"
    again = workspace.cli("cancel", "app/1")
    assert again.code == 2 and "already finished" in again.err


def test_lock_on_failure_holds_until_unlocked(workspace: Any, git_repo: Any, tmp_path: Path) -> None:
    repo = git_repo("app")
    broken = tmp_path / "broken"
    broken.write_text("")
    ws = write(workspace, pipeline("app", {"code": git_material(repo.url)}, f"test ! -e {broken}",
                                   lock_behavior="lockOnFailure"))
    tick(ws)
    assert runs(ws, "app")[0].status == Status.FAILED
    repo.commit({"fix.txt": "1"}, "fix")
    report = tick(ws)
    assert report.triggered == [] and any("locked by app/1" in w for w in report.waiting)
    with pytest.raises(InvalidState, match="locked by app/1"):
        ws.engine().trigger("app")
    from workbench.materials.controls import pipeline_lock, pipeline_locks

    app = ws.config.pipelines["app"]
    assert pipeline_locks(ws.store, [app]) == {"app": 1} and pipeline_lock(ws.store, app) == 1  # the pass's batch read
    out = workspace.cli("unlock", "app")
    assert out.code == 0 and "was locked by app/1" in out.out
    assert pipeline_locks(ws.store, [app]) == {"app": None}  # a manual unlock counts in the batch read too
    broken.unlink()
    tick(ws)
    assert [r.status for r in runs(ws, "app")] == [Status.FAILED, Status.PASSED]


def test_unlock_when_finished_waits_for_the_active_run(workspace: Any, git_repo: Any) -> None:
    repo = git_repo("app")
    stages = [{"build": {"jobs": {"job": {"tasks": [{"script": "true"}]}}}},
              {"deploy": {"approval": {"type": "manual"}, "jobs": {"job": {"tasks": [{"script": "true"}]}}}}]
    ws = write(workspace, pipeline("app", {"code": git_material(repo.url)}, stages=stages,
                                   lock_behavior="unlockWhenFinished"))
    tick(ws)
    repo.commit({"a.txt": "1"}, "a")
    repo.commit({"b.txt": "2"}, "b")
    assert tick(ws).triggered == []  # app/1 waits for approval and holds the lock
    first = runs(ws, "app")[0]
    waiting = ws.store.run_detail(first.id).latest_stages()["deploy"]
    # what `workbench approve --detach` does: the stage is left SCHEDULED for tick/serve
    ws.store.set_stage_status(waiting.id, Status.SCHEDULED, expect=[Status.WAITING], approved_by="carol")
    report = tick(ws)  # drives the approved stage; once app/1 finished, the latest revision triggers
    app = runs(ws, "app")
    assert app[0].status == Status.PASSED and len(app) == 2 and sha_of(app[1], "code") == repo.head
    assert any(t.startswith("app/2") for t in report.triggered)


def test_fan_out_and_upstream_rerun_triggers_downstream_again(workspace: Any, git_repo: Any) -> None:
    repo = git_repo("up")
    ws = write(workspace,
               pipeline("up", {"code": git_material(repo.url)}),
               pipeline("d1", {"up": {"pipeline": "up", "stage": "build"}}),
               pipeline("d2", {"up": {"pipeline": "up", "stage": "build"}}))
    tick(ws)
    assert [len(runs(ws, p)) for p in ("up", "d1", "d2")] == [1, 1, 1]
    with ws.engine() as engine:
        engine.drive(engine.rerun(runs(ws, "up")[0], "build"))
    tick(ws)
    d1 = runs(ws, "d1")
    assert len(d1) == 2 and d1[1].revisions["up"]["revision"] == "up/1/build/2"
    assert len(job_log(ws, d1[1])) > 0


def test_lock_holder_is_gocd_locking() -> None:
    from workbench.scheduler import lock_holder

    S = Status
    assert lock_holder("none", [(2, S.RUNNING)]) is None
    assert lock_holder("unlockWhenFinished", [(3, S.PASSED), (2, S.WAITING)]) == 2  # an older run still going
    assert lock_holder("unlockWhenFinished", [(3, S.FAILED)]) is None
    assert lock_holder("lockOnFailure", [(3, S.FAILED), (2, S.PASSED)]) == 3
    assert lock_holder("lockOnFailure", [(3, S.CANCELLED)]) == 3
    assert lock_holder("lockOnFailure", [(4, S.PASSED), (3, S.FAILED)]) is None  # a later run passed
    assert lock_holder("lockOnFailure", []) is None


def test_owner_alive_tells_dead_local_processes() -> None:
    import socket

    from workbench.materials.recovery import owner_alive

    host = socket.gethostname()
    assert owner_alive(f"{host}:{os.getpid()}") is True
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert owner_alive(f"{host}:{child.pid}") is False
    assert owner_alive("another-host:1") is None  # only its heartbeat can tell


def test_a_timer_fires_a_pipeline_without_materials(workspace: Any) -> None:
    ws = write(workspace, pipeline("report", {}, timer={"spec": "0 3 * * *"}))
    t0 = time.time()
    assert tick(ws, now=t0).triggered == []  # the timer starts counting; no materials, nothing else triggers
    report = tick(ws, now=t0 + 86400)  # a 03:00 passed
    got = runs(ws, "report")
    assert len(got) == 1 and got[0].trigger == "timer", report
    assert got[0].status.value == "passed"
    assert tick(ws, now=t0 + 86400 + 60).triggered == []  # that fire was acted on once
