"""`workbench compare`: two runs of real pipelines on a real git repository, through the CLI, Local and a server."""
from __future__ import annotations

import json
from typing import Any

import pytest
from materials_fixtures import config_yaml, git_material, pipeline
from server_fixtures import make_token

pytestmark = pytest.mark.timeout(240)

BUILD = "mkdir -p out && cat version.txt > out/app.txt"


def _pipelines(repo_url: str, version: str, deploy_script: str, token: str | None = None) -> str:
    build = pipeline("build", {"code": git_material(repo_url)}, BUILD, stages=[
        {"compile": {"jobs": {"compile": {"tasks": [{"script": BUILD}],
                                          "artifacts": [{"build": {"source": "out"}}]}}}}])
    prod = pipeline("prod", {"upstream": {"pipeline": "build", "stage": "compile"}}, label_template="v${COUNT}",
                    environment_variables={"RELEASE_TRAIN": version, "REGION": "eu"},
                    **({"secure_variables": {"DEPLOY_TOKEN": token}} if token else {}),
                    stages=[{"deploy": {"jobs": {"ship": {"tasks": [{"script": deploy_script}]}}}}])
    return config_yaml(build, prod)


@pytest.fixture
def two_releases(workspace: Any, git_repo: Any) -> Any:
    """build/1 → prod/1 (v1); two app commits and a config change; build/2 → prod/2 (v2)."""
    repo = git_repo("app")
    repo.commit({"version.txt": "1.0\n"}, "release 1.0")
    workspace.write("p.gocd.yaml", "format_version: 10\n")
    token1 = workspace.cli("encrypt", "s3cret-one").out.strip().splitlines()[-1]
    token2 = workspace.cli("encrypt", "s3cret-two").out.strip().splitlines()[-1]
    workspace.write("p.gocd.yaml", _pipelines(repo.url, "2026.11", "echo deploying", token1))
    ws = workspace.open()
    assert ws.run("build").status.value == "passed"
    assert ws.run("prod").status.value == "passed"
    first, second = repo.commit({"login.py": "fix\n"}, "Fix the login redirect"), None
    second = repo.commit({"version.txt": "1.1\n"}, "Add search to the catalogue")
    workspace.write("p.gocd.yaml", _pipelines(repo.url, "2026.12", "echo deploying && sleep 0.2", token2))
    ws.close()
    ws = workspace.open()
    assert ws.run("build").status.value == "passed"
    assert ws.run("prod").status.value == "passed"
    return workspace, ws, repo, (first, second)


def test_compare_two_production_deploys_lists_the_app_commits_through_upstream(two_releases: Any) -> None:
    workspace, _, repo, (first, second) = two_releases
    r = workspace.cli("compare", "prod/1", "prod/2", "--format", "json")
    assert r.code == 0, r
    out = json.loads(r.out)
    assert out["a"]["locator"] == "prod/1" and out["b"]["label"] == "v2"
    (app,) = out["materials"]
    assert app["via"] == "upstream" and app["material"] == "code"  # prod's only material is build
    assert [c["sha"] for c in app["commits"]] == [second, first]  # newest first, nothing else
    assert [c["message"] for c in app["commits"]] == ["Add search to the catalogue", "Fix the login redirect"]
    assert app["removed"] == [] and app["b"] == repo.head
    assert out["upstream"] == [{"pipeline": "build", "a": "1", "b": "2", "change": "changed"}]
    changed = {c["key"]: c for c in out["config"]}
    assert changed["env.RELEASE_TRAIN"] == {"key": "env.RELEASE_TRAIN", "a": "2026.11", "b": "2026.12",
                                            "change": "changed"}
    assert changed["stage.deploy.job.ship.task1"]["b"].endswith("sleep 0.2")
    assert "env.REGION" not in changed  # unchanged values are not listed
    # a secure variable that changed is named, never shown: neither value nor ciphertext is in the output
    token = changed["env.DEPLOY_TOKEN"]
    assert token["change"] == "changed" and token["a"].startswith("(secure value ") and token["a"] != token["b"]
    assert "s3cret" not in r.out and "gAAAA" not in r.out
    (stage,) = out["stages"]
    assert stage["stage"] == "deploy" and stage["a_status"] == stage["b_status"] == "passed"
    assert stage["b_duration_s"] >= 0.2 and stage["delta_s"] is not None
    assert [(j["stage"], j["job"]) for j in out["jobs"]] == [("deploy", "ship")]

    # the same by pipeline and labels, as a rich table
    r = workspace.cli("compare", "prod", "v1", "v2")
    assert r.code == 0, r
    for text in ("Fix the login redirect", "Add search to the catalogue", "RELEASE_TRAIN", "2026.12", "deploy",
                 "ship", second[:12]):
        assert text in r.out, (text, r.out)


