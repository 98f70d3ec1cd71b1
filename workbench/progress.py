"""Live progress of ``workbench run``: a rich table on a terminal, plain lines otherwise."""
from __future__ import annotations

import sys
import time
from typing import Any

from .reporting import COLOURS


class Progress:
    """An engine listener that shows stages and jobs as they run."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet
        self.tty = sys.stdout.isatty()
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        self.live: Any = None

    def __enter__(self) -> "Progress":
        if self.tty and not self.quiet:
            from rich.live import Live

            self.live = Live(self._table(), refresh_per_second=8, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.update(self._table())
            self.live.__exit__(*exc)

    def _table(self) -> Any:
        from rich.table import Table

        t = Table(show_edge=False, header_style="bold")
        for c in ("stage", "job", "status", "time"):
            t.add_column(c)
        now = time.monotonic()
        for (stage, job), r in self.rows.items():
            took = (r.get("end") or now) - r["start"] if r.get("start") else None
            t.add_row(stage, job, f"[{COLOURS.get(r['status'], 'white')}]{r['status']}[/]",
                      "" if took is None else f"{took:.2f}s")
        return t

    def _line(self, text: str) -> None:
        if not self.quiet and self.live is None:
            print(text, flush=True)

    def __call__(self, event: str, **data: Any) -> None:
        if event == "stage_started":
            stage = data["stage"]
            self._line(f"stage {stage.name} started")
            for j in data["jobs"]:
                self.rows[(stage.name, j.name)] = {"status": "scheduled"}
        elif event == "job_started":
            self.rows[(data["stage"], data["job"])] = {"status": "running", "start": time.monotonic()}
        elif event == "job_finished":
            key = (data["stage"].name, data["job"].name)
            row = self.rows.setdefault(key, {"start": time.monotonic()})
            row.update(status=data["outcome"].status.value, end=time.monotonic())
            out = data["outcome"]
            self._line(f"  job {data['job'].name}: {out.status}" + (f" ({out.reason})" if out.reason else ""))
        elif event == "stage_finished":
            self._line(f"stage {data['stage'].name} {data['stage'].status}")
        elif event == "job_waiting":  # e.g. no agent with the job's resources (Dask executor)
            self.rows[(data["stage"], data["job"])] = {"status": "scheduled"}
            self._line(f"  job {data['job']}: {data['reason']}")
        elif event == "run_waiting":
            self._line(f"waiting for approval of stage {data['stage']}")
        if self.live is not None:
            self.live.update(self._table())
