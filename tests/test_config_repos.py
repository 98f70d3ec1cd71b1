"""Config repositories end to end: real git repositories in temp folders acting as GoCD config repos.

Each test drives the real CLI (a new process each time, so every command is a
"restart" that must find the last good revision in the store) against a real
workspace and a real git repository; nothing is mocked.
"""
from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest

BASE = """\
format_version: 10
pipelines:
  ws-base:
    group: platform
    materials: {}
    stages:
      - build: {jobs: {job: {tasks: [{script: "echo base"}]}}}
"""


def shop(name: str = "shop-build", *, group: str = "shops", extra: str = "", upstream: str = "ws-base") -> str:
    return textwrap.dedent(f"""\
        format_version: 10
        pipelines:
          {name}:
            group: {group}
            materials:
              up: {{pipeline: {upstream}, stage: build}}
            stages:
              - build: {{jobs: {{job: {{tasks: [{{script: "echo {name}"}}]}}}}}}
        """) + extra


ALLOW = """\
    rules:
      - {allow: refer, type: pipeline_group, resources: "shop*"}
      - {allow: refer, type: pipeline, resources: "ws-*"}
      - {allow: refer, type: environment, resources: "shop-staging"}
"""


def settings(ws_root: Path, url: str, rules: str = ALLOW, rid: str = "shops") -> None:
    (ws_root / "workbench.yaml").write_text(f"config_repos:\n  {rid}:\n    git: {url}\n    branch: main\n{rules}")


@pytest.fixture
def setup(workspace: Any, git_repo: Any) -> tuple[Any, Any]:
    repo = git_repo("shops", branch="main", initial=False)
    repo.commit({"ci/shop.gocd.yaml": shop()}, "shop pipeline")
    workspace.write("base.gocd.yaml", BASE)
    settings(workspace.root, repo.url)
    return workspace, repo


def ok(result: Any) -> Any:
    assert result.code == 0, result.out + result.err
    return result


def test_settings_errors_are_located(workspace: Any) -> None:
    workspace.write("base.gocd.yaml", BASE)
    (workspace.root / "workbench.yaml").write_text(
        "config_repos:\n  shops:\n    git: /nowhere\n    colour: red\n    rules:\n"
        "      - {allow: refer, type: pipelinegroup, resources: x}\n      - {deny: refer, allow: refer, type: '*', "
        "resources: x}\n  bad id!: {git: /x}\n  other: {branch: main}\n")
    r = workspace.cli("validate")
    assert r.code == 2, r.out + r.err
    assert "workbench.yaml:4:5: unknown key 'colour' in config repository 'shops'" in r.err
    assert "workbench.yaml:6:30: type of a rule of config repository 'shops' must be one of" in r.err
    assert "workbench.yaml:7:9: a rule of config repository 'shops' needs exactly one of allow: or deny:" in r.err
    assert "workbench.yaml:8:3: invalid config repository id 'bad id!'" in r.err
    assert "workbench.yaml:9:3: config repository 'other' needs git: URL" in r.err
    assert "Traceback" not in r.err


def test_rules_first_match_and_default_deny() -> None:
    from workbench.configrepos.model import Rule, allowed, glob_match

    rules = (Rule("deny", "pipeline_group", "my_*"), Rule("allow", "pipeline_group", "my_group"),
             Rule("allow", "*", "shared"))
    assert allowed(rules, "pipeline_group", "my_group") is None  # the deny above it matches first (GoCD's example)
    assert allowed(rules, "environment", "SHARED") is not None  # names are compared case-insensitively
    assert allowed(rules, "pipeline", "other") is None  # no rule matches: denied
    assert allowed((), "pipeline_group", "anything") is None  # no rules: nothing may be referred to
    assert allowed((Rule("allow", "environment", "team_?_env"),), "environment", "team_a_env")
    assert glob_match("**/*.gocd.yaml", "a.gocd.yaml") and glob_match("**/*.gocd.yaml", "x/y/a.gocd.yaml")
    assert not glob_match("**/*.gocd.yaml", "a.gocd.yml") and not glob_match("ci/*.gocd.yaml", "ci/x/a.gocd.yaml")


