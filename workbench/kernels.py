"""Kernels for notebook jobs, started before they are needed.

A Python kernel takes most of a second to become ready (importing IPython,
ipykernel, zmq, debugpy), which is most of what a trivial notebook job costs.
So, while one notebook job runs, the pool starts the kernel the next one will
use (GoCD agents keep warm too).  A warm kernel was launched with the
workbench's own environment in a neutral folder; before a job uses it, a
silent preamble moves it into the job's folder and environment.  Only
variables read at interpreter start (``PYTHON*``, ``LD_*``, locale) cannot be
changed that way, so a job whose values of those differ gets a cold kernel
launched with its exact environment.  Kernels that are not Python get cold
kernels always.

Kernels run in their own session (process group); :meth:`Kernel.kill`
kills the whole group, so a cell's child processes die with the kernel.
Set ``WORKBENCH_WARM_KERNELS=0`` to disable warming.

A one-shot process (``workbench run``) turns ``keep_spare`` off and tells the
pool how many notebook jobs its run has (:meth:`KernelPool.expect`): it
starts the first stage's kernels before it even loads the config
(:meth:`KernelPool.start_now`), and no kernel beyond what the run still needs
(a spare would only steal a CPU from the job that is running, then be killed
at exit).
"""
from __future__ import annotations

import asyncio
import atexit
import itertools
import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

# Read by the interpreter before any code runs: a warm kernel cannot adopt them.
_STARTUP_PREFIXES = ("PYTHON", "LD_", "DYLD_", "LC_", "MALLOC_")
_STARTUP_NAMES = ("LANG", "LANGUAGE", "VIRTUAL_ENV")

_HISTORY = "--HistoryManager.hist_file=:memory:"  # never write job code (or secrets) to ~/.ipython

# The standard IPython kernel (ipykernel's own app, protocol and shell), launched as
# ``ipykernel_launcher`` does but without importing debugpy: ipykernel imports it at start for the
# Jupyter debugger (a fifth of the kernel's start-up, ~0.2 s), and nobody attaches a debugger to a
# batch job. The kernel says ``debugger: false`` in its kernel_info; a notebook may still import
# debugpy itself. Used only in place of the stock ``python -m ipykernel_launcher`` command line;
# ``WORKBENCH_LIGHT_KERNEL=0`` launches the kernel spec's command unchanged.
_LIGHT_LAUNCHER = (
    "import sys\n"
    "if sys.path and sys.path[0] in ('', '.'):\n    del sys.path[0]\n"  # as ipykernel_launcher: cwd comes back later
    "sys.modules['debugpy'] = None\n"
    "try:\n    from ipykernel import debugger, kernelapp\n"  # the debugger module notes: no debugpy
    "finally:\n    del sys.modules['debugpy']\n"
    "kernelapp.launch_new_instance()\n"
)


