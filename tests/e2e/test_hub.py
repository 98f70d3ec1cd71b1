"""The release service as a JupyterHub service, end to end with real components.

A real JupyterHub (``python -m jupyterhub``) with its real
configurable-http-proxy on loopback ports, configured with the
``jupyterhub_config.py`` of docs/server.md (tests/hub_fixtures.py); the
workbench server is the hub's managed service, so everything it knows about
the hub comes from the environment the hub gives it. Users carol and dave are
in hub group ``qa``, the pipeline's QA role is ``group:qa``; alice and mallory
are not. Hub tokens are made through the hub's REST API with the scopes that
docs/server.md gives notebook tokens (``c.Spawner.server_token_scopes``).
Debian's Chromium, driven by Playwright, signs in at the hub as carol.
"""
from __future__ import annotations

import ast
import contextlib
import os
import re
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.conftest import REPO, WorkspaceFactory, require_service
from tests.hub_fixtures import PASSWORD, RealHub, docs_hub_config

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
ARTIFACTS = REPO / "test-artifacts"

pytestmark = pytest.mark.timeout(300)

PIPELINE = """
format_version: 10
roles:
  qa: ["group:qa"]
pipelines:
  app:
    group: shop
    materials: {}
    stages:
      - build:
          jobs:
            compile: {tasks: [{exec: {command: "true"}}]}
      - qa:
          approval: {type: manual, roles: [qa]}
          jobs:
            deploy: {tasks: [{script: "echo deployed"}]}
"""


def _server_token_scopes() -> list[str]:
    """``c.Spawner.server_token_scopes`` of the docs' example: what a notebook's $JUPYTERHUB_API_TOKEN carries."""
    m = re.search(r"c\.Spawner\.server_token_scopes = (\[.*?\])", docs_hub_config(), re.S)
    assert m, "the docs example lost c.Spawner.server_token_scopes"
    return list(ast.literal_eval(m.group(1)))


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RealHub, WorkspaceFactory]]:
    tmp = tmp_path_factory.mktemp("hub")
    ws = WorkspaceFactory(tmp / "ws")
    ws.write("app.gocd.yaml", PIPELINE)
    # ask the hub on every request, so removing a user from a group or revoking a token shows at once
    (ws.root / "workbench.yaml").write_text("server:\n  hub:\n    cache_seconds: 0\n")
    real = RealHub.start(tmp / "jupyterhub", ws.root)
    try:
        yield real, ws
    finally:
        real.stop()


def _token(hub: RealHub, user: str) -> str:
    return hub.token(user, scopes=_server_token_scopes())[0]


def _waiting_run(hub: RealHub) -> str:
    """A new run of app, triggered through the API by alice's hub token, once it waits at qa: its stage locator."""
    from workbench import Client

    with Client(hub.service_url, token=_token(hub, "alice")) as client:
        counter = client.trigger("app")["counter"]
        locator = f"app/{counter}/qa"
        deadline = time.monotonic() + 120
        while locator not in [a["locator"] for a in client.approvals()]:
            assert time.monotonic() < deadline, f"{locator} never waited for approval: {client.board()}"
            time.sleep(0.2)
    return locator


def _store(ws: WorkspaceFactory, locator: str) -> tuple[str, str | None, list[dict[str, Any]]]:
    """``(stage status, approved_by, audit rows about the stage)``, read from the store itself."""
    from workbench import Workspace

    pipeline, counter, stage = locator.split("/")
    with Workspace.open(ws.root) as w:
        run = [r for r in w.store.pipeline_runs(pipeline, limit=50) if r.counter == int(counter)][0]
        sr = w.store.run_detail(run).latest_stages()[stage]
        audit = w.frames.audit
    # a decision's rows name the stage; an attempt nobody could be signed in for names the API path it called
    targets = {locator, f"/approvals/{locator}/approve", f"/approvals/{locator}/reject"}
    rows = audit[audit["target"].isin(targets)].to_dict("records")
    return sr.status.value, sr.approved_by, rows


def _wait_passed(ws: WorkspaceFactory, locator: str) -> None:
    deadline = time.monotonic() + 120
    from workbench import Workspace

    pipeline, counter, _ = locator.split("/")
    while True:
        with Workspace.open(ws.root) as w:
            run = [r for r in w.store.pipeline_runs(pipeline, limit=50) if r.counter == int(counter)][0]
        if run.status.value == "passed":
            return
        assert time.monotonic() < deadline, f"{locator}: the run is {run.status.value}, not passed"
        time.sleep(0.2)


