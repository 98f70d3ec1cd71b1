"""Commands of the materials feature: tick, serve, notify, trigger, rerun, cancel, unlock."""
from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from ..signals import Stop
from . import EXIT_FAILED, _remote, _service, _ws, finish_run, main


def _stamp() -> str:
    return time.strftime("%H:%M:%S")


def _print_report(report: Any, fmt: str, verbose: bool) -> None:
    if fmt == "json":
        click.echo(json.dumps(report.as_dict(), indent=2))
        return
    for line in report.lines(verbose=verbose):
        click.echo(line)


@main.command()
@click.option("--verbose", "-v", is_flag=True, help="Also say why pipelines wait, and what the pass cost.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.option("--no-lock", is_flag=True, hidden=True,
              help="Skip the workspace lock (tests: the store alone must keep triggering at most once).")
@click.pass_context
def tick(ctx: click.Context, verbose: bool, fmt: str, no_lock: bool) -> None:
    """One scheduling pass, for cron: poll materials, trigger, run what is ready, exit.

    Prints one line per thing that happened and nothing otherwise, so cron
    mails only when there is news. Crontab: `* * * * * workbench -w /srv/ws tick`.
    """
    from ..triggering import tick as do_tick

    with Stop("workbench tick") as stop:  # a signal cancels the runs it drives (workbench.signals)
        ws = _ws(ctx)  # do_tick loads the config first (config errors before anything runs), unless its quiet
        # pass finds nothing to do from what the last tick kept of the same files (workbench.materials.quiet)
        report = do_tick(ws, lock=not no_lock, started=stop.attach, quick=not verbose and fmt == "text")
    _print_report(report, fmt, verbose)
    if stop.exit_code is not None:
        sys.exit(stop.exit_code)
    if report.errors:
        sys.exit(EXIT_FAILED)


