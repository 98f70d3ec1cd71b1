"""Issue 15's polling target: N config repositories with no change cost one remote look-up each and
<= 0.3 s of our own CPU beyond git, beside `git ls-remote` over the same repositories.

    PYTHONPATH=. python benchmarks/bench_configrepos.py [N]

Own time is this process's CPU time (``time.process_time``: git's child processes excluded), the
part a faster workbench could save; wall time is shown beside ``git ls-remote`` run once per repository.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

PIPELINE = ("format_version: 10\npipelines:\n  p{i}:\n    group: g\n    materials: {{}}\n    stages:\n"
            "      - s: {{jobs: {{j: {{tasks: [{{script: \"true\"}}]}}}}}}\n")


def main(n: int = 50) -> None:
    from workbench import Workspace
    from workbench.configrepos.compose import refresh

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repos = []
        for i in range(n):
            p = root / "repos" / f"r{i}"
            (p / "ci").mkdir(parents=True)
            (p / "ci" / "p.gocd.yaml").write_text(PIPELINE.format(i=i))
            for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                         ["-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "x"]):
                subprocess.run(["git", *args], cwd=p, check=True, capture_output=True)
            repos.append(p)
        ws_root = root / "ws"
        (ws_root / "pipelines").mkdir(parents=True)
        lines = ["config_repos:"] + [f"  r{i}:\n    git: {p}\n    rules: [{{allow: refer, type: '*', resources: '*'}}]"
                                     for i, p in enumerate(repos)]
        (ws_root / "workbench.yaml").write_text("\n".join(lines) + "\n")
        ws = Workspace.open(ws_root)
        t = time.perf_counter()
        refresh(ws)
        first = time.perf_counter() - t
        assert len(ws.config.pipelines) == n
        runs = []
        for _ in range(3):
            c0, t0 = time.process_time(), time.perf_counter()
            out, changed = refresh(ws)
            runs.append((time.perf_counter() - t0, time.process_time() - c0))
            assert not changed and not out
        t = time.perf_counter()
        for p in repos:
            subprocess.run(["git", "ls-remote", "--heads", str(p)], capture_output=True, check=True)
        ls = time.perf_counter() - t
        wall, own = min(runs)
        ws.close()
    verdict = "met" if own <= 0.3 else "missed"
    print(f"| config repos polled, no change | {n} repositories | {wall * 1000:.0f} ms wall | git ls-remote each, "
          f"sequential: {ls * 1000:.0f} ms | own CPU {own * 1000:.0f} ms; first poll (clone + load) "
          f"{first:.2f} s | own time <= 0.3 s: {verdict} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
