"""A real ``workbench server`` process on a loopback port, for end-to-end tests of the release service.

``ServerProcess.start(root)`` runs ``python -m workbench server --bind 127.0.0.1:0``
in its own process group, waits for ``serving http://…``, and ``stop()`` sends
SIGTERM (then SIGKILL to the whole group), so a failing test never leaves a
server or its jobs running. Signal dispositions are reset in the child, so a
suite started under ``nohup`` behaves the same.
"""
from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

SERVING = re.compile(r"serving (http://\S+)")


def _reset_signals() -> None:
    from procs import reset_signals  # SIGINT, SIGQUIT, SIGTERM, ... to their defaults, nothing blocked

    reset_signals()


class ServerProcess:
    def __init__(self, proc: subprocess.Popen[str], url: str, root: Path, log: Path) -> None:
        self.proc, self.url, self.root, self.log = proc, url, root, log

    @classmethod
    def start(cls, root: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> "ServerProcess":
        log = root.parent / f"server-{os.getpid()}-{time.monotonic_ns()}.log"
        full_env = {**os.environ, "WORKBENCH_WORKSPACE": str(root), **(env or {})}
        full_env.pop("WORKBENCH_SERVER", None)
        errf = open(log, "w")
        proc = subprocess.Popen([sys.executable, "-m", "workbench", "server", "--bind", "127.0.0.1:0", *args],
                                cwd=root, env=full_env, stdout=subprocess.PIPE, stderr=errf, text=True,
                                start_new_session=True, preexec_fn=_reset_signals)
        errf.close()
        sel = selectors.DefaultSelector()
        assert proc.stdout is not None
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        seen = ""
        while time.monotonic() < deadline:
            if not sel.select(timeout=0.2):
                if proc.poll() is not None:
                    break
                continue
            line = proc.stdout.readline()
            if not line:
                break
            seen += line
            m = SERVING.search(line)
            if m:
                return cls(proc, m.group(1), root, log)
        cls._kill(proc)
        pytest.fail(f"workbench server did not start: {seen}\n{log.read_text()[-3000:]}")

    @staticmethod
    def _kill(proc: subprocess.Popen[str]) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)
        if proc.stdout is not None and not proc.stdout.closed:
            proc.stdout.close()

    def kill(self) -> None:
        """SIGKILL the server and everything it started (a crash)."""
        self._kill(self.proc)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, wait; whatever is left of the group is killed. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        code = self.proc.poll()
        self._kill(self.proc)
        return code if code is not None else -9

    def stderr(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def make_token(root: Path, user: str, scope: str = "act", expires: str = "1d") -> str:
    """``workbench token create`` through the real CLI; the token is its last line."""
    p = subprocess.run([sys.executable, "-m", "workbench", "token", "create", "--user", user, "--scope", scope,
                        "--expires", expires], cwd=root, env={**os.environ, "WORKBENCH_WORKSPACE": str(root)},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip().splitlines()[-1]


@pytest.fixture
def server_factory() -> Any:
    """``start(root, *args, env=...)`` → a running ServerProcess; all are stopped at the end of the test."""
    started: list[ServerProcess] = []

    def start(root: Path, *args: str, env: dict[str, str] | None = None) -> ServerProcess:
        s = ServerProcess.start(root, *args, env=env)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()
