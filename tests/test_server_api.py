"""The release service end to end: a real ``workbench server`` process, driven through ``workbench.Client``.

One server (module scope) over one workspace with a git material, a
``command`` traffic provider, a package repository, a job that streams its
output and a pipeline that fails on demand. Each test walks one family of
endpoints the way a notebook would: status, history, runs, logs (following
a running job), approvals, triggers with revisions, reruns, cancels, unlocks,
traffic, rollbacks, artifacts (bytes checked against their SHA-256), packages,
metrics, incidents, audit, validate and frames (equal to the local ones).
Waiting is on the store's state through the API with a generous deadline,
never on a fixed sleep.
"""
from __future__ import annotations

import hashlib
import inspect
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import GitRepo
from reliability_fixtures import command_route, served
from server_fixtures import ServerProcess, make_token

from workbench import Workspace
from workbench.client import Client
from workbench.server.encoding import MIN_GZIP
from workbench.errors import InvalidState, NotFound, UsageError
from workbench.service.local import Local

pytestmark = pytest.mark.timeout(300)


def pipelines_yaml(repo: str, route: dict[str, Any], go: Path, fail: Path) -> str:
    def job(script: str, **extra: Any) -> dict[str, Any]:
        return {"tasks": [{"script": script}], **extra}

    talk = (f"echo line 1; i=0; while [ ! -f '{go}' ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; "
            "for n in 2 3 4 5; do echo line $n; sleep 0.2; done")
    doc = {
        "format_version": 10,
        "roles": {"releasers": ["carol"]},
        "routes": {"shop": route},
        "package_repositories": {"qa": {"url": "repos/qa"}},
        "pipelines": {
            "app": {
                "materials": {"code": {"git": repo, "auto_update": False}},
                "stages": [
                    {"build": {"jobs": {
                        "compile": {
                            "artifacts": [{"build": {"source": "out", "destination": "bin"}}],
                            "tasks": [
                                {"script": "mkdir -p out/sub && printf 'hello' > out/a.txt && "
                                           "head -c 200000 /dev/urandom > out/sub/blob.bin && "
                                           "echo \"api ${GO_PIPELINE_COUNTER}\" > api.tgz"},
                                {"publish_package": {"repository": "qa", "name": "api",
                                                     "version": "1.0.${GO_PIPELINE_COUNTER}", "file": "api.tgz"}},
                            ]},
                        "talk": job(talk),
                    }}},
                    {"canary": {"approval": {"type": "manual", "roles": ["releasers"]},
                                "traffic": {"route": "shop", "weight": 25}, "jobs": {"go": job("echo canary")}}},
                    {"full": {"approval": {"type": "manual", "roles": ["releasers"]},
                              "traffic": {"route": "shop", "weight": 100}, "jobs": {"go": job("echo full")}}},
                ],
            },
            "flaky": {
                "lock_behavior": "lockOnFailure",
                "stages": [{"work": {"jobs": {"try": job(f"test ! -f '{fail}'")}}}],
            },
            "slow": {
                "stages": [{"wait": {"jobs": {"sleep": job("sleep 60")}}}],
            },
        },
    }
    return yaml.safe_dump(doc, sort_keys=False)


class Rig:
    def __init__(self, root: Path, server: ServerProcess, repo: GitRepo, state: Path, go: Path, fail: Path) -> None:
        self.root, self.server, self.repo, self.state, self.go, self.fail = root, server, repo, state, go, fail
        self.carol = Client(server.url, make_token(root, "carol"))
        self.reader = Client(server.url, make_token(root, "dave", scope="read"))

    def ws(self) -> Workspace:
        return Workspace.open(self.root)

    def wait(self, what: str, check: Callable[[], Any], deadline: float = 90) -> Any:
        end = time.monotonic() + deadline
        while True:
            got = check()
            if got:
                return got
            assert time.monotonic() < end, f"gave up waiting for {what}"
            time.sleep(0.1)

    def run(self, locator: str) -> dict[str, Any]:
        return self.carol.run(locator)

    def stage(self, locator: str, name: str) -> dict[str, Any]:
        return [s for s in self.run(locator)["stages"] if s["name"] == name][-1]

    def wait_status(self, locator: str, *statuses: str) -> dict[str, Any]:
        return self.wait(f"{locator} to be {statuses}", lambda: (r := self.run(locator))["status"] in statuses and r)

    def wait_waiting(self, locator: str, stage: str) -> None:
        self.wait(f"{locator}/{stage} waiting",
                  lambda: any(a["locator"] == f"{locator}/{stage}" for a in self.carol.approvals()))


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    base = tmp_path_factory.mktemp("api")
    root = base / "ws"
    (root / "pipelines").mkdir(parents=True)
    repo = GitRepo(base / "repo")
    repo.commit({"README.md": "one\n"}, "first")
    repo.commit({"README.md": "two\n"}, "second")
    route, state = command_route(base / "lb")
    go, fail = base / "GO", base / "FAIL"
    (root / "pipelines" / "app.yaml").write_text(pipelines_yaml(repo.url, route, go, fail))
    (root / "workbench.yaml").write_text("executor: {kind: local, max_parallel: 8}\n")
    server = ServerProcess.start(root)
    try:
        r = Rig(root, server, repo, state, go, fail)
        yield r
        r.carol.close()
        r.reader.close()
        log = server.stderr()
        assert "Traceback" not in log, log[-3000:]
    finally:
        server.stop()


