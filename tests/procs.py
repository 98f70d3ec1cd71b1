"""Child processes of the tests: independent of the signal state the suite inherited, and never leaked.

A suite started as a shell's background job (``nohup make test &``) inherits
SIGINT and SIGQUIT ignored, and an ignored disposition survives ``exec``: a
Python child then never gets its KeyboardInterrupt handler, so a test that
stops ``workbench serve`` with SIGINT waited forever and left it running
(issue 16 defect 13). Every child a test signals is started through
:func:`popen`: its own process group, the default disposition of every
terminating signal and an empty signal mask, whatever the parent had; and
:func:`stopped` kills the whole group when the test ends, passed or failed.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Any, Iterator

RESET = (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE, signal.SIGUSR1,
         signal.SIGUSR2, signal.SIGALRM)


def reset_signals() -> None:
    """In the child, before exec: default dispositions and nothing blocked (``preexec_fn``)."""
    for sig in RESET:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def popen(argv: list[str], **kwargs: Any) -> subprocess.Popen:
    """``subprocess.Popen`` in a new session (its own process group) with the signals reset."""
    kwargs.setdefault("start_new_session", True)
    kwargs.setdefault("preexec_fn", reset_signals)
    return subprocess.Popen(argv, **kwargs)


def kill_group(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGKILL to the child's whole process group (its own children too) unless all of it is gone already."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)
    for stream in (proc.stdout, proc.stderr, proc.stdin):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


@contextlib.contextmanager
def stopped(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """``with stopped(popen(...)) as p:`` — the group is killed on the way out, whatever happened."""
    try:
        yield proc
    finally:
        kill_group(proc)
