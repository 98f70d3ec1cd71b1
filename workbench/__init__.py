"""Release Workbench: GoCD-style continuous delivery for people who live in JupyterLab."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import WorkbenchError
from .record import glue, record
from .workspace import Workspace

if TYPE_CHECKING:
    from .client import Client

__version__ = "0.1.0"
__all__ = ["Client", "Workspace", "WorkbenchError", "__version__", "dashboard", "glue", "record"]


def __getattr__(name: str) -> object:
    # the dashboard pulls in ipywidgets and plotly, the client httpx: import them only when asked for
    # (every CLI command imports this package; most of them talk to neither)
    import importlib

    if name == "dashboard":
        return importlib.import_module(".dashboard", __name__)
    if name == "Client":
        return importlib.import_module(".client", __name__).Client
    raise AttributeError(name)
