"""Traffic providers chosen by name, behind one small interface.

A provider moves real traffic of a :class:`Route` to the given weights and
*confirms* it (raising :class:`TrafficError` when it cannot), and reports the
weights it really serves when it can tell. Weights are whole percentages per
stack, summing to 100. Providers keep no state of their own: the store holds
the recorded weights, so any process can drive any route.
"""
from __future__ import annotations

import json
import os
import subprocess
from typing import Any, ClassVar, Mapping

from ..errors import TrafficError
from .routes import Route

Weights = dict[str, int]


class Provider:
    """Base of every provider; subclasses set ``name`` and ``OPTIONS`` and do the two methods."""

    name: ClassVar[str] = "abstract"
    OPTIONS: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def check(cls, route: Route) -> list[str]:
        """Problems of a route's options, found at config load (no side effects)."""
        return []

    def set_weights(self, route: Route, weights: Mapping[str, int]) -> None:
        """Serve ``weights`` and confirm it, or raise TrafficError leaving the old weights serving."""
        raise NotImplementedError

    def current_weights(self, route: Route) -> Weights | None:
        """The weights really served, or None when the provider cannot tell."""
        return None

    def unanswered(self, route: Route) -> str | None:
        """Why the provider does not serve the route right now (e.g. nginx is not running), or None.

        ``current_weights`` may read a file that outlives the server; this asks the server itself,
        so ``workbench traffic`` can say that the weights it shows are recorded, not served."""
        return None


PROVIDERS: dict[str, type[Provider]] = {}


def register_provider(cls: type[Provider]) -> type[Provider]:
    PROVIDERS[cls.name] = cls
    return cls


def provider_class(name: str) -> type[Provider] | None:
    _load_builtin()
    return PROVIDERS.get(name)


def provider_for(route: Route) -> Provider:
    cls = provider_class(route.provider)
    if cls is None:
        raise TrafficError(f"route {route.name}: unknown provider {route.provider!r}")
    return cls()


def _load_builtin() -> None:
    from . import haproxy, nginx  # noqa: F401  (register themselves)


def check_weights(route: Route, weights: Mapping[str, int]) -> Weights:
    """Whole percentages for exactly the route's stacks, summing to 100."""
    out: Weights = {}
    for stack in route.stacks:
        w = weights.get(stack, 0)
        if isinstance(w, bool) or not isinstance(w, int) or not 0 <= w <= 100:
            raise TrafficError(f"route {route.name}: weight of {stack} must be a whole number from 0 to 100, got {w!r}")
        out[stack] = w
    extra = set(weights) - set(route.stacks)
    if extra:
        raise TrafficError(f"route {route.name} has no stack {', '.join(sorted(extra))} (stacks: {', '.join(route.stacks)})")
    if sum(out.values()) != 100:
        raise TrafficError(f"route {route.name}: weights must add up to 100, got {out}")
    return out


def _tail(text: str, lines: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_checked(argv: list[str], what: str, *, env: Mapping[str, str] | None = None, timeout: float = 60,
                cwd: str | None = None) -> str:
    """Run a helper program (in ``cwd``: a route's workspace root, so its relative paths mean the same from
    wherever the workbench was started); its failure becomes a TrafficError quoting its output."""
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                           env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise TrafficError(f"{what}: program not found: {argv[0]}") from None
    except subprocess.TimeoutExpired:
        raise TrafficError(f"{what}: {argv[0]} did not finish within {timeout:g}s") from None
    except OSError as exc:
        raise TrafficError(f"{what}: cannot run {argv[0]}: {exc.strerror or exc}") from None
    if p.returncode != 0:
        out = _tail(p.stderr or p.stdout) or "(no output)"
        raise TrafficError(f"{what} failed (exit {p.returncode}): {out}")
    return p.stdout


@register_provider
class CommandProvider(Provider):
    """The user's own program (salt, docker, a cloud load balancer's CLI).

    Called as ``ARGV... ROUTE STACK=WEIGHT STACK=WEIGHT`` with ``WORKBENCH_ROUTE``,
    ``WORKBENCH_WEIGHTS`` and ``WORKBENCH_STACKS`` (JSON) in its environment;
    exit status 0 means the weights are served. ``read`` (optional) is a
    program printing the served weights as JSON, so drift can be detected.
    """

    name = "command"
    OPTIONS = frozenset({"argv", "read", "timeout"})

    @classmethod
    def check(cls, route: Route) -> list[str]:
        problems = []
        for key in ("argv", "read"):
            v = route.options.get(key)
            if v is None and key == "read":
                continue
            if not (isinstance(v, (list, tuple)) and v and all(isinstance(a, (str, int, float)) for a in v)) \
                    and not (isinstance(v, str) and v.strip()):
                problems.append(f"`{key}:` must be a program and its arguments (a list, or one string)")
        return problems

    @staticmethod
    def _argv(v: Any) -> list[str]:
        import shlex

        return shlex.split(v) if isinstance(v, str) else [str(a) for a in v]

    def _env(self, route: Route, weights: Mapping[str, int] | None = None) -> dict[str, str]:
        env = {"WORKBENCH_ROUTE": route.name, "WORKBENCH_STACKS": json.dumps(dict(route.stacks))}
        if weights is not None:
            env["WORKBENCH_WEIGHTS"] = json.dumps(dict(weights))
        return env

    def set_weights(self, route: Route, weights: Mapping[str, int]) -> None:
        argv = [*self._argv(route.options["argv"]), route.name, *(f"{s}={w}" for s, w in weights.items())]
        run_checked(argv, f"route {route.name}: traffic command", env=self._env(route, weights),
                    timeout=float(route.options.get("timeout", 120)), cwd=str(route.root))

    def current_weights(self, route: Route) -> Weights | None:
        read = route.options.get("read")
        if not read:
            return None
        out = run_checked([*self._argv(read), route.name], f"route {route.name}: read command", env=self._env(route),
                          timeout=float(route.options.get("timeout", 120)), cwd=str(route.root))
        try:
            data = json.loads(out)
            return {str(k): int(v) for k, v in data.items()}
        except (ValueError, TypeError, AttributeError):
            raise TrafficError(f"route {route.name}: read command must print a JSON object of weights, got {out[:200]!r}") from None
