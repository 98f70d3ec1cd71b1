"""``workbench import-gocd``: GoCD's own XML test configurations in, workbench files out, validated and run.

Everything goes through the real CLI in a subprocess (as a user runs it) and
the output is checked with ``workbench validate``; one pipeline is run for
real against a git repository in a temporary folder. Secure values are made
the way a GoCD server makes them (AES-128-CBC, PKCS#5 padding, random IV,
``AES:<iv>:<ciphertext>``), here with ``cryptography`` directly rather than
with the importer's own code.
"""
from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import pytest
import yaml
from conftest import WorkspaceFactory

DATA = Path(__file__).parent / "data" / "gocd-xml"
GOCD_FILES = sorted(p.name for p in DATA.glob("*.xml") if p.name != "xml-with-xxe.xml")
UNSUPPORTED = ("svn", "hg", "p4", "tfs", "package", "scm")


def _gocd_encrypt(plain: str, key: bytes) -> str:
    """A GoCD server's AESEncrypter, written independently of workbench.importer.gocd.aes."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    data = padder.update(plain.encode()) + padder.finalize()
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return "AES:" + base64.b64encode(iv).decode() + ":" + base64.b64encode(enc.update(data) + enc.finalize()).decode()


def _yaml(ws: WorkspaceFactory, name: str) -> dict:
    return yaml.safe_load((ws.root / "pipelines" / name).read_text())


def _report(ws: WorkspaceFactory) -> str:
    return (ws.root / "import-gocd-report.txt").read_text()


@pytest.mark.parametrize("name", GOCD_FILES)
def test_gocd_test_configs_convert_and_validate(workspace: WorkspaceFactory, name: str) -> None:
    xml = DATA / name
    r = workspace.cli("import-gocd", str(xml))
    assert r.code == 0, r.err
    assert "Traceback" not in r.err
    report = _report(workspace)
    # every unsupported material of the XML is in the report, at its own line
    for number, line in enumerate(xml.read_text().splitlines(), 1):
        m = re.search(r"<(\w+)[\s>/]", line)
        if m and m.group(1) in UNSUPPORTED and "<materials" not in line:
            assert re.search(rf"{re.escape(str(xml))}:{number}:\d+: dropped: <{m.group(1)}> material", report), \
                (number, report)
    if any((workspace.root / "pipelines").glob("*.gocd.yaml")):
        v = workspace.cli("validate")
        assert v.code == 0, v.err
        assert v.out.startswith("ok: "), v.out


def test_two_pipelines_carries_over_roles_approval_timer_label_and_tasks(workspace: WorkspaceFactory) -> None:
    r = workspace.cli("import-gocd", str(DATA / "two-pipelines.xml"))
    assert r.code == 0, r.err
    data = _yaml(workspace, "defaultGroup.gocd.yaml")
    p1 = data["pipelines"]["pipeline1"]
    assert p1["group"] == "defaultGroup"
    assert p1["label_template"] == "alpha.${COUNT}"
    assert p1["timer"] == {"spec": "0 15 10 ? * MON-FRI"}
    stage = p1["stages"][0]["mingle"]
    assert stage["approval"] == {"type": "manual", "users": ["jez"], "roles": ["admin", "qa_lead"]}
    assert stage["jobs"]["unit"]["tasks"] == [{"exec": {"command": "ruby", "arguments": ["args"],
                                                        "working_directory": "tmp"}}]
    assert stage["jobs"]["functional"]["tasks"] == [{"exec": {"command": "ant"}}]
    assert stage["jobs"]["functional"]["artifacts"] == [{"build": {"source": "artifact1.xml",
                                                                   "destination": "cruise-output"}}]
    assert _yaml(workspace, "roles.gocd.yaml")["roles"] == {"admin": [], "qa_lead": []}
    report = _report(workspace)
    assert ":30:19: changed: <ant> task" in report  # line 30 of the XML holds <tasks><ant /></tasks>
    assert "pipelines/defaultGroup.gocd.yaml" in r.out and "2 pipelines in 1 group" in r.out


def test_group_operators_become_approvers_and_legacy_dependencies_are_materials(workspace: WorkspaceFactory) -> None:
    assert workspace.cli("import-gocd", str(DATA / "config.xml")).code == 0
    foo = _yaml(workspace, "foo.gocd.yaml")["pipelines"]["non-operatable-pipeline"]
    assert foo["stages"][0]["one"]["approval"] == {"type": "manual", "roles": ["qa_lead"]}
    assert foo["materials"] == {"junit-failures-material": {"git": "/tmp/git-stuff", "auto_update": False}}
    report = _report(workspace)
    assert "authorization of group 'foo'" in report and "<tabs> of job 'plan1'" in report

    other = WorkspaceFactory(workspace.root.parent / "other")
    assert other.cli("import-gocd", str(DATA / "nant-and-exec.xml")).code == 0
    pipelines = _yaml(other, "defaultGroup.gocd.yaml")["pipelines"]
    assert pipelines["pipeline2"]["materials"] == {"pipeline1": {"pipeline": "pipeline1", "stage": "mingle"}}
    tasks = pipelines["pipeline1"]["stages"][0]["mingle"]["jobs"]["cardlist"]["tasks"]
    assert tasks[0] == {"exec": {"command": "lib/apache-nant/nant", "arguments": ["-buildfile:src/evolve.build", "all"]}}
    assert tasks[1] == {"exec": {"command": "ls", "arguments": ["-la"], "working_directory": "workdir"}}
    assert tasks[3] == {"exec": {"command": "rake", "arguments": ["-f", "myrake.rb", "test"],
                                 "working_directory": "somewhere"}}


def test_templates_and_on_cancel(workspace: WorkspaceFactory) -> None:
    assert workspace.cli("import-gocd", str(DATA / "docs-pipeline-templates.xml")).code == 0
    assert _yaml(workspace, "my-app.gocd.yaml")["pipelines"]["app-trunk"] == {"group": "my-app",
                                                                              "template": "my-app-build"}
    templates = _yaml(workspace, "templates.gocd.yaml")["templates"]
    assert templates["my-app-build"][0]["build"]["jobs"]["compile"]["tasks"] == [
        {"exec": {"command": "ant", "arguments": ["compile"]}}]

    other = WorkspaceFactory(workspace.root.parent / "other")
    assert other.cli("import-gocd", str(DATA / "tasks-with-on-cancel.xml")).code == 0
    jobs = _yaml(other, "defaultGroup.gocd.yaml")["pipelines"]["pipeline1"]["stages"][0]["mingle"]["jobs"]
    assert jobs["cardlist"]["tasks"][0] == {"exec": {"command": "ant", "arguments": ["-f", "src/evolve.build", "all"],
                                                     "on_cancel": {"exec": {"command": "kill.rb",
                                                                            "working_directory": "utils"}}}}
    assert jobs["downstream-job"]["tasks"] == [{"exec": {"command": "echo", "arguments": ["hello", "world!!"]}}]


def _pipeline_xml(repo_url: str, secure: str = "", extra: str = "") -> str:
    return f"""<?xml version="1.0" encoding="utf-8"?>
