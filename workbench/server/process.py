"""``workbench server``: the long-lived process that owns a workspace and answers its HTTP API.

One per workspace (the serve lock that ``workbench serve`` takes), so the
scheduler here is the only one driving runs: an approval or a webhook reaches
it in-process and the next job starts in milliseconds. uvicorn runs the API
in the main thread and owns SIGINT/SIGTERM; when it returns, the scheduler is
stopped the way ``serve`` stops (jobs cancelled, on_cancel tasks run).
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Any, Callable, Iterator

from ..errors import UsageError

DEFAULT_BIND = "127.0.0.1:8765"


def parse_bind(bind: str) -> tuple[str, int]:
    host, sep, port = bind.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--bind {bind!r}: expected HOST:PORT, e.g. 127.0.0.1:8765")
    return host, int(port)


def build_app(ws: Any, scheduler: Any) -> Any:
    """The FastAPI app with every part the installed extras allow (hub sign-in, webhooks, dashboard)."""
    import importlib
    import importlib.util

    from .app import create_app
    from .auth import Authenticator

    settings = ws.settings.server
    hub = None
    prefix = ""
    if importlib.util.find_spec(f"{__package__}.hub") is not None:
        from . import hub as hubmod

        hub = hubmod.from_settings(settings.hub)
        if hub is not None:
            prefix = hub.prefix
    auth = Authenticator(ws.store, hub=hub, trusted_proxies=settings.trusted_proxies,
                         anonymous_read=settings.anonymous_read)
    routers = []
    for name in ("webhooks", "hub", "page"):  # each part adds its routes when present
        mod = f"{__package__}.{name}"
        if importlib.util.find_spec(mod) is not None:
            add = getattr(importlib.import_module(mod), "add_routes", None)
            if add is not None:
                routers.append(add)
    return create_app(ws, auth=auth, scheduler=scheduler, prefix=prefix, extra_routers=tuple(routers))


class _StopBoth:
    """What a stop signal does to the server: the scheduler cancels its runs and the HTTP side winds
    down, both at once (the jobs are not kept running while the HTTP connections drain).

    Attached as soon as the scheduler exists; the uvicorn server joins it once
    it runs (``server``), and learns then of a signal that came before.
    """

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.server: Any = None
        self.stopping = self.now = False

    def serving(self, server: Any) -> None:
        self.server = server
        self._tell()

    def _tell(self) -> None:
        if self.server is not None:
            self.server.should_exit = self.server.should_exit or self.stopping
            self.server.force_exit = self.server.force_exit or self.now

    def cancel(self, reason: str | None = None) -> None:
        self.stopping = True
        self.scheduler.cancel(reason)
        self._tell()

    def kill_now(self, why: str | None = None) -> list[int]:
        self.stopping = self.now = True
        self._tell()
        return self.scheduler.kill_now(why)


def run_server(ws: Any, bind: str = DEFAULT_BIND, *, interval: float = 10.0,
               say: Callable[[str], Any] = print, log_level: str = "warning") -> str | None:
    """Serve until SIGTERM, SIGHUP or Ctrl-C; prints ``serving http://HOST:PORT`` once requests are accepted.

    Returns the name of the signal that stopped it (None: it stopped otherwise).
    The runs it drove are cancelled with that signal in their reason
    (``workbench.signals``); the process itself exits 0, as a service stopped
    the usual way.
    """
    import uvicorn

    from ..signals import Stop
    from ..triggering import Scheduler, serving

    host, port = parse_bind(bind)
    _ = ws.config  # config errors before anything listens
    stopper = Stop("workbench server")  # installed before anything runs: no window with inherited dispositions
    with stopper, serving(ws, "workbench server"):
        with Scheduler(ws) as scheduler:
            target = stopper.attach(_StopBoth(scheduler))
            app = build_app(ws, scheduler)
            hooks = app.state.wb.hooks  # the webhook receiver, when that part is present
            stop = threading.Event()
            loop = threading.Thread(target=scheduler.serve_forever, args=(interval,),
                                    kwargs={"stop": stop, "on_pass": hooks.on_pass if hooks else None},
                                    name="wb-scheduler", daemon=True)
            if hooks is not None:
                hooks.replay_pending()  # deliveries answered 2xx by a server that died before polling them

            class Server(uvicorn.Server):
                @contextlib.contextmanager
                def capture_signals(self) -> Iterator[None]:
                    """Not uvicorn's handlers: SIGINT, SIGTERM and SIGHUP are the ``Stop``'s (installed
                    before the scheduler started), which cancel the runs the server drives and stop the
                    HTTP side (a second signal kills their jobs at once), as for every command that
                    drives runs (``workbench.signals``); unlike uvicorn's, the signal is not raised again
                    afterwards, so the outcome is recorded whatever dispositions the process inherited."""
                    target.serving(self)
                    yield

                def handle_exit(self, sig: int, frame: Any) -> None:  # uvicorn's entry point, same behaviour
                    stopper.deliver(sig)

                async def startup(self, sockets: Any = None) -> None:
                    await super().startup(sockets=sockets)
                    if self.started:
                        bound = self.servers[0].sockets[0].getsockname()
                        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
                        say(f"serving http://{shown}:{bound[1]}")

            # loop="asyncio": uvloop, when installed, takes the signal wakeup fd that Stop reads.
            # http="auto": httptools (in the server extra, beside uvicorn) parses HTTP in C; h11, pure Python, was a quarter of the
            # event loop's time under 50 polling clients (benchmarks/README.md, issue 14); auto falls back to it
            config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, loop="asyncio",
                                    http="auto",
                                    lifespan="off", timeout_graceful_shutdown=5,
                                    proxy_headers=False, server_header=False)
            server = Server(config)
            loop.start()
            try:
                server.run()
            finally:
                stop.set()
                scheduler._wake.set()
                loop.join()
            if not server.started and stopper.received is None:
                raise UsageError(f"cannot listen on {host}:{port} (in use, or not an address of this machine)")
    logging.getLogger("workbench.server").info("stopped (pid %s)", os.getpid())
    return stopper.name
