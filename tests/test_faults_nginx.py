"""A real nginx that dies mid-reload, or is dead during a rollout step.

The step fails saying why, the config file nginx would serve is put back, the
store keeps the weights it had, and once nginx is started again it serves
exactly what the store recorded; the step can then be rerun. Killing is done
with SIGKILL on the master and its workers (a killed master alone leaves its
workers serving). "Mid-reload" uses the route's ``reload:`` option: a program
that sends nginx its reload signal and then kills it, so the new config is
never confirmed.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from reliability_fixtures import invariant_violations
from traffic_fixtures import nginx_route, percent, split  # noqa: F401  (fixture)
from workbench.approvals import approve
from workbench.status import Status
from workbench.traffic import provider_for, reconcile, route_of
from workbench.traffic import state as T

pytestmark = pytest.mark.timeout(240)

RELOAD = r'''
import os, signal, sys, time
import psutil
pid_file, flag = sys.argv[1], sys.argv[2]
master = int(open(pid_file).read())
os.kill(master, signal.SIGHUP)  # what `nginx -s reload` sends
if os.path.exists(flag):  # ... and nginx dies in the middle of it
    time.sleep(0.05)
    kill_nginx = psutil.Process(master)
    for p in [*kill_nginx.children(recursive=True), kill_nginx]:
        p.kill()
'''


def pipeline(route: dict[str, Any]) -> str:
    job = {"tasks": [{"exec": {"command": "true"}}]}
    manual = {"type": "manual", "users": ["alice"]}
    return yaml.safe_dump({"format_version": 10, "routes": {"shop": route}, "pipelines": {"rel": {"group": "g", "stages": [
        {"build": {"jobs": {"j": job}}},
        {"canary": {"approval": manual, "traffic": {"route": "shop", "weight": 25}, "jobs": {"j": job}}},
        {"full": {"approval": manual, "traffic": {"route": "shop", "weight": 100}, "jobs": {"j": job}}},
    ]}}}, sort_keys=False)


def kill_nginx(nginx: Any) -> None:
    master = psutil.Process(nginx.proc.pid)
    procs = [*master.children(recursive=True), master]
    for p in procs:
        p.kill()
    nginx.proc.wait(10)
    psutil.wait_procs(procs, timeout=10)


def restart(nginx: Any, url: str) -> None:
    """Start nginx again after its death (the dead master's stderr pipe closed first)."""
    nginx.proc.wait(10)
    if nginx.proc.stderr:
        nginx.proc.stderr.close()
    nginx.start(wait_url=url)


def served_green(url: str) -> float:
    seen = split(url, 200)
    assert sum(seen.values()) == 200 and set(seen) <= {"blue", "green"}, seen
    return percent(seen, "green")


def stage(ws: Any, name: str) -> tuple[str, str]:
    df = ws.frames.stage_runs
    row = df[df["stage"] == name].sort_values("stage_counter").iloc[-1]
    return str(row["status"]), str(row["reason"])


def test_nginx_dead_or_killed_mid_reload_fails_the_step_and_serves_the_recorded_weights(
        workspace: Any, nginx_route: Any, tmp_path: Path) -> None:
    nginx = nginx_route.nginx
    flag = tmp_path / "die-while-reloading"
    script = tmp_path / "reload.py"
    script.write_text(RELOAD)
    route = {**nginx_route.config, "confirm_timeout": 3,
             "reload": [sys.executable, str(script), str(nginx.prefix / "nginx.pid"), str(flag)]}
    workspace.write("rel.yaml", pipeline(route))
    ws = workspace.open()
    assert ws.run("rel").status == Status.WAITING
    r = route_of(ws.config, "shop", ws.root)

    def recorded() -> dict[str, int]:
        return T.read_state(ws.store, r).weights

    # 1. nginx killed in the middle of the canary's reload: the step fails, the old file is back
    flag.write_text("")
    run = approve(ws, "rel/1/canary", user="alice")
    assert run.status == Status.FAILED
    status, reason = stage(ws, "canary")
    assert status == "failed" and reason.startswith("traffic step failed: route shop: nginx did not serve"), reason
    assert "previous config was put back" in reason
    assert recorded() == {"blue": 100, "green": 0} == provider_for(r).current_weights(r)
    assert nginx.proc.poll() is not None  # it is dead
    flag.unlink()
    restart(nginx, nginx_route.url)  # recovery: nginx comes back with the file the store agrees with
    assert served_green(nginx_route.url) == 0
    assert reconcile(ws, "shop")["reapplied"] is False  # nothing to put back
    with ws.engine() as engine:  # the step can be rerun, and moves the traffic this time
        engine.rerun(run, "canary", by="alice")
        assert engine.drive(run.id).status == Status.WAITING
    assert recorded() == {"blue": 75, "green": 25}
    assert abs(served_green(nginx_route.url) - 25) <= 7

    # 2. nginx dead (killed) before the next step: the reload fails at once, nothing moves
    kill_nginx(nginx)
    run = approve(ws, "rel/1/full", user="alice")
    assert run.status == Status.FAILED
    status, reason = stage(ws, "full")
    assert status == "failed" and "traffic step failed: route shop: nginx reload" in reason, reason
    assert recorded() == {"blue": 75, "green": 25} == provider_for(r).current_weights(r)
    restart(nginx, nginx_route.url)
    assert abs(served_green(nginx_route.url) - 25) <= 7  # what the store says, after recovery
    changes = ws.frames.traffic
    assert list(changes["outcome"]) == ["failed", "ok", "failed"]
    assert invariant_violations(workspace.root / ".workbench" / "store.db",
                                served_weights={"shop": provider_for(r).current_weights(r)}) == []
    ws.close()