@pytest.mark.usefixtures("workspace_store")
def test_last_good_kept_shown_everywhere_survives_restart_and_fix_applies(setup: tuple[Any, Any]) -> None:
    workspace, repo = setup
    good = repo.head
    # before the first poll the repository is named as not polled, and only the workspace's pipeline exists
    r = ok(workspace.cli("validate"))
    assert "ok: 1 pipeline in 1 file" in r.out and "config repository 'shops' has not been polled yet" in r.err
    r = ok(workspace.cli("tick"))
    assert f"config repository shops: now at {good[:12]}" in r.out
    assert "ok: 2 pipelines in 2 files" in ok(workspace.cli("validate")).out

    # a broken commit: refused, the last good revision keeps running
    repo.commit({"ci/shop.gocd.yaml": shop().replace("group: shops", "group: shops\n    bogus: 1")}, "break it")
    bad = repo.head
    r = ok(workspace.cli("tick"))
    assert f"revision {bad[:12]} refused" in r.out and f"keeps {good[:12]}" in r.out
    where = f"shops@{bad[:8]}/ci/shop.gocd.yaml:5:5"
    r = ok(workspace.cli("validate"))  # a new process: the last good revision comes from the store
    assert "ok: 2 pipelines in 2 files" in r.out
    assert f"{where}: warning: unknown key 'bogus' in pipeline 'shop-build'" in r.err
    assert f"revision {bad[:12]} refused; its pipelines run from the last good revision {good[:12]}" in r.err
    r = ok(workspace.cli("status"))
    assert "shop-build" in r.out and f"revision {bad[:12]} refused, pipelines run from last good {good[:12]}" \
        in r.out and where in r.out
    frame = _frame(workspace, "config_repos")
    assert frame[0]["good_revision"] == good and frame[0]["latest_revision"] == bad and where in frame[0]["error"]

    # the workspace pipeline passes; the repository's pipeline (last good revision) follows downstream
    r = ok(workspace.cli("run", "ws-base", "-q"))
    assert "ws-base/1 (label 1): passed" in r.out and "shop-build/1 (label 1): passed" in r.out
    assert "config_repo" in ok(workspace.cli("history")).out  # the table has the column once a run has one
    assert f",shops@{good[:12]}" in ok(workspace.cli("history", "--format", "csv")).out
    hist = json.loads(ok(workspace.cli("history", "--format", "json")).out)
    shop_run = next(h for h in hist if h["pipeline"] == "shop-build")
    assert shop_run["config_repo"] == f"shops@{good[:12]}"
    assert shop_run["revisions"]["config-repo:shops"]["revision"] == good
    assert shop_run["revisions"]["config-repo:shops"]["kind"] == "configrepo"
    revs = [r for r in _frame(workspace, "material_revisions") if r["pipeline"] == "shop-build"]
    assert {(r["material"], r["kind"], r["revision"]) for r in revs} >= {("config-repo:shops", "configrepo", good)}

    # the mirror is thrown away and the good commit is force-pushed away: the stored files still load
    shutil.rmtree(workspace.root / ".workbench" / "mirrors")
    repo.git("reset", "-q", "--hard", "HEAD~1")
    repo.commit({"ci/shop.gocd.yaml": shop().replace("group: shops", "group: shops\n    nope: 2")}, "rewrite")
    rewritten = repo.head
    r = ok(workspace.cli("tick"))
    assert f"revision {rewritten[:12]} refused" in r.out
    assert "ok: 2 pipelines in 2 files" in ok(workspace.cli("validate")).out

    # fixed: the new revision applies, the warning is gone, the next run records it
    repo.commit({"ci/shop.gocd.yaml": shop().replace("echo shop-build", "echo fixed")}, "fix")
    fixed = repo.head
    assert f"config repository shops: now at {fixed[:12]}" in ok(workspace.cli("tick")).out
    r = ok(workspace.cli("validate"))
    assert "refused" not in r.err
    assert "refused" not in ok(workspace.cli("status")).out
    ok(workspace.cli("run", "shop-build", "-q", "--no-downstream"))
    hist = json.loads(ok(workspace.cli("history", "-p", "shop-build", "--format", "json")).out)
    assert hist[0]["revisions"]["config-repo:shops"]["revision"] == fixed
    from workbench.service.local import Local

    ws = workspace.open()
    try:
        detail = Local(ws).run("shop-build/latest")  # the run's detail (API GET /runs/shop-build/latest)
        assert detail["revisions"]["config-repo:shops"] == {"kind": "configrepo", "revision": fixed, "repo": "shops",
                                                            "url": repo.url, "branch": "main"}
        assert Local(ws).config_repos()[0]["good_revision"] == fixed
    finally:
        ws.close()


