"""Make binder/sample-history: the Shops example's own runs, exported for the analysis notebook.

Every number in the sample comes from real runs of the Shops example as
shipped (pipelines/shops.gocd.yaml, pipelines/routes.yaml and its scripts;
jobs, approvals by the example's named people, traffic moved through its
routes' `command` provider, a rollback, an incident and its hotfix) in a
temporary workspace, with the example's git repositories made by
workbench.demo_repos where `make demo` puts them. What the script adds is
the calendar and the commits: dated commits to the components' repositories
before each release (one of them breaks a build), and a process clock that
jumps hours and days between steps, so a few minutes of real runs spread
over six weeks; durations inside a job are real.

    .venv/bin/python binder/make_sample_history.py [OUT]   # default: binder/sample-history
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


REPO = Path(__file__).resolve().parents[1]
START = 1704704400.0  # Monday 2024-01-08 09:00 UTC
_real_time = time.time


class Clock:
    """The process's wall clock, shifted: ``at(day, hour)`` jumps to that moment of the simulated calendar."""

    def __init__(self) -> None:
        self.offset = START - _real_time()
        time.time = lambda: _real_time() + self.offset  # type: ignore[assignment]

    def now(self) -> float:
        return time.time()

    def at(self, day: float, hour: float = 9.0) -> None:
        target = START + day * 86400 + (hour - 9.0) * 3600
        if target > self.now():
            self.offset += target - self.now()

    def later(self, hours: float) -> None:
        self.offset += hours * 3600

    def iso(self, hours_ago: float = 0.0) -> str:
        """A git date (``EPOCH +0000``) ``hours_ago`` before now."""
        return f"{int(self.now() - hours_ago * 3600)} +0000"


def _commit(repo: str, files: dict[str, str], message: str, when: str) -> None:
    import git

    from workbench.demo_repos import AUTHOR

    r = git.Repo(repo)
    try:
        for name, content in files.items():
            (Path(repo) / name).write_text(content)
        r.index.add(list(files))
        r.index.commit(message, author=AUTHOR, committer=AUTHOR, author_date=when, commit_date=when)
    finally:
        r.close()


