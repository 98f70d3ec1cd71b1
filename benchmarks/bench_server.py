"""The release service (issue 14, "Performance"): `workbench server` against today's paths, one run.

    python benchmarks/bench_server.py [--only webhook,reads,notebook] [--pushes 20] [--notifies 10]
                                      [--pipelines 1000] [--clients 50] [--repeat 3]

1. **webhook**: a signed GitHub-style push (``POST /api/v1/webhooks/github``,
   ``X-Hub-Signature-256``) after a real ``git commit`` to a real temp repo →
   the first job of its pipeline started (``job_runs.started_at`` in the
   store), median of ``--pushes`` (target ≤ 100 ms). Baseline, same run:
   ``workbench notify REPO`` (the CLI) against a running ``workbench serve``,
   today's path; the server's own ``POST /api/v1/notify`` beside it; GoCD's
   60 s default material poll as the documented anchor (a constant, not
   measured). A build without the webhook endpoint (404) prints "webhooks not
   available in this build" for ours and still measures the rest.
2. **reads** at ``--pipelines`` (1,000) pipelines with 3 runs of history each
   (bulk-inserted through the store's tables, as bench_metrics.py does) and a
   few dozen runs waiting at a manual approval: the board (``GET status``),
   ``approvals`` and ``history`` under ``--clients`` (50) concurrent clients
   (a closed loop from a process of its own: ``wrk -t1 -c50`` with keep-alive for ``--load-seconds``
   after a 1 s warm-up, or, without wrk, asyncio + httpx.AsyncClient in a child process), p50/p95 and
   throughput (target p95 ≤ 50 ms);
   the approve round trip (``POST approve`` → 2xx), median (target ≤ 50 ms).
   Baselines, same run: the same reads as one CLI process each (``workbench
   status|approvals|history --format json``, what a user without the server
   pays) and the in-process computation without the read cache (``reporting.status_rows``,
   ``approvals.pending_approvals``, ``reporting.history_rows``: what every request paid before it);
   and, as the floor of what this machine and this client can show, the same load against a bare
   uvicorn app (no FastAPI, no workbench; ``http="auto"`` as the server) answering a constant, and
   answering each read's own bytes (the board of 1,000 pipelines is ~440 kB: sending it is a floor too).
3. **notebook**: ``POST /api/v1/pipelines/one/trigger`` of a one-job pipeline
   running a trivial notebook → the job finished (store), the server's kernel
   pool warm (target ≤ 0.3 s; an untimed first run, the idle window set long
   with ``WORKBENCH_KERNEL_IDLE_SECONDS``), beside the ``papermill`` CLI and
   ``papermill.execute_notebook`` in-process on the same notebook.

Every server is a real ``python -m workbench server --bind 127.0.0.1:0`` process
(its own process group, killed at the end); tokens come from the real
``workbench token create``. The bench process only sends requests and reads
the store's SQLite file with ``sqlite3`` (so it works against any build's
schema). All traffic goes to 127.0.0.1; every loop is bounded in count and time.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import math
import os
import re
import selectors
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import REPO, Report, Row, fmt_s, med, target  # noqa: E402

ALL = ("webhook", "reads", "notebook")
SECRET = "bench-webhook-secret"
GOCD_POLL_S = 60.0  # GoCD's default material update interval (cruise-config: materialUpdateInterval 60000 ms)
UNAVAILABLE = "webhooks not available in this build"


# -- processes ----------------------------------------------------------------------------------


def _env(root: Path, **extra: str) -> dict[str, str]:
    # the children run this checkout's workbench, as the in-process parts do (harness.py puts it first on
    # sys.path), unless PYTHONPATH names another build (e.g. a branch exported with `git archive`)
    env = {**os.environ, "WORKBENCH_WORKSPACE": str(root), "PYTHONPATH": os.environ.get("PYTHONPATH") or str(REPO),
           **extra}
    env.pop("WORKBENCH_SERVER", None)
    env.pop("WORKBENCH_TOKEN", None)
    return env


def _reset_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)


class Proc:
    """A `workbench server` or `workbench serve` in its own process group (stderr to a file)."""

    def __init__(self, root: Path, *args: str, wait_for: str | None = r"serving (http://\S+)",
                 env: dict[str, str] | None = None, timeout: float = 90) -> None:
        self.log = root.parent / f"{args[0]}-{time.monotonic_ns()}.log"
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "workbench", *args], cwd=root,
                                         env=_env(root, **(env or {})), stdout=subprocess.PIPE, stderr=err,
                                         text=True, start_new_session=True, preexec_fn=_reset_signals)
        self.url = ""
        if wait_for is None:
            return
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline, seen = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            if not sel.select(timeout=0.2):
                if self.proc.poll() is not None:
                    break
                continue
            line = self.proc.stdout.readline()
            if not line:
                break
            seen += line
            m = re.search(wait_for, line)
            if m:
                self.url = m.group(1) if m.groups() else ""
                return
        self.stop()
        raise RuntimeError(f"workbench {args[0]} did not start: {seen}\n{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def __enter__(self) -> "Proc":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wb(root: Path, *args: str, timeout: float = 300) -> str:
    p = subprocess.run([sys.executable, "-m", "workbench", *args], cwd=root, env=_env(root), capture_output=True,
                       text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"workbench {' '.join(args)} failed: {p.stderr.strip()[-1500:]}")
    return p.stdout


def token(root: Path, user: str) -> str:
    return wb(root, "token", "create", "--user", user, "--scope", "act", "--expires", "1d").strip().splitlines()[-1]


def cli_seconds(root: Path, *args: str, repeat: int) -> float:
    """Median wall time of `workbench ARGS` as a fresh process (what a user without the server pays)."""
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        wb(root, *args)
        out.append(time.perf_counter() - t)
    return med(out)


# -- the store, read from the side ------------------------------------------------------------


class StoreFile:
    """The workspace's SQLite store read with sqlite3 (WAL: readers never block the server)."""

    def __init__(self, root: Path) -> None:
        self.path = root / ".workbench" / "store.db"
        self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10, isolation_level=None)

    def one(self, sql: str, *args: Any) -> Any:
        row = self.conn.execute(sql, args).fetchone()
        return row[0] if row else None

    def wait(self, sql: str, *args: Any, timeout: float = 30, poll: float = 0.002) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = self.one(sql, *args)
            if v is not None:
                return v
            time.sleep(poll)
        raise TimeoutError(f"nothing after {timeout:.0f} s: {sql} {args}")

    def first_job_started_after(self, t0: float, timeout: float = 30) -> float:
        return self.wait("SELECT min(started_at) FROM job_runs WHERE started_at > ?", t0, timeout=timeout) - t0

    def idle(self, timeout: float = 30) -> None:
        """Until no pipeline run is unfinished (the next push must not meet a run in progress)."""
        self.wait("SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM pipeline_runs WHERE status IN "
                  "('scheduled', 'running'))", timeout=timeout, poll=0.01)

    def close(self) -> None:
        self.conn.close()