<cruise schemaVersion="139">
  <server serverId="s"><security><roles><role name="release"><users><user>alice</user></users></role></roles></security></server>
  <config-repos>
    <config-repo id="shops" pluginId="yaml.config.plugin">
      <git url="{repo_url}" branch="master" />
      <rules><allow action="refer" type="pipeline_group">apps</allow></rules>
    </config-repo>
  </config-repos>
  <pipelines group="apps">
    <pipeline name="hello" lockBehavior="lockOnFailure">
      <params><param name="GREETING">hello from gocd</param></params>
      <environmentvariables>
        <variable name="PLAIN"><value>plain-value</value></variable>
        {secure}
      </environmentvariables>
      <materials>
        <git url="{repo_url}" materialName="src" />
      </materials>
      <stage name="build">
        <jobs>
          <job name="greet">
            <tasks>
              <exec command="sh">
                <arg>-c</arg>
                <arg>test -f README.md &amp;&amp; echo "#{{GREETING}} $PLAIN" &gt; out.txt &amp;&amp; cat out.txt {extra}</arg>
              </exec>
            </tasks>
            <artifacts><artifact type="build" src="out.txt" /></artifacts>
          </job>
        </jobs>
      </stage>
      <stage name="release">
        <approval type="manual"><authorization><role>release</role></authorization></approval>
        <jobs><job name="noop"><tasks><exec command="true" /></tasks></job></jobs>
      </stage>
    </pipeline>
  </pipelines>
  <environments>
    <environment name="production">
      <environmentvariables><variable name="REGION"><value>eu</value></variable></environmentvariables>
      <pipelines><pipeline name="hello" /></pipelines>
    </environment>
  </environments>
