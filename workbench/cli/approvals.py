"""``approve``, ``reject``, ``approvals``, ``rollback``, ``traffic`` and ``audit``.

Each is a thin call into workbench.approvals / workbench.traffic, so the CLI,
dashboards and notebooks share one authorization path; the acting identity is
never a flag (it is $JUPYTERHUB_USER, else the OS user).
"""
from __future__ import annotations

import json
import signal

import click

from . import _ws, finish_run, main


@main.command()
@click.argument("locator")
@click.option("--comment", "-m", default=None, help="Why (kept in the audit).")
@click.option("--detach", is_flag=True, help="Only approve; leave the run to `workbench tick`/`serve`.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display while the run continues.")
@click.pass_context
def approve(ctx: click.Context, locator: str, comment: str | None, detach: bool, quiet: bool) -> None:
    """Approve the waiting stage PIPELINE/COUNTER/STAGE and continue the run here."""
    from ..approvals import approve as do_approve
    from ..identity import current_user
    from ..progress import Progress

    ws = _ws(ctx)
    user = current_user()
    if detach:
        run = do_approve(ws, locator, user=user, comment=comment, drive=False)
        click.echo(f"approved {locator} as {user}; the run continues under `workbench tick` or `serve`")
        return
    run = do_approve(ws, locator, user=user, comment=comment, drive=False)
    click.echo(f"approved {locator} as {user}; continuing the run here")
    progress = Progress(quiet=quiet)
    with ws.engine(listener=progress) as engine:
        previous = signal.signal(signal.SIGINT, lambda *_: engine.cancel())  # Ctrl-C cancels the jobs, as in `run`
        try:
            with progress:
                run = engine.drive(run.id)
        finally:
            signal.signal(signal.SIGINT, previous)
    finish_run(ws, run)


@main.command()
@click.argument("locator")
@click.option("--comment", "-m", required=True, help="Why the stage is rejected (required, kept in the audit).")
@click.pass_context
def reject(ctx: click.Context, locator: str, comment: str) -> None:
    """Reject the waiting stage PIPELINE/COUNTER/STAGE: it is marked rejected and the run ends."""
    from ..approvals import reject as do_reject
    from ..identity import current_user

    ws = _ws(ctx)
    user = current_user()
    run = do_reject(ws, locator, user=user, comment=comment)
    click.echo(f"rejected {locator} as {user}: {comment}\n{run.locator}: {run.status}")


@main.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def approvals(ctx: click.Context, fmt: str) -> None:
    """Stages waiting for approval, and who may approve each."""
    from ..approvals import pending_approvals
    from ..reporting import print_table

    rows = pending_approvals(_ws(ctx))
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
    from ..identity import current_user
    from ..traffic import rollback as do_rollback

    ws = _ws(ctx)
    user = current_user()
    done = do_rollback(ws, locator, user=user, reason=reason)
    for d in done:
        click.echo(f"route {d['route']}: {_weights(d['from'])} -> {_weights(d['to'])}")
    click.echo(f"{locator} rolled back by {user}" + (f": {reason}" if reason else ""))


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
    from ..identity import current_user
    from ..reporting import print_table
    from ..traffic import reconcile, route_of, route_status, set_weights

    ws = _ws(ctx)
    if weight is not None:
        if route is None:
            raise click.UsageError("--set needs a ROUTE")
        user = current_user()
        weights = set_weights(ws, route, weight, user=user, reason=reason)
        click.echo(f"route {route}: {_weights(weights)} (by {user})")
        return
    if route is not None:
        route_of(ws.config, route, ws.root)  # NotFound naming the known routes
    from ..errors import TrafficError

    notes = []
    for row in route_status(ws):
        if route is not None and row["route"] != route:
            continue
        try:
            r = reconcile(ws, row["route"])
        except TrafficError as exc:
            notes.append(f"route {row['route']}: cannot compare with what the provider serves: {exc}")
            continue
        if r.get("reapplied"):
            notes.append(f"route {row['route']}: the provider served {_weights(r['served'])}; "
                         f"re-applied the recorded {_weights(r['recorded'])}")
    rows = [r for r in route_status(ws) if route is None or r["route"] == route]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    else:
        table = [{**r, "weights": _weights(r["weights"]), "run": r["run"] or ""} for r in rows]
        print_table(table, ["route", "provider", "weights", "live", "candidate", "run"])
    for n in notes:
        click.echo(n, err=True)


@main.command()
@click.option("--limit", "-n", type=int, default=50, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def audit(ctx: click.Context, limit: int, fmt: str) -> None:
    """Every decision and refused attempt, newest first: who, when, what, comment, outcome."""
    from ..reporting import print_table

    ws = _ws(ctx)
    df = ws.frames.audit.tail(limit).iloc[::-1]
    rows = [{**r, "at": r["at"].isoformat(timespec="seconds"),
             "counter": None if r["counter"] is None or str(r["counter"]) == "<NA>" else int(r["counter"])}
            for r in df.astype(object).where(df.notna(), None).to_dict("records")]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=str))
    else:
        print_table(rows, ["at", "user", "action", "target", "outcome", "comment", "detail"])
