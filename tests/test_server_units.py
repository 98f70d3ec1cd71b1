"""The release service's pure parts without a process: settings, tokens, the authenticator, error mapping."""
from __future__ import annotations

import time

import pytest

from workbench import errors as E
from workbench.errors import ConfigError, NotSignedIn, Unauthorized, UsageError
from workbench.identity import Identity
from workbench.settings import expand_secret, load_settings


def test_server_settings_parse_and_locate_mistakes(tmp_path) -> None:
    (tmp_path / "workbench.yaml").write_text(
        "server:\n  url: https://release.internal\n  bind: 0.0.0.0:9000\n  trusted_proxies: 127.0.0.1\n"
        "  webhooks:\n    github: {secret: \"${GH_SECRET}\"}\n")
    s = load_settings(tmp_path).server
    assert s.url == "https://release.internal" and s.bind == "0.0.0.0:9000"
    assert s.trusted_proxies == ("127.0.0.1",) and s.anonymous_read is False
    assert s.webhook_secrets == {"github": "${GH_SECRET}"}  # expanded only when the server starts

    (tmp_path / "workbench.yaml").write_text("store: x.db\nserver:\n  ulr: http://x\n  webhooks: {gitbucket: {}}\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(tmp_path)
    text = str(exc.value)
    assert "workbench.yaml:3:3: unknown server key 'ulr'" in text  # at the key itself, not at server:
    assert "workbench.yaml:4:14: unknown webhook forge 'gitbucket'" in text


def test_webhook_secret_expansion_names_a_missing_variable(monkeypatch) -> None:
    monkeypatch.setenv("GH_SECRET", "s3")
    assert expand_secret("${GH_SECRET}") == "s3"
    monkeypatch.delenv("GH_SECRET")
    with pytest.raises(UsageError, match="GH_SECRET is not set"):
        expand_secret("${GH_SECRET}")


def test_tokens_are_hashed_checked_and_expire(tmp_path) -> None:
    from workbench import Workspace
    from workbench.server import tokens

    with Workspace.open(tmp_path) as ws:
        info, text = tokens.create(ws.store, "carol", scope="read", expires="1d", created_by="admin")
        assert text.startswith(f"wb_{info.id}_") and info.scope == "read"
        with ws.store.read() as conn:
            stored = [tuple(r) for r in conn.execute(tokens.api_tokens.select())]
        assert all(text.split("_", 2)[2] not in map(str, row) for row in stored)  # the secret is not stored
        who = tokens.verify(ws.store, text)
        assert (who.user, who.scope, who.via, who.may_act) == ("carol", "read", "token", False)
        with pytest.raises(NotSignedIn, match="not known"):
            tokens.verify(ws.store, text[:-2] + ("AA" if not text.endswith("AA") else "BB"))
        with pytest.raises(NotSignedIn, match="malformed"):
            tokens.verify(ws.store, "wb_x")
        tokens.revoke(ws.store, info.id)
        with pytest.raises(NotSignedIn, match="revoked"):
            tokens.verify(ws.store, text)
        short, short_text = tokens.create(ws.store, "alice", expires="1s", created_by="admin")
        time.sleep(1.1)
        with pytest.raises(NotSignedIn, match="expired"):
            tokens.verify(ws.store, short_text)
        for bad in ("0d", "soon", "-3d"):
            with pytest.raises(UsageError):
                tokens.create(ws.store, "x", expires=bad, created_by="admin")
        with pytest.raises(UsageError):
            tokens.create(ws.store, "two words", created_by="admin")
        assert [t.state for t in tokens.list_tokens(ws.store)] == ["revoked", "expired"]


def test_authenticator_ignores_asserted_identities(tmp_path) -> None:
    from workbench import Workspace
    from workbench.server import tokens
    from workbench.server.auth import Authenticator

    with Workspace.open(tmp_path) as ws:
        _, text = tokens.create(ws.store, "carol", created_by="admin")
        auth = Authenticator(ws.store)
        forged = {"x-forwarded-user": "carol", "x-remote-user": "carol", "x-jupyterhub-user": "carol"}
        assert auth.identify(forged, {}, "127.0.0.1") == (None, False)
        who, by_cookie = auth.identify({"authorization": f"Bearer {text}"}, {}, "10.1.1.1")
        assert who.user == "carol" and not by_cookie
        with pytest.raises(NotSignedIn, match="no JupyterHub"):
            auth.identify({"authorization": "Bearer some-hub-token"}, {}, None)
        proxied = Authenticator(ws.store, trusted_proxies=("127.0.0.1",))
        assert proxied.identify(forged, {}, "127.0.0.1")[0].user == "carol"
        assert proxied.identify(forged, {}, "127.0.0.2")[0] is None


def test_csrf_needs_the_cookie_value_in_a_header_and_our_origin() -> None:
    from workbench.server.auth import CSRF_COOKIE, CSRF_HEADER, Authenticator

    Authenticator.check_csrf("GET", {}, {}, "h:1")
    ok = {CSRF_HEADER: "abc"}
    Authenticator.check_csrf("POST", {**ok, "origin": "http://h:1"}, {CSRF_COOKIE: "abc"}, "h:1")
    for headers, cookies in [({}, {CSRF_COOKIE: "abc"}), ({CSRF_HEADER: "abd"}, {CSRF_COOKIE: "abc"}),
                             ({**ok, "origin": "http://evil.example"}, {CSRF_COOKIE: "abc"}), (ok, {})]:
        with pytest.raises(Unauthorized):
            Authenticator.check_csrf("POST", headers, cookies, "h:1")


def test_each_error_class_has_one_http_status_beside_its_exit_code() -> None:
    expected = {E.ConfigError: (400, 2), E.UsageError: (400, 2), E.NotFound: (404, 2), E.InvalidState: (409, 2),
                E.NotSignedIn: (401, 3), E.Unauthorized: (403, 3), E.StoreError: (503, 4),
                E.TrafficError: (502, 1), E.MaterialError: (502, 1)}
    for cls, (status, code) in expected.items():
        assert (cls.http_status, cls.exit_code) == (status, code), cls


def test_read_scope_is_refused_and_audited_by_the_application_layer(tmp_path) -> None:
    from workbench import Workspace
    from workbench.service.local import Local

    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "p.gocd.yaml").write_text(
        "format_version: 10\npipelines:\n  app:\n    group: g\n    materials: {}\n    stages:\n"
        "      - build: {jobs: {b: {tasks: [{exec: {command: 'true'}}]}}}\n")
    with Workspace.open(tmp_path) as ws:
        svc = Local(ws, Identity("carol", via="token", scope="read"))
        with pytest.raises(Unauthorized, match="read scope"):
            svc.trigger("app")
        assert ws.store.pipeline_runs("app") == []
        row = ws.frames.audit.iloc[-1]
        assert (row.user, row.action, row.outcome) == ("carol", "trigger", "unauthorized")


