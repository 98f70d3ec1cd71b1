"""The pipeline-config loader: GoCD's own YAML corpus, every error class with
its exact position, the extension points, and a property test that no input
ever produces anything but a Config or a located ConfigError."""
from __future__ import annotations

import base64
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CORPUS, corpus_dir
from workbench.config import (Config, DependencyMaterial, ExecTask, FetchTask, GenericTask, GitMaterial, NotebookTask,
                              ScriptTask, Traffic, load_config, load_texts, load_workspace_config, register_section,
                              register_stage_key, register_task_kind)
from workbench.config import jobs as jobs_mod
from workbench.config import loader as loader_mod
from workbench.config.context import ELSEWHERE, ConfigOrigin, Ctx
from workbench.config.jobs import parse_job, parse_stage, parse_task
from workbench.config.loader import (looks_like_ciphertext, parse_environment, parse_material, parse_parameters,
                                     parse_pipeline, parse_variables)
from workbench.config.yamlnodes import Map, PositionLoader, compose
from workbench.errors import ConfigError, Problem

LOCATED = re.compile(r"^.+:\d+:\d+: ")
FERNET = base64.urlsafe_b64encode(b"\x80" + bytes(range(8)) + bytes(16) + bytes(range(32)) + bytes(32)).decode()


@pytest.fixture(autouse=True)
def builtin_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the built-in task kinds, stage keys and sections here: feature modules imported by other
    test modules register theirs (routes, rollback, ...) globally, and tests register their own."""
    from workbench.config import validate as validate_mod

    tasks: dict[str, Any] = {}
    stage_keys = {"traffic": jobs_mod._traffic}
    sections: dict[str, Any] = {}
    for mod in (jobs_mod, loader_mod):
        monkeypatch.setattr(mod, "TASK_KINDS", tasks)
        monkeypatch.setattr(mod, "STAGE_KEYS", stage_keys)
    for mod in (loader_mod, validate_mod):
        monkeypatch.setattr(mod, "SECTIONS", sections)
    for mod, name, empty in ((loader_mod, "PIPELINE_KEYS", {}), (validate_mod, "CONFIG_CHECKS", [])):
        if hasattr(mod, name):  # later features' extension points
            monkeypatch.setattr(mod, name, empty)


def corpus_files(folder: str) -> list[str]:
    base = CORPUS / folder
    if not base.is_dir():
        return ["<corpus missing>"]
    return sorted(p.relative_to(base).as_posix() for p in base.rglob("*.yaml"))


def write(tmp_path: Path, **files: str) -> list[Path]:
    paths = []
    for name, text in files.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(textwrap.dedent(text))
        paths.append(path)
    return paths


def load(tmp_path: Path, **files: str) -> Config:
    return load_config(write(tmp_path, **files), base=tmp_path)


def errors(tmp_path: Path, **files: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, **files)
    return [str(p) for p in info.value.problems]


def has(problems: list[str], where: str, text: str) -> bool:
    return any(p.startswith(where + ": ") and text in p for p in problems)


def piece(rel: str) -> tuple[Map, Ctx]:
    text = (corpus_dir() / "parts" / rel).read_text()
    node, problems = compose(text, rel)
    assert problems == [] and isinstance(node, Map)
    return node, Ctx()


def first(node: Map) -> tuple[Any, Any]:
    return node.items[0]


def messages(ctx: Ctx, severity: str = "error") -> list[str]:
    return sorted((str(p) for p in ctx.problems if p.severity == severity), key=lambda s: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", s)])


PIPE = """\
pipelines:
  {name}:
    group: g
    materials:
      src:
        git: https://example.org/src.git
    stages:
      - build:
          jobs:
            compile:
              tasks:
                - exec: {{command: make}}