def p95(values: list[float]) -> float:
    vals = sorted(values)
    if not vals:
        return float("nan")
    return vals[min(len(vals) - 1, math.ceil(0.95 * len(vals)) - 1)]


# -- 1. webhook → first job started ----------------------------------------------------------------


def _push_body(repo: Path, sha: str) -> bytes:
    url = str(repo)
    return json.dumps({"ref": "refs/heads/master", "after": sha, "before": "0" * 40,
                       "repository": {"name": repo.name, "full_name": f"bench/{repo.name}", "clone_url": url},
                       "head_commit": {"id": sha, "message": "bench"}, "pusher": {"name": "bench"}}).encode()


def _signed(body: bytes) -> dict[str, str]:
    sig = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={sig}", "X-GitHub-Event": "push",
            "X-GitHub-Delivery": str(uuid.uuid4()), "Content-Type": "application/json"}


def bench_webhook(report: Report, tmp: Path, pushes: int, notifies: int) -> None:
    import httpx

    from bench_triggering import bump, git, make_repos, write_workspace

    repo = make_repos(tmp / "hook-repos", 1)[0]
    root = write_workspace(tmp / "hook-ws", [repo])
    (root / "workbench.yaml").write_text(f'server:\n  webhooks:\n    github: {{secret: "{SECRET}"}}\n')
    wb(root, "validate")
    tok = token(root, "alice")
    hook: list[float] = []
    answers: list[float] = []
    api_notify: list[float] = []
    note = ""
    with Proc(root, "server", "--bind", "127.0.0.1:0", "--interval", "600") as server:
        store = StoreFile(root)
        store.wait("SELECT 1 FROM pipeline_runs", timeout=60)  # the first full pass triggers the first run
        store.idle()
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for i in range(pushes):
                bump(repo, f"hook {i}")
                body = _push_body(repo, git(repo, "rev-parse", "HEAD").strip())
                headers = _signed(body)
                t0 = time.time()
                r = http.post("/api/v1/webhooks/github", content=body, headers=headers)
                answers.append(time.time() - t0)
                if r.status_code == 404:
                    note = UNAVAILABLE + " (POST /api/v1/webhooks/github answered 404)"
                    break
                if r.status_code >= 300:
                    note = f"webhook refused: HTTP {r.status_code} {r.text[:300]}"
                    break
                hook.append(store.first_job_started_after(t0))
                store.idle()
            auth = {"Authorization": f"Bearer {tok}"}
            for i in range(notifies):  # the server's own notify endpoint, same server
                bump(repo, f"api notify {i}")
                t0 = time.time()
                r = http.post("/api/v1/notify", json={"what": str(repo)}, headers=auth)
                r.raise_for_status()
                api_notify.append(store.first_job_started_after(t0))
                store.idle()
        store.close()
    # today's path: `workbench serve` + the `workbench notify URL` CLI (a post-receive hook)
    cli_notify: list[float] = []
    with Proc(root, "serve", "--interval", "600", wait_for=r"serving"):
        store = StoreFile(root)
        time.sleep(1.0)  # its first full pass
        store.idle()
        for i in range(notifies):
            bump(repo, f"cli notify {i}")
            t0 = time.time()
            subprocess.run([sys.executable, "-m", "workbench", "notify", str(repo)], cwd=root, env=_env(root),
                           check=True, capture_output=True, timeout=60)
            cli_notify.append(store.first_job_started_after(t0))
            store.idle()
        store.close()
    floor = _git_floor(tmp, repo, notifies)
    ours = med(hook) if hook else float("nan")
    extra: dict[str, Any] = {}
    if hook:
        extra["push → job started med/max"] = f"{ours * 1000:.1f}/{max(hook) * 1000:.1f} ms"
        extra["webhook HTTP answer (median)"] = fmt_s(med(answers))
    else:
        extra["ours"] = note or UNAVAILABLE
    extra[f"POST /api/v1/notify, same server (median of {notifies})"] = fmt_s(med(api_notify))
    tg = [target("signed push → first job started (median)", ours * 1000, 100)] if hook else [
        f"signed push → first job started (median) <= 100 ms: not measured ({note or UNAVAILABLE})"]
    report.add(Row("(s1) signed GitHub push webhook → first job started (`true` job, server --interval 600)",
                   f"{len(hook)} pushes" if hook else "—", ours,
                   {f"`workbench notify` CLI + `workbench serve` (median of {notifies})": med(cli_notify),
                    "GoCD default material poll: 60 s (documented anchor, not measured)": GOCD_POLL_S,
                    "floor: `git ls-remote` + `git fetch` of the moved repo into a mirror, no server (median)":
                        floor},
                   {}, extra, tg))
    if note:
        report.note(note)


