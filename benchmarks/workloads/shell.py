"""Workloads (a) Shops-shaped DAG, (b) a wide stage, (c) a chain of pipelines: shell jobs.

Ours runs in this process (imports and config parsing outside the clock, as
for Prefect, whose server start is outside the clock too): the roots are
triggered by hand and a scheduler (:class:`workbench.triggering.Scheduler`,
what ``tick`` runs) drives everything, triggering each downstream pipeline when its upstream stage
passes, with ``max_parallel`` = the number of CPUs. ``make -j N`` and Prefect
get the same N. Each repeat gets a fresh workspace, so history does not pile up.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness import med, nproc, timed

from .dag import Dag


def ours(dag: Dag, repeat: int, *, parallel: int | None = None) -> dict[str, Any]:
    """Median wall time of the whole DAG and the latencies the issue's targets are about."""
    from workbench import Workspace
    from workbench.status import Status
    from workbench.triggering import Scheduler

    parallel = parallel or nproc()
    samples: list[float] = []
    lat: dict[str, list[float]] = {k: [] for k in STEP_KEYS}
    for i in range(repeat + 1):  # the first is a warm-up (imports, page cache, features)
        root = Path(tempfile.mkdtemp(prefix="wb-bench-"))
        try:
            dag.write(root)
            ws = Workspace.open(root)
            ws.config  # noqa: B018  (parse outside the clock)

            def go() -> None:
                if len(dag.pipelines) == 1:
                    with ws.engine(max_parallel=parallel) as engine:
                        run = engine.run(next(iter(dag.pipelines)))
                    if run.status != Status.PASSED:
                        raise RuntimeError(f"{run.locator} {run.status}: {run.reason}")
                    return
                with Scheduler(ws, max_parallel=parallel) as s:
                    for p in dag.roots:  # by hand, as `workbench run` would: driven by this scheduler at once
                        s._mine.add(s.engine.trigger(p).id)
                    report = s.run_until_idle()
                if report.errors:
                    raise RuntimeError("; ".join(report.errors))

            wall = timed(go)
            runs = ws.frames.pipeline_runs
            if len(runs) != len(dag.pipelines) or set(runs["status"].astype(str)) != {"passed"}:
                raise RuntimeError(f"expected {len(dag.pipelines)} passed runs, got {runs[['pipeline', 'status']]}")
            if i:
                samples.append(wall)
                jobs = ws.frames.job_runs
                for k, v in latencies(_records(jobs), dag, parallel).items():
                    lat[k] += v
            ws.close()
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return {"wall": med(samples), "samples": samples, **lat}


def _records(jobs: Any) -> list[tuple[str, str, float, float]]:
    """(pipeline, stage, started, finished) of every job run in the store, in seconds."""
    return [(p, s, a.timestamp(), b.timestamp())
            for p, s, a, b in zip(jobs["pipeline"], jobs["stage"], jobs["started_at"], jobs["finished_at"])]


def latencies(jobs: list[tuple[str, str, float, float]], dag: Dag, slots: int) -> dict[str, list[float]]:
    """Upstream-to-downstream steps (last upstream job end → first downstream job start) and
    stage-to-stage steps inside a pipeline (last job end → first job start of the next stage),
    from the jobs' recorded start and end; each also with its *slot wait*, the part of the step
    during which every one of the ``slots`` job slots was held by another job (which no scheduler
    with that many slots could have avoided: benchmarks/README.md), and the step without it."""
    start: dict[tuple[str, str], float] = {}
    end: dict[tuple[str, str], float] = {}
    for p, s, a, b in jobs:
        start[(p, s)] = min(start.get((p, s), a), a)
        end[(p, s)] = max(end.get((p, s), b), b)
    busy = [(a, b) for _, _, a, b in jobs]
    out: dict[str, list[float]] = {k: [] for k in STEP_KEYS}

    def add(kind: str, t0: float, t1: float) -> None:
        wait = slot_wait(busy, t0, t1, slots)
        out[kind].append(t1 - t0)
        out[f"{kind}_wait"].append(wait)
        out[f"{kind}_engine"].append(t1 - t0 - wait)

    for p, ups in dag.upstream.items():
        if ups:
            add("steps", max(end[(u, f"s{len(dag.pipelines[u]) - 1}")] for u in ups), start[(p, "s0")])
    for p, stages in dag.pipelines.items():
        for i in range(1, len(stages)):
            add("stage_gaps", end[(p, f"s{i - 1}")], start[(p, f"s{i}")])
    return out


