"""Who is acting.

Two kinds of identity reach the one ``approvals.authorize``:

* **asserted** (the CLI, a notebook or the dashboard working on a local
  workspace): ``$JUPYTERHUB_USER`` when present, else the OS user. Anyone who
  can write the store can assert anything, so this is only as strong as the
  file permissions of the workspace (docs/approvals.md);
* **proven** (the release service, ``workbench server``): a JupyterHub sign-in
  or token the hub vouched for, or one of the server's own API tokens. The HTTP
  layer builds an :class:`Identity` from the request and never from headers or
  environment variables the caller controls.
"""
from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field

READ, ACT = "read", "act"
SCOPES = (READ, ACT)


@dataclass(frozen=True)
class Identity:
    """A person or robot acting, how that was established, and what it may do.

    ``groups`` are the JupyterHub groups the hub reported (a ``roles:`` entry
    ``group:NAME`` admits their members); ``via`` is ``local``, ``hub`` or
    ``token``; a ``read`` scope may look but never decide.
    """

    user: str
    groups: frozenset[str] = field(default_factory=frozenset)
    via: str = "local"
    scope: str = ACT
    token_id: int | None = None

    @property
    def may_act(self) -> bool:
        return self.scope == ACT

    def __str__(self) -> str:
        return self.user


def current_user() -> str:
    hub = os.environ.get("JUPYTERHUB_USER", "").strip()
    if hub:
        return hub
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return f"uid-{os.getuid()}"


def local_identity() -> Identity:
    """The asserted identity of a local command (see the module docstring)."""
    return Identity(current_user())


def as_identity(who: "Identity | str | None") -> Identity:
    if isinstance(who, Identity):
        return who
    return Identity(who) if who else local_identity()