def _git_floor(tmp: Path, repo: Path, n: int) -> float:
    """What any poll of a repository that moved costs before a job can start: ``git ls-remote`` (has it moved?)
    then ``git fetch`` into a mirror (the job needs the commit), as two subprocesses, the push just made."""
    from bench_triggering import GIT_ENV, bump, git

    mirror = tmp / "floor-mirror.git"
    subprocess.run(["git", "clone", "-q", "--mirror", str(repo), str(mirror)], check=True, capture_output=True,
                   env={**os.environ, **GIT_ENV})
    out = []
    for i in range(max(3, n)):
        bump(repo, f"floor {i}")
        t = time.perf_counter()
        git(mirror, "ls-remote", "--heads", "origin")
        git(mirror, "fetch", "--prune", "--quiet", "origin")
        out.append(time.perf_counter() - t)
    return med(out)


# -- 2. 1,000 pipelines: reads under 50 clients, approve ---------------------------------------------


def write_many(root: Path, n: int, runs: int, waiting: int) -> list[str]:
    """n pipelines (build, then deploy behind a manual approval), `runs` passed runs each, and the last
    run of `waiting` of them waiting at deploy: bulk-inserted rows. Returns the waiting locators."""
    from workbench.store import schema as S
    from workbench.workspace import Workspace

    (root / "pipelines").mkdir(parents=True)
    lines = ["format_version: 10", "pipelines:"]
    for i in range(n):
        lines += [f"  p{i:04d}:", f"    group: g{i % 20:02d}", "    stages:",
                  "      - build:", "          jobs: {unit: {tasks: [{exec: {command: 'true'}}]},"
                  " lint: {tasks: [{exec: {command: 'true'}}]}}",
                  "      - deploy:", "          approval: manual",
                  "          jobs: {ship: {tasks: [{exec: {command: 'true'}}]}}"]
    (root / "pipelines" / "many.gocd.yaml").write_text("\n".join(lines) + "\n")
    ws = Workspace.open(root)
    _ = ws.config
    now = time.time() - 86400
    pr, sr, jr, counters, locators = [], [], [], [], []
    rid = sid = jid = 0
    every = max(1, n // max(1, waiting))
    for i in range(n):
        name = f"p{i:04d}"
        total = runs + (1 if i % every == 0 and len(locators) < waiting else 0)
        for c in range(1, total + 1):
            rid += 1
            wait = c > runs
            t = now + i + c * 600
            pr.append({"id": rid, "pipeline": name, "counter": c, "label": str(c), "group_name": f"g{i % 20:02d}",
                       "trigger": "manual", "triggered_by": "bench", "status": "waiting" if wait else "passed",
                       "revisions": {}, "created_at": t, "started_at": t, "finished_at": None if wait else t + 30})
            for pos, (stage, jobs) in enumerate((("build", ("unit", "lint")), ("deploy", ("ship",)))):
                sid += 1
                status = "waiting" if wait and stage == "deploy" else "passed"
                ts = t + pos * 15
                sr.append({"id": sid, "pipeline_run_id": rid, "name": stage, "position": pos, "counter": 1,
                           "status": status, "approval_type": "manual" if stage == "deploy" else "success",
                           "approved_by": None if status == "waiting" or stage == "build" else "bench",
                           "created_at": ts, "started_at": None if status == "waiting" else ts,
                           "finished_at": None if status == "waiting" else ts + 10})
                if status == "waiting":
                    locators.append(f"{name}/{c}/deploy")
                    continue
                for job in jobs:
                    jid += 1
                    jr.append({"id": jid, "stage_run_id": sid, "name": job, "run_index": 1, "run_count": 1,
                               "status": "passed", "exit_code": 0, "created_at": ts, "started_at": ts,
                               "finished_at": ts + 5})
        counters.append({"pipeline": name, "counter": total})
    with ws.store.write() as conn:
        conn.execute(S.pipeline_runs.insert(), pr)
        conn.execute(S.stage_runs.insert(), sr)
        conn.execute(S.job_runs.insert(), jr)
        conn.execute(S.pipeline_counters.insert(), counters)
    ws.close()
    return locators


WRK_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p95_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "errors": %d}\n', summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max,
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