</cruise>
"""


def test_converted_pipeline_runs_with_a_real_git_material(workspace: WorkspaceFactory, git_repo, tmp_path: Path) -> None:
    repo = git_repo("app")
    xml = tmp_path / "cruise-config.xml"
    xml.write_text(_pipeline_xml(repo.url))
    r = workspace.cli("import-gocd", str(xml))
    assert r.code == 0, r.err
    assert workspace.cli("validate").code == 0
    repos = yaml.safe_load((workspace.root / "config_repos.yaml").read_text())
    assert repos == {"config_repos": {"shops": {"git": repo.url, "branch": "master", "rules": [
        {"directive": "allow", "action": "refer", "type": "pipeline_group", "resource": "apps"}]}}}
    assert _yaml(workspace, "environments.gocd.yaml")["environments"] == {
        "production": {"environment_variables": {"REGION": "eu"}, "pipelines": ["hello"]}}
    run = workspace.cli("run", "hello")
    assert run.code == 0, run.out + run.err
    assert "awaits approval" in run.out  # the manual stage with its role stopped the run
    log = workspace.cli("logs", "hello/1/build/greet")
    assert log.code == 0, log.err
    assert "hello from gocd plain-value" in log.out


def test_secure_values_are_decrypted_with_the_cipher_and_re_encrypted(workspace: WorkspaceFactory, git_repo,
                                                                      tmp_path: Path) -> None:
    key = os.urandom(16)
    cipher = tmp_path / "cipher.aes"
    cipher.write_text(key.hex().upper() + "\n")
    repo = git_repo("app")
    secure = (f'<variable name="TOKEN" secure="true"><encryptedValue>{_gocd_encrypt("s3cret-token", key)}'
              '</encryptedValue></variable>')
    xml = tmp_path / "cruise-config.xml"
    xml.write_text(_pipeline_xml(repo.url, secure, extra='&amp;&amp; test "$TOKEN" = "s3cret-""token"'))
    r = workspace.cli("import-gocd", str(xml), "--cipher-file", str(cipher))
    assert r.code == 0, r.err
    written = "".join(p.read_text() for p in workspace.root.rglob("*") if p.is_file() and ".workbench" not in p.parts)
    assert "s3cret-token" not in written
    token = _yaml(workspace, "apps.gocd.yaml")["pipelines"]["hello"]["secure_variables"]["TOKEN"]
    from workbench.secrets import decrypt_variables

    assert decrypt_variables({"TOKEN": token}, workspace.open()) == {"TOKEN": "s3cret-token"}
    run = workspace.cli("run", "hello")
    assert run.code == 0, run.out + run.err  # the job checked $TOKEN itself


def test_secure_values_without_or_with_the_wrong_cipher_are_listed(workspace: WorkspaceFactory, git_repo,
                                                                   tmp_path: Path) -> None:
    key = os.urandom(16)
    repo = git_repo("app")
    secure = (f'<variable name="TOKEN" secure="true"><encryptedValue>{_gocd_encrypt("s3cret-token", key)}'
              '</encryptedValue></variable>')
    xml = tmp_path / "cruise-config.xml"
    xml.write_text(_pipeline_xml(repo.url, secure))
    line = next(i for i, t in enumerate(xml.read_text().splitlines(), 1) if 'name="TOKEN"' in t)
    r = workspace.cli("import-gocd", str(xml), "--strict")
    assert r.code == 1, r.err  # --strict: written, but something needs attention
    assert f"{xml}:{line}:" in _report(workspace) and "secret: secure variable TOKEN" in _report(workspace)
    assert "secure_variables" not in _yaml(workspace, "apps.gocd.yaml")["pipelines"]["hello"]
    assert workspace.cli("validate").code == 0

    wrong = tmp_path / "wrong.aes"
    wrong.write_text(os.urandom(16).hex())
    other = WorkspaceFactory(tmp_path / "other")
    r = other.cli("import-gocd", str(xml), "--cipher-file", str(wrong))
    assert r.code == 0, r.err
    assert "cannot be decrypted" in _report(other)
    bad = tmp_path / "bad.aes"
    bad.write_text("not a key")
    r = other.cli("import-gocd", str(xml), "--cipher-file", str(bad), "--out", str(tmp_path / "third"))
    assert r.code == 2 and "not a GoCD cipher.aes" in r.err and "Traceback" not in r.err


def test_gocd_aes_format_round_trip() -> None:
    from workbench.importer.gocd import aes

    key = os.urandom(16)
    value = _gocd_encrypt("pässword", key)
    assert aes.decrypt(value, key) == "pässword"
    assert aes.decrypt(aes.encrypt("x", key), key) == "x"
    with pytest.raises(aes.CannotDecrypt):
        aes.decrypt(value, os.urandom(16))


@pytest.mark.parametrize("hostile", ["xxe", "bomb", "big", "malformed"])
def test_hostile_xml_is_refused_and_nothing_is_written(workspace: WorkspaceFactory, tmp_path: Path,
                                                       hostile: str) -> None:
    path = tmp_path / "cruise-config.xml"
    if hostile == "xxe":
        path = DATA / "xml-with-xxe.xml"
        expect = r"xml-with-xxe\.xml:2:\d+: refused: the file has a document type declaration"
    elif hostile == "bomb":
        lols = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">\n' for i in range(1, 10))
        path.write_text(f'<?xml version="1.0"?>\n<!DOCTYPE cruise [\n<!ENTITY lol0 "lol">\n{lols}]>\n'
                        '<cruise><pipelines group="&lol9;"/></cruise>\n')
        expect = r"cruise-config\.xml:2:\d+: refused: the file has a document type declaration"
    elif hostile == "big":
        with open(path, "wb") as fh:  # sparse: 100 MB that take no disk space
            fh.truncate(100 * 1024 * 1024)
        expect = r"cruise-config\.xml: the file is 105 MB; the importer reads at most 64 MB"
    else:
        path.write_text('<cruise schemaVersion="139">\n  <pipelines group="g">\n</cruise>\n')
        expect = r"cruise-config\.xml:3:\d+: not well-formed XML \(mismatched tag\)"
    r = workspace.cli("import-gocd", str(path))
    assert r.code == 2, r.err
    assert re.search(expect, r.err), r.err
    assert "Traceback" not in r.err
    assert not list((workspace.root / "pipelines").iterdir())
    assert not (workspace.root / "import-gocd-report.txt").exists()


def test_existing_files_are_not_overwritten_without_force(workspace: WorkspaceFactory) -> None:
    xml = str(DATA / "two-pipelines.xml")
    assert workspace.cli("import-gocd", xml).code == 0
    target = workspace.root / "pipelines" / "defaultGroup.gocd.yaml"
    target.write_text("# edited by hand\n" + target.read_text())
    r = workspace.cli("import-gocd", xml)
    assert r.code == 2 and "would overwrite" in r.err and "--force" in r.err
    assert target.read_text().startswith("# edited by hand")
    r = workspace.cli("import-gocd", xml, "--force")
    assert r.code == 0, r.err
    assert not target.read_text().startswith("# edited by hand")


def test_output_that_would_clash_with_existing_pipelines_is_refused(workspace: WorkspaceFactory) -> None:
    workspace.write("mine.gocd.yaml", """
        format_version: 10
        pipelines:
          pipeline1:
            stages:
              - s: {jobs: {j: {tasks: [{exec: {command: "true"}}]}}}
    """)
    r = workspace.cli("import-gocd", str(DATA / "two-pipelines.xml"))
    assert r.code == 2, r.err
    assert "would not validate" in r.err and "pipeline 'pipeline1' is already defined" in r.err
    assert sorted(p.name for p in (workspace.root / "pipelines").iterdir()) == ["mine.gocd.yaml"]


def test_emitted_yaml_reads_back_as_the_data() -> None:
    """The importer's own YAML writer: any dict/list/str/int/bool tree loads back equal with yaml.safe_load."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from workbench.importer.gocd.emit import dump

    scalars = st.one_of(st.text(max_size=30), st.integers(-10**6, 10**6), st.booleans(),
                        st.sampled_from(["yes", "No", "1.5", "-la", "#{X}", "${COUNT}", "a: b", "x #y", "line\nnext",
                                         "a\n\n  b\n", " lead", "~", "null", "0x1F", "@x", "*.md", "'q'", "\"dq\""]))
    trees = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(st.text(min_size=1, max_size=12), inner,
                                                                          max_size=4)), max_leaves=20)

    @settings(max_examples=300, deadline=None)
    @given(st.dictionaries(st.text(min_size=1, max_size=12), trees, min_size=1, max_size=4))
    def check(data: dict) -> None:
        assert yaml.safe_load(dump(data)) == data

    check()