"""

# -- the corpus: examples ---------------------------------------------------------------

EXAMPLES: dict[str, list[tuple[str, str]] | None] = {
    "simple.gocd.yaml": None,
    "aliases.gocd.yaml": None,
    "format-version-9.gocd.yaml": None,
    "format-version-10.gocd.yaml": None,
    "rich.gocd.yaml": [("21:19", "pipeline dependency cycle: pipe2 -> pipe2"),
                       ("22:16", "pipeline 'pipe2' has no stage 'test'"),
                       ("48:17", "secure variable PASSWORD is not ciphertext (run `workbench encrypt`)")],
    "simple-invalid.gocd.yaml": [("5:5", "materials must be a mapping of material names to materials, found a list")],
    "invalid-materials.gocd.yaml": [("19:20", "YAML syntax error")],
    "duplicate-materials.gocd.yaml": [("8:7", "duplicate key 'upstream' (first at line 5, column 7)")],
}


@pytest.mark.parametrize("name", corpus_files("examples"))
def test_example(name: str) -> None:
    path = corpus_dir() / "examples" / name
    expected = EXAMPLES[name]
    if expected is None:
        config = load_config([path], base=path.parent)
        assert config.pipelines and config.files == (name,)
        return
    with pytest.raises(ConfigError) as info:
        load_config([path], base=path.parent)
    got = [str(p) for p in info.value.problems]
    for where, text in expected:
        assert has(got, f"{name}:{where}", text), got


def test_corpus_is_fully_covered() -> None:
    """A file added to the corpus must get an expectation here."""
    corpus_dir()
    assert set(corpus_files("examples")) == set(EXAMPLES)
    assert set(corpus_files("parts")) == set(PARTS)


def test_simple_and_aliases_content() -> None:
    base = corpus_dir() / "examples"
    pipe = load_config([base / "simple.gocd.yaml"]).pipeline("pipe1")
    assert pipe.group == "simple" and pipe.label_template == "${COUNT}"
    assert pipe.materials == (GitMaterial("mygit", "https://my.example.org/mygit.git", loc=pipe.materials[0].loc),)
    assert [s.name for s in pipe.stages] == ["build"]
    assert pipe.stages[0].jobs[0].tasks[0].command == "make"  # type: ignore[union-attr]
    aliases = load_config([base / "aliases.gocd.yaml"]).pipeline("pipe1")
    prepare, build, test = aliases.stages
    assert prepare.jobs[0].tasks[0].arguments == ("hello world",)  # type: ignore[union-attr]
    assert [t.command for t in build.jobs[0].tasks] == ["init", "make"]  # type: ignore[union-attr]
    assert [t.command for t in test.jobs[0].tasks] == ["init", "make", "test_unit", "test_integration"]  # type: ignore[union-attr]
    assert test.jobs[0].tasks[1].arguments == ("VERBOSE=true",)  # type: ignore[union-attr]


@pytest.mark.parametrize("version", ["9", "10"])
def test_whitelist_and_includes_are_read_as_includes(version: str) -> None:
    path = corpus_dir() / "examples" / f"format-version-{version}.gocd.yaml"
    config = load_config([path])
    for name in ("pipe1", "pipe2"):
        assert config.pipeline(name).materials[0].includes == ("externals", "tools")  # type: ignore[union-attr]


def test_rich_accepts_gocd_legacy_keys_and_reports_each_problem() -> None:
    path = corpus_dir() / "examples" / "rich.gocd.yaml"
    with pytest.raises(ConfigError) as info:
        load_config([path], base=path.parent)
    lines = {p.line for p in info.value.problems}
    assert not lines & {6, 7, 8, 9, 43, 44, 49, 50, 51, 52}  # locking, tracking_tool, tabs, properties
    assert all(p.severity == "error" and LOCATED.match(str(p)) for p in info.value.problems)
    assert "s&Du#@$xsSa" not in str(info.value)  # a secret is never echoed


@pytest.mark.parametrize("loader", [None, PositionLoader], ids=["libyaml", "python"])
def test_both_yaml_loaders_agree_on_positions(loader: Any) -> None:
    for name in ("invalid-materials.gocd.yaml", "duplicate-materials.gocd.yaml"):
        node, problems = compose((corpus_dir() / "examples" / name).read_text(), name, loader)
        assert [(p.line, p.col) for p in problems] == ([(19, 20)] if name.startswith("invalid") else [(8, 7)])


# -- the corpus: parts, through the piece parsers -------------------------------------------

GIT10 = dict(name="gitMaterial1", url="https://my.git.repository.com", branch="feature12", includes=("externals", "tools"),
             ignore=(), shallow_clone=True, destination="dir1", auto_update=False, username="username", password=None,
             encrypted_password="some encrypted value")


def check_material(rel: str) -> None:
    node, ctx = piece(rel)
    mat = parse_material(*first(node), ctx)
    kind = rel.split("/")[-1].split(".")[-2]
    unsupported = {"hg": "hg", "svn": "svn", "p4": "p4", "pluggable": "scm", "scm": "scm", "cr": "configrepo",
                   "package": "package"}
    if rel.endswith("package.yaml") or kind in unsupported:
        word = unsupported["package" if rel.endswith("package.yaml") else kind]
        assert mat is None
        (problem,) = ctx.problems
        if word == "configrepo":  # outside a config repository there is no repository to be the material
            assert problem.line == 2 and "is `type: configrepo`" in problem.message and "config_repos:" in problem.message
            node, ctx = piece(rel)
            ctx.origin = ConfigOrigin("shops", "https://example.org/shops.git", "trunk", "0" * 40)
            mat = parse_material(*first(node), ctx)
            assert ctx.errors == [] and isinstance(mat, GitMaterial)
            assert (mat.url, mat.branch) == ("https://example.org/shops.git", "trunk")
            return
        assert problem.line == 2 and f"{word} materials are not supported by the workbench" in problem.message
        return
    assert ctx.errors == []
    if kind == "dependency":
        assert isinstance(mat, DependencyMaterial)
        assert (mat.name, mat.pipeline, mat.stage) == ("upstream", "upstream-pipeline-1", "test")
        assert mat.ignore_for_scheduling is ("ignore_for_scheduling" in rel)
        return
    assert isinstance(mat, GitMaterial)
    if "complete" in rel:  # complete10 (includes), complete9 and complete10backwards (whitelist)
        assert {k: getattr(mat, k) for k in GIT10} == GIT10
        assert "not workbench ciphertext" in ctx.problems[0].message  # a warning: cloning would fail
    elif "password" in rel:
        assert (mat.username, mat.password, mat.branch) == ("some username", "some password", "feature12")
        assert "plain-text password" in ctx.problems[0].message and ctx.problems[0].severity == "warning"
    else:
        assert (mat.name, mat.url, mat.branch, mat.destination) == ("mygit", "http://example.com/mygit.git", "master", None)
        assert mat.auto_update is ("auto_update" not in rel)


def check_job(rel: str) -> None:
    node, ctx = piece(rel)
    job = parse_job(*first(node), ctx)
    assert job is not None and job.name == "test"
    errs = messages(ctx)
    if rel in ("jobs/minimal.yaml", "jobs/minimal_defaults.yaml", "jobs/runall.yaml", "jobs/elastic_profile.yaml",
               "jobs/complete.yaml"):
        assert len(errs) == 1 and "empty task entry" in errs[0]  # GoCD's fragment leaves the task out
    if rel == "jobs/complete.yaml":
        assert (job.timeout, job.run_instances, job.resources) == (300.0, 7, ("linux",))
        assert dict(job.environment_variables) == {"LD_LIBRARY_PATH": "."}
        assert [(a.type, a.source, a.destination) for a in job.artifacts] == [("test", "src", "dest"), ("build", "bin", "")]
        assert [(p.line, p.severity) for p in ctx.problems if "GoCD-only" in p.message] == [(6, "warning"), (16, "warning")]
    elif rel == "jobs/runall.yaml":
        assert job.run_instances == "all"
    elif rel == "jobs/elastic_profile.yaml":
        assert job.elastic_profile_id == "profile-id"
        assert any(p.severity == "warning" and "elastic_profile_id" in p.message for p in ctx.problems)
    elif rel == "jobs/external_artifacts.yaml":
        assert errs == ["jobs/external_artifacts.yaml:9:7: external artifacts are not supported by the workbench "
                        "(use build or test artifacts)"]
        assert [(a.type, a.source, a.destination) for a in job.artifacts] == [("build", "src1", "dest1"), ("test", "src2", "dest2")]
    elif rel == "jobs/list_of_lists_tasks.yaml":
        assert errs == []
        assert [(t.command, t.arguments) for t in job.tasks] == [  # type: ignore[union-attr]
            ("./gradlew", ("clean",)), ("./gradlew", ("assemble",)), ("./gradlew", ("test",))]
    else:
        assert job.tasks == () and job.timeout is None and job.run_instances is None


def check_stage(rel: str) -> None:
    node, ctx = piece(rel)
    stage = parse_stage(*first(node), ctx)
    assert stage is not None
    errs = messages(ctx)
    if rel == "stages/stage-job.yaml":  # no jobs: but tasks: -> one job named like the stage
        assert errs == [] and stage.approval.manual
        (job,) = stage.jobs
        assert (job.name, job.resources, job.tasks[0].command) == ("build", ("cpp",), "make")  # type: ignore[union-attr]
    elif rel == "stages/short_approval.yaml":
        assert stage.approval.type == "manual" and errs == ["stages/short_approval.yaml:4:5: job 'one' is empty: it needs `tasks:`"]
    else:
        assert (stage.fetch_materials, stage.keep_artifacts, stage.clean_workspace) == (True, True, True)
        assert (stage.approval.users, stage.approval.roles) == (("john",), ("manager",))
        assert dict(stage.environment_variables) == {"TEST_NUM": "1"}
        manual = "manual" in rel
        assert stage.approval.type == ("manual" if manual else "success")
        assert stage.approval.allow_only_on_success is manual
        off = 1 if manual else 0
        assert errs == [f"{rel}:{14 + off}:5: secure variable PASSWORD is not ciphertext (run `workbench encrypt`)",
                        f"{rel}:{16 + off}:5: job 'one' is empty: it needs `tasks:`",
                        f"{rel}:{17 + off}:5: job 'two' is empty: it needs `tasks:`"]


TASKS: dict[str, Any] = {
    "tasks/breakline.script.yaml": ScriptTask("./build.sh compile && make test"),
    "tasks/multiline.script.yaml": ScriptTask("./build.sh compile\nmake test"),
    "tasks/script.yaml": ScriptTask("./build.sh compile"),
    "tasks/full.exec.yaml": ExecTask("make", ("-j3", "docs", "install"), "dir", run_if="any"),
    "tasks/complete.fetch.yaml": FetchTask("upstream_stage", "upstream_job", "result", pipeline="upstream",
                                           destination="test", is_file=True, run_if="any"),
    "tasks/minimal.fetch.yaml": FetchTask("build", "test", "test-bin/"),
    "tasks/complete.plugin.yaml": "1:1: plugin tasks are not supported by the workbench",
    "tasks/complete.rake.yaml": "1:1: rake tasks are not supported by the workbench",
    "tasks/minimal.rake.yaml": "1:1: rake tasks are not supported by the workbench",
    "tasks/fetch_external_artifact.yaml": "3:20: fetching external artifacts (artifact_origin: external) is not supported",
}


def check_task(rel: str) -> None:
    node, ctx = piece(rel)
    task = parse_task(node, ctx)
    expected = TASKS[rel]
    if isinstance(expected, str):
        assert task is None and [str(p) for p in ctx.problems] == [f"{rel}:{expected}" + str(ctx.problems[0]).split(expected)[1]]
        return
    assert ctx.problems == [] and task is not None
    assert task.loc.line == 1 and task == type(expected)(**{**expected.__dict__, "loc": task.loc})


def check_variables(rel: str) -> None:
    node, ctx = piece(rel)
    plain, secure = parse_variables(node, "test", ctx)
    assert secure == {}
    if rel.endswith("empty.yaml"):
        assert (plain, ctx.problems) == ({}, [])
        return
    assert plain == ({"DEPLOYMENT": "testing"} if "2vars" in rel else {})
    line = 4 if "2vars" in rel else 2
    assert messages(ctx) == [f"{rel}:{line}:3: secure variable ENV_PASSWORD is not ciphertext (run `workbench encrypt`)"]


def check_environment(rel: str) -> None:
    node, ctx = piece(rel)
    env = parse_environment(*first(node), ctx)
    assert env is not None
    if rel.endswith("empty.yaml"):
        assert (env.name, env.pipelines, ctx.problems) == ("dev", (), [])
        return
    assert (env.name, env.pipelines, env.agents) == ("testing", ("example-deploy-testing", "build-testing"), ("123",))
    assert dict(env.environment_variables) == {"DEPLOYMENT": "testing"}
    assert messages(ctx) == [f"{rel}:5:5: secure variable ENV_PASSWORD is not ciphertext (run `workbench encrypt`)"]


def check_parameters(rel: str) -> None:
    node, ctx = piece(rel)
    assert parse_parameters(node, "p", ctx) == ({"param1": "value1"} if "param.yaml" in rel else {})
    assert ctx.problems == []


PIPES: dict[str, dict[str, Any]] = {  # GoCD's fragments leave materials and stages empty (null)
    "simple.pipe.yaml": dict(group="simple", empty_materials=[4], empty_stages=[6]),
    "stage_nested_list.pipe.yaml": dict(group="simple", empty_materials=[4], empty_stages=[7, 8, 9, 11, 12]),
    "display_order.pipe.yaml": dict(group="group1", display_order=10, empty_materials=[5], empty_stages=[7, 8]),
    "lock_behavior.pipe.yaml": dict(group="group1", lock_behavior="lockOnFailure", empty_materials=[6, 7], empty_stages=[9, 10]),
    "rich.pipe.yaml": dict(group="group1", lock_behavior="lockOnFailure", label_template="foo-1.0-${COUNT}",
                           empty_materials=[14, 15], empty_stages=[17, 18]),
    "export.pipe.yaml": dict(group="group1", lock_behavior="lockOnFailure", empty_materials=[12], empty_stages=[14, 15]),
    "template_ref.pipe.yaml": dict(group="group1", template="template", empty_materials=[13, 14], empty_stages=[]),
}


def check_pipe(rel: str) -> None:
    node, ctx = piece(rel)
    expected = dict(PIPES[rel])
    lines = {"material": expected.pop("empty_materials"), "stage entry": expected.pop("empty_stages")}
    if "template" in expected:  # referenced template: its stages come in with the pipeline's parameters
        tpl, _ = compose("- deploy:\n    jobs: {run: {tasks: [{exec: {command: go}}]}}\n", "tpl.yaml")
        ctx.templates["template"] = (None, tpl)  # type: ignore[assignment]
    pipeline = parse_pipeline(*first(node), ctx)
    assert pipeline is not None
    for key, value in expected.items():
        assert getattr(pipeline, key) == value, key
    if "template" in expected:
        assert [s.name for s in pipeline.stages] == ["deploy"]
    if rel in ("rich.pipe.yaml", "export.pipe.yaml", "template_ref.pipe.yaml"):
        assert pipeline.timer is not None and pipeline.timer.spec == "0 15 10 * * ? *" and pipeline.timer.only_on_changes
        assert pipeline.tracking_tool == {"link": "http://your-trackingtool/yourproject/${ID}", "regex": r"evo-(\d+)"}
    for what, expected_lines in lines.items():
        got = [p.line for p in ctx.errors if ("empty stage entry" if what == "stage entry" else "material '") in p.message]
        assert got == expected_lines, (what, messages(ctx))
    assert len(ctx.errors) == sum(map(len, lines.values()))


ROOTS: dict[str, list[str] | None] = {
    "roots/empty.yaml": None,
    "roots/version_1.yaml": None,
    "roots/version_2.yaml": None,
    "roots/version_not_present.yaml": None,
    "roots/2.yaml": ["5:3: pipeline 'pipe1' is empty", "6:3: pipeline 'pipe2' is empty"],
    "roots/common_section.yaml": ["6:3: pipeline 'pipe1' is empty"],
    "roots/duplicate.materials.pipe.yaml": ["8:7: duplicate key 'upstream' (first at line 5, column 7)"],
    "roots/pipeline_order.yaml": ["10:7: material 'mygit' is empty", "12:9: empty stage entry",
                                  "16:7: material 'mygit' is empty", "24:9: empty stage entry"],
}


def check_root(rel: str) -> None:
    path = corpus_dir() / "parts" / rel
    expected = ROOTS[rel]
    if expected is None:
        config = load_config([path], base=path.parent.parent)
        if rel != "roots/empty.yaml":
            assert list(config.pipelines) == ["pipe1"] and config.environments["first"].pipelines == ("pipe1",)
            assert config.pipeline("pipe1").stages[0].jobs[0].tasks[0].arguments == ("abc",)  # type: ignore[union-attr]
        return
    with pytest.raises(ConfigError) as info:
        load_config([path], base=path.parent.parent)
    got = [str(p) for p in info.value.problems]
    for item in expected:
        where, text = item.split(": ", 1)
        assert has(got, f"{rel}:{where}", text), got


PARTS: dict[str, Any] = {}
for _rel in corpus_files("parts"):
    _top = _rel.split("/")[0]
    PARTS[_rel] = {"materials": check_material, "jobs": check_job, "stages": check_stage, "tasks": check_task,
                   "env_vars": check_variables, "environments": check_environment, "parameters": check_parameters,
                   "roots": check_root}.get(_top, check_pipe)


@pytest.mark.parametrize("rel", corpus_files("parts"))
def test_part(rel: str) -> None:
    corpus_dir()
    PARTS[rel](rel)


# -- references across files (item 11) ------------------------------------------------------


def test_every_problem_of_every_file_is_reported_sorted(tmp_path: Path) -> None:
    got = errors(tmp_path, c="roles: {r: 1}\n", b="pipelines: [1]\n",
                 a="pipelines:\n  x:\n    stages: 5\n  y:\n    materials: []\n    stages: [s: {tasks: [script: x]}]\n")
    assert got == ["a.yaml:3:5: stages of pipeline 'x' must be a list, found the number 5",
                   "a.yaml:5:5: materials must be a mapping of material names to materials, found a list",
                   "b.yaml:1:1: pipelines must be a mapping of pipeline names to pipelines, found a list",
                   "c.yaml:1:9: users of role 'r' must be a list, found the number 1"]


def test_duplicate_pipeline_across_files(tmp_path: Path) -> None:
    got = errors(tmp_path, a=PIPE.format(name="app"), b="\n" + PIPE.format(name="App"))
    assert got == ["b.yaml:3:3: pipeline 'App' is already defined as 'app' (names are case-insensitive) at a.yaml:2:3"]


def test_duplicate_stage_and_job_names(tmp_path: Path) -> None:
    got = errors(tmp_path, a="""\
        pipelines:
          p:
            stages:
              - build: {jobs: {a: {tasks: [script: x]}}}
              - build: {jobs: {a: {tasks: [script: x]}, A: {tasks: [script: y]}}}
              - test:
                  jobs:
                    a: {tasks: [script: x]}
                    a: {tasks: [script: y]}
        """)
    assert got == ["a.yaml:5:9: stage 'build' is already defined in pipeline 'p' at line 4",
                   "a.yaml:5:49: job 'A' is already defined as 'a' (names are case-insensitive) in stage 'build' at line 5",
                   "a.yaml:9:13: duplicate key 'a' (first at line 8, column 13); a plain YAML loader would silently keep "
                   "only the last one"]


DEP = """\
pipelines:
  a:
    materials:
      up: {{pipeline: {up}, stage: {stage}}}
    stages:
      - build: {{jobs: {{j: {{tasks: [script: x]}}}}}}
  b:
    materials:
      up: {{pipeline: a, stage: build}}
    stages:
      - test: {{jobs: {{j: {{tasks: [script: x]}}}}}}
