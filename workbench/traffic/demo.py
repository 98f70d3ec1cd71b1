"""A real nginx and two tiny backends on loopback, for ``make demo`` (and the tests).

:func:`start_demo_nginx` starts, as the current user in a folder of the
workspace, two HTTP backends answering with their stack name (``blue``,
``green``) and an nginx in front of them on a free loopback port, and returns
the ``routes:`` entry that drives it. Without nginx it returns a ``command``
route writing the weights to a file, and says so.
"""
from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

from .nginx import STATUS_PATH, render
from .routes import Route


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Backend:
    """An HTTP server in a thread answering ``<stack>\\n``; ``failing`` makes it answer 500."""

    def __init__(self, stack: str, port: int = 0) -> None:
        self.stack = stack
        self.failing = False
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                body = f"{backend.stack}\n".encode()
                self.send_response(500 if backend.failing else 200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a proxy closing a connection early is not news

        self.server = Server(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.address = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"backend-{stack}", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


class NginxServer:
    """An nginx master in the foreground (``daemon off``) with its own prefix, pid, logs and temp folders."""

    def __init__(self, prefix: Path, binary: str | None = None) -> None:
        self.prefix = prefix.resolve()
        self.binary = binary or nginx_binary() or "nginx"
        self.routes_dir = self.prefix / "routes"
        self.main_conf = self.prefix / "nginx.conf"
        self.error_log = self.prefix / "error.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def write_main_conf(self) -> None:
        p = self.prefix
        for d in ("routes", "tmp"):
            (p / d).mkdir(parents=True, exist_ok=True)
        temp = "\n".join(f"    {k}_temp_path {p}/tmp/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        self.main_conf.write_text(
            "worker_processes 1;\n"
            f"pid {p}/nginx.pid;\n"
            f"error_log {self.error_log} warn;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            "    access_log off;\n"
            f"{temp}\n"
            f"    include {self.routes_dir}/*.conf;\n"
            "}\n"
        )

    def route_options(self, name: str, listen: str) -> dict[str, Any]:
        return {"conf": str(self.routes_dir / f"{name}.conf"), "listen": listen, "nginx": self.binary,
                "prefix": str(self.prefix), "main_conf": str(self.main_conf), "error_log": str(self.error_log),
                "upstream": name}

    def start(self, wait_url: str | None = None, timeout: float = 15) -> None:
        self.write_main_conf()
        self.proc = subprocess.Popen(
            [self.binary, "-p", f"{self.prefix}/", "-c", str(self.main_conf), "-e", str(self.error_log),
             "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        if wait_url:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    raise RuntimeError(f"nginx exited at start: {err.strip()}")
                try:
                    with urllib.request.urlopen(wait_url, timeout=1):
                        return
                except OSError:
                    time.sleep(0.05)
            raise RuntimeError(f"nginx did not answer on {wait_url} within {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()


def start_nginx_route(root: Path, name: str = "shop", stacks: tuple[str, str] = ("blue", "green")
                      ) -> tuple[dict[str, Any], NginxServer, dict[str, Backend]]:
    """Backends + nginx serving 100% on the first stack; returns the route config, nginx and backends."""
    backends = {s: Backend(s) for s in stacks}
    nginx = NginxServer(Path(root))
    port = free_port()
    listen = f"127.0.0.1:{port}"
    cfg: dict[str, Any] = {"provider": "nginx", "stacks": {s: b.address for s, b in backends.items()},
                           "url": f"http://{listen}/", **nginx.route_options(name, listen)}
    nginx.write_main_conf()
    route = Route(name=name, provider="nginx", stacks=cfg["stacks"], live=stacks[0],
                  options={k: v for k, v in cfg.items() if k not in ("provider", "stacks", "url")})
    Path(cfg["conf"]).write_text(render(route, {stacks[0]: 100, stacks[1]: 0}, "initial"))
    try:
        nginx.start(wait_url=f"http://{listen}{STATUS_PATH}")
    except Exception:
        for b in backends.values():
            b.stop()
        nginx.stop()
        raise
    return cfg, nginx, backends


WEIGHTS_SCRIPT = """\
import json, sys
path, route, pairs = sys.argv[1], sys.argv[2], sys.argv[3:]
weights = {k: int(v) for k, v in (p.split("=", 1) for p in pairs)}
with open(path, "w") as fh:
    json.dump({"route": route, "weights": weights}, fh)
print(f"route {route}: " + " ".join(f"{k}={v}%" for k, v in weights.items()))
"""


def start_demo_nginx(root: str | os.PathLike[str], say: Callable[[str], Any] = print,
                     name: str = "shop") -> tuple[dict[str, Any], Callable[[], None]]:
    """A route config for the demo and a function that stops what was started.

    nginx installed: a real nginx on loopback in front of two backends
    (``provider: nginx``). Otherwise: ``provider: command`` writing the weights
    to ``<root>/.workbench/demo-traffic/<name>.json``. ``say`` reports which.
    """
    base = Path(root) / ".workbench" / "demo-traffic"
    base.mkdir(parents=True, exist_ok=True)
    if nginx_binary():
        cfg, nginx, backends = start_nginx_route(base / "nginx" / name, name)  # one nginx per route
        say(f"traffic: a real nginx ({nginx.binary}) on {cfg['url']} in front of two backends "
            f"(blue {cfg['stacks']['blue']}, green {cfg['stacks']['green']})")
        cfg["start_if_down"] = True  # the demo stops it when it ends: the next approval starts it again

        def stop() -> None:
            nginx.stop()
            for b in backends.values():
                b.stop()

        return cfg, stop
    script = base / "set_weights.py"
    script.write_text(WEIGHTS_SCRIPT)
    target = base / f"{name}.json"
    say(f"traffic: nginx is not installed, so the `command` provider writes the weights to {target}")
    cfg = {"provider": "command", "stacks": {"blue": "blue.local:8001", "green": "green.local:8002"},
           "argv": [sys.executable, str(script), str(target)]}
    return cfg, lambda: None


def read_demo_weights(path: Path) -> dict[str, int]:
    return json.loads(path.read_text())["weights"]
