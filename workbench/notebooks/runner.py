"""Run one notebook task with papermill, inside the job's thread.

papermill does what it is good at — reading the notebook, injecting the
parameters cell, executing cell by cell through nbclient, marking the failing
cell — and a small papermill engine (``workbench``) adds what a CI job needs:

* the executed notebook is saved (atomically) at every cell start and end,
  with every secret value of the job masked first, so the half-run notebook
  can be opened while the job runs and stays after a crash;
* the cells' output goes to the job's log, masked, as it arrives;
* the kernel comes from :mod:`.kernels` (warm when possible) and is killed,
  with its whole process group, however the notebook ends;
* the job's timeout and cancel kill the kernel from a watchdog, which is how
  a cell stuck in C code or ``time.sleep`` is stopped.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
import signal
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any, Mapping

# Optional modules that two libraries import eagerly although a notebook job never uses them:
# jsonschema imports every format checker it finds (rfc3987_syntax builds a parser grammar at
# import time; idna, webcolors... add more) and nbformat's schema uses no format at all; papermill's
# I/O module imports pyarrow (about a second: numpy and Arrow's C++ library) for hdfs:// paths,
# which the workbench never hands it (it passes notebook objects). They are blocked only while
# those two libraries are imported, and only when nobody imported them before; anyone who imports
# them later gets them (papermill then says hdfs:// needs pyarrow, which is true of this process).
_SLOW_FORMAT_CHECKERS = ("rfc3987_syntax", "isoduration", "idna", "fqdn", "rfc3986_validator", "rfc3339_validator",
                         "webcolors", "jsonpointer", "uri_template")
_PAPERMILL_BACKENDS = ("pyarrow", "gcsfs", "github", "boto3", "azure")


def _import_without(target: str, optional: tuple[str, ...]) -> None:
    if target in sys.modules:
        return
    blocked = [m for m in optional if m not in sys.modules]
    for m in blocked:
        sys.modules[m] = None  # type: ignore[assignment]  # makes `import m` raise ImportError
    try:
        __import__(target)
    finally:
        for m in blocked:
            if sys.modules.get(m, 0) is None:
                del sys.modules[m]


class _Deferred(types.ModuleType):
    """Stands in for a module in ``sys.modules`` until one of its attributes is read, then imports it.

    For ``requests``, which papermill's I/O module imports at the top for the
    http:// notebook paths the workbench never passes it: urllib3 compiles its
    URL regular expressions at import, 0.1 s of a cold ``workbench run``'s one
    CPU. Whoever reads an attribute (``requests.get``), or imports the name
    later, gets the real module. (``importlib.util.LazyLoader`` would not do:
    on Python 3.11 the next ``import requests`` statement reads ``__spec__``,
    which loads it at once.)
    """

    _lock = threading.Lock()

    def __getattr__(self, attr: str) -> Any:
        with self._lock:
            real = self.__dict__.get("_real")
            if real is None:
                if sys.modules.get(self.__name__) is self:
                    del sys.modules[self.__name__]
                real = self.__dict__["_real"] = importlib.import_module(self.__name__)
        return getattr(real, attr)


def _defer(name: str) -> None:
    if name not in sys.modules and importlib.util.find_spec(name) is not None:
        sys.modules[name] = _Deferred(name)


_import_without("jsonschema", _SLOW_FORMAT_CHECKERS)
if "papermill.iorw" not in sys.modules:
    _defer("requests")
_import_without("papermill.iorw", _PAPERMILL_BACKENDS)

import nbformat  # noqa: E402
from nbclient.exceptions import DeadKernelError  # noqa: E402
from nbclient.util import ensure_async, run_sync  # noqa: E402
from papermill.clientwrap import PapermillNotebookClient  # noqa: E402
from papermill.engines import NBClientEngine, NotebookExecutionManager, papermill_engines  # noqa: E402
from papermill.exceptions import PapermillExecutionError  # noqa: E402
from papermill.execute import execute_notebook  # noqa: E402
from papermill.inspection import _infer_parameters  # noqa: E402
from papermill.iorw import load_notebook_node  # noqa: E402
from papermill.log import logger as _pm_logger  # noqa: E402
from papermill.utils import remove_args  # noqa: E402

from ..tasks import JobContext, TaskError  # noqa: E402
from ..tasks.process import ProcessResult  # noqa: E402
from ..kernels import POOL, Kernel, close_thread_loop  # noqa: E402
from . import schema as _schema  # noqa: E402

_schema.install()  # before the first notebook is read or written

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
MASK = "********"
# Seconds to drain a cell's output after the kernel said it finished. nbclient's 4 s failed any cell
# that printed faster than it could be processed (tens of MB) although it had passed; the job's
# timeout and cancel (the watchdog) still bound the whole run.
IOPUB_TIMEOUT = 300
# Characters of output an executed notebook keeps (all of it goes to the job log): bounds memory
OUTPUT_LIMIT = int(os.environ.get("WORKBENCH_NOTEBOOK_OUTPUT_LIMIT", str(20 * 1024 * 1024)))


def _text(value: Any) -> str:
    """nbformat text: a str as received from the kernel (``"".join`` would walk it character by character), or lines."""
    return value if isinstance(value, str) else "".join(value)


def _output_size(out: Any) -> int:
    """Characters an output holds (stream text, or its data's values: base64 images are text too)."""
    if out.get("output_type") == "stream":
        text = out.get("text", "")
        return len(text) if isinstance(text, str) else sum(len(t) for t in text)
    return sum(len(v) if isinstance(v, str) else len(str(v)) for v in (out.get("data") or {}).values())


class _QuietUnknownParameters(logging.Filter):
    """We report undeclared parameters ourselves (only the user's, not the run context we add)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("Passed unknown parameter")


_pm_logger.addFilter(_QuietUnknownParameters())
_pm_logger.addHandler(logging.NullHandler())  # papermill's info lines are not for the terminal of `workbench run`


class NotebookJob:
    """What the engine, the client and the execution manager share for one notebook run."""

    def __init__(self, ctx: JobContext, source: str, out_path: Path, kernel: Kernel, preamble: str | None) -> None:
        self.ctx = ctx
        self.source = source
        self.out_path = out_path
        self.kernel = kernel
        self.preamble = preamble
        self.secrets = sorted({s for s in ctx.spec.secrets if s}, key=len, reverse=True)
        self.cell_index: int | None = None
        self.nb: Any = None
        self.stop_reason: str | None = None  # set by the watchdog: "timeout" | "cancelled"
        self._lock = threading.Lock()

    # -- masking ----------------------------------------------------------------
    def mask(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, MASK)
        return text

    def _mask_tree(self, node: Any) -> Any:
        if isinstance(node, str):
            return self.mask(node)
        if isinstance(node, list):
            for i, v in enumerate(node):
                node[i] = self._mask_tree(v)
            return node
        if isinstance(node, dict):
            for k in list(node):
                node[k] = self._mask_tree(node[k])
            return node
        return node

    # -- saving and logging -----------------------------------------------------
    def save(self, nb: Any) -> None:
        """Mask, then write the executed notebook atomically (readers never see half a file)."""
        with self._lock:
            self.nb = nb
            if self.secrets:
                for cell in nb.cells:
                    self._mask_tree(cell)
                self._mask_tree(nb.metadata)
            data = nbformat.writes(nb)
            tmp = self.out_path.with_name(f".{self.out_path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(data, encoding="utf-8")
            os.replace(tmp, self.out_path)

    def write_log(self, text: str) -> None:
        if not text:
            return
        text = self.mask(text)
        for i in range(0, len(text), 1 << 20):  # a cell's output can be one huge message: no second full copy
            self.ctx.log.write(text[i:i + (1 << 20)].encode("utf-8", "replace"))
        if not text.endswith("\n"):
            self.ctx.log.write(b"\n")
        self.ctx.log.flush()


class _Manager(NotebookExecutionManager):
    """papermill's execution manager, saving through :meth:`NotebookJob.save`."""

    def __init__(self, nb: Any, job: NotebookJob, **kw: Any) -> None:
        self.wb_job = job
        super().__init__(nb, output_path=None, **kw)

    def save(self, **kwargs: Any) -> None:
        self.wb_job.save(self.nb)
        self.last_save_time = self.now()

    def notebook_start(self, **kwargs: Any) -> None:
        self.nb.metadata.papermill["input_path"] = self.wb_job.source
        self.nb.metadata.papermill["output_path"] = str(self.wb_job.out_path)
        super().notebook_start(**kwargs)

    def cell_start(self, cell: Any, cell_index: int | None = None, **kwargs: Any) -> None:
        self.wb_job.cell_index = cell_index
        if cell.get("cell_type") == "code" and cell.source.strip():
            first = cell.source.strip().splitlines()[0][:100]
            self.wb_job.ctx.say(f"cell {cell_index}: {first}")
        super().cell_start(cell, cell_index, **kwargs)


class _Client(PapermillNotebookClient):
    """papermill's nbclient client: output to the job log, preamble for warm kernels."""

    wb_job: NotebookJob

    async def async_start_new_kernel_client(self) -> Any:
        """nbclient's, with a quicker readiness check and the warm kernel's preamble."""
        assert self.km is not None
        try:
            self.kc = kc = self.km.client()
            await ensure_async(kc.start_channels())
            await _wait_for_ready(kc, self.startup_timeout)
        except Exception:
            await self._async_cleanup_kernel()
            raise
        kc.allow_stdin = False
        job = self.wb_job
        POOL.replenish(job.kernel.kernel_name)  # the next job's kernel boots while this one runs
        if job.preamble:
            msg_id = await ensure_async(kc.execute(job.preamble, silent=True, store_history=False, stop_on_error=True))
            reply = await self.async_wait_for_reply(msg_id)
            if reply and reply["content"].get("status") != "ok":
                c = reply["content"]
                raise TaskError(f"could not prepare the kernel: {c.get('ename')}: {job.mask(str(c.get('evalue')))}")
        return kc

    start_new_kernel_client = run_sync(async_start_new_kernel_client)  # nbclient binds the sync twin at class creation

    async def _async_cleanup_kernel(self) -> None:
        """SIGKILL the kernel's process group first: no interrupt, no 0.1 s polling for its death."""
        self.wb_job.kernel.kill()
        await super()._async_cleanup_kernel()

    _cleanup_kernel = run_sync(_async_cleanup_kernel)

    def output(self, outs: list[Any], msg: dict[str, Any], display_id: str | None, cell_index: int) -> Any:
        """nbclient's, keeping at most OUTPUT_LIMIT characters of output in the executed notebook.

        Every output still reaches the job log; only what the notebook keeps
        in memory (and saves at every cell) is bounded. A stream past the
        budget goes straight to the log without becoming a validated
        NotebookNode: that keeps the client ahead of a kernel printing
        hundreds of MB, whose unread messages would otherwise pile up here.
        """
        kept = getattr(self, "_wb_kept", 0)
        content = msg.get("content") or {}
        if msg.get("msg_type") == "stream" and kept >= OUTPUT_LIMIT and not display_id:
            self.wb_job.write_log(str(content.get("text", "")))
            self._truncated(outs, cell_index)
            return None
        out = super().output(outs, msg, display_id, cell_index)
        if out is None or out.get("output_type") == "error":
            return out
        self._wb_kept = kept + _output_size(out)
        if self._wb_kept > OUTPUT_LIMIT and outs and outs[-1] is out:
            outs.pop()
            self._truncated(outs, cell_index)
        return out

    def _truncated(self, outs: list[Any], cell_index: int) -> None:
        """One note per cell saying its output was cut here."""
        marked = getattr(self, "_wb_marked", set())
        if cell_index not in marked:
            marked.add(cell_index)
            self._wb_marked = marked
            outs.append(nbformat.v4.new_output("stream", name="stderr", text=(
                f"[workbench: output beyond {OUTPUT_LIMIT:,} characters is not kept in the executed notebook; "
                "the job log has all of it]\n")))

    def log_output_message(self, output: Any) -> None:
        job = self.wb_job
        kind = output.get("output_type")
        if kind == "stream":
            job.write_log(_text(output.text))
        elif kind in ("execute_result", "display_data") and "text/plain" in output.get("data", {}):
            job.write_log(_text(output.data["text/plain"]))
        elif kind == "error":
            job.write_log(_ANSI.sub("", "\n".join(output.get("traceback", ()))))


async def _wait_for_ready(kc: Any, timeout: float) -> None:
    """Like ``KernelClient.wait_for_ready`` without its fixed 0.2 s of listening for a quiet IOPub.

    The kernel is ready when it answers ``kernel_info`` on the shell channel
    and its ``idle`` status for that request arrives on IOPub (which proves
    the IOPub subscription is live, the reason jupyter_client listens).
    """
    from queue import Empty

    deadline = time.monotonic() + timeout
    while True:
        msg_id = kc.kernel_info()
        reply = None
        until = time.monotonic() + 1.0
        while reply is None and time.monotonic() < until:
            try:
                msg = await ensure_async(kc.shell_channel.get_msg(timeout=max(until - time.monotonic(), 0.001)))
            except Empty:
                break
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "kernel_info_reply":
                reply = msg
        if reply is not None:
            until = time.monotonic() + 0.5
            while time.monotonic() < until:
                try:
                    msg = await ensure_async(kc.iopub_channel.get_msg(timeout=max(until - time.monotonic(), 0.001)))
                except Empty:
                    break
                if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                        and msg["content"].get("execution_state") == "idle"):
                    kc._handle_kernel_info_reply(reply)
                    return
        if not await ensure_async(kc.is_alive()):
            raise RuntimeError("the kernel died before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the kernel did not become ready in {timeout:g} s")


