"""The CLI end to end, in temporary workspaces, as a user runs it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

TWO_STAGES = """
format_version: 10
pipelines:
  shop:
    group: shops
    label_template: "1.0.${COUNT}"
    environment_variables: {LEVEL: pipeline, COLOUR: blue}
    stages:
      - build:
          environment_variables: {LEVEL: stage}
          jobs:
            compile:
              environment_variables: {LEVEL: job}
              tasks:
                - exec: {command: sh, arguments: [-c, 'echo "level=$LEVEL colour=$COLOUR label=$GO_PIPELINE_LABEL env=$GO_ENVIRONMENT_NAME region=$REGION"']}
            lint:
              tasks:
                - script: echo linted
      - test:
          jobs:
            unit:
              tasks:
                - script: echo tested > result.txt && cat result.txt
environments:
  qa:
    environment_variables: {LEVEL: environment, REGION: eu}
    pipelines: [shop]
"""


def test_run_passes_and_history_status_logs(workspace: Any) -> None:
    workspace.write("shop.gocd.yaml", TWO_STAGES)
    r = workspace.cli("run", "shop")
    assert r.code == 0, r.err
    assert "shop/1 (label 1.0.1): passed" in r.out
    r = workspace.cli("history", "--format", "json")
    rows = json.loads(r.out)
    assert rows[0]["pipeline"] == "shop" and rows[0]["status"] == "passed" and rows[0]["label"] == "1.0.1"
    assert [s["name"] for s in rows[0]["stages"]] == ["build", "test"]
    assert set(rows[0]) >= {"pipeline", "counter", "label", "status", "trigger", "triggered_by", "created_at",
                            "started_at", "finished_at", "duration_s", "revisions", "stages"}
    r = workspace.cli("logs", "shop/1/build/compile")
    assert r.code == 0
    assert "level=job colour=blue label=1.0.1 env=qa region=eu" in r.out
    r = workspace.cli("logs", "shop/latest/test/unit")
    assert "tested" in r.out
    r = workspace.cli("status", "--format", "json")
    st = json.loads(r.out)
    assert st[0]["pipeline"] == "shop" and st[0]["status"] == "passed"
    assert [s["status"] for s in st[0]["stages"]] == ["passed", "passed"]
    r = workspace.cli("status")
    assert r.code == 0 and "shop" in r.out and "passed" in r.out
    r = workspace.cli("history", "--format", "csv")
    assert r.out.splitlines()[0].startswith("pipeline,counter,label,status")
    r = workspace.cli("validate")
    assert r.code == 0 and "ok: 1 pipeline in 1 file" in r.out


def test_validate_warns_about_gocd_keys_the_workbench_does_not_use(workspace: Any) -> None:
    workspace.write("p.yaml", """
        pipelines:
          p:
            stages:
              - build: {clean_workspace: true, keep_artifacts: true, tasks: [{script: make}]}
        environments:
          prod: {agents: [agent-1], pipelines: [p]}
        """)
    r = workspace.cli("validate")
    assert r.code == 0, r.err
    lines = [line for line in (r.out + r.err).splitlines() if ": warning: " in line]
    assert [line.split(": warning: ")[0] for line in lines] == ["pipelines/p.yaml:4:17", "pipelines/p.yaml:4:40",
                                                                 "pipelines/p.yaml:6:10"]
    assert "clean_workspace of stage 'build' is accepted for GoCD compatibility but does nothing" in lines[0]
    assert "keep_artifacts" in lines[1] and "never deletes artifacts" in lines[1]
    assert "agents of environment 'prod'" in lines[2] and "Dask workers" in lines[2]


def test_a_wrongly_typed_rollout_is_a_located_config_error_and_nothing_is_written(workspace: Any) -> None:
    workspace.write("release.yaml", """
        routes:
          shop: {provider: command, stacks: {blue: "a:1", green: "b:2"}, argv: ["true"]}
        pipelines:
          release:
            parameters: {first: "5"}
            stages: [{build: {tasks: [{script: make}]}}]
            rollout: {route: shop, steps: ["#{first}", 50, 100], timeout: soon}
        """)
    for args in (("validate",), ("run", "release")):
        r = workspace.cli(*args)
        assert r.code == 2, r.err
        assert "pipelines/release.yaml:7:67: timeout of rollout of pipeline 'release' must be a number of minutes" in r.err
        assert "Traceback" not in r.err
    assert not (workspace.root / ".workbench" / "store.db").exists()


CLAIM_S2 = """\
import os
from workbench import Workspace
from workbench.status import Status

