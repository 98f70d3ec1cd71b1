"""``workbench server`` and ``workbench token``: the release service and its API tokens."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import click

from . import _ws, main


@main.command()
@click.option("--bind", default=None, metavar="HOST:PORT",
              help="Where to listen (default: workbench.yaml's server.bind, else 127.0.0.1:8765; port 0 picks one).")
@click.option("--interval", "-i", type=float, default=10.0, show_default=True, help="Seconds between full polls.")
@click.pass_context
def server(ctx: click.Context, bind: str | None, interval: float) -> None:
    """The release service: the HTTP API, sign-in, webhooks, and `serve`'s scheduling, in one process.

    Prints `serving http://HOST:PORT` once it accepts requests; SIGTERM or
    Ctrl-C stops it (jobs still running are cancelled). See docs/server.md.
    """
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise click.UsageError("the server needs its extra: pip install 'release-workbench[server]'") from None
    from ..errors import UsageError
    from ..server.process import DEFAULT_BIND, run_server

    if interval <= 0:
        raise UsageError("--interval must be more than 0 seconds")
    ws = _ws(ctx)
    chosen = bind or ws.settings.server.bind or DEFAULT_BIND
    by = run_server(ws, chosen, interval=interval, say=lambda line: click.echo(line))
    # exit 0: a signal is how a service is meant to stop (systemd counts it clean); its runs were cancelled
    click.echo((f"{by} received: " if by else "") + "stopped")


@main.group()
def token() -> None:
    """API tokens of the release service, for cron, CI and people without JupyterHub."""


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


@token.command("create")
@click.option("--user", "-u", required=True, help="Whom the token acts as (approvals check this name).")
@click.option("--scope", type=click.Choice(["read", "act"]), default="act", show_default=True,
              help="read: look only; act: also approve, trigger, ... as USER.")
@click.option("--expires", default="90d", show_default=True, help="Lifetime: 30d, 12h, 2w, or never.")
@click.option("--note", default=None, help="What it is for (shown by `token list`).")
@click.pass_context
def token_create(ctx: click.Context, user: str, scope: str, expires: str, note: str | None) -> None:
    """Create a token; it is printed once (the last line is the token alone) and only its hash is kept."""
    from ..approvals import record
    from ..identity import current_user
    from ..server import tokens

    ws = _ws(ctx)
    by = current_user()
    info, text = tokens.create(ws.store, user, scope=scope, expires=expires, created_by=by, note=note)
    record(ws, by, "token", f"token:{info.id}", "ok", detail=f"created for {info.user} ({info.scope}, "
           f"expires {_iso(info.expires_at) or 'never'})")
    click.echo(f"token {info.id} for {info.user} ({info.scope}), expires {_iso(info.expires_at) or 'never'}; "
               "shown once, keep it secret:", err=True)
    click.echo(text)


@token.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def token_list(ctx: click.Context, fmt: str) -> None:
    """Every token: whose, its scope, when it expires, when it was last used (never the token itself)."""
    from ..reporting import print_table
    from ..server import tokens

    rows = [{"id": t.id, "user": t.user, "scope": t.scope, "state": t.state, "created_at": _iso(t.created_at),
             "created_by": t.created_by, "expires_at": _iso(t.expires_at), "last_used_at": _iso(t.last_used_at),
             "note": t.note} for t in tokens.list_tokens(_ws(ctx).store)]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    elif not rows:
        click.echo("no tokens")
    else:
        print_table(rows, ["id", "user", "scope", "state", "expires_at", "last_used_at", "created_by", "note"])


@token.command("revoke")
@click.argument("token_id", type=int)
@click.pass_context
def token_revoke(ctx: click.Context, token_id: int) -> None:
    """Revoke token TOKEN_ID: refused from the next request on."""
    from ..approvals import record
    from ..identity import current_user
    from ..server import tokens

    ws = _ws(ctx)
    info = tokens.revoke(ws.store, token_id)
    record(ws, current_user(), "token", f"token:{info.id}", "ok", detail=f"revoked (was {info.user}'s)")
    click.echo(f"token {info.id} ({info.user}) revoked")
