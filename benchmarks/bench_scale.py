"""Issue 17: the commands people look at, on a large generated GoCD estate.

    .venv/bin/python benchmarks/bench_scale.py                  # 1,000 and 3,000 pipelines
    .venv/bin/python benchmarks/bench_scale.py --sizes 1000,3000,10000

For each size the estate of ``workloads/estate.py`` is written (pipelines in
files of 50, a repository per 20 pipelines) and each figure is printed beside
its baseline measured in the same run:

- ``workbench validate`` (a fresh process) beside the floor of reading the
  same files: a fresh ``python -c`` that imports PyYAML and parses every file
  with its C loader (no checks at all);
- ``workbench status`` (a fresh process, after one no-change tick so every
  pipeline has material revisions) beside a fresh ``python`` that imports
  pandas and reads the store's runs table with one SQL query;
- a no-change ``workbench tick`` beside ``git ls-remote`` over the same
  repositories, sequential and 8 at a time, and beside a fresh ``python`` that
  only imports what any workbench command imports (SQLAlchemy, the features);
  then, under ``strace -f``, how many repositories it polled and how many git
  processes it started (the target: one remote look-up per repository).

Then the growth exponent of each figure over the sizes (1.0 = linear). Medians
of ``--repeat`` (3). Nothing is asserted: the targets are printed met or MISSED.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workloads.estate import write_estate  # noqa: E402

PY = sys.executable
TARGETS = {"validate": 2.0, "status": 0.3, "tick": 1.0}  # seconds; tick: plus the git work


def timed_run(argv: list[str], cwd: Path, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return statistics.median(times)


def wb(*args: str) -> list[str]:
    return [PY, "-m", "workbench", *args]


YAML_FLOOR = ("import sys, yaml, pathlib\n"
              "for f in sorted(pathlib.Path('pipelines').glob('*.yaml')):\n"
              "    yaml.load(f.read_bytes(), Loader=yaml.CSafeLoader)\n")
SQL_FLOOR = ("import pandas, sqlalchemy\n"
             "e = sqlalchemy.create_engine('sqlite:///.workbench/store.db')\n"
             "with e.connect() as c:\n"
             "    t = [n for n in sqlalchemy.inspect(e).get_table_names() if 'run' in n][0]\n"
             "    pandas.read_sql(sqlalchemy.text(f'select * from {t}'), c)\n")


IMPORT_FLOOR = "import workbench.cli, workbench.engine, workbench.features as f; f.load()\n"


def tick_counts(root: Path) -> tuple[int, int]:
    """(repositories the tick says it polled, git processes it started), from one ``tick -v`` under strace -f."""
    trace = root / ".workbench" / "tick.strace"
    proc = subprocess.run(["strace", "-f", "-qq", "-e", "trace=execve", "-o", str(trace), *wb("tick", "-v")],
                          cwd=root, capture_output=True, text=True)
    found = re.search(r"(\d+) repositories polled", proc.stdout + proc.stderr)
    gits = sum(1 for line in trace.read_text().splitlines()
               if re.search(r'execve\("[^"]*/git", ', line) and "ENOENT" not in line)
    trace.unlink()
    return (int(found.group(1)) if found else -1), gits


def ls_remote(repos: list[Path], workers: int) -> float:
    def one(r: Path) -> None:
        subprocess.run(["git", "ls-remote", "--heads", str(r)], capture_output=True, check=True)

    t = time.perf_counter()
    if workers == 1:
        for r in repos:
            one(r)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, repos))
    return time.perf_counter() - t


def growth(sizes: list[int], values: list[float]) -> float:
    if len(sizes) < 2 or min(values) <= 0:
        return float("nan")
    xs, ys = [math.log(s) for s in sizes], [math.log(v) for v in values]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def verdict(name: str, value: float, extra: float = 0.0) -> str:
    limit = TARGETS[name] + extra
    return f"<= {limit:.2f} s: {'met' if value <= limit else 'MISSED'}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,3000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="write the estates here and keep them (default: a temp folder)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    started = time.perf_counter()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    rows: dict[str, list[float]] = {"validate": [], "status": [], "tick": []}
    with tempfile.TemporaryDirectory(prefix="wb-bench-scale-") as tmp:
        base = args.keep or Path(tmp)
        for n in sizes:
            t = time.perf_counter()
            est = write_estate(base / f"estate{n}", n)
            print(f"\n== {n} pipelines in {len(est.files)} files, {len(est.repos)} repositories "
                  f"(written in {time.perf_counter() - t:.1f} s)")
            root = est.root
            floor = timed_run([PY, "-c", YAML_FLOOR], root, args.repeat)
            ours = timed_run(wb("validate"), root, args.repeat)
            rows["validate"].append(ours)
            print(f"   validate        {ours:7.2f} s   | parse-only floor {floor:6.2f} s ({ours / floor:5.1f}x)"
                  f"   {verdict('validate', ours)}")
            t = time.perf_counter()
            subprocess.run(wb("tick"), cwd=root, capture_output=True)
            first = time.perf_counter() - t
            seq, par = ls_remote(est.repos, 1), ls_remote(est.repos, 8)
            ours = timed_run(wb("tick"), root, args.repeat)
            imports = timed_run([PY, "-c", IMPORT_FLOOR], root, args.repeat)
            rows["tick"].append(ours)
            print(f"   no-change tick  {ours:7.2f} s   | ls-remote x{len(est.repos)} sequential {seq:6.2f} s,"
                  f" 8 at a time {par:6.2f} s; the workbench's imports alone {imports:5.2f} s"
                  f"   {verdict('tick', ours, par)} (plus the parallel git floor)"
                  f"   [first tick, which starts every pipeline: {first:.1f} s]")
            if shutil.which("strace"):
                polled, gits = tick_counts(root)
                print(f"                   {polled} repositories polled, {gits} git processes for "
                      f"{len(est.repos)} repositories ({gits / len(est.repos):.1f} per repository)")
            floor = timed_run([PY, "-c", SQL_FLOOR], root, args.repeat)
            ours = timed_run(wb("status"), root, args.repeat)
            rows["status"].append(ours)
            print(f"   status          {ours:7.2f} s   | one SQL read into pandas {floor:6.2f} s ({ours / floor:5.1f}x)"
                  f"   {verdict('status', ours)}")
    print("\ngrowth exponents (1.0 = linear):",
          ", ".join(f"{k} {growth(sizes, v):.2f}" for k, v in rows.items()))
    print(f"(benchmark took {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
