"""The release dashboard: ``workbench.dashboard.dashboard(ws)`` in a notebook, ``workbench dashboard`` in Voila.

Data preparation is pure (:mod:`.data`, :mod:`.charts`); the widgets
(:mod:`.widgets`, ipywidgets 8 and plotly FigureWidgets, which need
``anywidget``) only display it and call :mod:`.actions`, which goes through
the same authorization as the CLI. Importing this package is cheap: the
widget libraries load on the first call.
"""
from __future__ import annotations

from typing import Any


def dashboard(ws: Any = None, **options: Any) -> Any:
    """The dashboard widget of ``ws`` (a Workspace or a path; default: the current workspace).

    Options: ``user`` (default the current user), ``interval`` (seconds
    between live refreshes: ``$WORKBENCH_DASHBOARD_INTERVAL``, else 2; a refresh
    with nothing written costs a millisecond), ``runs_per_pipeline`` (3), ``autostart``
    (refresh in a background thread, True), ``drive`` (continue an approved
    run from here, True), ``charts_on_start`` (True).
    """
    from ..errors import UsageError
    from ..workspace import Workspace

    import os

    if "interval" not in options and os.environ.get("WORKBENCH_DASHBOARD_INTERVAL"):
        try:
            options["interval"] = float(os.environ["WORKBENCH_DASHBOARD_INTERVAL"])
        except ValueError:
            raise UsageError("$WORKBENCH_DASHBOARD_INTERVAL must be a number of seconds "
                             f"(got {os.environ['WORKBENCH_DASHBOARD_INTERVAL']!r})") from None
    if ws is None or isinstance(ws, str) or hasattr(ws, "__fspath__"):
        ws = Workspace.open(ws)
    try:
        from .widgets import Dashboard
    except ImportError as exc:
        raise UsageError(f"the dashboard needs the `dashboard` extra (ipywidgets, plotly, anywidget): {exc}") from None
    return Dashboard(ws, **options)


__all__ = ["dashboard"]


class _CallableModule(__import__("types").ModuleType):
    """``workbench.dashboard(ws)`` works even once this package has replaced a function of that name
    on ``workbench`` (importing a submodule sets the parent's attribute to the module)."""

    def __call__(self, ws: Any = None, **options: Any) -> Any:
        return dashboard(ws, **options)


__import__("sys").modules[__name__].__class__ = _CallableModule
