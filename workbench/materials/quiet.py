"""A no-change ``tick`` without the full config: the scheduling inputs of every pipeline, kept small.

Issue 17: at 10,000 pipelines a ``tick`` with nothing to do cost seconds
beyond its git work, mostly loading the full :class:`~workbench.config.model.Config`
(an 18 MB pickle even from the parse cache) and deciding every pipeline. What
a tick needs to find out that nothing is to be done is much smaller: each
pipeline's git materials (to poll), dependency materials, timer and whether the
workspace has routes or notification subscriptions. :class:`Projection` is
that, built from a full Config after a tick that loaded one, and kept under
``.workbench/cache/tick-<key>.pickle`` with the **same content key as the parse
cache** (:func:`workbench.config.cache.key` over every pipeline file's bytes and
the workbench's code), so it is used only for byte-identical files; any edit
misses it and the tick loads the Config as before.

:func:`quiet_pass` then does the work a full pass would do for this case and
nothing less: it polls **every** git material with ``auto_update`` (the same
:class:`~workbench.materials.resolve.MaterialSource`, one ``ls-remote`` per
repository), reads the latest run of every pipeline and the newest passed run of
every upstream stage, and checks the timers. It answers "nothing to do" only
when all of these hold; otherwise it hands its poll to the full pass (so no
repository is asked twice) and the tick goes on as before:

- no pipeline run is scheduled, running or waiting, and no stage run is
  scheduled or running (those need driving, approvals, or crash recovery);
- no timer is due;
- every pipeline with materials has a latest run, and in it each git material's
  recorded revision (same URL and branch) is the head just polled (a material
  with ``auto_update: false`` counts as unchanged when it has a recorded
  revision: a full pass keeps it there too), and each dependency material's
  recorded upstream run is the newest passed one of that stage;
- the workspace has no config repositories and no routes (their reconciling
  reads the Config), and no notification subscriptions (the tick's sender
  reads the Config; with them it still runs, and loads it).

Under those conditions :meth:`MaterialSource.decide` yields no plan for any
pipeline (nothing advanced over its latest run), so skipping it changes no
outcome. ``tick -v`` and ``--format json`` do not take this path: they report
why each pipeline waits, which needs deciding them all.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import sqlalchemy as sa

from ..config.model import NOWHERE, DependencyMaterial, GitMaterial
from ..status import Status

__all__ = ["Projection", "project", "load_projection", "save_projection", "quiet_pass"]

VERSION = 1
STAGE_COUNTERS = 1 << 20  # reruns of one stage in one run stay far below this


@dataclass(frozen=True)
class DepInput:
    name: str
    pipeline: str
    stage: str


@dataclass(frozen=True)
class PipelineInputs:
    """What deciding one pipeline reads (the ``name``/``materials``/``timer`` that record_errors and timers_due use)."""

    name: str
    git: tuple[GitMaterial, ...]
    deps: tuple[DepInput, ...]
    timer: Any  # the config's Timer or None

    @property
    def materials(self) -> tuple[Any, ...]:
        return (*self.git, *self.deps)


@dataclass(frozen=True)
class Projection:
    key: str
    pipelines: Mapping[str, PipelineInputs]
    blockers: tuple[str, ...]  # why the shortcut never applies to this config ("routes", "notifications")
    version: int = VERSION


def project(cfg: Any, key: str) -> Projection:
    """The scheduling inputs of ``cfg`` (a full Config)."""
    pipes = {}
    shared: dict[Any, Any] = {}  # equal inputs are one object (pickled once): 10,000 pipelines share 500 URLs

    def one(x: Any) -> Any:
        return shared.setdefault(x, x)

    for p in cfg.pipelines.values():
        git = tuple(one(replace(m, loc=NOWHERE)) for m in p.materials if isinstance(m, GitMaterial))
        deps = tuple(one(DepInput(m.name, m.pipeline, m.stage)) for m in p.materials
                     if isinstance(m, DependencyMaterial))
        if len(git) + len(deps) != len(p.materials):  # a material kind this module does not know: never shortcut
            return Projection(key, {}, ("material kinds",))
        timer = one(replace(p.timer, loc=NOWHERE)) if p.timer is not None and hasattr(p.timer, 'loc') else p.timer
        pipes[p.name] = PipelineInputs(p.name, git, deps, timer)
    blockers = []
    if cfg.extensions.get("routes"):
        blockers.append("routes")
    conf = cfg.extensions.get("notifications")
    if conf is not None and getattr(conf, "subscriptions", True):
        blockers.append("notifications")
    return Projection(key, pipes, tuple(blockers))


def _path(ws: Any, key: str) -> Path:
    from ..config.cache import entry_path

    return entry_path(ws.state / "cache", "tick", key)


def load_projection(ws: Any, key: str) -> Projection | None:
    """The kept projection for ``key``, if one is there and trusted (owner-only, like the parse cache)."""
    from ..config.cache import unpickle_kept

    found = unpickle_kept(_path(ws, key))  # missing, truncated, another shape: None, and the tick loads the Config
    if isinstance(found, Projection) and found.key == key and found.version == VERSION:
        return found
    return None


def save_projection(ws: Any, proj: Projection) -> None:
    from ..config.cache import write_kept

    write_kept(_path(ws, proj.key), proj)  # only a shortcut: a read-only workspace goes without


@dataclass
class QuietResult:
    """``nothing``: the pass found nothing to do (``report`` says what it polled); else ``source`` holds its poll
    for the full pass, and ``why`` the first reason it did not answer alone."""

    nothing: bool
    source: Any = None
    polled: int = 0
    material_errors: tuple[str, ...] = ()
    timer_errors: tuple[str, ...] = ()
    why: str = ""


class _Cfg:
    def __init__(self, pipelines: Mapping[str, PipelineInputs]) -> None:
        self.pipelines = pipelines


def _busy(store: Any) -> bool:
    from ..store import schema as S

    pr, sr = S.pipeline_runs, S.stage_runs
    active = [Status.SCHEDULED.value, Status.RUNNING.value, Status.WAITING.value]
    with store.read() as conn:
        if conn.execute(sa.select(pr.c.id).where(pr.c.status.in_(active)).limit(1)).first() is not None:
            return True
        return conn.execute(sa.select(sr.c.id).where(
            sr.c.status.in_([Status.SCHEDULED.value, Status.RUNNING.value])).limit(1)).first() is not None


def _newest_passed(store: Any, keys: set[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, int]]:
    """(pipeline, stage) → (counter, stage counter) of its newest passed stage run."""
    if not keys:
        return {}
    from ..store import schema as S

    pr, sr = S.pipeline_runs, S.stage_runs
    # one grouped read instead of one ordered LIMIT 1 query per key (9,000 keys cost 0.6 s of statement
    # overhead); (counter, stage counter) packed into one integer so that max() orders them as a pair
    packed = sa.func.max(pr.c.counter * STAGE_COUNTERS + sr.c.counter)
    q = (sa.select(pr.c.pipeline, sr.c.name, packed.label("o"))
         .join(sr, sr.c.pipeline_run_id == pr.c.id).where(sr.c.status == Status.PASSED.value)
         .group_by(pr.c.pipeline, sr.c.name))
    with store.read() as conn:
        rows = conn.execute(q).all()
    return {(r[0], r[1]): divmod(int(r[2]), STAGE_COUNTERS) for r in rows if (r[0], r[1]) in keys}


def quiet_pass(ws: Any, proj: Projection, now: float) -> QuietResult:
    """Poll every material, then decide whether any pipeline can have something to do (module docstring)."""
    from .resolve import MaterialSource, _prev
    from .state import record_errors, timers_due

    if proj.blockers:
        return QuietResult(False, why=", ".join(proj.blockers))
    try:
        if ws.settings.config_repos:
            return QuietResult(False, why="config repositories")
    except Exception:  # noqa: BLE001 - a settings problem is the full pass's to report
        return QuietResult(False, why="settings")
    store = ws.store
    source = MaterialSource(ws)
    to_poll = [(p, m) for p in proj.pipelines.values() for m in p.git if m.auto_update]
    source.poll(m for _, m in to_poll)
    polled = len({source.url(m) for _, m in to_poll})
    if _busy(store):
        return QuietResult(False, source, polled, why="active runs")
    due, timer_errors = timers_due(store, _Cfg(proj.pipelines), now)
    if due:
        return QuietResult(False, source, polled, why="timers due")
    todo = [p for p in proj.pipelines.values() if p.git or p.deps]
    latest = store.latest_runs()
    newest = _newest_passed(store, {(d.pipeline, d.stage) for p in todo for d in p.deps})
    for p in todo:
        last = latest.get(p.name)
        if last is None:
            return QuietResult(False, source, polled, why=f"{p.name} never ran")
        for m in p.git:
            prev = source._git_previous(m, last)
            if prev is None:
                return QuietResult(False, source, polled, why=f"{p.name}: {m.name} has no recorded revision")
            head = source.heads.get(source.fingerprint(m))
            if m.auto_update and isinstance(head, str) and head != prev:  # an error: the pipeline waits either way
                return QuietResult(False, source, polled, why=f"{p.name}: {m.name} moved")
        for d in p.deps:
            pm = _prev(last, d.name)
            if not pm or pm.get("kind") != "dependency":
                return QuietResult(False, source, polled, why=f"{p.name}: {d.name} has no recorded upstream run")
            order = (int(pm.get("counter", 0)), int(pm.get("stage_counter", 0)))
            if newest.get((d.pipeline, d.stage)) != order:
                return QuietResult(False, source, polled, why=f"{p.name}: {d.name} has another upstream run")
    errors = record_errors(store, source, to_poll, now)
    return QuietResult(True, source, polled, tuple(errors), tuple(timer_errors))
