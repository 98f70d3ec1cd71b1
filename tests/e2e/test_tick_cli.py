"""tick, serve, notify, trigger, rerun, cancel and status from the command line, on real repositories."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from workbench.demo_repos import commit, make_shops_repos

pytestmark = pytest.mark.timeout(240)


def app_yaml(url: str, script: str = "cat v.txt", **options: Any) -> str:
    extra = "".join(f"\n    {k}: {v}" for k, v in options.items())
    return f"""
format_version: 10
pipelines:
  app:{extra}
    materials:
      code: {{git: "{url}"}}
    stages:
      - build:
          jobs:
            job:
              tasks:
                - script: '{script}'
"""


def triggered(out: str) -> list[str]:
    return sorted(line.split()[1] for line in out.splitlines() if line.startswith("triggered "))


def test_tick_is_silent_when_nothing_happens_and_status_shows_material_errors(
        workspace: Any, git_repo: Any, tmp_path: Path) -> None:
    repo = git_repo("app")
    repo.commit({"v.txt": "one"}, "one")
    workspace.write("app.yaml", app_yaml(repo.url) + f"""
  gone:
    materials:
      code: {{git: "{tmp_path / 'nowhere'}"}}
    stages: [{{build: {{jobs: {{job: {{tasks: [script: 'true']}}}}}}}}]
""")
    first = workspace.cli("tick")
    assert first.code == 0, first.err
    assert triggered(first.out) == ["app/1"] and "app/1 passed" in first.out
    assert "material error: gone/code: cannot reach" in first.out
    quiet = workspace.cli("tick")
    assert quiet.code == 0 and "triggered" not in quiet.out and "app/" not in quiet.out
    verbose = workspace.cli("tick", "-v")
    assert "repositories polled" in verbose.out and "waiting: gone: material code" in verbose.out
    status = workspace.cli("status", "--format", "json")
    rows = {r["pipeline"]: r for r in json.loads(status.out)}
    assert rows["app"]["material_errors"] == [] and rows["gone"]["status"] == "never run"
    assert "cannot reach" in rows["gone"]["material_errors"][0]["message"]
    table = workspace.cli("status")
    assert "gone: material code error since" in table.out


def test_trigger_with_revision_and_rerun_from_the_cli(workspace: Any, git_repo: Any, tmp_path: Path) -> None:
    repo = git_repo("app")
    repo.commit({"v.txt": "old"}, "old")
    repo.git("tag", "v1")
    repo.commit({"v.txt": "new"}, "new")
    flag = tmp_path / "ok"
    workspace.write("app.yaml", app_yaml(repo.url, f"cat v.txt; test -e {flag}"))
    out = workspace.cli("trigger", "app", "--revision", "code=v1", "-q")
    assert out.code == 1 and "app/1" in out.out and "failed" in out.out
    log = workspace.cli("logs", "app/1/build/job")
    assert "old" in log.out and "new" not in log.out
    flag.write_text("")
    again = workspace.cli("rerun", "app/1/build", "-q")
    assert again.code == 0 and "app/1" in again.out and "passed" in again.out
    assert "old" in workspace.cli("logs", "app/1/build/2/job").out  # the run's own revision, not the branch head
    assert workspace.cli("trigger", "app", "--revision", "nope").code == 2
    bad = workspace.cli("trigger", "app", "--revision", "other=1")
    assert bad.code == 2 and "has no material other" in bad.err
    assert workspace.cli("rerun", "app/1").code == 2
    assert workspace.cli("rerun", "app/9/build").code == 2
    assert workspace.cli("notify", "no-such-material").code == 2


def test_notify_without_serve_runs_a_tick(workspace: Any, git_repo: Any) -> None:
    repo = git_repo("app")
    repo.commit({"v.txt": "one"}, "one")
    workspace.write("app.yaml", app_yaml(repo.url).replace('code: {git:', 'code: {auto_update: false, git:'))
    assert triggered(workspace.cli("tick").out) == ["app/1"]
    repo.commit({"v.txt": "two"}, "two")
    assert triggered(workspace.cli("tick").out) == []  # auto_update: false: polling does not see it
    out = workspace.cli("notify", repo.url)
    assert out.code == 0 and triggered(out.out) == ["app/2"]


def test_serve_picks_up_notify_and_stops_cleanly_on_ctrl_c(workspace: Any, git_repo: Any) -> None:
    repo = git_repo("app")
    repo.commit({"v.txt": "one"}, "one")
    workspace.write("app.yaml", app_yaml(repo.url))
    env = {**os.environ, "WORKBENCH_WORKSPACE": str(workspace.root)}
    from tests.procs import kill_group, popen

    # signals reset in the child: the suite may run with SIGINT ignored (nohup … &), issue 16 defect 13
    serve = popen([sys.executable, "-m", "workbench", "serve", "--interval", "300"], cwd=workspace.root,
                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ws = workspace.open()
        deadline = time.monotonic() + 60
        while not ws.store.pipeline_runs("app"):  # the first full pass builds the first commit
            assert serve.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        repo.commit({"v.txt": "two"}, "two")
        second = workspace.cli("serve")
        assert second.code == 2 and "already runs" in second.err  # one serve per workspace
        told = workspace.cli("notify", "code")
        assert told.code == 0 and "notified" in told.out
        while len(ws.store.pipeline_runs("app")) < 2 or not ws.store.pipeline_runs("app")[0].status.finished:
            assert serve.poll() is None and time.monotonic() < deadline + 60
            time.sleep(0.1)
        assert ws.store.pipeline_runs("app")[0].revisions["code"]["revision"] == repo.head
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            out, err = serve.communicate(timeout=60)
        finally:
            kill_group(serve)  # a serve that did not stop never outlives the test
    assert serve.returncode == 0, err
    assert "triggered app/2" in out and out.rstrip().endswith("stopped")
    assert not (workspace.root / ".workbench" / "serve.pid").exists()


SHOPS = """
format_version: 10
pipelines:
{components}
  qa_deploy:
    materials:
      search: {{pipeline: search, stage: build}}
      api: {{pipeline: api, stage: build}}
      ui: {{pipeline: ui, stage: build}}
    stages:
      - deploy:
          jobs:
            deploy:
              tasks:
                - script: >-
                    echo "deploying search $GO_DEPENDENCY_LABEL_SEARCH
                    api $GO_DEPENDENCY_LABEL_API ui $GO_DEPENDENCY_LABEL_UI"