def test_references_to_pipelines_not_in_the_file_are_dropped_not_fatal(workspace: WorkspaceFactory,
                                                                       tmp_path: Path) -> None:
    """A dependency and a fetch on a pipeline a config repository defines: reported, and the rest still loads;
    a job left with no task fails saying so instead of passing without doing its work."""
    xml = tmp_path / "cruise-config.xml"
    xml.write_text("""<cruise schemaVersion="139">
  <pipelines group="apps">
    <pipeline name="down">
      <materials>
        <pipeline pipelineName="from-a-config-repo" stageName="build" />
      </materials>
      <stage name="deploy">
        <jobs>
          <job name="fetch-only">
            <tasks>
              <fetchartifact pipeline="from-a-config-repo" stage="build" job="compile" srcdir="dist" />
            </tasks>
          </job>
        </jobs>
      </stage>
    </pipeline>
  </pipelines>
</cruise>
""")
    r = workspace.cli("import-gocd", str(xml))
    assert r.code == 0, r.err
    report = _report(workspace)
    assert f"{xml}:5:9: dropped: dependency material of pipeline 'down'" in report
    assert f"{xml}:11:15: dropped: fetch task in job 'fetch-only'" in report
    assert workspace.cli("validate").code == 0
    run = workspace.cli("run", "down")
    assert run.code == 1, run.out + run.err
    log = workspace.cli("logs", "down/1/deploy/fetch-only")
    assert "none of the tasks of fetch-only could be carried over" in log.out


