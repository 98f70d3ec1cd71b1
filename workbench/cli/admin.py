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


# -- backup and restore (workbench/backup.py) --------------------------------------------


@main.command()
@click.argument("dest", type=click.Path(file_okay=False))
@click.option("--with-key", is_flag=True, help="Also copy .workbench/secret.key (keep such a backup as safe as the key).")
@click.pass_context
def backup(ctx: click.Context, dest: str, with_key: bool) -> None:
    """Copy the config, the run history and the artifacts into DEST (new or empty), with SHA-256 checksums.

    Safe while runs go on: the store is copied as one consistent snapshot
    (SQLite's online backup, or pg_dump).
    """
    from ..backup import backup as do_backup

    report = do_backup(_ws(ctx), dest, include_key=with_key)
    click.echo(f"backed up {report.runs} runs ({report.store} store), {report.files} files, "
               f"{report.bytes:,} bytes into {report.path}; manifest.json lists their SHA-256")


@main.command()
@click.argument("src", type=click.Path(file_okay=False))
@click.argument("target", required=False, type=click.Path(file_okay=False))
@click.option("--store-url", default=None, metavar="URL",
              help="An EMPTY PostgreSQL database for a backup of a PostgreSQL store.")
@click.pass_context
def restore(ctx: click.Context, src: str, target: str | None, store_url: str | None) -> None:
    """Restore the backup SRC into TARGET (default: the workspace folder), which must be empty.

    Every file is checked against the backup's manifest before anything is
    written; on any mismatch nothing is restored.
    """
    import os

    from ..backup import restore as do_restore

    folder = target or ctx.find_root().obj.get("workspace") or os.getcwd()
    report = do_restore(src, folder, store_url=store_url)
    click.echo(f"restored {report.runs} runs, {report.files} files, {report.bytes:,} bytes into {report.path}; "
               "every checksum verified")
    if store_url:
        from ..store import _safe_url

        click.echo(f"the history is in {_safe_url(store_url)}: put it in {report.path}/workbench.yaml (store: url) "
                   "or set WORKBENCH_STORE_URL before using the restored workspace")
