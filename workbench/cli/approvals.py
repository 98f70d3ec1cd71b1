"""``approve``, ``reject``, ``approvals``, ``rollback``, ``traffic`` and ``audit``.

Each is a thin call into the application layer (``workbench.service``), so the
CLI, the HTTP API and the dashboards share one authorization path. Locally the
acting identity is asserted ($JUPYTERHUB_USER, else the OS user; never a
flag); with a release service configured the command goes through its API and
the identity is the one the service proves (docs/approvals.md).
"""
from __future__ import annotations

import json

import click

from ..signals import Stop
from . import _remote, _service, _ws, finish_run, main


@main.command()
@click.argument("locator")
@click.option("--comment", "-m", default=None, help="Why (kept in the audit).")
@click.option("--detach", is_flag=True, help="Only approve; leave the run to `workbench tick`/`serve`.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display while the run continues.")
@click.pass_context
def approve(ctx: click.Context, locator: str, comment: str | None, detach: bool, quiet: bool) -> None:
    """Approve the waiting stage PIPELINE/COUNTER/STAGE and continue the run here (or on the server)."""
    svc = _service(ctx)
    run = svc.approve(locator, comment)
    who = svc.whoami()["user"] if _remote(ctx) else svc.actor.user
    if _remote(ctx):
        click.echo(f"approved {locator} as {who}; the release service continues the run "
                   f"(`workbench status`, `workbench logs -f`)")
        return
    if detach:
        click.echo(f"approved {locator} as {who}; the run continues under `workbench tick` or `serve`")
        return
    click.echo(f"approved {locator} as {who}; continuing the run here")
    from ..progress import Progress

    ws = _ws(ctx)
    progress = Progress(quiet=quiet)
    with Stop("workbench approve") as stop:  # SIGINT, SIGTERM, SIGHUP cancel the jobs, as in `run`
        with ws.engine(listener=progress) as engine:
            stop.attach(engine)
            with progress:
                result = engine.drive(run["id"])
        finish_run(ws, result, stop=stop)


@main.command()
@click.argument("locator")
@click.option("--comment", "-m", required=True, help="Why the stage is rejected (required, kept in the audit).")
@click.pass_context
def reject(ctx: click.Context, locator: str, comment: str) -> None:
    """Reject the waiting stage PIPELINE/COUNTER/STAGE: it is marked rejected and the run ends."""
    svc = _service(ctx)
    run = svc.reject(locator, comment)
    who = svc.whoami()["user"] if _remote(ctx) else svc.actor.user
    click.echo(f"rejected {locator} as {who}: {comment}\n{run['locator']}: {run['status']}")


@main.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def approvals(ctx: click.Context, fmt: str) -> None:
    """Stages waiting for approval, and who may approve each."""
    from ..reporting import print_table

    rows = _service(ctx, reading=True).approvals()
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    elif not rows:
        click.echo("no stage is waiting for approval")
    else:
        print_table(rows, ["locator", "label", "approvers"])


@main.command()
@click.argument("locator")
@click.option("--reason", "-m", default=None, help="Why (kept with the rollback and in the audit).")
@click.pass_context
def rollback(ctx: click.Context, locator: str, reason: str | None) -> None:
    """Put 100% of the traffic back on the previous stack for the run PIPELINE/COUNTER."""
    done = _service(ctx).rollback(locator, reason)
    for d in done["routes"]:
        click.echo(f"route {d['route']}: {_weights(d['from'])} -> {_weights(d['to'])}")
    click.echo(f"{locator} rolled back by {done['by']}" + (f": {reason}" if reason else ""))


def _weights(w: dict[str, int] | None) -> str:
    return " ".join(f"{k}={v}%" for k, v in (w or {}).items())


@main.command()
@click.argument("route", required=False)
@click.option("--set", "weight", type=click.IntRange(0, 100), default=None,
              help="Move N% of ROUTE to the new (candidate) stack, the rest to the live one.")
@click.option("--reason", "-m", default=None, help="Why (kept with the change).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def traffic(ctx: click.Context, route: str | None, weight: int | None, reason: str | None, fmt: str) -> None:
    """Show the routes' weights (re-applying recorded weights a provider lost), or move one with --set."""
    from ..reporting import print_table

    svc = _service(ctx)
    if weight is not None:
        if route is None:
            raise click.UsageError("--set needs a ROUTE")
        moved = svc.set_traffic(route, weight, reason)
        click.echo(f"route {route}: {_weights(moved['weights'])} (by {moved['by']})")
        return
    shown = svc.traffic(route)
    rows = shown["routes"]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    else:
        table = [{**r, "weights": _weights(r["weights"]), "run": r["run"] or ""} for r in rows]
        print_table(table, ["route", "provider", "weights", "live", "candidate", "run"])
    for n in shown["notes"]:
        click.echo(n, err=True)


@main.command()
@click.option("--limit", "-n", type=int, default=50, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def audit(ctx: click.Context, limit: int, fmt: str) -> None:
    """Every decision and refused attempt, newest first: who, when, what, comment, outcome."""
    from ..reporting import print_table

    rows = _service(ctx, reading=True).audit(limit)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=str))
    else:
        print_table(rows, ["at", "user", "action", "target", "outcome", "comment", "detail"])
