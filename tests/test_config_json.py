"""GoCD's JSON config plugin format (*.gocd.json, *.gopipeline.json, *.goenvironment.json).

The JSON is reshaped into the YAML format's nodes, so the checks are the
YAML ones; these tests hold the reshaping to what GoCD does: each public JSON
example loads into the same model as its YAML equivalent (the YAML plugin's
own JSON output beside the corpus YAML it came from, or a YAML written here),
and every problem is reported at its FILE:LINE:COL.
"""
from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from conftest import corpus_dir

from workbench.config import Config, ExecTask, FetchTask, ScriptTask, load_config, load_texts, load_workspace_config
from workbench.config.model import Loc
from workbench.errors import ConfigError

DATA = Path(__file__).parent / "data" / "gocd-json"
OUT = DATA / "yaml-plugin-out"


from test_config import builtin_registries  # noqa: F401  (autouse: only the built-in task kinds and keys)


def stripped(value: Any) -> Any:
    """A model object as plain data without positions (JSON and YAML put the same thing on other lines)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {type(value).__name__: {f.name: stripped(getattr(value, f.name)) for f in dataclasses.fields(value)
                                       if not isinstance(getattr(value, f.name), Loc)}}
    if isinstance(value, (list, tuple)):
        return [stripped(v) for v in value]
    if isinstance(value, dict):
        return {k: stripped(v) for k, v in value.items()}
    return value


def problems(*paths: Path | str, texts: dict[str, str] | None = None) -> list[str]:
    try:
        load_texts(texts) if texts is not None else load_config(list(paths), base=DATA)
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    pytest.fail("the config loaded; expected problems")


def unlocated(lines: list[str]) -> list[str]:
    return sorted(line.split(": ", 1)[1] for line in lines)


def load_json(name: str, data: dict[str, Any] | list[Any] | str) -> Config:
    return load_texts({name: data if isinstance(data, str) else json.dumps(data, indent=2)})


def json_problems(name: str, text: str) -> list[str]:
    return problems(texts={name: text})


# -- the public examples -------------------------------------------------------------------------

SAME_AS_CORPUS = ["simple", "aliases", "format-version-10"]


@pytest.mark.parametrize("name", SAME_AS_CORPUS)
def test_the_yaml_plugins_json_output_loads_like_the_corpus_yaml_it_came_from(name: str) -> None:
    yaml_config = load_config([corpus_dir() / "examples" / f"{name}.gocd.yaml"])
    json_config = load_config([OUT / f"{name}.gocd.json"])
    assert json_config.pipelines and stripped(json_config.pipelines) == stripped(yaml_config.pipelines)
    assert stripped(json_config.environments) == stripped(yaml_config.environments)
    assert unlocated([str(w) for w in json_config.warnings]) == unlocated([str(w) for w in yaml_config.warnings])


def test_rich_json_is_refused_for_the_same_reasons_as_rich_yaml_each_at_its_own_line() -> None:
    yaml_problems = problems(corpus_dir() / "examples" / "rich.gocd.yaml")
    json_lines = problems(OUT / "rich.gocd.json")
    assert unlocated(json_lines) == unlocated(yaml_problems) and len(json_lines) == 4
    assert "yaml-plugin-out/rich.gocd.json:30:23: pipeline dependency cycle: pipe2 -> pipe2" in json_lines
    assert "yaml-plugin-out/rich.gocd.json:75:27: secure variable PASSWORD is not ciphertext (run `workbench encrypt`)" \
        in json_lines  # at the variable's "name" value


def test_rich_json_shapes_map_onto_the_model() -> None:
    text = (OUT / "rich.gocd.json").read_text().replace("s&Du#@$xsSa", "").replace('"stage": "test"', '"stage": "build"')
    data = json.loads(text)
    data["pipelines"][0]["materials"][1]["pipeline"] = "other"
    data["pipelines"][0]["stages"][0]["jobs"][0]["tasks"][0]["pipeline"] = "other"
    data["pipelines"][0]["stages"][0]["jobs"][0]["environment_variables"].pop()
    other = {"name": "other", "group": "rich", "materials": [{"type": "git", "url": "https://x/o.git"}],
             "stages": [{"name": "build", "jobs": [{"name": "test", "tasks": [{"type": "exec", "command": "true"}]}]}]}
    data["pipelines"].append(other)
    config = load_json("rich.gocd.json", data)
    pipe = config.pipelines["pipe2"]
    assert pipe.lock_behavior == "lockOnFailure"  # enable_pipeline_locking: true (format 1)
    assert pipe.label_template == "${mygit[:8]}" and pipe.timer is not None and pipe.timer.only_on_changes
    assert pipe.tracking_tool == {"link": "http://your-trackingtool/yourproject/${ID}", "regex": r"evo-(\d+)"}
    assert [m.name for m in pipe.materials] == ["mygit", "upstream"]
    stage = pipe.stages[0]
    assert stage.approval.type == "manual" and stage.approval.roles == ("manager",) and stage.clean_workspace
    job = stage.jobs[0]
    assert job.run_instances == 3 and job.resources == ("net45",)
    assert [(a.type, a.source, a.destination) for a in job.artifacts] == [("build", "bin/", "build"),
                                                                          ("test", "tests/", "test-reports/")]
    assert job.environment_variables == {"MONO_PATH": "/usr/bin/local/mono"}
    fetch, make, script = job.tasks
    assert isinstance(fetch, FetchTask) and (fetch.pipeline, fetch.stage, fetch.job) == ("other", "build", "test")
    assert isinstance(make, ExecTask) and make.arguments == ("VERBOSE=true",)
    assert isinstance(script, ScriptTask) and script.script == "./build.sh ci"  # the script-executor plugin task
    warnings = [str(w) for w in config.warnings]
    assert any(w.startswith("rich.gocd.json:") and "'tabs'" in w for w in warnings)
    assert any("'properties'" in w for w in warnings)


DOCEXAMPLE_YAML = """\
format_version: 1
pipelines:
  my_pipeline:
    group: configrepo-example
    label_template: "${COUNT}"
    lock_behavior: none
    materials:
      git:
        type: git
        url: git@github.com:example/sample_repo.git
        destination: code
        ignore: ["**/*.*", "**/*.html"]
        auto_update: true
        branch: master
    stages:
      - my_stage:
          fetch_materials: true
          clean_workspace: false
          never_cleanup_artifacts: false
          approval: {type: success, roles: [], users: []}
          jobs:
            my_job:
              timeout: 0
              resources: [Linux, Java]
              tasks:
                - exec:
                    run_if: passed
                    on_cancel: {exec: {command: ls}}
                    command: sleep
                    arguments: ["10"]
              tabs: {cobertura: target/site/cobertura/*.xml}
              artifacts:
                - build: {source: target, destination: result}
                - test: {source: test, destination: res1}
environments:
  dev:
"""


def test_the_json_plugins_examples_load_like_the_yaml_written_for_them() -> None:
    json_config = load_config([DATA / "docexample.gopipeline.json", DATA / "dev.goenvironment.json"], base=DATA)
    yaml_config = load_texts({"docexample.gocd.yaml": DOCEXAMPLE_YAML})
    assert stripped(json_config.pipelines) == stripped(yaml_config.pipelines)
    assert stripped(json_config.environments) == stripped(yaml_config.environments)
    assert unlocated([str(w) for w in json_config.warnings]) == unlocated([str(w) for w in yaml_config.warnings])
    job = json_config.pipelines["my_pipeline"].stages[0].jobs[0]
    assert isinstance(job.tasks[0], ExecTask) and isinstance(job.tasks[0].on_cancel, ExecTask)
    assert job.timeout is None  # "timeout": 0 is GoCD's "never"


@pytest.mark.parametrize("name, where, kind", [
    ("firstpipe.gopipeline.json", "31:23", "rake"),
    ("secondpipe.gopipeline.json", "20:23", "rake"),
    ("alltasks.gopipeline.json", "44:23", "ant"),
    ("alltasks.gopipeline.json", "49:23", "nant"),
])
def test_rake_ant_and_nant_tasks_are_refused_at_their_type(name: str, where: str, kind: str) -> None:
    found = problems(*(DATA / n for n in ("firstpipe.gopipeline.json", "secondpipe.gopipeline.json",
                                          "alltasks.gopipeline.json")))
    assert f"{name}:{where}: {kind} tasks are not supported by the workbench (use exec or script)" in found
    # the rest of alltasks is fine: its dependency and fetch name secondpipe, defined in another file
    assert not any("secondpipe" in line and "unknown" in line for line in found), found


def test_every_example_file_is_used_by_a_test() -> None:
    used = {"docexample.gopipeline.json", "dev.goenvironment.json", "firstpipe.gopipeline.json",
            "secondpipe.gopipeline.json", "alltasks.gopipeline.json"}
    used |= {f"yaml-plugin-out/{n}.gocd.json" for n in (*SAME_AS_CORPUS, "rich")}
    assert {p.relative_to(DATA).as_posix() for p in DATA.rglob("*.json")} == used


# -- malformed JSON ----------------------------------------------------------------------------


@pytest.mark.parametrize("text, where, message", [
    ('{\n  "name": "p"\n  "group": "g"\n}', "3:3", "JSON syntax error: Expecting ',' delimiter"),
    ('{\n  "name": "p",\n}', "3:1", "JSON syntax error: Expecting property name enclosed in double quotes"),
    ('{\n  // a comment\n  "name": "p"\n}', "2:3", "JSON syntax error: Expecting property name enclosed in double quotes"),
    ("{'name': 'p'}", "1:2", "JSON syntax error: Expecting property name enclosed in double quotes"),
    ('{"name": "p", "timeout": NaN}', "1:26", "JSON syntax error: NaN and Infinity are not JSON numbers"),
    ('{"name": "p"} {}', "1:15", "JSON syntax error: Extra data"),
    ('{\n  "name": "unterminated', "2:11", "JSON syntax error: Unterminated string starting at"),
    ("[" * 100_000, "1:1", "the JSON is nested too deeply to read"),
])
def test_malformed_json_is_refused_at_its_line_and_column(text: str, where: str, message: str) -> None:
    assert json_problems("p.gopipeline.json", text) == [f"p.gopipeline.json:{where}: {message}"]


def test_a_key_written_twice_is_refused_at_the_second() -> None:
    text = '{\n  "name": "p",\n  "group": "a",\n  "group": "b",\n  "stages": []\n}'
    found = json_problems("p.gopipeline.json", text)
    assert "p.gopipeline.json:4:3: duplicate key 'group' (first at line 3, column 3); GoCD's JSON reader would " \
           "silently keep only the last one" in found


def test_not_an_object_not_utf8_and_empty_files() -> None:
    assert json_problems("p.gopipeline.json", '["a"]') == [
        "p.gopipeline.json:1:1: a JSON config file must be a JSON object, found a list"]
    with pytest.raises(ConfigError) as info:
        load_config_bytes({"p.gocd.json": b'{"name": "\xff"}'})
    assert [str(p) for p in info.value.problems] == ["p.gocd.json:1:11: the file is not UTF-8 text (byte 0xff)"]
    assert [str(w) for w in load_texts({"e.goenvironment.json": " \n"}).warnings] == [
        "e.goenvironment.json:1:1: warning: the file is empty"]


def load_config_bytes(files: dict[str, bytes]) -> Config:
    from workbench.config import _load

    return _load([(name, data, None) for name, data in files.items()])


# -- shape mistakes, located ---------------------------------------------------------------------

PIPE = {"name": "p", "group": "g", "materials": [{"type": "git", "url": "https://example.org/r.git"}],
        "stages": [{"name": "s", "jobs": [{"name": "j", "tasks": [{"type": "exec", "command": "make"}]}]}]}


def pipe(**changes: Any) -> dict[str, Any]:
    return json.loads(json.dumps({**PIPE, **changes}))


def test_a_minimal_pipeline_and_the_defaults_gocd_gives_a_json_material() -> None:
    p = load_json("p.gopipeline.json", PIPE).pipelines["p"]
    assert [m.name for m in p.materials] == ["git"]  # unnamed: named after its type
    up = pipe(name="q", materials=[{"type": "dependency", "pipeline": "p", "stage": "s"}])
    config = load_texts({"p.gopipeline.json": json.dumps(PIPE), "q.gopipeline.json": json.dumps(up)})
    assert [m.name for m in config.pipelines["q"].materials] == ["p"]  # a dependency: after its pipeline


def at(text: str, marker: str, nth: int = 1) -> str:
    """``LINE:COL`` of the nth occurrence of ``marker`` in ``text``."""
    index = -1
    for _ in range(nth):
        index = text.index(marker, index + 1)
    line = text.count("\n", 0, index) + 1
    return f"{line}:{index - (text.rfind(chr(10), 0, index) + 1) + 1}"


@pytest.mark.parametrize("changes, marker, nth, message", [
    ({"environment_variables": {"A": "1"}}, '"environment_variables"', 1,
     "environment_variables of pipeline 'p' must be a list of objects such as {\"name\": \"X\", \"value\": \"1\"}, "
     "found a mapping"),
    ({"stagse": []}, '"stagse"', 1, "unknown key 'stagse' in pipeline 'p' (did you mean 'stages'?)"),
    ({"materials": [{"url": "https://x/y.git"}]}, '{"url"', 1,
     'a material of pipeline \'p\' needs "type" (git or dependency; GoCD also has svn, hg, p4, tfs, package, plugin '
     "and configrepo)"),
    ({"materials": [{"type": "git", "url": "https://x/a.git", "destination": "a"},
                    {"type": "git", "url": "https://x/b.git", "destination": "b"}]}, '{"type": "git"', 2,
     "a material of pipeline 'p' needs \"name\": a pipeline with several materials names each"),
    ({"materials": [{"name": "m", "type": "git", "url": "https://x/a.git", "destination": "a"},
                    {"name": "m", "type": "git", "url": "https://x/b.git", "destination": "b"}]}, '"m"', 2,
     "'m' is defined twice in materials of pipeline 'p' (first at line 1, column 52)"),
    ({"stages": [{"jobs": []}]}, '{"jobs"', 1, "a stage of pipeline 'p' needs \"name\""),
    ({"materials": [{"type": ["git"], "url": "https://x/a.git"}]}, '["git"]', 1,
     "the type of a material of pipeline 'p' must be a string, found a list"),
    ({"materials": [{"type": "svn", "url": "https://x/a"}]}, '"svn"', 1,
     "material 'svn': svn materials are not supported by the workbench (only git and pipeline dependencies are)"),
    ({"environment_variables": [{"name": "A", "value": "1", "encrypted_value": "x"}]}, '"encrypted_value"', 1,
     "environment variable A of pipeline 'p' has both \"value\" and \"encrypted_value\"; keep one"),
    ({"enable_pipeline_locking": "yes"}, '"yes"', 1,
     "enable_pipeline_locking of pipeline 'p' must be true or false, found a string"),
    ({"environment_variables": [{"name": "S", "encrypted_value": "not-ciphertext"}]}, '"S"', 1,
     "secure variable S is not ciphertext (run `workbench encrypt`)"),
])
def test_shape_mistakes_are_refused_where_they_are(changes: dict[str, Any], marker: str, nth: int,
                                                   message: str) -> None:
    text = json.dumps(pipe(**changes))
    found = json_problems("p.gopipeline.json", text)
    assert f"p.gopipeline.json:{at(text, marker, nth)}: {message}" in found, found


def test_job_and_task_mistakes_are_located() -> None:
    text = textwrap.dedent("""\
        {
          "name": "p",
          "materials": [{"type": "git", "url": "https://example.org/r.git"}],
          "stages": [{
            "name": "s",
            "jobs": [
              {"name": "j", "tasks": [{"command": "make"}]},
              {"name": "k", "tasks": [{"type": "exec", "comand": "make"}], "run_instance_count": 0},
              {"name": "l", "tasks": [{"type": "fetch", "stage": "s", "job": "j", "source": "x",
                                       "artifact_origin": "external"}]}
            ]
          }]
        }
        """)
    found = json_problems("p.gopipeline.json", text)
    for marker, message in [
            ('{"command"', 'a task of job \'j\' needs "type" (exec, fetch, plugin, ...)'),
            ('"comand"', "unknown key 'comand' in exec task (did you mean 'command'?)"),
            ("0}", "run_instances of job 'k' (a number or \"all\") must be at least 1, found 0"),
            ('"external"', "fetching external artifacts (artifact_origin: external) is not supported by the workbench")]:
        assert f"p.gopipeline.json:{at(text, marker)}: {message}" in found, (marker, found)


def test_json_plugin_keys_that_differ_from_yaml_are_read() -> None:
    data = pipe(display_order_weight=5, parameters=[{"name": "TARGET", "value": "release"}],
                environment_variables=[{"name": "A", "value": "1"}, {"name": "EMPTY", "value": None}],
                lock_behavior="unlockWhenFinished", enable_pipeline_locking=True)
    data["stages"][0]["jobs"][0].update(run_instance_count="all", timeout=5, tabs=[], properties=[],
                                        tasks=[{"type": "exec", "command": "make", "arguments": ["#{TARGET}"]}])
    data["stages"].append({"name": "t", "clean_working_directory": True, "approval": None, "jobs": [
        {"name": "j", "tasks": [{"type": "fetch", "stage": "s", "job": "j", "source": "out/a.txt",
                                 "is_source_a_file": True, "artifact_origin": "gocd"}]}]})
    config = load_json("p.gopipeline.json", data)
    p = config.pipelines["p"]
    assert p.display_order == 5 and p.lock_behavior == "unlockWhenFinished"
    assert p.environment_variables == {"A": "1", "EMPTY": ""}
    job = p.stages[0].jobs[0]
    assert job.run_instances == "all" and job.timeout == 300.0 and job.tasks[0].arguments == ("release",)
    fetch = p.stages[1].jobs[0].tasks[0]
    assert isinstance(fetch, FetchTask) and fetch.is_file and p.stages[1].approval.type == "success"
    warnings = [str(w) for w in config.warnings]
    assert any("enable_pipeline_locking of pipeline 'p' is ignored because lock_behavior is set" in w for w in warnings)
    assert not any("tabs" in w or "properties" in w for w in warnings), warnings  # empty lists say nothing


def test_a_gocd_json_file_holds_a_pipeline_an_environment_or_the_yaml_shape() -> None:
    env = {"name": "prod", "environment_variables": [{"name": "E", "value": "1"}], "pipelines": ["p"]}
    yaml_shape = {"format_version": 10, "pipelines": {"y": {"group": "g", "materials": {"m": {"git": "https://x/y"}},
                                                            "stages": [{"s": {"jobs": {"j": {"tasks": [
                                                                {"exec": {"command": "true"}}]}}}}]}}}
    both = {"format_version": 3, "pipelines": [pipe(name="q")], "environments": [{"name": "qa", "pipelines": ["q"]}]}
    config = load_texts({"a.gocd.json": json.dumps(PIPE), "b.gocd.json": json.dumps(env),
                         "c.gocd.json": json.dumps(yaml_shape), "d.gocd.json": json.dumps(both)})
    assert sorted(config.pipelines) == ["p", "q", "y"]
    assert config.environments["prod"].environment_variables == {"E": "1"}
    assert config.environments["qa"].pipelines == ("q",)


def test_the_format_version_is_checked_as_in_yaml() -> None:
    text = json.dumps(pipe(format_version=99))
    assert json_problems("p.gopipeline.json", text) == [
        f"p.gopipeline.json:{at(text, '99')}: format_version must be from 1 to 10, found 99"]


# -- in a workspace, and through the CLI ------------------------------------------------------------


def test_a_workspace_reads_the_json_plugins_files_beside_yaml_and_nothing_else(tmp_path: Path) -> None:
    folder = tmp_path / "pipelines"
    folder.mkdir()
    (folder / "build.gopipeline.json").write_text(json.dumps(PIPE, indent=2))
    (folder / "prod.goenvironment.json").write_text(json.dumps({"name": "prod", "pipelines": ["deploy"]}))
    (folder / "deploy.gocd.yaml").write_text(textwrap.dedent("""\
        pipelines:
          deploy:
            materials: {build: {pipeline: p, stage: s}}
            stages: [{go: {jobs: {j: {tasks: [{exec: {command: "true"}}]}}}}]
        """))
    (folder / "package.json").write_text("{not config")  # another tool's JSON is not read
    config = load_workspace_config(tmp_path)
    assert sorted(config.pipelines) == ["deploy", "p"] and config.environments["prod"].pipelines == ("deploy",)
    assert set(config.files) == {"pipelines/build.gopipeline.json", "pipelines/prod.goenvironment.json",
                                 "pipelines/deploy.gocd.yaml"}


def test_validate_reports_a_broken_json_file_at_its_line_without_a_traceback(workspace) -> None:
    workspace.write("build.gopipeline.json", json.dumps(PIPE, indent=2).replace('"group": "g",', '"group": "g"'))
    r = workspace.cli("validate")
    assert r.code == 2, r
    assert "pipelines/build.gopipeline.json:4:3: JSON syntax error: Expecting ',' delimiter" in r.err, r
    assert "Traceback" not in r.err
    workspace.write("build.gopipeline.json", json.dumps(PIPE, indent=2))
    r = workspace.cli("validate")
    assert r.code == 0 and r.out.strip() == "ok: 1 pipeline in 1 file", r


def test_the_json_examples_of_the_configuration_reference_load_together() -> None:
    import re

    doc = (Path(__file__).parent.parent / "docs" / "config.md").read_text()
    blocks = re.findall(r"^<!-- example: loads (\S+) -->\n```json\n(.*?)^```$", doc, re.M | re.S)
    assert [name for name, _ in blocks] == ["build.gopipeline.json", "qa.goenvironment.json"]
    config = load_texts(dict(blocks))
    assert list(config.pipelines) == ["build"] and config.environments["qa"].pipelines == ("build",)
    assert config.pipelines["build"].stages[1].approval.users == ("alice",) and config.warnings == ()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=25)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=JSON_VALUES, indent=st.sampled_from([None, 0, 2, "\t"]), ascii_only=st.booleans())
def test_every_json_node_knows_where_its_value_starts(value: Any, indent: Any, ascii_only: bool) -> None:
    from workbench.config.jsonnodes import compose_json
    from workbench.config.yamlnodes import Map, Seq

    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only)
    node, found = compose_json(text, "f.json")
    assert found == [] and node is not None and node.plain() == value
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
    decoder = json.JSONDecoder()
    stack = [node]
    while stack:
        n = stack.pop()
        index = starts[n.line - 1] + n.col - 1
        assert decoder.raw_decode(text, index)[0] == n.plain()  # the value written at LINE:COL is this node's
        if isinstance(n, Map):
            for k, v in n:
                assert decoder.raw_decode(text, starts[k.line - 1] + k.col - 1)[0] == k.text
                stack.append(v)
        elif isinstance(n, Seq):
            stack.extend(n.items)


def test_import_gocd_checks_its_output_against_the_workspaces_json_files_too(workspace) -> None:
    data = {**PIPE, "name": "pipeline1"}
    workspace.write("mine.gopipeline.json", json.dumps(data))
    r = workspace.cli("import-gocd", str(Path(__file__).parent / "data" / "gocd-xml" / "two-pipelines.xml"))
    assert r.code == 2, r.err
    assert "would not validate" in r.err and "pipeline 'pipeline1' is already defined" in r.err, r.err
    assert sorted(p.name for p in (workspace.root / "pipelines").iterdir()) == ["mine.gopipeline.json"]
