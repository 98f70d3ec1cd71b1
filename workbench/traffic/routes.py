"""Routes: a service, its two stacks and the provider that moves traffic between them.

Our extension to GoCD's YAML (top-level ``routes:``)::

    routes:
      shop:
        provider: nginx            # nginx | haproxy | command (or a registered one)
        stacks:                    # blue/green: the first is live before any rollout
          blue: 127.0.0.1:8001
          green: 127.0.0.1:8002
        conf: /etc/nginx/conf.d/shop.conf   # provider options (see each provider)

Parsing here is pure and works on plain dicts, so the loader's section parser,
tests and the demo all share it. Relative paths in provider options are
resolved against the workspace root when a route is used, never at parse time.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ..config.model import NOWHERE, Loc
from ..errors import ConfigError, NotFound, Problem

if TYPE_CHECKING:
    from ..config.model import Config

COMMON_KEYS = frozenset({"provider", "stacks", "live", "url", "description"})


@dataclass(frozen=True)
class Route:
    """One route. ``stacks`` keeps YAML order; ``live`` serves 100% before the first rollout."""

    name: str
    provider: str
    stacks: Mapping[str, str]
    live: str
    options: Mapping[str, Any] = field(default_factory=dict)
    url: str | None = None  # where clients (and canary analyses) reach the route
    root: str = "."  # workspace root, for relative paths in options
    loc: Loc = NOWHERE

    def path(self, key: str, default: str | None = None) -> Path | None:
        """An option holding a path, resolved against the workspace root."""
        value = self.options.get(key, default)
        if value is None:
            return None
        p = Path(str(value)).expanduser()
        return p if p.is_absolute() else Path(self.root) / p

    def other(self, stack: str) -> str:
        """The stack that is not ``stack`` (blue/green)."""
        for s in self.stacks:
            if s != stack:
                return s
        raise NotFound(f"route {self.name} has no stack besides {stack}")


def parse_route(name: str, raw: Any, loc: Loc = NOWHERE) -> tuple[Route | None, list[str]]:
    """A route from a plain mapping; returns the route (or None) and the problems found."""
    from .providers import PROVIDERS, provider_class

    problems: list[str] = []
    if not isinstance(raw, Mapping):
        return None, [f"route {name} must be a mapping"]
    provider = raw.get("provider")
    if not isinstance(provider, str) or not provider:
        problems.append(f"route {name} needs `provider:` ({', '.join(sorted(PROVIDERS))})")
        return None, problems
    cls = provider_class(provider)
    if cls is None:
        problems.append(f"route {name}: unknown provider {provider!r} (known: {', '.join(sorted(PROVIDERS))})")
        return None, problems
    stacks_raw = raw.get("stacks")
    stacks: dict[str, str] = {}
    if not isinstance(stacks_raw, Mapping) or not stacks_raw:
        problems.append(f"route {name} needs `stacks:` with two stacks, e.g. {{blue: 127.0.0.1:8001, green: 127.0.0.1:8002}}")
    else:
        for k, v in stacks_raw.items():
            if not isinstance(v, (str, int)) or isinstance(v, bool) or str(v).strip() == "":
                problems.append(f"route {name}: stack {k} needs an address (host:port or a server name)")
            else:
                stacks[str(k)] = str(v)
        if len(stacks_raw) != 2:
            problems.append(f"route {name}: exactly two stacks are needed (blue/green), found {len(stacks_raw)}")
    live = raw.get("live")
    if live is None and stacks:
        live = next(iter(stacks))
    if stacks and live not in stacks:
        problems.append(f"route {name}: live stack {live!r} is not one of {', '.join(stacks)}")
    options = {k: v for k, v in raw.items() if k not in COMMON_KEYS}
    unknown = sorted(set(options) - set(cls.OPTIONS))
    for key in unknown:
        problems.append(f"route {name}: unknown option {key!r} for provider {provider} "
                        f"(options: {', '.join(sorted(cls.OPTIONS)) or 'none'})")
    url = raw.get("url")
    route = Route(name=name, provider=provider, stacks=stacks, live=str(live or ""), options=options,
                  url=str(url) if url else None, loc=loc)
    if not problems:
        problems.extend(f"route {name}: {p}" for p in cls.check(route))
    return (None if problems else route), problems


def parse_routes(raw: Any, loc: Loc = NOWHERE) -> dict[str, Route]:
    """The whole ``routes:`` section; raises ConfigError listing every problem."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError([Problem(loc.file, loc.line, loc.col, "routes must be a mapping of route names")])
    out: dict[str, Route] = {}
    problems: list[Problem] = []
    for name, body in raw.items():
        route, errs = parse_route(str(name), body, loc)
        problems.extend(Problem(loc.file, loc.line, loc.col, e) for e in errs)
        if route is not None:
            out[route.name] = route
    if problems:
        raise ConfigError(problems)
    return out


def routes_of(config: "Config", root: str | Path = ".") -> dict[str, Route]:
    """The configured routes (parsed by the loader, or raw dicts in hand-built configs)."""
    from dataclasses import replace

    raw = config.extensions.get("routes") or {}
    if raw and not all(isinstance(r, Route) for r in raw.values()):
        raw = parse_routes({k: v for k, v in raw.items()})
    return {name: replace(r, root=str(root)) for name, r in raw.items()}


def route_of(config: "Config", name: str, root: str | Path = ".") -> Route:
    routes = routes_of(config, root)
    if name not in routes:
        known = ", ".join(sorted(routes)) or "none configured"
        raise NotFound(f"no route named {name!r} (routes: {known})")
    return routes[name]
