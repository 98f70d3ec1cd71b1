"""Materials: git repositories and upstream pipelines, and what they trigger.

Importing this feature registers, at import time:

* its tables (material revisions, commits, provenance, ancestry, material
  errors, timers, cancel requests, unlocks) as the ``materials-1`` migration,
  and the frames ``commits``, ``material_revisions``, ``provenance`` and
  ``material_errors``;
* the job hook that checks out each git material at the run's exact revision
  into the job's folder, from a shared bare mirror per URL under
  ``.workbench/mirrors/`` (``destination`` and ``shallow_clone`` honoured);
* the engine's trigger planner, so that every trigger (``workbench run``,
  ``trigger``, a notebook's ``ws.run``) records the revisions it was built from
  and refuses a locked pipeline; and the source of cancel requests.

The scheduling pass itself (polling, fan-in, timers, crash recovery) lives
in :mod:`workbench.triggering`.
"""
from __future__ import annotations

from typing import Any, Mapping

from .. import engine as _engine
from ..hooks import register_job_hook
from . import tables  # noqa: F401  (registers the migration and frames)
from .checkout import HOOK
from .controls import check_unlocked, pending_cancels
from .plans import MaterialRev, TriggerPlan
from .resolve import Decision, MaterialSource

__all__ = ["Decision", "MaterialRev", "MaterialSource", "TriggerPlan", "plan_trigger", "open_material_errors"]


def latest_run(store: Any, pipeline: str) -> Any:
    from ..errors import NotFound

    try:
        return store.get_pipeline_run(pipeline)
    except NotFound:
        return None


def plan_trigger(engine: Any, pipeline: Any, requested: Mapping[str, str] | None, trigger: str) -> TriggerPlan | None:
    """The engine's planner for triggers made without a plan (manual, API): pause and lock checks, then revisions."""
    from ..pauses import check_not_paused

    check_not_paused(engine.store, pipeline.name)
    if pipeline.lock_behavior != "none":
        check_unlocked(engine.store, pipeline)
    if not pipeline.materials:
        return None
    source = MaterialSource(engine.ws)
    return source.plan_manual(pipeline, latest_run(engine.store, pipeline.name), requested)


def open_material_errors(store: Any) -> dict[str, list[dict[str, Any]]]:
    """Unresolved material errors per pipeline, for ``workbench status``."""
    import sqlalchemy as sa

    from .tables import material_errors as e

    with store.read() as conn:
        rows = conn.execute(
            sa.select(e.c.pipeline, e.c.material, e.c.url, e.c.message, e.c.first_seen, e.c.last_seen)
            .where(e.c.resolved_at.is_(None)).order_by(e.c.id)
        ).mappings().all()
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["pipeline"], []).append(dict(r))
    return out


register_job_hook(HOOK)
_engine.register_trigger_planner(plan_trigger)
_engine.register_cancel_source(pending_cancels)
