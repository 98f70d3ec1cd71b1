"""Messages for what real public GoCD files contain (issue 18, "Also found on real public GoCD files").

Each test holds one message to what GoCD does with the construct and to where
its cause really lies, so that a user moving real files over is told the
truth rather than a guess.
"""
from __future__ import annotations

import textwrap

import pytest

from test_config import builtin_registries  # noqa: F401  (autouse: only the built-in task kinds and keys)
from workbench.config import Config, load_texts
from workbench.errors import ConfigError

STAGES = """\
    stages:
      - build:
          jobs:
            compile:
              tasks:
                - exec: {command: make}
"""


def pipeline(body: str, name: str = "p") -> str:
    return f"pipelines:\n  {name}:\n" + textwrap.indent(textwrap.dedent(body), "    ") + STAGES


def problems(text: str) -> list[str]:
    try:
        load_texts({"a.gocd.yaml": text})
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    pytest.fail("the config loaded; expected problems")


def loads(text: str) -> Config:
    return load_texts({"a.gocd.yaml": text})


def test_fetch_materials_at_pipeline_level_is_said_to_belong_to_stages_and_ignored_as_gocd_does() -> None:
    config = loads(pipeline("""\
        group: g
        fetch_materials: true
        materials:
          git: {git: "https://example.org/r.git"}
        """))
    assert [str(w) for w in config.warnings] == [
        "a.gocd.yaml:4:5: warning: fetch_materials is a stage key, not a pipeline key: GoCD's plugin ignores it "
        "here and so does the workbench (set it on each stage that should not fetch materials)"]
    assert config.pipeline("p").stages[0].fetch_materials  # the stage keeps GoCD's default


@pytest.mark.parametrize("material", [
    "{type: configrepo}",
    "{scm: 7ea0a6e5-6d2b-4a3b-9c6c-3c4f7f0b1f2e}",
    "{plugin_configuration: {id: github.pr, version: 1}, options: {url: x}}",
])
def test_a_refused_material_is_not_followed_by_a_false_label_template_error(material: str) -> None:
    text = pipeline(f"""\
        label_template: "${{git[:7]}}-${{COUNT}}"
        materials:
          git: {material}
        """)
    found = problems(text)
    assert len(found) == 1 and ("materials are not supported by the workbench" in found[0]
                                or "is `type: configrepo`" in found[0]), found
    assert not any("label_template" in p for p in found)


def test_a_label_naming_a_material_that_is_not_declared_is_still_an_error() -> None:
    found = problems(pipeline("""\
        label_template: "${gti}"
        materials:
          git: {git: "https://example.org/r.git"}
        """))
    assert any("label_template of pipeline 'p' refers to unknown material 'gti'" in p for p in found), found


def test_gocds_older_ciphertext_is_named_as_gocd_server_ciphertext() -> None:
    found = problems(pipeline("""\
        secure_variables:
          TOKEN: "mvcX9yrQsM4iPgm1tDxN1A=="
          AES_TOKEN: "AES:lzcCuNSe4vUx+CsWgN11Uw==:Dqq7oX8nUTWJsFrZUdtHbA=="
          PLAIN: "s&Du#@$xsSa"
        materials:
          git: {git: "https://example.org/r.git"}
        """))
    assert found == [
        "a.gocd.yaml:4:7: secure variable TOKEN holds GoCD server-side ciphertext (GoCD's older DES form, from "
        "before AES:), which the workbench cannot decrypt; re-encrypt the plain value with `workbench encrypt`",
        "a.gocd.yaml:5:7: secure variable AES_TOKEN holds GoCD server-side ciphertext (AES:...), which the workbench "
        "cannot decrypt; re-encrypt the plain value with `workbench encrypt`",
        "a.gocd.yaml:6:7: secure variable PLAIN is not ciphertext (run `workbench encrypt`)"]


def test_an_unknown_upstream_pipeline_says_where_else_it_may_be_defined() -> None:
    found = problems(pipeline("""\
        materials:
          upstream: {pipeline: build-images, stage: publish}
        """))
    assert found == [
        "a.gocd.yaml:4:28: dependency material 'upstream' refers to unknown pipeline 'build-images'; if it is defined "
        "in another repository or on the GoCD server, add that repository under `config_repos:` in workbench.yaml, "
        "or bring the server's pipelines over with `workbench import-gocd cruise-config.xml`"]
    typo = problems(pipeline("""\
        materials:
          upstream: {pipeline: q, stage: build}
        """) + pipeline("materials: {git: {git: 'https://example.org/r.git'}}\n", name="qq").split("\n", 1)[1])
    assert "(did you mean 'qq'?)" in typo[0] and "config_repos:" in typo[0], typo
