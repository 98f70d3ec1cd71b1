"""Scheduling passes: what starts pipelines by themselves, from cron, a loop, or a git hook.

One pass (:meth:`Scheduler.decide`) recovers jobs whose process died, polls
the git materials, and triggers what changed: batched or one run per commit,
dependency materials when their upstream stage passed, fan-in, timers, pipeline
locks. It holds a file lock on the workspace so overlapping passes (cron firing
while the last tick still runs) take turns, and every automatic run is created
with a revision key the store keeps unique per pipeline: even without the lock,
one revision set never yields two runs. Driving the runs happens outside the
lock, in threads, with the compare-and-set stage claims of the engine.

``tick`` does passes until nothing is left to do here (meant for cron);
``serve`` loops, woken by its interval, by a passed stage (so downstream
pipelines follow at once) and by ``notify`` (a git post-receive hook).

A *full* pass (the first of a tick or serve, serve's interval, ``notify``,
a forced poll, a timer due, a recovered crash, a reloaded config) decides every
pipeline. A pass woken only by this process's own events decides only the
pipelines those events can have changed (:func:`targets`): the downstreams of
a stage that passed, and a locked pipeline whose run finished. Nothing else can
have moved for them: their git materials are polled by full passes only, and
another process's runs are seen by the next full pass, as before. This keeps
an upstream-to-downstream step independent of the workspace's size (deciding
every pipeline on every passed stage made a chain of N pipelines cost O(N²);
benchmarks/README.md has the profile).
"""
from __future__ import annotations

import os
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from filelock import FileLock, Timeout

from .config.model import DependencyMaterial, GitMaterial, Pipeline
from .errors import UsageError, WorkbenchError
from .status import Status

__all__ = ["Scheduler", "TickReport", "tick", "serve", "notify", "serve_running"]

LOCK_TIMEOUT = 60.0  # a pass waits this long for an overlapping one to finish deciding
DRIVE_THREADS = 16
WATCH_SECONDS = 0.02  # how often serve looks for notifications
DRIVE_GRACE = 5.0  # a run another process moved this recently is that process's to drive
DECIDE_THREADS = 8  # pipelines decided at once in a full pass (git history reads)


@dataclass
class TickReport:
    """What a scheduling pass (or a whole tick) did, for the terminal and for tests."""

    recovered: list[str] = field(default_factory=list)
    polled: int = 0
    material_errors: list[str] = field(default_factory=list)
    triggered: list[str] = field(default_factory=list)
    duplicates: int = 0
    waiting: list[str] = field(default_factory=list)
    timers: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    config_repos: list[str] = field(default_factory=list)  # what polling the config repositories found
    passes: int = 0
    seconds: float = 0.0

    def lines(self, *, verbose: bool = False) -> list[str]:
        """One line per event; nothing when nothing happened (cron mails only non-empty output)."""
        out = [f"recovered {r}" for r in self.recovered]
        out += [f"material error: {e}" for e in self.material_errors]
        out += self.config_repos
        out += [f"timer: {t}" for t in self.timers]
        out += [f"triggered {t}" for t in self.triggered]
        out += self.finished
        out += [f"error: {e}" for e in self.errors]
        if verbose:
            out += [f"waiting: {w}" for w in self.waiting]
            out.append(f"{self.passes} pass(es), {self.polled} repositories polled, {self.duplicates} duplicate "
                       f"trigger(s) refused, {self.seconds:.2f}s")
        return out

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def dependency_index(cfg: Any) -> dict[tuple[str, str], tuple[str, ...]]:
    """``(upstream pipeline, stage)`` → the pipelines with a dependency material on it, in config order."""
    index: dict[tuple[str, str], list[str]] = {}
    for p in cfg.pipelines.values():
        for m in p.materials:
            if isinstance(m, DependencyMaterial):
                names = index.setdefault((m.pipeline, m.stage), [])
                if p.name not in names:
                    names.append(p.name)
    return {k: tuple(v) for k, v in index.items()}


def targets(cfg: Any, passed: Iterable[tuple[str, str]], finished: Iterable[str],
            index: Mapping[tuple[str, str], Sequence[str]] | None = None) -> list[str]:
    """The pipelines a pass woken by these events must decide, in config order.

    ``passed``: ``(pipeline, stage)`` of stages that passed here since the
    last pass; their downstreams may trigger (fan-in included: a downstream of
    several upstreams is decided whole, with every one of its materials).
    ``finished``: pipelines whose run finished here; one with a lock
    (``lock_behavior``) may now run the revisions that waited for it.
    """
    index = dependency_index(cfg) if index is None else index
    wanted = {d for key in passed for d in index.get(key, ())}
    wanted |= {name for name in finished if name in cfg.pipelines and cfg.pipelines[name].lock_behavior != "none"}
    return [name for name in cfg.pipelines if name in wanted]


