"""Notifications through a real JupyterHub: a role that lists ``group:qa`` reaches the people the hub
puts in group qa (carol, dave) and not others (alice), asked by the hub-managed ``workbench server``
itself with its service token, as docs/notifications.md says (tests/hub_fixtures.py starts the hub)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from tests.hub_fixtures import RealHub


def test_a_hub_group_role_is_told_through_its_members(tmp_path: Path) -> None:
    got: list[dict] = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    receiver = HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    root = tmp_path / "ws"
    (root / "pipelines").mkdir(parents=True)
    (root / "pipelines" / "p.gocd.yaml").write_text(f"""
roles: {{approvers: ["group:qa"]}}
notifications:
  channels: {{room: {{type: slack, url: "http://127.0.0.1:{receiver.server_address[1]}/hook"}}}}
  people: {{carol: {{chat: "@carol"}}, dave: {{chat: "@dave"}}, alice: {{chat: "@alice"}}}}
  subscriptions: [{{to: "role:approvers", channel: room, events: [waiting_for_you]}}]
pipelines:
  p:
    materials: {{}}
    stages:
      - build: {{jobs: {{j: {{tasks: [{{exec: {{command: "true"}}}}]}}}}}}
      - deploy: {{approval: {{type: manual, roles: [approvers]}}, jobs: {{j: {{tasks: [{{exec: {{command: "true"}}}}]}}}}}}
""")
    env = {**os.environ, "WORKBENCH_WORKSPACE": str(root)}
    env.pop("WORKBENCH_SERVER", None)
    r = subprocess.run([sys.executable, "-m", "workbench", "run", "p", "-q"], cwd=root, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "waiting" in r.stdout, r.stdout + r.stderr
    hub = RealHub.start(tmp_path / "hub", root)
    try:
        deadline = time.monotonic() + 120
        while not got and time.monotonic() < deadline:
            time.sleep(0.3)
    finally:
        hub.stop()
        receiver.shutdown()
        receiver.server_close()
    assert len(got) == 1, got
    text = got[0]["text"]
    assert "p/1/deploy is waiting for your approval" in text
    assert "@carol" in text and "@dave" in text and "@alice" not in text