ws = Workspace.open(os.environ["WORKBENCH_WORKSPACE"])
run_id = int(os.environ["WORKBENCH_RUN_ID"])
stages = ws.store.run_detail(run_id, jobs=False).stages
# what a tick or serve does when it gets to the next stage first: claim it (compare-and-set) and run it
ws.store.create_stage_run(run_id, "s2", 1, status=Status.RUNNING, jobs=[("j", 1, 1)], expect_stage_runs=len(stages))
ws.close()
"""


def test_run_trigger_and_rerun_agree_on_the_exit_status_of_a_run_another_process_took_over(workspace: Any) -> None:
    """A stage driven by another process is not a failure: all three exit 0 and say where the run continues."""
    (workspace.root / "claim.py").write_text(CLAIM_S2)
    workspace.write("p.yaml", f"""
        pipelines:
          p:
            stages:
              - s1:
                  tasks:
                    - script: test -e "$WORKBENCH_WORKSPACE/fail-once" && rm "$WORKBENCH_WORKSPACE/fail-once" && exit 1; true
                    - exec: {{command: {sys.executable}, arguments: ["$WORKBENCH_WORKSPACE/claim.py"]}}
              - s2: {{tasks: [{{script: echo never here}}]}}
        """.replace('["$WORKBENCH_WORKSPACE/claim.py"]', f'["{workspace.root / "claim.py"}"]'))
    for args, counter in ((("run", "p"), 1), (("trigger", "p"), 2)):
        r = workspace.cli(*args)
        assert r.code == 0, r.out + r.err
        assert f"p/{counter} (label {counter}): running" in r.out
        assert f"p/{counter} continues in another process" in r.out
    (workspace.root / "fail-once").touch()
    r = workspace.cli("run", "p")
    assert r.code == 1 and "p/3 (label 3): failed" in r.out
    r = workspace.cli("rerun", "p/3/s1")
    assert r.code == 0, r.out + r.err
    assert "p/3 continues in another process" in r.out


def test_failing_job_exits_1_and_says_where(workspace: Any) -> None:
    workspace.write("p.yaml", """
        format_version: 10
        pipelines:
          p:
            stages:
              - build:
                  jobs:
                    broken: {tasks: [{exec: {command: sh, arguments: [-c, 'echo about to fail; exit 3']}}]}
              - deploy:
                  jobs:
                    never: {tasks: [{script: 'echo must not run'}]}
        """)
    r = workspace.cli("run", "p")
    assert r.code == 1
    assert "failed" in r.out and "build" in r.out
    rows = json.loads(workspace.cli("history", "--format", "json").out)
    assert [s["name"] for s in rows[0]["stages"]] == ["build"]
    assert "about to fail" in workspace.cli("logs", "p/1/build/broken").out


def test_timeout_fails_the_job(workspace: Any) -> None:
    workspace.write("p.yaml", """
        pipelines:
          p:
            stages:
              - s:
                  jobs:
                    slow:
                      timeout: 1s
                      tasks: [{exec: {command: sleep, arguments: [60]}}]
        """)
    t = time.monotonic()
    r = workspace.cli("run", "p")
    assert r.code == 1
    assert time.monotonic() - t < 40
    ws = workspace.open()
    assert "timed out" in ws.frames.job_runs.iloc[0]["reason"]


def test_parallel_jobs_overlap(workspace: Any) -> None:
    workspace.write("p.yaml", """
        pipelines:
          p:
            stages:
              - s:
                  jobs:
                    a: {tasks: [{exec: {command: sleep, arguments: ["0.5"]}}]}
                    b: {tasks: [{exec: {command: sleep, arguments: ["0.5"]}}]}
        """)
    assert workspace.cli("run", "p", "-j", "2").code == 0
    jr = workspace.open().frames.job_runs.set_index("job")
    assert jr.loc["a", "started_at"] < jr.loc["b", "finished_at"] and jr.loc["b", "started_at"] < jr.loc["a", "finished_at"]


def test_templates_and_parameters(workspace: Any) -> None:
    workspace.write("t.yaml", """
        format_version: 10
        templates:
          component:
            - build:
                jobs:
                  build:
                    tasks:
                      - exec: {command: echo, arguments: ["building #{component} for #{region}"]}
        pipelines:
          api:
            template: component
            parameters: {component: api, region: eu}
          ui:
            template: component
            parameters: {component: ui, region: us}
        """)
    assert workspace.cli("run", "ui").code == 0
    assert "building ui for us" in workspace.cli("logs", "ui/1/build/build").out


def test_unknown_pipeline_is_a_usage_error(workspace: Any) -> None:
    workspace.write("t.yaml", TWO_STAGES)
    r = workspace.cli("run", "nope")
    assert r.code == 2 and "no pipeline named 'nope'" in r.err and "Traceback" not in r.err
    r = workspace.cli("logs", "shop/9/build/compile")
    assert r.code == 2 and "Traceback" not in r.err


CONFIG_ERRORS = {
    "yaml syntax": ("pipelines:\n  p:\n    group: a: b\n    stages: []\n", 3),
    "unknown key": ("pipelines:\n  p:\n    stages:\n      - s:\n          jobz:\n            j: {tasks: [{script: x}]}\n", 5),
    "wrong type": ("pipelines:\n  p:\n    stages:\n      - s:\n          jobs:\n            j:\n              tasks: [{script: x}]\n              timeout: [1]\n", 8),
    "stage without jobs": ("pipelines:\n  p:\n    stages:\n      - s:\n          jobs: {}\n", 5),
    "job without tasks": ("pipelines:\n  p:\n    stages:\n      - s:\n          jobs:\n            j:\n              tasks: []\n", 7),
    "duplicate stage": ("pipelines:\n  p:\n    stages:\n      - s: {jobs: {j: {tasks: [{script: x}]}}}\n      - s: {jobs: {j: {tasks: [{script: x}]}}}\n", 5),
    "duplicate job key": ("pipelines:\n  p:\n    stages:\n      - s:\n          jobs:\n            j: {tasks: [{script: x}]}\n            j: {tasks: [{script: y}]}\n", 7),
    "unknown upstream pipeline": ("pipelines:\n  p:\n    materials:\n      up: {pipeline: ghost, stage: s}\n    stages:\n      - s: {jobs: {j: {tasks: [{script: x}]}}}\n", 4),
    "unknown upstream stage": ("pipelines:\n  a:\n    stages:\n      - s: {jobs: {j: {tasks: [{script: x}]}}}\n  b:\n    materials:\n      up: {pipeline: a, stage: nope}\n    stages:\n      - s: {jobs: {j: {tasks: [{script: x}]}}}\n", 7),
    "unknown template": ("pipelines:\n  p:\n    template: missing\n", 3),
    "unknown parameter": ("pipelines:\n  p:\n    stages:\n      - s: {jobs: {j: {tasks: [{script: 'echo #{nope}'}]}}}\n", 4),
}


@pytest.mark.parametrize("case", sorted(CONFIG_ERRORS))
def test_config_errors_have_file_line_and_exit_2(workspace: Any, case: str) -> None:
    text, line = CONFIG_ERRORS[case]
    workspace.write("bad.yaml", text)
    for args in (("validate",), ("run", "p"), ("status",)):
        r = workspace.cli(*args)
        assert r.code == 2, (case, args, r.out, r.err)
        assert "Traceback" not in r.err
        assert f"pipelines/bad.yaml:{line}:" in r.err, (case, r.err)
    assert not (workspace.root / ".workbench" / "store.db").exists(), "config errors must not touch the store"


def test_cycle_is_spelled_out(workspace: Any) -> None:
    workspace.write("c.yaml", """
        pipelines:
          a:
            materials: {up: {pipeline: c, stage: s}}
            stages: [{s: {jobs: {j: {tasks: [{script: x}]}}}}]
          b:
            materials: {up: {pipeline: a, stage: s}}
            stages: [{s: {jobs: {j: {tasks: [{script: x}]}}}}]
          c:
            materials: {up: {pipeline: b, stage: s}}
            stages: [{s: {jobs: {j: {tasks: [{script: x}]}}}}]
        """)
    r = workspace.cli("validate")
    assert r.code == 2
    assert "pipelines/c.yaml:" in r.err
    assert any(cyc in r.err for cyc in ("a -> c -> b -> a", "a -> b -> c -> a", "b -> a -> c -> b", "c -> b -> a -> c"))


def test_bad_config_leaves_existing_history_untouched(workspace: Any) -> None:
    workspace.write("shop.gocd.yaml", TWO_STAGES)
    assert workspace.cli("run", "shop").code == 0
    before = (workspace.root / ".workbench" / "store.db").read_bytes()
    workspace.write("broken.yaml", "pipelines:\n  x: [\n")
    assert workspace.cli("run", "shop").code == 2
    # the store still holds the earlier run (the valid file is broken by its sibling: read the store directly)
    ws = workspace.open()
    assert len(ws.store.pipeline_runs()) == 1
    assert (workspace.root / ".workbench" / "store.db").read_bytes()[:100] == before[:100]


def test_ctrl_c_cancels_runs_on_cancel_and_exits_130(workspace: Any) -> None:
    flag = workspace.root / "cleaned-up"
    workspace.write("p.yaml", f"""
        pipelines:
          p:
            stages:
              - s:
                  jobs:
                    j:
                      tasks:
                        - exec:
                            command: sleep
                            arguments: [60]
                            on_cancel: {{exec: {{command: touch, arguments: ["{flag}"]}}}}
        """)
    env = {**os.environ, "WORKBENCH_WORKSPACE": str(workspace.root)}
    from tests.procs import popen, stopped

    # signals reset in the child: the suite may run with SIGINT ignored (nohup … &), issue 16 defect 13
    with stopped(popen([sys.executable, "-m", "workbench", "run", "p"], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)) as p:
        ws = workspace.open()
        for _ in range(100):
            time.sleep(0.1)
            try:
                if (ws.frames.job_runs["status"] == "running").any():
                    break
            except Exception:
                pass
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    assert p.returncode == 130, (out, err)
    assert flag.exists()
    assert ws.frames.pipeline_runs.iloc[0]["status"] == "cancelled"
