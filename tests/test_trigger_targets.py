"""Which pipelines a scheduling pass decides: a pass woken by a passed stage decides its downstreams only.

Behaviour, not timing: what a pass decided shows in what it triggered and in the
"waiting" lines of the report (a pipeline that is decided and cannot run says why).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from materials_fixtures import pipeline, runs, write

from workbench.materials import dependency
from workbench.status import Status
from workbench.triggering import Scheduler, dependency_index, targets

pytestmark = pytest.mark.timeout(180)


def dep(upstream: str, stage: str = "build") -> dict[str, str]:
    return {"pipeline": upstream, "stage": stage}


def two_stages() -> list[Any]:
    return [{"build": {"jobs": {"job": {"tasks": [{"script": "true"}]}}}},
            {"test": {"jobs": {"job": {"tasks": [{"script": "true"}]}}}}]


def waits(report: Any, name: str) -> int:
    return sum(1 for w in report.waiting if w.startswith(f"{name}:"))


def test_targets_are_the_downstreams_of_the_passed_stage_and_locked_pipelines_that_finished(workspace: Any) -> None:
    ws = write(workspace,
               pipeline("a", {}, stages=two_stages()),
               pipeline("after_build", {"a": dep("a")}),
               pipeline("after_test", {"a": dep("a", "test")}),
               pipeline("fan_in", {"x": dep("after_build"), "y": dep("after_test")}),
               pipeline("locked", {"a": dep("a", "test")}, lock_behavior="unlockWhenFinished"),
               pipeline("unlocked", {}))
    cfg = ws.config
    index = dependency_index(cfg)
    assert index[("a", "test")] == ("after_test", "locked")  # config order
    assert targets(cfg, {("a", "build")}, ()) == ["after_build"]
    assert targets(cfg, {("a", "test")}, ()) == ["after_test", "locked"]
    assert targets(cfg, {("after_test", "build")}, ()) == ["fan_in"]  # a fan-in is decided whole, below
    assert targets(cfg, {("fan_in", "build")}, ()) == []  # nobody depends on it
    assert targets(cfg, set(), {"locked", "unlocked", "a"}) == ["locked"]  # only a lock can release something
    assert targets(cfg, {("gone", "build")}, {"gone"}) == []  # removed from the config meanwhile
    assert targets(cfg, {("a", "build"), ("after_test", "build")}, {"locked"}, index) == \
        ["after_build", "fan_in", "locked"]


def test_a_pass_woken_by_a_passed_stage_decides_only_its_downstreams_and_a_full_pass_decides_all(
        workspace: Any) -> None:
    ws = write(workspace,
               pipeline("up", {}),
               pipeline("down", {"up": dep("up")}),
               pipeline("other", {}),
               pipeline("waiter", {"other": dep("other")}))  # `other` never runs: waiter waits whenever decided
    with Scheduler(ws) as s:
        assert s.decide(poll_all=False) == []  # a scheduler's first pass is full, whatever it is asked
        assert waits(s.report, "down") == 1 and waits(s.report, "waiter") == 1 and s.report.passes == 1
        assert s.decide(poll_all=False) == []  # nothing happened here since: nothing decided, no pass at all
        assert waits(s.report, "down") == 1 and waits(s.report, "waiter") == 1 and s.report.passes == 1
        assert s.engine.drive(s.engine.trigger("up")).status == Status.PASSED  # events: up/build passed
        created = s.decide(poll_all=False)
        assert [r.locator for r in created] == ["down/1"]
        assert waits(s.report, "waiter") == 1  # not decided: `up` is not its upstream
        s.engine.drive(created[0])  # down/1 passed: nobody depends on it, no lock: no pass
        assert s.decide(poll_all=False) == [] and s.report.passes == 2
        assert s.decide(poll_all=False) == []  # the events were answered once
        assert s.decide(poll_all=True) == []  # a full pass decides everything again
        assert waits(s.report, "waiter") == 2
    assert [r.revisions["up"]["revision"] for r in runs(ws, "down")] == ["up/1/build/1"]


def test_a_passed_stage_of_another_process_waits_for_the_next_full_pass(workspace: Any) -> None:
    ws = write(workspace, pipeline("up", {}), pipeline("down", {"up": dep("up")}))
    with Scheduler(ws) as s:
        s.decide()
        with ws.engine() as engine:  # `workbench run up` in a terminal: its events are not this scheduler's
            assert engine.run("up").status == Status.PASSED
        assert s.decide(poll_all=False) == []
        assert [r.locator for r in s.decide(poll_all=True)] == ["down/1"]


def test_a_notify_or_forced_pass_is_full(workspace: Any) -> None:
    ws = write(workspace, pipeline("up", {}), pipeline("down", {"up": dep("up")}))
    with Scheduler(ws) as s:
        s.decide()
        with ws.engine() as engine:
            engine.run("up")
        s.force(None)  # what `workbench notify` without a URL asks of a serve
        assert [r.locator for r in s.decide(poll_all=False)] == ["down/1"]


def test_a_reloaded_config_makes_the_woken_pass_full(workspace: Any) -> None:
    ws = write(workspace, pipeline("up", {}), pipeline("mid", {"up": dep("up")}), pipeline("other", {}))
    with Scheduler(ws) as s:
        s.decide()
        with ws.engine() as engine:  # another process ran `other`: not an event of this scheduler
            engine.run("other")
        write(workspace, pipeline("up", {}), pipeline("mid", {"up": dep("up")}), pipeline("other", {}),
              pipeline("late", {"other": dep("other")}))  # a pipeline file edited under a serve
        assert s.decide(poll_all=False) == []  # no event: nothing to answer until the next full pass
        s.engine.drive(s.engine.trigger("up"))  # an event: the pass reloads the config, and decides all
        assert sorted(r.locator for r in s.decide(poll_all=False)) == ["late/1", "mid/1"]


def test_fan_in_waits_then_triggers_when_its_last_upstream_passes_in_a_woken_pass(
        workspace: Any, tmp_path: Path) -> None:
    """root → left, right → join (fan-in on root): join runs only with a left and a right built from
    the same root run; the pass woken by the right rerun that passes decides join, not everything."""
    block = tmp_path / "block-right"
    ws = write(workspace,
               pipeline("root", {}),
               pipeline("left", {"root": dep("root")}),
               pipeline("right", {"root": dep("root")}, f"test ! -e {block}"),
               pipeline("join", {"left": dep("left"), "right": dep("right")}),
               pipeline("join_nofanin", {"left": dep("left"), "right": dep("right")}, fan_in=False),
               pipeline("other", {}),
               pipeline("waiter", {"other": dep("other")}))
    with Scheduler(ws) as s:
        s._mine.add(s.engine.trigger("root").id)
        s.run_until_idle()
    assert [len(runs(ws, p)) for p in ("root", "left", "right", "join", "join_nofanin")] == [1, 1, 1, 1, 1]
    block.write_text("right is broken")
    with Scheduler(ws) as s:
        s._mine.add(s.engine.trigger("root").id)
        report = s.run_until_idle()
        assert runs(ws, "left")[-1].status == Status.PASSED and runs(ws, "right")[-1].status == Status.FAILED
        assert len(runs(ws, "join")) == 1  # left/2 was built from root/2, right/1 from root/1: fan-in waits
        mixed = runs(ws, "join_nofanin")[-1]  # fan_in: false takes the newest of each
        assert (mixed.counter, mixed.revisions["left"]["counter"], mixed.revisions["right"]["counter"]) == (2, 2, 1)
        assert any(w.startswith("join: fan-in") for w in report.waiting)
        waiter_before = waits(s.report, "waiter")
        block.unlink()
        rerun = s.engine.rerun(runs(ws, "right")[-1], "build")
        assert s.engine.drive(rerun).status == Status.PASSED  # right/2/build/2 passed, in this scheduler
        created = s.decide(poll_all=False)
        assert sorted(r.locator for r in created) == ["join/2", "join_nofanin/3"]
        assert waits(s.report, "waiter") == waiter_before  # only right's downstreams were decided
    join = runs(ws, "join")[-1]
    assert {join.revisions[n]["counter"] for n in ("left", "right")} == {2}
    assert join.revisions["right"]["revision"] == "right/2/build/2"


@pytest.mark.usefixtures("workspace_store")  # SQLite and PostgreSQL (conftest)
def test_batched_upstream_look_up_is_the_single_one_for_every_key(
        workspace: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = write(workspace,
               pipeline("a", {}, stages=two_stages()),
               pipeline("b", {"a": dep("a", "test")}),
               pipeline("c", {}))
    with ws.engine() as engine:
        for _ in range(3):
            engine.run("a")
        engine.drive(engine.rerun(runs(ws, "a")[1], "test"))  # a/2/test/2: a second revision of a/2
        engine.run("b")
    keys = [("a", "build"), ("a", "test"), ("b", "build"), ("c", "build"), ("nobody", "build")]
    single = {k: dependency.passed_runs(ws.store, *k, limit=3) for k in keys}
    assert [u.locator for u in single[("a", "test")]] == ["a/3/test/1", "a/2/test/2", "a/2/test/1"]
    assert single[("b", "build")][0].ancestors["pipeline:a"] == "3"
    assert single[("c", "build")] == [] and single[("nobody", "build")] == []
    assert dependency.passed_runs_many(ws.store, keys, limit=3) == single
    monkeypatch.setattr(dependency, "BATCH_KEYS", 2)  # several statements in one read
    assert dependency.passed_runs_many(ws.store, keys, limit=3) == single
    assert dependency.passed_runs_many(ws.store, [], limit=3) == {}


def chain(n: int) -> list[Any]:
    return [pipeline("p0", {})] + [pipeline(f"p{i}", {"up": dep(f"p{i - 1}")}) for i in range(1, n)]


def test_a_tick_follows_a_chain_with_a_pass_per_link_and_stops_deciding_past_its_limit(workspace: Any) -> None:
    ws = write(workspace, *chain(6))
    with Scheduler(ws) as s:
        s._mine.add(s.engine.trigger("p0").id)
        report = s.run_until_idle()
    assert [len(runs(ws, f"p{i}")) for i in range(6)] == [1] * 6 and report.errors == []
    assert report.passes <= 6  # the first (full) pass, then one per link; p5 passing wakes nothing
    with Scheduler(ws) as s:  # a tick that reaches its limit finishes what it drives, and ends
        s._mine.add(s.engine.trigger("p0").id)
        report = s.run_until_idle(max_passes=3)
    assert report.errors == ["stopped deciding after 3 scheduling passes"]
    assert [len(runs(ws, f"p{i}")) for i in range(6)] == [2, 2, 2, 1, 1, 1]
    assert all(r.status == Status.PASSED for i in range(6) for r in runs(ws, f"p{i}"))