def test_import_beside_the_shops_example(workspace: WorkspaceFactory) -> None:
    """The target's own files (with feature sections: routes:, rollout:, package tasks) are loaded with the
    converted ones before anything is written, and the result validates together."""
    repo_pipelines = Path(__file__).resolve().parents[1] / "pipelines"
    for name in ("shops.gocd.yaml", "routes.yaml"):
        (workspace.root / "pipelines" / name).write_text((repo_pipelines / name).read_text())
    r = workspace.cli("import-gocd", str(DATA / "two-pipelines.xml"))
    assert r.code == 0, r.err
    v = workspace.cli("validate")
    assert v.code == 0, v.err
    assert v.out.startswith("ok: 10 pipelines"), v.out


def test_anything_not_read_is_reported_at_its_line() -> None:
    """Elements and attributes the importer does not know are never dropped silently."""
    from workbench.importer.gocd import convert

    xml = b"""<cruise schemaVersion="139">
  <pipelines group="g">
    <pipeline name="p" futureAttribute="1">
      <materials><git url="https://example.org/r.git" recursiveSubmodules="true" /></materials>
      <stage name="s">
        <jobs><job name="j"><tasks><exec command="true" /></tasks><futureElement /></job></jobs>
      </stage>
    </pipeline>
  </pipelines>
  <scms><scm id="x" name="y" /></scms>
</cruise>
"""
    result = convert(xml, "c.xml")
    found = {(n.line, n.kind, n.element, n.message) for n in result.notes}
    assert (3, "dropped", "<pipeline>", "attribute(s) futureAttribute not carried over") in found
    assert (4, "dropped", "<git>", "attribute(s) recursiveSubmodules not carried over") in found
    assert (6, "dropped", "<futureElement>", "not read by the importer") in found
    assert (10, "dropped", "<scms>", "not read by the importer") in found
    assert "futureElement" in result.files["import-gocd-report.txt"]


