"""Immutable rows handed out by the store (never live ORM objects)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..status import Status


@dataclass(frozen=True)
class PipelineRun:
    id: int
    pipeline: str
    counter: int
    label: str
    group_name: str
    trigger: str
    triggered_by: str
    status: Status
    reason: str | None
    revisions: Mapping[str, Any]
    environment: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None

    @property
    def locator(self) -> str:
        return f"{self.pipeline}/{self.counter}"


@dataclass(frozen=True)
class StageRun:
    id: int
    pipeline_run_id: int
    name: str
    position: int
    counter: int
    status: Status
    approval_type: str
    approved_by: str | None
    reason: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None


@dataclass(frozen=True)
class JobRun:
    id: int
    stage_run_id: int
    name: str
    run_index: int
    run_count: int
    status: Status
    agent: str | None
    exit_code: int | None
    reason: str | None
    log_path: str | None
    owner: str | None
    heartbeat_at: float | None
    created_at: float
    started_at: float | None
    finished_at: float | None


@dataclass(frozen=True)
class RunDetail:
    """A pipeline run with its stage runs (all counters) and their job runs."""

    run: PipelineRun
    stages: tuple[StageRun, ...]
    jobs: Mapping[int, tuple[JobRun, ...]] = field(default_factory=dict)  # stage_run_id -> jobs

    def latest_stages(self) -> dict[str, StageRun]:
        """The highest counter of each stage name: what GoCD shows."""
        out: dict[str, StageRun] = {}
        for s in self.stages:
            if s.name not in out or s.counter > out[s.name].counter:
                out[s.name] = s
        return out
