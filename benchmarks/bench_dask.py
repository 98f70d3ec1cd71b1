"""The Dask executor against the local one, from one run, all figures printed.

1. 200 `true` jobs (4 stages x 50) through a LocalCluster of 2 workers (one
   thread each) against the local executor with 2 slots: the per-job overhead
   the Dask executor adds (target <= 20 ms).
2. 16 trivial notebook jobs in one stage on a LocalCluster of 2 workers
   against 1 worker: the speed-up (target >= 1.7x).

Clusters are started and their workers warmed (the workbench imported) before
the clock starts: the figures are per job, not per cluster start.
Usage: python benchmarks/bench_dask.py [--jobs 200] [--stages 4] [--notebooks 16]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRIVIAL = {
    "cells": [
        {"cell_type": "code", "execution_count": None, "id": "p1", "metadata": {"tags": ["parameters"]},
         "outputs": [], "source": ["x = 1"]},
        {"cell_type": "code", "execution_count": None, "id": "c1", "metadata": {}, "outputs": [],
         "source": ["y = x + 1\n", "print(y)"]},
    ],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                 "language_info": {"name": "python"}},
    "nbformat": 4, "nbformat_minor": 5,
}


def write_workspace(root: Path, stages: int, jobs: int, notebooks: int) -> None:
    per = jobs // stages
    lines = ["format_version: 10", "pipelines:", "  wide:", "    group: bench", "    stages:"]
    for s in range(stages):
        lines.append(f"      - s{s}:\n          jobs:")
        for j in range(per):
            lines.append(f"            j{j}:\n              tasks:\n                - exec: {{command: 'true'}}")
    lines += ["  notebooks:", "    group: bench", "    stages:", "      - run:\n          jobs:"]
    for j in range(notebooks):
        lines.append(f"            nb{j}:\n              tasks:\n                - notebook: {{path: notebooks/trivial.ipynb}}")
    lines += ["  warm:", "    group: bench", "    stages:", "      - run:\n          jobs:"]
    for j in range(2):
        lines.append(f"            nb{j}:\n              tasks:\n                - notebook: {{path: notebooks/trivial.ipynb}}")
    (root / "pipelines").mkdir(parents=True)
    (root / "pipelines" / "bench.gocd.yaml").write_text("\n".join(lines) + "\n")
    (root / "notebooks").mkdir()
    (root / "notebooks" / "trivial.ipynb").write_text(json.dumps(TRIVIAL))


def timed(ws, executor, pipeline: str) -> float:  # type: ignore[no-untyped-def]
    with ws.engine(executor=executor) as engine:
        t = time.perf_counter()
        run = engine.run(pipeline)
        wall = time.perf_counter() - t
    if run.status.value != "passed":
        sys.exit(f"{pipeline} {run.status}: {run.reason}")
    return wall


def warm(executor) -> None:  # type: ignore[no-untyped-def]
    from workbench import features

    executor.client.run(features.load)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--stages", type=int, default=4)
    ap.add_argument("--notebooks", type=int, default=16)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from workbench import Workspace
    from workbench.executors import LocalExecutor, make_executor

    root = Path(tempfile.mkdtemp(prefix="wb-bench-dask-"))
    try:
        write_workspace(root, args.stages, args.jobs, args.notebooks)
        ws = Workspace.open(root)
        ws.config  # noqa: B018  (parse once, outside the clock)
        n = args.jobs

        local = LocalExecutor(max_parallel=2)
        timed(ws, local, "wide")  # warm the store and the page cache
        local_wall = timed(ws, local, "wide")
        local.close()

        dask2 = make_executor("dask://local", n_workers=2)
        warm(dask2)
        timed(ws, dask2, "wide")
        dask_wall = timed(ws, dask2, "wide")
        timed(ws, dask2, "warm")
        nb2 = timed(ws, dask2, "notebooks")
        dask2.close()

        dask1 = make_executor("dask://local", n_workers=1)
        warm(dask1)
        timed(ws, dask1, "warm")
        nb1 = timed(ws, dask1, "notebooks")
        dask1.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    per_local, per_dask = local_wall / n * 1000, dask_wall / n * 1000
    print(f"dask benchmark: {args.stages} stages x {n // args.stages} `true` jobs, 2 at a time; "
          f"{args.notebooks} trivial notebook jobs")
    print(f"  local executor, 2 slots            : {local_wall * 1000:8.1f} ms  ({per_local:.2f} ms/job)")
    print(f"  dask LocalCluster, 2 workers       : {dask_wall * 1000:8.1f} ms  ({per_dask:.2f} ms/job)")
    print(f"  per-job overhead dask - local      : {per_dask - per_local:8.2f} ms   (target <= 20 ms)")
    print(f"  notebooks on 1 worker              : {nb1:8.2f} s")
    print(f"  notebooks on 2 workers             : {nb2:8.2f} s")
    print(f"  speed-up 2 workers / 1 worker      : {nb1 / nb2:8.2f}x   (target >= 1.7x)")


if __name__ == "__main__":
    main()
