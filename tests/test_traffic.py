"""Routes, providers, rollout stages and rollback, against a real nginx and a real HAProxy.

The nginx and HAProxy here run as the current user on loopback ports in front
of two small backends that answer with their stack's name (traffic_fixtures),
so "the split" is what a few hundred real requests got.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from traffic_fixtures import SteadyClient, get, haproxy_route, nginx_route, percent, split  # noqa: F401 (fixtures)
from workbench.approvals import approve
from workbench.config import load_texts
from workbench.errors import ConfigError, InvalidState, TrafficError, Unauthorized
from workbench.status import Status
from workbench.traffic import (check_weights, expand_rollout, move, parse_route, plan, reconcile, rollback,
                               rollout_problems, route_of, route_status)
from workbench.traffic.nginx import render
from workbench.traffic.routes import Route
from workbench.traffic.state import RouteState

pytestmark = pytest.mark.timeout(180)

STEPS = [5, 25, 50, 75, 100]


def pipeline_yaml(route: dict[str, Any], *, steps: list[int] = STEPS, analysis: str | None = None,
                  extra: str = "") -> str:
    rollout: dict[str, Any] = {"route": "shop", "steps": steps,
                               "approval": {"type": "manual", "roles": ["release-managers"]}}
    if analysis:
        rollout["analysis"] = analysis
    doc = {
        "format_version": 10,
        "roles": {"release-managers": ["alice", "bob"], "qa": ["carol"]},
        "routes": {"shop": route},
        "pipelines": {"release": {
            "group": "shop",
            "rollout": rollout,
            "stages": [{"build": {"jobs": {"package": {"tasks": [{"exec": {"command": "true"}}]}}}}],
        }},
    }
    return yaml.safe_dump(doc, sort_keys=False) + extra


def release_ws(workspace: Any, route: dict[str, Any], **kw: Any) -> Any:
    workspace.write("release.yaml", pipeline_yaml(route, **kw))
    ws = workspace.open()
    run = ws.run("release")
    assert run.status == Status.WAITING
    return ws


def step(ws: Any, counter: int, weight: int, user: str = "alice") -> Any:
    return approve(ws, f"release/{counter}/install_shop_{weight}", user=user, comment=f"go {weight}%")


def assert_split(url: str, green: int, n: int = 400) -> None:
    seen = split(url, n)
    assert sum(seen.values()) == n and set(seen) <= {"blue", "green"}, seen
    assert abs(percent(seen, "green") - green) <= 5, (green, seen)


# -- pure parts -------------------------------------------------------------------------------

def test_route_parsing_reports_every_problem() -> None:
    ok, problems = parse_route("shop", {"provider": "command", "stacks": {"blue": "a:1", "green": "b:2"}, "argv": ["x"]})
    assert problems == [] and ok is not None and ok.live == "blue" and ok.other("blue") == "green"
    cases = {
        "needs `provider:`": {"stacks": {"blue": "a", "green": "b"}},
        "unknown provider 'ngnix'": {"provider": "ngnix", "stacks": {}},
        "exactly two stacks": {"provider": "command", "argv": ["x"], "stacks": {"blue": "a"}},
        "live stack 'red'": {"provider": "command", "argv": ["x"], "stacks": {"blue": "a", "green": "b"}, "live": "red"},
        "unknown option 'socket' for provider nginx": {"provider": "nginx", "conf": "x", "socket": "/s",
                                                       "stacks": {"blue": "a", "green": "b"}},
        "nginx needs `conf:`": {"provider": "nginx", "stacks": {"blue": "a", "green": "b"}},
        "no server for stack green": {"provider": "haproxy", "socket": "/s", "servers": {"blue": "b1"},
                                      "stacks": {"blue": "a", "green": "b"}},
        "`argv:` must be a program": {"provider": "command", "stacks": {"blue": "a", "green": "b"}},
    }
    for expected, raw in cases.items():
        route, problems = parse_route("shop", raw)
        assert route is None and any(expected in p for p in problems), (expected, problems)


def test_weights_are_checked() -> None:
    route = Route("shop", "command", {"blue": "a", "green": "b"}, "blue")
    assert check_weights(route, {"blue": 95, "green": 5}) == {"blue": 95, "green": 5}
    for bad, msg in (({"blue": 90, "green": 5}, "add up to 100"), ({"blue": 101, "green": -1}, "0 to 100"),
                     ({"blue": 50, "red": 50}, "no stack red"), ({"blue": 50.5, "green": 49.5}, "whole number")):
        with pytest.raises(TrafficError, match=msg):
            check_weights(route, bad)


def test_plan_alternates_blue_and_green() -> None:
    route = Route("shop", "command", {"blue": "a", "green": "b"}, "blue")
    st = RouteState("shop", {"blue": 100, "green": 0}, "blue", None, None, None)
    w, st = plan(route, st, 25, run_id=1)
    assert w == {"blue": 75, "green": 25} and (st.live, st.candidate, st.run_id) == ("blue", "green", 1)
    w, st = plan(route, st, 100, run_id=1)
    assert w == {"blue": 0, "green": 100} and (st.live, st.candidate) == ("green", None)
    w, st = plan(route, st, 5, run_id=2)  # the next release goes to the other stack
    assert w == {"blue": 5, "green": 95} and (st.live, st.candidate, st.run_id) == ("green", "blue", 2)


def test_nginx_render_never_hides_canary_errors() -> None:
    route = Route("shop", "nginx", {"blue": "127.0.0.1:8001", "green": "127.0.0.1:8002"}, "blue",
                  options={"conf": "x.conf", "listen": "127.0.0.1:8080"})
    text = render(route, {"blue": 100, "green": 0}, "s1")
    assert "server 127.0.0.1:8001 weight=100 max_fails=0;" in text
    assert "server 127.0.0.1:8002 down;" in text and "weight=0" not in text  # nginx refuses weight=0
    assert "proxy_next_upstream off;" in text
    assert '# workbench-weights: {"blue": 100, "green": 0}' in text
    assert "listen 127.0.0.1:8080;" in text and "proxy_pass http://shop;" in text


def test_rollout_expansion() -> None:
    stages = expand_rollout({"route": "prod", "steps": [5, 25, 100], "approval": {"type": "manual", "users": ["alice"]},
                             "analysis": "notebooks/canary_analysis.ipynb", "parameters": {"threshold": 0.01}})
    assert [s.name for s in stages] == ["install_prod_5", "install_prod_25", "install_prod_100"]
    assert [(s.traffic.route, s.traffic.weight) for s in stages] == [("prod", 5), ("prod", 25), ("prod", 100)]
    assert all(s.approval.manual and s.approval.users == ("alice",) for s in stages)
    [job] = stages[1].jobs
    nb, rb = job.tasks
    assert nb.kind == "notebook" and nb.path == "notebooks/canary_analysis.ipynb"
    assert nb.parameters == {"threshold": 0.01, "route": "prod", "weight": 25, "previous_weight": 5,
                             "step": "install_prod_25"}
    assert (rb.kind, rb.run_if) == ("rollback", "failed")
    plain = expand_rollout({"route": "r", "steps": [50, 100], "approval": "success", "name": "shift", "analysis": "./check.sh"})
    assert [s.name for s in plain] == ["shift_50", "shift_100"] and not plain[0].approval.manual
    assert plain[0].jobs[0].tasks[0].kind == "script" and plain[1].environment_variables["WORKBENCH_PREVIOUS_WEIGHT"] == "50"
    assert expand_rollout({"route": "r", "steps": [100]})[0].jobs[0].tasks[0].kind == "traffic_step"
    assert rollout_problems({"route": "r", "steps": [50, 25], "bogus": 1}) == [
        "unknown key 'bogus' in rollout", "steps of rollout must increase, found 25 after 50"]
    with pytest.raises(ConfigError, match="must be from 1 to 100, found 0"):
        expand_rollout({"route": "r", "steps": [0, 150]})
    # plain data is read by the same parser as a file: GoCD's booleans, numbers as text, minutes
    [typed] = expand_rollout({"route": "r", "steps": ["100"], "analysis": "./check.sh", "timeout": 15,
                              "approval": {"users": ["a"], "allow_only_on_success": "false"}})
    assert typed.traffic.weight == 100 and typed.approval.manual and not typed.approval.allow_only_on_success
    assert typed.jobs[0].timeout == 900.0


ROLLOUT_FILE = """\
roles: {release-managers: [alice]}
routes:
  shop: {provider: command, stacks: {blue: "a:1", green: "b:2"}, argv: ["true"]}
