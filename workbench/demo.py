"""``make demo``: the Shops release end to end on the embedded defaults.

A fresh demo workspace (``demo-workspace/``) gets the repository's Shops
pipelines, small git repositories for the five components and the shared
config, and routes served by a real nginx on loopback when nginx is installed
(else the ``command`` provider, and it says so). Then the release runs with
the SQLite store and local jobs: the components build from their commits, the
QA deploy fans in at 50% and waits for a QA member, who approves 100%; the
packages are promoted; production moves 5 -> 25 -> 50 -> 75 -> 100 with a
release manager approving each step. Finally a commit to ``ui`` triggers only
ui and then the QA deploy, and a commit to ``db`` only db.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import urllib.request
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import WorkbenchError
from .status import Status

REPO_ROOT = Path(__file__).resolve().parents[1]


def _say(text: str = "") -> None:
    print(text, flush=True)


def _split(url: str, n: int = 200) -> str:
    """Send ``n`` requests through the route and say which stack answered how many, as percentages."""
    counts: dict[str, int] = {}
    for _ in range(n):
        with urllib.request.urlopen(url, timeout=5) as r:
            stack = r.read().decode().strip()
        counts[stack] = counts.get(stack, 0) + 1
    return " ".join(f"{k} {100 * v / n:.0f}%" for k, v in sorted(counts.items())) + f" of {n} requests"


def _prepare(target: Path) -> tuple[dict[str, str], list[Callable[[], None]], dict[str, str]]:
    from .demo_repos import make_shops_repos
    from .traffic.demo import start_demo_nginx

    if target.exists():
        shutil.rmtree(target)
    (target / "pipelines").mkdir(parents=True)
    shutil.copytree(REPO_ROOT / "pipelines" / "scripts", target / "pipelines" / "scripts")
    shutil.copy(REPO_ROOT / "pipelines" / "shops.gocd.yaml", target / "pipelines")
    repos = make_shops_repos(target / "demo-repos")
    stops: list[Callable[[], None]] = []
    urls: dict[str, str] = {}
    routes: dict[str, Any] = {}
    for name in ("shops-qa", "shops-prod"):
        cfg, stop = start_demo_nginx(target, say=lambda s, n=name: _say(f"  {n} {s}"), name=name)
        stops.append(stop)
        if cfg.get("url"):
            urls[name] = cfg["url"]
        routes[name] = cfg
    text = "# written by make demo\nformat_version: 10\n" + yaml.safe_dump({"routes": routes}, sort_keys=False)
    (target / "pipelines" / "routes.yaml").write_text(text)
    return repos, stops, urls


def _rev(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("label") or str(value.get("revision", ""))[:7])
    return str(value)[:7]


def _show_runs(ws: Any, since_id: int) -> int:
    runs = sorted((r for r in ws.store.pipeline_runs(limit=200) if r.id > since_id), key=lambda r: r.id)
    for r in runs:
        revs = ", ".join(f"{k}@{_rev(v)}" for k, v in r.revisions.items())
        _say(f"    {r.pipeline:<20} #{r.counter:<2} {r.status.value:<8} label {r.label:<12} {revs[:70]}")
    return max([since_id, *(r.id for r in runs)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workbench.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", default="demo-workspace", help="demo workspace to (re)create (default: demo-workspace)")
    args = ap.parse_args(argv)
    from . import approvals, triggering
    from .demo_repos import commit
    from .workspace import Workspace

    target = Path(args.workspace).resolve()
    stops: list[Callable[[], None]] = []
    try:
        _say(f"Release Workbench demo in {target}")
        repos, stops, urls = _prepare(target)
        ws = Workspace.open(target)
        _say(f"  {len(ws.config.pipelines)} pipelines, store {ws.store.url}\n")

        _say("1. A tick polls the six repositories: every component builds, tests, packages and pushes to QA;")
        _say("   search, api and ui fan in to qa_deploy, which installs at 50% and waits for QA:")
        triggering.tick(ws)
        last = _show_runs(ws, 0)
        if "shops-qa" in urls:
            _say(f"    QA traffic now: {_split(urls['shops-qa'])}")

        _say("\n2. carol (role qa) approves 100% on the QA stack; the packages are promoted; production installs:")
        approvals.approve(ws, "qa_deploy/latest/inc_canary_qa_100", user="carol", comment="QA checks passed")
        triggering.tick(ws)
        last = _show_runs(ws, last)

        _say("\n3. alice (release-managers) approves each production step; traffic moves on a real route:")
        for step in (5, 25, 50, 75, 100):
            run = approvals.approve(ws, f"prod_deploy/latest/install_prod_{step}", user="alice",
                                    comment=f"metrics fine, go to {step}%")
            split = f"  measured split {_split(urls['shops-prod'])}" if "shops-prod" in urls else ""
            _say(f"    install_prod_{step:<3} approved -> run {run.status.value}{split}")

        _say("\n4. A commit to ui triggers only ui, then qa_deploy with the latest search and api:")
        commit(repos["ui"], {"app.py": "print('new checkout page')\n"}, "ui: new checkout page")
        triggering.tick(ws)
        last = _show_runs(ws, last)
        _say("   A commit to db triggers only db:")
        commit(repos["db"], {"schema.sql": "create table shops (id int);\n"}, "db: shops table")
        triggering.tick(ws)
        last = _show_runs(ws, last)

        from .reporting import print_status, status_rows

        _say("")
        print_status(status_rows(ws))
        prod = ws.store.get_pipeline_run("prod_deploy", 1)
        ok = prod.status == Status.PASSED
        waiting = approvals.pending_approvals(ws)
        ws.close()
    except WorkbenchError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    except (OSError, RuntimeError) as exc:  # e.g. nginx could not start: say so, no traceback
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        for stop in stops:
            stop()
    w = f"-w {target}"
    _say("\nWhat to look at next:")
    _say(f"  .venv/bin/workbench {w} status                 # every pipeline's latest run, stage by stage")
    _say(f"  .venv/bin/workbench {w} history -n 20          # runs, newest first (--format json|csv)")
    _say(f"  .venv/bin/workbench {w} logs ui/1/build/build  # a job's log")
    _say(f"  .venv/bin/workbench {w} audit                  # who approved what, when")
    _say(f"  .venv/bin/workbench {w} metrics                # DORA metrics of this history")
    _say(f"  .venv/bin/workbench {w} approvals              # what waits for whom")
    for p in waiting:
        who = (p.get("may_approve") or ["anyone"])[0]
        _say(f"  JUPYTERHUB_USER={who} .venv/bin/workbench {w} approve {p['locator']} -m 'QA ok'"
             f"   # act as {who} ({p['approvers']}); locally the name is asserted")
    _say(f"  .venv/bin/workbench {w} server                 # the release service: signed-in approvals "
         "(docs/server.md)")
    _say(f"  In a notebook: from workbench import Workspace; Workspace.open('{target}').frames.job_runs")
    if urls:
        _say("  The demo's nginx was stopped; the next traffic step starts it again on the same port "
             f"(stop it then with: nginx -p {target}/.workbench/demo-traffic/nginx/NAME/ -s stop).")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
