"""Hostile callers of the release service: forged identities, stolen or stale tokens, fuzzed requests, crashes.

Everything here talks to a REAL ``workbench server`` process over loopback with
httpx; nothing stands in for the server.

* Forged identity: ``JUPYTERHUB_USER`` in the client's environment,
  ``X-Forwarded-User``, ``X-Remote-User``, ``X-Forwarded-For`` games, somebody
  else's token, a revoked, an expired, a malformed token and a ``read`` token
  trying to act are all refused (401 with no or bad evidence, 403 for a proven
  identity that may not), each attempt is in the audit with who and the
  outcome, and nothing changed (the stage still waits, no run was made).
* A trusted proxy: with ``server: {trusted_proxies: [127.0.0.1]}`` the server
  believes ``X-Remote-User`` from 127.0.0.1 (the proxy in front of it signed the
  person in); without that setting the same header is ignored.
* ``anonymous_read: true`` opens the reads, never the actions.
* Every endpoint of ``/api/v1/openapi.json`` fuzzed with hypothesis: only
  documented statuses, JSON ``{"error", "detail"}`` errors, no traceback
  anywhere, and a store whose invariants hold afterwards.
* SIGKILL of the server around an approval, round after round: the approval is
  applied once or not at all, and a client that got a 2xx finds it applied.
"""
from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_fixtures import command_route, invariant_violations, record_figures, served
from server_fixtures import ServerProcess, make_token, server_factory  # noqa: F401 (fixture)

from workbench.client import Client
from workbench.errors import NotSignedIn

pytestmark = pytest.mark.timeout(300)

DOCUMENTED = {200, 201, 202, 204, 400, 401, 403, 404, 405, 409, 413, 502, 503}
ENV = {"WORKBENCH_HEARTBEAT_TIMEOUT": "6", "WORKBENCH_WARM_KERNELS": "0"}


def release_yaml(route: dict[str, Any]) -> str:
    doc = {
        "format_version": 10,
        "roles": {"releasers": ["carol"]},
        "routes": {"shop": route},
        "pipelines": {
            "rel": {
                "stages": [
                    {"build": {"jobs": {"b": {"tasks": [{"script": "echo built"}]}}}},
                    {"prod": {"approval": {"type": "manual", "roles": ["releasers"]},
                              "traffic": {"route": "shop", "weight": 100},
                              "jobs": {"d": {"tasks": [{"script": "echo deployed"}]}}}},
                ],
            },
        },
    }
    return yaml.safe_dump(doc, sort_keys=False)


class Site:
    """A workspace with the ``rel`` pipeline and its load balancer; starts servers over it."""

    def __init__(self, base: Path, server_yaml: dict[str, Any] | None = None) -> None:
        self.root = base / "ws"
        (self.root / "pipelines").mkdir(parents=True)
        self.route, self.state = command_route(base / "lb")
        (self.root / "pipelines" / "rel.yaml").write_text(release_yaml(self.route))
        conf: dict[str, Any] = {"executor": {"kind": "local", "max_parallel": 4}}
        if server_yaml:
            conf["server"] = server_yaml
        (self.root / "workbench.yaml").write_text(yaml.safe_dump(conf))
        self.db = self.root / ".workbench" / "store.db"

    def token(self, user: str, scope: str = "act", expires: str = "1d") -> str:
        return make_token(self.root, user, scope, expires)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "workbench", *args], cwd=self.root, capture_output=True,
                              text=True, timeout=120, check=False,
                              env={**os.environ, "WORKBENCH_WORKSPACE": str(self.root)})

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def runs(self) -> int:
        return self.query("SELECT count(*) FROM pipeline_runs")[0][0]

    def stage_status(self, counter: int, stage: str = "prod") -> tuple[str, str | None]:
        rows = self.query("SELECT s.status, s.approved_by FROM stage_runs s JOIN pipeline_runs r "
                          "ON r.id = s.pipeline_run_id WHERE r.pipeline = 'rel' AND r.counter = ? AND s.name = ? "
                          "ORDER BY s.id DESC", counter, stage)
        return rows[0] if rows else ("absent", None)

    def jobs_of(self, counter: int, stage: str = "prod") -> list[tuple[Any, ...]]:
        return self.query("SELECT j.name, j.status FROM job_runs j JOIN stage_runs s ON s.id = j.stage_run_id "
                          "JOIN pipeline_runs r ON r.id = s.pipeline_run_id WHERE r.pipeline = 'rel' "
                          "AND r.counter = ? AND s.name = ?", counter, stage)

    def audit(self, counter: int | None = None) -> list[dict[str, Any]]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            if counter is None:
                return [dict(r) for r in conn.execute("SELECT * FROM audit ORDER BY id")]
            return [dict(r) for r in conn.execute("SELECT * FROM audit WHERE pipeline = 'rel' AND counter = ? "
                                                  "ORDER BY id", (counter,))]
        finally:
            conn.close()

    def violations(self) -> list[str]:
        return invariant_violations(self.db, served_weights={"shop": served(self.state)})

    def start(self, factory: Any, *args: str, env: dict[str, str] | None = None) -> ServerProcess:
        return factory(self.root, "--interval", "1", *args, env={**ENV, **(env or {})})


