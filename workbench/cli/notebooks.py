"""Notebook checks for ``workbench validate``: notebooks that are missing, that have no
``parameters`` cell, or that do not declare the parameters a task passes (papermill inspects them)."""
from __future__ import annotations

from typing import Any

from . import VALIDATE_CHECKS


def _notebook_warnings(config: Any, root: Any) -> list[Any]:
    from ..notebooks import notebook_problems

    return notebook_problems(config, root)


VALIDATE_CHECKS.append(_notebook_warnings)
