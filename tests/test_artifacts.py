"""Artifacts like GoCD's: publish with checksums, fetch across stages and pipelines
(grandparent paths too), JUnit reports as a table, path traversal refused."""
from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from workbench import Workspace
from workbench.artifacts.junit import parse_junit
from workbench.config.model import Artifact, Config, FetchTask, Job, Pipeline, ScriptTask, Stage
from workbench.errors import ArtifactError
from workbench.status import Status

pytestmark = pytest.mark.timeout(120)

JUNIT = """<?xml version="1.0" encoding="UTF-8"?>
<testsuites>
  <testsuite name="api" tests="4">
    <testcase classname="api.test_search" name="test_by_tag" time="0.012"/>
    <testcase classname="api.test_search" name="test_empty" time="1,204.5">
      <failure message="expected 0 results, got 3">AssertionError</failure>
    </testcase>
    <testcase classname="api.test_db" name="test_connect" time="0.5"><error message="timeout"/></testcase>
    <testcase classname="api.test_db" name="test_slow"><skipped message="slow"/></testcase>
  </testsuite>
</testsuites>
"""


def make_ws(root: Path, *pipelines: Pipeline) -> Workspace:
    root.mkdir(parents=True, exist_ok=True)
    ws = Workspace.open(root)
    ws.__dict__["config"] = Config(pipelines={p.name: p for p in pipelines})
    return ws


def sh(script: str) -> ScriptTask:
    return ScriptTask(script)


def job_row(ws: Workspace, job: str) -> Any:
    jobs = ws.frames.job_runs
    return jobs[jobs["job"] == job].iloc[-1]


BUILD_SCRIPT = (
    "mkdir -p out/sub reports && echo alpha > out/a.txt && echo beta > out/sub/b.txt && echo gamma > out/c.bin "
    f"&& cat > reports/junit.xml <<'EOF'\n{JUNIT}EOF"
)


def test_build_and_test_artifacts_are_published_with_checksums(tmp_path: Path) -> None:
    job = Job("compile", (sh(BUILD_SCRIPT),), artifacts=(
        Artifact("build", "out/**/*.txt", "texts"),
        Artifact("build", "out"),
        Artifact("test", "reports"),
    ))
    ws = make_ws(tmp_path, Pipeline("app", (Stage("build", (job,)),)))
    assert ws.run("app").status == Status.PASSED
    arts = ws.frames.artifacts.set_index("path")
    root = ws.state / "artifacts" / "app" / "1" / "build" / "1" / "compile"
    expected = {"texts/a.txt": b"alpha\n", "texts/sub/b.txt": b"beta\n", "out/a.txt": b"alpha\n",
                "out/sub/b.txt": b"beta\n", "out/c.bin": b"gamma\n", "reports/junit.xml": JUNIT.encode()}
    assert set(arts.index) == set(expected)
    for rel, data in expected.items():
        assert (root / rel).read_bytes() == data
        assert arts.loc[rel, "sha256"] == hashlib.sha256(data).hexdigest() and arts.loc[rel, "size"] == len(data)
    assert arts.loc["reports/junit.xml", "type"] == "test" and arts.loc["out/c.bin", "type"] == "build"
    tests = ws.frames.test_results.set_index("name")
    assert list(tests["status"].astype(str)) == ["passed", "failed", "error", "skipped"]
    assert tests.loc["test_empty", "message"] == "expected 0 results, got 3"
    assert tests.loc["test_empty", "duration"].total_seconds() == pytest.approx(1204.5)
    assert tests.loc["test_by_tag", "classname"] == "api.test_search" and tests.loc["test_by_tag", "job"] == "compile"


def test_missing_source_fails_a_passing_job_and_failed_jobs_still_publish(tmp_path: Path) -> None:
    ok = Job("ok", (sh("true"),), artifacts=(Artifact("build", "dist/*.whl"),))
    broken = Job("broken", (sh(BUILD_SCRIPT), sh("exit 3")), artifacts=(Artifact("test", "reports"),))
    ws = make_ws(tmp_path, Pipeline("app", (Stage("build", (ok, broken)),)))
    assert ws.run("app").status == Status.FAILED
    assert "dist/*.whl" in job_row(ws, "ok")["reason"] and "matched no file" in job_row(ws, "ok")["reason"]
    assert job_row(ws, "broken")["exit_code"] == 3
    assert len(ws.frames.test_results) == 4  # the failed job's report is what people need


