"""The ``nginx`` provider: weighted upstream rendered to a file nginx includes.

On each change: render the upstream block (and, with ``listen:``, a server
block) → replace the file atomically → ``nginx -t`` → reload → confirm by
reading the weights back from the reloaded nginx. A failed check or reload puts
the previous file back, so the old config keeps serving and the step fails.

Two nginx defaults would hide a bad canary from the analysis, so the rendered
config turns both off:

* ``proxy_next_upstream`` (default ``error timeout``) retries a request that
  failed on the canary against the stable stack: the client sees a success and
  the canary's errors vanish. We render ``proxy_next_upstream off``.
* passive health checks (``max_fails=1 fail_timeout=10s`` per server) take a
  failing canary out of rotation for 10 s, quietly shifting its share to the
  stable stack. We render ``max_fails=0`` so the split stays what was asked.

nginx refuses ``weight=0``; a stack at 0% is rendered ``down``.

Options: ``conf`` (the file we own, included in nginx's ``http {}``; required),
``upstream`` (name, default the route's), ``listen`` (also render a server
block proxying to the upstream, with a ``/__workbench/traffic`` location used
to confirm reloads), ``nginx`` (binary), ``prefix`` (``-p``), ``main_conf``
(``-c``), ``error_log`` (``-e``), ``template`` (a file using ``$upstream_block``,
``$server_block``, ``$upstream``, ``$servers``, ``$listen``, ``$weights_json``;
nginx's own ``$vars`` are left alone), ``reload`` (argv instead of
``nginx -s reload``), ``confirm_timeout`` (seconds, default 10).
"""
from __future__ import annotations

import json
import os
import shutil
import string
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Mapping

from ..errors import TrafficError
from .providers import Provider, Weights, register_provider, run_checked
from .routes import Route

HEADER = "# workbench-weights: "
STATUS_PATH = "/__workbench/traffic"

CONFIRM_STREAK = 10  # consecutive answers from the new config...
CONFIRM_SECONDS = 0.1  # ...over at least this long

DEFAULT_TEMPLATE = "$upstream_block\n$server_block"


def _listen(route: Route) -> str | None:
    v = route.options.get("listen")
    return None if v in (None, "") else str(v)


