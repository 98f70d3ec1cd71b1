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
import signal
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


def run_server(ws: Any, bind: str = DEFAULT_BIND, *, interval: float = 10.0,
               say: Callable[[str], Any] = print, log_level: str = "warning") -> None:
    """Serve until SIGTERM or Ctrl-C; prints ``serving http://HOST:PORT`` once requests are accepted."""
    import uvicorn

    from ..triggering import Scheduler, serving

    host, port = parse_bind(bind)
    _ = ws.config  # config errors before anything listens
    with serving(ws, "workbench server"):
        with Scheduler(ws) as scheduler:
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
                    """SIGINT, SIGTERM and SIGHUP stop the server gracefully (a second one at once); unlike
                    uvicorn's own, the signal is not raised again afterwards, so the scheduler is stopped
                    (jobs cancelled) and the process exits 0 whatever dispositions it inherited."""
                    if threading.current_thread() is not threading.main_thread():
                        yield
                        return
                    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
                    previous = {sig: signal.signal(sig, self.handle_exit) for sig in sigs}
                    try:
                        yield
                    finally:
                        for sig, handler in previous.items():
                            signal.signal(sig, handler)

                def handle_exit(self, sig: int, frame: Any) -> None:
                    if self.should_exit:
                        self.force_exit = True
                    self.should_exit = True

                async def startup(self, sockets: Any = None) -> None:
                    await super().startup(sockets=sockets)
                    if self.started:
                        bound = self.servers[0].sockets[0].getsockname()
                        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
                        say(f"serving http://{shown}:{bound[1]}")

            config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
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
            if not server.started:
                raise UsageError(f"cannot listen on {host}:{port} (in use, or not an address of this machine)")
    logging.getLogger("workbench.server").info("stopped (pid %s)", os.getpid())
