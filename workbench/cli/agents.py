"""``workbench scheduler``, ``workbench agent``, ``workbench agents``: GoCD agents as Dask workers.

Thin layers over Dask's own commands, no protocol of ours: ``agent`` is
``dask worker`` with the agent's GoCD resources and environments turned into
worker resources (see :mod:`workbench.executors.dask_agent`); ``scheduler`` is
``dask scheduler`` told never to rerun a task whose worker died, so a lost
agent fails its job instead of running it twice. Anything after ``--`` goes to
the Dask command unchanged.
"""
from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path
from typing import Any

import click

from ..errors import UsageError
from . import main

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")  # GoCD's rule for resource and environment names


def _names(value: str, what: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    bad = [n for n in names if not _NAME.match(n)]
    if bad:
        raise UsageError(f"{what} may contain only letters, digits, '_', '-' and '.': {', '.join(bad)}")
    return names


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise UsageError(f"agents need Dask distributed ({exc}): pip install 'release-workbench[dask]'") from None
    return distributed


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--host", default="", help="Interface to listen on (default: all).")
@click.option("--port", default="8786", show_default=True, help="Port agents and engines connect to.")
@click.argument("dask_args", nargs=-1, type=click.UNPROCESSED)
def scheduler(host: str, port: str, dask_args: tuple[str, ...]) -> None:
    """Start the Dask scheduler agents and engines meet at (`dask scheduler`, no task retries)."""
    _distributed()
    import dask
    from distributed.cli import dask_scheduler

    dask.config.set({"distributed.scheduler.allowed-failures": 0})
    argv = ["--port", port, *(["--host", host] if host else []), *dask_args]
    dask_scheduler.main.main(args=argv, prog_name="workbench scheduler", standalone_mode=True)


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--scheduler", "-s", "address", required=True, envvar="WORKBENCH_SCHEDULER",
              help="The scheduler, tcp://HOST:PORT (default: $WORKBENCH_SCHEDULER).")
@click.option("--resources", "-r", default="", help="This agent's resources, comma-separated (rpm,docker).")
@click.option("--environment", "-e", "environments", default="",
              help="Environments it serves, comma-separated; without, it serves pipelines outside environments.")
@click.option("--name", "-n", default=None, help="Agent name, unique on the scheduler (default: the host name).")
@click.option("--nthreads", type=int, default=1, show_default=True, help="Jobs at once (a GoCD agent runs one).")
@click.option("--work-dir", type=click.Path(file_okay=False), default=None,
              help="Job folders under here (default: the engine's own paths, for a shared or the same machine).")
@click.option("--workspace-dir", type=click.Path(file_okay=False), default=None,
              help="This machine's copy of the workspace, for scripts and notebooks (default: the engine's path).")
@click.argument("dask_args", nargs=-1, type=click.UNPROCESSED)
def agent(address: str, resources: str, environments: str, name: str | None, nthreads: int, work_dir: str | None,
          workspace_dir: str | None, dask_args: tuple[str, ...]) -> None:
    """Run an agent: a Dask worker with these resources and environments, until Ctrl-C.

    Anything after -- goes to `dask worker` (e.g. -- --memory-limit 4GiB).
    """
    _distributed()
    from distributed.cli import dask_worker

    from ..executors.dask import normalize_address
    from ..executors.dask_agent import WORK_DIR_VAR, WORKSPACE_VAR, agent_resources

    if nthreads < 1:
        raise UsageError("--nthreads must be at least 1")
    res = _names(resources, "resource names")
    envs = _names(environments, "environment names")
    tags = agent_resources(res, envs, units=nthreads)
    for var, value in ((WORK_DIR_VAR, work_dir), (WORKSPACE_VAR, workspace_dir)):
        if value:  # the worker process inherits them (see dask_agent._localize)
            os.environ[var] = str(Path(value).expanduser().resolve())
    name = name or socket.gethostname()
    click.echo(f"agent {name}: resources {', '.join(res) or '-'}; environments {', '.join(envs) or '(none)'}; "
               f"scheduler {normalize_address(address)}", err=True)
    argv = [normalize_address(address), "--name", name, "--nthreads", str(nthreads), "--nworkers", "1",
            "--resources", " ".join(f"{k}={v:g}" for k, v in tags.items()),
            "--preload", "workbench.executors.dask_agent", *dask_args]
    dask_worker.main.main(args=argv, prog_name="workbench agent", standalone_mode=True)


@main.command()
@click.option("--scheduler", "-s", "address", required=True, envvar="WORKBENCH_SCHEDULER",
              help="The scheduler, tcp://HOST:PORT (default: $WORKBENCH_SCHEDULER).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def agents(address: str, fmt: str) -> None:
    """List the agents of a scheduler: resources, environments, the jobs they are running."""
    _distributed()
    from ..executors.dask import list_agents

    rows = list_agents(address)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_edge=False, header_style="bold")
    for c in ("agent", "address", "threads", "resources", "environments", "running"):
        table.add_column(c)
    for r in rows:
        table.add_row(r["name"], r["address"], str(r["threads"]), ", ".join(r["resources"]) or "-",
                      ", ".join(r["environments"]) or "(none)", ", ".join(r["running"]) or "idle")
    Console(width=200).print(table)
    click.echo(f"{len(rows)} agent{'s' if len(rows) != 1 else ''}")
