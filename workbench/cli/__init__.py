"""The ``workbench`` command: a thin layer over the Python API.

Exit statuses (documented in the README): 0 success (or a run waiting for
approval), 1 a run or job failed, 2 bad config or usage, 3 not authorized,
4 store problem, 130 interrupted or cancelled; 128 + N when stop signal N
(SIGINT 130, SIGHUP 129, SIGTERM 143) stopped the command (workbench.signals). They are mapped from the exception classes
here and nowhere else.
"""
from __future__ import annotations

import gc
import json
import sys
from typing import Any, Callable

import click

from ..errors import ConfigError, WorkbenchError
from ..signals import Stop, Stopped, exit_status

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
        except Stopped as exc:  # a stop signal during start-up, before anything ran (workbench.signals)
            _err(f"stopped by {exc}")
            sys.exit(exit_status(exc.signum))
        except KeyboardInterrupt:
            _err("interrupted")
            sys.exit(EXIT_INTERRUPTED)


def _service(ctx: click.Context, *, reading: bool = False) -> Any:
    """The application layer the command talks to: the release service when one is configured, else here.

    ``$WORKBENCH_SERVER`` or workbench.yaml's ``server: {url: ...}`` sends the
    command through the HTTP API (``workbench.Client``, signed with
    ``$WORKBENCH_TOKEN`` or the hub's ``$JUPYTERHUB_API_TOKEN``); ``--local``
    (the server's own account, maintenance) works on the files directly.
    Both offer the same methods and return the same shapes.
    """
    obj = ctx.find_root().obj
    if "service" in obj:
        return obj["service"]
    url = _server_url(ctx, reading=reading)
    if url:
        from ..client import Client

        obj["service"] = Client(url)
        ctx.find_root().call_on_close(obj["service"].close)
    else:
        from ..service.local import Local

        obj["service"] = Local(_ws(ctx, reading=reading))
    return obj["service"]


def _server_url(ctx: click.Context, *, reading: bool = False) -> str | None:
    """The release service this command talks to (``$WORKBENCH_SERVER``, else settings), None: local."""
    import os

    obj = ctx.find_root().obj
    if obj.get("local"):
        return None
    return os.environ.get("WORKBENCH_SERVER") or _ws(ctx, reading=reading).settings.server.url or None


def _remote(ctx: click.Context) -> bool:
    """Whether the command goes through the HTTP API; decided without building the local service, whose
    imports (SQLAlchemy, every feature) a git hook's ``notify`` to a running serve does not need."""
    obj = ctx.find_root().obj
    if "service" in obj:
        from ..client import Client

        return isinstance(obj["service"], Client)
    return _server_url(ctx) is not None


def _ws(ctx: click.Context, *, reading: bool = False) -> Any:
    """The workspace of ``-w``; ``reading``: a command that only reads refuses a folder that is not a
    workspace (no pipelines/, no .workbench/) instead of creating a store there."""
    from ..workspace import Workspace

    obj = ctx.find_root().obj
    if "ws" not in obj:
        obj["ws"] = Workspace.open(obj.get("workspace"))
        ctx.find_root().call_on_close(obj["ws"].close)
    ws = obj["ws"]
    if reading and not ws.pipelines_dir.is_dir() and not ws.state.is_dir() and not ws.settings.store_url \
            and not ws._store_url:
        from ..errors import UsageError

        raise UsageError(f"{ws.root} is not a workspace: it has no pipelines/ folder and no history "
                         "(.workbench/); pass -w WORKSPACE or create pipelines/*.gocd.yaml")
    return ws


@click.group(cls=WorkbenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--workspace", "-w", type=click.Path(file_okay=False), envvar="WORKBENCH_WORKSPACE",
              help="Workspace folder (default: $WORKBENCH_WORKSPACE, else the current folder).")
@click.option("--local", "local", is_flag=True,
              help="Work on the workspace's files directly even when a release service is configured.")
@click.version_option(package_name="release-workbench")
@click.pass_context
def main(ctx: click.Context, workspace: str | None, local: bool) -> None:
    """Release Workbench: GoCD-style pipelines as code, with history as DataFrames."""
    ctx.obj = {"workspace": workspace, "local": local}