"""


def test_unknown_dependency_pipeline_and_stage(tmp_path: Path) -> None:
    assert errors(tmp_path, a=DEP.format(up="c", stage="build")) == [
        "a.yaml:4:22: dependency material 'up' refers to unknown pipeline 'c'" + ELSEWHERE]
    assert errors(tmp_path, a=DEP.format(up="bb", stage="x").replace("  b:", "  bb:")) == [
        "a.yaml:4:33: dependency material 'up': pipeline 'bb' has no stage 'x' (its stages: test)",
        "a.yaml:9:22: pipeline dependency cycle: a -> bb -> a"]


def test_dependency_cycles(tmp_path: Path) -> None:
    assert errors(tmp_path, a=DEP.format(up="b", stage="test")) == ["a.yaml:9:22: pipeline dependency cycle: a -> b -> a"]
    assert errors(tmp_path, a=DEP.format(up="a", stage="build")) == ["a.yaml:4:22: pipeline dependency cycle: a -> a"]


def test_cycle_across_files_is_reported_once(tmp_path: Path) -> None:
    one = "pipelines:\n  {n}:\n    materials: {{m: {{pipeline: {up}, stage: s}}}}\n    stages: [s: {{tasks: [script: x]}}]\n"
    got = errors(tmp_path, a=one.format(n="a", up="c"), b=one.format(n="b", up="a"), c=one.format(n="c", up="b"))
    assert got == ["b.yaml:3:31: pipeline dependency cycle: a -> c -> b -> a"]


def test_unknown_template_and_template_expansion(tmp_path: Path) -> None:
    templates = """\
        templates:
          build-and-test:
            - build:
                jobs:
                  compile: {tasks: [exec: {command: make, arguments: ["#{target}", "##{literal}"]}]}
            - test: {jobs: {unit: {tasks: [script: "pytest #{suite}"]}}}
        """
    uses = """\
        pipelines:
          web: {template: build-and-test, parameters: {target: web, suite: fast}, label_template: "#{target}-${COUNT}"}
          api: {template: build-and-test, parameters: {target: api, suite: slow}}
        """
    config = load(tmp_path, templates=templates, uses=uses)
    web, api = config.pipeline("web"), config.pipeline("api")
    assert web.template == "build-and-test" and [s.name for s in web.stages] == ["build", "test"]
    assert web.stages[0].jobs[0].tasks[0].arguments == ("web", "#{literal}")  # type: ignore[union-attr]
    assert api.stages[1].jobs[0].tasks[0].script == "pytest slow"  # type: ignore[union-attr]
    assert web.label_template == "web-${COUNT}"
    assert web.stages[0].loc.file == "templates.yaml"
    got = errors(tmp_path, templates=templates, uses="pipelines:\n  web: {template: build-and-tests}\n")
    assert got == ["uses.yaml:2:19: pipeline 'web' uses unknown template 'build-and-tests' (did you mean "
                   "'build-and-test'?) (templates: build-and-test)" + ELSEWHERE]


def test_template_needs_the_pipelines_parameters(tmp_path: Path) -> None:
    got = errors(tmp_path, t="templates:\n  t:\n    - s: {tasks: [script: \"run #{x}\"]}\n",
                 p="pipelines:\n  p1: {template: t}\n  p2: {template: t, parameters: {y: 1}}\n")
    assert got == ["t.yaml:3:27: unknown parameter 'x' in '#{x}' (parameters of pipeline 'p1': none)",
                   "t.yaml:3:27: unknown parameter 'x' in '#{x}' (parameters of pipeline 'p2': y)"]


def test_stages_xor_template(tmp_path: Path) -> None:
    got = errors(tmp_path, a="templates: {t: [s: {tasks: [script: x]}]}\npipelines:\n  p: {template: t, stages: []}\n  q: {group: g}\n")
    assert got == ["a.yaml:3:7: pipeline 'p' has both `stages:` and `template:`; keep one",
                   "a.yaml:3:20: stages of pipeline 'p' is empty",
                   "a.yaml:4:3: pipeline 'q' needs `stages:` (or `template:`)"]


ROLES = """\
roles:
  release-managers: [alice, bob]