class WorkbenchEngine(NBClientEngine):
    """The papermill engine named ``workbench``: see the module docstring."""

    @classmethod
    def execute_notebook(cls, nb: Any, kernel_name: str, output_path: Any = None, progress_bar: bool = False,
                         log_output: bool = False, autosave_cell_every: int = 5, wb_job: Any = None,
                         **kwargs: Any) -> Any:
        nb_man = _Manager(nb, wb_job, progress_bar=False, log_output=False, autosave_cell_every=autosave_cell_every)
        nb_man.notebook_start()
        try:
            cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, wb_job=wb_job, **kwargs)
        finally:
            nb_man.cleanup_pbar()
            nb_man.notebook_complete()
        return nb_man.nb

    @classmethod
    def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, log_output: bool = False, stdout_file: Any = None,
                                 stderr_file: Any = None, start_timeout: int = 60, execution_timeout: Any = None,
                                 wb_job: Any = None, **kwargs: Any) -> Any:
        kwargs = remove_args(["input_path", "timeout", "startup_timeout"], **kwargs)
        client = _Client(nb_man, timeout=execution_timeout, startup_timeout=start_timeout, kernel_name=kernel_name,
                         log=_pm_logger, log_output=log_output, iopub_timeout=IOPUB_TIMEOUT, **kwargs)
        client.wb_job = wb_job
        return client.execute(cleanup_kc=True)  # we lent the kernel manager: still stop channels and kill


