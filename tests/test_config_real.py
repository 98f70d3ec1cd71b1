"""Real public GoCD ``*.gocd.yaml`` files (tests/data/gocd-real/, sources in its README) load, or are refused
only for a named unsupported feature; and GoCD's ``type: configrepo`` material works inside a config repository.

The expectations are written out per file, so a change in what loads shows
up here as a named file, not as a count.
"""
from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from workbench.config import ConfigError, load_config

DATA = Path(__file__).parent / "data" / "gocd-real"

# file -> None (loads), or the phrases every error must match one of (each a named unsupported feature,
# or a mistake GoCD refuses too).
EXPECT: dict[str, tuple[str, ...] | None] = {
    "ChristianKniep__gocd-yaml-config-example__ci.gocd.yaml": None,
    "Tectu__gocd-cmake-task__pipeline.gocd.yaml": None,
    "d-led__automatic-lua-property-tables__ci.gocd.yaml": None,
    "mlucchini__kafka-playground__ci.gocd.yaml": None,
    "redgreenio__fluid__ci.gocd.yaml": None,
    # an environment listing a pipeline defined elsewhere (another repository or the GoCD server)
    "GaneshSPatil__gocd-mergeable__ci.gocd.yaml": ("defined in another repository or on the GoCD server",),
    # `source: *.yaml` unquoted is a YAML alias; GoCD's parser refuses it too
    "bdpiparva__config_repo_sample__ci.gocd.yaml": ("a plain value starting with `*` is a YAML alias",),
    # the stage's keys are not indented under its name; GoCD's plugin fails on it too
    "datherra__gocd-config-repo-example__ci.gocd.yaml": ("is the stage's content indented under its name?",),
    # the config repository itself as material (works inside config_repos) and GoCD server ciphertext
    "gocd-contrib__openstack-elastic-agent__ci.gocd.yaml": ("`type: configrepo`", "GoCD server-side ciphertext"),
    "kudulab__docker-consul__pipeline.gocd.yaml": ("`type: configrepo`", "GoCD server-side ciphertext"),
    # a git plugin (SCM plugin) material and GoCD server ciphertext
    "leprechaun__demo-app__pipeline.gocd.yaml": ("plugin materials are not supported", "GoCD server-side ciphertext"),
    # a template defined on the GoCD server
    "rapido-labs__silent-assassin__ci.gocd.yaml": ("on the GoCD server", ),
    # -- the second set --
    "Hippoom__itzero__build.gocd.yaml": None,
    "ai-traders__ide__pipeline.gocd.yaml": None,
    "d-led__ex_gocd__pipeline.gocd.yaml": None,  # pipelines with no materials: GoCD allows it in a config repo
    "dudadornelles__gocd-reproduce-bug__pipelines.gocd.yaml": None,
    "gocd-contrib__gocd-cli__ci.gocd.yml": None,
    "joatmon08__2018-cisco-devnet-create__pipeline.gocd.yaml": None,
    "kmugrage__gauge-demo__pipeline.gocd.yaml": None,
    "kudulab__releaser__pipeline.gocd.yaml": None,
    "marques-work__sample-node__ci.gocd.yml": None,
    "prabhu43__spring-petclinic-angular__.gocd__pipeline.gocd.yaml": None,
    "restbucks__wechat-restbucks__build.gocd.yaml": None,
    "shakirshakiel__gocd-environments__build.gocd.yaml": None,
    "stakater__helloworld__ci.gocd.yml": None,
    "stone-payments__gocd-queue-monitor__build.gocd.yaml": None,
    "advancedtelematic__gocd-dhall-example__pipelines.gocd.yaml": None,
    "manav11vanam__sample-pipelines__gocd__pipelines.gocd.yaml": None,
    # its upstream pipeline is in another repository (Hippoom/itzero, also here: together they load, see below)
    "Hippoom__itzero-ops__deploy.gocd.yaml": ("defined in another repository or on the GoCD server",),
    # an SCM plugin material (`scm:` id of an SCM defined on the GoCD server)
    "PremiereGlobal__vault-helm-chart__deploy.gocd.yaml": ("scm materials are not supported",),
    # an artifact plugin (external artifact store)
    "ThoughtWorksInc__ml-app-template__ci.gocd.yaml": ("external artifacts are not supported",),
    # upstream pipelines (and a fetch through an ancestor path) defined on the GoCD server
    "gocd__gocd-trial-launcher__ci.gocd.yml": ("defined in another repository or on the GoCD server",),
    # the config repository itself as material, in a workspace file
    "jgosmann__build-pipeline-demo__ci.gocd.yml": ("`type: configrepo`",),
    "kudulab__dojo__ci.gocd.yaml": ("`type: configrepo`", "GoCD server-side ciphertext"),
    # a template defined on the GoCD server (only that: not a follow-on "has no stage" per dependency)
    "qnib__gocd-repo-cv__pipelines.gocd.yaml": ("on the GoCD server",),
    # `- deploy:` with `jobs:` beside it, not under it; GoCD's plugin reads only the first key (a stage with no
    # content) and fails on it too
    "sheroy__gocd-pipeline-repo__pipelines.gocd.yaml": ("is the stage's content indented under its name?",),
}


def test_every_file_is_listed_with_its_source() -> None:
    files = sorted(p.name for p in DATA.iterdir() if p.name.endswith((".gocd.yaml", ".gocd.yml")))
    assert files == sorted(EXPECT)
    readme = (DATA / "README.md").read_text()
    for name in files:
        assert name in readme, name


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_a_real_file_loads_or_is_refused_for_a_named_feature(name: str) -> None:
    phrases = EXPECT[name]
    try:
        config = load_config([DATA / name], base=DATA)
    except ConfigError as exc:
        assert phrases is not None, "\n".join(map(str, exc.problems))
        for p in exc.problems:
            assert p.file == name and p.line >= 1
            assert any(ph in p.message for ph in phrases), p.message
            assert "label_template refers to unknown material" not in p.message
        for ph in phrases:
            assert any(ph in p.message for p in exc.problems), (ph, [p.message for p in exc.problems])
        return
    assert phrases is None, f"{name} loaded, expected a refusal for {phrases}"
    assert config.pipelines


