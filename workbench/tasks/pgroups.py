"""Process groups of jobs, as crash recovery sees them (Linux ``/proc``).

Every task process starts in its own session, so its process group id is its
pid and a shell's children belong to it. The engine records the group of the
task a job is running (``job_runs.pgid``) with an *identity* of its leader:
the host, the kernel's boot id and the leader's start time in clock ticks
since boot. When the engine dies (``kill -9``), recovery uses them to stop the
group it left behind, and only that group:

* a leader alive with the recorded start time is the job's own process;
* a leader alive with another start time means the pid was reused by an
  unrelated process: nothing is killed;
* a dead leader with members left is still the job's group, because Linux
  does not hand out a pid while a process group of that id exists;
* another host or another boot: nothing is killed (only this machine's
  processes can be checked).
"""
from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

__all__ = ["identity", "members", "stop_group"]


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "?"


def _stat(pid: int) -> tuple[int, int] | None:
    """(process group id, start time in ticks) of a live, non-zombie process; None otherwise."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the name in parentheses may contain spaces
    if fields[0] in ("Z", "X"):  # dead, waiting for its parent to reap it
        return None
    return int(fields[2]), int(fields[19])


def identity(pid: int) -> str | None:
    """``HOST BOOT_ID START_TICKS`` of a running process (None when it has already gone)."""
    st = _stat(pid)
    return None if st is None else f"{socket.gethostname()} {_boot_id()} {st[1]}"


def members(pgid: int) -> list[int]:
    """Live processes of group ``pgid`` on this machine."""
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None and st[0] == pgid:
                out.append(int(entry.name))
    return out


def stop_group(pgid: int, recorded: str | None, grace: float = 3.0) -> str | None:
    """Stop a job's group if it is still that job's: SIGTERM, then SIGKILL after ``grace`` seconds.

    Returns what was done, for the job's reason (None: nothing of the job was
    left running here, or the group cannot be shown to be the job's).
    """
    if not recorded or pgid <= 1 or not Path("/proc").is_dir():
        return None
    host, _, rest = recorded.partition(" ")
    boot, _, ticks = rest.partition(" ")
    if host != socket.gethostname() or boot != _boot_id():
        return None
    leader = _stat(pgid)
    if leader is not None and (leader[0] != pgid or str(leader[1]) != ticks):
        return None  # the pid now belongs to an unrelated process
    if not members(pgid):
        return None
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return None
    except PermissionError:
        return f"its process group {pgid} could not be stopped (permission denied)"
    deadline = time.monotonic() + grace
    while members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not members(pgid):
        return f"its process group {pgid} was stopped (SIGTERM)"
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return f"its process group {pgid} was killed (SIGKILL after {grace:g}s)"