papermill_engines.register("workbench", WorkbenchEngine)


# -- the task runner -------------------------------------------------------------


def read_notebook(path: Path) -> Any:
    """A notebook in papermill's shape (tags on every cell, papermill metadata)."""
    return load_notebook_node(nbformat.read(str(path), as_version=4))


def declared_parameters(nb: Any, kernel_name: str | None = None) -> set[str] | None:
    """Names in the ``parameters`` cell; None when the notebook has no such cell."""
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells):
        return None
    return {p.name for p in _infer_parameters(nb, name=kernel_name)}


def context_parameters(context: Mapping[str, Any]) -> dict[str, Any]:
    """The run context every notebook gets (declare them in the parameters cell to give defaults)."""
    return {
        "pipeline": context.get("pipeline"),
        "counter": context.get("counter"),
        "label": context.get("label"),
        "stage": context.get("stage"),
        "stage_counter": context.get("stage_counter"),
        "job": context.get("job"),
        "revisions": dict(context.get("revisions") or {}),
        "environment": context.get("environment"),
    }


def run(task: Any, ctx: JobContext, source: Path, source_label: str, out_path: Path, kernel: Kernel,
        env: Mapping[str, str], cwd: str) -> tuple[ProcessResult, dict[str, Any]]:
    """Execute ``source`` into ``out_path`` on ``kernel``; the result and the facts for the notebook_runs row.

    The kernel was started by the caller before papermill was imported, so
    that it boots while we import.  It is always killed before we return.
    """
    done = threading.Event()
    try:
        try:
            nb = read_notebook(source)
        except Exception as exc:  # not JSON, not a notebook
            raise TaskError(f"{source_label} is not a readable notebook: {exc}") from None
        params = _parameters(task, ctx, nb, kernel.kernel_name, source_label)
        facts: dict[str, Any] = {"kernel": kernel.kernel_name, "parameters": params}
        job = NotebookJob(ctx, source_label, out_path, kernel, kernel.preamble(cwd, env) if kernel.warm else None)
        ctx.say(f"notebook {source_label} on kernel {kernel.kernel_name} ({'warm' if kernel.warm else 'new'}, "
                f"pid {kernel.pid}); executed notebook: {out_path}")
        if ctx.on_process is not None and kernel.pid:  # the kernel leads its own group: recovery may stop it
            ctx.on_process(kernel.pid)
        threading.Thread(target=_watch, args=(job, ctx, _deadline(task, ctx), done), name="wb-nb-watchdog",
                         daemon=True).start()
        try:
            execute_notebook(
                nb, None, parameters=params, engine_name="workbench", kernel_name=kernel.kernel_name,
                progress_bar=False, log_output=True, km=kernel.km, wb_job=job, shutdown_kernel="immediate",
                start_timeout=60,
            )
            result = ProcessResult(0)
            facts["status"] = "passed"
        except PapermillExecutionError as exc:
            if job.nb is not None:
                job.save(job.nb)  # with papermill's red marker cells
            evalue = job.mask(str(exc.evalue))
            facts.update(status="failed", cell_index=exc.cell_index, execution_count=exc.exec_count,
                         ename=exc.ename, evalue=evalue)
            result = ProcessResult(None, error=f"notebook {source_label} failed in cell {exc.cell_index} "
                                               f"(In [{exc.exec_count}]): {exc.ename}: {evalue}")
        except Exception as exc:  # a dead kernel, a timeout, no kernel at all: the job fails with words
            result, more = _stopped(job, exc, task, ctx, source_label)
            facts.update(more)
    finally:
        done.set()
        kernel.dispose()
        POOL.release(kernel)
        close_thread_loop()
    ctx.say(f"executed notebook saved: {out_path}")
    return result, facts