pipelines:
  p:
    stages:
      - deploy:
          approval: {type: manual, roles: [release-managers, release-manager]}
          tasks: [script: x]
"""


def test_unknown_role_only_when_roles_are_defined(tmp_path: Path) -> None:
    assert errors(tmp_path, a=ROLES) == [
        "a.yaml:7:62: approval of stage 'deploy' names unknown role 'release-manager' (did you mean "
        "'release-managers'?) (roles: release-managers)"]
    config = load(tmp_path, a=ROLES.split("pipelines:")[0] + "pipelines:" + ROLES.split("pipelines:")[1].replace(
        ", release-manager]", "]"))
    assert config.roles == {"release-managers": ("alice", "bob")}
    config = load(tmp_path, a="pipelines:" + ROLES.split("pipelines:")[1])  # no roles: section anywhere: not checked
    assert config.pipeline("p").stages[0].approval.roles == ("release-managers", "release-manager")


def test_label_template_material_references(tmp_path: Path) -> None:
    base = PIPE.format(name="p").replace("group: g", "group: g\n    label_template: @@")
    config = load(tmp_path, a=base.replace("@@", '"1.${COUNT}-${src[:7]}-${src}"'))
    assert config.pipeline("p").label_template == "1.${COUNT}-${src[:7]}-${src}"
    assert errors(tmp_path, a=base.replace("@@", '"${COUNT}-${scr}"')) == [
        "a.yaml:4:21: label_template of pipeline 'p' refers to unknown material 'scr' (did you mean 'src'?) "
        "(materials: src; ${COUNT} is always available)"]


FETCH = """\
pipelines:
  up:
    stages:
      - make: {jobs: {bin: {tasks: [script: x]}}}
  p:
    materials: {up: {pipeline: up, stage: make}}
    stages:
      - one: {jobs: {a: {tasks: [script: x]}}}
      - two:
          jobs:
            b:
              tasks:
                - fetch: {stage: one, job: a, source: out}
                - fetch: {stage: two, job: b, source: out}
                - fetch: {stage: three, job: c, source: out}
                - fetch: {pipeline: up, stage: make, job: bin, source: out}
                - fetch: {pipeline: up, stage: make, job: lib, source: out}
                - fetch: {pipeline: down, stage: make, job: bin, source: out}
      - three: {jobs: {c: {tasks: [script: x]}}}