class _InProcess:
    """Requests to an ASGI app in this process (httpx's ASGITransport), one event loop per request."""

    def __init__(self, app: object) -> None:
        self.app = app

    def request(self, method: str, url: str, **kw: object):
        import asyncio

        import httpx

        async def go():
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://wb") as c:
                return await c.request(method, url, **kw)

        return asyncio.run(go())

    def get(self, url: str, **kw: object):
        return self.request("GET", url, **kw)


def test_history_query_is_read_as_fastapi_reads_it() -> None:
    """The cached-read middleware reads history's query itself; wherever it does, it must agree with FastAPI."""
    from fastapi import FastAPI

    from workbench.server.fastreads import _history_args

    app = FastAPI()

    @app.get("/h")
    def h(pipeline: str | None = None, limit: int = 50) -> list:  # the history endpoint's parameters
        return [pipeline, limit]

    queries = ["", "limit=5", "limit=05", "limit=+5", "limit=%205", "limit=0", "limit=5&limit=7", "pipeline=a%2Fb",
               "pipeline=", "pipeline=a&pipeline=b", "pipeline=%C3%A9", "pipeline=%FF", "x=1&limit=9", "limit=999999",
               "limit=5_0", "pipeline=a+b", "&&", "pipeline", "limit=", "limit=5;pipeline=x"]
    read = 0
    client = _InProcess(app)
    for q in queries:
        ours = _history_args(q.encode())
        if ours is None:
            continue  # left to FastAPI and the endpoint
        read += 1
        assert list(ours) == client.get(f"/h?{q}").json(), q
    assert read >= 12