def _parameters(task: Any, ctx: JobContext, nb: Any, kernel_name: str, label: str) -> dict[str, Any]:
    """Run context, then the task's parameters (which win); undeclared ones are said in the log."""
    user = {str(k): v for k, v in dict(task.parameters or {}).items()}
    declared = declared_parameters(nb, kernel_name)
    if declared is None:
        ctx.say(f"{label} has no cell tagged 'parameters': parameters go in a cell at the top")
    else:
        unknown = sorted(set(user) - declared)
        if unknown:
            ctx.say(f"parameters not declared in {label}'s parameters cell: {', '.join(unknown)}")
    return {**context_parameters(ctx.spec.context), **user}


def _deadline(task: Any, ctx: JobContext) -> tuple[float | None, str | None]:
    """The earlier of the task's own timeout and the job's deadline, and which one it is."""
    own = time.monotonic() + float(task.timeout) if task.timeout else None
    job = ctx.deadline
    if own is not None and (job is None or own <= job):
        return own, "task"
    return job, ("job" if job is not None else None)


def _watch(job: NotebookJob, ctx: JobContext, deadline: tuple[float | None, str | None], done: threading.Event) -> None:
    when, which = deadline
    while not done.is_set():
        step = 0.25
        if when is not None:
            step = min(step, when - time.monotonic())
            if step <= 0:
                job.stop_reason = f"timeout-{which}"
                job.kernel.kill()
                return
        if ctx.cancel.is_set():
            job.stop_reason = "cancelled"
            job.kernel.kill()
            return
        done.wait(step)