@contextlib.contextmanager
def _page(failed_screenshot: str) -> Iterator[Any]:
    require_service(Path(CHROMIUM).exists(), f"Chromium at {CHROMIUM} (apt-get install chromium)")
    import importlib.util

    require_service(importlib.util.find_spec("playwright") is not None, "the playwright Python package")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            try:
                yield page
            except Exception:
                page.screenshot(path=str(ARTIFACTS / failed_screenshot), full_page=True)
                raise
        finally:
            browser.close()


# -- (a) carol signs in at the hub in a browser and approves ---------------------------------------------------


def test_carol_approves_in_the_browser_signed_in_through_the_hub(hub: tuple[RealHub, WorkspaceFactory]) -> None:
    real, ws = hub
    locator = _waiting_run(real)
    with _page("hub-approve-failed.png") as page:
        page.goto(f"{real.service_url}/", timeout=60_000)
        # not signed in: the server sent the browser through the hub's OAuth to the hub's login form
        page.wait_for_selector("input[name=username]", timeout=60_000)
        assert "/hub/login" in page.url and "oauth2" in page.url, page.url
        page.fill("input[name=username]", "carol")
        page.fill("input[name=password]", PASSWORD["carol"])
        page.click("[type=submit]")
        row = page.locator(f'.wb-approval[data-locator="{locator}"]')
        row.wait_for(timeout=60_000)
        assert page.url.startswith(f"{real.service_url}/"), page.url  # back at the service's page
        assert page.inner_text(".wb-who") == "signed in as carol (groups: qa)"
        row.locator(".wb-comment").fill("QA passed, checked in the browser")
        row.locator(".wb-approve").click()
        page.wait_for_selector(".wb-message.wb-ok, .wb-message.wb-error", timeout=60_000)
        assert page.inner_text(".wb-message").startswith(f"approved {locator} as carol"), page.inner_text(".wb-message")
        cookies = {c["name"]: c["value"] for c in page.context.cookies() if c["path"].startswith("/services/")}

        # the browser's session cookie without the CSRF header (what another site's form would send): refused
        later = _waiting_run(real)
        p, c, s = later.split("/")
        forged = httpx.post(f"{real.service_url}/api/v1/approvals/{p}/{c}/{s}/approve", cookies=cookies, json={},
                            timeout=30)
        assert forged.status_code == 403 and "X-Workbench-CSRF" in forged.json()["detail"], forged.text
        cross = httpx.post(f"{real.service_url}/api/v1/approvals/{p}/{c}/{s}/approve", cookies=cookies, json={},
                           headers={"X-Workbench-CSRF": cookies["workbench-csrf"], "Origin": "http://evil.example"},
                           timeout=30)
        assert cross.status_code == 403 and "cross-site" in cross.json()["detail"], cross.text
        assert _store(ws, later)[0] == "waiting"

        # signing out ends the session here: the page sends the browser to the hub's sign-in again
        page.goto(f"{real.service_url}/logout", timeout=60_000)
        page.goto(f"{real.service_url}/", timeout=60_000)
        page.wait_for_selector("input[name=username]", timeout=60_000)
        assert "/hub/login" in page.url

    _wait_passed(ws, locator)  # the server drove the run on after the approval
    status, approved_by, rows = _store(ws, locator)
    assert (status, approved_by) == ("passed", "carol")
    ok = [r for r in rows if r["action"] == "approve" and r["outcome"] == "ok"]
    assert [(r["user"], r["comment"], r["detail"]) for r in ok] == [
        ("carol", "QA passed, checked in the browser", "signed in via hub, groups qa")]


# -- (b) mallory's token, whatever $JUPYTERHUB_USER says -----------------------------------------------------------


