"""``server.hub`` in workbench.yaml and how the server finds its hub (no hub process needed: building
``HubOAuth`` asks the hub nothing; tests/e2e/test_hub.py talks to a real one)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import require_module

from workbench.errors import ConfigError, UsageError
from workbench.settings import HubSettings, load_settings

require_module("jupyterhub", "the test extra: make test installs it")

HUB_ENV = {
    "JUPYTERHUB_SERVICE_NAME": "workbench", "JUPYTERHUB_API_TOKEN": "svc-token",
    "JUPYTERHUB_API_URL": "http://10.0.0.5:8081/hub/api", "JUPYTERHUB_SERVICE_PREFIX": "/services/workbench/",
    "JUPYTERHUB_CLIENT_ID": "service-workbench",
    "JUPYTERHUB_OAUTH_CALLBACK_URL": "/services/workbench/oauth_callback",
    "JUPYTERHUB_OAUTH_ACCESS_SCOPES": '["access:services", "access:services!service=workbench"]',
}


def test_hub_settings_parse(tmp_path) -> None:
    (tmp_path / "workbench.yaml").write_text(
        "server:\n  hub:\n    api_url: http://hub:8081/hub/api\n    service_name: release\n"
        "    api_token: \"${WB_HUB_TOKEN}\"\n    cache_seconds: 0\n")
    hub = load_settings(tmp_path).server.hub
    assert hub == HubSettings(configured=True, api_url="http://hub:8081/hub/api", service_name="release",
                              api_token="${WB_HUB_TOKEN}", cache_seconds=0)  # the token expanded only at start
    (tmp_path / "workbench.yaml").write_text("server:\n  hub:\n")
    assert load_settings(tmp_path).server.hub == HubSettings(configured=True)
    (tmp_path / "workbench.yaml").write_text("server:\n  url: http://x\n")
    assert load_settings(tmp_path).server.hub.configured is False


def test_hub_settings_mistakes_are_located(tmp_path) -> None:
    (tmp_path / "workbench.yaml").write_text(
        "server:\n  hub:\n    api_url: ftp://hub\n    prefix: services/x\n    cache_seconds: -1\n"
        "    service_name: 'no spaces'\n    secret: 1\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(tmp_path)
    got = sorted(str(p) for p in exc.value.problems)
    assert got == [
        "workbench.yaml:3:5: server hub api_url must be the hub's API URL, e.g. http://127.0.0.1:8081/hub/api",
        "workbench.yaml:4:5: server hub prefix must be a path such as /services/workbench/",
        "workbench.yaml:5:5: server hub cache_seconds must be a whole number of seconds, 0 or more "
        "(0: ask the hub every time)",
        "workbench.yaml:6:5: server hub service_name must be the service's name in jupyterhub_config.py "
        "(letters, digits, -, _, .)",
        "workbench.yaml:7:5: unknown server hub key 'secret' (known: api_url, service_name, api_token, prefix, "
        "client_id, oauth_callback_url, cache_seconds)",
    ]
    (tmp_path / "workbench.yaml").write_text("server:\n  hub: [x]\n")
    with pytest.raises(ConfigError, match=r"workbench.yaml:2:3: server hub must be a mapping"):
        load_settings(tmp_path)


def test_the_cli_reports_a_hub_setting_as_file_line_col(tmp_path) -> None:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "workbench.yaml").write_text("server:\n  hub:\n    cache_seconds: soon\n")
    p = subprocess.run([sys.executable, "-m", "workbench", "-w", str(tmp_path), "validate"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2, p
    assert "workbench.yaml:3:5: server hub cache_seconds must be a whole number" in p.stderr
    assert "Traceback" not in p.stderr


def test_a_managed_service_takes_everything_from_the_hubs_environment() -> None:
    from workbench.server.hub import from_settings

    hub = from_settings(HubSettings(), HUB_ENV)
    assert hub is not None
    assert hub.service_name == "workbench" and hub.prefix == "/services/workbench/"
    assert hub.auth.api_url == "http://10.0.0.5:8081/hub/api" and hub.auth.api_token == "svc-token"
    assert hub.auth.oauth_client_id == hub.session_cookie == "service-workbench"
    assert hub.callback_path == "/services/workbench/oauth_callback"
    assert hub.auth.access_scopes == {"access:services", "access:services!service=workbench"}
    assert hub.cache_seconds == 30


def test_no_hub_without_a_service_name_and_settings_override_the_environment(monkeypatch) -> None:
    from workbench.server.hub import from_settings

    # a single-user server's environment: a token, no service name -> no hub
    assert from_settings(HubSettings(), {"JUPYTERHUB_API_TOKEN": "user-token"}) is None
    assert from_settings(HubSettings(), {}) is None

    monkeypatch.setenv("WB_HUB_TOKEN", "ext-token")
    hub = from_settings(HubSettings(configured=True, api_url="http://hub:8081/hub/api", service_name="release",
                                    api_token="${WB_HUB_TOKEN}", cache_seconds=0), {})
    assert hub is not None
    assert (hub.auth.api_token, hub.auth.api_url, hub.prefix) == ("ext-token", "http://hub:8081/hub/api",
                                                                  "/services/release/")
    assert hub.auth.oauth_client_id == "service-release" and hub.callback_path == "/services/release/oauth_callback"
    assert hub.auth.access_scopes == {"access:services!service=release"} and hub.cache_seconds == 0

    with pytest.raises(UsageError, match=r"server.hub: no api_token \(or \$JUPYTERHUB_API_TOKEN\)"):
        from_settings(HubSettings(configured=True, service_name="release"), {})
    monkeypatch.delenv("WB_HUB_TOKEN")
    with pytest.raises(UsageError, match="WB_HUB_TOKEN is not set"):
        from_settings(HubSettings(configured=True, service_name="release", api_token="${WB_HUB_TOKEN}"), {})


def test_cookies_are_secure_behind_https_and_host_prefixed_ones_live_at_the_root() -> None:
    from starlette.requests import Request

    from workbench.server.hub import from_settings

    def request(scheme: str = "http", proto: str | None = None) -> Request:
        headers = [(b"host", b"hub.example")] + ([(b"x-forwarded-proto", proto.encode())] if proto else [])
        return Request({"type": "http", "scheme": scheme, "path": "/services/workbench/", "headers": headers,
                        "server": ("hub.example", 80), "query_string": b""})

    hub = from_settings(HubSettings(), HUB_ENV)
    assert hub is not None
    assert hub.cookie_options(request(), "service-workbench") == {"path": "/services/workbench/", "secure": False}
    assert hub.cookie_options(request(proto="https"), "workbench-csrf")["secure"] is True
    assert hub.cookie_options(request("https"), "service-workbench")["secure"] is True
    assert hub.cookie_options(request(), "__Host-service-workbench") == {"path": "/", "secure": True}
    public = from_settings(HubSettings(), {**HUB_ENV, "JUPYTERHUB_PUBLIC_URL": "https://hub.example/"})
    assert public is not None and public.cookie_options(request(), "service-workbench")["secure"] is True


def test_server_refuses_to_start_when_server_hub_finds_no_hub(tmp_path) -> None:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "workbench.yaml").write_text("server:\n  hub:\n    service_name: workbench\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    p = subprocess.run([sys.executable, "-m", "workbench", "-w", str(tmp_path), "server", "--bind", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=120, env=env, start_new_session=True)
    assert p.returncode == 2, p
    assert "server.hub: no api_token (or $JUPYTERHUB_API_TOKEN)" in p.stderr and "Traceback" not in p.stderr
    assert "serving" not in p.stdout
