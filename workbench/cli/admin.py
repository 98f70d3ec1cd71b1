"""Store administration: ``workbench migrate --to URL`` copies the history to another store."""
from __future__ import annotations

import click

from . import _ws, main


@main.command()
@click.option("--to", "target", required=True, metavar="URL",
              help="Store to copy into: an EMPTY database, e.g. postgresql+psycopg://USER@HOST/DB.")
@click.option("--from", "source", default=None, metavar="URL",
              help="Store to copy from (default: this workspace's store).")
@click.pass_context
def migrate(ctx: click.Context, target: str, source: str | None) -> None:
    """Copy the whole run history into another store (e.g. SQLite to PostgreSQL), checking row counts.

    Nothing is written unless every table arrives whole; a target that already
    holds runs is refused. The source is left as it was.
    """
    from ..store import Store, _safe_url
    from ..store.migrate import copy_store

    src = Store.open(source, create=False) if source else _ws(ctx).store
    try:
        counts = copy_store(src, target, progress=lambda table, n: click.echo(f"{table}: {n} rows"))
    finally:
        if source:
            src.close()
    total = sum(counts.values())
    shown = _safe_url(target)
    click.echo(f"copied {total} rows in {len(counts)} tables to {shown}; row counts checked")
    click.echo(f"to use it, put in workbench.yaml:\n  store:\n    url: {shown}\n(or set WORKBENCH_STORE_URL)")
