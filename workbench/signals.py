"""SIGINT, SIGTERM and SIGHUP for the commands that drive runs: one behaviour for all of them.

``timeout``, systemd, cron supervisors and container runtimes stop a process
with SIGTERM; a closed terminal or ssh session sends SIGHUP; a person presses
Ctrl-C. Each task runs in its own session (so that a job's process group can be
killed whole), which also means a job does *not* die with the workbench
process: a signal the workbench does not handle leaves the jobs running and
the run recorded as running. So every command that drives a run stops the
same way, whichever of the three signals arrives:

* the first signal is a graceful stop: the jobs' process groups get SIGTERM
  (SIGKILL after their grace period), on_cancel tasks run, and the run is
  recorded ``cancelled`` with the reason ("workbench run stopped by SIGTERM");
* a second signal while that happens (another signal, or the same one more
  than a second later: ``timeout`` delivers its one SIGTERM twice) is an immediate stop: every job process
  group of this process gets SIGKILL, on_cancel tasks are skipped, and the
  outcome is still recorded (the run is cancelled, the reason says so);
* the command exits ``128 + N`` for signal N (130 SIGINT, 143 SIGTERM,
  129 SIGHUP), what a shell reports for a process that signal stopped, so a
  supervisor tells "stopped" from "failed" (README, "Exit statuses").

The handlers are installed explicitly for all three signals: a command
started under ``nohup``, or in the background of a non-interactive shell
(SIGINT ignored), inherits ignored dispositions that would otherwise make it
deaf to the signals that are meant to stop it, or kill it without cleaning up.
"""
from __future__ import annotations

import signal
import socket
import sys
import threading
import time
from types import FrameType
from typing import Any, Callable

# A repeat of the first signal within this many seconds is the same request, not an escalation:
# coreutils `timeout` sends its signal to the command and then to its whole process group, so a
# `timeout 60 workbench run P` receives SIGTERM twice at once and must still stop gracefully.
REPEAT_IS_SAME = 1.0

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

__all__ = ["STOP_SIGNALS", "Stop", "Stopped", "exit_status"]


def exit_status(signum: int) -> int:
    """The exit status of a command stopped by ``signum``: 128 + N, as a shell reports it."""
    return 128 + int(signum)


