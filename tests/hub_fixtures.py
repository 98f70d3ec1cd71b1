"""A real JupyterHub on loopback, with its configurable-http-proxy and the workbench as its managed service.

``RealHub.start(tmp, workspace)`` writes a ``jupyterhub_config.py`` that loads
the example of docs/server.md ("Behind JupyterHub"; only its workspace path
and bind address are replaced) and adds what a test needs: loopback ports, a
password authenticator (carol, alice, mallory, dave), hub groups and an admin
service token for the hub's REST API. It starts ``python -m jupyterhub`` in
its own process group and waits until the proxy answers for the workbench's
health endpoint, i.e. the hub, the proxy and the service are all up.

``stop()`` sends SIGTERM to the hub (which stops the service and the proxy),
then SIGKILLs whatever is left: the hub's group and the process groups of the
proxy and the service, whose pids were read from their pid files at start (the
hub starts both in sessions of their own). So a failing test leaves nothing.
"""
from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO, require_service

CHP = "/usr/bin/configurable-http-proxy"
PASSWORD = {"carol": "carol-pw", "alice": "alice-pw", "mallory": "mallory-pw", "dave": "dave-pw"}
GROUPS = {"qa": ["carol", "dave"], "release-managers": ["alice"]}
DOC_WORKSPACE, DOC_BIND = '"/srv/release"', '"127.0.0.1:8765"'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def docs_hub_config() -> str:
    """The jupyterhub_config.py block of docs/server.md, exactly as documented."""
    text = (REPO / "docs" / "server.md").read_text()
    m = re.search(r"```python\n(# jupyterhub_config\.py: the workbench as a hub-managed service\n.*?)```", text, re.S)
    assert m, "docs/server.md lost its jupyterhub_config.py example"
    return m.group(1)


def _chp() -> str | None:
    for candidate in (CHP, *(str(Path(p) / "configurable-http-proxy") for p in os.environ.get("PATH", "").split(":"))):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def require_hub() -> str:
    import importlib.util

    require_service(importlib.util.find_spec("jupyterhub") is not None, "JupyterHub (the test extra)")
    chp = _chp()
    require_service(chp is not None, "configurable-http-proxy (scripts/system-deps.sh)")
    assert chp is not None
    return chp


def _reset_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)


