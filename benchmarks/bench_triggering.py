"""Triggering: notify → first job started, a no-change tick, and trigger scaling — figures from one run.

1. ``workbench notify URL`` → the first job of the triggered run started, with a
   ``workbench serve`` running (target ≤ 1 s), and without one (notify runs a
   tick itself). The bare interpreter start is printed as the floor.
2. A ``tick`` with nothing to do over 10 / 50 / 200 pipelines on as many local
   repositories (target ≤ 2 s at 50), against the baseline of a raw
   ``git ls-remote`` per repository, sequentially, measured in the same run.
3. Triggering after one commit to every repository: the pass that decides and
   creates the runs, per size, and per pipeline (linear means flat per pipeline).

Usage: python benchmarks/bench_triggering.py [--sizes 10,50,200] [--notify-repeat 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "b@example.com",
           "GIT_COMMITTER_NAME": "Bench", "GIT_COMMITTER_EMAIL": "b@example.com"}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True, text=True).stdout


def make_repos(root: Path, n: int) -> list[Path]:
    out = []
    for i in range(n):
        path = root / f"r{i:03d}"
        path.mkdir(parents=True)
        git(path, "init", "-q", "-b", "master")
        (path / "f.txt").write_text("0\n")
        git(path, "add", "f.txt")
        git(path, "commit", "-qm", "initial")
        out.append(path)
    return out


def bump(repo: Path, message: str) -> None:
    (repo / "f.txt").write_text(message + "\n")
    git(repo, "commit", "-qam", message)


def write_workspace(root: Path, repos: list[Path], *, fetch: bool = False) -> Path:
    (root / "pipelines").mkdir(parents=True)
    lines = ["format_version: 10", "pipelines:"]
    for i, r in enumerate(repos):
        lines += [f"  p{i:03d}:", "    materials:", f'      code: {{git: "{r}"}}', "    stages:",
                  "      - build:", f"          fetch_materials: {'true' if fetch else 'false'}",
                  "          jobs: {job: {tasks: [{exec: {command: 'true'}}]}}"]
    (root / "pipelines" / "bench.gocd.yaml").write_text("\n".join(lines) + "\n")
    return root


def cli(ws: Path, *args: str, **kw: object) -> subprocess.Popen[bytes]:
    env = {**os.environ, "WORKBENCH_WORKSPACE": str(ws)}
    return subprocess.Popen([sys.executable, "-m", "workbench", *args], cwd=ws, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]


def first_job_started_after(ws_root: Path, t0: float, timeout: float = 30) -> float:
    import sqlalchemy as sa

    from workbench import Workspace
    from workbench.store import schema as S

    ws = Workspace.open(ws_root)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with ws.store.read() as conn:
                first = sa.select(sa.func.min(S.job_runs.c.started_at)).where(S.job_runs.c.started_at > t0)
                t = conn.execute(first).scalar()
            if t is not None:
                return t - t0
            time.sleep(0.005)
    finally:
        ws.close()
    raise RuntimeError("no job started")


def bench_notify(tmp: Path, repeat: int) -> None:
    repo = make_repos(tmp / "notify-repos", 1)[0]
    ws = write_workspace(tmp / "notify-ws", [repo], fetch=True)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    floor = time.perf_counter() - t
    # without serve: notify runs the tick itself
    no_serve = []
    for i in range(repeat):
        bump(repo, f"a{i}")
        t0 = time.time()
        cli(ws, "notify", str(repo)).wait()
        no_serve.append(first_job_started_after(ws, t0))
    serve = cli(ws, "serve", "--interval", "600")
    try:
        time.sleep(3)  # its first full pass
        with_serve, notify_cmd = [], []
        for i in range(repeat):
            bump(repo, f"b{i}")
            t0 = time.time()
            p = cli(ws, "notify", str(repo))
            p.wait()
            notify_cmd.append(time.time() - t0)
            with_serve.append(first_job_started_after(ws, t0))
            time.sleep(0.5)
    finally:
        serve.terminate()
        serve.wait(30)
    print("1. notify -> first job started (target <= 1.0 s)")
    print(f"   python interpreter start (floor)          {floor * 1000:7.0f} ms")
    print(f"   with serve:  median {statistics.median(with_serve) * 1000:6.0f} ms  max {max(with_serve) * 1000:6.0f} ms"
          f"   (the notify command itself: median {statistics.median(notify_cmd) * 1000:.0f} ms)")
    print(f"   no serve:    median {statistics.median(no_serve) * 1000:6.0f} ms  max {max(no_serve) * 1000:6.0f} ms"
          "   (notify runs a tick in its own process)")


def bench_ticks(tmp: Path, sizes: list[int]) -> None:
    from workbench import Workspace
    from workbench.triggering import Scheduler, tick

    all_repos = make_repos(tmp / "repos", max(sizes))
    print("2. no-change tick (target <= 2 s at 50)            3. triggering after a commit to every repository")
    rows = []
    for n in sizes:
        repos = all_repos[:n]
        root = write_workspace(tmp / f"ws{n}", repos)
        ws = Workspace.open(root)
        tick(ws)  # first runs of every pipeline
        t = time.perf_counter()
        for r in repos:
            git(r, "ls-remote", "--heads", str(r))
        baseline = time.perf_counter() - t
        inproc = []
        for _ in range(3):
            t = time.perf_counter()
            report = tick(ws)
            inproc.append(time.perf_counter() - t)
            assert not report.triggered, report.triggered
        wholes = []
        for _ in range(3):
            t = time.perf_counter()
            cli(root, "tick").wait()
            wholes.append(time.perf_counter() - t)
        whole = statistics.median(wholes)
        for r in repos:
            bump(r, f"change for {n}")
        with Scheduler(ws) as s:
            t = time.perf_counter()
            created = s.decide()
            trig = time.perf_counter() - t
        assert len(created) == n, (len(created), n)
        ws.close()
        rows.append((n, baseline, statistics.median(inproc), whole, trig))
    for n, baseline, inproc, whole, trig in rows:
        print(f"   {n:4d} pipelines: tick {inproc:6.2f} s in-process, {whole:6.2f} s as `workbench tick`;"
              f" baseline ls-remote x{n} {baseline:6.2f} s (ratio {inproc / baseline:4.2f})"
              f"   | trigger {n:4d} runs {trig:6.2f} s = {trig / n * 1000:5.1f} ms/pipeline")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,50,200")
    ap.add_argument("--notify-repeat", type=int, default=5)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wb-bench-trig-") as tmp:
        bench_notify(Path(tmp), args.notify_repeat)
        bench_ticks(Path(tmp), sizes)
    print(f"(benchmark took {time.perf_counter() - started:.0f} s; {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
