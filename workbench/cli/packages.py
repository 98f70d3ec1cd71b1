"""``workbench package publish|promote|list``: package repositories from the command line."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from . import _service, _ws, main


def _repos(ws: Any) -> Any:
    from .. import packages as P

    configured = ws.config.extensions.get("package_repositories") or {}
    return lambda name: P.repository(name, ws.root, configured)


@main.group("package")
def package() -> None:
    """Package repositories (qa, prod, ...): publish a built file, promote a version, list."""


@package.command("publish")
@click.argument("name")
@click.argument("version")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--repo", "repo", required=True, help="Repository to publish into (e.g. qa).")
@click.pass_context
def publish_cmd(ctx: click.Context, name: str, version: str, file: str, repo: str) -> None:
    """Publish FILE as NAME VERSION into --repo."""
    from .. import packages as P
    from ..identity import current_user

    ws = _ws(ctx)
    pkg = P.publish(_repos(ws)(repo), name, version, Path(file))
    P.record_event(ws.store, "publish", pkg, user=current_user())
    click.echo(f"published {pkg.name} {pkg.version} to {pkg.repository} (sha256 {pkg.sha256})")


@package.command("promote")
@click.argument("name")
@click.argument("version")
@click.option("--from", "src", required=True, help="Repository to promote from (e.g. qa).")
@click.option("--to", "dst", required=True, help="Repository to promote to (e.g. prod).")
@click.option("--sha256", default=None, help="Refuse unless the package has this checksum (the one you tested).")
@click.pass_context
def promote_cmd(ctx: click.Context, name: str, version: str, src: str, dst: str, sha256: str | None) -> None:
    """Promote NAME VERSION from one repository to another: verified, atomic, never overwriting."""
    from .. import packages as P
    from ..identity import current_user

    ws = _ws(ctx)
    repo = _repos(ws)
    pkg = P.promote(repo(src), repo(dst), name, version, expect_sha256=sha256)
    P.record_event(ws.store, "promote", pkg, user=current_user())
    click.echo(f"promoted {pkg.name} {pkg.version} from {src} to {dst} (sha256 {pkg.sha256})")


@package.command("list")
@click.argument("name", required=False)
@click.option("--repo", "repos", multiple=True, help="Repository (repeatable; default: every configured or existing one).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def list_cmd(ctx: click.Context, name: str | None, repos: tuple[str, ...], fmt: str) -> None:
    """Versions in the repositories (only committed versions: an interrupted copy is not listed)."""
    from ..reporting import print_table

    rows = _service(ctx, reading=True).packages(name, repos)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    else:
        print_table([{**r, "sha256": r["sha256"][:16]} for r in rows],
                    ["repository", "name", "version", "file", "size", "sha256", "promoted_from"])