def _pid_of(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    tail = text.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _alive_with(pid: int, needle: str) -> bool:
    """``pid`` still runs and is the process we started (not a reused pid)."""
    try:
        return needle in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


class RealHub:
    SERVICE = "workbench"

    def __init__(self, proc: subprocess.Popen[bytes], base: str, admin_token: str, log: Path, chp_pid: int | None,
                 service_pid: int | None, *, bind: str = "", hub_api: str = "") -> None:
        self.proc, self.base, self.admin_token, self.log = proc, base, admin_token, log
        self.chp_pid, self.service_pid = chp_pid, service_pid
        self.service_url = f"{base}/services/{self.SERVICE}"
        self.bind, self.hub_api = bind, hub_api  # where the service must listen; the hub's API for services

    # -- start / stop -----------------------------------------------------------------
    @classmethod
    def start(cls, tmp: Path, workspace: Path, timeout: float = 180, *, external_token: str | None = None) -> RealHub:
        """``external_token``: the service is external (docs: "leave out command and cwd, add api_token"); the
        test starts ``workbench server`` itself, then calls :meth:`wait_service`."""
        chp = require_hub()
        tmp.mkdir(parents=True, exist_ok=True)
        public, hub_port, api_port, bind = free_port(), free_port(), free_port(), free_port()
        admin_token = secrets.token_hex(24)
        docs = docs_hub_config()
        assert DOC_WORKSPACE in docs and DOC_BIND in docs, "the docs example changed its placeholders"
        (tmp / "docs_hub_config.py").write_text(
            docs.replace(DOC_WORKSPACE, repr(str(workspace))).replace(DOC_BIND, repr(f"127.0.0.1:{bind}")))
        (tmp / "jupyterhub_config.py").write_text(f'''
from jupyterhub.auth import Authenticator

c = get_config()  # noqa
load_subconfig({str(tmp / "docs_hub_config.py")!r})  # noqa: the example of docs/server.md

PASSWORDS = {PASSWORD!r}


class PasswordAuthenticator(Authenticator):
    """Each test user has their own password (no PAM, no system accounts)."""

    async def authenticate(self, handler, data):
        user = data.get("username", "")
        if user in PASSWORDS and secrets_compare(PASSWORDS[user], data.get("password", "")):
            return user
        return None


def secrets_compare(a, b):
    import hmac
    return hmac.compare_digest(a.encode(), b.encode())


c.JupyterHub.authenticator_class = PasswordAuthenticator
c.Authenticator.allowed_users = set(PASSWORDS)
c.JupyterHub.load_groups = {{name: {{"users": users}} for name, users in {GROUPS!r}.items()}}
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {public}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.ConfigurableHTTPProxy.pid_file = {str(tmp / "proxy.pid")!r}
c.JupyterHub.db_url = "sqlite:///{tmp / "hub.sqlite"}"
c.JupyterHub.cookie_secret_file = {str(tmp / "cookie_secret")!r}
c.JupyterHub.pid_file = {str(tmp / "hub.pid")!r}
c.JupyterHub.cleanup_servers = True
c.JupyterHub.cleanup_proxy = True
EXTERNAL_TOKEN = {external_token!r}
if EXTERNAL_TOKEN is not None:  # external instead of managed, as docs/server.md says
    _svc = c.JupyterHub.services[0]
    _svc.pop("command")
    _svc.pop("cwd")
    _svc["api_token"] = EXTERNAL_TOKEN
c.JupyterHub.services.append({{"name": "test-admin", "api_token": {admin_token!r}}})
c.JupyterHub.load_roles.append({{"name": "test-admin", "services": ["test-admin"],
                                 "scopes": ["admin:users", "admin:groups", "tokens", "read:hub"]}})
''')
        log = tmp / "hub.log"
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
        for key in [k for k in env if k.startswith("JUPYTERHUB_")]:
            env.pop(key)
        env.pop("WORKBENCH_SERVER", None)
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(tmp / "jupyterhub_config.py")],
                                    cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=_reset_signals)
        base = f"http://127.0.0.1:{public}"
        hub = cls(proc, base, admin_token, log, None, None, bind=f"127.0.0.1:{bind}",
                  hub_api=f"http://127.0.0.1:{hub_port}/hub/api")
        try:
            hub._tmp, hub._workspace, hub._managed = tmp, workspace, external_token is None
            if hub._managed:
                hub.wait_service(timeout)
            else:
                hub._wait_hub(timeout)
        except BaseException:
            hub.stop()
            raise
        return hub

    def _wait_hub(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.chp_pid is None:
                self.chp_pid = _pid_of(self._tmp / "proxy.pid")
            if self.proc.poll() is not None:
                pytest.fail(f"JupyterHub exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base}/hub/api/", timeout=5).status_code == 200 and self.chp_pid is not None:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        pytest.fail(f"the hub or its proxy did not come up in {timeout}s:\n{self.log_tail()}")

    def wait_service(self, timeout: float = 180) -> None:
        """Until the proxy answers for the workbench's health endpoint (hub, proxy and service all up)."""
        deadline = time.monotonic() + timeout
        health = f"{self.service_url}/api/v1/health"
        while time.monotonic() < deadline:
            if self.chp_pid is None:
                self.chp_pid = _pid_of(self._tmp / "proxy.pid")
            if self.service_pid is None and self._managed:
                self.service_pid = _pid_of(self._workspace / ".workbench" / "serve.pid")
            if self.proc.poll() is not None:
                pytest.fail(f"JupyterHub exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                r = httpx.get(health, timeout=5)
                if r.status_code == 200 and r.json() == {"ok": True} and (self.service_pid or not self._managed):
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.3)
        pytest.fail(f"the hub, its proxy or the workbench service did not come up in {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(10)
        for pid, needle in ((self.chp_pid, "configurable-http-proxy"), (self.service_pid, "workbench")):
            if pid is not None and _alive_with(pid, needle):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    def log_tail(self, n: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    # -- the hub's REST API, as its administrator ----------------------------------------
    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, f"{self.base}/hub/api{path}", headers={"Authorization": f"token {self.admin_token}"},
                             timeout=30, **kw)

    def token(self, user: str, scopes: list[str] | None = None, expires_in: int | None = None) -> tuple[str, str]:
        """A new hub API token of ``user`` (what a notebook's $JUPYTERHUB_API_TOKEN is): ``(token, id)``."""
        body: dict[str, Any] = {"note": "test"}
        if scopes is not None:
            body["scopes"] = scopes
        if expires_in is not None:
            body["expires_in"] = expires_in
        r = self.api("POST", f"/users/{user}/tokens", json=body)
        assert r.status_code == 201, r.text
        return r.json()["token"], r.json()["id"]

    def hub_says(self, token: str) -> int:
        """The status the hub itself answers for ``token`` on /hub/api/user (200 known, 403 not)."""
        return httpx.get(f"{self.base}/hub/api/user", headers={"Authorization": f"token {token}"}, timeout=30).status_code
