"""``workbench dashboard``: the release dashboard as a web page, served by Voila on loopback.

For release managers who do not use JupyterLab. The page's kernel acts as
the user who started the server (``$JUPYTERHUB_USER``, else the OS user), so
anyone who can open the page can approve as that user: the server therefore
listens on a loopback address only. To share a dashboard between people,
each opens ``notebooks/release_dashboard.ipynb`` in their own JupyterHub
session, where the hub says who they are.

What runs ahead (``--pool-size``, default 1): Voila's pre-heated kernels
(``VoilaConfiguration.preheat_kernel``). As soon as the server starts, a kernel
runs the whole notebook, so the board, its counts and the charts are built
before anyone opens the page; a visitor gets that kernel (its output is sent at
once), and ``fill_delay`` seconds later another kernel starts running the
notebook for the next visitor. A waiting kernel keeps its live refresh running
(``Store.change_marker``, every ``$WORKBENCH_DASHBOARD_INTERVAL`` s, 2 by
default): the widgets' state, which the page asks the kernel for when it
connects, is never older than one refresh (tests/e2e/test_dashboard_preheat.py).
Voila never culls a kernel still in the pool; once given to a visitor it is
culled like any other. ``--pool-size 0`` starts a kernel per visitor instead.
"""
from __future__ import annotations

import importlib.util
import ipaddress
import os
import signal
import subprocess
import sys

import click

from . import main, _ws


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@main.command()
@click.option("--port", type=click.IntRange(1, 65535), default=8866, show_default=True)
@click.option("--ip", default="127.0.0.1", show_default=True, help="A loopback address (see --help).")
@click.option("--notebook", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Another dashboard notebook (default: notebooks/release_dashboard.ipynb).")
@click.option("--pool-size", type=click.IntRange(0, 8), default=1, show_default=True,
              help="Kernels kept with the notebook already run, for the next visitors (0: a kernel per visit).")
@click.pass_context
def dashboard(ctx: click.Context, port: int, ip: str, notebook: str | None, pool_size: int) -> None:
    """Serve the release dashboard with Voila on http://127.0.0.1:PORT/ until Ctrl-C.

    The page acts as you (approvals, traffic, rollbacks), so it listens on
    loopback only; others open notebooks/release_dashboard.ipynb in their
    own JupyterLab.
    """
    from ..errors import UsageError
    from ..metrics.report import find_notebook

    if not _loopback(ip):
        raise UsageError(f"{ip} is not a loopback address: the dashboard acts as you, so it is served on "
                         "127.0.0.1 or ::1 only (others open notebooks/release_dashboard.ipynb in JupyterLab)")
    if importlib.util.find_spec("voila") is None:
        raise UsageError("`workbench dashboard` needs Voila: install the dashboard extra "
                         "(pip install 'release-workbench[dashboard]')")
    ws = _ws(ctx)
    _ = ws.config  # a broken config is reported here, not in the browser
    nb = notebook or str(find_notebook(ws.root, "release_dashboard.ipynb"))
    env = {**os.environ, "WORKBENCH_WORKSPACE": str(ws.root)}
    argv = [sys.executable, "-m", "voila", nb, f"--port={port}", f"--Voila.ip={ip}", "--no-browser",
            "--Voila.port_retries=0", "--show_tracebacks=False", "--theme=light",
            # a closed tab leaves its kernel (and its refresh thread) behind: cull it once it is quiet
            "--MappingKernelManager.cull_interval=60", "--MappingKernelManager.cull_idle_timeout=600",
            "--MappingKernelManager.cull_connected=False", *preheat_args(pool_size)]
    host = f"[{ip}]" if ":" in ip else ip
    click.echo(f"release dashboard of {ws.root} at http://{host}:{port}/ (Ctrl-C stops it)", err=True)
    code, stopped = _serve_until_signal(argv, env)
    if stopped:
        click.echo("dashboard stopped", err=True)
        return
    if code not in (0, -2, -15, 130):
        raise UsageError(f"Voila stopped with status {code}")


FILL_DELAY = 5.0  # seconds after a visitor took the pre-heated kernel before the next one starts


def preheat_args(pool_size: int) -> list[str]:
    """Voila's arguments for ``pool_size`` pre-heated kernels (none for 0: a kernel per visitor).

    The refill waits ``FILL_DELAY`` s: the next kernel's run of the notebook (seconds of imports and counting at
    10,000 pipelines) then does not compete for the CPU with the visitor's first clicks.
    """
    if pool_size <= 0:
        return ["--preheat_kernel=False"]
    return ["--preheat_kernel=True", f"--pool_size={pool_size}", f"--VoilaKernelManager.fill_delay={FILL_DELAY:g}"]


def _default_signals() -> None:  # in the child: whatever dispositions this process inherited (nohup, `&`)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def _serve_until_signal(argv: list[str], env: dict[str, str]) -> tuple[int, bool]:
    """Run Voila until it exits or this process gets SIGINT, SIGTERM or SIGHUP.

    Any of the three is passed to Voila as SIGTERM, on which it shuts its
    kernels down (they run in sessions of their own, so killing Voila's
    process group would leave them behind); if it has not exited 15 s later it
    is killed. Returns Voila's status and whether a signal stopped it.
    """
    proc = subprocess.Popen(argv, env=env, preexec_fn=_default_signals)
    got: list[int] = []

    def forward(sig: int, _frame: object) -> None:
        got.append(sig)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, forward) for sig in sigs}
    try:
        while True:
            try:
                code = proc.wait(timeout=15 if got else None)
                break
            except subprocess.TimeoutExpired:
                proc.kill()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, bool(got)