def _as_clock(now: Any) -> Callable[[], float]:
    if now is None:
        return time.time
    value = now.timestamp() if hasattr(now, "timestamp") else float(now)
    return lambda: value


class Scheduler:
    """Scheduling passes and run driving for one workspace (one per tick or serve process)."""

    def __init__(self, ws: Any, *, now: Any = None, lock: bool = True, executor: Any = None,
                 max_parallel: int | None = None, listener: Callable[..., None] | None = None,
                 stale_after: float | None = None, prepolled: Any = None) -> None:
        from .materials.recovery import STALE_AFTER

        self.ws = ws
        self.clock = _as_clock(now)
        self.use_lock = lock
        self.stale_after = STALE_AFTER if stale_after is None else stale_after
        self.report = TickReport()
        self.user_listener = listener
        self.engine = ws.engine(executor=executor, max_parallel=max_parallel, listener=self._on_event)
        self._pool = ThreadPoolExecutor(max_workers=DRIVE_THREADS, thread_name_prefix="wb-drive")
        self._drives: dict[int, Future[Any]] = {}
        self._mine: set[int] = set()  # runs this scheduler created: driven at once
        self._was_waiting: set[int] = set()  # runs already waiting for approval: not news
        self._wake = threading.Event()
        self._stopping = threading.Event()  # cancel(): a stop signal; no further passes
        self._progress = False
        self._forced: set[str] = set()
        self._forced_all = False
        self._passed: set[tuple[str, str]] = set()  # (pipeline, stage) passed here since the last pass
        self._finished: set[str] = set()  # pipelines whose run finished here since the last pass
        self._full_due = True  # the first pass decides everything, whatever it was asked
        self._mutex = threading.Lock()
        self._config_sig: Any = None
        self._index: tuple[Any, dict[tuple[str, str], tuple[str, ...]]] | None = None
        self._decide_pool: ThreadPoolExecutor | None = None  # one per scheduler, not one per pass
        self._last_full = False  # whether the last pass decided everything (then drive_all follows)
        self._prepolled = prepolled  # a MaterialSource that already polled for the first pass (quiet_pass)

    # -- lifecycle -------------------------------------------------------------
    def __enter__(self) -> "Scheduler":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._decide_pool is not None:
            self._decide_pool.shutdown(wait=True)
        self.engine.close()

    def _on_event(self, event: str, **data: Any) -> None:
        if event == "stage_finished" and data["stage"].status == Status.PASSED:
            with self._mutex:
                self._passed.add((data["run"].pipeline, data["stage"].name))
            self._poke()  # a downstream pipeline may follow now
        elif event == "run_waiting" and data["run"].id not in self._was_waiting:
            self._was_waiting.add(data["run"].id)
            self.report.finished.append(f"{data['run'].locator} waits for approval of stage {data['stage']}")
        elif event == "run_finished":
            run = data["run"]
            self.report.finished.append(f"{run.locator} {run.status}" + (f": {run.reason}" if run.reason else ""))
            with self._mutex:
                self._finished.add(run.pipeline)
            self._poke()  # a locked pipeline may run now
        if self.user_listener is not None:
            self.user_listener(event, **data)

    def _poke(self) -> None:
        self._progress = True
        self._wake.set()

    def drive_soon(self, run_id: int) -> None:
        """Drive ``run_id`` now in this scheduler's threads (the server, after an approve or a trigger)."""
        with self._mutex:
            self._mine.add(run_id)
            running = run_id in self._drives and not self._drives[run_id].done()
            if not running:
                self._drives[run_id] = self._pool.submit(self._drive, run_id)

    def cancel_run(self, run_id: int) -> None:
        """Stop a run this scheduler's engine drives (its jobs are killed, on_cancel runs)."""
        self.engine.cancel_run(run_id)

    def cancel(self, reason: str | None = None) -> None:
        """The graceful stop of a tick, serve or server (a stop signal): no more passes, every run driven
        here is cancelled with ``reason`` (jobs' groups stopped, on_cancel run), and the loop returns once
        the drivers have recorded it."""
        self._stopping.set()
        self.engine.cancel(reason)
        self._wake.set()

    def kill_now(self, why: str | None = None) -> list[int]:
        """The immediate stop (a second signal): the jobs' process groups are killed at once; the drivers
        still record the runs as cancelled."""
        self._stopping.set()
        killed = self.engine.kill_now(why)
        self._wake.set()
        return killed

    def force(self, keys: Iterable[str] | None) -> None:
        """Poll these materials (fingerprints, URLs or names; None = all) on the next pass, auto_update or not."""
        with self._mutex:
            if keys is None:
                self._forced_all = True
            else:
                self._forced.update(keys)
        self._wake.set()

    # -- one pass ------------------------------------------------------------------
    def decide(self, *, poll_all: bool = True) -> list[Any]:
        """Recover, poll, trigger; returns the runs created. Holds the workspace's scheduler lock.

        Without ``poll_all`` (nor a forced poll, nor a first pass), the pass
        answers this process's events only, and when they concern no pipeline
        (a stage nobody depends on passed, a run without a lock finished) it
        does nothing at all: no lock, no store read, no pass counted.
        """
        with self._mutex:  # the events this pass answers; later ones wake the next pass
            passed, finished = self._passed, self._finished
            self._passed, self._finished = set(), set()
            event_only = not (poll_all or self._full_due or self._forced or self._forced_all)
        self._last_full = False
        if event_only and not targets(self.ws.config, passed, finished, self._dependency_index(self.ws.config)):
            return []
        try:
            if not self.use_lock:
                return self._decide_pass(poll_all, passed, finished)
            lock = FileLock(str(self.ws.state / "scheduler.lock"), timeout=LOCK_TIMEOUT)
            self.ws.state.mkdir(parents=True, exist_ok=True)
            try:
                with lock:
                    return self._decide_pass(poll_all, passed, finished)
            except Timeout:
                self.report.errors.append(
                    f"another scheduling pass held the lock for {LOCK_TIMEOUT:.0f}s; skipped this one")
                self._restore(passed, finished)
                return []
        except BaseException:
            self._restore(passed, finished)  # not answered (e.g. the store was busy): the next pass answers them
            raise

    def _restore(self, passed: set[tuple[str, str]], finished: set[str]) -> None:
        with self._mutex:
            self._passed |= passed
            self._finished |= finished

    def _decide_pass(self, poll_all: bool, passed: set[tuple[str, str]], finished: set[str]) -> list[Any]:
        from .materials import MaterialSource
        from .materials.recovery import recover_orphans
        from .materials.state import record_errors, save_timers, timers_due

        self.report.passes += 1
        now = self.clock()
        store = self.ws.store
        with self._mutex:
            asked, forced_all = set(self._forced), self._forced_all
            self._forced.clear()
            self._forced_all = False
        repos_changed = False
        if poll_all or forced_all or asked or self._full_due:
            repos_changed = self._refresh_config_repos(None if (poll_all or forced_all or self._full_due) else asked)
        sig = self._config_sig
        cfg = self._config(reload=repos_changed)
        reloaded = (sig is not None and sig != self._config_sig) or repos_changed
        forced: set[str] = set()
        for what in asked:  # names or URLs as `notify` got them; resolved here, where the config is loaded
            try:
                forced.update(material_keys(self.ws, what) or ())
            except UsageError as exc:
                self.report.errors.append(f"notify: {exc}")
        source, self._prepolled = self._prepolled or MaterialSource(self.ws), None
        timer_due, timer_errors = timers_due(store, cfg, now)
        self.report.errors += timer_errors
        full = poll_all or forced_all or bool(asked) or bool(timer_due) or reloaded or self._full_due
        self._last_full = full
        if full:
            # processes that died: a full pass's business (this process's own events come from live runs)
            orphans = recover_orphans(store, now=now, stale_after=self.stale_after)
            for r in orphans:
                self.report.recovered.append(f"{r.locator}: {r.reason}")
            if poll_all or orphans:  # each tick, serve's full passes, and right after a crash was cleaned up
                self.report.recovered += _reconcile_traffic(self.ws)
            to_poll = [
                (p, m) for p in cfg.pipelines.values() for m in p.materials if isinstance(m, GitMaterial)
                and ((poll_all and m.auto_update) or forced_all or p.name in timer_due or _is_forced(source, m, forced))
            ]
            source.poll(m for _, m in to_poll)  # what the quiet pass polled is not asked again (MaterialSource.poll)
            self.report.polled += len({source.url(m) for _, m in to_poll})
            if to_poll:
                self.report.material_errors += record_errors(store, source, to_poll, now)
            todo = [p for p in cfg.pipelines.values() if p.materials or p.name in timer_due]  # a timer needs no material
            if asked and not (poll_all or forced_all or timer_due or reloaded or self._full_due):
                # only `notify`: what it polled is all that can have moved (the other pipelines' inputs were
                # not looked at, and their dependents follow from stage events); deciding them all again
                # made a notify to a serve of 3,000 pipelines take seconds
                polled = {p.name for p, _ in to_poll}
                todo = [p for p in todo if p.name in polled]
                latest = store.latest_runs([p.name for p in todo]) if todo else {}
            else:
                latest = store.latest_runs()
        else:  # woken by this process's events only: what they can have changed (module docstring)
            names = targets(cfg, passed, finished, self._dependency_index(cfg))
            todo = [cfg.pipelines[n] for n in names if cfg.pipelines[n].materials]
            latest = store.latest_runs([p.name for p in todo]) if todo else {}
        try:
            source.prefetch_upstreams(todo)  # one read for every dependency material of the pass
        except WorkbenchError:
            pass  # each pipeline reads its own below, and a failure is reported against it

        from .materials.controls import pipeline_locks
        from .pauses import current_pauses

        paused = current_pauses(store) if todo else {}  # one read for the pass, not one per pipeline
        locks = pipeline_locks(store, todo)  # likewise: the lock holders of every locking pipeline

        def plan(p: Pipeline) -> tuple[list[Any], list[str], list[str], str | None]:
            try:
                return (*self._plans(p, source, latest.get(p.name), timer_due.get(p.name), paused.get(p.name),
                                     locks.get(p.name)), None)
            except (WorkbenchError, OSError) as exc:  # one broken pipeline must not stop the others
                return [], [], [], f"{p.name}: {exc}"

        # deciding reads git history and the store: those pipelines in parallel; creating runs: in config order
        reads = sum(1 for p in todo if p.lock_behavior != "none" or any(isinstance(m, GitMaterial) for m in p.materials))
        if reads > 4:
            decided = list(self._decider().map(plan, todo))
        else:
            decided = [plan(p) for p in todo]
        created = []
        for p, (plans, waiting, fired, error) in zip(todo, decided, strict=True):
            self.report.waiting += waiting
            self.report.timers += fired
            if error:
                self.report.errors.append(error)
            for pl in plans:
                run = self._trigger(p, pl)
                if run is not None:
                    created.append(run)
        if timer_due:
            save_timers(store, timer_due, now)
        if full:
            self._full_due = False
        return created

    def _decider(self) -> ThreadPoolExecutor:
        if self._decide_pool is None:
            self._decide_pool = ThreadPoolExecutor(max_workers=DECIDE_THREADS, thread_name_prefix="wb-decide")
        return self._decide_pool

    def _dependency_index(self, cfg: Any) -> dict[tuple[str, str], tuple[str, ...]]:
        """:func:`dependency_index` of the current config, rebuilt when the config was reloaded."""
        if self._index is None or self._index[0] is not cfg:
            self._index = (cfg, dependency_index(cfg))
        return self._index[1]

    def _plans(self, p: Pipeline, source: Any, last: Any, fire: float | None, held: Any, holder: int | None
               ) -> tuple[list[Any], list[str], list[str]]:
        """What to trigger for ``p`` now: (plans, why it waits, timer notes).

        ``held``: its pause, if any; ``holder``: the counter of the run holding its lock, if any
        (both read once for the whole pass).
        """
        if held is not None:  # GoCD: a paused pipeline is never triggered automatically
            return [], [f"{p.name}: {held.describe()}"], []
        if holder is not None:
            return [], [f"{p.name}: locked by {p.name}/{holder} ({p.lock_behavior})"], []
        decision = source.decide(p, last)
        plans = list(decision.plans)
        waiting = [f"{p.name}: {decision.waiting}"] if decision.waiting else []
        fired = []
        if fire is not None and p.timer is not None:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(fire))
            if plans:
                plans = [_replace(pl, trigger="timer", reason=f"timer {p.timer.spec} at {when}; {pl.reason}")
                         for pl in plans]
            elif not p.timer.only_on_changes and not decision.waiting:
                manual = source.plan_manual(p, last)
                plans = [_replace(manual, trigger="timer", reason=f"timer {p.timer.spec} at {when}",
                                  key_extra=f"timer@{fire:.0f}")]
            else:
                fired.append(f"{p.name}: fired at {when}, nothing changed (only_on_changes)")
        if p.lock_behavior != "none":
            plans = plans[:1]  # a locked pipeline runs one revision set at a time
        return plans, waiting, fired

    def _trigger(self, p: Pipeline, plan: Any) -> Any:
        from .store import DuplicateTrigger

        try:
            run = self.engine.trigger(p.name, trigger=plan.trigger, triggered_by=_who(plan), plan=plan,
                                      revision_key=plan.revision_key)
        except DuplicateTrigger:
            self.report.duplicates += 1
            return None
        self.report.triggered.append(f"{run.locator} ({plan.describe()})")
        self._mine.add(run.id)
        return run

    # -- config, timers, errors ---------------------------------------------------
    def _refresh_config_repos(self, asked: set[str] | None) -> bool:
        """Poll the config repositories (``asked``: those `notify` named); True when one moved to a new good revision."""
        try:
            repos = self.ws.settings.config_repos
        except WorkbenchError:
            return False
        if not repos:
            return False
        from .configrepos.compose import refresh, repo_ids_for, stale

        only = None if asked is None else sorted({rid for what in asked for rid in repo_ids_for(self.ws, what)})
        if only == []:
            return False
        try:
            lines, changed = refresh(self.ws, only, now=self.clock())
            changed = changed or stale(self.ws)  # new problems to show, or another process moved a repository on
        except WorkbenchError as exc:
            self.report.errors.append(f"config repositories: {exc}")
            return False
        self.report.config_repos += lines
        return changed

    def _config(self, reload: bool = False) -> Any:
        """The config, reloaded when a pipeline file changed (a long-running serve picks up edits)."""
        folder = self.ws.pipelines_dir
        try:
            sig = tuple(sorted((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in folder.iterdir()))
        except OSError:
            sig = None
        if reload or (self._config_sig is not None and sig != self._config_sig):
            old = self.ws.config
            try:
                self.ws.reload()
            except WorkbenchError as exc:  # a half-saved file must not stop a serve loop: keep the last good config
                self.ws.__dict__["config"] = old
                self.report.errors.append(f"pipeline files not reloaded: {exc}")
        self._config_sig = sig
        return self.ws.config

    # -- driving -----------------------------------------------------------------
    def drive_all(self) -> None:
        """Drive every active run this process is not already driving (scheduled, approved, waiting).

        A run another process is visibly driving (it changed in the last
        DRIVE_GRACE seconds: `workbench run`, `trigger`, `rerun` in a terminal)
        is left to it, so that its user sees it through; a run nobody moves
        (an approved stage, a driver that died) is picked up.
        """
        store = self.ws.store
        names = set(self.ws.config.pipelines)
        active = store.pipeline_runs(statuses=[Status.SCHEDULED, Status.RUNNING, Status.WAITING])
        # a run that waited before is not news; one our own driver is stopping at an approval right now
        # is (its driver reports it: marking it here first lost that line when a pass was quick)
        driving = {k for k, f in self._drives.items() if not f.done()}
        self._was_waiting.update(r.id for r in active if r.status == Status.WAITING and r.id not in driving)
        todo = [r for r in reversed(active) if r.pipeline in names  # oldest first
                and not (r.id in self._drives and not self._drives[r.id].done())]
        others = [r.id for r in todo if r.id not in self._mine]
        from .materials.recovery import recently_moved

        recent = recently_moved(store, others, time.time() - DRIVE_GRACE) if others else set()
        for run in todo:
            if run.id in recent:
                continue
            self._drives[run.id] = self._pool.submit(self._drive, run.id)

    def _drive(self, run_id: int) -> None:
        try:
            self.engine.drive(run_id)
        except WorkbenchError as exc:
            self.report.errors.append(f"run {run_id}: {exc}")
        finally:
            self._wake.set()

    def _pass(self, poll_all: bool) -> None:
        """One pass of a loop, then driving: the runs it created at once, and after a full pass every
        active run nobody drives (a pass answering this process's events has nothing else to drive)."""
        if self._stopping.is_set():  # a stop signal came: trigger nothing more
            return
        for run in self.decide(poll_all=poll_all):
            if run.id not in self._drives or self._drives[run.id].done():
                self._drives[run.id] = self._pool.submit(self._drive, run.id)
        if self._last_full:
            self.drive_all()

    def busy(self) -> bool:
        self._drives = {k: f for k, f in self._drives.items() if not f.done()}
        return bool(self._drives)

    # -- loops -------------------------------------------------------------------
    def run_until_idle(self, *, max_passes: int | None = None,
                       events: tuple[Iterable[tuple[str, str]], Iterable[str]] | None = None) -> TickReport:
        """A tick: passes and driving until no run is in progress here and nothing new triggers.

        ``max_passes`` (default: 100, or 4 per pipeline in a larger workspace: a
        chain of N pipelines takes about N passes) bounds the passes; past it
        the tick reports an error and only finishes the runs it drives.
        ``events`` (``(passed (pipeline, stage) pairs, finished pipelines)``) makes
        it answer those alone, as if this process had seen them: what ``workbench
        run`` finished triggers downstream, and their downstreams in turn, without
        polling any material or starting anything else that happens to be due.
        """
        started = time.monotonic()
        if max_passes is None:
            max_passes = max(100, 4 * len(self.ws.config.pipelines))
        first = True
        if events is not None:
            passed, finished = events
            with self._mutex:
                self._passed |= set(passed)
                self._finished |= set(finished)
            self._full_due = False
            first = False
        try:
            self._progress = True
            while True:
                if self._stopping.is_set():  # a stop signal: let the drivers record the cancel, decide nothing
                    self._progress = False
                    if not self.busy():
                        break
                    self._wake.wait(1.0)
                    self._wake.clear()
                    continue
                if self._progress and self.report.passes >= max_passes:
                    self._progress = False
                    if not self.report.errors or not self.report.errors[-1].startswith("stopped deciding"):
                        self.report.errors.append(f"stopped deciding after {max_passes} scheduling passes")
                if self._progress:
                    self._progress = False
                    self._pass(poll_all=first)
                    first = False
                if not self.busy() and not self._progress:
                    break
                self._wake.wait(1.0)
                self._wake.clear()
        except KeyboardInterrupt:
            self.engine.cancel()
            self._pool.shutdown(wait=True)
            raise
        finally:
            self.report.seconds = time.monotonic() - started
        return self.report

    def serve_forever(self, interval: float, *, on_pass: Callable[[TickReport], None] | None = None,
                      stop: threading.Event | None = None,
                      on_exit: Callable[[TickReport], None] | None = None) -> None:
        """Loop until Ctrl-C (or ``stop``, or :meth:`cancel`): a full pass every ``interval`` s, sooner when woken.

        ``on_pass`` gets what each pass did; ``on_exit`` what happened on the way
        out (the runs cancelled then). Not one more ``on_pass``: that would count
        as a pass for the webhook confirmations, which must see real polls only.
        """
        from .hooks import SERVICE_LOOPS

        stop = stop or threading.Event()
        watcher = threading.Thread(target=self._watch_notifications, args=(stop,), name="wb-notify", daemon=True)
        watcher.start()
        loops = [threading.Thread(target=loop, args=(self.ws, stop), name=f"wb-loop-{i}", daemon=True)
                 for i, loop in enumerate(SERVICE_LOOPS)]  # e.g. the notification sender
        for t in loops:
            t.start()
        next_full = 0.0
        try:
            while not stop.is_set() and not self._stopping.is_set():
                full = time.monotonic() >= next_full
                forced = bool(self._forced or self._forced_all)
                if full or forced or self._progress:
                    self._progress = False
                    mark = _mark(self.report)
                    try:
                        self._pass(poll_all=full)
                    except WorkbenchError as exc:  # e.g. the store is busy: try again on the next pass
                        self.report.errors.append(str(exc))
                    if full:
                        next_full = time.monotonic() + interval
                    if on_pass is not None:
                        on_pass(_since(self.report, mark))
                self._wake.wait(max(0.0, min(interval, next_full - time.monotonic())))
                self._wake.clear()
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            mark = _mark(self.report)
            self.engine.cancel()  # jobs still running are cancelled (on_cancel runs), not orphaned
            self._pool.shutdown(wait=True)
            for t in loops:
                t.join(timeout=30)  # a message being sent is finished, not cut off
            if on_exit is not None:  # the runs cancelled on the way out are news too
                on_exit(_since(self.report, mark))

    def _watch_notifications(self, stop: threading.Event) -> None:
        folder = _notify_dir(self.ws)
        folder.mkdir(parents=True, exist_ok=True)
        while not stop.wait(WATCH_SECONDS):
            try:
                entries = [e for e in os.scandir(folder) if e.name.endswith(".req")]
            except OSError:
                continue
            if not entries:
                continue
            keys: set[str] = set()
            everything = False
            for entry in entries:
                try:
                    text = Path(entry.path).read_text().strip()
                    os.unlink(entry.path)
                except OSError:
                    continue
                if text:
                    keys.add(text)
                else:
                    everything = True
            self.force(None if everything else keys)


def _mark(report: TickReport) -> tuple[int, ...]:
    """Where each list of ``report`` ends now, for :func:`_since`."""
    return (len(report.triggered), len(report.finished), len(report.recovered), len(report.material_errors),
            len(report.errors), len(report.config_repos))


def _since(report: TickReport, mark: tuple[int, ...]) -> TickReport:
    return TickReport(recovered=report.recovered[mark[2]:], material_errors=report.material_errors[mark[3]:],
                      triggered=report.triggered[mark[0]:], finished=report.finished[mark[1]:],
                      errors=report.errors[mark[4]:], config_repos=report.config_repos[mark[5]:],
                      polled=report.polled, passes=report.passes)


def _reconcile_traffic(ws: Any) -> list[str]:
    """Routes whose provider serves other weights than the store recorded get the recorded ones back.

    A scheduler killed between a provider's change and its record (or an
    HAProxy reload) leaves the two apart; the store is the truth, and the
    stage that was moving traffic is failed by the orphan recovery above.
    """
    try:
        from .traffic import reconcile_all, routes_of
    except ImportError:
        return []
    try:
        if not routes_of(ws.config, ws.root):
            return []
        results = reconcile_all(ws)
    except WorkbenchError as exc:
        return [f"traffic not compared with the providers: {exc}"]
    return [f"route {r['route']}: the provider served {r['served']}; re-applied the recorded {r['recorded']}"
            for r in results if r.get("reapplied")]


def _replace(plan: Any, **changes: Any) -> Any:
    from dataclasses import replace

    return replace(plan, **changes)


def _who(plan: Any) -> str:
    return {"timer": "timer", "dependency": "changes (upstream)", "material": "changes"}.get(plan.trigger, plan.trigger)


def _is_forced(source: Any, m: GitMaterial, forced: set[str]) -> bool:
    if not forced:
        return False
    return bool({m.name, source.url(m), source.fingerprint(m), m.url} & forced)


# -- entry points ------------------------------------------------------------------


def tick(ws: Any, now: Any = None, *, lock: bool = True, listener: Callable[..., None] | None = None,
         force: Iterable[str] | None = (), executor: Any = None, max_parallel: int | None = None,
         started: Callable[[Scheduler], Any] | None = None, quick: bool = False) -> TickReport:
    """One scheduling pass, and the runs it starts driven until they finish or wait (meant for cron).

    ``now`` (epoch seconds or a datetime) replaces the clock for timers and
    heartbeat ages; ``force`` names materials to poll even with auto_update off
    (None: all of them). ``started(scheduler)`` is called before the first pass
    (the CLI attaches its stop-signal handlers: ``workbench.signals.Stop``).
    ``quick``: first try :func:`workbench.materials.quiet.quiet_pass`, which polls every material and
    answers a tick with nothing to do without loading the full config (it does not say why pipelines
    wait, so ``tick -v`` does not ask for it); the CLI's plain ``tick`` does.
    """
    from .hooks import TICK_TASKS
    from .materials import quiet

    prepolled, key = None, None
    # the tick's tasks: the notification sender reads the config for its subscriptions, which the projection
    # knows (a blocker when there are some); any other task is unknown here, so its tick takes the full path
    known = all(getattr(t, "__module__", "") == "workbench.notifications.hook" for t in TICK_TASKS)
    if quick and known and not force and force is not None and "config" not in ws.__dict__:
        key = ws.sources_key()
        proj = quiet.load_projection(ws, key) if key else None
        if proj is not None:
            got = _quiet(ws, proj, _as_clock(now)(), lock)
            if got is not None and got.nothing:
                report = TickReport(polled=got.polled, passes=1, material_errors=list(got.material_errors),
                                    errors=list(got.timer_errors))
                return report
            prepolled = got.source if got is not None else None
    _ = ws.config  # config errors before anything runs
    with Scheduler(ws, now=now, lock=lock, listener=listener, executor=executor, max_parallel=max_parallel,
                   prepolled=prepolled) as s:
        if started is not None:
            started(s)
        if force is None or force:
            s.force(None if force is None else list(force))
        report = s.run_until_idle()
    for task in TICK_TASKS:  # e.g. send the notifications this tick's runs gave rise to
        report.finished.extend(task(ws))
    if key is not None and ws.sources_key() == key:  # the Config loaded is that of these bytes
        quiet.save_projection(ws, quiet.project(ws.config, key))
    return report


def _quiet(ws: Any, proj: Any, now: float, lock: bool) -> Any:
    """:func:`quiet_pass` under the scheduler lock (None: the lock was busy; the full pass waits for it)."""
    from .materials.quiet import quiet_pass

    if not lock:
        return quiet_pass(ws, proj, now)
    ws.state.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(ws.state / "scheduler.lock"), timeout=0):
            return quiet_pass(ws, proj, now)
    except Timeout:
        return None