def wait_for(what: str, check: Any, deadline: float = 60) -> Any:
    end = time.monotonic() + deadline
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(0.05)


def waiting_run(site: Site, url: str, token: str) -> int:
    """Trigger ``rel`` as carol and wait until its prod stage waits for approval; returns the counter."""
    r = httpx.post(f"{url}/api/v1/pipelines/rel/trigger", headers={"Authorization": f"Bearer {token}"}, json={})
    assert r.status_code == 200, r.text
    counter = r.json()["counter"]
    wait_for(f"rel/{counter}/prod waiting", lambda: site.stage_status(counter) == ("waiting", None))
    return counter


def assert_error(r: httpx.Response, status: int | tuple[int, ...]) -> dict[str, Any]:
    statuses = (status,) if isinstance(status, int) else status
    assert r.status_code in statuses, (r.status_code, r.text)
    body = r.json()
    assert set(body) >= {"error", "detail"} and isinstance(body["detail"], str), body
    return body


# -- forged identities --------------------------------------------------------------------------------

def test_forged_identities_and_bad_tokens_are_refused_audited_and_change_nothing(
        tmp_path: Path, server_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    site = Site(tmp_path)
    carol, mallory, dave = site.token("carol"), site.token("mallory"), site.token("dave", scope="read")
    doomed, fleeting = site.token("carol"), site.token("carol", expires="1s")
    server = site.start(server_factory)
    api = f"{server.url}/api/v1"
    counter = waiting_run(site, server.url, carol)
    approve = f"{api}/approvals/rel/{counter}/prod/approve"
    runs_before = site.runs()
    audited_before = len(site.audit())

    # 1. JUPYTERHUB_USER in the caller's environment is never sent, never believed
    for name in ("WORKBENCH_TOKEN", "JUPYTERHUB_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JUPYTERHUB_USER", "carol")
    with Client(server.url) as anonymous, pytest.raises(NotSignedIn):
        anonymous.approve(f"rel/{counter}/prod", "I am carol, honest")

    # 2. identity headers from an untrusted address (no trusted_proxies configured), alone and combined
    forged = [
        {"X-Forwarded-User": "carol"},
        {"X-Remote-User": "carol"},
        {"X-JupyterHub-User": "carol"},
        {"X-Forwarded-For": "127.0.0.1", "X-Remote-User": "carol"},
        {"X-Forwarded-For": "10.0.0.1, 127.0.0.1", "X-Real-IP": "127.0.0.1", "X-Forwarded-User": "carol",
         "Forwarded": "for=127.0.0.1;by=127.0.0.1", "X-Remote-User": "carol"},
        {"Cookie": "jupyterhub-session-id=carol; jupyterhub-user=carol", "X-Remote-User": "carol"},
    ]
    httpx.get(f"{api}/status", headers={"Authorization": f"Bearer {carol}"}).raise_for_status()  # a cached board
    for headers in forged:
        body = assert_error(httpx.post(approve, headers=headers, json={"comment": "forged"}), 401)
        assert body["error"] == "not_signed_in"
        for read in ("status", "approvals", "history"):  # the polled reads, answered from the cache when signed in
            assert assert_error(httpx.get(f"{api}/{read}", headers=headers), 401)["error"] == "not_signed_in"

    # 3. malformed tokens (ours and not): 401, never anonymous, never a 500
    for bad in ("wb_", "wb_1", f"wb_1_{'x' * 10}", f"wb_{'9' * 30}_{'a' * 43}", f"wb_1_{'a' * 43}",
                carol[:-1] + ("A" if carol[-1] != "A" else "B"), "wb_1_" + "ä" * 43, "Bearer", "null",
                "x" * 5000, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJjYXJvbCJ9."):
        for scheme in ("Bearer", "token"):
            r = httpx.post(approve, headers={"Authorization": f"{scheme} {bad}".encode()}, json={})
            assert_error(r, 401)
    assert_error(httpx.post(approve, headers={"Authorization": "Basic Y2Fyb2w6cGFzcw=="}, json={}), 401)

    # 4. somebody else's valid token: mallory is signed in but may not approve carol's stage
    body = assert_error(httpx.post(approve, headers={"Authorization": f"Bearer {mallory}"},
                                   json={"comment": "trust me"}), 403)
    assert body["error"] == "forbidden"
    # ... and claiming to be carol besides changes nothing
    assert_error(httpx.post(approve, headers={"Authorization": f"Bearer {mallory}", "X-Remote-User": "carol",
                                              "X-Forwarded-User": "carol"}, json={}), 403)

    # 5. a read token may look at everything and decide nothing
    read = {"Authorization": f"Bearer {dave}"}
    assert httpx.get(f"{api}/status", headers=read).status_code == 200
    acts = [("approve", approve, {"comment": "read scope"}),
            ("reject", f"{api}/approvals/rel/{counter}/prod/reject", {"comment": "read scope"}),
            ("trigger", f"{api}/pipelines/rel/trigger", {}),
            ("cancel", f"{api}/runs/rel/{counter}/cancel", None),
            ("traffic", f"{api}/traffic/shop", {"weight": 50}),
            ("rollback", f"{api}/runs/rel/{counter}/rollback", {"reason": "read scope"}),
            ("unlock", f"{api}/pipelines/rel/unlock", None),
            ("rerun", f"{api}/runs/rel/{counter}/stages/build/rerun", {})]
    for action, url, payload in acts:
        body = assert_error(httpx.post(url, headers=read, json=payload), 403)
        assert body["error"] == "forbidden", (action, body)

    # 6. revoked while the server runs: refused from the next request on, the cached reads too (their answers and
    # the token's check are kept until the store changes; the revocation, by another process, is such a change)
    good = {"Authorization": f"Bearer {doomed}"}
    assert httpx.get(f"{api}/whoami", headers=good).json()["user"] == "carol"
    polled = ("status", "approvals", "history", "history?limit=5")
    for read in polled:
        first = httpx.get(f"{api}/{read}", headers=good)
        again = httpx.get(f"{api}/{read}", headers=good)  # from the cache, the token known
        assert first.status_code == again.status_code == 200 and first.content == again.content, read
    doomed_id = re.match(r"wb_(\d+)_", doomed).group(1)
    revoked = site.cli("token", "revoke", doomed_id)
    assert revoked.returncode == 0, revoked.stderr
    for read in polled:
        assert "revoked" in assert_error(httpx.get(f"{api}/{read}", headers=good), 401)["detail"], read
    assert_error(httpx.get(f"{api}/whoami", headers=good), 401)
    assert "revoked" in assert_error(httpx.post(approve, headers=good, json={"comment": "revoked"}), 401)["detail"]

    # 7. expired: created with a one-second life, used after it
    expires_at = site.query("SELECT expires_at FROM api_tokens WHERE id = ?",
                            int(re.match(r"wb_(\d+)_", fleeting).group(1)))[0][0]
    time.sleep(max(0.0, expires_at - time.time()) + 0.2)
    late = {"Authorization": f"Bearer {fleeting}"}
    assert "expired" in assert_error(httpx.post(approve, headers=late, json={"comment": "late"}), 401)["detail"]
    assert "expired" in assert_error(httpx.get(f"{api}/status", headers=late), 401)["detail"]

    # nothing changed: the stage still waits, no run was made, the route never moved
    assert site.stage_status(counter) == ("waiting", None)
    assert site.runs() == runs_before
    assert served(site.state) == {"blue": 100, "green": 0}
    # ... and every attempt to act is in the audit, with who and how it ended
    rows = site.audit()[audited_before:]
    # (the one "ok" is the revocation itself, by the CLI: `workbench token revoke` is audited)
    assert [(r["action"], r["outcome"]) for r in rows if r["outcome"] == "ok"] == [("token", "ok")], rows
    by = {(r["user"], r["action"], r["outcome"]) for r in rows}
    assert ("mallory", "approve", "unauthorized") in by
    for action, _, _ in acts:
        assert ("dave", action, "unauthorized") in by, (action, by)
    anonymous_rows = [r for r in rows if r["user"] == "(not signed in)"]
    # 1 (environment) + 6 forged headers + 11 * 2 + 1 malformed tokens + 1 revoked + 1 expired
    assert len(anonymous_rows) == 1 + len(forged) + 23 + 2, len(anonymous_rows)
    assert all(r["action"] == "approve" and r["target"] == f"rel/{counter}/prod" and r["counter"] == counter
               and r["outcome"] == "unauthorized" for r in anonymous_rows), anonymous_rows
    assert any("'x-forwarded-user': 'carol'" in (r["detail"] or "") for r in anonymous_rows)
    assert any("revoked" in (r["detail"] or "") for r in anonymous_rows)
    assert any("expired" in (r["detail"] or "") for r in anonymous_rows)
    # the audit over the API shows the same (as carol)
    shown = httpx.get(f"{api}/audit", params={"limit": 500}, headers={"Authorization": f"Bearer {carol}"}).json()
    assert {(a["user"], a["action"], a["outcome"]) for a in shown} >= by

    # the real one still works afterwards
    ok = httpx.post(approve, headers={"Authorization": f"Bearer {carol}"}, json={"comment": "really carol"})
    assert ok.status_code == 200, ok.text
    assert server.stop() == 0
    assert "Traceback" not in server.stderr()
    assert site.violations() == []


def test_a_trusted_proxy_is_believed_and_only_from_its_address(tmp_path: Path, server_factory: Any) -> None:  # noqa: F811
    """``trusted_proxies: [127.0.0.1]``: a proxy on this machine signs people in and says who in
    X-Remote-User, so the server believes that header from 127.0.0.1 (our test client is that
    address). X-Forwarded-User stays ignored even then; without the setting X-Remote-User is too
    (the forged-identity test above)."""
    site = Site(tmp_path, {"trusted_proxies": ["127.0.0.1"]})
    carol = site.token("carol")
    server = site.start(server_factory)
    api = f"{server.url}/api/v1"
    counter = waiting_run(site, server.url, carol)
    approve = f"{api}/approvals/rel/{counter}/prod/approve"

    assert httpx.get(f"{api}/whoami", headers={"X-Remote-User": "carol"}).json() == {
        "user": "carol", "groups": [], "via": "proxy", "scope": "act"}
    assert_error(httpx.post(approve, headers={"X-Forwarded-User": "carol"}, json={}), 401)
    assert_error(httpx.post(approve, headers={"X-Remote-User": "mallory"}, json={}), 403)
    assert site.stage_status(counter) == ("waiting", None)
    r = httpx.post(approve, headers={"X-Remote-User": "carol"}, json={"comment": "through the proxy"})
    assert r.status_code == 200, r.text
    wait_for("the approval applied", lambda: site.stage_status(counter)[1] == "carol")
    oks = [a for a in site.audit(counter) if a["action"] == "approve" and a["outcome"] == "ok"]
    assert [(a["user"], a["comment"]) for a in oks] == [("carol", "through the proxy")]
    assert server.stop() == 0
    assert "Traceback" not in server.stderr()


def test_anonymous_read_opens_reads_never_actions(tmp_path: Path, server_factory: Any) -> None:  # noqa: F811
    """Also: the server's own environment names a person (JUPYTERHUB_USER, USER, as a hub-spawned or a
    carelessly started server might have): nobody becomes that person by calling it."""
    site = Site(tmp_path, {"anonymous_read": True})
    carol = site.token("carol")
    server = site.start(server_factory, env={"JUPYTERHUB_USER": "carol", "USER": "carol", "LOGNAME": "carol"})
    api = f"{server.url}/api/v1"
    counter = waiting_run(site, server.url, carol)
    status = httpx.get(f"{api}/status")
    assert status.status_code == 200 and status.json()[0]["pipeline"] == "rel"
    assert httpx.get(f"{api}/whoami").json()["user"] == "(anonymous)"
    body = assert_error(httpx.post(f"{api}/approvals/rel/{counter}/prod/approve", json={"comment": "anon"}), 401)
    assert body["error"] == "not_signed_in"
    assert_error(httpx.post(f"{api}/pipelines/rel/trigger", json={}), 401)
    assert site.stage_status(counter) == ("waiting", None) and site.runs() == 1
    rows = [(a["user"], a["action"], a["outcome"]) for a in site.audit()]
    assert ("(not signed in)", "approve", "unauthorized") in rows and ("(not signed in)", "trigger", "unauthorized") in rows
    assert server.stop() == 0


# -- every endpoint, fuzzed -------------------------------------------------------------------------------

KNOWN = ["rel", "1", "2", "latest", "build", "prod", "b", "d", "shop", "pipeline_runs", "audit"]
TEXT = st.one_of(
    st.sampled_from(KNOWN),
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from("/\\.%?#&=;: \t\n\r\x00'\"<>{}ü漢🚀\u202e"), min_size=1, max_size=20),
    st.sampled_from(["", " ", ".", "..", "../..", "%2e%2e", "%00", "-1", "0", "999999999999999999999999",
                     "1e9", "NaN", "null", "true", "[]", "{}", "x" * 5000, "ü" * 3000]),
)
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10 ** 40), max_value=10 ** 40),
                   st.floats(allow_nan=False, allow_infinity=False), TEXT)