@dataclass(frozen=True)
class Load:
    """What one closed-loop load (``clients`` connections, each sending its next request when the last answered)
    gave: latencies in seconds, throughput in requests per second, and the generator that produced it."""

    p50: float
    p95: float
    rps: float
    requests: int
    errors: int
    tool: str


def wrk_path() -> str | None:
    return shutil.which("wrk")


def load(tmp: Path, url: str, tok: str, path: str, clients: int, seconds: float) -> Load:
    """``clients`` keep-alive connections sending GET ``path`` back to back for ``seconds``, from a process of its
    own so the generator's CPU is not the bench's (nor the server's GIL): `wrk` (C, one epoll thread) when
    installed, else the same closed loop with asyncio + httpx.AsyncClient in a child Python process (slower per
    request, so its floor is higher: the bare-uvicorn row beside every figure shows that floor)."""
    exe = wrk_path()
    if exe:
        script = tmp / "wrk-report.lua"
        script.write_text(WRK_LUA)
        p = subprocess.run([exe, "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--timeout", "60s",
                            "-H", f"Authorization: Bearer {tok}", "-s", str(script), url.rstrip("/") + path],
                           capture_output=True, text=True, timeout=seconds + 120)
        m = re.search(r"WRKJSON (\{.*\})", p.stdout)
        if p.returncode != 0 or not m:
            raise RuntimeError(f"wrk failed: {p.stdout[-800:]} {p.stderr[-800:]}")
        got = json.loads(m.group(1))
        # non-2xx answers: wrk counts them in errors.status
        return Load(got["p50_us"] / 1e6, got["p95_us"] / 1e6, got["requests"] / (got["duration_us"] / 1e6),
                    got["requests"], got["errors"], f"wrk -t1 -c{clients} (keep-alive)")
    p = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_load", url, tok, path, str(clients),
                        str(seconds)], capture_output=True, text=True, timeout=seconds + 120, env=_env(tmp))
    if p.returncode != 0:
        raise RuntimeError(f"the load process failed: {p.stderr[-1500:]}")
    got = json.loads(p.stdout.strip().splitlines()[-1])
    return Load(got["p50"], got["p95"], got["rps"], got["requests"], got["errors"],
                f"asyncio + httpx.AsyncClient, {clients} keep-alive connections, own process (wrk not installed)")