def _notify_dir(ws: Any) -> Path:
    return ws.state / "notify"


def _serve_lock(ws: Any) -> FileLock:
    ws.state.mkdir(parents=True, exist_ok=True)
    return FileLock(str(ws.state / "serve.lock"), timeout=0)


def serve_running(ws: Any) -> str | None:
    """The pid file's content when a ``workbench serve`` runs for this workspace, else None."""
    lock = _serve_lock(ws)
    try:
        lock.acquire()
    except Timeout:
        try:
            return (ws.state / "serve.pid").read_text().strip() or "?"
        except OSError:
            return "?"
    lock.release()
    return None


@contextmanager
def serving(ws: Any, what: str = "workbench serve") -> Iterator[None]:
    """Hold the workspace's serve lock (one ``serve`` or ``server`` per workspace) and its pid file."""
    from .store import owner_id

    lock = _serve_lock(ws)
    try:
        lock.acquire()
    except Timeout:
        raise UsageError(f"a `workbench serve` or `workbench server` already runs for this workspace "
                         f"({serve_running(ws)}); {what} stops here") from None
    try:
        (ws.state / "serve.pid").write_text(owner_id())
        yield
    finally:
        try:
            (ws.state / "serve.pid").unlink()
        except OSError:
            pass
        lock.release()