def _nest(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4))


JUNK = st.recursive(SCALAR, _nest, max_leaves=12)


def deep(depth: int) -> bytes:
    """JSON nested ``depth`` levels (as text: the client's own json.dumps would refuse it)."""
    return b'{"comment": ' + b'{"a": [' * depth + b"1" + b"]}" * depth + b"}"


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def of_schema(spec: dict[str, Any], schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of the right shape (most of the time), with junk mixed in."""
    schema = resolve(spec, schema)
    if "anyOf" in schema:
        return st.one_of(*[of_schema(spec, s) for s in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "integer":
        return st.one_of(st.integers(min_value=-5, max_value=105), st.integers())
    if kind == "boolean":
        return st.booleans()
    if kind == "string":
        return st.one_of(TEXT, st.sampled_from(["hotfix", "unplanned", "major", "minor",
                                                "2026-01-01T00:00:00Z", "rel/1"]))
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(of_schema(spec, schema.get("items", {})), max_size=3)
    if kind == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            return st.dictionaries(TEXT, of_schema(spec, extra), max_size=3)
        props = schema.get("properties", {})
        return st.fixed_dictionaries({}, optional={k: of_schema(spec, v) for k, v in props.items()})
    return JUNK


def requests_for(spec: dict[str, Any], operations: list[tuple[str, str, dict[str, Any]]],
                 token: str) -> st.SearchStrategy[dict[str, Any]]:
    """Requests to the spec's operations (a closure, so hypothesis never prints the whole spec)."""
    @st.composite
    def one_request(draw: st.DrawFn) -> dict[str, Any]:
        return _request(draw, spec, operations, token)
    return one_request()


def _request(draw: st.DrawFn, spec: dict[str, Any], operations: list[tuple[str, str, dict[str, Any]]],
             token: str) -> dict[str, Any]:
    path, method, op = draw(st.sampled_from(operations))
    url = path
    params: dict[str, Any] = {}
    for p in op.get("parameters", []):
        value = draw(st.one_of(of_schema(spec, p.get("schema", {})), TEXT))
        if p["in"] == "path":
            text = str(value) if not isinstance(value, str) else value
            url = url.replace("{" + p["name"] + "}", quote(text, safe="/" if draw(st.booleans()) else ""))
        elif p["in"] == "query" and draw(st.booleans()):
            params[p["name"]] = [str(v) for v in value] if isinstance(value, list) else str(value)
    if draw(st.booleans()):
        params[draw(st.text(min_size=1, max_size=10))] = draw(TEXT)
    body: dict[str, Any] = {}
    schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    shape = draw(st.sampled_from(["valid", "valid", "junk", "none", "deep", "raw", "extra", "big"]))
    if shape == "valid" and schema:
        body["json"] = draw(of_schema(spec, schema))
    elif shape == "extra" and schema:
        value = draw(of_schema(spec, schema))
        body["json"] = {**value, draw(st.text(min_size=1, max_size=8)): draw(JUNK)} if isinstance(value, dict) else value
    elif shape == "junk":
        body["json"] = draw(JUNK)
    elif shape == "deep":
        body["content"] = deep(draw(st.sampled_from([50, 500, 3000, 100_000])))
        body["headers"] = {"Content-Type": "application/json"}
    elif shape == "raw":
        body["content"] = draw(st.binary(max_size=200))
        body["headers"] = {"Content-Type": draw(st.sampled_from(["application/json", "text/plain", "x/y"]))}
    elif shape == "big":
        body["json"] = {"comment": "c" * draw(st.sampled_from([10_001, 200_000, 1_500_000])), "title": "t" * 2000}
    headers = dict(body.pop("headers", {}))
    who = draw(st.sampled_from(["token", "token", "none", "garbage"]))
    if who == "token":
        headers["Authorization"] = f"Bearer {token}"
    elif who == "garbage":
        headers["Authorization"] = draw(st.sampled_from(["Bearer wb_1_" + "a" * 43, "token x", "Bearer " + "é" * 9]))
        headers["Authorization"] = headers["Authorization"].encode()
    return {"method": method.upper(), "url": url, "params": params, "headers": headers, **body}


@pytest.mark.timeout(900)
def test_every_endpoint_fuzzed_answers_only_documented_statuses(tmp_path: Path, server_factory: Any,  # noqa: F811
                                                                soak_seconds: float) -> None:
    site = Site(tmp_path)
    carol = site.token("carol")
    server = site.start(server_factory)
    waiting_run(site, server.url, carol)  # a run to act on, so known names reach real code
    spec = httpx.get(f"{server.url}/api/v1/openapi.json").json()
    operations = [(path, method, op) for path, item in spec["paths"].items() for method, op in item.items()
                  if method in ("get", "post", "put", "patch", "delete")]
    assert len(operations) >= 25, [o[:2] for o in operations]
    statuses: dict[int, int] = {}
    tried: set[tuple[str, str]] = set()
    http = httpx.Client(base_url=server.url, timeout=30)

    # bounded and the same every time in a normal run; under --soak-seconds new examples, round after round
    @settings(max_examples=int(os.environ.get("WORKBENCH_FUZZ_EXAMPLES") or 1500), deadline=None,
              derandomize=not soak_seconds,
              database=None, suppress_health_check=list(HealthCheck), print_blob=True)
    @given(req=requests_for(spec, operations, carol))
    def one(req: dict[str, Any]) -> None:
        method, url = req.pop("method"), req.pop("url")
        tried.add((method, url.split("?")[0][:40]))
        r = http.request(method, url, **req)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        where = f"{method} {url[:200]} {str(req)[:300]}"
        assert "Traceback" not in r.text, where
        assert r.status_code in DOCUMENTED, f"{r.status_code} for {where}: {r.text[:500]}"
        # a 5xx only for a busy store: nothing fuzzed here reaches a failing provider, executor or forge
        assert r.status_code < 500 or r.status_code == 503, f"{r.status_code} for {where}: {r.text[:500]}"
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                raise AssertionError(f"non-JSON error for {where}: {r.text[:300]}") from None
            assert isinstance(body, dict) and set(body) >= {"error", "detail"}, f"{where}: {body}"
            assert isinstance(body["error"], str) and isinstance(body["detail"], str), f"{where}: {body}"

    started = time.monotonic()
    try:
        one()
        while time.monotonic() - started < soak_seconds:
            one()
    finally:
        http.close()
        code = server.stop()
    log = server.stderr()
    assert code == 0, log[-3000:]
    assert "Traceback" not in log and "unexpected error" not in log, log[-5000:]
    record_figures("server-fuzz", {"requests": sum(statuses.values()), "statuses": dict(sorted(statuses.items())),
                                   "seconds": round(time.monotonic() - started, 1)})
    assert site.violations() == []


# -- SIGKILL around an approval ------------------------------------------------------------------------------

@pytest.mark.timeout(900)
def test_sigkill_around_an_approval_applies_it_once_or_not_at_all(tmp_path: Path, server_factory: Any,  # noqa: F811
                                                                  soak_seconds: float) -> None:
    site = Site(tmp_path)
    carol = site.token("carol")
    auth = {"Authorization": f"Bearer {carol}"}
    seed = int(os.environ.get("WORKBENCH_FAULT_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    print(f"WORKBENCH_FAULT_SEED={seed}")
    rounds = int(os.environ.get("WORKBENCH_KILL_ROUNDS") or (10 if not soak_seconds else 10_000))
    soak_end = time.monotonic() + soak_seconds
    server = site.start(server_factory)
    # how long an approval takes here, so the kills land before, during and after it
    counter = waiting_run(site, server.url, carol)
    t0 = time.monotonic()
    assert httpx.post(f"{server.url}/api/v1/approvals/rel/{counter}/prod/approve", headers=auth,
                      json={"comment": "warm-up"}).status_code == 200
    latency = time.monotonic() - t0
    outcomes: list[dict[str, Any]] = []
    for i in range(rounds):
        if soak_seconds and time.monotonic() > soak_end:
            rounds = i
            break
        counter = waiting_run(site, server.url, carol)
        url = f"{server.url}/api/v1/approvals/rel/{counter}/prod/approve"
        got: dict[str, Any] = {}

        def send(url: str = url, got: dict[str, Any] = got, i: int = i) -> None:
            try:
                r = httpx.post(url, headers=auth, json={"comment": f"round {i}"}, timeout=20)
                got["status"] = r.status_code
            except httpx.HTTPError as exc:
                got["error"] = type(exc).__name__

        when = rng.choice(["before", "during", "during", "during", "after"])
        client = threading.Thread(target=send, name=f"approve-{i}", daemon=True)
        if when == "before":
            server.kill()
            client.start()
        else:
            client.start()
            if when == "during":
                time.sleep(rng.uniform(0, 2 * latency))
            else:
                client.join(20)
            server.kill()
        client.join(30)
        assert not client.is_alive()
        server = site.start(server_factory)
        oks = [a for a in site.audit(counter) if a["action"] == "approve" and a["outcome"] == "ok"]
        status, approved_by = site.stage_status(counter)
        assert len(oks) <= 1, oks
        if oks:
            assert approved_by == "carol" and status != "waiting", (status, approved_by)
            # never half-applied: the approval left the stage scheduled (or further) in its own transaction,
            # and the restarted server carries it on to the end, its job run included
            assert status in ("scheduled", "running", "passed", "failed"), (i, status)
            wait_for(f"rel/{counter}/prod to finish after the restart",
                     lambda c=counter: site.stage_status(c)[0] in ("passed", "failed"))
            assert site.jobs_of(counter), (f"round {i}: rel/{counter}/prod finished without its job",
                                           site.query("SELECT s.status, s.reason, r.status, r.reason FROM stage_runs s "
                                                      "JOIN pipeline_runs r ON r.id = s.pipeline_run_id WHERE "
                                                      "r.counter = ?", counter))
        else:
            assert (status, approved_by) == ("waiting", None)
        if 200 <= got.get("status", 0) < 300:
            assert oks, f"round {i}: the client was told {got} but the approval is not in the store"
        # the retry goes to the restarted server (a new port): a clear answer either way
        again = httpx.post(f"{server.url}/api/v1/approvals/rel/{counter}/prod/approve", headers=auth,
                           json={"comment": "retry"})
        assert again.status_code == (409 if oks else 200), again.text
        if oks:
            assert assert_error(again, 409)["error"] == "conflict", again.text
        outcomes.append({"when": when, "client": got.get("status", got.get("error")), "applied": bool(oks)})
    # let the scheduler finish (or recover) every approved run, then check the whole store
    wait_for("every run to settle", lambda: not site.query(
        "SELECT 1 FROM pipeline_runs WHERE status IN ('scheduled', 'running')"), deadline=90)
    assert server.stop() == 0
    assert "Traceback" not in server.stderr()
    assert site.violations() == []
    applied = sum(o["applied"] for o in outcomes)
    record_figures("server-sigkill-approval", {"seed": seed, "rounds": rounds, "applied before the kill": applied,
                                               "latency ms": round(latency * 1000, 1),
                                               "outcomes": json.dumps(outcomes)})


# -- server.max_body_bytes on every path ---------------------------------------------------------------------

LIMIT = 4096


def chunked_without_end(url: str, path: str, size: int, headers: dict[str, str]) -> tuple[int, bytes]:
    """POST ``size`` bytes in chunks with no Content-Length and no closing chunk; the answer must come anyway
    (the server stops at the limit rather than waiting for the end)."""
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(url)
    with socket.create_connection((u.hostname, u.port), timeout=20) as sock:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {u.netloc}\r\nTransfer-Encoding: chunked\r\n"
                     f"Content-Type: application/json\r\n{head}\r\n".encode())
        piece = b'{"comment": "' + b"x" * 1000
        sent = 0
        try:
            while sent < size:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
        except OSError:  # the server answered and closed while we were still sending
            pass
        data = b""
        while b"\r\n\r\n" not in data:
            got = sock.recv(65536)
            if not got:
                break
            data += got
        head_bytes, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head_bytes).group(1))
        while len(body) < length:
            got = sock.recv(65536)
            if not got:
                break
            body += got
        return int(head_bytes.split()[1]), body


