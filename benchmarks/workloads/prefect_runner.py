"""Runs shell DAGs as Prefect flows; executed by the Prefect peer's own interpreter (benchmarks/.venvs/prefect).

Reads a JSON list of workloads from the file named on the command line and
prints one JSON object: ``{name: [seconds, ...]}``. Everything runs in this
one process, so Prefect's ephemeral API server starts once, during the
untimed warm-up flow.

Mapping (the idiomatic Prefect spelling of each shape):

* ``tasks``: one flow; every job is a task submitted to a
  ``ThreadPoolTaskRunner(max_workers)``; a stage's tasks ``wait_for`` the
  previous stage's (or the upstream pipelines' last stage's) futures.
* ``subflows``: one flow per pipeline (its stages as above), called in
  dependency order from a parent flow: pipelines linked by dependencies.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect import flow, task  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402


@task
def job(argv: list[str]) -> int:
    rc = subprocess.run(argv).returncode
    if rc:
        raise RuntimeError(f"{argv} exited {rc}")
    return rc


def submit_pipeline(stages: list[list[list[str]]], before: list) -> list:
    for stage in stages:
        before = [job.submit(argv, wait_for=before) for argv in stage]
    return before


def as_tasks(plan: dict, workers: int):
    @flow(task_runner=ThreadPoolTaskRunner(max_workers=workers))
    def dag() -> None:
        finals: dict[str, list] = {}
        for p in plan["order"]:
            before = [f for u in plan["upstream"].get(p, []) for f in finals[u]]
            finals[p] = submit_pipeline(plan["pipelines"][p], before)
        for fs in finals.values():
            for f in fs:
                f.result()
    return dag


def as_subflows(plan: dict, workers: int):
    @flow(task_runner=ThreadPoolTaskRunner(max_workers=workers))
    def pipeline(stages: list) -> None:
        for f in submit_pipeline(stages, []):
            f.result()

    @flow
    def dag() -> None:
        for p in plan["order"]:
            pipeline.with_options(name=p)(plan["pipelines"][p])
    return dag


def main() -> None:
    spec = json.loads(open(sys.argv[1]).read())
    logging.getLogger("prefect").setLevel(logging.ERROR)
    warm = as_tasks({"pipelines": {"w": [[["true"]]]}, "upstream": {}, "order": ["w"]}, 1)
    t = time.perf_counter()
    warm()  # starts the ephemeral API server: not timed
    out: dict[str, object] = {"_startup": time.perf_counter() - t}
    warmed: set[str] = {"tasks"}
    tiny = {"pipelines": {"w0": [[["true"]]], "w1": [[["true"]]]}, "upstream": {"w1": ["w0"]}, "order": ["w0", "w1"]}
    for w in spec["workloads"]:
        mode = w.get("mode", "tasks")
        build = as_subflows if mode == "subflows" else as_tasks
        if mode not in warmed:  # the first subflow of a process costs seconds more: not the shape's fault
            build(tiny, spec["workers"])()
            warmed.add(mode)
        fn = build(w["plan"], spec["workers"])
        if w.get("warm"):
            fn()  # warm-up of this shape
        samples = []
        for _ in range(w["repeat"]):
            t = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t)
        out[w["name"]] = samples
    print(json.dumps(out), flush=True)
    sys.stdout.flush()
    os._exit(0)  # the ephemeral server's background services otherwise print errors while shutting down


if __name__ == "__main__":
    main()
