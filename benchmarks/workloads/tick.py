"""Workload (f): ``tick`` over 10 / 50 / 200 pipelines when nothing changed.

Each pipeline has its own git repository (the expensive case: nothing is
shared between pipelines) and one ``true`` job. Repositories and pipeline
files come from bench_triggering.py (the triggering issue's script, which
also prints notify latency); this adds the growth line. A first, untimed
tick triggers and runs them all, so the timed ticks find every material at the
revision its pipeline last ran: they poll, decide and trigger nothing.

Baseline: ``git ls-remote`` of each repository, one after the other: the
least a cron job must do to learn that N repositories did not move. The
workbench polls 8 at a time (:class:`workbench.materials.MaterialSource`),
so it may beat the baseline. The ``workbench tick`` command, a fresh process
as cron runs it, is measured once per size too.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness import med, timed

from bench_triggering import make_repos, write_workspace  # noqa: E402  (the triggering issue's script)


def measure(sizes: list[int], repeat: int) -> dict[int, dict[str, Any]]:
    from workbench import Workspace
    from workbench.triggering import tick

    out: dict[int, dict[str, Any]] = {}
    for n in sizes:
        tmp = Path(tempfile.mkdtemp(prefix="wb-bench-tick-"))
        try:
            repos = make_repos(tmp / "repos", n)
            root = write_workspace(tmp / "ws", repos)  # fetch_materials: false, one `true` job
            ws = Workspace.open(root)
            ws.config  # noqa: B018
            first = tick(ws)
            if len(first.triggered) != n or first.errors or first.material_errors:
                raise RuntimeError(f"setup tick: {first.lines(verbose=True)}")
            reports = []

            def quiet() -> None:
                r = tick(ws)
                if r.triggered or r.errors or r.material_errors:
                    raise RuntimeError(f"a tick with no changes did something: {r.lines(verbose=True)}")
                reports.append(r)

            ours = med(timed(quiet) for _ in range(repeat))
            ls_remote = med(timed(lambda: [subprocess.run(["git", "ls-remote", "--heads", str(r)], check=True,
                                                          capture_output=True) for r in repos]) for _ in range(repeat))
            cli = timed(lambda: subprocess.run([sys.executable, "-m", "workbench", "-w", str(root), "tick"], check=True,
                                               capture_output=True))
            out[n] = {"ours": ours, "ls_remote": ls_remote, "cli": cli, "polled": reports[-1].polled}
            ws.close()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out
