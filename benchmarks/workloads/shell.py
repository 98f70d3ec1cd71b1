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
    steps: list[float] = []
    stage_gaps: list[float] = []
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
                s, g = latencies(ws, dag)
                steps += s
                stage_gaps += g
            ws.close()
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return {"wall": med(samples), "samples": samples, "steps": steps, "stage_gaps": stage_gaps}


def latencies(ws: Any, dag: Dag) -> tuple[list[float], list[float]]:
    """From the store: upstream-to-downstream steps (last upstream job end → first downstream job start)
    and stage-to-stage steps inside a pipeline (last job end → first job start of the next stage)."""
    jobs = ws.frames.job_runs
    sr = ws.frames.stage_runs
    first = jobs.groupby("pipeline")["started_at"].min()
    last = jobs.groupby("pipeline")["finished_at"].max()
    steps = []
    for p, ups in dag.upstream.items():
        if ups:
            steps.append((first[p] - max(last[u] for u in ups)).total_seconds())
    gaps = []
    per_stage = jobs.groupby(["pipeline", "stage"]).agg(start=("started_at", "min"), end=("finished_at", "max"))
    for p, g in sr.sort_values("position").groupby("pipeline"):
        names = list(g["stage"])
        for a, b in zip(names, names[1:]):
            gaps.append((per_stage.loc[(p, b), "start"] - per_stage.loc[(p, a), "end"]).total_seconds())
    return steps, gaps


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
