"""Notifications against real receivers on loopback: an aiosmtpd server with STARTTLS
and AUTH LOGIN, and an http.server for the webhooks. (Pipeline-run, config and
exactly-once-across-processes tests are still to come: see the outbox module.)"""
from __future__ import annotations

import datetime
import json
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

aiosmtpd = pytest.importorskip("aiosmtpd")
from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import AuthResult  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from workbench import Workspace  # noqa: E402
from workbench.notifications import outbox as O  # noqa: E402
from workbench.notifications.deliver import SIGNATURE_HEADER, EmailChannel, WebhookChannel, sign  # noqa: E402
from workbench.notifications.sender import send_due  # noqa: E402
import sqlalchemy as sa  # noqa: E402

PASSWORD = "s3cret-smtp-pw"
HOOK_SECRET = "hook-secret-xyz"


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
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.messages.append(envelope.content)
        return "250 OK"


def _auth(server, session, envelope, mechanism, auth_data):
    return AuthResult(success=auth_data.login == b"wb" and auth_data.password == PASSWORD.encode())


@pytest.fixture
def smtp(tmp_path):
    cert, key = _cert(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    inbox = _Inbox()
    with socket.socket() as probe:  # aiosmtpd's Controller needs a real port number up front
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ctl = Controller(inbox, hostname="127.0.0.1", port=port, server_hostname="localhost", tls_context=ctx, require_starttls=True,
                     authenticator=_auth, auth_require_tls=True)
    ctl.start()
    yield inbox, port, cert
    ctl.stop()


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


def test_email_and_webhooks_each_once_retried_and_secret_free(tmp_path, smtp, hooks):
    inbox, port, cert = smtp
    got, fail, base = hooks
    (tmp_path / "ws" / "pipelines").mkdir(parents=True)
    ws = Workspace.open(tmp_path / "ws")
    channels = {"email": EmailChannel("localhost", port, "wb@localhost", "wb", PASSWORD, cafile=str(cert)),
                "slack": WebhookChannel(base + "/slack"), "teams": WebhookChannel(base + "/teams", "teams"),
                "signed": WebhookChannel(base + "/signed", "signed", HOOK_SECRET)}
    for ch in channels:
        assert O.enqueue(ws.store, event="fails", stage_run_id=7, recipient="carol@localhost", channel=ch,
                         subject="shop/3/deploy fails", body="workbench approve shop/3/deploy")
        assert not O.enqueue(ws.store, event="fails", stage_run_id=7, recipient="carol@localhost", channel=ch,
                             subject="x", body="x")  # the same event twice: one row
    fail["left"] = 2
    secrets = [PASSWORD, HOOK_SECRET]
    for _ in range(3):
        send_due(ws.store, channels, secrets)
        with ws.store.write() as conn:  # skip the backoff wait: due now
            conn.execute(O.outbox.update().where(O.outbox.c.state == O.FAILED).values(next_attempt_at=0))
    send_due(ws.store, channels, secrets)
    assert len(inbox.messages) == 1 and b"workbench approve shop/3/deploy" in inbox.messages[0]
    assert sorted(p for p, _, _ in got) == ["/signed", "/slack", "/teams"]
    signed = next(x for x in got if x[0] == "/signed")
    assert signed[1][SIGNATURE_HEADER] == sign(HOOK_SECRET, signed[2])
    assert json.loads(next(x for x in got if x[0] == "/teams")[2])["@type"] == "MessageCard"
    with ws.store.read() as conn:
        rows = conn.execute(sa.select(O.outbox)).mappings().all()
    assert all(r["state"] == O.SENT for r in rows)
    assert max(r["attempts"] for r in rows) == 3  # two 503s, then accepted
    everything = b"".join(inbox.messages) + b"".join(raw for _, _, raw in got) + str(rows).encode()
    assert PASSWORD.encode() not in everything and HOOK_SECRET.encode() not in everything


def test_bad_notifications_config_is_located(tmp_path):
    from workbench.config import load_workspace_config
    from workbench.errors import WorkbenchError

    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "n.gocd.yaml").write_text(
        "format_version: 10\nnotifications:\n  channels:\n    mail: {type: email, host: localhost, from: a@b}\n"
        "    bad: {type: pager, url: x}\n  subscriptions:\n    - {to: carol, channel: mail, events: [breaks, bogus]}\n"
        "    - {to: dave, channel: nope}\npipelines: {}\n")
    with pytest.raises(WorkbenchError) as err:
        load_workspace_config(tmp_path)
    text = str(err.value) + "".join(str(p) for p in getattr(err.value, "problems", ()))
    assert "n.gocd.yaml:5:17" in text and "n.gocd.yaml:7:42" in text and "n.gocd.yaml:8:27" in text


def test_real_runs_queue_fails_then_fixed_once(tmp_path):
    (tmp_path / "pipelines").mkdir()
    flag = tmp_path / "flag"
    (tmp_path / "pipelines" / "p.gocd.yaml").write_text(f"""format_version: 10
notifications:
  channels: {{chat: {{type: slack, url: "http://127.0.0.1:9/none"}}}}
  people: {{carol: carol@localhost}}
  subscriptions:
    - {{to: carol, channel: chat, events: [breaks, fixed, fails]}}
pipelines:
  p:
    materials: {{}}
    stages:
      - build: {{jobs: {{j: {{tasks: [{{exec: {{command: test, arguments: ["-f", "{flag}"]}}}}]}}}}}}
""")
    ws = Workspace.open(tmp_path)
    ws.run("p")
    flag.write_text("x")
    ws.run("p")
    with ws.store.read() as conn:
        rows = conn.execute(sa.select(O.outbox.c.event, O.outbox.c.recipient).order_by(O.outbox.c.id)).all()
    assert [tuple(r) for r in rows] == [("fails", "carol@localhost"), ("fixed", "carol@localhost")]
