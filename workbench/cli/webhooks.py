"""``workbench deliveries``: the webhook deliveries the release service received, and what it made of each."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from . import _ws, main


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


@main.command()
@click.option("-n", "limit", type=click.IntRange(1, 100_000), default=20, show_default=True,
              help="How many of the latest deliveries.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def deliveries(ctx: click.Context, limit: int, fmt: str) -> None:
    """The latest webhook deliveries, newest first: forge, event, outcome (accepted, ignored, refused) and why.

    `accepted` deliveries list the materials they polled and when a scheduling
    pass did (`polled_at`); see docs/webhooks.md.
    """
    from ..server import deliveries as D

    rows = []
    for d in D.recent(_ws(ctx).store, limit):
        row = d.as_dict()
        row["received_at"], row["polled_at"] = _iso(d.received_at), _iso(d.polled_at)
        rows.append(row)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no webhook deliveries")
        return
    from ..reporting import print_table

    for row in rows:
        row["polled"] = "yes" if row.pop("polled_at") else ("no" if row["outcome"] == "accepted" else "")
    # the table shows what an operator scans for; ids, addresses and material keys are in --format json
    print_table(rows, ["id", "received_at", "forge", "event", "outcome", "status", "repository", "reason", "polled"])