"""


def test_fetch_from_stages_that_do_not_run_before(tmp_path: Path) -> None:
    assert errors(tmp_path, a=FETCH) == [
        "a.yaml:14:34: fetch in stage 'two' refers to stage 'two' of the same pipeline, which does not run before "
        "it (only earlier stages can be fetched from)",
        "a.yaml:15:34: fetch in stage 'two' refers to stage 'three' of the same pipeline, which does not run "
        "before it (only earlier stages can be fetched from)",
        "a.yaml:17:59: fetch: stage 'make' of pipeline 'up' has no job 'lib' (jobs: bin)",
        "a.yaml:18:37: fetch refers to unknown pipeline 'down'" + ELSEWHERE]


def test_environments(tmp_path: Path) -> None:
    envs = """\
        environments:
          staging: {pipelines: [a], environment_variables: {URL: s}}
          prod: {pipelines: [a, ghost], production: true}
        """
    got = errors(tmp_path, p=PIPE.format(name="a"), e=envs)
    assert got == ["e.yaml:3:22: pipeline 'a' is already in environment 'staging' (at e.yaml:2:25); a pipeline "
                   "belongs to one environment only",
                   "e.yaml:3:25: environment 'prod' lists unknown pipeline 'ghost'" + ELSEWHERE]
    config = load(tmp_path, p=PIPE.format(name="a"), e="environments:\n  prod: {pipelines: [a], production: yes}\n",
                  f="environments:\n  prod: {agents: [web1]}\n")
    assert config.environment_of("a") is config.environments["prod"]
    assert config.environments["prod"].production and config.environments["prod"].agents == ("web1",)


# -- parameters (item 4) -------------------------------------------------------------------


def test_parameter_substitution(tmp_path: Path) -> None:
    config = load(tmp_path, a="""\
        pipelines:
          p:
            parameters: {env: prod, n: 3}
            materials: {src: {git: "https://example.org/#{env}.git", branch: "release-#{env}"}}
            environment_variables: {TARGET: "#{env}", HASH: "##{env} ## #"}
            stages:
              - deploy:
                  jobs:
                    run:
                      run_instances: "#{n}"
                      tasks: [exec: {command: "deploy-#{env}", arguments: ["#{env}#{n}", "a#b"]}]
        """)
    p = config.pipeline("p")
    assert p.parameters == {"env": "prod", "n": "3"}
    assert (p.materials[0].url, p.materials[0].branch) == ("https://example.org/prod.git", "release-prod")  # type: ignore[union-attr]
    assert p.environment_variables == {"TARGET": "prod", "HASH": "#{env} # #"}
    job = p.stages[0].jobs[0]
    assert job.run_instances == 3 and job.tasks[0].command == "deploy-prod"  # type: ignore[union-attr]
    assert job.tasks[0].arguments == ("prod3", "a#b")  # type: ignore[union-attr]


def test_unknown_parameter_is_reported_where_used(tmp_path: Path) -> None:
    got = errors(tmp_path, a="""\
        pipelines:
          p:
            parameters: {environment: prod}
            stages:
              - s:
                  tasks:
                    - script: |
                        echo #{enviroment}
                    - exec: {command: "x#{oops"}
        """)
    assert got == ["a.yaml:7:23: unknown parameter 'enviroment' in '#{enviroment}' (parameters of pipeline 'p': "
                   "environment) (did you mean 'environment'?)",
                   "a.yaml:9:31: unterminated parameter reference '#{oops' (write ## for a literal #)"]


# -- variables, secrets, timeouts ---------------------------------------------------------


def test_environment_variable_levels_and_coercion(tmp_path: Path) -> None:
    config = load(tmp_path, a="""\
        environments:
          e: {pipelines: [p], environment_variables: {LEVEL: environment}}
        pipelines:
          p:
            environment_variables: {LEVEL: pipeline, INT: 1, FLOAT: 1.50, BOOL: true, YES: yes, NULL: null, OCT: 0o17}
            secure_variables: {TOKEN: %s}
            stages:
              - s:
                  environment_variables: {LEVEL: stage}
                  jobs:
                    j:
                      environment_variables: {LEVEL: job}
                      secure_variables: {JOB_TOKEN: %s}
                      tasks: [script: x]
        """ % (FERNET, FERNET))
    p = config.pipeline("p")
    assert p.environment_variables == {"LEVEL": "pipeline", "INT": "1", "FLOAT": "1.50", "BOOL": "true", "YES": "yes",
                                       "NULL": "", "OCT": "0o17"}
    assert p.secure_variables == {"TOKEN": FERNET}
    assert config.environments["e"].environment_variables == {"LEVEL": "environment"}
    assert p.stages[0].environment_variables == {"LEVEL": "stage"}
    assert p.stages[0].jobs[0].environment_variables == {"LEVEL": "job"}
    assert p.stages[0].jobs[0].secure_variables == {"JOB_TOKEN": FERNET}


def test_secure_variables_must_be_fernet_ciphertext(tmp_path: Path) -> None:
    got = errors(tmp_path, a=PIPE.format(name="p").replace("group: g", "group: g\n    secure_variables:\n"
                                                             "      A: AES:abc:def\n      B: hunter2\n      C: 42\n"
                                                             "      D:\n      E: {x: 1}\n"
                                                             "    environment_variables: {A: plain}"))
    assert got == [
        "a.yaml:5:7: secure variable A holds GoCD server-side ciphertext (AES:...), which the workbench cannot "
        "decrypt; re-encrypt the plain value with `workbench encrypt`",
        "a.yaml:6:7: secure variable B is not ciphertext (run `workbench encrypt`)",
        "a.yaml:7:7: secure variable C is not ciphertext (run `workbench encrypt`)",
        "a.yaml:8:7: secure variable D is not ciphertext (run `workbench encrypt`)",
        "a.yaml:9:7: the value of environment variable E must be a string, found a mapping",
        "a.yaml:10:29: environment variable A is defined twice in pipeline 'p'"]
    assert "hunter2" not in "".join(got)


def test_looks_like_ciphertext() -> None:
    assert looks_like_ciphertext(FERNET)
    assert not looks_like_ciphertext(FERNET[:72])  # 54 bytes once decoded: too short
    assert not looks_like_ciphertext(base64.urlsafe_b64encode(b"\x81" + bytes(72)).decode())
    assert not looks_like_ciphertext(FERNET.replace("A", "+"))  # not the urlsafe alphabet
    for value in ("", "AES:x", "s&Du#@$xsSa", "é" * 100, FERNET + "="):
        assert not looks_like_ciphertext(value)
    from cryptography.fernet import Fernet  # a core dependency: never a skip

    key = Fernet.generate_key()
    assert looks_like_ciphertext(Fernet(key).encrypt(b"").decode())
    assert looks_like_ciphertext(Fernet(key).encrypt(b"secret" * 50).decode())


@pytest.mark.parametrize("value, seconds", [
    ("5", 300.0), ("1.5", 90.0), ("0", None), ("never", None), ('"30s"', 30.0), ('"5m"', 300.0), ('"1h"', 3600.0),
    ('"1.5s"', 1.5), ('"1h30m"', 5400.0), ('"10"', 600.0), ("~", None)])
def test_job_timeout(tmp_path: Path, value: str, seconds: float | None) -> None:
    text = PIPE.format(name="p").replace("tasks:", f"timeout: {value}\n              tasks:")
    assert load(tmp_path, a=text).pipeline("p").stages[0].jobs[0].timeout == seconds


@pytest.mark.parametrize("value, message", [
    ("-1", "timeout of job 'compile' must be a positive number or duration, found -1"),
    ('"soon"', "timeout of job 'compile' must be a number of minutes, a duration such as \"30s\", \"5m\" or \"1h\", "
               "or \"never\"; found a string 'soon'"),
    ("[1]", "timeout of job 'compile' must be a number of minutes"),
    (".inf", "timeout of job 'compile' must be a positive number or duration, found .inf")])
def test_bad_job_timeout(tmp_path: Path, value: str, message: str) -> None:
    text = PIPE.format(name="p").replace("tasks:", f"timeout: {value}\n              tasks:")
    (got,) = errors(tmp_path, a=text)
    assert got.startswith("a.yaml:11:") and message in got


def test_run_instances(tmp_path: Path) -> None:
    text = PIPE.format(name="p").replace("tasks:", "run_instances: @@\n              tasks:")
    assert load(tmp_path, a=text.replace("@@", "all")).pipeline("p").stages[0].jobs[0].run_instances == "all"
    assert load(tmp_path, a=text.replace("@@", "2")).pipeline("p").stages[0].jobs[0].run_instances == 2
    assert errors(tmp_path, a=text.replace("@@", "0")) == ["a.yaml:11:30: run_instances of job 'compile' (a number or \"all\") "
                                                   "must be at least 1, found 0"]


# -- tasks, stages, materials, pipelines ------------------------------------------------------


def test_exec_arguments_are_strings_and_on_cancel_is_a_task(tmp_path: Path) -> None:
    config = load(tmp_path, a=PIPE.format(name="p").replace(
        "- exec: {command: make}",
        "- exec:\n                    command: make\n                    arguments: [1, true, 2.50, 'a b; rm -rf /']\n"
        "                    run_if: failed\n                    on_cancel: {exec: {command: cleanup, arguments: [--all]}}"))
    task = config.pipeline("p").stages[0].jobs[0].tasks[0]
    assert isinstance(task, ExecTask)
    assert (task.command, task.arguments, task.run_if) == ("make", ("1", "true", "2.50", "a b; rm -rf /"), "failed")
    assert isinstance(task.on_cancel, ExecTask) and task.on_cancel.arguments == ("--all",)
    assert task.on_cancel.loc.line == 16


def test_task_problems(tmp_path: Path) -> None:
    got = errors(tmp_path, a=PIPE.format(name="p").replace("- exec: {command: make}", """\