def _gocd_view(config) -> dict:  # type: ignore[no-untyped-def]
    """What GoCD's XML can express of a config: names, groups, labels, materials, stages, jobs, tasks, variables."""
    from workbench.config import ExecTask, FetchTask, GenericTask, GitMaterial, ScriptTask

    def task(t):  # type: ignore[no-untyped-def]
        if isinstance(t, ExecTask):
            return ("exec", t.command, t.arguments, t.working_directory, t.run_if)
        if isinstance(t, ScriptTask):
            return ("script", t.script, t.run_if)
        if isinstance(t, FetchTask):
            return ("fetch", t.pipeline, t.stage, t.job, t.source, t.is_file, t.destination, t.run_if)
        return None

    def tasks(job):  # type: ignore[no-untyped-def]
        kept = [task(t) for t in job.tasks if not isinstance(t, GenericTask)]
        return [] if kept == [("exec", "true", (), None, "passed")] and len(job.tasks) else kept

    view: dict = {"roles": dict(config.roles), "environments": {
        e.name: (tuple(e.pipelines), dict(e.environment_variables)) for e in config.environments.values()}}
    for p in config.pipelines.values():
        view[p.name] = {
            "group": p.group, "label": p.label_template, "lock": p.lock_behavior, "env": dict(p.environment_variables),
            "materials": sorted((m.name, m.url, m.branch, m.destination) if isinstance(m, GitMaterial)
                                else (m.name, m.pipeline, m.stage) for m in p.materials),
            "stages": [(s.name, s.approval.type, s.approval.users, s.approval.roles, s.fetch_materials,
                        [(j.name, j.resources, [(a.type, a.source, a.destination) for a in j.artifacts],
                          tasks(j)) for j in s.jobs]) for s in p.stages]}
    return view


def test_the_shops_example_as_gocd_xml_and_back(workspace: WorkspaceFactory, tmp_path: Path) -> None:
    """The workspace's own Shops example, written as a GoCD server's XML (tests/gocd_xml_export.py), imported
    again: everything GoCD's XML can say comes back the same."""
    from gocd_xml_export import to_xml

    import workbench.features
    from workbench.config import load_config, load_workspace_config

    workbench.features.load()
    repo_pipelines = Path(__file__).resolve().parents[1] / "pipelines"
    original = load_config([repo_pipelines / "shops.gocd.yaml", repo_pipelines / "routes.yaml"])
    xml = tmp_path / "cruise-config.xml"
    xml.write_bytes(to_xml(original))
    r = workspace.cli("import-gocd", str(xml))
    assert r.code == 0, r.err
    assert sorted(p.name for p in (workspace.root / "pipelines").iterdir()) == [
        "environments.gocd.yaml", "release.gocd.yaml", "roles.gocd.yaml", "shops.gocd.yaml"]
    assert workspace.cli("validate").code == 0
    back = load_workspace_config(workspace.root)
    assert _gocd_view(back) == _gocd_view(original)
