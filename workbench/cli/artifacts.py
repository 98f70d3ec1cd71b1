"""``workbench artifacts PIPELINE/COUNTER[/STAGE[/JOB]]``: what a run stored, with checksums."""
from __future__ import annotations

import json
from typing import Any

import click

from . import _ws, main


@main.command("artifacts")
@click.argument("locator")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def artifacts_cmd(ctx: click.Context, locator: str, fmt: str) -> None:
    """List the artifacts of a run (PIPELINE/COUNTER, counter may be 'latest'), a stage or a job."""
    import sqlalchemy as sa

    from ..artifacts import tables
    from ..engine import find_run
    from ..errors import NotFound
    from ..store import schema as S

    ws = _ws(ctx)
    run, rest = find_run(ws.store, locator)
    if len(rest) > 2:
        raise NotFound(f"{locator!r}: expected PIPELINE/COUNTER[/STAGE[/JOB]]")
    a, jr, sr = tables.artifacts, S.job_runs, S.stage_runs
    q = (sa.select(sr.c.name.label("stage"), sr.c.counter.label("stage_counter"), jr.c.name.label("job"), a.c.type,
                   a.c.path, a.c.size, a.c.sha256, a.c.url)
         .select_from(a.join(jr, jr.c.id == a.c.job_run_id).join(sr, sr.c.id == jr.c.stage_run_id))
         .where(sr.c.pipeline_run_id == run.id).order_by(sr.c.position, sr.c.counter, jr.c.name, a.c.path))
    if rest:
        q = q.where(sr.c.name == rest[0])
    if len(rest) > 1:
        q = q.where(jr.c.name == rest[1])
    with ws.store.read() as conn:
        rows: list[dict[str, Any]] = [dict(r._mapping) for r in conn.execute(q)]
    if not rows and rest:
        detail = ws.store.run_detail(run)
        if rest[0] not in detail.latest_stages():
            raise NotFound(f"{run.pipeline}/{run.counter} has no stage {rest[0]}")
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no artifacts in {locator}")
        return
    from ..reporting import print_table

    print_table([{**r, "stage": f"{r['stage']}/{r['stage_counter']}", "sha256": r["sha256"][:16], "size": str(r["size"])}
                 for r in rows], ["stage", "job", "type", "path", "size", "sha256"])