def test_client_and_local_have_the_same_methods() -> None:
    def public(cls: type) -> dict[str, list[str]]:
        return {name: [p for p in inspect.signature(fn).parameters if p != "self"]
                for name, fn in inspect.getmembers(cls, inspect.isfunction) if not name.startswith("_")}

    client, local = public(Client), public(Local)
    client.pop("close")  # the HTTP connection's own
    assert client == local


def test_a_release_through_the_server(rig: Rig) -> None:
    c = rig.carol
    assert c.whoami() == {"user": "carol", "groups": [], "via": "token", "scope": "act"}
    first = rig.repo.git("rev-list", "--max-parents=0", "HEAD")
    run = c.trigger("app", {"code": first})
    assert (run["pipeline"], run["triggered_by"], run["status"]) == ("app", "carol", "scheduled")
    # the scheduler may have triggered app on first sight of its material: counters come from the answers
    r1 = run["locator"]

    # the talk job prints one line, then waits for GO: its log streams before the job ends
    rig.wait("the talk job to start", lambda: rig.stage(r1, "build")["jobs"]
             and any(j["name"] == "talk" and j["status"] == "running" for j in rig.stage(r1, "build")["jobs"]))
    chunks = c.log(f"{r1}/build/talk", follow=True)
    seen = b""
    for chunk in chunks:
        seen += chunk
        if b"line 1" in seen:
            break
    assert b"line 2" not in seen
    rig.go.write_text("go")
    for chunk in chunks:
        seen += chunk
    assert [line for line in seen.decode().splitlines() if line.startswith("line ")] == [f"line {n}" for n in range(1, 6)]
    assert [j["status"] for j in rig.stage(r1, "build")["jobs"] if j["name"] == "talk"] == ["passed"]
    assert b"line 5" in b"".join(c.log(f"{r1}/build/talk"))

    rig.wait_waiting(r1, "canary")
    detail = rig.run(r1)
    assert first in str(detail["revisions"])
    assert [s["name"] for s in detail["stages"]] == ["build", "canary"]
    waiting = next(a for a in c.approvals() if a["locator"] == f"{r1}/canary")
    assert waiting["may_approve"] == ["carol"]

    # a read token sees everything and decides nothing
    assert rig.reader.run(r1)["status"] == "waiting"
    with pytest.raises(Exception) as refused:
        rig.reader.approve(f"{r1}/canary", "lgtm")
    assert "HTTP 403" in str(refused.value)

    done = c.approve(f"{r1}/canary", "canary looks fine")
    assert done["locator"] == r1
    with pytest.raises(InvalidState):
        c.approve(f"{r1}/canary", "again")
    rig.wait_waiting(r1, "full")
    assert served(rig.state) == {"blue": 75, "green": 25}
    assert c.traffic("shop")["routes"][0]["weights"] == {"blue": 75, "green": 25}
    c.approve(f"{r1}/full")
    rig.wait_status(r1, "passed")
    assert served(rig.state) == {"blue": 0, "green": 100}
    with pytest.raises(InvalidState, match="after 100%"):
        c.rollback(r1, "too late")

    # a second run: rejected; the comment is required
    r2 = c.trigger("app")["locator"]
    rig.wait_waiting(r2, "canary")
    with pytest.raises(UsageError, match="comment"):
        c.reject(f"{r2}/canary", None)
    assert rig.run(r2)["status"] == "waiting"
    assert c.reject(f"{r2}/canary", "not today")["status"] == "rejected"
    assert rig.run(r2)["status"] == "rejected"

    # a third run: canary at 25 %, rolled back, then traffic moved by hand
    r3 = c.trigger("app")["locator"]
    rig.wait_waiting(r3, "canary")
    c.approve(f"{r3}/canary")
    rig.wait_waiting(r3, "full")
    assert served(rig.state) == {"green": 75, "blue": 25}
    back = c.rollback(r3, "errors up")
    assert back["routes"][0]["to"] == {"blue": 0, "green": 100} and served(rig.state) == {"blue": 0, "green": 100}
    moved = c.set_traffic("shop", 10, "by hand")
    assert moved["by"] == "carol" and served(rig.state) == moved["weights"]
    assert c.traffic()["routes"][0]["weights"] == moved["weights"]

    rows = c.history("app")
    mine = [f"app/{r['counter']}" for r in rows if f"app/{r['counter']}" in (r1, r2, r3)]
    assert mine == [r3, r2, r1], rows
    board = c.board()
    assert {row["pipeline"] for row in board} == {"app", "flaky", "slow"}, board

    audit = c.audit(200)
    oks = [(a["user"], a["action"], a["target"]) for a in audit if a["outcome"] == "ok"]
    for expected in [("carol", "approve", f"{r1}/canary"), ("carol", "approve", f"{r1}/full"),
                     ("carol", "reject", f"{r2}/canary"), ("carol", "rollback", r3),
                     ("carol", "traffic", "route:shop"), ("carol", "trigger", "app")]:
        if expected[1] == "trigger" and not any(a["action"] == "trigger" for a in audit):
            continue  # triggers are in the run history (triggered_by), not every version audits them
        assert expected in oks, (expected, oks)
    assert any(a["user"] == "dave" and a["action"] == "approve" and a["outcome"] == "unauthorized" for a in audit)

    # artifacts: listed with SHA-256, and the downloaded bytes match it
    listed = c.artifacts(f"{r1}/build/compile")
    assert {r["path"] for r in listed} >= {"bin/out/a.txt", "bin/out/sub/blob.bin"}
    for row in listed:
        meta, chunks = c.artifact(f"{r1}/build/compile", row["path"])
        data = b"".join(chunks)
        assert len(data) == row["size"] and hashlib.sha256(data).hexdigest() == row["sha256"] == meta["sha256"]
    assert b"".join(c.artifact(f"{r1}/build/compile", "bin/out/a.txt")[1]) == b"hello"
    with pytest.raises(NotFound):
        c.artifact(f"{r1}/build/compile", "bin/nope")
    pkgs = c.packages("api")
    assert {p["version"] for p in pkgs} >= {"1.0.1", "1.0.2", "1.0.3"}

    # metrics, incidents, marks
    m = c.metrics()
    assert isinstance(m, dict) and m
    inc = c.incident_open("checkout down", caused_by=r1, severity="major")
    assert inc["status"] == "open" and inc["opened_by"] == "carol"
    assert [i["id"] for i in c.incidents(open_only=True)] == [inc["id"]]
    assert c.mark(r1, "hotfix", incident=inc["id"]) == {"run": r1, "mark": "hotfix", "incident": inc["id"]}
    resolved = c.incident_resolve(inc["id"], note="fixed")
    assert resolved["status"] == "resolved" and resolved["resolved_by"] == "carol"
    assert c.incidents(open_only=True) == [] and len(c.incidents()) == 1