"""

SIMPLE = """
  {name}:
    materials:
      code: {{git: "{url}"}}
    stages: [{{build: {{jobs: {{build: {{tasks: [script: ./build.sh]}}}}}}}}]
"""

WITH_CONFIG = """
  {name}:
    materials:
      code: {{git: "{url}", destination: code}}
      config: {{git: "{config}", destination: config}}
    stages: [{{build: {{jobs: {{build: {{tasks: [script: code/build.sh]}}}}}}}}]
"""


def test_shops_a_ui_commit_triggers_ui_then_qa_deploy_and_a_db_commit_only_db(workspace: Any, tmp_path: Path) -> None:
    repos = make_shops_repos(tmp_path / "repos")
    parts = [SIMPLE.format(name=n, url=repos[n]) for n in ("db", "batch")]
    parts += [WITH_CONFIG.format(name=n, url=repos[n], config=repos["config"]) for n in ("search", "api", "ui")]
    workspace.write("shops.yaml", SHOPS.format(components="".join(parts)))
    first = workspace.cli("tick")
    assert first.code == 0, first.err
    assert triggered(first.out) == ["api/1", "batch/1", "db/1", "qa_deploy/1", "search/1", "ui/1"]

    commit(repos["ui"], {"index.html": "<h1>new ui</h1>"}, "ui: new header")
    after_ui = workspace.cli("tick")
    assert triggered(after_ui.out) == ["qa_deploy/2", "ui/2"], after_ui.out
    ws = workspace.open()
    qa = ws.store.get_pipeline_run("qa_deploy", 2)
    assert {n: qa.revisions[n]["counter"] for n in ("search", "api", "ui")} == {"search": 1, "api": 1, "ui": 2}
    assert qa.status.value == "passed"
    log = workspace.cli("logs", "qa_deploy/2/deploy/deploy").out
    assert "deploying search 1 api 1 ui 2" in log
    assert "building ui all at" in workspace.cli("logs", "ui/2/build/build").out

    commit(repos["db"], {"schema.sql": "create table t (id int);"}, "db: new table")
    after_db = workspace.cli("tick")
    assert triggered(after_db.out) == ["db/2"], after_db.out
