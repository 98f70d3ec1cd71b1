"""Release Workbench: GoCD-style continuous delivery for people who live in JupyterLab."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import WorkbenchError
from .record import glue, record

if TYPE_CHECKING:
    from .client import Client
    from .workspace import Workspace

__version__ = "0.1.0"
__all__ = ["Client", "Workspace", "WorkbenchError", "__version__", "dashboard", "glue", "record"]


def __getattr__(name: str) -> object:
    # the dashboard pulls in ipywidgets and plotly, the client httpx, the workspace the config model and PyYAML:
    # import them only when asked for (every CLI command imports this package; a git hook's `notify` to a running
    # serve needs none of them)
    import importlib

    if name == "Workspace":
        return importlib.import_module(".workspace", __name__).Workspace
    if name == "dashboard":
        return importlib.import_module(".dashboard", __name__)
    if name == "Client":
        return importlib.import_module(".client", __name__).Client
    raise AttributeError(name)