def test_mallorys_hub_token_with_jupyterhub_user_alice_is_refused_and_audited_as_mallory(
        hub: tuple[RealHub, WorkspaceFactory]) -> None:
    real, ws = hub
    locator = _waiting_run(real)
    mallory = _token(real, "mallory")
    env = {"WORKBENCH_SERVER": real.service_url, "WORKBENCH_TOKEN": "", "JUPYTERHUB_API_TOKEN": mallory,
           "JUPYTERHUB_USER": "alice"}
    r = ws.cli("approve", locator, "-m", "looks fine to me", env=env)
    assert r.code == 3, r  # EXIT_UNAUTHORIZED (workbench.errors.Unauthorized)
    assert f"mallory may not approve {locator}" in r.err and "Traceback" not in r.err, r

    # the same from a real kernel whose environment says it is alice, through workbench.Client
    out = _in_kernel(f"""
import workbench
from workbench.errors import Unauthorized
try:
    workbench.Client({real.service_url!r}).approve({locator!r}, "from a notebook")
    print("APPROVED")
except Unauthorized as exc:
    print("REFUSED", exc)
""", env)
    assert out.startswith(f"REFUSED mallory may not approve {locator}") and "HTTP 403" in out, out

    status, approved_by, rows = _store(ws, locator)
    assert (status, approved_by) == ("waiting", None)
    refused = [r for r in rows if r["action"] == "approve"]
    assert [(r["user"], r["outcome"]) for r in refused] == [("mallory", "unauthorized")] * 2
    assert all("signed in via hub" in r["detail"] for r in refused)

    # a hub token of mallory's without the service's access scope: refused (403) before any decision, audited
    bare = real.token("mallory", scopes=["users:activity!user"])[0]
    who = httpx.get(f"{real.service_url}/api/v1/whoami", headers={"Authorization": f"token {bare}"}, timeout=30)
    assert who.status_code == 403 and "access:services!service=workbench" in who.json()["detail"], who.text
    r = ws.cli("approve", locator, env={**env, "JUPYTERHUB_API_TOKEN": bare})
    assert r.code == 3 and "lacks the scope" in r.err, r
    rows = _store(ws, locator)[2]
    assert [(r["user"], r["outcome"]) for r in rows if r["action"] == "approve"][-1] == ("mallory", "unauthorized")
    assert _store(ws, locator)[0] == "waiting"


def _in_kernel(code: str, env: dict[str, str]) -> str:
    """Run ``code`` in a real IPython kernel started with ``env`` (a notebook's kernel); its stdout."""
    from jupyter_client.manager import start_new_kernel

    full = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    km, kc = start_new_kernel(kernel_name="python3", env=full, extra_arguments=[])
    try:
        out: list[str] = []
        kc.execute_interactive(code, timeout=120, output_hook=lambda msg: out.append(
            msg["content"].get("text", "") if msg["msg_type"] == "stream" else
            (msg["content"].get("ename", "") + ": " + msg["content"].get("evalue", "")
             if msg["msg_type"] == "error" else "")))
        return "".join(out).strip()
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


# -- (c) tokens the hub does not vouch for ---------------------------------------------------------------------


def test_forged_expired_and_revoked_hub_tokens_are_not_signed_in(hub: tuple[RealHub, WorkspaceFactory]) -> None:
    real, ws = hub
    locator = _waiting_run(real)
    p, c, s = locator.split("/")
    approve = f"{real.service_url}/api/v1/approvals/{p}/{c}/{s}/approve"

    def call(token: str) -> httpx.Response:
        return httpx.post(approve, headers={"Authorization": f"token {token}"}, json={"comment": "x"}, timeout=30)

    forged = "f" * 32  # shaped like a hub token; the hub never issued it
    assert real.hub_says(forged) == 403
    r = call(forged)
    assert r.status_code == 401 and r.json()["error"] == "not_signed_in", r.text

    expiring, _ = real.token("carol", scopes=_server_token_scopes(), expires_in=1)
    deadline = time.monotonic() + 60
    while real.hub_says(expiring) != 403:  # wait until the hub itself no longer knows it
        assert time.monotonic() < deadline, "the hub still accepts a token that expired"
        time.sleep(0.5)
    r = call(expiring)
    assert r.status_code == 401 and r.json()["error"] == "not_signed_in", r.text

    revoked, token_id = real.token("carol", scopes=_server_token_scopes())
    me = httpx.get(f"{real.service_url}/api/v1/whoami", headers={"Authorization": f"token {revoked}"}, timeout=30)
    assert me.json() == {"user": "carol", "groups": ["qa"], "via": "hub", "scope": "act"}, me.text
    assert real.api("DELETE", f"/users/carol/tokens/{token_id}").status_code == 204
    r = call(revoked)
    assert r.status_code == 401, r.text

    status, _, rows = _store(ws, locator)
    assert status == "waiting"
    assert [(r["user"], r["outcome"]) for r in rows if r["action"] == "approve"] == [
        ("(not signed in)", "unauthorized")] * 3


# -- (d) a hub group as a role, until the hub takes the user out of it ---------------------------------------------


def test_a_hub_group_is_a_role_until_the_user_leaves_the_group(hub: tuple[RealHub, WorkspaceFactory]) -> None:
    from workbench import Client
    from workbench.errors import Unauthorized

    real, ws = hub
    first = _waiting_run(real)
    dave = _token(real, "dave")
    with Client(real.service_url, token=dave) as client:
        assert client.whoami()["groups"] == ["qa"]
        client.approve(first, "dave of qa")
        _wait_passed(ws, first)
        assert _store(ws, first)[1] == "dave"

        removed = real.api("DELETE", "/groups/qa/users", json={"users": ["dave"]})
        assert removed.status_code == 200 and "dave" not in removed.json()["users"], removed.text
        second = _waiting_run(real)
        assert client.whoami()["groups"] == []
        with pytest.raises(Unauthorized, match=f"dave may not approve {second}"):
            client.approve(second, "still dave")
    status, approved_by, rows = _store(ws, second)
    assert (status, approved_by) == ("waiting", None)
    assert [(r["user"], r["outcome"], r["detail"].endswith("(signed in via hub)")) for r in rows
            if r["action"] == "approve"] == [("dave", "unauthorized", True)]


