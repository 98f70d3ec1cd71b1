"""The ``workbench`` command: a thin layer over the Python API.

Exit statuses (documented in the README): 0 success (or a run waiting for
approval), 1 a run or job failed, 2 bad config or usage, 3 not authorized,
4 store problem, 130 interrupted. They are mapped from the exception classes
here and nowhere else.
"""
from __future__ import annotations

import gc
import json
import signal
import sys
from typing import Any, Callable

import click

from ..errors import ConfigError, WorkbenchError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAUTHORIZED, EXIT_STORE, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


def _err(message: str) -> None:
    click.echo(message, err=True)


class WorkbenchGroup(click.Group):
    """Translates workbench errors into messages and exit statuses, in one place."""

    def main(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs.setdefault("standalone_mode", True)
        try:
            return super().main(*args, **{**kwargs, "standalone_mode": False})
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(EXIT_USAGE)
        except click.Abort:
            _err("aborted")
            sys.exit(EXIT_INTERRUPTED)
        except ConfigError as exc:
            for p in exc.problems:
                _err(str(p))
            n = len(exc.problems)
            _err(f"{n} problem{'s' if n != 1 else ''} in the pipeline config; nothing was run")
            sys.exit(exc.exit_code)
        except WorkbenchError as exc:
            _err(f"workbench: {exc}")
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            _err("interrupted")
            sys.exit(EXIT_INTERRUPTED)


def _ws(ctx: click.Context) -> Any:
    from ..workspace import Workspace

    obj = ctx.find_root().obj
    if "ws" not in obj:
        obj["ws"] = Workspace.open(obj.get("workspace"))
        ctx.find_root().call_on_close(obj["ws"].close)
    return obj["ws"]


@click.group(cls=WorkbenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--workspace", "-w", type=click.Path(file_okay=False), envvar="WORKBENCH_WORKSPACE",
              help="Workspace folder (default: $WORKBENCH_WORKSPACE, else the current folder).")
@click.version_option(package_name="release-workbench")
@click.pass_context
def main(ctx: click.Context, workspace: str | None) -> None:
    """Release Workbench: GoCD-style pipelines as code, with history as DataFrames."""
    ctx.obj = {"workspace": workspace}


@main.command()
@click.pass_context
def validate(ctx: click.Context) -> None:
    """Check the pipeline files; print FILE:LINE:COL for each problem (exit 2)."""
    ws = _ws(ctx)
    cfg = ws.config
    for w in cfg.warnings:
        _err(str(w))
    for check in VALIDATE_CHECKS:  # features' checks that need the workspace's files (notebooks, ...)
        for w in check(cfg, ws.root):
            _err(str(w))
    click.echo(f"ok: {len(cfg.pipelines)} pipelines in {len(cfg.files)} files")


# (config, workspace root) -> warnings; registered by cli/<feature>.py modules
VALIDATE_CHECKS: list[Callable[[Any, Any], list[Any]]] = []


@main.command()
@click.argument("pipeline")
@click.option("--executor", default=None, help="local (default) or dask://HOST:PORT.")
@click.option("--parallel", "-j", type=int, default=None, help="Jobs of a stage run at once (default: CPU count).")
@click.option("--quiet", "-q", is_flag=True, help="No progress display, only the result line.")
@click.pass_context
def run(ctx: click.Context, pipeline: str, executor: str | None, parallel: int | None, quiet: bool) -> None:
    """Trigger PIPELINE and run it here in the foreground (exit 0 passed, 1 failed)."""
    from ..progress import Progress

    gc.disable()  # see _started
    ws = _ws(ctx)
    notebooks = _boot_kernels(ws, pipeline, executor, parallel)
    ws.config.pipeline(pipeline)  # config errors and unknown names before anything starts
    progress = Progress(quiet=quiet)
    with ws.engine(executor=executor, max_parallel=parallel, listener=progress, one_shot=True) as engine:
        if notebooks:
            from ..notebooks import runner  # noqa: F401  (now, while the kernel boots, not when the job starts)
        _started()
        previous = signal.signal(signal.SIGINT, lambda *_: engine.cancel())
        try:
            with progress:
                result = engine.run(pipeline)
        finally:
            signal.signal(signal.SIGINT, previous)
    finish_run(ws, result)


def _started() -> None:
    """The one-shot process's modules are loaded: collect garbage again, ignoring what start-up built.

    Start-up imports build some hundred thousand long-lived objects (SQLAlchemy,
    papermill, ...), and the cyclic collector walks them again and again while
    they are created: 10-15% of a cold ``workbench run``'s CPU. So collection
    is off until the imports are done, and what they built is then frozen out of
    every later collection (``gc.freeze``).
    """
    gc.freeze()
    gc.enable()


def _boot_kernels(ws: Any, pipeline: str, executor: str | None, parallel: int | None) -> bool:
    """Start the first stage's notebook kernels now, from a quick look at the pipeline's file.

    Loading the config loads every feature module (SQLAlchemy, the engine,
    papermill): most of a second, during which the kernel boots on the other CPU.
    Only when the jobs will run here (the executor the engine will make, from
    ``--executor`` or workbench.yaml, is the local one), as many as its slots.
    False when the look finds no notebook job.
    """
    from ..config.peek import first_stage_notebooks

    try:
        spec, options = ws.settings.resolve_executor(executor, parallel)
    except WorkbenchError:  # a broken workbench.yaml: the engine reports it in its turn
        return False
    if (spec or "local").partition("://")[0] != "local":
        return False
    hint = first_stage_notebooks(ws.root, pipeline)
    if hint is None:
        return False
    from ..executors.local import local_slots
    from ..kernels import POOL

    POOL.keep_spare = False  # a one-shot process: no kernel beyond what the run needs
    count, kernel = hint
    POOL.start_now(kernel, min(count, local_slots(options.get("max_parallel"))))
    return True


def finish_run(ws: Any, run: Any) -> None:
    """Print a run's result line and exit with its status: the one run-status → exit-code mapping.

    ``run``, ``trigger``, ``rerun`` and ``approve`` end with it, so they agree.
    0: passed; stopped to wait for an approval; or taken over by another
    process (a tick or serve now drives a stage of it: the run is still
    going, nothing failed, and the line says where to follow it). 1: failed
    or rejected. 130: cancelled.
    """
    from ..status import Status

    click.echo(_result_line(ws, run))
    if run.status in (Status.SCHEDULED, Status.RUNNING):
        click.echo(f"{run.locator} continues in another process (`workbench status`, `workbench logs -f`)")
        return
    if run.status in (Status.WAITING, Status.PASSED):
        return
    sys.exit(EXIT_INTERRUPTED if run.status == Status.CANCELLED else EXIT_FAILED)


def _result_line(ws: Any, run: Any) -> str:
    from ..status import Status

    line = f"{run.pipeline}/{run.counter} (label {run.label}): {run.status}"
    if run.reason:
        line += f" — {run.reason}"
    if run.status == Status.WAITING:
        detail = ws.store.run_detail(run)
        waiting = [s for s in detail.latest_stages().values() if s.status == Status.WAITING]
        for s in waiting:
            stage = ws.config.pipeline(run.pipeline).stage(s.name)
            who = []
            if stage is not None:
                who = [*stage.approval.users, *(f"role {r}" for r in stage.approval.roles)]
            line += (
                f"\nstage {s.name} awaits approval" + (f" by {', '.join(who)}" if who else "")
                + f"\n  approve: workbench approve {run.pipeline}/{run.counter}/{s.name}"
            )
    return line


@main.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def status(ctx: click.Context, fmt: str) -> None:
    """Latest run of each pipeline with each stage's result (GoCD's dashboard)."""
    from ..reporting import status_rows, print_status

    ws = _ws(ctx)
    rows = status_rows(ws)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    else:
        print_status(rows)


@main.command()
@click.option("--pipeline", "-p", default=None)
@click.option("--limit", "-n", type=int, default=50, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table")
@click.pass_context
def history(ctx: click.Context, pipeline: str | None, limit: int, fmt: str) -> None:
    """Past runs, newest first."""
    from ..reporting import history_rows, print_table

    ws = _ws(ctx)
    rows = history_rows(ws, pipeline, limit)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
    elif fmt == "csv":
        import csv

        cols = list(rows[0]) if rows else ["pipeline", "counter", "label", "status"]
        w = csv.DictWriter(sys.stdout, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in r.items()})
    else:
        print_table(rows, ["pipeline", "counter", "label", "status", "trigger", "triggered_by", "started", "duration", "stages"])


@main.command()
@click.argument("locator")
@click.option("--follow", "-f", is_flag=True, help="Keep printing while the job runs.")
@click.pass_context
def logs(ctx: click.Context, locator: str, follow: bool) -> None:
    """Print the log of PIPELINE/COUNTER/STAGE/JOB (STAGE may carry /STAGE_COUNTER)."""
    from ..reporting import job_log

    ws = _ws(ctx)
    job_log(ws, locator, follow=follow, write=lambda b: (sys.stdout.buffer.write(b), sys.stdout.buffer.flush()))


@main.command()
@click.argument("value", required=False)
@click.pass_context
def encrypt(ctx: click.Context, value: str | None) -> None:
    """Encrypt VALUE (or stdin) for `secure_variables`; creates the key file when missing."""
    from ..secrets import encrypt as do_encrypt

    ws = _ws(ctx)
    if value is None:
        value = sys.stdin.read().rstrip("\n")
    click.echo(do_encrypt(value, ws))


def run_cli() -> None:  # console-script entry point (and ``python -m workbench``)
    try:
        main(prog_name="workbench")
    except SystemExit as exc:
        _leave(exc.code)
    _leave(0)


def _leave(code: Any) -> None:
    """Exit as ``sys.exit`` would, without the interpreter's module-by-module teardown.

    A notebook run has ~1,000 modules loaded (SQLAlchemy, papermill, nbclient, zmq...),
    and tearing them down took 0.2-0.4 s after the result line was printed: a third of
    a trivial notebook run's budget, for memory the OS frees anyway. Everything an exit
    does that matters still happens first, in the same order: non-daemon threads are
    joined (``threading._shutdown``, which also stops idle thread pools), the atexit
    handlers run (the kernel pool kills its kernels and removes its folder; logging
    flushes), then stdout and stderr are flushed. Only the real entry point does this;
    ``main`` called in-process (tests, CliRunner) returns or raises as before.
    """
    import atexit
    import os
    import threading

    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is None:  # pragma: no cover - another interpreter: exit the ordinary way
        sys.exit(code)
    shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 120  # what Python itself returns when the final flush fails
    os._exit(code)


# Feature commands live next to their feature (cli/materials.py: tick, serve,
# notify, rerun, cancel; cli/approvals.py: approve, reject, rollback, ...);
# each module decorates ``main`` when imported.
def _load_feature_commands() -> None:
    import importlib
    import importlib.util

    for name in ("materials", "notebooks", "artifacts", "packages", "approvals", "traffic", "metrics", "dashboard",
                 "agents", "admin", "server", "webhooks"):
        mod = f"{__name__}.{name}"
        if importlib.util.find_spec(mod) is not None:
            importlib.import_module(mod)


_load_feature_commands()