@pytest.mark.parametrize("artifact, words", [
    (Artifact("build", "../outside.txt"), "climbs out"),
    (Artifact("build", "/etc/passwd"), "relative path"),
    (Artifact("build", "out", "../../escape"), "climbs out"),
    (Artifact("build", "link/secret.txt"), "outside the job's folder"),
])
def test_path_traversal_is_refused(tmp_path: Path, artifact: Artifact, words: str) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret.txt").write_text("no")
    job = Job("j", (sh(f"mkdir -p out && echo x > out/x && ln -s {tmp_path / 'elsewhere'} link"),), artifacts=(artifact,))
    ws = make_ws(tmp_path / "ws", Pipeline("app", (Stage("build", (job,)),)))
    assert ws.run("app").status == Status.FAILED
    assert words in job_row(ws, "j")["reason"]
    assert not list((ws.state / "artifacts").rglob("secret.txt"))


def test_fetch_from_an_earlier_stage_of_the_same_run(tmp_path: Path) -> None:
    p = Pipeline("app", (
        Stage("build", (Job("compile", (sh(BUILD_SCRIPT),), artifacts=(Artifact("build", "out", "bin"),)),)),
        Stage("test", (Job("unit", (
            FetchTask("build", "compile", "bin/out", destination="fetched"),
            FetchTask("build", "compile", "bin/out/a.txt", destination="one", is_file=True),
            sh("test \"$(cat fetched/out/sub/b.txt)\" = beta && test \"$(cat one/a.txt)\" = alpha"),
        )),)),
    ))
    ws = make_ws(tmp_path, p)
    run = ws.run("app")
    assert run.status == Status.PASSED, job_row(ws, "unit")["reason"]
    assert "fetched 3 file(s)" in Path(job_row(ws, "unit")["log_path"]).read_text()


def chain(tmp_path: Path) -> Workspace:
    """grandparent (builds) -> parent (fetches from it) -> child (fetches from grandparent via parent)."""
    gp = Pipeline("grandparent", (Stage("build", (Job("compile", (sh("mkdir -p dist && echo v1 > dist/app.tgz"),),
                                                      artifacts=(Artifact("build", "dist"),)),)),))
    parent = Pipeline("parent", (Stage("qa", (Job("check", (
        FetchTask("build", "compile", "dist/app.tgz", pipeline="grandparent", is_file=True),
        sh("test \"$(cat app.tgz)\" = v1 && echo parent-report > report.txt"),
    ), artifacts=(Artifact("build", "report.txt"),)),)),))
    child = Pipeline("child", (Stage("deploy", (Job("ship", (
        FetchTask("build", "compile", "dist", pipeline="grandparent/parent", destination="from-gp"),
        FetchTask("qa", "check", "report.txt", pipeline="parent", is_file=True),
        sh("test \"$(cat from-gp/dist/app.tgz)\" = v1 && test \"$(cat report.txt)\" = parent-report"),
    )),)),))
    return make_ws(tmp_path, gp, parent, child)


def test_fetch_across_a_pipeline_chain_with_the_grandparent_path(tmp_path: Path) -> None:
    ws = chain(tmp_path)
    with ws.engine() as engine:
        assert engine.run("grandparent").status == Status.PASSED
        engine.run("grandparent")  # a newer grandparent run that did NOT feed the parent
        # what the dependency materials record (both shapes are understood)
        parent = engine.drive(engine.trigger("parent", revisions={"grandparent": "grandparent/1/build/1"}))
        assert parent.status == Status.PASSED, job_row(ws, "check")["reason"]
        child = engine.drive(engine.trigger("child", revisions={
            "upstream": {"pipeline": "parent", "counter": 1, "stage": "qa", "stage_counter": 1}}))
    assert child.status == Status.PASSED, job_row(ws, "ship")["reason"]
    log = Path(job_row(ws, "ship")["log_path"]).read_text()
    assert "from grandparent/1/build/1/compile" in log  # the run that fed the parent, not the newest