def run_async(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a coroutine function in a private event loop, then close the loop.

    jupyter_core's ``run_sync`` leaves one loop per thread for the garbage
    collector (and a ResourceWarning); short-lived threads use this instead.
    """
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(fn(*args, **kwargs))
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


def close_thread_loop() -> None:
    """Close the event loop nbclient left in this thread (a new one is made if it is needed again)."""
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        return
    if loop.is_running() or loop.is_closed():
        return
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in pending:
        t.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
    asyncio.set_event_loop(None)


def startup_signature(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in env.items() if k.startswith(_STARTUP_PREFIXES) or k in _STARTUP_NAMES))


@dataclass
class Kernel:
    """One started kernel process and its manager."""

    km: Any  # jupyter_client.AsyncKernelManager
    kernel_name: str
    key: tuple[Any, ...]
    launch_cwd: str
    stderr_path: str
    started_at: float = field(default_factory=time.monotonic)
    warm: bool = False  # launched ahead of need: the job must run the preamble
    leased: bool = False

    @property
    def pid(self) -> int | None:
        proc = getattr(self.km.provisioner, "process", None) if self.km.provisioner else None
        return proc.pid if proc is not None else None

    def alive(self) -> bool:
        proc = getattr(self.km.provisioner, "process", None) if self.km.provisioner else None
        return proc is not None and proc.poll() is None

    def exit_status(self) -> int | None:
        proc = getattr(self.km.provisioner, "process", None) if self.km.provisioner else None
        return None if proc is None else proc.poll()

    def kill(self) -> None:
        """SIGKILL the kernel's whole process group and reap it; safe to call twice."""
        proc = getattr(self.km.provisioner, "process", None) if self.km.provisioner else None
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the kernel leads its own session
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.kill()
        except OSError:
            pass
        try:
            proc.wait(timeout=10)
        except Exception:  # pragma: no cover - a process that survives SIGKILL
            pass

    def dispose(self) -> None:
        """Kill and remove the connection file, sockets and stderr spool."""
        self.kill()
        try:
            os.unlink(self.stderr_path)
        except OSError:
            pass
        try:
            run_async(self.km.cleanup_resources)
        except Exception:  # best effort: the files are in our private folder anyway
            pass

    def preamble(self, cwd: str, env: Mapping[str, str]) -> str:
        """Code that moves a warm kernel into a job's folder and environment."""
        return (
            "import os as _wb_os, sys as _wb_sys, time as _wb_time\n"
            f"_wb_os.chdir({cwd!r})\n"
            "_wb_os.environ.clear()\n"
            f"_wb_os.environ.update({dict(env)!r})\n"
            f"_wb_sys.path[:] = [{cwd!r} if _p == {self.launch_cwd!r} else _p for _p in _wb_sys.path]\n"
            "if hasattr(_wb_time, 'tzset'):\n    _wb_time.tzset()\n"
            "del _wb_os, _wb_sys, _wb_time\n"
        )


class KernelPool:
    """Starts kernels (cold, or warm ahead of need) and keeps the warm ones for a while."""

    def __init__(self, *, idle_seconds: float | None = None, enabled: bool | None = None) -> None:
        self.idle_seconds = idle_seconds if idle_seconds is not None else float(os.environ.get("WORKBENCH_KERNEL_IDLE_SECONDS", "60"))
        self.enabled = enabled if enabled is not None else os.environ.get("WORKBENCH_WARM_KERNELS", "1") != "0"
        self.max_warm = max(2, os.cpu_count() or 2)
        self.keep_spare = True  # a long-lived process keeps one kernel ready for whatever comes next
        self._idle: list[Kernel] = []
        self._starting_keys: dict[tuple[Any, ...], int] = {}  # kernels being launched in the background, by kind
        self._active = 0
        self._expected = 0  # notebook jobs announced by expect() and not yet started
        self._lock = threading.Lock()
        self._landed = threading.Condition(self._lock)  # a warm kernel finished launching
        self._launch_lock = threading.Lock()  # jupyter_client's factories are not thread-safe
        self._counter = itertools.count(1)
        self._dir: str | None = None
        self._reaper: threading.Thread | None = None
        self._closed = False
        self._python_kernels: dict[str, bool] = {}

    # -- launching -------------------------------------------------------
    @property
    def folder(self) -> str:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="wb-kernels-")  # 0700: sockets and connection files
        return self._dir

    def is_python(self, kernel_name: str) -> bool:
        if kernel_name not in self._python_kernels:
            from jupyter_client.kernelspec import NoSuchKernel

            try:
                spec = spec_manager().get_kernel_spec(kernel_name)
                self._python_kernels[kernel_name] = spec.language.lower() == "python"
            except NoSuchKernel:
                self._python_kernels[kernel_name] = False
        return self._python_kernels[kernel_name]

    def launch(self, kernel_name: str, env: Mapping[str, str], cwd: str, *, warm: bool = False) -> Kernel:
        """Start a kernel process now (it becomes ready in the background)."""
        from jupyter_client import AsyncKernelManager
        from jupyter_client.kernelspec import NoSuchKernel

        n = next(self._counter)
        stderr_path = os.path.join(self.folder, f"kernel-{n}.stderr")
        km = AsyncKernelManager(kernel_name=kernel_name, transport="ipc", ip=os.path.join(self.folder, f"k{n}"),
                                kernel_spec_manager=spec_manager())
        with self._launch_lock, open(stderr_path, "wb") as err:
            try:
                _lighten(km)
                run_async(
                    km.start_kernel, extra_arguments=[_HISTORY], cwd=cwd, env=dict(env),
                    stdin=-3, stdout=-3, stderr=err,  # subprocess.DEVNULL is -3
                )
            except NoSuchKernel:
                from .tasks import TaskError

                known = ", ".join(sorted(spec_manager().find_kernel_specs())) or "none"
                raise TaskError(f"no Jupyter kernel named {kernel_name!r} (installed kernels: {known})") from None
        key = (kernel_name, startup_signature(env))
        return Kernel(km, kernel_name, key, cwd, stderr_path, warm=warm)

    # -- leasing ---------------------------------------------------------
    def acquire(self, kernel_name: str, env: Mapping[str, str], cwd: str) -> Kernel:
        """A kernel for one job: a warm one when a compatible one is idle, else a cold one."""
        key = (kernel_name, startup_signature(env))
        kernel: Kernel | None = None
        with self._lock:
            self._active += 1
            self._expected = max(0, self._expected - 1)
            end = time.monotonic() + 30
            while True:
                for k in list(self._idle):
                    if k.key == key:
                        self._idle.remove(k)
                        if k.alive():
                            kernel = k
                            break
                        threading.Thread(target=k.dispose, daemon=True).start()
                # A warm kernel of this kind is being spawned (a few hundred ms): waiting for it beats
                # spawning a second kernel that competes with it for the CPU.
                if kernel is not None or not self._starting_keys.get(key) or time.monotonic() > end:
                    break
                self._landed.wait(max(0.0, end - time.monotonic()))
        if kernel is None:
            try:
                kernel = self.launch(kernel_name, env, cwd)
            except BaseException:
                with self._lock:
                    self._active = max(0, self._active - 1)
                raise
        kernel.leased = True
        return kernel

    def release(self, kernel: Kernel) -> None:
        """The job is done with ``kernel`` (idempotent); it must have been killed."""
        with self._lock:
            if kernel.leased:
                kernel.leased = False
                self._active = max(0, self._active - 1)

    def expect(self, jobs: int) -> None:
        """``jobs`` more notebook jobs are coming (without ``keep_spare``, spares are started only for them)."""
        with self._lock:
            self._expected += max(0, jobs)

    def prewarm(self, kernel_name: str = "python3", count: int = 1) -> None:
        """Start up to ``count`` warm kernels in the background (e.g. for the next stage)."""
        for _ in range(count):
            self.replenish(kernel_name, want=count)

    def replenish(self, kernel_name: str, want: int | None = None) -> None:
        """Start a warm kernel if fewer are idle or booting than jobs are running (or ``want``)."""
        claim = self._claim(kernel_name, want)
        if claim is not None:
            threading.Thread(target=self._start_warm, args=(kernel_name, *claim), name="wb-kernel-warm",
                             daemon=True).start()

    def start_now(self, kernel_name: str = "python3", count: int = 1) -> None:
        """Launch one warm kernel in this thread, now, and up to ``count`` in all (the rest in the background).

        For ``workbench run``: called before the engine's own imports (the store's SQLAlchemy,
        papermill: most of a second of one CPU), so the kernel boots on the other CPU meanwhile
        instead of after them.
        """
        if count < 1:
            return
        claim = self._claim(kernel_name, count)
        if claim is not None:
            self._start_warm(kernel_name, *claim, preload=False)
        if count > 1:
            self.prewarm(kernel_name, count)

    def _claim(self, kernel_name: str, want: int | None) -> tuple[dict[str, str], tuple[Any, ...]] | None:
        """Count one more kernel of this kind as booting if fewer than ``want`` are idle or booting.

        ``want`` None: as many as jobs are running (at least one; without ``keep_spare``,
        no more than the jobs still expected). Returns the launch environment and kind, or None.
        """
        if not self.enabled or self._closed or not self.is_python(kernel_name):
            return None
        env = _neutral_env()
        key = (kernel_name, startup_signature(env))
        with self._lock:
            idle = sum(1 for k in self._idle if k.key == key)
            if want is None:
                want = max(1, self._active)
                if not self.keep_spare:
                    want = min(want, self._expected)
            if idle + self._starting >= min(self.max_warm, want):
                return None
            self._starting_keys[key] = self._starting_keys.get(key, 0) + 1
        return env, key

    def _start_warm(self, kernel_name: str, env: dict[str, str], key: tuple[Any, ...], *, preload: bool = True) -> None:
        kernel: Kernel | None = None
        try:
            kernel = self.launch(kernel_name, env, self.folder, warm=True)
        except Exception:
            pass
        with self._lock:
            self._starting_keys[key] -= 1
            if kernel is not None and not self._closed:
                self._idle.append(kernel)
                self._ensure_reaper()
            self._landed.notify_all()
        if kernel is not None and self._closed:
            kernel.dispose()
            return
        if kernel is not None and preload:
            # While the kernel boots, import what the job needs to talk to it (papermill, nbclient):
            # the first job of a process then finds both ready.
            try:
                from .notebooks import runner  # noqa: F401
            except Exception:  # the job that imports it reports the problem in its own log
                pass

    def _ensure_reaper(self) -> None:
        if self._reaper is None or not self._reaper.is_alive():
            self._reaper = threading.Thread(target=self._reap, name="wb-kernel-reaper", daemon=True)
            self._reaper.start()

    def _reap(self) -> None:
        while True:
            time.sleep(min(5.0, max(self.idle_seconds / 4, 0.05)))
            with self._lock:
                now = time.monotonic()
                old = [k for k in self._idle if now - k.started_at > self.idle_seconds or not k.alive()]
                for k in old:
                    self._idle.remove(k)
                left = len(self._idle)
            for k in old:
                k.dispose()
            if not left:
                return

    @property
    def _starting(self) -> int:
        """Kernels being launched in the background, of every kind."""
        return sum(self._starting_keys.values())

    def idle_pids(self) -> list[int]:
        with self._lock:
            return [k.pid for k in self._idle if k.pid is not None]

    def shutdown(self) -> None:
        """Kill every idle kernel (at exit, or from tests), after those still booting have landed."""
        end = time.monotonic() + 10
        while self._starting and time.monotonic() < end:
            time.sleep(0.02)
        with self._lock:
            idle, self._idle = self._idle, []
        for k in idle:
            k.dispose()

    def close(self) -> None:
        self._closed = True
        self.shutdown()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


