"""Notebook checks for ``workbench validate``: notebooks that are missing, that have no
``parameters`` cell, or that do not declare the parameters a task passes (papermill inspects them)."""
from __future__ import annotations

from typing import Any

from . import VALIDATE_CHECKS


def _notebook_warnings(config: Any, root: Any) -> list[Any]:
    from ..notebooks import notebook_problems

    return notebook_problems(config, root)


def _notebook_inputs(config: Any, root: Any) -> list[str]:
    """The files ``_notebook_warnings`` reads: each notebook a task names (for the validate cache)."""
    return sorted({t.path for p in config.pipelines.values() for s in p.stages for j in s.jobs for t in j.tasks
                   if getattr(t, "kind", None) == "notebook"})


_notebook_warnings.inputs = _notebook_inputs  # type: ignore[attr-defined]
VALIDATE_CHECKS.append(_notebook_warnings)