def test_duplicate_name_across_repo_and_workspace_names_both(setup: tuple[Any, Any]) -> None:
    workspace, repo = setup
    ok(workspace.cli("tick"))
    good = repo.head
    repo.commit({"ci/dup.gocd.yaml": shop("ws-base", group="shops-x", upstream="shop-build")}, "duplicate")
    bad = repo.head
    r = ok(workspace.cli("tick"))
    assert f"revision {bad[:12]} refused" in r.out
    r = ok(workspace.cli("validate"))
    line = next(ln for ln in r.err.splitlines() if "already defined" in ln)
    assert line.startswith(f"shops@{bad[:8]}/ci/dup.gocd.yaml:3:3: warning: pipeline 'ws-base' is already defined "
                           "at base.gocd.yaml") or "pipelines/base.gocd.yaml:3:3" in line, line
    assert f"last good revision {good[:12]}" in line
    # the same name added to the workspace instead: the workspace's config is the one in error, naming both
    repo.git("revert", "--no-edit", "HEAD")
    ok(workspace.cli("tick"))
    workspace.write("more.gocd.yaml", shop("shop-build", group="platform").replace("up: {pipeline: ws-base, stage: build}",
                                                                                    ""))
    r = workspace.cli("validate")
    assert r.code == 2, r.out + r.err
    assert "pipeline 'shop-build' is already defined at" in r.err
    assert f"shops@{repo.head[:8]}/ci/shop.gocd.yaml:3:3" in r.err and "more.gocd.yaml:3:3" in r.err


def test_rules_deny_other_teams_group_and_environment(setup: tuple[Any, Any]) -> None:
    workspace, repo = setup
    ok(workspace.cli("tick"))
    good = repo.head
    repo.commit({"ci/pay.gocd.yaml": shop("sneaky", group="payments")}, "into payments")
    r = ok(workspace.cli("tick"))
    assert "refused" in r.out
    r = ok(workspace.cli("validate"))
    assert "config repository 'shops' may not refer to pipeline group 'payments' (pipeline 'sneaky')" in r.err
    assert f"last good revision {good[:12]}" in r.err
    assert "sneaky" not in ok(workspace.cli("status")).out.split("config repository")[0]
    repo.git("revert", "--no-edit", "HEAD")
    env = "environments:\n  production:\n    pipelines: [shop-build]\n"
    repo.commit({"ci/shop.gocd.yaml": shop(extra=env)}, "into production")
    ok(workspace.cli("tick"))
    r = ok(workspace.cli("validate"))
    assert "config repository 'shops' may not refer to environment 'production'" in r.err
    # an allowed environment loads
    repo.commit({"ci/shop.gocd.yaml": shop(extra=env.replace("production", "shop-staging"))}, "staging")
    assert "now at" in ok(workspace.cli("tick")).out


def test_no_rules_means_nothing_may_be_defined(setup: tuple[Any, Any]) -> None:
    workspace, repo = setup
    settings(workspace.root, repo.url, rules="")
    ok(workspace.cli("tick"))
    r = ok(workspace.cli("validate"))
    assert "ok: 1 pipeline in 1 file" in r.out
    assert "it has no rules, and without rules a config repository may refer to nothing" in r.err
    assert "it has no good revision yet, so it defines no pipelines" in r.err