def _load_child(url: str, tok: str, path: str, clients: int, seconds: float) -> None:
    """The fallback generator (``--_load``): prints one JSON line with p50/p95/throughput."""
    import httpx

    lat: list[float] = []
    errors = 0

    async def go() -> float:
        nonlocal errors
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {tok}"}, limits=limits,
                                     timeout=120) as http:
            await asyncio.gather(*(http.get(path) for _ in range(clients)))  # open the connections
            t0 = time.perf_counter()
            deadline = t0 + seconds

            async def one_client() -> None:
                nonlocal errors
                while time.perf_counter() < deadline:
                    t = time.perf_counter()
                    r = await http.get(path)
                    lat.append(time.perf_counter() - t)
                    errors += r.status_code >= 300

            await asyncio.gather(*(one_client() for _ in range(clients)))
            return time.perf_counter() - t0

    took = asyncio.run(go())
    print(json.dumps({"p50": med(lat), "p95": p95(lat), "rps": len(lat) / took, "requests": len(lat),
                      "errors": errors}))


BARE_APP = r"""
import socket, sys, uvicorn
# the body: a 12-byte constant, or the bytes of the file named by argv[1] (a read's own answer)
body = open(sys.argv[1], "rb").read() if len(sys.argv) > 1 else b'{"ok": true}'
headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
# proto IPPROTO_TCP, as uvicorn's own bind makes it: asyncio sets TCP_NODELAY on accepted sockets only then, and
# without it every answer (headers and body written apart) waits ~40 ms for the client's delayed ACK
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
sock.bind(("127.0.0.1", 0))
print(f"serving http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
# http="auto", as `workbench server` has it: httptools when installed (it is a dependency of the server), else h11
uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False, http="auto")).run(sockets=[sock])
"""