# -- hostile callers of the sign-in and the API ------------------------------------------------------------------


def test_forged_sign_in_callbacks_and_asserted_headers_get_nothing(hub: tuple[RealHub, WorkspaceFactory]) -> None:
    real, ws = hub
    cb = f"{real.service_url}/oauth_callback"
    r = httpx.get(cb, timeout=30)
    assert r.status_code == 400 and "sign-in failed" in r.text and "service-workbench" not in r.headers.get(
        "set-cookie", ""), r.text
    # a code and state this browser never started (a login CSRF): refused before the code is exchanged
    r = httpx.get(cb, params={"code": "stolen", "state": "made-up"}, timeout=30)
    assert r.status_code == 403 and "does not match" in r.text and "set-cookie" not in r.headers, r.text
    # a real state cookie from the server, with a code the hub never issued: the hub refuses it, no session
    start = httpx.get(f"{real.service_url}/dashboard", timeout=30)
    assert start.status_code == 302 and "/hub/api/oauth2/authorize" in start.headers["location"]
    state = dict(httpx.QueryParams(start.headers["location"].split("?", 1)[1]))["state"]
    r = httpx.get(cb, params={"code": "not-a-code", "state": state}, cookies=start.cookies, timeout=30)
    assert r.status_code == 403 and "refused the sign-in code" in r.text and "Try again" in r.text, r.text
    assert "service-workbench=" not in r.headers.get("set-cookie", "")

    # who the caller says they are, without a credential: not signed in, audited with the claim
    locator = _waiting_run(real)
    p, c, s = locator.split("/")
    r = httpx.post(f"{real.service_url}/api/v1/approvals/{p}/{c}/{s}/approve", json={},
                   headers={"X-Forwarded-User": "carol", "X-Remote-User": "carol", "X-JupyterHub-User": "carol"},
                   timeout=30)
    assert r.status_code == 401, r.text
    rows = _store(ws, locator)[2]
    assert [(r["user"], r["outcome"]) for r in rows] == [("(not signed in)", "unauthorized")]
    assert "claimed" in rows[0]["detail"] and "carol" in rows[0]["detail"]
    assert _store(ws, locator)[0] == "waiting"


# -- external instead of managed: the server started on its own, server.hub in workbench.yaml ----------------------


def test_an_external_service_finds_the_hub_through_server_hub_settings(tmp_path: Path, server_factory: Any) -> None:
    import secrets

    ws = WorkspaceFactory(tmp_path / "ws")
    ws.write("app.gocd.yaml", PIPELINE)
    service_token = secrets.token_hex(24)
    real = RealHub.start(tmp_path / "jupyterhub", ws.root, external_token=service_token)
    try:
        (ws.root / "workbench.yaml").write_text(
            f"server:\n  hub:\n    api_url: {real.hub_api}\n    service_name: workbench\n"
            f"    api_token: \"${{WORKBENCH_HUB_TOKEN}}\"\n")
        # nothing of a hub service's environment (emptied, whatever the test inherited): all from server.hub
        env = {k: "" for k in os.environ if k.startswith("JUPYTERHUB_")}
        srv = server_factory(ws.root, "--bind", real.bind, env={**env, "WORKBENCH_HUB_TOKEN": service_token})
        assert srv.url == f"http://{real.bind}"
        real.wait_service()
        carol = _token(real, "carol")
        me = httpx.get(f"{real.service_url}/api/v1/whoami", headers={"Authorization": f"token {carol}"}, timeout=30)
        assert me.json() == {"user": "carol", "groups": ["qa"], "via": "hub", "scope": "act"}, me.text
        with _page("hub-external-failed.png") as page:
            page.goto(f"{real.service_url}/", timeout=60_000)
            page.wait_for_selector("input[name=username]", timeout=60_000)
            page.fill("input[name=username]", "alice")
            page.fill("input[name=password]", PASSWORD["alice"])
            page.click("[type=submit]")
            page.wait_for_selector("body[data-loaded=true]", timeout=60_000)
            assert page.inner_text(".wb-who") == "signed in as alice (groups: release-managers)"
    finally:
        real.stop()