def test_rerun_cancel_unlock(rig: Rig) -> None:
    c = rig.carol
    rig.fail.write_text("x")
    c.trigger("flaky")
    rig.wait_status("flaky/1", "failed")
    with pytest.raises(InvalidState, match="lock"):
        c.trigger("flaky")
    unlocked = c.unlock("flaky")
    assert unlocked["was_locked_by"] == "flaky/1"
    rig.fail.unlink()
    again = c.rerun("flaky/1/work")
    assert again["locator"] == "flaky/1"
    rig.wait_status("flaky/1", "passed")
    stages = [s for s in rig.run("flaky/1")["stages"] if s["name"] == "work"]
    assert [s["counter"] for s in stages] == [1, 2] and stages[-1]["status"] == "passed"

    c.trigger("slow")
    rig.wait("the sleep job to run", lambda: any(j["status"] == "running" for s in rig.run("slow/1")["stages"]
                                                 for j in s["jobs"]))
    out = c.cancel("slow/1")
    assert out["cancel"] in ("cancelled", "requested")
    rig.wait_status("slow/1", "cancelled")
    with pytest.raises(NotFound):
        c.cancel("slow/99")


def test_reads_validate_frames_and_docs(rig: Rig) -> None:
    c = rig.carol
    v = c.validate()
    assert v["ok"] is True and v["pipelines"] == 3
    local = rig.ws().frames
    names = httpx.get(f"{rig.server.url}/api/v1/frames", headers={"Authorization": f"Bearer {c.token}"}).json()
    assert {"pipeline_runs", "stage_runs", "audit"} <= set(names)
    import pandas as pd

    for name in ("pipeline_runs", "stage_runs", "job_runs", "audit"):
        if name not in names:
            continue
        remote, here = c.frame(name), getattr(local, name)
        assert list(remote.columns) == list(here.columns), name
        pd.testing.assert_frame_equal(remote.reset_index(drop=True), here.reset_index(drop=True),
                                      check_dtype=False, check_index_type=False, check_categorical=False,
                                      obj=name)
    with pytest.raises(NotFound):
        c.frame("no_such_frame")
    with pytest.raises(NotFound):
        c.run("nope/1")

    spec = httpx.get(f"{rig.server.url}/api/v1/openapi.json")
    assert spec.status_code == 200 and "/api/v1/approvals/{pipeline}/{counter}/{stage}/approve" in spec.json()["paths"]
    docs = httpx.get(f"{rig.server.url}/api/v1/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    anonymous = httpx.get(f"{rig.server.url}/api/v1/status")
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "not_signed_in"


def test_the_servers_own_page_without_a_hub_says_how_to_sign_in(rig: Rig) -> None:
    for path in ("/", "/dashboard"):
        page = httpx.get(f"{rig.server.url}{path}")
        assert page.status_code == 401 and "You are not signed in" in page.text, page.text
        assert "workbench token create" in page.text and "location" not in page.headers
    # a bearer token shows the page (the page itself then calls the API with cookies; none here)
    signed = httpx.get(f"{rig.server.url}/", headers={"Authorization": f"Bearer {rig.carol.token}"})
    assert signed.status_code == 200 and 'id="wb-config"' in signed.text
    assert signed.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in signed.headers[
        "content-security-policy"]


def test_polled_reads_are_gzipped_and_revalidated_by_etag(rig: Rig) -> None:
    """The board as a browser or httpx asks for it: gzip, and 304 for an unchanged answer, whether the cached
    event-loop path or the endpoint (the first request after a write computes there) answers."""
    url = f"{rig.server.url}/api/v1/status"
    auth = {"Authorization": f"Bearer {rig.carol.token}"}
    make_token(rig.root, "carol", "read")  # a write: the next read is computed by the endpoint
    with httpx.Client(headers=auth) as http:  # httpx sends Accept-Encoding: gzip, deflate (br, zstd when installed)
        first = http.get(url, headers={"Accept-Encoding": "gzip"})
        again = http.get(url, headers={"Accept-Encoding": "gzip"})  # a cache hit: answered before FastAPI routes it
        plain = http.get(url, headers={"Accept-Encoding": "identity"})
        assert len(plain.content) >= MIN_GZIP  # ~1 kB: big enough to be compressed
        for r in (first, again):
            assert r.status_code == 200 and r.headers["content-encoding"] == "gzip", r.headers
            assert int(r.headers["content-length"]) < len(plain.content)
            assert r.headers["vary"] == "Accept-Encoding"
        assert "content-encoding" not in plain.headers
        assert first.json() == again.json() == plain.json() == rig.carol.board()
        etag = first.headers["etag"]
        assert etag == again.headers["etag"] != plain.headers["etag"]
        unchanged = http.get(url, headers={"Accept-Encoding": "gzip", "If-None-Match": etag})
        assert unchanged.status_code == 304 and unchanged.content == b"" and unchanged.headers["etag"] == etag
        make_token(rig.root, "carol", "read")  # the store changed, the board did not: the endpoint says 304 too
        after = http.get(url, headers={"Accept-Encoding": "gzip", "If-None-Match": f'W/{etag}, "other"'})
        assert after.status_code == 304 and after.headers["etag"] == etag
        stale = http.get(url, headers={"Accept-Encoding": "gzip", "If-None-Match": '"not-this-one"'})
        assert stale.status_code == 200 and stale.json() == plain.json()
        refused = http.get(url, headers={"Authorization": "Bearer wb_nope", "If-None-Match": etag})
        assert refused.status_code == 401  # a tag is no credential
