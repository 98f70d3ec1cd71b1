"""Who is acting: the JupyterHub user when present, else the OS user."""
from __future__ import annotations

import getpass
import os


def current_user() -> str:
    hub = os.environ.get("JUPYTERHUB_USER", "").strip()
    if hub:
        return hub
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return f"uid-{os.getuid()}"
