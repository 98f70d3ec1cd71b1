"""The quiet pass of a no-change tick (workbench.materials.quiet): it answers only when nothing is to do,
polls every material once, and otherwise hands its poll to the full pass (real git repositories)."""
from __future__ import annotations

import time
from typing import Any

import pytest
from materials_fixtures import git_material, pipeline, runs, write

from workbench.materials import git as wgit
from workbench.status import Status
from workbench.triggering import tick

pytestmark = pytest.mark.timeout(180)


def quick_tick(workspace: Any, **options: Any) -> tuple[Any, bool]:
    """A tick as the CLI's plain ``workbench tick`` does it, in a fresh workspace object:
    (its report, whether it loaded the full config)."""
    ws = workspace.open()
    try:
        report = tick(ws, quick=True, **options)
        return report, "config" in ws.__dict__
    finally:
        ws.close()


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The remote look-ups (``ls-remote``) made, by URL: the real method, counted."""
    seen: list[str] = []
    real = wgit.Mirror.remote_heads

    def counted(self: Any) -> dict[str, str]:
        seen.append(self.url)
        return real(self)

    monkeypatch.setattr(wgit.Mirror, "remote_heads", counted)
    return seen


def test_a_no_change_tick_answers_without_the_config_and_polls_every_repository(
        workspace: Any, git_repo: Any, lookups: list[str]) -> None:
    a, b = git_repo("a"), git_repo("b")
    write(workspace, pipeline("one", {"code": git_material(a.url)}), pipeline("two", {"code": git_material(b.url)}),
          pipeline("three", {"code": git_material(a.url)}),
          pipeline("after", {"up": {"pipeline": "one", "stage": "build"}}))
    report, loaded = quick_tick(workspace)  # no projection yet: the full pass, which keeps one
    assert loaded and sorted(t.split()[0] for t in report.triggered) == ["after/1", "one/1", "three/1", "two/1"]
    lookups.clear()
    report, loaded = quick_tick(workspace)
    assert not loaded and report.triggered == [] and report.errors == []
    assert report.polled == 2 and sorted(lookups) == sorted({wgit.normalize_url(a.url), wgit.normalize_url(b.url)})
    # a commit: the quiet pass sees it and the full pass triggers it, without asking any repository again
    lookups.clear()
    new = a.commit({"x.txt": "1"}, "x")
    report, loaded = quick_tick(workspace)
    assert loaded and sorted(t.split()[0] for t in report.triggered) == ["after/2", "one/2", "three/2"]
    assert sorted(lookups) == sorted({wgit.normalize_url(a.url), wgit.normalize_url(b.url)})  # once each
    ws = workspace.open()
    assert runs(ws, "one")[-1].revisions["code"]["revision"] == new
    ws.close()
    assert quick_tick(workspace)[1] is False  # quiet again


def test_an_upstream_run_from_elsewhere_a_due_timer_and_an_edit_each_need_the_full_pass(
        workspace: Any, git_repo: Any) -> None:
    a = git_repo("a")
    write(workspace, pipeline("up", {"code": git_material(a.url)}),
          pipeline("down", {"up": {"pipeline": "up", "stage": "build"}}),
          pipeline("nightly", {"code": git_material(a.url)}, timer={"spec": "0 0 2 * * ?"}))
    t0 = time.time()
    quick_tick(workspace, now=t0)
    report, loaded = quick_tick(workspace, now=t0 + 120)
    assert not loaded and report.triggered == []
    # a run of `up` by hand (another process): its passed stage is news for `down`
    ws = workspace.open()
    with ws.engine() as engine:
        assert engine.drive(engine.trigger("up")).status == Status.PASSED
    ws.close()
    report, loaded = quick_tick(workspace, now=t0 + 180)
    assert loaded and [t.split()[0] for t in report.triggered] == ["down/2"]
    # a 02:00 passed: the timer is the full pass's
    report, loaded = quick_tick(workspace, now=t0 + 86400)
    assert loaded and [t.split()[0] for t in report.triggered] == ["nightly/2"]
    assert quick_tick(workspace, now=t0 + 86400 + 60)[1] is False
    # an edited file: the projection of the old bytes is not used
    write(workspace, pipeline("up", {"code": git_material(a.url)}),
          pipeline("down", {"up": {"pipeline": "up", "stage": "build"}}),
          pipeline("nightly", {"code": git_material(a.url)}, timer={"spec": "0 0 2 * * ?"}),
          pipeline("fresh", {"code": git_material(a.url)}))
    report, loaded = quick_tick(workspace, now=t0 + 86400 + 120)
    assert loaded and [t.split()[0] for t in report.triggered] == ["fresh/1"]


def test_a_run_waiting_for_approval_and_a_material_error_keep_their_meaning(workspace: Any, git_repo: Any) -> None:
    a = git_repo("a")
    stages = [{"build": {"jobs": {"job": {"tasks": [{"script": "echo ok"}]}}}},
              {"deploy": {"approval": "manual", "jobs": {"job": {"tasks": [{"script": "echo ok"}]}}}}]
    write(workspace, pipeline("gated", {"code": git_material(a.url)}, stages=stages))
    quick_tick(workspace)
    ws = workspace.open()
    assert runs(ws, "gated")[-1].status == Status.WAITING
    ws.close()
    assert quick_tick(workspace)[1] is True  # an active run: driving it is the full pass's
    ws = workspace.open()
    from workbench.approvals import approve

    approve(ws, "gated/1/deploy", drive=False)  # SCHEDULED, for whatever drives runs
    ws.close()
    report, loaded = quick_tick(workspace)
    assert loaded
    ws = workspace.open()
    assert runs(ws, "gated")[-1].status == Status.PASSED
    ws.close()
    assert quick_tick(workspace)[1] is False
    # the repository goes away: the quiet pass records the error as a full pass does
    import shutil

    shutil.rmtree(a.path)
    report, loaded = quick_tick(workspace)
    assert not loaded and report.material_errors and "gated/code" in report.material_errors[0]
    ws = workspace.open()
    from workbench.materials import open_material_errors

    assert list(open_material_errors(ws.store)) == ["gated"]
    ws.close()


def test_notification_subscriptions_keep_every_tick_on_the_full_path(workspace: Any, git_repo: Any) -> None:
    a = git_repo("a")
    workspace.write("p.gocd.yaml", f"""
format_version: 10
notifications:
  channels:
    hook: {{type: slack, url: "http://127.0.0.1:9/nowhere"}}
  people: {{dave: {{chat: "@dave"}}}}
  subscriptions:
    - {{to: dave, channel: hook, events: [fails]}}
pipelines:
  app:
    group: g
    materials:
      code: {{git: "{a.url}"}}
    stages:
      - build: {{jobs: {{job: {{tasks: [{{exec: {{command: "true"}}}}]}}}}}}
""")
    assert quick_tick(workspace)[1] is True
    report, loaded = quick_tick(workspace)  # the sender reads the subscriptions from the config each tick
    assert loaded and report.triggered == []