- exec: {command: make, run_if: allways}
                - exec: {arguments: [x]}
                - script: {run: x}
                - script: ./x.sh
                  run_if: failed
                - ant: {target: x}
                - exce: {command: x}
                - {exec: {command: x}, script: y}
                - notebook: {path: a.ipynb, timeout: 2m, parameters: {x: 1}, kernal: py}"""))
    assert got == [
        "a.yaml:12:49: run_if of exec task must be one of passed, failed, any; found 'allways'",
        "a.yaml:13:25: exec task needs `command:`",
        "a.yaml:14:27: script task (as a mapping) needs `script:`",
        "a.yaml:14:28: unknown key 'run' in script task",
        "a.yaml:15:19: a task is a mapping with one key, the task kind (such as exec, script, fetch); found script, "
        "run_if (run_if goes inside the task's mapping: `- script: {script: ./x.sh, run_if: ...}`)",
        "a.yaml:17:19: ant tasks are not supported by the workbench (use exec or script)",
        "a.yaml:18:19: unknown task kind 'exce' (did you mean 'exec'?) (known: exec, fetch, notebook, plugin, script)",
        "a.yaml:19:19: a task is a mapping with one key, the task kind (such as exec, script, fetch); found exec, script",
        "a.yaml:20:78: unknown key 'kernal' in notebook task (did you mean 'kernel'?)"]


def test_script_tasks_take_run_if_and_on_cancel(tmp_path: Path) -> None:
    """The mapping form (ext) and GoCD's own long form (the script-executor plugin task) both carry them."""
    config = load(tmp_path, a=PIPE.format(name="p").replace("- exec: {command: make}", """- script: make
                - script: {script: ./collect-logs.sh, run_if: failed, working_directory: src,
                           on_cancel: {script: {script: ./stop.sh}}}
                - plugin:
                    configuration: {id: script-executor, version: 1}
                    options: {script: "echo #{who}", shtype: bash}
                    run_if: any
                    on_cancel: {script: ./cleanup.sh}""").replace("group: g", "group: g\n    parameters: {who: me}"))
    plain, mapped, plugin = config.pipeline("p").stages[0].jobs[0].tasks
    assert (plain.script, plain.run_if, plain.on_cancel) == ("make", "passed", None)  # type: ignore[union-attr]
    assert isinstance(mapped, ScriptTask) and isinstance(plugin, ScriptTask)
    assert (mapped.script, mapped.run_if, mapped.working_directory) == ("./collect-logs.sh", "failed", "src")
    assert isinstance(mapped.on_cancel, ScriptTask) and mapped.on_cancel.script == "./stop.sh"
    assert (plugin.script, plugin.run_if) == ("echo me", "any")
    assert isinstance(plugin.on_cancel, ScriptTask) and plugin.on_cancel.script == "./cleanup.sh"


def test_plugin_tasks_other_than_the_script_executor_are_refused(tmp_path: Path) -> None:
    got = errors(tmp_path, a=PIPE.format(name="p").replace("- exec: {command: make}", """- plugin: {configuration: {id: xunit.converter}, options: {ConverterType: jsunit}}
                - plugin: {configuration: {id: script-executor}, options: {script: x, shtype: zsh}}
                - plugin: {configuration: {id: script-executor}}"""))
    assert got == [
        "a.yaml:12:19: plugin tasks are not supported by the workbench (use exec or script); found plugin "
        "'xunit.converter' (only script-executor is read, as a script task)",
        "a.yaml:13:95: shtype 'zsh' of the script-executor plugin task is not supported (the workbench runs "
        "scripts with bash)",
        "a.yaml:14:19: the script-executor plugin task needs `options: {script: ...}`"]


def test_notebook_task(tmp_path: Path) -> None:
    config = load(tmp_path, a=PIPE.format(name="p").replace("group: g", "group: g\n    parameters: {day: monday}").replace(
        "- exec: {command: make}",
        "- notebook:\n                    path: reports/daily.ipynb\n                    kernel: python3\n"
        "                    timeout: 90\n                    run_if: any\n"
        "                    parameters: {day: '#{day}', limit: 10, nested: {tags: [a, '#{day}']}}"))
    task = config.pipeline("p").stages[0].jobs[0].tasks[0]
    assert isinstance(task, NotebookTask)
    assert (task.path, task.kernel, task.timeout, task.run_if) == ("reports/daily.ipynb", "python3", 90.0, "any")
    assert task.parameters == {"day": "monday", "limit": 10, "nested": {"tags": ["a", "monday"]}}


def test_approval_forms(tmp_path: Path) -> None:
    text = PIPE.format(name="p").replace("jobs:", "approval: @@\n          jobs:")
    assert load(tmp_path, a=text.replace("@@", "manual")).pipeline("p").stages[0].approval.manual
    assert load(tmp_path, a=text.replace("@@", "success")).pipeline("p").stages[0].approval.type == "success"
    assert errors(tmp_path, a=text.replace("@@", "{type: manaul}")) == [
        "a.yaml:9:28: approval type must be manual or success, found 'manaul' (did you mean 'manual'?)"]
    assert errors(tmp_path, a=text.replace("@@", "{users: [a]}")) == ["a.yaml:9:11: approval needs `type:`"]


def test_traffic_stage_key(tmp_path: Path) -> None:
    text = PIPE.format(name="p").replace("jobs:", "traffic: @@\n          jobs:")
    stage = load(tmp_path, a=text.replace("@@", "{route: web, weight: 25}")).pipeline("p").stages[0]
    assert stage.traffic == Traffic("web", 25, stage.traffic.loc)  # type: ignore[union-attr]
    assert errors(tmp_path, a=text.replace("@@", "{route: web, weight: 101}")) == [
        "a.yaml:9:41: weight of traffic (a percentage) must be from 0 to 100, found 101"]


def test_git_materials(tmp_path: Path) -> None:
    two = PIPE.format(name="p").replace("git: https://example.org/src.git", """\
git: https://example.org/src.git
      docs:
        type: git
        url: https://example.org/docs.git
        whitelist: [docs]
        includes: [docs]
      tests: {git: https://example.org/t.git, destination: t, blacklist: ["*.md"]}
      x: {type: svn, url: u}
      y:""")
    assert errors(tmp_path, a=two) == [
        "a.yaml:5:7: git material 'src' needs `destination:` because the pipeline has several git materials (each "
        "is checked out into its own folder)",
        "a.yaml:7:7: git material 'docs' needs `destination:` because the pipeline has several git materials (each "
        "is checked out into its own folder)",
        "a.yaml:10:9: material 'docs' has both `includes:` and `whitelist:` (the old name of includes); keep one",
        "a.yaml:13:17: material 'x': svn materials are not supported by the workbench (only git and pipeline "
        "dependencies are)",
        "a.yaml:14:7: material 'y' is empty: give `git: URL`, or `pipeline:` and `stage:` for a dependency"]


