"""``incident``, ``mark``, ``metrics``, ``report`` and ``export``: delivery metrics from the terminal.

Thin calls into workbench.metrics_store (incidents, marks) and
workbench.metrics (the arithmetic); the same numbers a notebook gets.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from . import _service, _ws, main

BY = click.Choice(["pipeline", "group", "environment"])


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


@main.group()
def incident() -> None:
    """Record production incidents, linked to the deployment that caused them."""


@incident.command("open")
@click.argument("title")
@click.option("--caused-by", "-c", metavar="PIPELINE/COUNTER", default=None, help="The deployment to blame.")
@click.option("--severity", "-s", type=click.Choice(["critical", "major", "minor"]), default="major", show_default=True)
@click.option("--at", "opened_at", default=None, help="When it started (ISO 8601; default now).")
@click.option("--note", default=None)
@click.pass_context
def incident_open(ctx: click.Context, title: str, caused_by: str | None, severity: str, opened_at: str | None,
                  note: str | None) -> None:
    """Open an incident called TITLE."""
    inc = _service(ctx).incident_open(title, caused_by, severity, opened_at, note)
    blame = f", caused by {inc['caused_by']}" if inc["caused_by"] else ""
    click.echo(f"incident {inc['id']} opened: {inc['title']} ({inc['severity']}{blame})")


@incident.command("resolve")
@click.argument("incident_id", type=int)
@click.option("--at", "resolved_at", default=None, help="When service was restored (ISO 8601; default now).")
@click.option("--note", default=None)
@click.pass_context
def incident_resolve(ctx: click.Context, incident_id: int, resolved_at: str | None, note: str | None) -> None:
    """Mark incident INCIDENT_ID resolved."""
    inc = _service(ctx).incident_resolve(incident_id, resolved_at, note)
    took = (datetime.fromisoformat(inc["resolved_at"]) - datetime.fromisoformat(inc["opened_at"])).total_seconds()
    click.echo(f"incident {inc['id']} resolved after {_human(took)}")


@incident.command("list")
@click.option("--open", "open_only", is_flag=True, help="Only incidents not resolved yet.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def incident_list(ctx: click.Context, open_only: bool, fmt: str) -> None:
    """Incidents, oldest first."""
    from ..reporting import print_table

    rows = _service(ctx, reading=True).incidents(open_only)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    elif not rows:
        click.echo("no incidents" + (" open" if open_only else ""))
    else:
        print_table(rows, ["id", "status", "severity", "title", "caused_by", "opened_at", "resolved_at", "opened_by"])


@main.command()
@click.argument("locator", metavar="PIPELINE/COUNTER")
@click.argument("mark", type=click.Choice(["hotfix", "unplanned"]))
@click.option("--incident", "incident_id", type=int, default=None, help="The incident it answers.")
@click.option("--note", default=None)
@click.pass_context
def mark(ctx: click.Context, locator: str, mark: str, incident_id: int | None, note: str | None) -> None:
    """Mark the deployment PIPELINE/COUNTER as a hotfix or as unplanned work (rework)."""
    done = _service(ctx).mark(locator, mark, incident_id, note)
    click.echo(f"{done['run']} marked {mark}" + (f" (incident {incident_id})" if incident_id else ""))


def _human(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:
        return ""
    s = int(round(seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d {h}h"
    if h:
        return f"{h}h {m}m"
    if m:
        return f"{m}m {s}s"
    return f"{s}s"


def _fmt(col: str, v: Any) -> str:
    import pandas as pd

    if v is None or v is pd.NaT or (isinstance(v, float) and v != v):
        return "–"
    if isinstance(v, pd.Timedelta):
        return _human(v.total_seconds())
    if col.endswith("_rate"):
        return f"{v:.0%}"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def _print_frame(df: Any, columns: list[str], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_edge=False, header_style="bold", title_justify="left")
    table.add_column("/".join(str(n) for n in df.index.names if n) or "")
    for c in columns:
        table.add_column(c)
    cols = [df[c].tolist() for c in columns]  # per column, so integers stay integers
    for i, key in enumerate(df.index):
        table.add_row(str(key) if not isinstance(key, tuple) else "/".join(map(str, key)),
                      *(_fmt(c, vals[i]) for c, vals in zip(columns, cols)))
    Console(width=160).print(table)


@main.command()
@click.option("--since", default=None, help="Start of the period (ISO date/time; naive = --tz).")
@click.option("--until", default=None, help="End of the period, exclusive.")
@click.option("--tz", default="UTC", show_default=True, help="Time zone of naive bounds and of day/week buckets.")
@click.option("--by", type=BY, default=None, help="One row per pipeline, group or environment.")
@click.option("--from", "source", type=click.Path(exists=True), default=None, help="A snapshot from `workbench export`.")
@click.option("--stages", is_flag=True, help="Also stage durations, waits, failure rates and reruns.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def metrics(ctx: click.Context, since: str | None, until: str | None, tz: str, by: str | None, source: str | None,
            stages: bool, fmt: str) -> None:
    """DORA's five metrics (with DORA 2024 bands) and the classic four keys."""
    from ..errors import UsageError
    from ..metrics import metrics_from_workspace

    try:
        m = metrics_from_workspace(source or _ws(ctx), since=since, until=until, by=by, tz=tz)
    except (ValueError, TypeError) as exc:  # an unreadable date or zone
        raise UsageError(f"bad period or time zone: {exc}") from None
    if fmt == "json":
        out = m.to_dict()
        if stages:
            out["stages"] = _json_rows(m.stage_summary)
            out["stage_failures"] = _json_rows(m.stage_failures)
            out["job_failures"] = _json_rows(m.job_failures)
            out["reruns"] = _json_rows(m.reruns)
        click.echo(json.dumps(out, indent=2))
        return
    if not m.rule.points:
        click.echo("no production deployments are declared: mark an environment `production: true` "
                   "(see docs/metrics.md)", err=True)
    s = m.summary
    _print_frame(s, ["deployments", "per_week", "frequency_bucket", "deployment_frequency_band"], "Deployment frequency")
    _print_frame(s, ["commits", "lead_time_median", "lead_time_p90", "lead_time_band"], "Change lead time")
    _print_frame(s, ["failed_changes", "change_fail_rate", "change_fail_rate_band", "recovered", "unrecovered",
                     "recovery_median", "recovery_band", "rework_deployments", "rework_rate"], "Stability")
    fk = m.four_keys
    _print_frame(fk, list(fk.columns), "Four Keys (classic)")
    click.echo("bands: DORA 2024 Accelerate State of DevOps Report; definitions: docs/metrics.md")
    if stages:
        _print_frame(m.stage_summary, list(m.stage_summary.columns), "Stage durations and waits")
        _print_frame(m.stage_failures, list(m.stage_failures.columns), "Failure rate by stage")
        _print_frame(m.reruns, list(m.reruns.columns), "Reruns")