def _stopped(job: NotebookJob, exc: BaseException, task: Any, ctx: JobContext, label: str) -> tuple[ProcessResult, dict[str, Any]]:
    """A notebook that did not finish: timeout, cancel, a dead kernel, or no kernel at all."""
    cell = job.cell_index
    count = None
    if job.nb is not None and cell is not None and cell < len(job.nb.cells):
        count = job.nb.cells[cell].get("execution_count")
    where = f" while cell {cell} was running" if cell is not None else ""
    facts: dict[str, Any] = {"cell_index": cell, "execution_count": count}
    reason = job.stop_reason
    if reason == "cancelled":
        facts.update(status="cancelled", ename="Cancelled")
        return ProcessResult(None, cancelled=True), facts
    if reason == "timeout-job":
        facts.update(status="timed_out", ename="Timeout", evalue=f"the job's timeout expired{where}")
        return ProcessResult(None, timed_out=True), facts
    if reason == "timeout-task":
        msg = f"notebook {label} timed out after {float(task.timeout):g}s{where}; its kernel was killed"
        facts.update(status="timed_out", ename="Timeout", evalue=msg)
        return ProcessResult(None, error=msg), facts
    if isinstance(exc, DeadKernelError):
        status = job.kernel.exit_status()
        how = f"killed by {signal.Signals(-status).name}" if status is not None and status < 0 else (
            f"exit status {status}" if status is not None else "no longer responding")
        msg = f"the kernel of {label} died{where} ({how})"
        facts.update(status="failed", ename="DeadKernelError", evalue=msg)
        return ProcessResult(None, error=msg), facts
    if isinstance(exc, TaskError):
        msg = str(exc)
    else:
        msg = f"notebook {label} could not run: {job.mask(str(exc)).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
    tail = _stderr_tail(job)
    if tail:
        ctx.say("kernel stderr:\n" + tail)
    facts.update(status="failed", ename=type(exc).__name__, evalue=msg)
    return ProcessResult(None, error=msg), facts


def _stderr_tail(job: NotebookJob, limit: int = 4000) -> str:
    try:
        data = Path(job.kernel.stderr_path).read_bytes()[-limit:]
    except OSError:
        return ""
    return job.mask(data.decode("utf-8", "replace")).strip()