def test_max_body_bytes_holds_on_every_endpoint_declared_or_chunked(tmp_path: Path, server_factory: Any) -> None:  # noqa: F811
    site = Site(tmp_path, {"max_body_bytes": LIMIT, "webhooks": {"github": {"secret": "s3cret"}}})
    carol = site.token("carol")
    server = site.start(server_factory)
    counter = waiting_run(site, server.url, carol)
    spec = httpx.get(f"{server.url}/api/v1/openapi.json").json()
    known = {"pipeline": "rel", "counter": str(counter), "stage": "prod", "route": "shop", "job": "d",
             "locator": f"rel/{counter}/prod/d", "name": "audit", "incident_id": "1"}
    paths = []
    for path, item in spec["paths"].items():
        for method in item:
            concrete = re.sub(r"\{(\w+)(:path)?\}", lambda m: known[m.group(1)], path)
            paths.append((method.upper(), concrete))
    gocd = [("POST", f"/go/api/webhooks/{f}/notify") for f in ("github", "gitlab", "bitbucket", "hosted_bitbucket")]
    paths += gocd
    assert ("POST", f"/api/v1/approvals/rel/{counter}/prod/approve") in paths
    assert ("POST", "/api/v1/webhooks/github") in paths and ("GET", "/api/v1/status") in paths
    auth = {"Authorization": f"Bearer {carol}"}
    big = b'{"comment": "' + b"x" * LIMIT + b'"}'
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for method, path in paths:
            # declared: refused before a byte of it is read
            r = http.request(method, path, content=big, headers={**auth, "Content-Type": "application/json"})
            body = assert_error(r, 413)
            assert body["error"] == "too_large" and f"larger than {LIMIT} bytes" in body["detail"], (path, body)
            # chunked, no Content-Length, never ended: answered at the limit all the same
            status, raw = chunked_without_end(server.url, path, LIMIT * 50, auth)
            assert status == 413, (method, path, status, raw[:300])
            assert json.loads(raw)["error"] == "too_large", (path, raw[:300])
        # just within the limit, a body still does what it says
        ok = http.post(f"/api/v1/approvals/rel/{counter}/prod/approve", headers=auth,
                       json={"comment": "c" * (LIMIT - 100)})
        assert ok.status_code == 200, ok.text
    # the webhook refusals are recorded as deliveries (two per webhook path), none polled anything
    hooks = [p for _, p in paths if "webhooks" in p]
    refused = site.query("SELECT count(*) FROM webhook_deliveries WHERE status = 413")[0][0]
    assert refused == 2 * len(hooks), (refused, hooks)
    assert server.stop() == 0
    log = server.stderr()
    assert "Traceback" not in log, log[-3000:]
    assert site.violations() == []
