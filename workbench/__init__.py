"""Release Workbench: GoCD-style continuous delivery for people who live in JupyterLab."""
from __future__ import annotations

from .errors import WorkbenchError
from .record import glue, record
from .workspace import Workspace

__version__ = "0.1.0"
__all__ = ["Workspace", "WorkbenchError", "__version__", "glue", "record"]
