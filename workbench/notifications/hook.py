"""Feeding the outbox: a stage hook that turns a finished stage into outbox rows.

Why a stage hook: it runs in whichever process recorded the stage's result, right
after it was stored; the outbox's unique key makes a second driver's insert a no-op.
Notification problems must never change a stage's outcome, so failures here are
swallowed (the stage is already recorded) — WORK IN PROGRESS: not yet tested with
real runs; roles are not yet expanded (only people), waiting_for_you not yet fed.
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ..store import schema as S
from .events import stage_events, wanted
from .outbox import enqueue


def _previous_status(store: Any, pipeline: str, counter: int, stage: str) -> str | None:
    pr, sr = S.pipeline_runs.c, S.stage_runs.c
    q = (sa.select(sr.status).select_from(S.stage_runs.join(S.pipeline_runs, sr.pipeline_run_id == pr.id))
         .where(pr.pipeline == pipeline, pr.counter < counter, sr.name == stage)
         .order_by(pr.counter.desc(), sr.counter.desc()).limit(1))
    with store.read() as conn:
        return conn.execute(q).scalar()


class NotifyHook:
    def stage_finished(self, engine: Any, run: Any, stage_cfg: Any, stage_run: Any) -> None:
        try:
            conf = engine.ws.config.extensions.get("notifications")
            if not conf or not conf.subscriptions:
                return None
            status = getattr(stage_run.status, "value", str(stage_run.status))
            raised = stage_events(status, _previous_status(engine.store, run.pipeline, run.counter, stage_run.name))
            people = dict(conf.people)
            locator = f"{run.pipeline}/{run.counter}/{stage_run.name}"
            for sub in conf.subscriptions:
                if (sub.pipelines and run.pipeline not in sub.pipelines) or (sub.stages and stage_run.name not in sub.stages):
                    continue
                for event in sorted(wanted(sub.events, raised)):
                    enqueue(engine.store, event=event, stage_run_id=stage_run.id, recipient=people.get(sub.to, sub.to),
                            channel=sub.channel, subject=f"{locator} {event}",
                            body=f"Stage {locator} {status.lower()}" + (f": {stage_run.reason}" if stage_run.reason else ""))
        except Exception:  # noqa: BLE001 - a notification never changes a stage's outcome
            pass
        return None


def _register() -> None:
    from ..hooks import register_stage_hook

    register_stage_hook(NotifyHook())


_register()
