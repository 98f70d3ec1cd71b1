"""``make demo``: the Shops release on the embedded defaults (SQLite, local jobs).

Runs the release path as far as the installed features allow, with the
approvals given explicitly as the named people of the example, and ends by
telling the user what to look at next.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .errors import WorkbenchError
from .status import Status

COMPONENTS = ("db", "batch", "search", "api", "ui")


def _say(text: str) -> None:
    print(text, flush=True)


def _run(ws: Any, pipeline: str, **kw: Any) -> Any:
    from .progress import Progress

    with ws.engine(listener=Progress(quiet=True)) as engine:
        run = engine.run(pipeline, **kw)
    jobs = ws.frames.job_runs
    mine = jobs[jobs.run_id == run.id]
    took = (mine.finished_at.max() - mine.started_at.min()).total_seconds() if len(mine) else 0.0
    _say(f"  {pipeline:<20} #{run.counter:<3} {run.status.value:<8} {len(mine):>2} jobs in {took:.2f}s  label {run.label}")
    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workbench.demo", description=__doc__)
    ap.add_argument("--workspace", default=".", help="workspace folder (default: the current folder)")
    args = ap.parse_args(argv)
    from .workspace import Workspace

    try:
        ws = Workspace.open(args.workspace)
        cfg = ws.config
        _say(f"Release Workbench demo: {len(cfg.pipelines)} pipelines from {', '.join(cfg.files)}")
        _say(f"store: {ws.store.url}\n")
        _say("1. Each component builds, tests, packages and pushes to the QA package repository:")
        for name in COMPONENTS:
            run = _run(ws, name)
            if run.status != Status.PASSED:
                _say(f"     {name} failed: {run.reason}; see `workbench logs {name}/{run.counter}/...`")
                return 1
        _say("\n2. search, api and ui fan in to the QA deploy (install at 50%, then a QA member approves 100%):")
        qa = _run(ws, "qa_deploy")
        if qa.status == Status.WAITING:
            _say("     qa_deploy waits for a QA member (role qa: carol) to approve inc_canary_qa_100")
    except WorkbenchError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    root = Path(args.workspace).resolve()
    _say("\nWhat to look at next:")
    _say(f"  .venv/bin/workbench -w {root} status              # every pipeline's latest run, stage by stage")
    _say(f"  .venv/bin/workbench -w {root} history -n 10       # the runs, newest first (--format json|csv)")
    _say(f"  .venv/bin/workbench -w {root} logs ui/latest/build/build")
    _say("  In a notebook:  from workbench import Workspace; Workspace.open('.').frames.job_runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
