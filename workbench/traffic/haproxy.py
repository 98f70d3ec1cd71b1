"""The ``haproxy`` provider: weights through the runtime API on the stats socket.

``set server BACKEND/SERVER weight N`` changes a running HAProxy without a
reload (weight 0 drains: no new requests, open ones finish); ``get weight``
reads each back to confirm. Weights are set rising ones first, so the backend
never has every server at 0 in between.

Runtime weights are lost when HAProxy reloads (it starts from its config
file). The traffic layer therefore compares the served weights with the
recorded ones and re-applies the recorded weights when they differ (see
``workbench.traffic.reconcile``). With ``state_file:`` the provider also dumps
``show servers state`` after each change, so a config using
``load-server-state-from-file`` keeps them across reloads by itself.

Options: ``socket`` (stats socket path, ``level admin``; required), ``backend``
(default the route's name), ``servers`` (stack → server name; default the stack
names), ``state_file``, ``timeout`` (seconds, default 5).

Mind what hides a bad canary here too: ``option redispatch`` with ``retries``
sends a request whose connection to the canary failed to another server; keep
redispatch off in a backend under canary analysis.
"""
from __future__ import annotations

import os
import re
import socket
from typing import Mapping

from ..errors import TrafficError
from .providers import Provider, Weights, register_provider
from .routes import Route

_WEIGHT = re.compile(r"^\s*(\d+)\s*\(initial\s+(\d+)\)")


@register_provider
class HAProxyProvider(Provider):
    name = "haproxy"
    OPTIONS = frozenset({"socket", "backend", "servers", "state_file", "timeout"})

    @classmethod
    def check(cls, route: Route) -> list[str]:
        problems = []
        if not isinstance(route.options.get("socket"), str) or not route.options["socket"]:
            problems.append("haproxy needs `socket:`, the path of its stats socket (level admin)")
        servers = route.options.get("servers")
        if servers is not None:
            if not isinstance(servers, Mapping):
                problems.append("`servers:` must map each stack to its server name in the backend")
            else:
                missing = [s for s in route.stacks if s not in servers]
                if missing:
                    problems.append(f"`servers:` has no server for stack {', '.join(missing)}")
        return problems

    # -- the runtime API ---------------------------------------------------------
    def command(self, route: Route, cmd: str) -> str:
        """One command over the stats socket (HAProxy closes after answering)."""
        path = route.path("socket")
        timeout = float(route.options.get("timeout", 5))
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(str(path))
                s.sendall(cmd.encode() + b"\n")
                chunks = []
                while True:
                    data = s.recv(65536)
                    if not data:
                        break
                    chunks.append(data)
        except OSError as exc:
            raise TrafficError(f"route {route.name}: cannot talk to HAProxy on {path}: {exc.strerror or exc}") from None
        return b"".join(chunks).decode(errors="replace")

    def _server(self, route: Route, stack: str) -> str:
        backend = str(route.options.get("backend") or route.name)
        servers = route.options.get("servers") or {}
        return f"{backend}/{servers.get(stack, stack)}"

    # -- interface ---------------------------------------------------------------
    def set_weights(self, route: Route, weights: Mapping[str, int]) -> None:
        current = self.current_weights(route) or {}
        # raise weights first, then lower: never all servers at 0 in between
        order = sorted(weights, key=lambda s: weights[s] - current.get(s, 0), reverse=True)
        for stack in order:
            out = self.command(route, f"set server {self._server(route, stack)} weight {int(weights[stack])}").strip()
            if out:
                raise TrafficError(f"route {route.name}: HAProxy refused weight {weights[stack]} for "
                                   f"{self._server(route, stack)}: {out}")
        served = self.current_weights(route)
        if served != dict(weights):
            raise TrafficError(f"route {route.name}: HAProxy serves {served} after setting {dict(weights)}")
        state_file = route.path("state_file")
        if state_file is not None:
            backend = str(route.options.get("backend") or route.name)
            dump = self.command(route, f"show servers state {backend}")
            tmp = state_file.with_name(f".{state_file.name}.{os.getpid()}")
            tmp.write_text(dump)
            os.replace(tmp, state_file)

    def current_weights(self, route: Route) -> Weights | None:
        out: Weights = {}
        for stack in route.stacks:
            text = self.command(route, f"get weight {self._server(route, stack)}")
            m = _WEIGHT.match(text)
            if not m:
                raise TrafficError(f"route {route.name}: HAProxy has no server {self._server(route, stack)}: {text.strip()}")
            out[stack] = int(m.group(1))
        return out