STEP_KEYS = ("steps", "steps_wait", "steps_engine", "stage_gaps", "stage_gaps_wait", "stage_gaps_engine")


def slot_wait(busy: list[tuple[float, float]], t0: float, t1: float, slots: int) -> float:
    """Seconds of [t0, t1] during which at least ``slots`` of the ``busy`` intervals overlap.

    The step's own jobs cannot be among them: the previous stage's all ended by
    t0, the next stage's first started at t1.
    """
    edges = sorted([(max(a, t0), 1) for a, b in busy if a < t1 and b > t0] +
                   [(min(b, t1), -1) for a, b in busy if a < t1 and b > t0])
    held, last, total = 0, t0, 0.0
    for t, d in edges:
        if held >= slots:
            total += t - last
        held, last = held + d, t
    return total


def make(dag: Dag, repeat: int, *, parallel: int | None = None) -> float:
    """``make -j N`` over the same DAG (one phony target per job)."""
    parallel = parallel or nproc()
    root = Path(tempfile.mkdtemp(prefix="wb-bench-make-"))
    try:
        (root / "Makefile").write_text(dag.makefile())
        argv = ["make", "-s", f"-j{parallel}", "-C", str(root), "all"]
        subprocess.run(argv, check=True)  # warm-up
        return med(timed(lambda: subprocess.run(argv, check=True)) for _ in range(repeat))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def make_latencies(dag: Dag, repeat: int, *, parallel: int | None = None) -> dict[str, list[float]]:
    """:func:`latencies` of ``make -j N`` on the same DAG, from a timestamped copy of its Makefile.

    Each recipe runs in bash and appends ``$EPOCHREALTIME`` before and after
    its command (builtins: no extra process); so make's step here includes a
    bash start (~1 ms) that the plain ``make`` baseline does not pay.
    """
    parallel = parallel or nproc()
    root = Path(tempfile.mkdtemp(prefix="wb-bench-make-"))
    out: dict[str, list[float]] = {k: [] for k in STEP_KEYS}
    try:
        log = root / "times"
        (root / "Makefile").write_text(dag.makefile(stamps=log))
        argv = ["make", "-s", f"-j{parallel}", "-C", str(root), "all"]
        for i in range(repeat + 1):  # the first is a warm-up
            log.write_text("")
            subprocess.run(argv, check=True)
            marks: dict[str, dict[str, float]] = {}
            for line in log.read_text().split("\n"):
                if line:
                    kind, target, t = line.split()
                    marks.setdefault(target, {})[kind] = float(t)
            jobs = [(*target.split(".")[:2], m["s"], m["e"]) for target, m in marks.items()]
            if i:
                for k, v in latencies(jobs, dag, parallel).items():  # type: ignore[arg-type]
                    out[k] += v
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


def subprocess_sequential(dag: Dag, repeat: int) -> float:
    """Every job's command with ``subprocess.run``, one after the other: the raw floor."""
    cmds = dag.commands()

    def go() -> None:
        for argv in cmds:
            subprocess.run(list(argv), check=True)

    go()
    return med(timed(go) for _ in range(repeat))


def subprocess_parallel(dag: Dag, repeat: int, *, parallel: int | None = None) -> float:
    """The same commands on N threads (independent jobs only: a wide stage)."""
    cmds = dag.commands()
    parallel = parallel or nproc()

    def go() -> None:
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(lambda a: subprocess.run(list(a), check=True), cmds))

    go()
    return med(timed(go) for _ in range(repeat))


def has_make() -> bool:
    return shutil.which("make") is not None and os.access(shutil.which("make") or "", os.X_OK)