def generate(out: Path, *, releases: int = 8) -> dict[str, Any]:
    clock = Clock()
    from workbench.approvals import approve
    from workbench.demo_repos import make_shops_repos
    from workbench.metrics.io import export
    from workbench.metrics_store import mark_hotfix, open_incident, resolve_incident
    from workbench.status import Status
    from workbench.traffic import rollback
    from workbench.workspace import Workspace

    with tempfile.TemporaryDirectory(prefix="wb-sample-") as tmp:
        root = Path(tmp)
        ws_dir = root / "shops"
        (ws_dir / "pipelines").mkdir(parents=True)
        # the example exactly as shipped: its pipelines, routes (the `command` provider records the
        # weights it is given) and scripts, and its git repositories where `make demo` puts them
        for name in ("shops.gocd.yaml", "routes.yaml"):
            shutil.copy(REPO / "pipelines" / name, ws_dir / "pipelines" / name)
        shutil.copytree(REPO / "pipelines" / "scripts", ws_dir / "pipelines" / "scripts")
        repos = make_shops_repos(ws_dir / "demo-repos")
        for name in ("db", "batch", "search", "api", "ui"):  # something for shops.sh to compile
            _commit(repos[name], {"app.py": f"print('{name}')\n"}, f"{name}: the application", clock.iso(hours_ago=72))
        os.environ["WORKBENCH_WORKSPACE"] = str(ws_dir)
        os.environ["JUPYTERHUB_USER"] = "shops-ci"  # who triggers; approvers are named per approval
        ws = Workspace.open(ws_dir)
        say = print

        def run(name: str) -> Any:
            r = ws.run(name)
            say(f"  {time.strftime('%Y-%m-%d %H:%M', time.gmtime(clock.now()))} {name} #{r.counter}: {r.status.value}")
            return r

        for n in range(releases):
            day = n * 5 + (n % 2)  # a release a week or so, on varying weekdays
            clock.at(day, 9)
            say(f"release {n + 1}")
            changed = [c for i, c in enumerate(("search", "api", "ui", "db", "batch")) if n == 0 or (n + i) % 3 != 1]
            for i, comp in enumerate(changed):
                for k in range(1 + (n + i) % 3):  # 1-3 commits, made during the previous days
                    when = clock.iso(hours_ago=4 + 20 * k + 7 * i)
                    files = {"VERSION": f"1.{n}.{k}\n"}
                    if n == 2 and comp == "api" and k == 0:
                        files["broken.py"] = "def oops(:\n"  # a bad commit: the build fails, a fix follows
                    _commit(repos[comp], files, f"{comp}: change {n}.{k}", when)
            for comp in changed:
                r = run(comp)
                if r.status == Status.FAILED:  # the fix landed after the failing build: build again
                    clock.later(1)
                    _commit(repos[comp], {"broken.py": "def oops():\n    return 2\n"}, f"{comp}: fix the build", clock.iso())
                    run(comp)
            clock.later(2)
            qa = run("qa_deploy")
            clock.later(3 + n % 4)
            approve(ws, f"qa_deploy/{qa.counter}/inc_canary_qa_100", user="carol", comment="QA checks pass")
            clock.later(1)
            run("promote_qa_to_prod")
            clock.later(16)  # the next morning
            prod = run("prod_deploy")
            # the example's rollout: one manually approved stage per traffic step
            steps = [s.name for s in ws.config.pipelines["prod_deploy"].stages if s.traffic is not None]
            for i, stage in enumerate(steps):
                clock.later(0.5 + (i + n) % 3)
                if n == 3 and stage == "install_prod_50":
                    rollback(ws, f"prod_deploy/{prod.counter}", user="bob", reason="5xx on the green stack at 25%")
                    say(f"  prod_deploy #{prod.counter} rolled back by bob")
                    break
                approve(ws, f"prod_deploy/{prod.counter}/{stage}", user="alice" if i % 2 else "bob",
                        comment=f"{stage.rsplit('_', 1)[1]}% looks healthy")
            if n == 5:  # an incident blamed on this release, fixed by a hotfix release the same day
                clock.later(2)
                inc = open_incident(ws, "checkout latency doubled", caused_by=f"prod_deploy/{prod.counter}",
                                    severity="major", user="alice")
                clock.later(1)
                _commit(repos["api"], {"VERSION": f"1.{n}.hotfix\n"}, "api: revert the slow query", clock.iso())
                run("api")
                hot_qa = run("qa_deploy")
                approve(ws, f"qa_deploy/{hot_qa.counter}/inc_canary_qa_100", user="carol", comment="hotfix checked")
                run("promote_qa_to_prod")
                hot = run("prod_deploy")
                for stage in steps:
                    clock.later(0.25)
                    approve(ws, f"prod_deploy/{hot.counter}/{stage}", user="alice", comment="hotfix")
                mark_hotfix(ws, f"prod_deploy/{hot.counter}", incident=inc.id, user="alice")
                clock.later(0.5)
                resolve_incident(ws, inc.id, user="alice")
        manifest = export(ws, out, fmt="csv")
        ws.close()
        # the temporary folder's name is noise in a committed sample (log paths, repository URLs)
        for f in Path(out).glob("*.csv"):
            f.write_text(f.read_text().replace(str(root), "/sample"))
    time.time = _real_time  # type: ignore[assignment]
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", default=str(REPO / "binder" / "sample-history"))
    ap.add_argument("--releases", type=int, default=8)
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    manifest = generate(out, releases=args.releases)
    rows = {k: v["rows"] for k, v in manifest["frames"].items()}
    print(f"wrote {out}: " + ", ".join(f"{k} {v}" for k, v in sorted(rows.items()) if v))
    return 0


if __name__ == "__main__":
    sys.exit(main())
