"""What a newcomer tripped on (issue 19): each test failed before its fix."""
from __future__ import annotations

import json

PIPE = """
format_version: 10
pipelines:
  build:
    group: g
    materials: {}
    stages:
      - compile:
          jobs:
            c: {tasks: [{exec: {command: "true"}}]}
"""


def test_validate_checks_workbench_yaml_too(workspace) -> None:
    workspace.write("p.gocd.yaml", PIPE)
    (workspace.root / "workbench.yaml").write_text("executor: local\nstroe: x.db\n")
    r = workspace.cli("validate")
    assert r.code == 2, r
    assert "workbench.yaml:2:1: unknown key 'stroe'" in r.err
    assert "ok:" not in r.out


def test_validate_counts_in_plain_english_and_a_folder_without_pipelines_is_not_a_located_problem(workspace) -> None:
    workspace.write("p.gocd.yaml", PIPE)
    r = workspace.cli("validate")
    assert r.code == 0 and r.out.strip() == "ok: 1 pipeline in 1 file", r
    (workspace.root / "pipelines" / "p.gocd.yaml").unlink()
    (workspace.root / "pipelines").rmdir()
    r = workspace.cli("validate")
    assert r.code == 0 and "pipelines:1:1" not in r.err and "has no pipelines/ folder" in r.err, r


def test_read_only_commands_create_nothing_in_a_folder_that_is_not_a_workspace(workspace, tmp_path) -> None:
    other = tmp_path / "not-a-workspace"
    other.mkdir()
    for args in (["status"], ["history"], ["approvals"], ["audit"], ["logs", "p/1/s/j"]):
        r = workspace.cli("-w", str(other), *args)
        assert r.code == 2, (args, r)
        assert "is not a workspace" in r.err and "Traceback" not in r.err
    assert list(other.iterdir()) == []


def test_bad_counts_are_refused(workspace) -> None:
    workspace.write("p.gocd.yaml", PIPE)
    assert workspace.cli("run", "build", "-q").code == 0
    for n in ("0", "-3"):
        r = workspace.cli("history", "-n", n)
        assert r.code == 2 and "at least 1" in r.err, (n, r)
    r = workspace.cli("history", "-n", "1", "--format", "json")
    assert r.code == 0 and len(json.loads(r.out)) == 1
    r = workspace.cli("run", "build", "-j", "0")
    assert r.code == 2 and "-j" in r.err, r
    r = workspace.cli("audit", "-n", "0")
    assert r.code == 2, r


def test_logs_names_the_log_locator_form(workspace) -> None:
    workspace.write("p.gocd.yaml", PIPE)
    assert workspace.cli("run", "build", "-q").code == 0
    for loc in ("build", "build/1"):
        r = workspace.cli("logs", loc)
        assert r.code == 2 and "expected PIPELINE/COUNTER/STAGE[/STAGE_COUNTER]/JOB" in r.err, r


def test_go_trigger_user_of_an_approved_stage_is_the_approver(workspace) -> None:
    workspace.write("p.gocd.yaml", """
        format_version: 10
        pipelines:
          app:
            group: g
            materials: {}
            stages:
              - build:
                  jobs:
                    b: {tasks: [{script: 'echo "build by $GO_TRIGGER_USER"'}]}
              - deploy:
                  approval: {type: manual, users: [carol]}
                  jobs:
                    d: {tasks: [{script: 'echo "deploy by $GO_TRIGGER_USER"'}]}
        """)
    r = workspace.cli("run", "app", "-q", env={"JUPYTERHUB_USER": "dave"})
    assert r.code == 0, r
    r = workspace.cli("approve", "app/1/deploy", "-q", env={"JUPYTERHUB_USER": "carol"})
    assert r.code == 0, r
    assert "build by dave" in workspace.cli("logs", "app/1/build/b").out
    assert "deploy by carol" in workspace.cli("logs", "app/1/deploy/d").out


CHAIN = """
format_version: 10
pipelines:
  build:
    group: g
    materials: {}
    stages:
      - compile: {jobs: {c: {tasks: [{exec: {command: "true"}}]}}}
  deploy:
    group: g
    materials:
      up: {pipeline: build, stage: compile}
    stages:
      - install: {jobs: {i: {tasks: [{script: "exit ${DEPLOY_EXIT:-0}"}]}}}
  smoke:
    group: g
    materials:
      up: {pipeline: deploy, stage: install}
    stages:
      - check: {jobs: {s: {tasks: [{exec: {command: "true"}}]}}}
  other:
    group: g
    materials:
      up: {pipeline: unrelated, stage: s}
    stages:
      - s: {jobs: {s: {tasks: [{exec: {command: "true"}}]}}}
  unrelated:
    group: g
    materials: {}
    stages:
      - s: {jobs: {s: {tasks: [{exec: {command: "true"}}]}}}
"""


def test_run_goes_on_to_the_pipelines_it_triggers(workspace) -> None:
    """Issue 19 item 2: `run build` drives deploy (and deploy's downstream), nothing unrelated."""
    from workbench import Workspace

    workspace.write("p.gocd.yaml", CHAIN)
    r = workspace.cli("run", "build")
    assert r.code == 0, r
    assert "deploy/1 triggered by build/1/compile/1" in r.out and "smoke/1 triggered by deploy/1/install/1" in r.out, r.out
    lines = [ln for ln in r.out.splitlines() if "(label" in ln]
    assert [ln.split(" ")[0] for ln in lines] == ["build/1", "deploy/1", "smoke/1"], r.out
    with Workspace.open(workspace.root) as ws:
        assert {p: len(ws.store.pipeline_runs(p)) for p in ("build", "deploy", "smoke", "other", "unrelated")} == \
            {"build": 1, "deploy": 1, "smoke": 1, "other": 0, "unrelated": 0}

    r = workspace.cli("run", "build", "--no-downstream")
    assert r.code == 0 and "triggered by" not in r.out, r
    with Workspace.open(workspace.root) as ws:
        assert len(ws.store.pipeline_runs("deploy")) == 1

    r = workspace.cli("run", "build", "-q", env={"DEPLOY_EXIT": "3"})
    assert r.code == 1, r  # the downstream failed: the command says so
    assert "deploy/2 (label 2): failed" in r.out and "build/3 (label 3): passed" in r.out, r.out


def test_export_to_a_parquet_name_is_refused_with_what_to_do(workspace, tmp_path) -> None:
    """Issue 16 defect 12: `export history.parquet` made a folder pandas.read_parquet cannot read."""
    workspace.write("p.gocd.yaml", PIPE)
    assert workspace.cli("run", "build", "-q").code == 0
    r = workspace.cli("export", str(tmp_path / "history.parquet"))
    assert r.code == 2 and "history.zip" in r.err and "to_parquet" in r.err, r
    assert not (tmp_path / "history.parquet").exists()
    r = workspace.cli("export", str(tmp_path / "history.zip"))
    assert r.code == 0, r


def test_every_frame_is_offered_to_tab_completion_with_what_it_holds(workspace) -> None:
    """Issue 16 defect 11: dir(ws.frames) listed 3 of the 19 frames."""
    import workbench.features

    workbench.features.load()
    ws = workspace.open()
    names = ws.frames.names()
    assert len(names) >= 19 and set(names) <= set(dir(ws.frames))
    described = ws.frames.describe()
    assert list(described["frame"]) == names
    assert all(described["holds"].str.len() > 10), described[described["holds"].str.len() <= 10]