_SPEC_MANAGER: Any = None


def spec_manager() -> Any:
    """One KernelSpecManager, looking where jupyter_client's default one looks, without importing IPython.

    The default adds ``$IPYTHONDIR/kernels`` through ``IPython.paths``, which imports all of
    IPython (0.1 s) in the engine or agent process that never runs IPython itself.
    """
    global _SPEC_MANAGER
    if _SPEC_MANAGER is None:
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_core.paths import jupyter_path

        ipython_dir = os.environ.get("IPYTHONDIR") or os.path.join(os.path.expanduser("~"), ".ipython")
        _SPEC_MANAGER = KernelSpecManager(kernel_dirs=[*jupyter_path("kernels"), os.path.join(ipython_dir, "kernels")])
    return _SPEC_MANAGER


def _lighten(km: Any) -> None:
    """Launch the stock IPython kernel spec through :data:`_LIGHT_LAUNCHER` (same kernel, fewer imports)."""
    if os.environ.get("WORKBENCH_LIGHT_KERNEL", "1") == "0":
        return
    spec = km.kernel_spec  # raises NoSuchKernel for an unknown name
    argv = list(spec.argv)
    if len(argv) >= 3 and argv[1:3] == ["-m", "ipykernel_launcher"]:
        from jupyter_client.kernelspec import KernelSpec

        km._kernel_spec = KernelSpec(**{**spec.to_dict(), "argv": [argv[0], "-c", _LIGHT_LAUNCHER, *argv[3:]],
                                        "resource_dir": spec.resource_dir})