def _status_url(listen: str) -> str:
    host, _, port = listen.rpartition(":")
    if not host or host in ("0.0.0.0", "*", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{port or listen}{STATUS_PATH}"


def render(route: Route, weights: Mapping[str, int], serial: str = "") -> str:
    """The file content for these weights (pure, so it is tested without nginx)."""
    upstream = str(route.options.get("upstream") or route.name)
    lines = []
    for stack, addr in route.stacks.items():
        w = weights.get(stack, 0)
        if w > 0:
            lines.append(f"    server {addr} weight={w} max_fails=0;  # {stack}: {w}%")
        else:
            lines.append(f"    server {addr} down;  # {stack}: 0%")
    servers = "\n".join(lines)
    weights_json = json.dumps({"route": route.name, "weights": dict(weights), "serial": serial}, sort_keys=True)
    upstream_block = f"upstream {upstream} {{\n{servers}\n}}\n"
    listen = _listen(route)
    server_block = ""
    if listen:
        server_block = (
            "server {\n"
            f"    listen {listen};\n"
            f"    location = {STATUS_PATH} {{\n"
            "        default_type application/json;\n"
            f"        return 200 '{weights_json}';\n"
            "    }\n"
            "    location / {\n"
            f"        proxy_pass http://{upstream};\n"
            "        # never retry a failed canary request on the stable stack: its errors must reach the analysis\n"
            "        proxy_next_upstream off;\n"
            "        proxy_set_header Host $host;\n"
            "        add_header X-Workbench-Upstream $upstream_addr always;\n"
            "    }\n"
            "}\n"
        )
    template_path = route.path("template")
    if template_path is not None:
        try:
            template = template_path.read_text()
        except OSError as exc:
            raise TrafficError(f"route {route.name}: cannot read template {template_path}: {exc.strerror}") from None
    else:
        template = DEFAULT_TEMPLATE
    body = string.Template(template).safe_substitute(
        upstream_block=upstream_block, server_block=server_block, upstream=upstream, servers=servers,
        listen=listen or "", weights_json=weights_json, route=route.name,
    )
    head = (f"# Managed by Release Workbench (route {route.name}); rewritten on every traffic change.\n"
            f"{HEADER}{json.dumps(dict(weights), sort_keys=True)}\n")
    return head + body


@register_provider
class NginxProvider(Provider):
    name = "nginx"
    OPTIONS = frozenset({"conf", "upstream", "listen", "nginx", "prefix", "main_conf", "error_log", "template",
                         "reload", "confirm_timeout", "start_if_down"})

    @classmethod
    def check(cls, route: Route) -> list[str]:
        problems = []
        if not isinstance(route.options.get("conf"), str) or not route.options["conf"]:
            problems.append("nginx needs `conf:`, the file it renders (included from nginx's http {} block)")
        reload = route.options.get("reload")
        if reload is not None and not (isinstance(reload, list) and reload):
            problems.append("`reload:` must be a list: the program and its arguments")
        return problems

    # -- nginx invocations -------------------------------------------------------
    def _base(self, route: Route) -> list[str]:
        binary = str(route.options.get("nginx") or shutil.which("nginx") or "/usr/sbin/nginx")
        argv = [binary]
        for key, flag in (("prefix", "-p"), ("main_conf", "-c"), ("error_log", "-e")):
            p = route.path(key)
            if p is not None:
                argv += [flag, str(p) + ("/" if key == "prefix" else "")]
        return argv

    def _test(self, route: Route) -> None:
        run_checked([*self._base(route), "-t", "-q"], f"route {route.name}: nginx -t")

    def _reload(self, route: Route) -> None:
        if route.options.get("start_if_down") and self.unanswered(route) is not None:
            # nginx is not running (a stopped demo, a rebooted laptop): start it on this config instead of
            # failing the stage; it runs as a daemon, like any nginx started by hand
            run_checked(self._base(route), f"route {route.name}: starting nginx (start_if_down)")
            return
        custom = route.options.get("reload")
        argv = [str(a) for a in custom] if custom else [*self._base(route), "-s", "reload"]
        run_checked(argv, f"route {route.name}: nginx reload")

    # -- interface ---------------------------------------------------------------
    def set_weights(self, route: Route, weights: Mapping[str, int]) -> None:
        conf = route.path("conf")
        assert conf is not None
        serial = f"{time.time_ns()}-{os.getpid()}"
        text = render(route, weights, serial)
        old = conf.read_bytes() if conf.exists() else None
        conf.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(conf, text.encode())
        try:
            self._test(route)
        except TrafficError as exc:
            _restore(conf, old)
            raise TrafficError(f"{exc}\nthe previous config was put back and still serves") from None
        try:
            self._reload(route)
            listen = _listen(route)
            if listen:
                self._confirm(route, _status_url(listen), serial)
        except TrafficError as exc:
            _restore(conf, old)
            try:  # best effort: serve the previous file again
                self._reload(route)
            except TrafficError:
                pass
            raise TrafficError(f"{exc}\nthe previous config was put back") from None

    def _confirm(self, route: Route, url: str, serial: str) -> None:
        """Poll the rendered status location until the reloaded workers answer with our serial."""
        deadline = time.monotonic() + float(route.options.get("confirm_timeout", 10))
        last: Any = None
        first_seen: float | None = None
        streak = 0
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    data = json.loads(resp.read())
                last = data.get("weights")
                ok = data.get("serial") == serial
            except (OSError, ValueError, urllib.error.URLError) as exc:
                last, ok = exc, False
            if ok:
                # a new worker answered; old workers may still accept for a moment until the master's
                # QUIT reaches them, so only a run of answers over a short while confirms
                first_seen = first_seen or time.monotonic()
                streak += 1
                if streak >= CONFIRM_STREAK and time.monotonic() - first_seen >= CONFIRM_SECONDS:
                    return
                time.sleep(0.01)
                continue
            first_seen, streak = None, 0
            time.sleep(0.02)
        raise TrafficError(f"route {route.name}: nginx did not serve the new weights within "
                           f"{route.options.get('confirm_timeout', 10)}s (last seen: {last})")

    def unanswered(self, route: Route) -> str | None:
        listen = _listen(route)
        if listen is None:
            return None
        try:
            with urllib.request.urlopen(_status_url(listen), timeout=2):
                return None
        except urllib.error.HTTPError:
            return None  # it answers, if not with a status page
        except OSError as exc:
            return f"nginx does not answer on {listen} ({getattr(exc, 'reason', exc)})"

    def current_weights(self, route: Route) -> Weights | None:
        conf = route.path("conf")
        try:
            text = conf.read_text() if conf is not None else ""
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(HEADER):
                try:
                    return {str(k): int(v) for k, v in json.loads(line[len(HEADER):]).items()}
                except (ValueError, TypeError, AttributeError):
                    return None
        return None


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.workbench-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _restore(path: Path, old: bytes | None) -> None:
    if old is None:
        path.unlink(missing_ok=True)
    else:
        _atomic_write(path, old)