@main.command()
@click.option("--interval", "-i", type=float, default=10.0, show_default=True, help="Seconds between full polls.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
@click.pass_context
def serve(ctx: click.Context, interval: float, quiet: bool) -> None:
    """Scheduling passes in a loop (Ctrl-C stops, cancelling jobs still running)."""
    from ..triggering import serve as do_serve

    ws = _ws(ctx)
    _ = ws.config  # config errors before the loop starts

    def on_pass(report: Any) -> None:
        for line in report.lines():
            if not quiet or line.startswith(("error", "material error")):
                click.echo(f"{_stamp()} {line}", err=line.startswith(("error", "material error")))

    with Stop("workbench serve") as stop:  # SIGINT, SIGTERM, SIGHUP: stop, cancelling its runs (workbench.signals)
        if not quiet:
            click.echo(f"{_stamp()} serving {ws.root} (full poll every {interval:g}s; "
                       "`workbench notify` polls now; Ctrl-C stops)")
        do_serve(ws, interval, on_pass=on_pass, on_exit=on_pass, started=stop.attach)
    if not quiet:  # exit 0: a signal is how a serve loop is meant to stop (its runs were cancelled, said above)
        click.echo(f"{_stamp()} " + (f"{stop.name} received: " if stop.name else "") + "stopped")


@main.command()
@click.argument("what", required=False)
@click.pass_context
def notify(ctx: click.Context, what: str | None) -> None:
    """A repository changed (git post-receive hook): poll WHAT (URL or material name; default all) now.

    Tells the running `workbench serve`; without one, runs a tick here.
    """
    if _remote(ctx):
        done = _service(ctx).notify(what)
        click.echo(f"release service notified: polling {what or 'all materials'} now ({done['polling']})")
        return
    from ..triggering import notify as do_notify

    ws = _ws(ctx)
    result = do_notify(ws, what)
    if isinstance(result, str):
        click.echo(f"serve ({result}) notified: polling {what or 'all materials'} now")
        return
    _print_report(result, "text", False)


def _foreground(ctx: click.Context, start: Any, quiet: bool, executor: str | None, parallel: int | None) -> None:
    """Run ``start(engine) -> run`` and drive it here like `workbench run` (same output and exit codes)."""
    from ..progress import Progress

    ws = _ws(ctx)
    progress = Progress(quiet=quiet)
    with Stop(f"workbench {ctx.info_name}") as stop:  # SIGINT, SIGTERM, SIGHUP cancel it (workbench.signals)
        with ws.engine(executor=executor, max_parallel=parallel, listener=progress) as engine:
            stop.attach(engine)  # before the run exists: a signal from here on cancels it, never orphans it
            with progress:
                result = engine.drive(start(engine))
        finish_run(ws, result, stop=stop)


def _revision_options(values: tuple[str, ...]) -> dict[str, str]:
    from ..errors import UsageError

    out = {}
    for v in values:
        name, sep, rev = v.partition("=")
        if not sep or not name or not rev:
            raise UsageError(f"--revision {v!r}: expected MATERIAL=REVISION")
        out[name] = rev
    return out


@main.command()
@click.argument("pipeline")
@click.option("--revision", "-r", "revisions", multiple=True, metavar="MATERIAL=REV",
              help="Use this revision of a material (sha, branch, tag; for an upstream: COUNTER or PIPELINE/COUNTER).")
@click.option("--executor", default=None, help="local (default) or dask://HOST:PORT.")
@click.option("--parallel", "-j", type=click.IntRange(min=1), default=None, help="Jobs of a stage run at once.")
@click.option("--quiet", "-q", is_flag=True)
@click.pass_context
def trigger(ctx: click.Context, pipeline: str, revisions: tuple[str, ...], executor: str | None,
            parallel: int | None, quiet: bool) -> None:
    """Trigger PIPELINE by hand with chosen material revisions, and run it here (or on the server)."""
    from ..service import acts

    chosen = _revision_options(revisions)
    if _remote(ctx):
        run = _service(ctx).trigger(pipeline, chosen)
        click.echo(f"triggered {run['locator']} (label {run['label']}); the release service runs it "
                   "(`workbench status`, `workbench logs -f`)")
        return
    svc = _service(ctx)
    _foreground(ctx, lambda engine: acts.trigger(svc.ws, pipeline, actor=svc.actor, revisions=chosen,
                                                 engine=engine)["id"], quiet, executor, parallel)


@main.command()
@click.argument("locator", metavar="PIPELINE/COUNTER/STAGE")
@click.option("--failed-jobs", is_flag=True, help="Rerun only the jobs that did not pass.")
@click.option("--executor", default=None)
@click.option("--parallel", "-j", type=click.IntRange(min=1), default=None)
@click.option("--quiet", "-q", is_flag=True)
@click.pass_context
def rerun(ctx: click.Context, locator: str, failed_jobs: bool, executor: str | None, parallel: int | None,
          quiet: bool) -> None:
    """Run a stage of a past run again: new stage counter, the run's revisions, the current config."""
    from ..service import acts

    if _remote(ctx):
        run = _service(ctx).rerun(locator, failed_jobs)
        click.echo(f"rerun of {locator} scheduled ({run['locator']}); the release service runs it")
        return
    svc = _service(ctx)
    _foreground(ctx, lambda engine: acts.rerun(svc.ws, locator, actor=svc.actor, failed_jobs=failed_jobs,
                                               engine=engine)["id"], quiet, executor, parallel)


@main.command()
@click.argument("locator", metavar="PIPELINE/COUNTER")
@click.option("--wait", "wait_s", type=float, default=60.0, show_default=True,
              help="Seconds to wait for the process running the jobs to stop them.")
@click.pass_context
def cancel(ctx: click.Context, locator: str, wait_s: float) -> None:
    """Cancel a run: its jobs are stopped (on_cancel tasks run), wherever they are driven."""
    from ..status import Status

    svc = _service(ctx)
    done = svc.cancel(locator)
    loc = done["locator"]
    if done["cancel"] == "cancelled":
        click.echo(f"{loc}: cancelled")
        return
    click.echo(f"{loc}: cancel requested; waiting for the process running it")
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        current = svc.run(loc)
        if Status(current["status"]).finished:
            click.echo(f"{loc}: {current['status']}" + (f" — {current['reason']}" if current["reason"] else ""))
            return
        time.sleep(0.2)
    click.echo(f"{loc}: still running after {wait_s:g}s; the request stands and its process will act on it",
               err=True)
    sys.exit(EXIT_FAILED)


@main.command()
@click.argument("pipeline")
@click.option("-m", "--reason", "reason", default=None, help="why (shown in status, the board and the audit)")
@click.pass_context
def pause(ctx: click.Context, pipeline: str, reason: str | None) -> None:
    """Pause PIPELINE (GoCD): nothing triggers it, automatically or by hand, until unpaused."""
    done = _service(ctx).pause(pipeline, reason)
    click.echo(f"{done['pipeline']} paused by {done['paused_by']}" + (f": {reason}" if reason else ""))


@main.command()
@click.argument("pipeline")
@click.pass_context
def unpause(ctx: click.Context, pipeline: str) -> None:
    """Unpause PIPELINE: the next scheduling pass may trigger it again."""
    done = _service(ctx).unpause(pipeline)
    click.echo(f"{done['pipeline']} unpaused (was paused by {done['was_paused_by']})")


@main.command()
@click.argument("pipeline")
@click.pass_context
def unlock(ctx: click.Context, pipeline: str) -> None:
    """Release the lock a failed run holds on PIPELINE (lock_behavior: lockOnFailure)."""
    done = _service(ctx).unlock(pipeline)
    click.echo(f"{pipeline} unlocked (was locked by {done['was_locked_by']})")
