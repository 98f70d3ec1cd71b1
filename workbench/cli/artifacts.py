"""``workbench artifacts PIPELINE/COUNTER[/STAGE[/JOB]]``: what a run stored, with checksums."""
from __future__ import annotations

import json

import click

from . import _service, main


@main.command("artifacts")
@click.argument("locator")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def artifacts_cmd(ctx: click.Context, locator: str, fmt: str) -> None:
    """List the artifacts of a run (PIPELINE/COUNTER, counter may be 'latest'), a stage or a job."""
    rows = _service(ctx, reading=True).artifacts(locator)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no artifacts in {locator}")
        return
    from ..reporting import print_table

    print_table([{**r, "stage": f"{r['stage']}/{r['stage_counter']}", "sha256": r["sha256"][:16], "size": str(r["size"])}
                 for r in rows], ["stage", "job", "type", "path", "size", "sha256"])