@main.command()
@click.pass_context
def validate(ctx: click.Context) -> None:
    """Check every file a later command loads (pipeline files, workbench.yaml, notebook parameters);
    print FILE:LINE:COL for each problem (exit 2)."""
    from ..service.local import Local

    ws = _ws(ctx)
    if not ws.pipelines_dir.is_dir():
        _ = ws.settings  # workbench.yaml is still checked
        _err(f"warning: {ws.root} has no pipelines/ folder: no pipeline files to check "
             "(a workspace keeps its pipelines in pipelines/*.gocd.yaml)")
        click.echo("ok: no pipelines")
        return
    gc.disable()  # a one-shot load of up to millions of small objects, no cycles: see _started
    try:
        result = Local(ws).validate()
    finally:
        _started()
    for w in result["warnings"]:
        _err(w)
    click.echo(f"ok: {plural(result['pipelines'], 'pipeline')} in {plural(result['files'], 'file')}")


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# (config, workspace root) -> warnings; registered by cli/<feature>.py modules
VALIDATE_CHECKS: list[Callable[[Any, Any], list[Any]]] = []


@main.command()
@click.argument("pipeline")
@click.option("--executor", default=None, help="local (default) or dask://HOST:PORT.")
@click.option("--parallel", "-j", type=click.IntRange(min=1), default=None, help="Jobs of a stage run at once (default: CPU count).")
@click.option("--quiet", "-q", is_flag=True, help="No progress display, only the result lines.")
@click.option("--no-downstream", is_flag=True,
              help="Stop after PIPELINE's own run; do not start the pipelines that depend on it.")
@click.pass_context
def run(ctx: click.Context, pipeline: str, executor: str | None, parallel: int | None, quiet: bool,
        no_downstream: bool) -> None:
    """Trigger PIPELINE and run it here in the foreground, then the pipelines its passed stages trigger
    (as GoCD does), and theirs in turn (exit 0 all passed or waiting, 1 one failed)."""
    from ..progress import Progress

    gc.disable()  # see _started
    with Stop("workbench run") as stop:  # SIGINT, SIGTERM and SIGHUP all cancel the run (workbench.signals)
        ws = _ws(ctx)
        from ..kernels import prestart_for_run

        notebooks = prestart_for_run(ws, pipeline, executor, parallel)
        ws.config.pipeline(pipeline)  # config errors and unknown names before anything starts
        progress = Progress(quiet=quiet)
        with ws.engine(executor=executor, max_parallel=parallel, listener=progress, one_shot=True) as engine:
            if notebooks:
                from ..notebooks import runner  # noqa: F401  (now, while the kernel boots, not when the job starts)
            _started()
            stop.attach(engine)
            with progress:
                result = engine.run(pipeline)
        downstream = None
        if not no_downstream and stop.received is None:
            downstream = _downstream(ws, result, quiet, executor, parallel, stop)
        finish_run(ws, result, downstream=downstream, stop=stop)


def _downstream(ws: Any, run: Any, quiet: bool, executor: str | None, parallel: int | None,
                stop: Stop) -> list[Any]:
    """Drive what ``run``'s passed stages trigger (dependency materials), and their downstreams in turn.

    A scheduler answering those events alone (``run_until_idle(events=...)``):
    no material is polled and nothing else that happens to be due starts.
    Returns the runs it created, oldest first; none (no scheduler at all) when
    nothing depends on the stages that passed.
    """
    from ..progress import Progress
    from ..status import Status
    from ..triggering import Scheduler, dependency_index

    if run.status in (Status.SCHEDULED, Status.RUNNING):  # another process drives it
        return []
    detail = ws.store.run_detail(run)
    passed = [(run.pipeline, s.name) for s in detail.latest_stages().values() if s.status == Status.PASSED]
    if not any(key in dependency_index(ws.config) for key in passed):
        return []
    created: list[int] = []
    progress = Progress(quiet=quiet)

    def listen(event: str, **data: Any) -> None:
        if event == "run_created":
            created.append(data["run"].id)
            if not quiet:
                new = data["run"]
                ups = [str(v.get("revision")) for v in new.revisions.values()
                       if isinstance(v, dict) and v.get("kind") == "dependency"]
                click.echo(f"{new.locator} triggered by {', '.join(ups) or run.locator}")
        progress(event, **data)

    with Scheduler(ws, listener=listen, executor=executor, max_parallel=parallel) as s:
        stop.attach(s)  # a stop signal cancels the downstream runs too
        with progress:
            s.run_until_idle(events=(passed, [run.pipeline] if run.status.finished else []))
    return [ws.store.get_pipeline_run_by_id(i) for i in created]


def _started() -> None:
    """The one-shot process's modules are loaded: collect garbage again, ignoring what start-up built.

    Start-up imports build some hundred thousand long-lived objects (SQLAlchemy,
    papermill, ...), and the cyclic collector walks them again and again while
    they are created: 10-15% of a cold ``workbench run``'s CPU. So collection
    is off until the imports are done, and what they built is then frozen out of
    every later collection (``gc.freeze``). ``validate`` does the same around its
    config load: switched back on, the first collection walked every node of a
    10,000-pipeline config once more (a gen-2 pass of ~1 s, ~10% of a cold run).
    """
    gc.freeze()
    gc.enable()