def serve(ws: Any, interval: float = 10.0, *, on_pass: Callable[[TickReport], None] | None = None,
          listener: Callable[..., None] | None = None, executor: Any = None, max_parallel: int | None = None,
          stop: threading.Event | None = None, started: Callable[[Scheduler], Any] | None = None,
          on_exit: Callable[[TickReport], None] | None = None) -> None:
    """Scheduling passes in a loop until Ctrl-C (or ``stop``, or ``Scheduler.cancel``); one serve per workspace.

    ``started(scheduler)`` is called before the loop (the CLI's stop-signal handlers attach to it).
    """
    if interval <= 0:
        raise UsageError("--interval must be more than 0 seconds")
    with serving(ws):
        with Scheduler(ws, listener=listener, executor=executor, max_parallel=max_parallel) as s:
            if started is not None:
                started(s)
            s.serve_forever(interval, on_pass=on_pass, stop=stop, on_exit=on_exit)


def material_keys(ws: Any, what: str | None) -> list[str] | None:
    """``notify`` argument → the material keys it names (None: all). Unknown names are a usage error."""
    from .materials.git import normalize_url

    if not what:
        return None
    if what.startswith("configrepo:"):  # a config repository's key, passed on (the server's notify, webhooks)
        return [what]
    keys = set()
    try:
        wanted_url = normalize_url(what, ws.root)
    except (OSError, ValueError):
        wanted_url = what
    normal: dict[str, str] = {}  # a realpath per spelling, not per material (10,000 pipelines, 500 URLs)
    for p in ws.config.pipelines.values():
        for m in p.materials:
            if not isinstance(m, GitMaterial):
                continue
            url = normal.get(m.url)
            if url is None:
                url = normal[m.url] = normalize_url(m.url, ws.root)
            same = wanted_url == url or url.removesuffix(".git") == wanted_url.removesuffix(".git")
            if what in (m.name, m.url) or same:
                keys.add(url)
    if ws.settings.config_repos:  # a config repository's URL (or id): its poll is what is asked
        from .configrepos.compose import repo_ids_for

        keys.update(f"configrepo:{rid}" for rid in repo_ids_for(ws, what))
    if not keys:
        known = sorted({m.name for p in ws.config.pipelines.values() for m in p.materials
                        if isinstance(m, GitMaterial)})
        raise UsageError(f"no git material has the URL or name {what!r} (materials: {', '.join(known) or 'none'})")
    return sorted(keys)


def notify(ws: Any, what: str | None = None, **tick_options: Any) -> TickReport | str:
    """A change happened (git post-receive hook): the running ``serve`` polls now, else a tick runs here.

    Returns the serve's pid (as text) when a serve was told, else the tick's report. Telling a
    serve costs a file write and no config, git or store: the hook returns at once, and the
    serve resolves ``what`` (an unknown name is reported in its output).
    """
    running = serve_running(ws)
    if running is not None:
        folder = _notify_dir(ws)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{uuid.uuid4().hex}.tmp"
        tmp.write_text(what or "")
        os.replace(tmp, tmp.with_suffix(".req"))  # the watcher only reads complete requests
        return running
    return tick(ws, force=material_keys(ws, what), **tick_options)