def test_cached_reads_are_answered_before_fastapi_only_for_a_proven_reader(tmp_path) -> None:
    """What the pure-ASGI path answers itself and what it passes on (where the endpoints decide)."""
    import asyncio

    from workbench import Workspace
    from workbench.server import tokens
    from workbench.server.app import create_app
    from workbench.server.auth import Authenticator
    from workbench.server.fastreads import FastReads

    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "p.gocd.yaml").write_text(
        "format_version: 10\npipelines:\n  app:\n    group: g\n    materials: {}\n    stages:\n"
        "      - build: {jobs: {b: {tasks: [{exec: {command: 'true'}}]}}}\n")

    class Hub:  # the hub is asked over HTTP: never from the event loop's fast path
        def identity_for_token(self, token: str) -> Identity | None:
            raise AssertionError("the hub was asked on the fast path")

        def identity_for_cookies(self, cookies: object) -> Identity | None:
            raise AssertionError("the hub was asked on the fast path")

    with Workspace.open(tmp_path) as ws:
        _, carol = tokens.create(ws.store, "carol", scope="read", created_by="admin")
        _, doomed = tokens.create(ws.store, "dave", created_by="admin")
        app = create_app(ws, auth=Authenticator(ws.store))
        state = app.state.wb

        def fast(path: str, *, query: bytes = b"", headers: dict[str, str] | None = None, method: str = "GET",
                 auth: Authenticator | None = None) -> tuple[bytes | None, bool]:
            """(the body answered by FastReads or None, whether it passed the request on)"""
            passed, sent = [], []

            async def inner(scope, receive, send) -> None:
                passed.append(scope["path"])

            async def send(message) -> None:
                sent.append(message)

            async def receive() -> dict:
                return {"type": "http.request", "body": b"", "more_body": False}

            scope = {"type": "http", "method": method, "path": f"/api/v1/{path}", "query_string": query,
                     "root_path": "", "client": ("127.0.0.1", 5000),
                     "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]}
            saved = state.auth
            state.auth = auth or saved
            try:
                asyncio.run(FastReads(inner, state, "/api/v1")(scope, receive, send))
            finally:
                state.auth = saved
            if sent:
                assert sent[0]["status"] == 200 and not passed
                return sent[1]["body"], False
            return None, bool(passed)

        bearer = {"Authorization": f"Bearer {carol}"}
        assert fast("status", headers=bearer) == (None, True)  # nothing cached yet: the endpoint computes
        if True:
            client = _InProcess(app)
            board = client.get("/api/v1/status", headers=bearer)
            assert board.status_code == 200 and board.json()[0]["pipeline"] == "app"
            assert fast("status", headers=bearer) == (board.content, False)
            # the same bytes and headers as the endpoint itself sends (a GET with a body is passed on to it)
            slow = client.request("GET", "/api/v1/status", headers=bearer, content=b"{}")
            assert fast("status", headers={**bearer, "Content-Length": "2"}) == (None, True)
            assert (slow.content, dict(slow.headers)) == (board.content, dict(board.headers))

            history = client.get("/api/v1/history?limit=5", headers=bearer).content
            assert fast("history", query=b"limit=5", headers=bearer) == (history, False)
            assert fast("history", query=b"limit=05", headers=bearer) == (None, True)  # FastAPI reads that one
            assert fast("history", headers=bearer) == (None, True)  # another key, not computed yet
            client.get("/api/v1/approvals", headers={"Authorization": f"token {doomed}"}).raise_for_status()
            assert fast("approvals", headers={"Authorization": f"token {doomed}"})[1] is False
            # dave's first use stamped his token's last_used_at, a write: the board is computed again once
            assert fast("status", headers=bearer) == (None, True)
            assert client.get("/api/v1/status", headers=bearer).content == board.content
            assert fast("status", headers=bearer) == (board.content, False)

            # no proof, or proof the endpoint must judge: passed on (401, the hub, ...), never answered here
            for headers in ({}, {"X-Remote-User": "carol"}, {"Authorization": "Bearer not-ours"},
                            {"Authorization": "Basic Y2Fyb2w6cGFzcw=="}, {"Authorization": f"Bearer {carol}x"},
                            {"Cookie": "jupyterhub-session-id=x"}):
                assert fast("status", headers=headers) == (None, True), headers
            assert fast("status", headers=bearer, method="POST") == (None, True)
            hubbed = Authenticator(ws.store, hub=Hub())
            assert fast("status", headers={"Cookie": "jupyterhub-session-id=x"}, auth=hubbed) == (None, True)
            assert fast("status", headers={"Authorization": "Bearer hub-token"}, auth=hubbed) == (None, True)
            assert fast("status", headers=bearer, auth=hubbed) == (board.content, False)
            # anonymous reads only when the setting is on; a proxy's X-Remote-User only from a trusted address
            assert fast("status", auth=Authenticator(ws.store, anonymous_read=True)) == (board.content, False)
            proxied = Authenticator(ws.store, trusted_proxies=("127.0.0.1",))
            assert fast("status", headers={"X-Remote-User": "carol"}, auth=proxied) == (board.content, False)
            assert fast("status", auth=proxied) == (None, True)

            # revoked by another connection (as `workbench token revoke` in another process): refused at once
            warm = {"Authorization": f"Bearer {doomed}"}
            assert fast("status", headers=warm) == (board.content, False)
            with Workspace.open(tmp_path) as other:
                tokens.revoke(other.store, int(doomed.split("_")[1]))
            assert fast("status", headers=warm) == (None, True)
            refused = client.get("/api/v1/status", headers=warm)
            assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
            assert client.get("/api/v1/status", headers=bearer).content == board.content  # cached again
            assert fast("status", headers=bearer) == (board.content, False)
            assert fast("status", headers=warm) == (None, True)  # ... and the revoked token still refused
