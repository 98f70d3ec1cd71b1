"""Executors chosen by name: ``local`` (default) and, when installed, ``dask``."""
from __future__ import annotations

from .base import EXECUTORS, Executor, JobOutcome, JobSpec, make_executor, register_executor
from .local import LocalExecutor

register_executor("local", LocalExecutor)

__all__ = ["EXECUTORS", "Executor", "JobOutcome", "JobSpec", "LocalExecutor", "make_executor", "register_executor"]