def _until_listening(url: str, timeout: float = 30) -> None:
    """The bare app prints its port before uvicorn listens on it: connect until it does."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def bare_anchor(tmp: Path, clients: int, seconds: float, body: bytes | None = None) -> Load:
    """The same load against a bare uvicorn app answering a constant (no FastAPI, no workbench): what this
    machine and this generator give at best, measured in the same run. With ``body``: answering those bytes
    (a read's own answer, e.g. the 1,000-row board), the floor of sending that much per request."""
    script = tmp / "bare_app.py"
    script.write_text(BARE_APP)
    args = [sys.executable, str(script)]
    if body is not None:
        (tmp / "bare_body.json").write_bytes(body)
        args.append(str(tmp / "bare_body.json"))
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_reset_signals)
    try:
        assert proc.stdout is not None
        url = re.search(r"serving (http://\S+)", proc.stdout.readline()).group(1)
        _until_listening(url)
        load(tmp, url, "none", "/", clients, 1)  # warm
        return load(tmp, url, "none", "/", clients, seconds)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def fmt_load(x: Load) -> str:
    return f"p50 {fmt_s(x.p50)}, p95 {fmt_s(x.p95)}, {x.rps:,.0f} req/s ({x.requests:,} requests)"


def bench_reads(report: Report, tmp: Path, n: int, clients: int, repeat: int, seconds: float = 5) -> None:
    import httpx

    from workbench.workspace import Workspace

    root = tmp / "many-ws"
    t = time.perf_counter()
    waiting = write_many(root, n, runs=3, waiting=36)
    built = time.perf_counter() - t
    tok = token(root, "alice")
    from workbench import approvals as A
    from workbench import reporting as R

    # the in-process baseline computes every time (the functions under workbench.service's cache): what one
    # answer costs, and what every request paid before the cache
    reads_ = {"board": ("/api/v1/status", ("status", "--format", "json"), lambda ws: R.status_rows(ws)),
              "approvals": ("/api/v1/approvals", ("approvals", "--format", "json"),
                            lambda ws: A.pending_approvals(ws)),
              "history": ("/api/v1/history", ("history", "--format", "json"),
                          lambda ws: R.history_rows(ws, None, 50))}
    # baselines first (no server running): one CLI process per read, and the in-process call
    cli = {k: cli_seconds(root, *v[1], repeat=repeat) for k, v in reads_.items()}
    ws = Workspace.open(root)
    inproc = {}
    for k, v in reads_.items():
        v[2](ws)  # warm: config parsed, statements prepared
        samples = []
        for _ in range(repeat):
            t = time.perf_counter()
            v[2](ws)
            samples.append(time.perf_counter() - t)
        inproc[k] = med(samples)
    ws.close()
    with Proc(root, "server", "--bind", "127.0.0.1:0", "--interval", "600") as server:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {tok}"}, timeout=120) as http:
            single, bodies = {}, {}
            for k, v in reads_.items():
                warm = http.get(v[0])  # warm
                warm.raise_for_status()
                bodies[k] = warm.content
                samples = []
                for _ in range(5):
                    t = time.perf_counter()
                    http.get(v[0]).raise_for_status()
                    samples.append(time.perf_counter() - t)
                single[k] = med(samples)
            loaded = {}
            for k, v in reads_.items():
                load(tmp, server.url, tok, v[0], clients, 1)  # warm: the connections, the server's pool
                loaded[k] = load(tmp, server.url, tok, v[0], clients, seconds)
            # approve round trip: a person approving one stage at a time (the run continues in the server)
            approve: list[float] = []
            for loc in waiting[: min(24, len(waiting) - 4)]:
                p, c, s = loc.split("/")
                t = time.perf_counter()
                r = http.post(f"/api/v1/approvals/{p}/{c}/{s}/approve", json={"comment": "bench"})
                approve.append(time.perf_counter() - t)
                r.raise_for_status()
                time.sleep(0.25)  # the approved stage's job runs in the server meanwhile
    # the floor, same generator, same run (the server stopped: it does not share the CPU with it)
    bare = bare_anchor(tmp, clients, seconds)
    same = {k: bare_anchor(tmp, clients, seconds, bodies[k]) for k in reads_}  # the floor of each read's size
    report.note(f"(s2) load generator: {bare.tool}; {seconds:g} s per read after a 1 s warm-up; the bare uvicorn "
                f"app answering a constant: {fmt_load(bare)}")
    for k, v in reads_.items():
        x = loaded[k]
        extra = {"under load": fmt_load(x), "one client alone (median of 5)": fmt_s(single[k]),
                 "bare uvicorn, same generator and clients": fmt_load(bare),
                 f"bare uvicorn answering this read's {len(bodies[k]):,} bytes": fmt_load(same[k])}
        if x.errors:
            extra["errors / non-2xx answers"] = str(x.errors)
        report.add(Row(f"(s2) {n:,} pipelines, 3 runs each, {len(waiting)} waiting at approval: reads, p95 under "
                       f"{clients} concurrent clients", f"GET {v[0].removeprefix('/api/v1')}", x.p95,
                       {f"`workbench {' '.join(v[1])}` (one process each)": cli[k],
                        "in-process, computed without the cache (reporting / approvals)": inproc[k],
                        f"bare uvicorn app answering a constant, same {clients} clients (p95)": bare.p95,
                        f"bare uvicorn answering the same {len(bodies[k]):,} bytes, same {clients} clients (p95)":
                            same[k].p95},
                       {}, extra, [target(f"{k} p95 under {clients} clients", x.p95 * 1000, 50)]))
    report.add(Row(f"(s2) {n:,} pipelines, 3 runs each, {len(waiting)} waiting at approval: reads, p95 under "
                   f"{clients} concurrent clients", "POST approve (round trip)", med(approve),
                   {"`workbench approve --detach` CLI (one process each)": _cli_approve(root, waiting[-3:])}, {},
                   {"max": fmt_s(max(approve)), "approvals": str(len(approve))},
                   [target("approve round trip (median)", med(approve) * 1000, 50)]))
    report.note(f"(s2) history of {n:,} pipelines built in {built:.1f} s (bulk insert through the store's tables)")