def _json_rows(df: Any) -> list[dict[str, Any]]:
    from ..metrics import _plain

    out = []
    for key, row in df.iterrows():
        keys = key if isinstance(key, tuple) else (key,)
        names = df.index.names
        item = {str(n): k for n, k in zip(names, keys)}
        item.update({c: _plain(v) for c, v in row.items()})
        out.append(item)
    return out


@main.command()
@click.option("--since", default=None, help="Start of the period analysed (ISO date/time).")
@click.option("--until", default=None, help="End of the period, exclusive.")
@click.option("--label", "release_label", default=None, help="A release: the label of a production run (e.g. prod-7).")
@click.option("--tz", default="UTC", show_default=True)
@click.option("--from", "source", type=click.Path(exists=True), default=None, help="Analyse a snapshot instead.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, help="The HTML file to write.")
@click.option("--notebook", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Another analysis notebook (default: notebooks/post_release_analysis.ipynb).")
@click.option("--timeout", type=float, default=600, show_default=True, help="Seconds per notebook cell.")
@click.pass_context
def report(ctx: click.Context, since: str | None, until: str | None, release_label: str | None, tz: str,
           source: str | None, output: str | None, notebook: str | None, timeout: float) -> None:
    """Run the post-release analysis notebook and write a self-contained HTML report."""
    from ..metrics.report import find_notebook, render

    ws = None if source else _ws(ctx)
    root = ws.root if ws is not None else None
    nb = Path(notebook) if notebook else find_notebook(root)
    if output is None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        base = (ws.state / "reports") if ws is not None else Path.cwd()
        output = str(base / f"post-release-{stamp}.html")
    params = {"workspace": str(root) if root else None, "snapshot": str(Path(source).resolve()) if source else None,
              "since": since, "until": until, "release_label": release_label, "tz": tz}
    path = render(Path(output), notebook=nb, parameters=params, timeout=timeout)
    click.echo(f"report written to {path}")


@main.command()
@click.argument("target", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default=None,
              help="Default: CSV when TARGET has a .csv suffix or pyarrow is missing, else Parquet.")
@click.pass_context
def export(ctx: click.Context, target: str, fmt: str | None) -> None:
    """Write the history to TARGET: a folder, or a .zip, of one file per frame plus manifest.json."""
    from ..metrics.io import export as do_export

    manifest = do_export(_ws(ctx), target, fmt=fmt)
    rows = sum(f["rows"] for f in manifest["frames"].values())
    click.echo(f"exported {len(manifest['frames'])} frames ({rows} rows) as {manifest['format']} to {target}")
    for name, why in manifest["skipped"].items():
        click.echo(f"skipped frame {name}: {why}", err=True)
