"""Engine overhead: a 4-stage pipeline of 200 `true` jobs, against raw subprocess.run.

Prints, from one run: the baseline (the same 200 commands with subprocess.run,
sequentially and with the engine's concurrency), the engine's wall time,
per-job overhead, stage-to-stage latency and the engine process's peak memory.
Usage: python benchmarks/bench_engine.py [--jobs 200] [--stages 4] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PIPELINE = """\
format_version: 10
pipelines:
  wide:
    group: bench
    stages:
{stages}
"""


def write_workspace(root: Path, stages: int, jobs: int) -> None:
    per = jobs // stages
    out = []
    for s in range(stages):
        out.append(f"      - s{s}:\n          jobs:")
        for j in range(per):
            out.append(f"            j{j}:\n              tasks:\n                - exec: {{command: 'true'}}")
    (root / "pipelines").mkdir(parents=True, exist_ok=True)
    (root / "pipelines" / "wide.gocd.yaml").write_text(PIPELINE.format(stages="\n".join(out)) + "\n")


ENGINE_CHILD = r"""
import json, resource, sys, time
from workbench import Workspace
ws = Workspace.open(sys.argv[1])
ws.config
t = time.perf_counter()
with ws.engine(max_parallel=int(sys.argv[2])) as engine:
    run = engine.run("wide")
wall = time.perf_counter() - t
sr = ws.frames.stage_runs.sort_values("position")
jr = ws.frames.job_runs
gaps = []
for a, b in zip(sr.itertuples(), list(sr.itertuples())[1:]):
    last_end = jr[jr.stage == a.stage].finished_at.max()
    first_start = jr[jr.stage == b.stage].started_at.min()
    gaps.append((first_start - last_end).total_seconds())
print(json.dumps({"status": run.status.value, "wall": wall, "gaps": gaps,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def baseline(n: int, parallel: int) -> tuple[float, float]:
    t = time.perf_counter()
    for _ in range(n):
        subprocess.run(["true"])
    seq = time.perf_counter() - t
    t = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(lambda _: subprocess.run(["true"]), range(n)))
    par = time.perf_counter() - t
    return seq, par


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--stages", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    parallel = os.cpu_count() or 2
    results = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            write_workspace(root, args.stages, args.jobs)
            seq, par = baseline(args.jobs, parallel)
            p = subprocess.run([sys.executable, "-c", ENGINE_CHILD, str(root), str(parallel)], capture_output=True, text=True)
            if p.returncode != 0:
                sys.exit(p.stderr)
            r = json.loads(p.stdout.strip().splitlines()[-1])
            assert r["status"] == "passed", r
            results.append((seq, par, r))
    seq = statistics.median(x[0] for x in results)
    par = statistics.median(x[1] for x in results)
    wall = statistics.median(x[2]["wall"] for x in results)
    gaps = [g for x in results for g in x[2]["gaps"]]
    rss = max(x[2]["maxrss_mb"] for x in results)
    n = args.jobs
    print(f"engine benchmark: {args.stages} stages x {n // args.stages} `true` jobs, {parallel} at a time, median of {args.repeat}")
    print(f"  baseline subprocess.run sequential : {seq * 1000:8.1f} ms  ({seq / n * 1000:.2f} ms/job)")
    print(f"  baseline subprocess.run {parallel} threads  : {par * 1000:8.1f} ms  ({par / n * 1000:.2f} ms/job)")
    print(f"  workbench engine                   : {wall * 1000:8.1f} ms  ({wall / n * 1000:.2f} ms/job)")
    print(f"  ratio engine / parallel baseline   : {wall / par:8.2f}x")
    print(f"  per-job overhead vs parallel base  : {(wall - par) / n * 1000:8.2f} ms   (target <= 5 ms)")
    print(f"  per-job overhead vs sequential base: {(wall - seq) / n * 1000:8.2f} ms")
    print(f"  stage-to-stage latency median/max  : {statistics.median(gaps) * 1000:6.1f} / {max(gaps) * 1000:.1f} ms   (target <= 20 ms)")
    print(f"  engine process peak RSS            : {rss:8.1f} MB   (target <= 200 MB)")


if __name__ == "__main__":
    main()