def test_a_pipeline_and_its_upstream_from_two_real_repositories_load_together() -> None:
    """Hippoom/itzero-ops deploys what Hippoom/itzero builds: its dependency and fetch resolve once both are read."""
    files = [DATA / "Hippoom__itzero__build.gocd.yaml", DATA / "Hippoom__itzero-ops__deploy.gocd.yaml"]
    config = load_config(files, base=DATA)
    uat = config.pipelines["itzero-uat"]
    assert [m.name for m in uat.materials] == ["src", "build-upstream"]
    assert "itzero-build" in config.pipelines


SELF = textwrap.dedent("""\
    format_version: 4
    pipelines:
      cr-self:
        group: shops
        label_template: "${git[:8]}"
        materials:
          git:
            type: configrepo
            blacklist: ["*.md"]
        stages:
          - test:
              jobs:
                test:
                  tasks:
                    - exec: {command: test, arguments: [-f, ci/self.gocd.yaml]}
    """)


def test_configrepo_material_is_the_repository_itself(workspace: Any, git_repo: Any) -> None:
    repo = git_repo("selfrepo", branch="main", initial=False)
    repo.commit({"ci/self.gocd.yaml": SELF}, "a pipeline built from its own repository")
    (workspace.root / "workbench.yaml").write_text(
        f"config_repos:\n  selfrepo:\n    git: {repo.url}\n    branch: main\n"
        "    rules:\n      - {allow: refer, type: pipeline_group, resources: shops}\n")
    r = workspace.cli("tick")
    assert r.code == 0 and "now at" in r.out, r.out + r.err
    r = workspace.cli("validate")
    assert r.code == 0 and "ok: 1 pipeline" in r.out, r.out + r.err
    assert "label_template" not in r.err and "configrepo" not in r.err, r.err
    r = workspace.cli("run", "cr-self", "-q")
    assert r.code == 0, r.out + r.err
    # (the tick may already have run it once: the repository is a new material revision)
    assert re.search(rf"cr-self/\d+ \(label {repo.head[:8]}\): passed", r.out), r.out


def test_configrepo_material_in_a_workspace_file_names_the_feature(workspace: Any) -> None:
    workspace.write("self.gocd.yaml", SELF)
    r = workspace.cli("validate")
    assert r.code == 2, r.out + r.err
    assert "pipelines/self.gocd.yaml:8:15: material 'git' is `type: configrepo`" in r.err, r.err
    assert "config_repos:" in r.err and "label_template" not in r.err and "Traceback" not in r.err


def test_keys_gocd_ignores_load_with_a_warning_saying_what_happens() -> None:
    from workbench.config import load_texts
    text = textwrap.dedent("""\
        format_version: 10
        pipelines:
          p:
            group: g
            environment: prod
            snippets:
              s: &s {script: "echo hi"}
            materials: {m: {git: https://example.org/y.git}}
            stages:
              - s1:
                  approval: manual
                  roles: [ops]
                  jobs: {j: {tasks: [*s]}}
        """)
    config = load_texts({"a.gocd.yaml": text})
    warned = {w.line: w.message for w in config.warnings}
    assert "`environments: NAME: pipelines:`" in warned[5]
    assert "anchors defined under it still work" in warned[6]
    assert "the approval is not limited to those roles" in warned[12]
    assert config.pipelines["p"].stages[0].jobs[0].tasks  # the anchor under snippets: was used


def test_a_material_name_key_renames_it_as_gocd_does() -> None:
    """GoCD's plugin copies a material's `name:` string over its key; a `name:` equal to the key is silent."""
    from workbench.config import load_texts
    text = textwrap.dedent("""\
        format_version: 3
        pipelines:
          up:
            group: g
            materials: {src: {git: https://example.org/y.git, name: src}}
            stages: [{build: {jobs: {j: {tasks: [{exec: {command: "true"}}]}}}}]
          down:
            group: g
            label_template: "${upstream}"
            materials:
              up: {pipeline: up, stage: build, name: upstream}
            stages: [{deploy: {jobs: {j: {tasks: [{exec: {command: "true"}}]}}}}]
        """)
    config = load_texts({"a.gocd.yaml": text})
    assert [m.name for m in config.pipelines["down"].materials] == ["upstream"]
    assert [m.name for m in config.pipelines["up"].materials] == ["src"]
    warned = {w.line: w.message for w in config.warnings}
    assert "is named 'upstream' by its `name:`" in warned[11]
    assert 5 not in warned


def test_a_pipeline_with_an_unknown_template_is_reported_once() -> None:
    """Its stages come from the template, so a dependency or fetch naming one of them is not a second error."""
    from workbench.config import load_texts
    text = textwrap.dedent("""\
        pipelines:
          up:
            group: g
            template: OnTheServer
            materials: {src: {git: https://example.org/y.git}}
          down:
            group: g
            materials:
              up: {pipeline: up, stage: build}
            stages:
              - deploy:
                  jobs:
                    j:
                      tasks:
                        - fetch: {pipeline: up, stage: build, job: b, source: out}
        """)
    with pytest.raises(ConfigError) as info:
        load_texts({"a.gocd.yaml": text})
    messages = [p.message for p in info.value.problems]
    assert len(messages) == 1 and "unknown template 'OnTheServer'" in messages[0], messages