def finish_run(ws: Any, run: Any, downstream: list[Any] | None = None, stop: Stop | None = None) -> None:
    """Print a run's result line and exit with its status: the one run-status → exit-code mapping.

    ``run``, ``trigger``, ``rerun`` and ``approve`` end with it, so they agree.
    0: passed; stopped to wait for an approval; or taken over by another
    process (a tick or serve now drives a stage of it: the run is still
    going, nothing failed, and the line says where to follow it). 1: failed
    or rejected. 130: cancelled. ``downstream`` (``workbench run``'s
    downstream runs) each get their line, and the worst of all decides.
    A command a stop signal N reached (``stop``) exits 128 + N whatever the
    runs' statuses (the lines say how they ended): the supervisor that sent
    the signal learns the command obeyed it.
    """
    from ..status import Status

    code = 0
    for r in [run, *(downstream or ())]:
        click.echo(_result_line(ws, r))
        if r.status in (Status.SCHEDULED, Status.RUNNING):
            click.echo(f"{r.locator} continues in another process (`workbench status`, `workbench logs -f`)")
        elif r.status == Status.CANCELLED:
            code = code or EXIT_INTERRUPTED
        elif r.status not in (Status.WAITING, Status.PASSED):
            code = EXIT_FAILED
    if stop is not None and stop.exit_code is not None:
        code = stop.exit_code
    if code:
        sys.exit(code)


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
    from ..reporting import print_status
    from . import kept as kept_answer

    # printed again from .workbench/cache while nothing it shows can differ (workbench/cli/kept.py)
    kept = None if _remote(ctx) else kept_answer.lookup(_ws(ctx, reading=True), fmt)
    if kept is not None and kept.text is not None:
        kept_answer.write_out(kept.text)
        return
    service = _service(ctx, reading=True)
    rows = service.board()
    repos = service.config_repos()
    if kept is None:
        if fmt == "json":
            click.echo(json.dumps(rows, indent=2))
        else:
            print_status(rows, repos)
        return
    if fmt == "json":
        text = json.dumps(rows, indent=2) + "\n"
    else:
        console, buf = kept_answer.capture_console(kept.console)
        print_status(rows, repos, console=console)
        text = buf.getvalue()
    kept_answer.write_out(text)
    kept_answer.keep(kept, text)


@main.command()
@click.option("--pipeline", "-p", default=None)
@click.option("--limit", "-n", type=int, default=50, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table")
@click.pass_context
def history(ctx: click.Context, pipeline: str | None, limit: int, fmt: str) -> None:
    """Past runs, newest first."""
    from ..reporting import print_table
    from . import kept as kept_answer

    # printed again from .workbench/cache while the store has not changed (workbench/cli/kept.py)
    kept = None if _remote(ctx) or limit < 1 else kept_answer.lookup(_ws(ctx, reading=True), fmt,
                                                                      ("history", pipeline, limit), config=False)
    if kept is not None and kept.text is not None:
        kept_answer.write_out(kept.text)
        return
    rows = _service(ctx, reading=True).history(pipeline, limit)
    if fmt == "table":
        repo = ["config_repo"] if any(r.get("config_repo") for r in rows) else []  # only where some run has one
        columns = ["pipeline", "counter", "label", "status", "trigger", "triggered_by", "started", "duration",
                   "stages", *repo]
        if kept is None:
            print_table(rows, columns)
            return
        console, buf = kept_answer.capture_console(kept.console)
        print_table(rows, columns, console=console)
        text = buf.getvalue()
    elif fmt == "json":
        text = json.dumps(rows, indent=2) + "\n"
    else:
        import csv
        import io

        cols = list(rows[0]) if rows else ["pipeline", "counter", "label", "status"]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in r.items()})
        text = buf.getvalue()
    kept_answer.write_out(text)
    if kept is not None:
        kept_answer.keep(kept, text)


@main.command()
@click.argument("locator")
@click.option("--follow", "-f", is_flag=True, help="Keep printing while the job runs.")
@click.pass_context
def logs(ctx: click.Context, locator: str, follow: bool) -> None:
    """Print the log of PIPELINE/COUNTER/STAGE/JOB (STAGE may carry /STAGE_COUNTER)."""
    for chunk in _service(ctx, reading=True).log(locator, follow=follow):
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()


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
                 "agents", "admin", "server", "webhooks", "importgocd", "notifications", "compare"):
        mod = f"{__name__}.{name}"
        if importlib.util.find_spec(mod) is not None:
            importlib.import_module(mod)


_load_feature_commands()