def test_compare_shows_the_artifacts_that_differ_by_checksum(two_releases: Any) -> None:
    workspace, ws, _, _ = two_releases
    out = json.loads(workspace.cli("compare", "build", "1", "2", "--format", "json").out)
    assert out["config"] == [] and out["config_same"] is True
    (app,) = out["materials"]
    assert app["via"] == "material" and len(app["commits"]) == 2
    arts = ws.frames.artifacts
    recorded = {c: set(arts[(arts["pipeline"] == "build") & (arts["counter"] == c)]["sha256"]) for c in (1, 2)}
    (changed,) = [x for x in out["artifacts"]["changed"] if x["path"].endswith("app.txt")]
    assert changed["change"] == "changed" and changed["a_sha256"] != changed["b_sha256"]
    assert changed["a_sha256"] in recorded[1] and changed["b_sha256"] in recorded[2]
    # backwards: B lacks the commits A has
    back = json.loads(workspace.cli("compare", "build/2", "build/1", "--format", "json").out)
    assert back["materials"][0]["commits"] == [] and len(back["materials"][0]["removed"]) == 2


def test_compare_as_a_dataframe_and_errors(two_releases: Any) -> None:
    from workbench.compare import as_frame
    from workbench.errors import NotFound
    from workbench.service.local import Local

    workspace, ws, _, (first, second) = two_releases
    df = as_frame(Local(ws).compare("prod/1", "prod/latest"))
    assert set(df["section"]) >= {"material", "commit", "upstream", "config", "stage", "job"}
    commits = df[df["section"] == "commit"]
    assert list(commits["b"]) == [second, first]
    with pytest.raises(NotFound, match="no run with counter or label 'v9'"):
        Local(ws).compare("prod/v1", "prod/v9")

    r = workspace.cli("compare", "prod/1", "prod/9")
    assert r.code == 2 and "Traceback" not in r.err and "prod" in r.err, r
    r = workspace.cli("compare", "nope/1", "prod/1")
    assert r.code == 2 and "Traceback" not in r.err, r
    r = workspace.cli("compare", "prod/1")
    assert r.code == 2 and "two runs" in r.err and "Traceback" not in r.err, r


def test_compare_through_the_server_is_the_same_as_here(two_releases: Any, server_factory: Any) -> None:
    from workbench import Client
    from workbench.errors import NotFound
    from workbench.service.local import Local

    workspace, ws, _, _ = two_releases
    here = Local(ws).compare("prod/1", "prod/2")
    srv = server_factory(workspace.root)
    client = Client(srv.url, make_token(workspace.root, "carol", scope="read"))
    try:
        assert client.compare("prod/1", "prod/2") == here
        with pytest.raises(NotFound):
            client.compare("prod/1", "prod/99")
    finally:
        client.close()


def test_the_dashboards_run_tab_compares_the_run_shown_with_another(two_releases: Any) -> None:
    from workbench.dashboard import dashboard

    _, ws, _, (first, second) = two_releases
    dash = dashboard(ws, user="alice", autostart=False)
    try:
        dash.tabs.selected_index = 3
        prod1, prod2 = (ws.store.get_pipeline_run("prod", c).id for c in (1, 2))
        dash.runs.value = prod2
        assert dash.compare_html.value == ""  # nothing chosen yet
        dash.compare_with.value = prod1
        page = dash.compare_html.value
        for text in ("prod/1", "prod/2", "Fix the login redirect", "Add search to the catalogue", second[:12],
                     "env.RELEASE_TRAIN", "2026.11", "2026.12", "Stages and jobs", "deploy/ship"):
            assert text in page, text
        dash.compare_with.value = None
        assert dash.compare_html.value == ""
    finally:
        dash.close()


def test_the_html_escapes_what_people_wrote() -> None:
    from workbench.compare import as_html

    run = {"locator": "p/1", "label": "<b>1</b>", "status": "passed"}
    result = {"a": run, "b": {**run, "locator": "p/2"}, "upstream": [], "stages": [], "jobs": [], "notes": [],
              "materials": [{"material": "code", "commits": [{"sha": "a" * 40, "author": "x", "message": "<script>"}],
                             "removed": []}],
              "config": [], "artifacts": {"changed": [], "unchanged": 0}, "packages": {"changed": [], "unchanged": 0}}
    page = as_html(result)
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;1&lt;/b&gt;" in page
