"""Release Workbench: GoCD-style continuous delivery for people who live in JupyterLab."""
from __future__ import annotations

from .client import Client
from .errors import WorkbenchError
from .record import glue, record
from .workspace import Workspace

__version__ = "0.1.0"
__all__ = ["Client", "Workspace", "WorkbenchError", "__version__", "dashboard", "glue", "record"]


def __getattr__(name: str) -> object:
    # the dashboard pulls in ipywidgets and plotly: import it only when asked for
    if name == "dashboard":
        import importlib

        return importlib.import_module(".dashboard", __name__)
    raise AttributeError(name)