def test_notify_by_url_polls_the_repository_and_a_missing_one_is_reported(setup: tuple[Any, Any]) -> None:
    workspace, repo = setup
    r = ok(workspace.cli("notify", repo.url))
    assert "validate" not in r.err
    assert "ok: 2 pipelines in 2 files" in ok(workspace.cli("validate")).out
    shutil.rmtree(repo.path)  # the repository disappears: a located message, the last good config keeps running
    r = ok(workspace.cli("tick"))
    assert "config repository shops: cannot reach" in r.out
    r = ok(workspace.cli("validate"))
    assert "ok: 2 pipelines in 2 files" in r.out and "workbench.yaml:2:3: warning: config repository 'shops'" \
        in r.err and "Traceback" not in r.err + r.out


def test_alias_bomb_in_a_repository_is_refused_with_its_location(setup: tuple[Any, Any]) -> None:
    workspace, repo = setup
    ok(workspace.cli("tick"))
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join('*' + p for p in [chr(ord(c) - 1)] * 9)}]\n" for c in "bcdefghij")
    repo.commit({"ci/bomb.gocd.yaml": bomb}, "bomb")
    r = ok(workspace.cli("tick"))
    assert "refused" in r.out and "Traceback" not in r.out + r.err
    r = ok(workspace.cli("validate"))
    assert f"shops@{repo.head[:8]}/ci/bomb.gocd.yaml:" in r.err and "ok: 2 pipelines" in r.out
    repo.git("rm", "-q", "ci/bomb.gocd.yaml")
    repo.commit({"ci/huge.gocd.yaml": "# " + "x" * 6_000_000 + "\n"}, "a huge file")
    ok(workspace.cli("tick"))
    r = ok(workspace.cli("validate"))
    assert f"shops@{repo.head[:8]}/ci/huge.gocd.yaml:1:1: warning: the file has 6000003 bytes, more than the " \
           "5000000 a config file may have; not read" in r.err and "ok: 2 pipelines" in r.out


def _frame(workspace: Any, name: str) -> list[dict[str, Any]]:
    ws = workspace.open()
    try:
        df = getattr(ws.frames, name)
        return df.astype(object).where(df.notna(), None).to_dict("records")
    finally:
        ws.close()


def test_the_server_polls_on_notify_and_keeps_the_last_good_revision(setup: tuple[Any, Any], server_factory: Any) -> None:
    import time

    from server_fixtures import make_token

    from workbench.client import Client

    workspace, repo = setup
    good = repo.head
    with open(workspace.root / "workbench.yaml", "a") as f:
        f.write("server:\n  webhooks:\n    github: {secret: \"${GITHUB_WEBHOOK_SECRET}\"}\n")
    server = server_factory(workspace.root, "--interval", "600",  # only its first pass, notify and webhooks poll
                            env={"GITHUB_WEBHOOK_SECRET": "s3cret"})
    client = Client(server.url, make_token(workspace.root, "carol"))

    def wait(what: str, check: Any) -> Any:
        end = time.monotonic() + 120
        while not (got := check()):
            assert time.monotonic() < end, f"gave up waiting for {what}; server log:\n{server.stderr()}"
            time.sleep(0.2)
        return got

    try:
        wait("the first poll", lambda: client.config_repos()[0]["good_revision"] == good)
        assert {r["pipeline"]: r["config_repo"] for r in client.board()}["shop-build"]["revision"] == good
        repo.commit({"ci/shop.gocd.yaml": shop(group="payments")}, "into another team's group")
        bad = repo.head
        client.notify(repo.url)  # what a git hook or `workbench notify URL` does
        row = wait("the refused revision", lambda: (r := client.config_repos()[0])["latest_revision"] == bad and r)
        assert row["good_revision"] == good
        assert any("may not refer to pipeline group 'payments'" in e for e in row["errors"]), row
        assert "shop-build" in {r["pipeline"] for r in client.board()}  # still running from the last good revision
        warnings = client.validate()["warnings"]  # the server's loaded config shows the refusal too
        assert any("may not refer to pipeline group 'payments'" in w and f"revision {bad[:12]} refused" in w
                   for w in warnings), warnings
        repo.commit({"ci/shop.gocd.yaml": shop(name="shop-deploy")}, "fix: own group, new name")
        fixed = repo.head
        client.notify("shops")  # the repository's id works too
        wait("the fix", lambda: client.config_repos()[0]["good_revision"] == fixed)
        names = {r["pipeline"] for r in client.board()}
        assert "shop-deploy" in names and "shop-build" not in names
        # a forge's push webhook naming the repository's URL polls it too
        import hashlib
        import hmac

        import httpx

        repo.commit({"ci/shop.gocd.yaml": shop(name="shop-release")}, "rename again")
        pushed = repo.head
        body = json.dumps({"ref": "refs/heads/main", "repository": {"clone_url": repo.url}}).encode()
        sig = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        answer = httpx.post(f"{server.url}/api/v1/webhooks/github", content=body, headers={
            "Content-Type": "application/json", "X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1",
            "X-Hub-Signature-256": f"sha256={sig}"})
        assert answer.status_code == 202 and answer.json()["polling"] == ["configrepo:shops"], answer.text
        wait("the pushed revision", lambda: client.config_repos()[0]["good_revision"] == pushed)
    finally:
        client.close()