def test_fetch_refuses_wrong_paths_and_changed_files(tmp_path: Path) -> None:
    ws = chain(tmp_path)
    with ws.engine() as engine:
        engine.run("grandparent")
        bad = Pipeline("bad", (Stage("s", (
            Job("traverse", (FetchTask("build", "compile", "../../etc", pipeline="grandparent"),)),
            Job("not-upstream", (FetchTask("build", "compile", "dist", pipeline="grandparent"),)),
        )),))
        ws.__dict__["config"] = Config(pipelines={**ws.config.pipelines, "bad": bad})
        engine.run("bad")
        assert "climbs out" in job_row(ws, "traverse")["reason"]
        assert "grandparent is not an upstream of bad/1" in job_row(ws, "not-upstream")["reason"]
        stored = ws.state / "artifacts" / "grandparent" / "1" / "build" / "1" / "compile" / "dist" / "app.tgz"
        stored.write_text("tampered")
        engine.drive(engine.trigger("parent", revisions={"grandparent": "grandparent/1/build/1"}))
    assert "does not match its recorded SHA-256" in job_row(ws, "check")["reason"]


def test_memory_artifact_store_and_notebook_upload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"memory://arts-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("WORKBENCH_ARTIFACTS_URL", url)
    p = Pipeline("app", (
        Stage("build", (Job("compile", (sh(BUILD_SCRIPT),), artifacts=(Artifact("build", "out"),)),)),
        Stage("use", (Job("read", (FetchTask("build", "compile", "out"), sh("test \"$(cat out/a.txt)\" = alpha"))),)),
    ))
    ws = make_ws(tmp_path, p)
    assert ws.run("app").status == Status.PASSED, job_row(ws, "read")["reason"]
    import fsspec

    fs = fsspec.filesystem("memory")
    assert fs.cat(f"{url}/app/1/build/1/compile/out/sub/b.txt") == b"beta\n"
    assert all(u.startswith("memory://") for u in ws.frames.artifacts["url"])
    assert not (ws.state / "artifacts").exists()


def test_junit_dialects_and_refusals() -> None:
    bare = parse_junit(b'<testsuite name="s"><testcase name="t" time="2"/></testsuite>')
    assert [(c.suite, c.name, c.status, c.duration) for c in bare] == [("s", "t", "passed", 2.0)]
    nested = parse_junit(JUNIT.encode())
    assert [c.status for c in nested] == ["passed", "failed", "error", "skipped"]
    assert nested[3].duration is None and nested[2].message == "timeout"
    with pytest.raises(ArtifactError, match="DTD"):
        parse_junit(b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><testsuite/>')
    with pytest.raises(ArtifactError, match="not a JUnit report"):
        parse_junit(b"<html/>")
    with pytest.raises(ArtifactError, match="well-formed"):
        parse_junit(b"<testsuite>")


def test_artifacts_cli_lists_a_run(workspace: Any) -> None:
    workspace.write("app.gocd.yaml", f"""
        format_version: 10
        pipelines:
          app:
            group: g
            stages:
              - build:
                  jobs:
                    compile:
                      artifacts:
                        - build: {{source: out, destination: bin}}
                        - test: {{source: reports}}
                      tasks:
                        - script: |
{chr(10).join('                            ' + line for line in BUILD_SCRIPT.splitlines())}
        """)
    r = workspace.cli("run", "app", "-q")
    assert r.code == 0, r.out + r.err
    r = workspace.cli("artifacts", "app/1/build/compile", "--format", "json")
    assert r.code == 0, r.err
    rows = json.loads(r.out)
    assert {x["path"] for x in rows} == {"bin/out/a.txt", "bin/out/sub/b.txt", "bin/out/c.bin", "reports/junit.xml"}
    assert all(len(x["sha256"]) == 64 for x in rows)
    table = workspace.cli("artifacts", "app/latest")
    assert table.code == 0 and "reports/junit.xml" in table.out
    missing = workspace.cli("artifacts", "app/1/nostage")
    assert missing.code == 2 and "no stage nostage" in missing.err