def test_pipeline_extensions_and_legacy_keys(tmp_path: Path) -> None:
    text = PIPE.format(name="p").replace("group: g", """\
group: g
    locking: true
    mingle: {base_url: x}
    fan_in: false
    trigger: each_commit
    display_order: 3
    timer: {spec: "0 0 22 ? * MON-FRI"}""")
    config = load(tmp_path, a=text)
    p = config.pipeline("p")
    assert (p.lock_behavior, p.fan_in, p.trigger, p.display_order) == ("lockOnFailure", False, "each_commit", 3)
    assert p.timer is not None and p.timer.spec == "0 0 22 ? * MON-FRI" and not p.timer.only_on_changes
    assert [(w.line, w.severity) for w in config.warnings] == [(4, "warning"), (5, "warning")]
    assert "read as lock_behavior: lockOnFailure" in config.warnings[0].message


def test_unknown_keys_and_bad_values(tmp_path: Path) -> None:
    text = PIPE.format(name="p").replace("group: g", """\
group: g
    lables: x
    lock_behavior: lockOnFail
    timer: {spec: "0 0 22 * * * * *"}
    trigger: sometimes""")
    assert errors(tmp_path, a=text) == [
        "a.yaml:4:5: unknown key 'lables' in pipeline 'p' (did you mean 'label_template'?)",
        "a.yaml:5:20: lock_behavior of pipeline 'p' must be one of none, lockOnFailure, unlockWhenFinished; found "
        "'lockOnFail' (did you mean 'lockOnFailure'?)",
        "a.yaml:6:19: invalid timer spec '0 0 22 * * * * *': 8 fields; expected 5 (cron: minute hour day month "
        "weekday) or 6-7 (Quartz: second minute hour day-of-month month day-of-week [year])",
        "a.yaml:7:14: trigger of pipeline 'p' must be one of batch, each_commit; found 'sometimes'"]


@pytest.mark.parametrize("spec, message", [
    ("61 0 22 ? * *", "'61' is not a valid Quartz second field"),
    ("0 0 25 ? * MON-FRI", "'25' is not a valid Quartz hour field"),
    ("0 0 22 ? * MON-FRX", "'MON-FRX' is not a valid Quartz day-of-week field"),
    ("99 * * * *", "'99' is not a valid cron minute field"),
    ("0 22 * 13 *", "'13' is not a valid cron month field"),
    ("0 0 22 ? * 8", "Quartz day-of-week 8 is outside 1-7 (1 = Sunday)"),
    ("0 0 22 15W * ?", "'W' (nearest weekday) in day-of-month is not supported"),
])
def test_timer_specs_are_checked_with_croniter_when_loading(tmp_path: Path, spec: str, message: str) -> None:
    text = PIPE.format(name="p").replace("group: g", f'group: g\n    timer: {{spec: "{spec}"}}')
    assert errors(tmp_path, a=text) == [f"a.yaml:4:19: invalid timer spec {spec!r}: {message}"]


def test_good_timer_specs_load(tmp_path: Path) -> None:
    for spec in ("0 0 22 ? * MON-FRI", "0 15 10 * * ? 2030", "*/15 * * * *", "0 3 * * sat", "0 0 9 ? * 1/2"):
        text = PIPE.format(name="p").replace("group: g", f'group: g\n    timer: {{spec: "{spec}"}}')
        assert load(tmp_path, a=text).pipeline("p").timer.spec == spec  # type: ignore[union-attr]


def test_top_level(tmp_path: Path) -> None:
    assert errors(tmp_path, a="format_version: 11\npipline: {}\ncommon: {x: [1]}\n") == [
        "a.yaml:1:17: format_version must be from 1 to 10, found 11",
        "a.yaml:2:1: unknown key 'pipline' in the file (did you mean 'pipelines'?)"]
    assert errors(tmp_path, a="- a\n- b\n") == [
        "a.yaml:1:1: a pipeline file must be a mapping with keys such as format_version, pipelines and environments; "
        "found a list"]
    assert load_texts({"mem.yaml": PIPE.format(name="p")}).files == ("mem.yaml",)  # unsaved text, e.g. an editor
    config = load(tmp_path, a="# nothing yet\n")
    assert config.pipelines == {} and [str(w) for w in config.warnings] == ["a.yaml:1:1: warning: the file is empty"]


# -- the YAML layer ---------------------------------------------------------------------


def test_merge_keys_and_anchors_per_file(tmp_path: Path) -> None:
    one = """\
        common:
          job: &job
            timeout: 10
            tasks: [exec: {command: make}]
        pipelines:
          %s:
            stages:
              - build: {jobs: {a: *job, b: {<<: *job, timeout: 1}}}
        """
    config = load(tmp_path, x=one % "x", y=(one % "y").replace("make", "ninja"))
    a, b = config.pipeline("x").stages[0].jobs
    assert (a.timeout, b.timeout, b.tasks[0].command) == (600.0, 60.0, "make")  # type: ignore[union-attr]
    assert config.pipeline("y").stages[0].jobs[1].tasks[0].command == "ninja"  # type: ignore[union-attr]


def test_yaml_problems(tmp_path: Path) -> None:
    got = errors(tmp_path, a="a: !!python/object/apply:os.system [echo hi]\n", b="x: &x [*x]\nb: *nowhere\n",
                 c="pipelines: {<<: 1}\n", d="x: 1\n---\ny: 2\n", e="a: \x07\n", f="a: [1, 2\n")
    assert got == [
        "a.yaml:1:1: unknown key 'a' in the file",
        "a.yaml:1:4: unsupported YAML tag 'tag:yaml.org,2002:python/object/apply:os.system' (only plain YAML is allowed)",
        "b.yaml:2:4: YAML syntax error: found undefined alias 'nowhere'",
        "c.yaml:1:17: the value of a merge key (<<) must be a mapping or a list of mappings",
        "d.yaml:2:1: YAML syntax error: expected a single document in the stream, but found another document (see "
        "line 1, column 1)",
        "e.yaml:1:4: YAML syntax error: unacceptable character #x0007: control characters are not allowed",
        "f.yaml:1:4: YAML syntax error: while parsing a flow sequence: did not find expected ',' or ']' (see line 2, "
        "column 1)"]
    assert errors(tmp_path, b="x: &x [*x]\n") == ["b.yaml:1:1: unknown key 'x' in the file",
                                                  "b.yaml:1:8: recursive YAML alias *x: a value cannot contain itself"]