pipelines:
  release:
    parameters: {route: shop, first: "5", window: 90s, strict: "false", approver: alice, limit: "0.01"}
    stages: [{build: {tasks: [{script: make}]}}]
    rollout:
      route: "#{route}"
      name: "prod_#{route}"
      steps: ["#{first}", 50, "100"]
      approval: {users: ["#{approver}"], roles: [release-managers], allow_only_on_success: "#{strict}"}
      analysis: notebooks/canary_analysis.ipynb
      parameters: {max_error_rate: "#{limit}"}
      timeout: "#{window}"
"""


def test_rollout_values_get_parameters_and_typed_parsing() -> None:
    import workbench.features

    workbench.features.load()
    stages = load_texts({"r.yaml": ROLLOUT_FILE}).pipeline("release").stages[1:]
    assert [s.name for s in stages] == ["prod_shop_5", "prod_shop_50", "prod_shop_100"]
    assert [(s.traffic.route, s.traffic.weight) for s in stages] == [("shop", 5), ("shop", 50), ("shop", 100)]
    approval = stages[0].approval
    assert (approval.type, approval.users, approval.roles) == ("manual", ("alice",), ("release-managers",))
    assert approval.allow_only_on_success is False  # the string "false" is false, as everywhere else
    job = stages[1].jobs[0]
    assert job.timeout == 90.0
    assert job.tasks[0].parameters["max_error_rate"] == "0.01" and job.tasks[0].parameters["previous_weight"] == 5
    # a number is minutes, as a job's timeout is (GoCD); "never" is no limit
    minutes = load_texts({"r.yaml": ROLLOUT_FILE.replace('"#{window}"', "20")}).pipeline("release")
    assert minutes.stages[1].jobs[0].timeout == 1200.0
    never = load_texts({"r.yaml": ROLLOUT_FILE.replace('"#{window}"', "never")}).pipeline("release")
    assert never.stages[1].jobs[0].timeout is None


def test_rollout_wrong_types_are_located_errors() -> None:
    import workbench.features

    workbench.features.load()
    bad = (ROLLOUT_FILE.replace('["#{first}", 50, "100"]', '[50, "#{first}", 150, many]')
           .replace('allow_only_on_success: "#{strict}"', "allow_only_on_success: maybe")
           .replace('"#{window}"', "soon").replace('name: "prod_#{route}"', 'name: "#{nope}"'))
    with pytest.raises(ConfigError) as err:
        load_texts({"r.yaml": bad})
    assert [str(p) for p in err.value.problems] == [
        "r.yaml:10:13: unknown parameter 'nope' in '#{nope}' (parameters of pipeline 'release': approver, first, "
        "limit, route, strict, window)",
        "r.yaml:11:19: steps of rollout of pipeline 'release' must increase, found 5 after 50",
        "r.yaml:11:31: each step of rollout of pipeline 'release' (a percentage) must be from 1 to 100, found 150",
        "r.yaml:11:36: each step of rollout of pipeline 'release' (a percentage) must be a whole number, found a string",
        "r.yaml:12:92: allow_only_on_success of approval must be true or false, found a string",
        "r.yaml:15:16: timeout of rollout of pipeline 'release' must be a number of minutes, a duration such as "
        "\"30s\", \"5m\" or \"1h\", or \"never\"; found a string 'soon'"]


def test_yaml_routes_rollout_and_unknown_routes() -> None:
    import workbench.features

    workbench.features.load()
    route = {"provider": "command", "stacks": {"blue": "a:1", "green": "b:2"}, "argv": ["true"]}
    cfg = load_texts({"r.yaml": pipeline_yaml(route)})
    p = cfg.pipeline("release")
    assert [s.name for s in p.stages] == ["build"] + [f"install_shop_{w}" for w in STEPS]
    assert isinstance(cfg.extensions["routes"]["shop"], Route)
    bad = pipeline_yaml(route).replace("route: shop", "route: shpo")
    with pytest.raises(ConfigError) as err:
        load_texts({"r.yaml": bad})
    assert "moves traffic of unknown route 'shpo' (did you mean 'shop'?)" in str(err.value)
    assert "r.yaml:" in str(err.value)
    # without any `routes:` section (routes kept elsewhere) it is a warning, as unknown roles are
    no_section = yaml.safe_load(pipeline_yaml(route))
    del no_section["routes"]
    cfg = load_texts({"r.yaml": yaml.safe_dump(no_section)})
    assert any("no file has a `routes:` section" in str(w) for w in cfg.warnings)


# -- nginx --------------------------------------------------------------------------------------

def test_nginx_rollout_steps_split_as_asked(workspace: Any, nginx_route: Any) -> None:
    ws = release_ws(workspace, nginx_route.config)
    assert_split(nginx_route.url, 0, 100)
    for w in STEPS:
        run = step(ws, 1, w)
        assert_split(nginx_route.url, w)
    assert run.status == Status.PASSED
    changes = ws.frames.traffic
    assert list(changes["weight"]) == STEPS and set(changes["outcome"]) == {"ok"}
    assert list(changes["actor"]) == ["alice"] * 5 and list(changes["stage"]) == [f"install_shop_{w}" for w in STEPS]
    assert changes.loc[0, "from_weights"] == {"blue": 100, "green": 0}
    assert changes.loc[4, "to_weights"] == {"blue": 0, "green": 100}
    weights = ws.frames.traffic_weights.set_index("stack")
    assert weights.loc["green", "weight"] == 100 and bool(weights.loc["green", "live"])


def test_nginx_reload_under_steady_requests_drops_none(workspace: Any, nginx_route: Any) -> None:
    workspace.write("release.yaml", pipeline_yaml(nginx_route.config))
    ws = workspace.open()
    with SteadyClient(nginx_route.url) as client:
        client.wait_for(10)
        for w in (10, 30, 50, 70, 90, 40, 0):
            before = client.ok
            move(ws, "shop", w, actor="test", reason="reload under load")
            client.wait_for(before + 10)  # requests kept flowing across this reload
    assert client.failures == [] and client.ok >= 80


def test_nginx_canary_errors_reach_the_client(workspace: Any, nginx_route: Any) -> None:
    """A dead canary is not papered over by retries on the stable stack (proxy_next_upstream off, max_fails=0)."""
    workspace.write("release.yaml", pipeline_yaml(nginx_route.config))
    ws = workspace.open()
    move(ws, "shop", 50, actor="test", reason="canary")
    nginx_route.backends["green"].stop()  # the canary refuses connections
    seen = split(nginx_route.url, 200)
    assert abs(percent(seen, "error 502") - 50) <= 5 and abs(percent(seen, "blue") - 50) <= 5, seen


def test_nginx_broken_template_leaves_the_old_config_serving(workspace: Any, nginx_route: Any, tmp_path: Path) -> None:
    template = tmp_path / "shop.conf.tmpl"
    template.write_text("$upstream_block\n$server_block\n")
    cfg = {**nginx_route.config, "template": str(template)}
    ws = release_ws(workspace, cfg)
    step(ws, 1, 5)
    assert_split(nginx_route.url, 5)
    conf = Path(cfg["conf"])
    before = conf.read_text()
    template.write_text("$upstream_block\n$server_block\nupstream broken { server ; }\n")  # nginx -t refuses this
    run = step(ws, 1, 25)
    assert run.status == Status.FAILED
    stage = ws.frames.stage_runs.set_index("stage").loc["install_shop_25"]
    assert stage["status"] == "failed" and "traffic step failed" in stage["reason"] and "nginx -t" in stage["reason"]
    assert "the previous config was put back" in stage["reason"]
    assert conf.read_text() == before
    assert_split(nginx_route.url, 5)  # still the old weights, served by the old config
    last = ws.frames.traffic.iloc[-1]
    assert last["outcome"] == "failed" and last["weight"] == 25 and "nginx -t" in last["error"]
    assert route_status(ws)[0]["weights"] == {"blue": 95, "green": 5}  # the recorded weights did not move


def test_nginx_rollback_at_50_returns_all_traffic_to_the_old_stack(workspace: Any, nginx_route: Any) -> None:
    ws = release_ws(workspace, nginx_route.config)
    for w in (5, 25, 50):
        step(ws, 1, w)
    assert_split(nginx_route.url, 50)
    with pytest.raises(Unauthorized):
        rollback(ws, "release/1", user="carol", reason="not mine to roll back")
    assert_split(nginx_route.url, 50, 100)
    done = rollback(ws, "release/1", user="bob", reason="5xx on the canary")
    assert done == [{"route": "shop", "from": {"blue": 50, "green": 50}, "to": {"blue": 100, "green": 0}, "live": "blue"}]
    assert_split(nginx_route.url, 0)
    run = ws.store.get_pipeline_run("release", 1)
    assert run.status == Status.FAILED and run.reason == "rolled back by bob: 5xx on the canary"
    stage = ws.frames.stage_runs.set_index("stage").loc["install_shop_75"]
    assert stage["status"] == "cancelled"
    with pytest.raises(InvalidState, match="cancelled, not waiting"):
        step(ws, 1, 75)
    [rb] = ws.frames.rollbacks.to_dict("records")
    assert (rb["pipeline"], rb["counter"], rb["by"], rb["automatic"], rb["route"]) == ("release", 1, "bob", False, "shop")
    with pytest.raises(InvalidState, match="already rolled back by bob"):
        rollback(ws, "release/1", user="alice")
    audit = ws.frames.audit
    assert list(audit[audit.action == "rollback"]["outcome"]) == ["unauthorized", "ok", "refused"]


def test_nginx_rollback_after_100_is_refused_and_next_release_alternates(workspace: Any, nginx_route: Any) -> None:
    ws = release_ws(workspace, nginx_route.config)
    for w in STEPS:
        step(ws, 1, w)
    with pytest.raises(InvalidState, match="refused after 100%"):
        rollback(ws, "release/1", user="alice", reason="too late")
    assert_split(nginx_route.url, 100, 100)
    assert ws.frames.rollbacks.empty
    # release 2 rolls out to the stack that is idle now (blue)
    assert ws.run("release").status == Status.WAITING
    step(ws, 2, 5)
    seen = split(nginx_route.url, 400)
    assert abs(percent(seen, "blue") - 5) <= 5 and abs(percent(seen, "green") - 95) <= 5, seen


def test_failed_analysis_rolls_back_automatically(workspace: Any, nginx_route: Any, tmp_path: Path) -> None:
    healthy = tmp_path / "canary-healthy"
    healthy.touch()
    ws = release_ws(workspace, nginx_route.config, analysis=f"test -f {healthy}")
    step(ws, 1, 5)
    step(ws, 1, 25)
    assert_split(nginx_route.url, 25)
    healthy.unlink()  # the canary analysis will now fail
    run = step(ws, 1, 50)
    assert run.status == Status.FAILED
    assert_split(nginx_route.url, 0)
    [rb] = ws.frames.rollbacks.to_dict("records")
    assert rb["automatic"] and rb["by"] == "run release/1" and "canary analysis failed at 25%" in rb["reason"]
    jobs = ws.frames.job_runs
    log = Path(jobs[jobs.stage == "install_shop_50"]["log_path"].iloc[0]).read_text()
    assert "rolled back route shop" in log
    assert ws.frames.traffic["weight"].tolist() == [5, 25, 0]


# -- HAProxy -----------------------------------------------------------------------------------

def test_haproxy_steps_split_as_asked_and_survive_a_reload(workspace: Any, haproxy_route: Any) -> None:
    ws = release_ws(workspace, haproxy_route.config)
    assert_split(haproxy_route.url, 0, 100)
    for w in (5, 25, 50):
        step(ws, 1, w)
        assert_split(haproxy_route.url, w)
    haproxy_route.reload()  # runtime weights are lost: back to the config file's 100/0
    assert_split(haproxy_route.url, 0, 100)
    result = reconcile(ws, "shop")
    assert result["reapplied"] and result["served"] == {"blue": 100, "green": 0}
    assert_split(haproxy_route.url, 50)
    assert "re-applied" in ws.frames.traffic.iloc[-1]["reason"]
    assert reconcile(ws, "shop")["reapplied"] is False  # nothing to do when they agree
    for w in (75, 100):
        step(ws, 1, w)
        assert_split(haproxy_route.url, w)


def test_haproxy_rollback_at_50(workspace: Any, haproxy_route: Any) -> None:
    ws = release_ws(workspace, haproxy_route.config)
    for w in (5, 25, 50):
        step(ws, 1, w)
    with SteadyClient(haproxy_route.url) as client:
        client.wait_for(10)
        rollback(ws, "release/1", user="alice", reason="latency")
        client.wait_for(client.ok + 10)
    assert client.failures == []
    assert_split(haproxy_route.url, 0)


def test_haproxy_state_file_keeps_weights_across_a_reload(workspace: Any, tmp_path: Path) -> None:
    """With ``state_file:`` (and ``load-server-state-from-file`` in HAProxy's config) a reload keeps the weights."""
    from traffic_fixtures import start_haproxy, stop_haproxy

    h = start_haproxy(tmp_path / "haproxy-state", state_file=tmp_path / "haproxy-state" / "servers.state")
    try:
        ws = release_ws(workspace, h.config)
        step(ws, 1, 5)
        step(ws, 1, 25)
        assert "shop" in (tmp_path / "haproxy-state" / "servers.state").read_text()
        h.reload()
        assert_split(h.url, 25)  # no re-apply needed
        assert reconcile(ws, "shop")["reapplied"] is False
    finally:
        stop_haproxy(h)


def test_haproxy_unknown_server_fails_the_step(workspace: Any, haproxy_route: Any) -> None:
    cfg = {**haproxy_route.config, "backend": "nope"}
    ws = release_ws(workspace, cfg)
    run = step(ws, 1, 5)
    assert run.status == Status.FAILED
    assert "HAProxy has no server nope/" in ws.frames.stage_runs.set_index("stage").loc["install_shop_5", "reason"]


# -- command provider and the demo ------------------------------------------------------------

def command_route(tmp_path: Path, *, fail: bool = False) -> dict[str, Any]:
    script = tmp_path / "lb.py"
    out = tmp_path / "weights.json"
    script.write_text(
        "import json, os, sys\n"
        + ("sys.exit('load balancer said no')\n" if fail else "")
        + "route, pairs = sys.argv[1], sys.argv[2:]\n"
        f"json.dump({{'route': route, 'args': pairs, 'env': json.loads(os.environ['WORKBENCH_WEIGHTS'])}}, open({str(out)!r}, 'w'))\n"
    )
    reader = tmp_path / "read.py"
    reader.write_text(f"import json; print(json.dumps(json.load(open({str(out)!r}))['env']))\n")
    return {"provider": "command", "stacks": {"blue": "blue:80", "green": "green:80"},
            "argv": [sys.executable, str(script)], "read": [sys.executable, str(reader)]}


def test_command_provider_gets_the_weights_as_arguments(workspace: Any, tmp_path: Path) -> None:
    ws = release_ws(workspace, command_route(tmp_path))
    step(ws, 1, 5)
    step(ws, 1, 25)
    got = json.loads((tmp_path / "weights.json").read_text())
    assert got == {"route": "shop", "args": ["blue=75", "green=25"], "env": {"blue": 75, "green": 25}}
    assert ws.frames.traffic.iloc[-1]["from_weights"] == {"blue": 95, "green": 5}  # read back through `read`
    (tmp_path / "weights.json").write_text(json.dumps({"env": {"blue": 100, "green": 0}}))  # someone changed it
    assert reconcile(ws, "shop")["reapplied"]
    assert json.loads((tmp_path / "weights.json").read_text())["args"] == ["blue=75", "green=25"]


def test_command_provider_failure_fails_the_stage(workspace: Any, tmp_path: Path) -> None:
    ws = release_ws(workspace, command_route(tmp_path, fail=True))
    run = step(ws, 1, 5)
    assert run.status == Status.FAILED
    reason = ws.frames.stage_runs.set_index("stage").loc["install_shop_5", "reason"]
    assert "traffic command failed (exit 1): load balancer said no" in reason


def test_demo_nginx_and_its_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from traffic_fixtures import nginx_binary
    from conftest import require_service
    from workbench.traffic import demo

    require_service(nginx_binary() is not None, "nginx")
    said: list[str] = []
    cfg, stop = demo.start_demo_nginx(tmp_path / "a", say=said.append)
    try:
        assert cfg["provider"] == "nginx" and "a real nginx" in said[0]
        route, problems = parse_route("shop", cfg)
        assert problems == [] and route is not None
        assert get(cfg["url"]) == (200, "blue")
    finally:
        stop()
    monkeypatch.setattr(demo, "nginx_binary", lambda: None)
    cfg, stop = demo.start_demo_nginx(tmp_path / "b", say=said.append)
    assert cfg["provider"] == "command" and "nginx is not installed" in said[1]
    route, problems = parse_route("shop", cfg)
    assert problems == [] and route is not None
    from workbench.traffic import provider_for

    provider_for(route).set_weights(route, {"blue": 75, "green": 25})
    target = tmp_path / "b" / ".workbench" / "demo-traffic" / "shop.json"
    assert demo.read_demo_weights(target) == {"blue": 75, "green": 25}
    stop()


def test_route_status_rows(workspace: Any, tmp_path: Path) -> None:
    ws = release_ws(workspace, command_route(tmp_path))
    [row] = route_status(ws)
    assert (row["route"], row["weights"], row["live"], row["recorded"]) == ("shop", {"blue": 100, "green": 0}, "blue", False)
    step(ws, 1, 5)
    [row] = route_status(ws)
    assert (row["weights"], row["candidate"], row["run"], row["recorded"]) == ({"blue": 95, "green": 5}, "green", "release/1", True)
    assert route_of(ws.config, "shop", ws.root).root == str(ws.root)


def test_set_weights_by_hand_is_authorized_and_audited(workspace: Any, tmp_path: Path) -> None:
    from workbench.traffic import set_weights

    ws = release_ws(workspace, command_route(tmp_path))
    with pytest.raises(Unauthorized, match="mallory may not traffic route:shop: allowed are role release-managers"):
        set_weights(ws, "shop", 30, user="mallory", reason="curious")
    assert set_weights(ws, "shop", 30, user="bob", reason="manual canary") == {"blue": 70, "green": 30}
    assert json.loads((tmp_path / "weights.json").read_text())["args"] == ["blue=70", "green=30"]
    last = ws.frames.traffic.iloc[-1]
    assert (last["actor"], last["reason"], last["run_id"] is pd_na()) == ("bob", "manual canary", True)
    rows = ws.frames.audit.to_dict("records")
    assert [(r["user"], r["action"], r["outcome"], r["comment"]) for r in rows] == [
        ("mallory", "traffic", "unauthorized", "curious"), ("bob", "traffic", "ok", "manual canary")]


def pd_na() -> Any:
    import pandas as pd

    return pd.NA


def test_traffic_says_when_nginx_does_not_answer(workspace: Any, nginx_route: Any) -> None:
    """Issue 19 item 4: with nginx stopped, the weights shown are recorded ones, and `traffic` says so."""
    workspace.write("release.yaml", pipeline_yaml(nginx_route.config))
    ws = workspace.open()
    move(ws, "shop", 25, actor="test", reason="before the stop")
    r = workspace.cli("traffic")
    assert r.code == 0 and "does not answer" not in r.err, r
    nginx_route.nginx.stop()
    r = workspace.cli("traffic")
    assert r.code == 0 and "blue=75% green=25%" in r.out, r
    assert "route shop: the provider does not answer: nginx does not answer on" in r.err, r


def test_a_command_providers_relative_path_means_the_workspace_root(workspace: Any, tmp_path: Path) -> None:
    """Issue 16 defect 6: `workbench -w WS traffic --set` from another folder runs WS's script."""
    scripts = workspace.root / "scripts"
    scripts.mkdir(parents=True)
    (scripts / "lb.sh").write_text('echo "$WORKBENCH_WEIGHTS" > "$(dirname "$0")/../served.json"\n')
    workspace.write("r.yaml", """
        format_version: 10
        routes:
          shop:
            provider: command
            stacks: {blue: "127.0.0.1:1", green: "127.0.0.1:2"}
            argv: [bash, scripts/lb.sh]
        pipelines: {}
        """)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    p = subprocess.run([sys.executable, "-m", "workbench", "-w", str(workspace.root), "traffic", "shop", "--set", "25"],
                       cwd=elsewhere, capture_output=True, text=True, timeout=120,
                       env={k: v for k, v in os.environ.items() if k != "WORKBENCH_WORKSPACE"})
    assert p.returncode == 0, p.stderr
    assert json.loads((workspace.root / "served.json").read_text()) == {"blue": 75, "green": 25}


def test_a_failed_traffic_steps_reason_shows_wherever_the_failure_shows(workspace: Any) -> None:
    """Issue 16 defect 3: `run` and `status` said only "stage failed"; the provider's message must show."""
    (workspace.root / "lb.sh").write_text('echo "LB refused: pool drained" >&2; exit 1\n')
    workspace.write("r.yaml", """
        format_version: 10
        routes:
          shop:
            provider: command
            stacks: {blue: "127.0.0.1:1", green: "127.0.0.1:2"}
            argv: [bash, lb.sh]
        pipelines:
          release:
            group: g
            materials: {}
            stages:
              - install:
                  traffic: {route: shop, weight: 25}
                  jobs: {i: {tasks: [{exec: {command: "true"}}]}}
        """)
    r = workspace.cli("run", "release", "-q")
    assert r.code == 1, r
    assert "LB refused: pool drained" in r.out, r.out
    st = json.loads(workspace.cli("status", "--format", "json").out)
    assert "LB refused: pool drained" in st[0]["reason"]
    assert "LB refused: pool drained" in workspace.cli("status").out
