"""Real nginx and HAProxy on loopback in front of two tiny backends (blue, green).

Everything runs as the current user in the test's temporary folder; a missing
nginx/haproxy skips locally and fails under CI (conftest.require_service).
"""
from __future__ import annotations

import http.client
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import require_service
from workbench.traffic.demo import Backend, NginxServer, free_port, nginx_binary, start_nginx_route


def get(url: str, timeout: float = 5) -> tuple[int, str]:
    """One request on a fresh connection (so every request is balanced on its own)."""
    host, _, rest = url.removeprefix("http://").partition("/")
    h, _, p = host.partition(":")
    conn = http.client.HTTPConnection(h, int(p or 80), timeout=timeout)
    try:
        conn.request("GET", "/" + rest, headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode().strip()
    finally:
        conn.close()


def split(url: str, n: int = 400) -> Counter[str]:
    """How ``n`` requests were answered: stack name for 200s, ``error <status>`` otherwise."""
    seen: Counter[str] = Counter()
    for _ in range(n):
        status, body = get(url)
        seen[body if status == 200 else f"error {status}"] += 1
    return seen


def percent(seen: Counter[str], key: str) -> float:
    return 100.0 * seen[key] / max(sum(seen.values()), 1)


class SteadyClient:
    """Requests in a loop from a thread (bounded in count and time) counting failures, for reload tests."""

    def __init__(self, url: str, max_requests: int = 20000, max_seconds: float = 60) -> None:
        self.url = url
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        end = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and self.ok + len(self.failures) < self.max_requests and time.monotonic() < end:
            try:
                status, body = get(self.url)
                if status == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"status {status}: {body[:80]}")
            except OSError as exc:
                self.failures.append(repr(exc))

    def wait_for(self, ok: int, timeout: float = 30) -> None:
        """Until ``ok`` requests have succeeded (or a failure happened); bounded."""
        end = time.monotonic() + timeout
        while self.ok < ok and not self.failures and time.monotonic() < end and self._thread.is_alive():
            time.sleep(0.01)

    def __enter__(self) -> "SteadyClient":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@dataclass
class NginxRoute:
    config: dict[str, Any]
    nginx: NginxServer
    backends: dict[str, Backend]

    @property
    def url(self) -> str:
        return self.config["url"]


@pytest.fixture
def nginx_route(tmp_path: Path) -> Iterator[NginxRoute]:
    require_service(nginx_binary() is not None, "nginx")
    cfg, nginx, backends = start_nginx_route(tmp_path / "nginx", "shop")
    try:
        yield NginxRoute(cfg, nginx, backends)
    finally:
        nginx.stop()
        for b in backends.values():
            b.stop()


def haproxy_binary() -> str | None:
    found = shutil.which("haproxy")
    if found:
        return found
    return "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None


@dataclass
class HAProxyRoute:
    config: dict[str, Any]
    proc: subprocess.Popen[bytes]
    backends: dict[str, Backend]
    socket: Path
    cfg_file: Path
    url: str
    extra: dict[str, Any] = field(default_factory=dict)

    def reload(self) -> None:
        """A real reload (master-worker, SIGUSR2): runtime weights go back to the config file's."""
        old = _worker_pid(self.socket)
        self.proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                pid = _worker_pid(self.socket)
                if pid is not None and pid != old and b"initial" in _haproxy_cmd(self.socket, "get weight shop/blue"):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("haproxy did not come back after a reload")


def _worker_pid(path: Path) -> str | None:
    for line in _haproxy_cmd(path, "show info").decode().splitlines():
        if line.startswith("Pid:"):
            return line.split(":", 1)[1].strip()
    return None


def _haproxy_cmd(path: Path, cmd: str) -> bytes:
    import socket as so

    with so.socket(so.AF_UNIX, so.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(cmd.encode() + b"\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def start_haproxy(d: Path, *, state_file: Path | None = None) -> HAProxyRoute:
    """HAProxy (master-worker, foreground) with backend ``shop``: blue at weight 100, green at 0."""
    binary = haproxy_binary()
    require_service(binary is not None, "haproxy")
    assert binary is not None
    d.mkdir(parents=True, exist_ok=True)
    backends = {s: Backend(s) for s in ("blue", "green")}
    port = free_port()
    sock = d / "admin.sock"
    cfg_file = d / "haproxy.cfg"
    state_global = f"    server-state-file {state_file}\n" if state_file else ""
    state_defaults = "    load-server-state-from-file global\n" if state_file else ""
    cfg_file.write_text(f"""\
global
    stats socket {sock} mode 600 level admin
    pidfile {d}/haproxy.pid
{state_global}
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
{state_defaults}
frontend fe
    bind 127.0.0.1:{port}
    default_backend shop

backend shop
    balance roundrobin
    server blue {backends['blue'].address} weight 100
    server green {backends['green'].address} weight 0
""")
    check = subprocess.run([binary, "-c", "-f", str(cfg_file)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([binary, "-W", "-db", "-f", str(cfg_file)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 15
    while True:
        try:
            if sock.exists() and get(url)[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            proc.wait()
            for b in backends.values():
                b.stop()
            raise RuntimeError("haproxy did not start")
        time.sleep(0.05)
    config: dict[str, Any] = {"provider": "haproxy", "stacks": {s: b.address for s, b in backends.items()},
                              "socket": str(sock), "backend": "shop", "url": url}
    if state_file:
        config["state_file"] = str(state_file)
    return HAProxyRoute(config, proc, backends, sock, cfg_file, url)


def stop_haproxy(h: HAProxyRoute) -> None:
    h.proc.terminate()
    try:
        h.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        h.proc.kill()
        h.proc.wait()
    for b in h.backends.values():
        b.stop()


@pytest.fixture
def haproxy_route(tmp_path: Path) -> Iterator[HAProxyRoute]:
    h = start_haproxy(tmp_path / "haproxy")
    try:
        yield h
    finally:
        stop_haproxy(h)


def urlopen_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False