def _cli_approve(root: Path, locators: list[str]) -> float:
    """`workbench approve P/C/S --detach` as a fresh process, the server stopped (the approval only, as the POST)."""
    out = []
    for loc in locators:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "workbench", "approve", loc, "--comment", "bench", "--detach", "-q"], cwd=root,
                       env=_env(root), check=True, capture_output=True, timeout=120)
        out.append(time.perf_counter() - t)
    return med(out)


# -- 3. a trivial notebook job through the server ----------------------------------------------------


def bench_notebook(report: Report, tmp: Path, repeat: int) -> None:
    """POST trigger of the one-job pipeline ``one`` (a two-cell notebook) → that run's job passed in the store,
    the server's kernel pool warm: an untimed first run after start (the pool keeps a spare kernel, keep_spare),
    the idle window made long (WORKBENCH_KERNEL_IDLE_SECONDS=3600) so the spare is not reaped between runs, and
    a pause before each timed run for the replacement spare to boot, as between real jobs. Beside it, same
    run and notebook: the ``papermill`` CLI, and ``papermill.execute_notebook`` in this process (a fresh kernel
    each time: papermill has no pool)."""
    import httpx
    import papermill

    from bench_notebooks import papermill_cli, write_workspace

    root = tmp / "nb-ws"
    nb = write_workspace(root)
    out = tmp / "nb-out"
    out.mkdir()
    tok = token(root, "alice")
    warm: list[float] = []
    answers: list[float] = []
    with Proc(root, "server", "--bind", "127.0.0.1:0", "--interval", "600",
              env={"WORKBENCH_KERNEL_IDLE_SECONDS": "3600"}) as server:
        store = StoreFile(root)
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {tok}"}, timeout=60) as http:

            def one() -> float:
                t0 = time.time()
                r = http.post("/api/v1/pipelines/one/trigger", json={})
                answers.append(time.time() - t0)
                r.raise_for_status()
                counter = r.json()["counter"]
                done = store.wait("SELECT max(j.finished_at) FROM job_runs j JOIN stage_runs s ON j.stage_run_id = "
                                  "s.id JOIN pipeline_runs p ON s.pipeline_run_id = p.id WHERE p.pipeline = 'one' AND "
                                  "p.counter = ? AND p.status = 'passed'", counter, timeout=120, poll=0.005)
                return done - t0

            first = one()  # untimed for the target: it meets whatever the server's start warmed
            for _ in range(max(5, repeat + 2)):
                time.sleep(2.0)  # the replacement spare kernel boots, as it does between real jobs
                warm.append(one())
        store.close()
    cli, inproc = [], []
    for i in range(repeat):
        t = time.perf_counter()
        papermill_cli(nb, out / f"cli-{i}.ipynb")
        cli.append(time.perf_counter() - t)
    papermill.execute_notebook(str(nb), str(out / "warm.ipynb"), parameters={"x": 2}, progress_bar=False)
    for i in range(repeat):
        t = time.perf_counter()
        papermill.execute_notebook(str(nb), str(out / f"inproc-{i}.ipynb"), parameters={"x": 2}, progress_bar=False)
        inproc.append(time.perf_counter() - t)
    ours = med(warm)
    report.add(Row("(s3) trivial notebook job (2 cells): POST trigger → the run's job passed (store), server's "
                   "kernel pool warm", "1 notebook", ours,
                   {"papermill CLI (fresh process and kernel)": med(cli),
                    "papermill.execute_notebook in-process (fresh kernel, imports warm)": med(inproc)}, {},
                   {f"median of {len(warm)}, min/max": f"{min(warm) * 1000:.0f}/{max(warm) * 1000:.0f} ms",
                    "trigger HTTP answer (median)": fmt_s(med(answers)),
                    "first run after the server started (untimed for the target)": fmt_s(first)},
                   [target("trigger → notebook job passed (median, warm)", ours * 1000, 300)]))


