"""``workbench notifications list|send|retry``: the notification outbox (docs/notifications.md).

``serve``, ``server`` and ``tick`` send by themselves; ``send`` is for a cron
line of its own, or to flush the outbox now. ``list`` and ``retry`` go through
the application layer (the release service when one is configured); ``send``
always works here, where the channels' secrets are.
"""
from __future__ import annotations

import json
import sys

import click

from . import EXIT_FAILED, _service, _ws, main


@main.group()
def notifications() -> None:
    """The notification outbox: what was sent to whom, what failed and why."""


@notifications.command("list")
@click.option("--state", type=click.Choice(["pending", "sending", "sent", "failed", "gave_up"]), default=None)
@click.option("--limit", "-n", type=int, default=50, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def list_(ctx: click.Context, state: str | None, limit: int, fmt: str) -> None:
    """Queued notifications, newest first, with state, attempts and the last error."""
    from ..reporting import print_table

    rows = _service(ctx, reading=True).notifications(state, limit)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no notifications" + (f" {state}" if state else ""))
        return
    print_table(rows, ["id", "event", "subject", "recipient", "channel", "state", "attempts", "last_error"])


@notifications.command()
@click.option("--quiet", "-q", is_flag=True, help="Print only failures.")
@click.pass_context
def send(ctx: click.Context, quiet: bool) -> None:
    """Queue what happened since the last pass and send what is due (exit 1 when a delivery failed)."""
    from ..notifications.sender import conf_of, send_pass

    ws = _ws(ctx)
    if conf_of(ws) is None:
        click.echo("no notifications configured (a `notifications:` section with subscriptions; "
                   "docs/notifications.md)")
        return
    report = send_pass(ws)
    if not quiet:
        click.echo(f"queued {report.queued}, sent {report.sent}, failed {report.failed}, gave up {report.gave_up}")
    if report.failed or report.gave_up:
        click.echo("some notifications failed; `workbench notifications list --state failed` says why", err=True)
        sys.exit(EXIT_FAILED)


@notifications.command()
@click.argument("ids", nargs=-1, type=int)
@click.pass_context
def retry(ctx: click.Context, ids: tuple[int, ...]) -> None:
    """Send failed and given-up notifications (all, or IDS) again with the next pass."""
    done = _service(ctx).retry_notifications(ids)
    click.echo(f"{done['retried']} notification(s) will be sent again by the next pass "
               "(`workbench notifications send`, or the running serve/server)")
