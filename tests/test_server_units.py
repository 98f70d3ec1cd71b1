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