def test_the_dashboard_board_shows_a_refused_revision(setup: tuple[Any, Any]) -> None:
    from workbench.dashboard import dashboard

    workspace, repo = setup
    ok(workspace.cli("tick"))
    good = repo.head
    repo.commit({"ci/shop.gocd.yaml": shop().replace("group: shops", "group: shops\n    bogus: 1")}, "break it")
    ok(workspace.cli("tick"))
    ws = workspace.open()
    try:
        dash = dashboard(ws, user="alice", autostart=False, charts_on_start=False)
        dash.refresh_live()
        board = dash.board.value
        assert 'class="wb-warning"' in board
        assert f"config repository shops ({repo.url}): revision {repo.head[:12]} refused, pipelines run from last " \
               f"good {good[:12]}" in board
        assert f"shops@{repo.head[:8]}/ci/shop.gocd.yaml:5:5: unknown key &#x27;bogus&#x27;" in board
        assert 'data-pipeline="shop-build"' in board  # the last good revision's pipeline is still on the board
    finally:
        ws.close()


def test_the_config_repos_section_import_gocd_writes_is_read(tmp_path: Path) -> None:
    from workbench.configrepos.model import Rule
    from workbench.settings import load_settings

    (tmp_path / "workbench.yaml").write_text(textwrap.dedent("""\
        config_repos:
          shops:
            git: https://git.example.org/shops.git
            branch: master
            pattern: [ci/*.gopipeline.json, ci/*.goenvironment.json]
            rules:
            - {directive: allow, action: refer, type: pipeline_group, resource: shops}
            - {directive: deny, action: refer, type: '*', resource: '*'}
        """))
    repo = load_settings(tmp_path).config_repos["shops"]
    assert repo.branch == "master" and repo.patterns == ("ci/*.gopipeline.json", "ci/*.goenvironment.json")
    assert repo.rules == (Rule("allow", "pipeline_group", "shops"), Rule("deny", "*", "*"))
    assert repo.wants("ci/a.gopipeline.json") and not repo.wants("a.gocd.yaml")


def test_a_json_file_in_a_repository_loads_and_its_errors_are_located(setup: tuple[Any, Any]) -> None:
    workspace, repo = setup
    doc = {"format_version": 3, "pipelines": [{
        "name": "shop-json", "group": "shops-json",
        "materials": [{"name": "up", "type": "dependency", "pipeline": "shop-build", "stage": "build"}],
        "stages": [{"name": "build", "jobs": [{"name": "job", "tasks": [{"type": "exec", "command": "true"}]}]}]}]}
    repo.commit({"ci/extra.gocd.json": json.dumps(doc, indent=2)}, "a JSON pipeline")
    assert "now at" in ok(workspace.cli("tick")).out
    assert "ok: 3 pipelines in 3 files" in ok(workspace.cli("validate")).out
    doc["pipelines"][0]["colour"] = "red"
    repo.commit({"ci/extra.gocd.json": json.dumps(doc, indent=2)}, "a bad key")
    ok(workspace.cli("tick"))
    r = ok(workspace.cli("validate"))
    assert "ok: 3 pipelines in 3 files" in r.out
    assert f"shops@{repo.head[:8]}/ci/extra.gocd.json:" in r.err and "colour" in r.err, r.err