def _neutral_env() -> dict[str, str]:
    """The environment warm kernels start with: ours, without any job's identity."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("GO_", "WORKBENCH_JOB", "WORKBENCH_STAGE", "WORKBENCH_RUN"))}


def notebook_jobs(stage: Any) -> int:
    """How many of a stage's jobs run a notebook (each needs a kernel)."""
    return sum(1 for j in stage.jobs if any(t.kind == "notebook" for t in j.tasks))


def kernel_of(stage: Any) -> str:
    """The kernel the stage's first notebook task names (python3 when it names none)."""
    for j in stage.jobs:
        for t in j.tasks:
            if t.kind == "notebook" and getattr(t, "kernel", None):
                return str(t.kernel)
    return "python3"


POOL = KernelPool()


def prestart_for_run(ws: Any, pipeline: str, executor: str | None = None, parallel: int | None = None) -> bool:
    """A one-shot ``workbench run``: start the first stage's kernels now, from a quick look at the pipeline file.

    Loading the config loads every feature module (SQLAlchemy, the engine,
    papermill): most of a second, during which the kernel boots on the other CPU.
    Only when the jobs will run here (the executor the engine will make, from
    ``--executor`` or workbench.yaml, is the local one), as many as its slots.
    False when the look finds no notebook job. It lives with the pool, not in
    the CLI, so the CLI stays a thin adapter: a long-lived process (``workbench
    server``) keeps its own warm kernels through the same pool instead.
    """
    from .config.peek import first_stage_notebooks
    from .errors import WorkbenchError

    try:
        spec, options = ws.settings.resolve_executor(executor, parallel)
    except WorkbenchError:  # a broken workbench.yaml: the engine reports it in its turn
        return False
    if (spec or "local").partition("://")[0] != "local":
        return False
    hint = first_stage_notebooks(ws.root, pipeline)
    if hint is None:
        return False
    from .executors.local import local_slots

    POOL.keep_spare = False  # a one-shot process: no kernel beyond what the run needs
    count, kernel = hint
    POOL.start_now(kernel, min(count, local_slots(options.get("max_parallel"))))
    return True
atexit.register(POOL.close)
