"""Notifications against real receivers on loopback: an aiosmtpd server with STARTTLS and
AUTH LOGIN receiving the mails of real pipeline runs (fails, then fixed, then waiting for
approval), a sender killed mid-batch and restarted, SMTP down then back; an http.server for
the Slack/Teams/signed webhooks fed by `workbench serve`; located config errors."""
from __future__ import annotations

import asyncio
import datetime
import email
import email.policy
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import require_module  # noqa: E402

aiosmtpd = require_module("aiosmtpd", "the test extra: make test installs it")
from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import AuthResult  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from workbench import Workspace  # noqa: E402
from workbench.notifications import outbox as O  # noqa: E402
from workbench.notifications.config import Notifications, Person, Subscription, Channel  # noqa: E402
from workbench.notifications.deliver import DELIVERY_HEADER, SIGNATURE_HEADER, sign  # noqa: E402
from workbench.notifications.events import Event  # noqa: E402
from workbench.notifications.feed import address, compose  # noqa: E402
from workbench.notifications.sender import send_pass  # noqa: E402

PASSWORD = "s3cret-smtp-pw"
HOOK_SECRET = "hook-secret-xyz"


def _reset_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _cert(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    c, k = tmp / "cert.pem", tmp / "key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return c, k


class _Inbox:
    """Keeps each accepted message; ``hold_rcpt`` makes the Nth RCPT wait until released."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], email.message.EmailMessage]] = []
        self.rcpts = 0
        self.hold_at: int | None = None
        self.holding = threading.Event()
        self.release = threading.Event()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 - aiosmtpd's name
        self.rcpts += 1
        if self.hold_at is not None and self.rcpts == self.hold_at:
            self.holding.set()
            while not self.release.is_set():
                await asyncio.sleep(0.05)
            return "451 try again later"  # the client is gone by now; nothing is accepted
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((list(envelope.rcpt_tos), msg))
        return "250 OK"


def _auth(server, session, envelope, mechanism, auth_data):
    return AuthResult(success=auth_data.login == b"wb" and auth_data.password == PASSWORD.encode())


class _Smtp:
    def __init__(self, tmp: Path, port: int | None = None) -> None:
        self.cert, key = _cert(tmp)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, key)
        self.inbox = _Inbox()
        self.port = port or _free_port()  # aiosmtpd's Controller needs a real port number up front
        self.ctl = Controller(self.inbox, hostname="127.0.0.1", port=self.port, server_hostname="localhost",
                              tls_context=ctx, require_starttls=True, authenticator=_auth, auth_require_tls=True)

    def start(self) -> "_Smtp":
        self.ctl.start()
        return self

    def stop(self) -> None:
        self.inbox.release.set()
        self.ctl.stop()


@pytest.fixture
def smtp(tmp_path):
    server = _Smtp(tmp_path).start()
    yield server
    server.stop()


def _cli(root: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WORKBENCH_WORKSPACE": str(root), "COLUMNS": "200", "WB_SMTP_PW": PASSWORD}
    env.pop("WORKBENCH_SERVER", None)
    return subprocess.run([sys.executable, "-m", "workbench", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=timeout, start_new_session=True, preexec_fn=_reset_signals)


def _popen(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full = {**os.environ, "WORKBENCH_WORKSPACE": str(root), "WB_SMTP_PW": PASSWORD, **(env or {})}
    full.pop("WORKBENCH_SERVER", None)
    return subprocess.Popen([sys.executable, "-m", "workbench", *args], cwd=root, env=full, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=_reset_signals)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate(timeout=30)  # reaps it and closes its pipes


SHOP = """
roles:
  qa: [carol, "group:release"]
notifications:
  url: http://release.test
  backoff: {backoff}
  max_attempts: {attempts}
  channels:
    mail: {{type: email, host: localhost, port: {port}, user: wb, password: "${{WB_SMTP_PW}}",
           from: wb@release.test, cafile: "{cert}"}}
  people:
    carol: carol@localhost
    dave: {{email: dave@localhost, chat: "@dave"}}
    group:release: release-list@localhost
  subscriptions:
    - {{to: dave, channel: mail, events: [breaks, fixed, fails]}}
    - {{to: "role:qa", channel: mail, events: [waiting_for_you]}}
    - {{to: dave, channel: mail, events: [waiting_for_you]}}   # dave may not approve: never told
pipelines:
  shop:
    materials: {{}}
    stages:
      - build: {{jobs: {{j: {{tasks: [{{exec: {{command: test, arguments: ["-f", "{flag}"]}}}}]}}}}}}
      - deploy:
          approval: {{type: manual, roles: [qa]}}
          jobs: {{d: {{tasks: [{{exec: {{command: "true"}}}}]}}}}
"""


def _shop(tmp_path: Path, port: int, cert: Path, backoff: str = "600", attempts: int = 8) -> tuple[Path, Path]:
    root, flag = tmp_path / "ws", tmp_path / "flag"
    (root / "pipelines").mkdir(parents=True)
    (root / "pipelines" / "shop.gocd.yaml").write_text(
        SHOP.format(port=port, cert=cert, flag=flag, backoff=backoff, attempts=attempts))
    return root, flag


def _fail_then_fix(root: Path, flag: Path) -> None:
    assert _cli(root, "run", "shop", "-q").returncode == 1
    flag.write_text("x")
    r = _cli(root, "run", "shop", "-q")
    assert r.returncode == 0 and "waiting" in r.stdout, r.stdout + r.stderr


def _rows(root: Path) -> list[dict]:
    ws = Workspace.open(root)
    try:
        with ws.store.read() as conn:
            return [dict(r) for r in conn.execute(sa.select(O.outbox).order_by(O.outbox.c.id)).mappings()]
    finally:
        ws.close()


def test_real_runs_mail_once_each_even_when_the_sender_is_killed_mid_batch(tmp_path, smtp):
    root, flag = _shop(tmp_path, smtp.port, smtp.cert)
    _fail_then_fix(root, flag)
    smtp.inbox.hold_at = 2  # the second message's RCPT waits: the sender is killed while it is in flight
    sender = _popen(root, "notifications", "send")
    try:
        assert smtp.inbox.holding.wait(120), "the sender never reached the second message"
        _kill_group(sender)
    finally:
        _kill_group(sender)
    smtp.inbox.release.set()
    assert len(smtp.inbox.messages) == 1
    states = sorted(r["state"] for r in _rows(root))
    assert states == ["pending", "pending", "sending", "sent"]  # one in doubt, claimed by a dead process

    again = _cli(root, "notifications", "send")  # a new process takes over the dead claimer's row at once
    assert again.returncode == 0, again.stdout + again.stderr
    assert "sent 3" in again.stdout
    assert _cli(root, "notifications", "send").stdout.startswith("queued 0, sent 0")  # nothing twice

    got = sorted((m["Subject"], tuple(rcpt)) for rcpt, m in smtp.inbox.messages)
    assert got == [
        ("[workbench] shop/1/build failed", ("dave@localhost",)),
        ("[workbench] shop/2/build is fixed", ("dave@localhost",)),
        ("[workbench] shop/2/deploy is waiting for your approval", ("carol@localhost",)),
        ("[workbench] shop/2/deploy is waiting for your approval", ("release-list@localhost",)),
    ]
    ids = [m["Message-ID"] for _, m in smtp.inbox.messages]
    assert len(set(ids)) == 4 and all(i.endswith("@release.test>") for i in ids)
    waiting = next(m for rcpt, m in smtp.inbox.messages if rcpt == ["carol@localhost"]).get_content()
    assert "workbench approve shop/2/deploy" in waiting
    assert "POST http://release.test/api/v1/approvals/shop/2/deploy/approve" in waiting
    assert "http://release.test/api/v1/runs/shop/2" in waiting and "http://release.test/dashboard" in waiting
    failed = next(m for _, m in smtp.inbox.messages if "failed" in m["Subject"]).get_content()
    assert "Reason: job j failed" in failed and "workbench rerun shop/1/build" in failed
    rows = _rows(root)
    assert [r["state"] for r in rows] == ["sent"] * 4
    assert all(PASSWORD not in json.dumps(r, default=str) for r in rows)
    listed = json.loads(_cli(root, "notifications", "list", "--format", "json").stdout)
    assert {r["state"] for r in listed} == {"sent"} and len(listed) == 4


def test_smtp_down_is_retried_later_then_delivered_and_given_up_rows_retried(tmp_path):
    port = _free_port()
    server = _Smtp(tmp_path, port)  # not started: nothing listens on the port yet
    root, flag = _shop(tmp_path, port, server.cert, backoff="1", attempts=2)
    cipher = _cli(root, "encrypt", PASSWORD).stdout.strip()  # the password as workbench ciphertext this time
    shop = root / "pipelines" / "shop.gocd.yaml"
    shop.write_text(shop.read_text().replace('password: "${WB_SMTP_PW}"', f'encrypted_password: "{cipher}"'))
    assert "encrypted_password" in shop.read_text() and PASSWORD not in shop.read_text()
    try:
        assert _cli(root, "run", "shop", "-q").returncode == 1
        first = _cli(root, "notifications", "send")
        assert first.returncode == 1 and "failed 1" in first.stdout
        [row] = _rows(root)
        assert row["state"] == "failed" and row["attempts"] == 1 and "Connection refused" in row["last_error"]
        listed = _cli(root, "notifications", "list", "--state", "failed")
        assert "shop/1/build failed" in listed.stdout and "Connection refused" in listed.stdout

        server.start()
        deadline = time.monotonic() + 120
        while _rows(root)[0]["state"] != "sent" and time.monotonic() < deadline:  # the backoff elapses
            _cli(root, "notifications", "send")
        [row] = _rows(root)
        assert row["state"] == "sent" and row["attempts"] == 2
        assert [m["Subject"] for _, m in server.inbox.messages] == ["[workbench] shop/1/build failed"]

        server.stop()  # down again: with max_attempts 2 the next events are given up after two tries
        flag.write_text("x")
        assert _cli(root, "run", "shop", "-q").returncode == 0
        assert "queued 3" in _cli(root, "notifications", "send").stdout
        deadline = time.monotonic() + 120
        while {r["state"] for r in _rows(root)} - {"sent", "gave_up"} and time.monotonic() < deadline:
            _cli(root, "notifications", "send")
        gave_up = [r for r in _rows(root) if r["state"] == "gave_up"]
        assert sorted(r["subject"] for r in gave_up) == ["[workbench] shop/2/build is fixed"] + [
            "[workbench] shop/2/deploy is waiting for your approval"] * 2
        assert all(r["attempts"] == 2 and "Connection refused" in r["last_error"] for r in gave_up)
        server = _Smtp(tmp_path, port).start()
        assert "sent 0" in _cli(root, "notifications", "send").stdout  # given up: not retried by itself
        assert _cli(root, "notifications", "retry").stdout.startswith("3 notification(s)")
        assert "sent 3" in _cli(root, "notifications", "send").stdout
        assert sorted(tuple(rcpt) for rcpt, _ in server.inbox.messages) == [
            ("carol@localhost",), ("dave@localhost",), ("release-list@localhost",)]
    finally:
        try:
            server.stop()
        except Exception:  # noqa: BLE001 - never started, or already stopped
            pass


@pytest.fixture
def hooks():
    got: list[tuple[str, dict, bytes]] = []
    fail = {"left": 0}

    class H(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            if fail["left"] > 0 and self.path == "/signed":  # the signed receiver fails twice
                fail["left"] -= 1
                self.send_response(503)
                self.end_headers()
                return
            got.append((self.path, dict(self.headers), raw))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield got, fail, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_serve_posts_webhooks_signed_and_retried(tmp_path, hooks):
    got, fail, base = hooks
    root = tmp_path / "ws"
    (root / "pipelines").mkdir(parents=True)
    (root / "pipelines" / "p.gocd.yaml").write_text(f"""
notifications:
  backoff: 0.2
  channels:
    slack: {{type: slack, url: "{base}/slack"}}
    teams: {{type: teams, url: "{base}/teams"}}
    signed: {{type: signed, url: "{base}/signed", secret: "${{WB_HOOK_SECRET}}"}}
  people: {{dave: {{chat: "@dave"}}}}
  subscriptions:
    - {{to: dave, channel: slack, events: [fails, paused]}}
    - {{to: dave, channel: teams, events: [fails]}}
    - {{to: dave, channel: signed, events: [all]}}
pipelines:
  p:
    materials: {{}}
    stages:
      - build: {{jobs: {{j: {{tasks: [{{exec: {{command: "false"}}}}]}}}}}}
""")
    assert _cli(root, "run", "p", "-q").returncode == 1
    assert _cli(root, "pause", "p", "-m", "release freeze").returncode == 0
    fail["left"] = 2
    serve = _popen(root, "serve", "-i", "1", env={"WB_HOOK_SECRET": HOOK_SECRET})
    try:
        deadline = time.monotonic() + 120
        while len(got) < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        serve.send_signal(signal.SIGTERM)
        serve.communicate(timeout=60)
    finally:
        _kill_group(serve)
    paths = sorted(p for p, _, _ in got)
    assert paths == ["/signed", "/signed", "/slack", "/slack", "/teams"], paths
    for path, headers, raw in got:
        if path == "/signed":
            assert headers[SIGNATURE_HEADER] == sign(HOOK_SECRET, raw)
            assert headers[DELIVERY_HEADER] == json.loads(raw)["id"]
    events = sorted(json.loads(raw)["event"]["event"] for p, _, raw in got if p == "/signed")
    assert events == ["fails", "paused"]
    slack = sorted(json.loads(raw)["text"] for p, _, raw in got if p == "/slack")
    assert "p/1/build failed" in slack[0] and "@dave" in slack[0]
    assert "pipeline p was paused by" in slack[1] and "release freeze" in slack[1]
    assert json.loads(next(raw for p, _, raw in got if p == "/teams"))["@type"] == "MessageCard"
    rows = _rows(root)
    assert all(r["state"] == "sent" for r in rows) and len(rows) == 5
    signed_fail = next(r for r in rows if r["channel"] == "signed" and r["event"] == "fails")
    assert signed_fail["attempts"] + next(r for r in rows if r["channel"] == "signed" and r["event"] == "paused")[
        "attempts"] == 4  # two 503s, each retried after its backoff
    everything = b"".join(raw for _, _, raw in got) + json.dumps(rows, default=str).encode()
    assert HOOK_SECRET.encode() not in everything


def test_addressing_roles_groups_and_approvers():
    from workbench.config import load_texts

    cfg = load_texts({"p.yaml": """
roles: {qa: [carol, "group:release", erin], ops: [frank]}
pipelines:
  p:
    materials: {}
    stages:
      - build: {jobs: {j: {tasks: [{exec: {command: "true"}}]}}}
      - deploy: {approval: {type: manual, roles: [qa], users: [gina]}, jobs: {j: {tasks: [{exec: {command: "true"}}]}}}
      - open: {approval: manual, jobs: {j: {tasks: [{exec: {command: "true"}}]}}}
"""})
    conf = Notifications(
        channels=(Channel("mail", "email", (("host", "h"), ("from", "wb@x"))), Channel("room", "slack", (("url", "u"),))),
        people=(Person("carol", "carol@x"), Person("group:release", "list@x"), Person("frank", "frank@x", "@frank"),
                Person("gina", "gina@x")),
        subscriptions=(Subscription("role:qa", "mail", frozenset({"waiting_for_you", "fails"})),
                       Subscription("role:ops", "mail", frozenset({"all"}), stages=("build",)),
                       Subscription("gina", "mail", frozenset({"waiting_for_you"})),
                       Subscription("role:ops", "room", frozenset({"waiting_for_you", "fails"}))))
    wait = Event("waiting_for_you", "stage", 7, "p", 3, "deploy")
    got = address(wait, conf, cfg)
    # qa members and gina may approve; erin has no address; frank (ops) may not approve: not told, no room post
    assert sorted(d.recipient for d in got) == ["carol@x", "gina@x", "list@x"]
    fails = address(Event("fails", "stage", 8, "p", 3, "build"), conf, cfg)
    assert sorted((d.recipient, d.mentions) for d in fails) == [
        ("#room", ("@frank",)), ("carol@x", ()), ("frank@x", ()), ("list@x", ())]
    assert address(Event("passes", "stage", 9, "p", 3, "deploy"), conf, cfg) == []  # ops filters on build
    opened = address(Event("waiting_for_you", "stage", 10, "p", 3, "open"), conf, cfg)  # open to anyone
    # frank's mail subscription filters on stage build; his room subscription has no filter
    assert sorted((d.recipient, d.mentions) for d in opened) == [
        ("#room", ("@frank",)), ("carol@x", ()), ("gina@x", ()), ("list@x", ())]
    # with the release service's hub to ask, people of `people:` in hub group "release" are reached too
    hank = Notifications(conf.channels, (*conf.people, Person("hank", "hank@x")), conf.subscriptions)
    in_release = lambda user: frozenset({"release"}) if user == "hank" else frozenset()  # noqa: E731
    assert "hank@x" not in [d.recipient for d in address(wait, hank, cfg)]
    assert "hank@x" in [d.recipient for d in address(wait, hank, cfg, in_release)]
    subject, body = compose(wait, "https://wb.example", ("@carol",))
    assert subject == "[workbench] p/3/deploy is waiting for your approval"
    assert "workbench approve p/3/deploy" in body and "https://wb.example/api/v1/runs/p/3" in body


def test_bad_notifications_config_is_located(tmp_path):
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "n.gocd.yaml").write_text(
        "format_version: 10\nnotifications:\n  channels:\n    mail: {type: email, host: localhost, from: a@b}\n"
        "    bad: {type: pager, url: x}\n  subscriptions:\n    - {to: carol, channel: mail, events: [breaks, bogus]}\n"
        "    - {to: dave, channel: nope}\n    - {to: 'role:ghosts', channel: mail}\n"
        "    - {to: erin, channel: mail}\n  people: {erin: not-an-address}\npipelines: {}\n")
    r = _cli(tmp_path, "validate")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    for expected in ("n.gocd.yaml:5:17: channel bad: type must be one of email, slack, teams, signed",
                     "n.gocd.yaml:7:42: unknown event 'bogus'",
                     "n.gocd.yaml:8:27: subscription refers to channel 'nope'",
                     "n.gocd.yaml:9:12: subscription to unknown role 'ghosts'",
                     "n.gocd.yaml:7:12: 'carol' has no email address",
                     "n.gocd.yaml:11:18: address of erin is not an email address"):
        assert expected in r.stderr, r.stderr


@pytest.mark.usefixtures("workspace_store")
def test_outbox_once_per_key_and_one_claimer_on_both_stores(tmp_path):
    (tmp_path / "ws" / "pipelines").mkdir(parents=True)
    ws = Workspace.open(tmp_path / "ws")
    try:
        row = {"event": "fails", "source": "stage", "source_id": 7, "pipeline": "p", "counter": 1, "stage": "s",
               "recipient": "a@x", "channel": "mail", "subject": "s", "body": "b", "message_id": "<m@x>"}
        with ws.store.write() as conn:
            assert O.enqueue(conn, [row, {**row, "recipient": "b@x"}]) == 2
        with ws.store.write() as conn:
            assert O.enqueue(conn, [row]) == 0  # the same event for the same person again: nothing new
        first = O.claim_one(ws.store, "host:1:1")
        second = O.claim_one(ws.store, "host:2:1")
        assert {first["recipient"], second["recipient"]} == {"a@x", "b@x"}
        assert O.claim_one(ws.store, "host:3:1") is None  # both claimed, their claimers alive
        assert O.claim_one(ws.store, "host:3:1", dead=lambda who: who == "host:1:1")["id"] == first["id"]
        O.mark_sent(ws.store, first["id"], "host:1:1")  # the old claimer lost the row: its mark changes nothing
        assert O.rows(ws.store, state=O.SENT) == []
        assert O.mark_failed(ws.store, second["id"], "host:2:1", 1, "boom", backoff=600, max_attempts=1) == O.GAVE_UP
        assert O.retry(ws.store) == 1
        assert ws.frames.notifications["state"].tolist() == ["sending", "pending"]
    finally:
        ws.close()


def test_the_documented_example_loads():
    from workbench.config import load_texts

    text = (Path(__file__).resolve().parents[1] / "docs" / "notifications.md").read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    conf = load_texts({"notifications.gocd.yaml": block}).extensions["notifications"]
    assert [c.kind for c in conf.channels] == ["email", "slack", "teams", "signed"]
    assert conf.person("dave").chat == "@dave" and conf.url == "https://release.internal"


def test_rollback_and_a_failed_traffic_step_are_told(tmp_path, hooks):
    got, _, base = hooks
    root = tmp_path / "ws"
    (root / "pipelines").mkdir(parents=True)
    (root / "switch.sh").write_text('#!/bin/sh\n[ -f "$(dirname "$0")/broken" ] && { echo "lb01 refused the reload" >&2; exit 3; }\n'
                                    'echo "$@" >> "$(dirname "$0")/weights.txt"\n')
    (root / "switch.sh").chmod(0o755)
    (root / "pipelines" / "p.gocd.yaml").write_text(f"""
routes:
  shop: {{provider: command, stacks: {{blue: "a:1", green: "b:2"}}, argv: ["{root}/switch.sh"]}}
notifications:
  channels: {{hook: {{type: signed, url: "{base}/signed", secret: "${{WB_HOOK_SECRET}}"}}}}
  subscriptions:
    - {{to: ops, channel: hook, events: [rolled_back, fails]}}
pipelines:
  release:
    materials: {{}}
    stages:
      - canary:
          traffic: {{route: shop, weight: 25}}
          jobs: {{j: {{tasks: [{{exec: {{command: "true"}}}}]}}}}
      - verify:
          jobs:
            j:
              tasks:
                - exec: {{command: "false"}}
                - rollback: {{reason: smoke tests failed, run_if: failed}}
""")
    assert _cli(root, "run", "release", "-q").returncode == 1
    (root / "broken").write_text("")
    assert _cli(root, "run", "release", "-q").returncode == 1  # the canary's traffic step fails
    ws = Workspace.open(root)
    try:
        os.environ["WB_HOOK_SECRET"] = HOOK_SECRET
        report = send_pass(ws)
    finally:
        os.environ.pop("WB_HOOK_SECRET", None)
        ws.close()
    assert report.sent == 3, report
    bodies = sorted(json.loads(raw)["subject"] + "\n" + json.loads(raw)["text"] for _, _, raw in got)
    assert bodies[0].startswith("[workbench] release/1 was rolled back by run release/1")
    assert "smoke tests failed" in bodies[0]
    assert bodies[1].startswith("[workbench] release/1/verify failed")
    assert bodies[2].startswith("[workbench] release/2/canary failed") and "lb01 refused the reload" in bodies[2]
    assert all(h[SIGNATURE_HEADER] == sign(HOOK_SECRET, raw) for _, h, raw in got)


def test_the_release_server_sends_and_lists_them(tmp_path, hooks, server_factory):
    from server_fixtures import make_token
    from workbench.client import Client

    got, fail, base = hooks
    root = tmp_path / "ws"
    (root / "pipelines").mkdir(parents=True)
    (root / "pipelines" / "p.gocd.yaml").write_text(f"""
notifications:
  backoff: 600
  channels: {{chat: {{type: slack, url: "{base}/slack"}}, hook: {{type: signed, url: "{base}/signed", secret: s3}}}}
  subscriptions: [{{to: dave, channel: chat, events: [fails]}}, {{to: dave, channel: hook, events: [fails]}}]
pipelines:
  p: {{materials: {{}}, stages: [{{build: {{jobs: {{j: {{tasks: [{{exec: {{command: "false"}}}}]}}}}}}}}]}}
""")
    assert _cli(root, "run", "p", "-q").returncode == 1
    fail["left"] = 1  # the signed receiver refuses once; with a 600 s backoff only a retry sends it again
    server = server_factory(root)
    token = make_token(root, "alice")
    with Client(server.url, token) as client:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and {r["state"] for r in client.notifications()} != {"sent", "failed"}:
            time.sleep(0.3)
        rows = {r["channel"]: r for r in client.notifications()}
        assert rows["chat"]["state"] == "sent" and rows["hook"]["state"] == "failed"
        assert "HTTP 503" in rows["hook"]["last_error"]
        assert client.notifications(state="failed")[0]["id"] == rows["hook"]["id"]
        assert client.retry_notifications((rows["hook"]["id"],)) == {"retried": 1}
        while time.monotonic() < deadline and client.notifications(state="sent").__len__() < 2:
            time.sleep(0.3)
        assert {r["state"] for r in client.notifications()} == {"sent"}
        audit = client.audit()
        assert audit[0]["action"] == "notification" and audit[0]["user"] == "alice"
    assert sorted(p for p, _, _ in got) == ["/signed", "/slack"]
    assert server.stop() == 0


def test_overlapping_senders_and_ticks_mail_each_once(tmp_path, smtp):
    root, flag = _shop(tmp_path, smtp.port, smtp.cert)
    _fail_then_fix(root, flag)
    procs = [_popen(root, "notifications", "send") for _ in range(3)] + [_popen(root, "tick")]
    try:
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            _kill_group(p)
    assert codes == [0, 0, 0, 0]
    got = sorted((m["Subject"], tuple(rcpt)) for rcpt, m in smtp.inbox.messages)
    assert len(got) == 4 and len(set(got)) == 4, got  # four messages, none twice
    assert [r["state"] for r in _rows(root)] == ["sent"] * 4


@pytest.mark.usefixtures("workspace_store")
def test_the_feed_reads_runs_and_pauses_on_both_stores(tmp_path):
    from workbench.notifications.feed import feed
    from workbench.pauses import pause

    root, flag = tmp_path / "ws", tmp_path / "flag"
    (root / "pipelines").mkdir(parents=True)
    (root / "pipelines" / "p.gocd.yaml").write_text(f"""
roles: {{qa: [carol]}}
notifications:
  channels: {{chat: {{type: slack, url: "http://127.0.0.1:9/unused"}}}}
  subscriptions: [{{to: "role:qa", channel: chat, events: [all]}}]
pipelines:
  p:
    materials: {{}}
    stages:
      - build: {{jobs: {{j: {{tasks: [{{exec: {{command: test, arguments: ["-f", "{flag}"]}}}}]}}}}}}
      - deploy: {{approval: {{type: manual, roles: [qa]}}, jobs: {{j: {{tasks: [{{exec: {{command: "true"}}}}]}}}}}}
""")
    ws = Workspace.open(root)
    try:
        ws.run("p")
        flag.write_text("x")
        ws.run("p")
        pause(ws.store, "p", by="bob", reason="freeze")
        conf = ws.config.extensions["notifications"]
        assert feed(ws, conf) == 5
        assert feed(ws, conf) == 0  # read again: nothing new
        with ws.store.read() as conn:
            got = [tuple(r) for r in conn.execute(sa.select(O.outbox.c.event, O.outbox.c.pipeline, O.outbox.c.counter,
                                                            O.outbox.c.stage).order_by(O.outbox.c.id))]
        assert got == [("fails", "p", 1, "build"), ("fixed", "p", 2, "build"), ("passes", "p", 2, "build"),
                       ("waiting_for_you", "p", 2, "deploy"), ("paused", "p", None, None)]
    finally:
        ws.close()
