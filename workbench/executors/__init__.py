"""Executors chosen by name: ``local`` (default) and, when installed, ``dask``."""
from __future__ import annotations

from .base import EXECUTORS, Executor, JobOutcome, JobSpec, make_executor, register_executor
from .local import LocalExecutor

register_executor("local", LocalExecutor)


def _dask(**options: object) -> Executor:
    """``dask://...``: imported only when asked for, so ``distributed`` stays an optional extra."""
    try:
        from .dask import DaskExecutor
    except ImportError as exc:
        from ..errors import UsageError

        raise UsageError(f"the dask executor needs Dask distributed ({exc}): pip install 'release-workbench[dask]'") from None
    return DaskExecutor(**options)  # type: ignore[arg-type]


register_executor("dask", _dask)

__all__ = ["EXECUTORS", "Executor", "JobOutcome", "JobSpec", "LocalExecutor", "make_executor", "register_executor"]