def test_binary_junk_and_deep_nesting(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_bytes(b"pipelines:\n  p: \xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_config([tmp_path / "a.yaml"], base=tmp_path)
    assert [str(p) for p in info.value.problems] == ["a.yaml:2:6: the file is not UTF-8 text (byte 0xff)"]
    assert errors(tmp_path, a="[" * 5000 + "]" * 5000) == [
        "a.yaml:1:1001: YAML syntax error: while increasing flow level: exceeded maximum nesting depth"]


def test_gocd_keys_that_do_nothing_here_warn_and_say_what_happens_instead(tmp_path: Path) -> None:
    text = PIPE.format(name="p").replace("          jobs:", """\
          clean_workspace: true
          keep_artifacts: true
          never_cleanup_artifacts: true
          jobs:""") + """\
environments:
  prod:
    agents: [0a1b2c3d-agent-uuid]
    pipelines: [p]
  qa:
    agents: []
"""
    config = load(tmp_path, a=text)
    assert [str(w) for w in config.warnings] == [
        "a.yaml:9:11: warning: clean_workspace of stage 'build' is accepted for GoCD compatibility but does nothing: "
        "every job run starts in a new, empty folder, so there is never an old workspace to clean or keep",
        "a.yaml:10:11: warning: keep_artifacts of stage 'build' is accepted for GoCD compatibility but does nothing: "
        "the workbench never deletes artifacts: they stay in the artifact store (.workbench/artifacts, or the "
        "`artifacts:` URL of workbench.yaml) until removed there",
        "a.yaml:11:11: warning: never_cleanup_artifacts of stage 'build' is accepted for GoCD compatibility but does "
        "nothing: the workbench never deletes artifacts: they stay in the artifact store (.workbench/artifacts, or "
        "the `artifacts:` URL of workbench.yaml) until removed there",
        "a.yaml:18:5: warning: agents of environment 'prod' is accepted for GoCD compatibility but not used: agents "
        "are Dask workers, chosen for a job by its resources and by the environments an agent joins "
        "(`workbench agent --environment prod`)"]
    assert config.pipeline("p").stages[0].clean_workspace and config.environments["prod"].agents


def test_cleanup_keys_set_to_false_change_nothing_and_say_nothing(tmp_path: Path) -> None:
    """GoCD's UI export writes `clean_workspace: false` and `keep_artifacts: false` on every stage (issue 18)."""
    text = PIPE.format(name="p").replace("          jobs:", """\
          clean_workspace: false
          keep_artifacts: "false"
          never_cleanup_artifacts: no
          jobs:""")
    config = load(tmp_path, a=text)
    assert [str(w) for w in config.warnings] == []
    stage = config.pipeline("p").stages[0]
    assert (stage.clean_workspace, stage.keep_artifacts) == (False, False)


# -- workspace, extensions, speed -----------------------------------------------------------


def test_load_workspace_config(tmp_path: Path) -> None:
    folder = tmp_path / "pipelines"
    folder.mkdir()
    assert [str(w) for w in load_workspace_config(tmp_path).warnings] == [
        "pipelines:1:1: warning: no pipeline files (*.yaml, *.yml, *.gocd.json, *.gopipeline.json, *.goenvironment.json) "
        "in the pipelines folder"]
    (folder / "b.yml").write_text(PIPE.format(name="b"))
    (folder / "a.gocd.yaml").write_text(PIPE.format(name="a"))
    (folder / ".#a.yaml").write_text("junk: [")
    (folder / "notes.txt").write_text("junk: [")
    config = load_workspace_config(tmp_path)
    assert config.files == ("pipelines/a.gocd.yaml", "pipelines/b.yml") and list(config.pipelines) == ["a", "b"]
    (folder / "c.yaml").write_text("pipelines:\n  z:\n" + PIPE.format(name="b").split("\n", 1)[1])
    with pytest.raises(ConfigError) as info:
        load_workspace_config(tmp_path)
    assert [str(p) for p in info.value.problems] == [
        "pipelines/c.yaml:2:3: pipeline 'z' is empty: it needs `stages:` (or `template:`)",
        "pipelines/c.yaml:3:3: pipeline 'b' is already defined at pipelines/b.yml:2:3"]


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config([tmp_path / "missing.yaml"], base=tmp_path)
    assert [str(p) for p in info.value.problems] == ["missing.yaml:1:1: cannot read the file: No such file or directory"]


def test_extension_points(tmp_path: Path) -> None:
    def publish(node: Any, ctx: Ctx) -> GenericTask | None:
        m = ctx.mapping(node, "publish task", null_ok=False)
        if m is None:
            return None
        ctx.check_keys(m, {"repository"}, "publish task")
        return GenericTask("publish", {"repository": ctx.req_text(m, "repository", "publish task", m)})

    def routes(node: Any, ctx: Ctx) -> dict[str, Any]:
        return node.plain() or {}

    register_task_kind("publish", publish)
    register_section("routes", routes)
    register_stage_key("canary", lambda node, ctx: ctx.boolean(node, "canary"))
    text = PIPE.format(name="p").replace("- exec: {command: make}",
                                         "- publish: {repository: pypi, run_if: any, on_cancel: {script: undo}}")
    config = load(tmp_path, a=text.replace("jobs:", "canary: yes\n          jobs:") + "routes: {web: {host: a}}\n",
                  b="routes: {api: {host: b}}\n")
    task = config.pipeline("p").stages[0].jobs[0].tasks[0]
    assert isinstance(task, GenericTask) and task.options == {"repository": "pypi"} and task.run_if == "any"
    assert task.loc.line == 13 and isinstance(task.on_cancel, ScriptTask)
    assert config.pipeline("p").stages[0].extensions == {"canary": True}
    assert config.extensions == {"routes": {"web": {"host": "a"}, "api": {"host": "b"}}}
    assert errors(tmp_path, a="routes: {web: 1}\n", b="routes: {web: 2}\n") == [
        "b.yaml:1:1: routes: 'web' is already defined in another file"]
    with pytest.raises(ValueError):
        register_section("pipelines", routes)


ONE_OF_200 = """\
  p{i}:
    group: g
    parameters: {{target: t{i}}}
    materials:
      src: {{git: https://example.org/r{i}.git, branch: main}}
{dependency}    stages:
      - build:
          jobs:
            compile:
              timeout: 5m
              tasks:
                - exec: {{command: make, arguments: [-j4, "#{{target}}"]}}
                - script: ./run.sh
      - test:
          approval: manual
          jobs:
            unit:
              tasks:
                - fetch: {{stage: build, job: compile, source: out/}}
                - exec: {{command: pytest}}
"""


def test_two_hundred_pipelines_load_with_every_link(tmp_path: Path) -> None:
    """A workspace of 200 chained pipelines loads whole; its load time is a benchmark figure
    (benchmarks/bench_engine.py), never an assertion here."""
    dependency = "      up: {{pipeline: p{up}, stage: test}}\n"
    text = "pipelines:\n" + "".join(ONE_OF_200.format(i=i, dependency=dependency.format(up=i - 1) if i else "")
                                    for i in range(200))
    (tmp_path / "big.yaml").write_text(text)
    config = load_config([tmp_path / "big.yaml"])
    assert len(config.pipelines) == 200 and config.pipeline("p7").materials[1].pipeline == "p6"  # type: ignore[union-attr]
    assert config.pipeline("p7").stages[0].jobs[0].tasks[0].arguments == ("-j4", "t7")  # type: ignore[union-attr]
    assert config.pipeline("p199").materials[1].pipeline == "p198"  # type: ignore[union-attr]


# -- the property: any text gives a Config or located problems -------------------------------------

SAMPLE = (PIPE.format(name="p") + """\
environments: {e: {pipelines: [p]}}
common: &c {x: 1}
templates: {t: [s: {tasks: [script: x]}]}
""")
TOKENS = st.sampled_from(list(":-[]{}&*!|>'\"#%@`,?\n\t ") + ["  ", "- ", ": ", "<<", "#{", "${", "null", "~", "exec",
                                                                 "stages", "pipelines", "0x", "\x00", "é", "&a ", "*a"])


@st.composite
def mutated_yaml(draw: st.DrawFn) -> str:
    text = SAMPLE
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "swap", "dup"]))
        if action == "insert":
            text = text[:pos] + draw(st.lists(TOKENS, min_size=1, max_size=3).map("".join)) + text[pos:]
        elif action == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 8)):]
        else:
            lines = text.splitlines(keepends=True)
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            if action == "swap":
                lines[i], lines[j] = lines[j], lines[i]
            else:
                lines.insert(j, lines[i])
            text = "".join(lines)
    return text


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "fuzz.yaml"


@settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(mutated_yaml(), st.text(max_size=60), st.binary(max_size=60)))
def test_any_text_loads_or_gives_located_problems(fuzz_file: Path, text: str | bytes) -> None:
    fuzz_file.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    try:
        config = load_config([fuzz_file], base=fuzz_file.parent)
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, Problem) and LOCATED.match(str(p)) for p in exc.problems)
    else:
        assert isinstance(config, Config)
        assert all(LOCATED.match(str(w)) for w in config.warnings)
