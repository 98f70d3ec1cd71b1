"""The one benchmark harness: plain scripts, every figure measured side by side in one run.

Each workload measures its baseline (raw ``subprocess.run``, ``make -j``,
the ``papermill`` CLI, ...), the orchestrator a user would pick instead
(Prefect, Ploomber, each in its own virtual environment, see
:mod:`benchmarks.peers`) and the workbench on the same machine, in the same
run, one after the other (never at the same time: this is a 2-core box), and
reports a :class:`Row` per size with the ratio to the baseline. Absolute
times on a shared machine drift with its load; the ratios of one run do not
drift as much, which is why every row carries its baseline.

Plain scripts rather than pytest-benchmark or asv: the peers run in other
interpreters, a workload may take a minute, and what we need from a run is a
handful of medians and ratios, not statistics over thousands of calls.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"  # gitignored: the JSON of the latest run, read by --update-readme

if str(REPO) not in sys.path:  # the workbench from this checkout, whatever the current folder
    sys.path.insert(0, str(REPO))


# -- measuring ------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def median_of(fn: Callable[[], Any], repeat: int, *, warmup: int = 0) -> tuple[float, list[float]]:
    """Median wall time of ``repeat`` calls after ``warmup`` untimed ones, and all the samples."""
    for _ in range(warmup):
        fn()
    samples = [timed(fn) for _ in range(max(1, repeat))]
    return statistics.median(samples), samples


def med(values: Iterable[float]) -> float:
    vals = list(values)
    return statistics.median(vals) if vals else float("nan")


def run_json(argv: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
             timeout: float = 900) -> dict[str, Any]:
    """Run a child that prints one JSON object on its last stdout line (a peer in its own venv).

    The child gets its own process group, killed when it exits: Prefect's
    ephemeral API server is a grandchild that would otherwise live on (and
    hold the output pipe open forever).
    """
    import signal
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if code != 0 or not lines:
        tail = "\n".join((stderr or stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(map(str, argv[:3]))} failed (exit {code}):\n{tail}")
    return json.loads(lines[-1])


def sh(argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=True, capture_output=True, text=True, **kw)


# -- results --------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the report: a workload at one size, ours against baselines and peers (medians, seconds)."""

    workload: str  # "(b) wide stage"
    size: str  # "200 jobs"
    ours: float
    baselines: dict[str, float]  # the first one is *the* baseline of the ratio
    peers: dict[str, float] = field(default_factory=dict)  # orchestrators users would pick instead
    extra: dict[str, Any] = field(default_factory=dict)  # per-job overhead, step latency, ...
    targets: list[str] = field(default_factory=list)  # "per-job overhead <= 5 ms: met (1.9 ms)"

    @property
    def baseline_name(self) -> str:
        return next(iter(self.baselines))

    @property
    def ratio(self) -> float:
        """ours / baseline: 1.0 is the floor's speed, 3.0 is three times slower than it."""
        base = self.baselines[self.baseline_name]
        return self.ours / base if base else float("nan")

    def line(self) -> str:
        out = [f"  {self.size:<18} ours {fmt_s(self.ours):>9}"]
        for name, v in self.baselines.items():
            out.append(f"{name} {fmt_s(v)} (ours/baseline {self.ours / v:.2f}x)" if v else f"{name} n/a")
        for name, v in self.peers.items():
            out.append(f"{name} {fmt_s(v)} ({v / self.ours:.1f}x slower than ours)" if v == v else f"{name} n/a")
        out += [f"{k} {v}" for k, v in self.extra.items()]
        out += [f"[{t}]" for t in self.targets]
        return "   ".join(out)


class Report:
    """Rows as they come (printed at once), targets checked, everything saved as JSON at the end."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.started = time.time()
        self.machine = machine()
        self._workload: str | None = None

    def add(self, row: Row) -> Row:
        if row.workload != self._workload:
            print(f"\n{row.workload}", flush=True)
            self._workload = row.workload
        self.rows.append(row)
        print(row.line(), flush=True)
        return row

    def add_target(self, text: str) -> None:
        """A target about the whole workload (growth over its sizes): on its last row."""
        self.rows[-1].targets.append(text)
        print(f"  [{text}]", flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    def save(self, path: Path | None = None) -> Path:
        path = path or RESULTS / "latest.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"machine": self.machine, "seconds": time.time() - self.started, "notes": self.notes,
               "rows": [asdict(r) | {"ratio": r.ratio} for r in self.rows]}
        doc["machine"]["load_after"] = os.getloadavg()
        path.write_text(json.dumps(doc, indent=2, default=str))
        return path


def target(what: str, value: float, limit: float, unit: str = "ms", *, lower_is_better: bool = True) -> str:
    ok = value <= limit if lower_is_better else value >= limit
    sign = "<=" if lower_is_better else ">="
    return f"{what} {sign} {limit:g} {unit}: {'met' if ok else 'MISSED'} ({value:.1f} {unit})"


def fmt_s(seconds: float) -> str:
    if seconds != seconds:
        return "n/a"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


# -- the machine --------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """Date, CPU model and count, memory and load: the README table's header."""
    model = platform.processor() or "?"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "cpu": model, "nproc": os.cpu_count(), "mem_gb": mem_gb,
            "python": platform.python_version(), "kernel": platform.release(), "load_before": os.getloadavg()}


def nproc() -> int:
    return os.cpu_count() or 2


__all__ = ["HERE", "REPO", "Report", "Row", "fmt_s", "machine", "med", "median_of", "nproc", "run_json", "sh",
           "target", "timed"]
