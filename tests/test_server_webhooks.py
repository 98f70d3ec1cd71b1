"""Forge webhooks end to end: a real ``workbench server``, real git commits, signed deliveries over loopback.

Every pipeline here has ``auto_update: false`` and the server a 300 s poll
interval, so the only thing that can start a run within the test is a
webhook the server accepted. Hostile deliveries are sent to the same server
and must leave a refused or ignored row, no run, and no traceback.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from materials_fixtures import config_yaml, git_material, pipeline, runs
from reliability_fixtures import invariant_violations
from server_fixtures import server_factory  # noqa: F401  (fixture)

from workbench.server import deliveries as D
from workbench.status import Status

pytestmark = pytest.mark.timeout(120)

SECRETS = {"github": "gh-secret-1", "gitlab": "gl-token-2", "gitea": "gt-secret-3", "bitbucket": "bb-secret-4"}
ENV = {f"{forge.upper()}_WEBHOOK_SECRET": secret for forge, secret in SECRETS.items()}
PATHS = {forge: f"/api/v1/webhooks/{forge}" for forge in SECRETS}


def _hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signed(forge: str, body: bytes, *, secret: str | None = None, event: str | None = None,
           delivery: str | None = None) -> dict[str, str]:
    """The headers the forge itself sends with a push (or ``event``), signed with ``secret``."""
    secret = SECRETS[forge] if secret is None else secret
    delivery = delivery or str(uuid.uuid4())
    h = {"Content-Type": "application/json"}
    if forge == "github":
        h |= {"X-GitHub-Event": event or "push", "X-GitHub-Delivery": delivery,
              "X-Hub-Signature-256": f"sha256={_hex(secret, body)}"}
    elif forge == "gitlab":
        h |= {"X-Gitlab-Event": event or "Push Hook", "X-Gitlab-Event-UUID": delivery, "X-Gitlab-Token": secret}
    elif forge == "gitea":
        h |= {"X-Gitea-Event": event or "push", "X-Gitea-Delivery": delivery,
              "X-Gitea-Signature": _hex(secret, body)}
    else:
        h |= {"X-Event-Key": event or "repo:refs_changed", "X-Request-UUID": delivery,
              "X-Hub-Signature": f"sha256={_hex(secret, body)}"}
    return h


def push(forge: str, url: str, ref: str = "refs/heads/master") -> bytes:
    """A push payload the way each forge shapes it, naming the repository ``url``."""
    if forge in ("github", "gitea"):
        doc: dict[str, Any] = {"ref": ref, "repository": {"clone_url": url, "html_url": "https://forge.invalid/o/r"}}
    elif forge == "gitlab":
        doc = {"object_kind": "push", "ref": ref, "project": {"git_http_url": url},
               "repository": {"git_http_url": url}}
    else:  # Bitbucket Server
        doc = {"eventKey": "repo:refs_changed", "changes": [{"refId": ref}],
               "repository": {"links": {"clone": [{"href": url, "name": "http"}]}}}
    return json.dumps(doc).encode()


class _chunks:
    """A body sent with chunked transfer encoding (no Content-Length): the server must stop reading it itself."""

    def __init__(self, body: bytes, size: int = 64 * 1024) -> None:
        self.body, self.size = body, size

    def __iter__(self) -> Any:
        for i in range(0, len(self.body), self.size):
            yield self.body[i:i + self.size]


def wait_for(what: Callable[[], Any], timeout: float = 30.0, message: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {message or what}")


def run_with(ws: Any, sha: str, pipeline_name: str = "app") -> Any:
    return next((r for r in runs(ws, pipeline_name) if r.revisions.get("code", {}).get("revision") == sha), None)


def finished(ws: Any, pipeline_name: str = "app") -> bool:
    return all(r.status in (Status.PASSED, Status.FAILED, Status.CANCELLED) for r in runs(ws, pipeline_name))


def setup(workspace: Any, repo: Any, forges: tuple[str, ...] = tuple(SECRETS)) -> Any:
    """A pipeline on ``repo`` that only a webhook can trigger, and secrets for ``forges``."""
    hooks = {f: {"secret": f"${{{f.upper()}_WEBHOOK_SECRET}}"} for f in forges}
    (workspace.root / "workbench.yaml").write_text(json.dumps({"server": {"webhooks": hooks}}))
    workspace.write("p.gocd.yaml", config_yaml(pipeline("app", {"code": git_material(repo.url, auto_update=False)})))
    return workspace.open()


def start(server_factory: Any, workspace: Any, ws: Any) -> Any:  # noqa: F811
    """The server, once its first pass has built the repository's first commit (a material never fetched is
    fetched once, auto_update or not); from then on only a webhook can start a run."""
    server = server_factory(workspace.root, "--interval", "300", env=ENV)
    wait_for(lambda: runs(ws, "app") and finished(ws), message="the first run of the initial commit")
    return server


def rows(ws: Any) -> list[D.Delivery]:
    return list(reversed(D.recent(ws.store, 1000)))


def assert_clean(server: Any, *bodies: str) -> None:
    log = server.stderr()
    assert "Traceback" not in log, log[-3000:]
    for body in bodies:
        assert "Traceback" not in body and 'File "' not in body, body


def test_a_signed_push_from_every_forge_runs_the_pipeline_on_the_new_commit(
        workspace: Any, git_repo: Any, server_factory: Any) -> None:  # noqa: F811
    repo = git_repo("app")
    ws = setup(workspace, repo)
    server = start(server_factory, workspace, ws)
    cases = [("github", PATHS["github"], repo.url), ("gitlab", PATHS["gitlab"], f"file://{repo.path}"),
             ("gitea", PATHS["gitea"], repo.url), ("bitbucket", PATHS["bitbucket"], f"file://{repo.path}/"),
             ("github", "/go/api/webhooks/github/notify", repo.url),
             ("gitlab", "/go/api/webhooks/gitlab/notify", repo.url),
             ("bitbucket", "/go/api/webhooks/bitbucket/notify", repo.url)]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        ping = http.post(PATHS["github"], content=b'{"zen": "hi"}', headers=signed("github", b'{"zen": "hi"}',
                                                                                     event="ping"))
        assert ping.status_code == 200 and ping.json().items() >= {"ok": True, "event": "ping"}.items()
        for i, (forge, path, url) in enumerate(cases):
            sha = repo.commit({"app.txt": f"change {i}"}, f"change {i} for {forge}")
            body = push(forge, url)
            r = http.post(path, content=body, headers=signed(forge, body))
            assert r.status_code == 202, (forge, path, r.text)
            assert r.json()["outcome"] == "accepted" and r.json()["polling"] == [str(repo.path.resolve())]
            run = wait_for(lambda sha=sha: run_with(ws, sha),
                           message=f"a run of {sha[:8]} after the {forge} webhook at {path}")
            assert run.counter == i + 2
            wait_for(lambda: finished(ws), message="the run to finish")
    assert [r.status for r in runs(ws, "app")] == [Status.PASSED] * (len(cases) + 1)
    got = rows(ws)
    assert [(d.forge, d.outcome, d.status) for d in got] == [("github", "ignored", 200)] + [
        (forge, "accepted", 202) for forge, _, _ in cases]
    assert all(d.material_keys == (str(repo.path.resolve()),) for d in got[1:])
    assert got[-1].ref == "refs/heads/master" and got[0].reason and "ping" in got[0].reason
    wait_for(lambda: all(d.polled_at is not None for d in rows(ws)[1:]), message="every delivery stamped polled")
    frame = ws.frames.webhook_deliveries
    assert list(frame["outcome"].astype(str)) == [d.outcome for d in got]
    assert str(frame["received_at"].dtype).startswith("datetime64")
    listing = workspace.cli("deliveries", "-n", "3", "--format", "json")
    assert listing.code == 0, listing.err
    assert [d["forge"] for d in json.loads(listing.out)] == ["bitbucket", "gitlab", "github"]
    table = workspace.cli("deliveries", "-n", "2")
    assert table.code == 0 and "accepted" in table.out and "bitbucket" in table.out
    assert server.stop() == 0
    assert_clean(server)
    assert invariant_violations(ws.root / ".workbench" / "store.db") == []
    ws.close()


def test_hostile_deliveries_are_refused_or_ignored_recorded_and_trigger_nothing(
        workspace: Any, git_repo: Any, server_factory: Any) -> None:  # noqa: F811
    repo = git_repo("app")
    other = git_repo("unused")
    ws = setup(workspace, repo, forges=("github", "gitlab", "bitbucket"))  # no gitea secret
    server = start(server_factory, workspace, ws)
    sha = repo.commit({"app.txt": "waiting to be built"}, "a change only a webhook may build")
    good = push("github", repo.url)
    big = b'{"repository": {"clone_url": "' + b"x" * 10_000_000 + b'"}}'
    hostile: list[tuple[str, str, Any, dict[str, str], int, str]] = [
        ("missing signature", "github", good, {"X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1"}, 401,
         "no X-Hub-Signature-256"),
        ("wrong signature", "github", good, {**signed("github", good), "X-Hub-Signature-256": "sha256=" + "0" * 64},
         401, "does not match"),
        ("wrong secret", "github", good, signed("github", good, secret="guessed"), 401, "does not match"),
        ("wrong token", "gitlab", push("gitlab", repo.url), signed("gitlab", b"", secret="guessed"), 401,
         "X-Gitlab-Token does not match"),
        ("sha1 only", "bitbucket", push("bitbucket", repo.url),
         {"X-Event-Key": "repo:push", "X-Hub-Signature": "sha1=" + "0" * 40}, 401, "not sha256"),
        ("no secret configured", "gitea", push("gitea", repo.url), signed("gitea", push("gitea", repo.url)), 403,
         "no secret is configured for gitea"),
        ("10 MB body", "github", big, signed("github", big), 413, "larger than 1000000 bytes"),
        ("10 MB chunked", "github", _chunks(big), signed("github", big), 413, "larger than 1000000 bytes"),
        ("malformed JSON", "github", b'{"ref": ', signed("github", b'{"ref": '), 400, "not valid JSON"),
        ("not an object", "gitlab", b"[]", signed("gitlab", b"[]"), 400, "not a JSON object"),
        ("unused repository", "github", push("github", other.url), signed("github", push("github", other.url)), 202,
         f"no git material uses {other.url}"),
        ("other event", "github", good, signed("github", good, event="issues"), 202, "only pushes poll"),
    ]
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for name, forge, body, headers, status, why in hostile:
            try:
                r = http.post(PATHS[forge], content=body, headers=headers)
            except httpx.TransportError:  # a server may close on a body it refuses to read; the row tells
                assert name.startswith("10 MB")
                continue
            assert r.status_code == status, (name, r.text)
            assert why in r.text, (name, r.text)
            assert_clean(server, r.text)
        time.sleep(1.0)  # a pass after a force takes milliseconds: a run would be there by now
        assert [r.counter for r in runs(ws, "app")] == [1]
        got = rows(ws)
        assert [(d.outcome, d.status) for d in got] == [
            ("refused" if status >= 400 else "ignored", status) for *_, status, _ in hostile]
        for d, (name, *_, why) in zip(got, hostile, strict=True):
            assert d.reason and why in d.reason, (name, d.reason)
            assert d.material_keys == () and d.remote == "127.0.0.1", name
        assert got[6].delivery_id == hostile[6][3]["X-GitHub-Delivery"]  # the id is the header's, body unread

        # the same server builds a genuine push; its replay is refused and builds nothing new
        headers = signed("github", good, delivery="genuine-1")
        r = http.post(PATHS["github"], content=good, headers=headers)
        assert r.status_code == 202, r.text
        wait_for(lambda: run_with(ws, sha), message="the run of the genuine delivery")
        later = repo.commit({"app.txt": "a later change"}, "a later change")
        replay = http.post(PATHS["github"], content=good, headers=headers)
        assert replay.status_code == 409 and "already received at" in replay.json()["detail"], replay.text
        unsigned = http.post(PATHS["github"], content=good, headers={"X-GitHub-Event": "push",
                                                                      "X-GitHub-Delivery": "genuine-2"})
        assert unsigned.status_code == 401  # an unsigned copy of a real id does not take the id from the forge
        r2 = http.post(PATHS["github"], content=good, headers=signed("github", good, delivery="genuine-2"))
        assert r2.status_code == 202, r2.text
        wait_for(lambda: run_with(ws, later), message="the run of genuine-2")
        wait_for(lambda: finished(ws), message="the runs to finish")

        # one delivery sent eight times at once: the store's unique constraint lets exactly one through
        race = signed("github", good, delivery="race-1")
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: httpx.post(server.url + PATHS["github"], content=good, headers=race,
                                                         timeout=30).status_code, range(8)))
        assert sorted(answers) == [202] + [409] * 7, answers
    tail = [d for d in rows(ws) if d.delivery_id != "race-1"][-4:]
    assert [(d.delivery_id, d.outcome, d.status) for d in tail] == [
        ("genuine-1", "accepted", 202), ("genuine-1", "refused", 409), ("genuine-2", "refused", 401),
        ("genuine-2", "accepted", 202)]
    raced = [d for d in rows(ws) if d.delivery_id == "race-1"]
    assert sorted(d.outcome for d in raced) == ["accepted"] + ["refused"] * 7
    assert [r.counter for r in runs(ws, "app")] == [1, 2, 3]
    assert server.stop() == 0
    assert_clean(server)
    log = server.stderr()
    assert "refused (401): signature does not match" in log and "refused (409)" in log
    audit = [a for a in ws.frames.audit.itertuples() if a.action == "webhook"]  # 401s and the 403
    assert len(audit) == 7 and {a.outcome for a in audit} == {"unauthorized"}
    assert invariant_violations(ws.root / ".workbench" / "store.db") == []
    ws.close()


def test_a_server_killed_right_after_a_2xx_still_polls_after_restart(
        workspace: Any, git_repo: Any, server_factory: Any) -> None:  # noqa: F811
    repo = git_repo("app")
    ws = setup(workspace, repo, forges=("github",))
    server = start(server_factory, workspace, ws)
    shas = []
    with httpx.Client(timeout=30) as http:
        for i in range(5):
            sha = repo.commit({"app.txt": f"kill {i}"}, f"change {i}, then the server dies")
            shas.append(sha)
            body = push("github", repo.url)
            r = http.post(server.url + PATHS["github"], content=body, headers=signed("github", body))
            server.kill()  # SIGKILL the moment the 2xx is in: the pass may or may not have run
            assert r.status_code == 202, r.text
            assert_clean(server)
            server = server_factory(workspace.root, "--interval", "300", env=ENV)
            wait_for(lambda sha=sha: run_with(ws, sha), message=f"the run of {sha[:8]} after restart {i + 1}")
            wait_for(lambda: finished(ws), message="the run to finish")
            wait_for(lambda: all(d.polled_at is not None for d in rows(ws)), message="the deliveries stamped")
    assert [run_with(ws, s) is not None for s in shas] == [True] * 5
    assert all(d.outcome == "accepted" for d in rows(ws)) and len(rows(ws)) == 5
    assert server.stop() == 0
    assert_clean(server)
    assert invariant_violations(ws.root / ".workbench" / "store.db") == []
    ws.close()


def test_webhook_paths_follow_the_app_prefix(workspace: Any, git_repo: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process (no scheduler): the routes move under the hub's prefix, and a 2xx row waits as pending."""
    import asyncio

    from workbench.server.app import create_app
    from workbench.server.webhooks import add_routes

    repo = git_repo("app")
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    ws = setup(workspace, repo)
    app = create_app(ws, prefix="/services/workbench/", extra_routers=(add_routes,))
    gitea, bitbucket = push("gitea", repo.url), push("bitbucket", "https://bitbucket.example/scm/o/unknown.git")

    async def calls() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://wb") as client:
            return [await client.post("/api/v1/webhooks/gitea", content=gitea, headers=signed("gitea", gitea)),
                    await client.post("/services/workbench/api/v1/webhooks/gitea", content=gitea,
                                      headers=signed("gitea", gitea)),
                    await client.post("/services/workbench/go/api/webhooks/hosted_bitbucket/notify",
                                      content=bitbucket, headers=signed("bitbucket", bitbucket))]

    outside, inside, gocd = asyncio.run(calls())
    assert outside.status_code == 404
    assert inside.status_code == 202 and inside.json()["outcome"] == "accepted", inside.text
    assert gocd.status_code == 202 and gocd.json()["outcome"] == "ignored", gocd.text
    assert [d.forge for d in D.pending(ws.store)] == ["gitea"]  # no scheduler here: the next start polls it
    ws.close()
