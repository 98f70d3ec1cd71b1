"""Run one child process in its own process group, streamed to the job log.

Waiting uses a pidfd where the kernel has one, so a finished child is noticed
at once (no polling delay on the hot path), while cancel and timeout are still
checked a few times a second. Timeout and cancel kill the whole group: a
shell's grandchildren die with it.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import IO, Callable, Mapping, Sequence

_HAS_PIDFD = hasattr(os, "pidfd_open")

# Every task process group this process has started and not yet reaped, so an
# immediate stop (a second SIGTERM/SIGINT/SIGHUP while jobs are being stopped
# gracefully) can SIGKILL all of them at once, on_cancel tasks included.
_live: dict[int, "subprocess.Popen[bytes]"] = {}
_live_lock = threading.Lock()
_immediate = threading.Event()  # set by kill_all_now(): no grace period, no new processes


def kill_all_now() -> list[int]:
    """SIGKILL every task process group this process started that is still running; returns their ids.

    Why a process-wide registry rather than the engine's job rows: the rows
    know a group only a quarter second after it starts, and not at all for
    on_cancel tasks, while an immediate stop must leave nothing running. From
    now on this process starts no task process and waits no grace period
    (``immediate_stop``), so the jobs that are stopping record their outcome
    at once. There is no way back: only a command that is about to exit calls
    it. Jobs on Dask agents are not in this registry: they get the graceful
    cancel on their agent (groups stopped after the grace period, on_cancel run there).
    """
    _immediate.set()
    with _live_lock:
        groups = list(_live)
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return groups


def immediate_stop() -> bool:
    """True once :func:`kill_all_now` was called: on_cancel tasks are skipped, nothing new starts."""
    return _immediate.is_set()


@dataclass(frozen=True)
class ProcessResult:
    exit_code: int | None
    timed_out: bool = False
    cancelled: bool = False
    error: str | None = None  # could not start at all


def _kill_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    if _immediate.is_set():
        grace = 0
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group, even if the leader exited
    except ProcessLookupError:
        pass
    proc.wait()


def _wait(proc: subprocess.Popen[bytes], seconds: float) -> bool:
    """Wait up to ``seconds`` for the child; True when it exited."""
    if _HAS_PIDFD:
        try:
            fd = os.pidfd_open(proc.pid)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                ready, _, _ = select.select([fd], [], [], max(seconds, 0))
            finally:
                os.close(fd)
            if not ready:
                return False
    try:
        proc.wait(timeout=max(seconds, 0) if not _HAS_PIDFD else 1.0)
        return True
    except subprocess.TimeoutExpired:
        return False


def run_process(
    argv: Sequence[str],
    *,
    cwd: str,
    env: Mapping[str, str],
    log: IO[bytes],
    deadline: float | None,
    cancel: threading.Event,
    grace: float = 3.0,
    output_filter: "OutputPump | None" = None,
    on_start: Callable[[int], None] | None = None,
) -> ProcessResult:
    """Run ``argv`` in a new session; ``on_start(pid)`` learns its process group id (= pid).

    ``on_start`` is called once the child has outlived its first wait step
    (a quarter of a second), not at once: recording a group costs a store
    write (1-2 ms per task measured with bench_engine.py), which the many
    short tasks of a pipeline should not pay. The price: an engine killed in
    that first quarter second, or a task that exits sooner leaving background
    processes behind, leaves a group that recovery does not know about.
    """
    log.flush()
    if _immediate.is_set():  # an immediate stop: nothing of this job may start any more
        return ProcessResult(None, cancelled=True)
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if output_filter else log.fileno(),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except FileNotFoundError:
        return ProcessResult(None, error=f"command not found: {argv[0]}")
    except PermissionError:
        return ProcessResult(None, error=f"permission denied: {argv[0]}")
    except NotADirectoryError:
        return ProcessResult(None, error=f"working directory is not a folder: {cwd}")
    except OSError as exc:
        return ProcessResult(None, error=f"cannot start {argv[0]}: {exc.strerror or exc}")
    with _live_lock:
        _live[proc.pid] = proc
    if _immediate.is_set():  # the immediate stop came while it started: it was not in the registry yet
        _kill_group(proc, 0)
        with _live_lock:
            _live.pop(proc.pid, None)
        return ProcessResult(proc.returncode, cancelled=True)
    pump = output_filter.start(proc.stdout) if output_filter and proc.stdout else None
    try:
        announce = on_start  # called inside the try: if recording fails, the child does not outlive the error
        while True:
            step = 0.25
            if deadline is not None:
                step = min(step, deadline - time.monotonic())
            if step <= 0:
                _kill_group(proc, grace)
                return ProcessResult(proc.returncode, timed_out=True)
            if _wait(proc, step):
                if proc.returncode is not None and proc.returncode < 0 and (cancel.is_set() or _immediate.is_set()):
                    # killed by the stop (an immediate stop's SIGKILL can land before this loop sees the
                    # cancel): the job was cancelled, it did not fail
                    _kill_group(proc, 0)
                    return ProcessResult(proc.returncode, cancelled=True)
                return ProcessResult(proc.returncode)
            if announce is not None:
                announce(proc.pid)
                announce = None
            if cancel.is_set():
                _kill_group(proc, grace)
                return ProcessResult(proc.returncode, cancelled=True)
    except BaseException:
        _kill_group(proc, 0.5)
        raise
    finally:
        with _live_lock:
            _live.pop(proc.pid, None)
        if pump is not None:
            pump.join()


class OutputPump:
    """Copies a child's output to the log, masking secret values on the way."""

    def __init__(self, log: IO[bytes], secrets: Sequence[str]) -> None:
        self.log = log
        self.secrets = sorted({s.encode() for s in secrets if s}, key=len, reverse=True)

    def mask(self, data: bytes) -> bytes:
        for s in self.secrets:
            data = data.replace(s, b"********")
        return data

    def start(self, stream: IO[bytes]) -> threading.Thread:
        t = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        t.start()
        return t

    def _held(self, data: bytes) -> int:
        """How many trailing bytes of ``data`` could be the start of a secret that the next read completes."""
        hold = 0
        for s in self.secrets:
            for n in range(min(len(s) - 1, len(data)), hold, -1):
                if data.endswith(s[:n]):
                    hold = n
                    break
        return hold

    def _pump(self, stream: IO[bytes]) -> None:
        # Mask what has arrived, then keep back only a tail that may be the
        # beginning of a secret: a secret split across two reads (a line
        # longer than a read, or a secret with a newline in it) is masked
        # whole, and memory stays bounded by one read plus the longest secret.
        pending = b""
        for chunk in iter(lambda: stream.read1(65536), b""):  # type: ignore[attr-defined]
            pending = self.mask(pending + chunk)
            cut = len(pending) - self._held(pending)
            if cut:
                self.log.write(pending[:cut])
                self.log.flush()
                pending = pending[cut:]
        if pending:
            self.log.write(self.mask(pending))
            self.log.flush()
        stream.close()