# -- main ----------------------------------------------------------------------------------------------


def run(report: Report, only: set[str], args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="wb-bench-server-") as tmp:
        if "webhook" in only:
            bench_webhook(report, Path(tmp), args.pushes, args.notifies)
        if "reads" in only:
            bench_reads(report, Path(tmp), args.pipelines, args.clients, args.repeat,
                        getattr(args, "load_seconds", 5))
        if "notebook" in only:
            bench_notebook(report, Path(tmp), args.repeat)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(ALL))
    ap.add_argument("--pushes", type=int, default=20)
    ap.add_argument("--notifies", type=int, default=10)
    ap.add_argument("--pipelines", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--load-seconds", type=float, default=5, help="how long each read is loaded (wrk -d)")
    ap.add_argument("--_load", nargs=5, help=argparse.SUPPRESS)  # the fallback generator's child process
    ap.add_argument("--json", type=Path, default=None, help="save the rows here (run_all.py reads them)")
    args = ap.parse_args(argv)
    if args._load:
        url, tok, path, clients, seconds = args._load
        _load_child(url, tok, path, int(clients), float(seconds))
        return 0
    only = {w.strip() for w in args.only.split(",") if w.strip()}
    if only - set(ALL):
        ap.error(f"unknown parts {', '.join(sorted(only - set(ALL)))} (known: {', '.join(ALL)})")
    report = Report()
    m = report.machine
    print(f"bench_server.py {m['date']}: {m['cpu']}, {m['nproc']} CPUs, load average {m['load_before'][0]:.1f}")
    if "reads" in only and not wrk_path():
        print("wrk is not installed (apt-get install wrk): the reads are loaded by asyncio + httpx in a child "
              "process instead, whose own per-request cost is the floor (see the bare-uvicorn baseline)")
    run(report, only, args)
    path = report.save(args.json) if args.json else None
    took = time.time() - report.started
    print(f"\n{len(report.rows)} rows in {took:.0f} s; load average now {os.getloadavg()[0]:.1f}"
          + (f"; saved {path}" if path else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