class Stopped(KeyboardInterrupt):
    """A stop signal arrived before there was anything to stop (start-up): leave with 128 + N.

    A KeyboardInterrupt so that code which already unwinds on Ctrl-C (closing
    the store, the kernel pool) unwinds the same way for SIGTERM and SIGHUP.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


class Stop:
    """The stop-signal handlers of one command: ``with Stop("workbench run") as stop: stop.attach(engine)``.

    ``attach`` takes anything with ``cancel(reason)`` (graceful) and
    ``kill_now(why)`` (immediate): an :class:`~workbench.engine.Engine` or a
    :class:`~workbench.triggering.Scheduler`. Before anything is attached a
    signal raises :class:`Stopped` in the main thread (nothing runs yet, so
    there is nothing to record).

    Why a thread of its own reads the signals from a wakeup socket
    (``signal.set_wakeup_fd``) instead of acting in the Python handler:

    * the kernel may deliver a signal sent to the process to any of its
      threads, and CPython runs the Python-level handler only when the *main*
      thread next executes bytecode: a ``workbench run`` whose main thread
      waits for its jobs (``as_completed`` with no timeout) would never run it
      while the jobs run on (seen: about one stop in a hundred hung). The C
      handler writes the signal's number to the wakeup socket at once,
      whichever thread it interrupted, and the thread here wakes on it;
    * a handler that runs between two bytecodes of the main thread may find it
      holding the engine's lock or writing to stderr: cancelling or printing
      from there could deadlock;
    * the time read here is when the signal came, not when the main thread got
      round to it, so two deliveries of one request (``timeout``) are told
      from a second request reliably.
    """

    def __init__(self, command: str, *, say: Callable[[str], Any] | None = None) -> None:
        self.command = command
        self.received: int | None = None  # the first stop signal, once one arrived
        self.escalated = False
        self._first_at = 0.0
        self._targets: list[Any] = []
        self._lock = threading.Lock()  # never taken by the Python-level handler
        self._previous: dict[int, Any] = {}
        self._previous_fd: int | None = None
        self._socks: tuple[socket.socket, socket.socket] | None = None
        self._worker: threading.Thread | None = None
        self._say = say or (lambda line: print(line, file=sys.stderr, flush=True))

    # -- installation ------------------------------------------------------------
    def __enter__(self) -> "Stop":
        if threading.current_thread() is not threading.main_thread():  # signals belong to the main thread
            return self
        self._socks = socket.socketpair()
        for sock in self._socks:
            sock.setblocking(False)
        self._worker = threading.Thread(target=self._work, args=(self._socks[0],), name="wb-stop", daemon=True)
        self._worker.start()
        self._previous_fd = signal.set_wakeup_fd(self._socks[1].fileno(), warn_on_full_buffer=False)
        for sig in STOP_SIGNALS:  # explicitly, whatever was inherited (nohup, `&`: ignored)
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()
        if self._socks is not None:
            signal.set_wakeup_fd(self._previous_fd if self._previous_fd is not None else -1)
            self._socks[1].close()  # the worker reads end-of-file and returns
            if self._worker is not None:
                self._worker.join()
            self._socks[0].close()
            self._socks = self._worker = None

    def attach(self, target: Any) -> Any:
        """Stop ``target`` on the next signal (and at once if one already came); returns it."""
        with self._lock:
            self._targets.append(target)
            received, escalated = self.received, self.escalated
        if received is not None:  # cancel and kill_now are idempotent: a race with the worker is harmless
            target.cancel(self.reason)
            if escalated:
                target.kill_now(self._again())
        return target

    def deliver(self, signum: int) -> None:
        """Act as if ``signum`` had arrived (uvicorn's ``handle_exit`` hook calls this)."""
        self._arrived(int(signum))

    # -- state ---------------------------------------------------------------------
    @property
    def name(self) -> str | None:
        return None if self.received is None else signal.Signals(self.received).name

    @property
    def reason(self) -> str:
        """What the cancelled runs are recorded with."""
        return f"{self.command} stopped by {self.name}"

    @property
    def exit_code(self) -> int | None:
        """128 + N once signal N arrived, else None (the command's own status stands)."""
        return None if self.received is None else exit_status(self.received)

    def _again(self) -> str:
        return "a second signal killed the jobs at once (SIGKILL; on_cancel tasks cut short)"

    # -- the Python-level handler (main thread, whenever it gets there: no locks, no I/O) ----
    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self._targets:  # start-up: nothing to cancel yet, unwind like Ctrl-C
            if self.received is None:
                self.received, self._first_at = int(signum), time.monotonic()
            raise Stopped(self.received)
        # otherwise the worker has acted (or is about to) on the byte the C handler wrote

    # -- the worker ---------------------------------------------------------------------
    def _work(self, sock: socket.socket) -> None:
        import select

        while True:
            select.select([sock], [], [])
            try:
                data = sock.recv(64)
            except BlockingIOError:
                continue
            except OSError:
                return
            if not data:  # __exit__ closed the other end
                return
            for signum in data:
                if signum in STOP_SIGNALS:
                    self._arrived(signum)

    def _arrived(self, signum: int) -> None:
        now = time.monotonic()
        with self._lock:
            targets = list(self._targets)
            if self.received is None:
                self.received, self._first_at = signum, now
                action = "cancel"
            elif self.escalated or (signum == self.received and now - self._first_at < REPEAT_IS_SAME):
                return  # the same request delivered twice (coreutils `timeout` signals the child, then its group)
            else:
                self.escalated = True
                action = "kill"
        if not targets:
            return  # start-up: the main thread's handler raises Stopped
        name = signal.Signals(signum).name
        if action == "cancel":
            self._say(f"{self.command}: {name} received: stopping the jobs "
                      "(on_cancel tasks run; a second signal kills them at once)")
        else:
            self._say(f"{self.command}: {name} received again: killing the jobs' process groups now")
        for t in targets:
            try:
                if action == "cancel":
                    t.cancel(self.reason)
                else:
                    t.kill_now(self._again())
            except Exception as exc:  # one target that cannot be stopped must not keep the others running
                self._say(f"{self.command}: could not stop {t!r}: {exc}")
