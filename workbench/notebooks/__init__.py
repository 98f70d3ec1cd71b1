"""Notebook jobs: ``- notebook: {path: ..., parameters: {...}, kernel: python3, timeout: 600}``.

The feature registers, at import time (``workbench.features`` imports it):

* the ``notebook`` task runner: papermill executes the notebook in a kernel
  (see :mod:`.runner`), the executed notebook is the job's record and an
  artifact of the job (``notebooks/NAME.ipynb`` in its artifact folder), and
  a ``notebook_runs`` row says where it is and which cell failed with what;
* the ``values`` and ``notebook_runs`` frames (:mod:`.tables`);
* a run hook that starts kernels for the first stage's notebook jobs as
  soon as the engine knows the run (they boot while the engine checks the
  variables and materials, opens the run and imports papermill), and a stage
  hook that warms kernels for the next stage's notebook jobs;
* a config check for ``workbench validate``: a notebook without a
  ``parameters`` cell, or parameters the notebook does not declare.

papermill, nbclient and the kernels are imported only when a notebook runs,
so the CLI and the kernels themselves stay quick to start.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..errors import Problem
from ..hooks import register_run_hook, register_stage_hook
from ..tasks import JobContext, TaskError, register_task_runner
from ..tasks.process import ProcessResult
from . import tables  # noqa: F401  (tables, migration and frames)

__all__ = ["run_notebook_task", "notebook_problems", "warm_kernels", "executed_notebook_path"]


def _resolve_source(path: str, ctx: JobContext) -> tuple[Path, str]:
    """The notebook file: relative to the workspace root, else to the job's folder (a material checkout)."""
    from ..artifacts.store import inside, safe_relative
    from ..errors import ArtifactError

    try:
        rel = safe_relative(path, "notebook path")
    except ArtifactError as exc:
        raise TaskError(str(exc)) from None
    for base in (Path(ctx.spec.workspace), Path(ctx.spec.workdir)):
        candidate = base / rel
        if candidate.is_file():
            try:
                return inside(base, candidate, "notebook path", path), rel
            except ArtifactError as exc:
                raise TaskError(str(exc)) from None
    raise TaskError(f"notebook {path} not found in the workspace ({ctx.spec.workspace}) nor in the job's folder")


def executed_notebook_path(ctx: JobContext, rel: str) -> tuple[Path, str, str]:
    """Where the executed notebook is written while it runs: (local file, artifact path, final location).

    With a local artifact store it is written straight into the job's
    artifact folder; otherwise next to the job's log, and the artifacts
    feature uploads it when the job finishes.
    """
    from ..artifacts import job_store_for

    store, prefix = job_store_for(ctx.spec)
    name = Path(rel).stem
    taken = {Path(n["artifact"]).name for n in ctx.details.get("notebooks", ())}
    fname, i = f"{name}.ipynb", 1
    while fname in taken:
        i += 1
        fname = f"{name}-{i}.ipynb"
    artifact_rel = f"notebooks/{fname}"
    local = store.local_path(f"{prefix}/{artifact_rel}")
    if local is None:
        local = Path(ctx.spec.log_path).with_suffix("") / artifact_rel
    local.parent.mkdir(parents=True, exist_ok=True)
    return local, artifact_rel, store.url_of(f"{prefix}/{artifact_rel}")


def run_notebook_task(task: Any, ctx: JobContext) -> ProcessResult:
    from ..record import job_store
    from ..kernels import POOL

    source, rel = _resolve_source(task.path, ctx)
    env = dict(ctx.spec.env)
    if ctx.spec.context.get("store_url"):
        env.setdefault("WORKBENCH_STORE_URL", str(ctx.spec.context["store_url"]))
    cwd = ctx.cwd(None)
    kernel_name = task.kernel or _kernel_name_of(source) or "python3"
    kernel = POOL.acquire(kernel_name, env, cwd)  # boots while papermill is imported below
    facts: dict[str, Any] = {"status": "failed", "kernel": kernel_name}
    row_id = store = None
    try:
        local, artifact_rel, final = executed_notebook_path(ctx, rel)
        ctx.details.setdefault("notebooks", []).append({"local": str(local), "artifact": artifact_rel, "notebook": rel})
        store_url = ctx.spec.context.get("store_url")
        store = job_store(store_url) if store_url else None
        if store is not None:
            with store.write() as conn:
                row_id = conn.execute(tables.notebook_runs.insert().values(
                    job_run_id=ctx.spec.job_run_id, notebook=rel, executed_path=final, status="running",
                    kernel=kernel_name, started_at=time.time(),
                )).inserted_primary_key[0]
        from .runner import run

        result, facts = run(task, ctx, source, rel, local, kernel, env, cwd)
    except BaseException as exc:
        kernel.dispose()  # run() disposes it too; this covers failures before it started
        POOL.release(kernel)
        facts.update(ename=type(exc).__name__, evalue=str(exc))
        raise
    finally:
        if store is not None and row_id is not None:
            values = {k: facts.get(k) for k in ("status", "kernel", "cell_index", "execution_count", "ename", "evalue")}
            values["parameters"] = _jsonable(facts.get("parameters"))
            with store.write() as conn:
                conn.execute(tables.notebook_runs.update().where(tables.notebook_runs.c.id == row_id)
                             .values(finished_at=time.time(), **values))
    ctx.details["notebooks"][-1].update({k: facts.get(k) for k in ("status", "cell_index", "ename", "evalue")},
                                        executed=final)
    return result


def _kernel_name_of(source: Path) -> str | None:
    """The kernelspec name in the notebook's metadata, read without nbformat (it is not imported yet)."""
    import json

    try:
        meta = json.loads(source.read_text(encoding="utf-8")).get("metadata", {})
    except (OSError, ValueError, AttributeError):
        return None
    name = (meta.get("kernelspec") or {}).get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) and name else None


def _jsonable(value: Any) -> Any:
    import json

    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return json.loads(json.dumps(value, default=str))


def warm_kernels(count: int = 1, kernel_name: str = "python3") -> None:
    """Start ``count`` kernels in the background for notebook jobs about to run."""
    from ..kernels import POOL

    POOL.prewarm(kernel_name, count)


def _warm_for(engine: Any, stage: Any) -> None:
    """Kernels for ``stage``'s notebook jobs, as many as the executor runs at once."""
    from ..kernels import kernel_of, notebook_jobs

    n = notebook_jobs(stage)
    if n:
        warm_kernels(min(n, int(getattr(engine.executor, "max_parallel", 2) or 2)), kernel_of(stage))


class _WarmFirstStage:
    """Before a run is triggered here, start kernels for its first stage's notebook jobs.

    Only with an executor that runs jobs in this process (a Dask worker warms
    its own). A one-shot engine (``workbench run``) also tells the pool how
    many notebook jobs the run has, so that it starts no spare kernel beyond
    them.
    """

    def run_starting(self, engine: Any, cfg: Any) -> None:
        if not getattr(engine.executor, "runs_jobs_here", False) or not cfg.stages:
            return
        from ..kernels import POOL, notebook_jobs

        if getattr(engine, "one_shot", False):
            POOL.keep_spare = False
            POOL.expect(sum(notebook_jobs(s) for s in cfg.stages))
        else:  # a long-lived engine here (dashboard, serve, tests): whatever a one-shot run in this process set before
            POOL.keep_spare = True
        _warm_for(engine, cfg.stages[0])


class _WarmNextStage:
    """When a stage passes, warm kernels for the notebook jobs of the next one."""

    def stage_finished(self, engine: Any, run: Any, stage_cfg: Any, stage_run: Any) -> Any:
        from ..status import Status

        if stage_run.status != Status.PASSED or not getattr(engine.executor, "runs_jobs_here", False):
            return None
        try:
            stages = engine.ws.config.pipeline(run.pipeline).stages
        except Exception:
            return None
        names = [s.name for s in stages]
        if stage_cfg.name not in names or names.index(stage_cfg.name) + 1 >= len(stages):
            return None
        nxt = stages[names.index(stage_cfg.name) + 1]
        if nxt.approval.manual:
            return None  # a person may take hours: do not hold kernels for them
        _warm_for(engine, nxt)
        return None


# -- validate ---------------------------------------------------------------------


def notebook_problems(config: Any, root: Path) -> list[Problem]:
    """Warnings about notebook tasks: missing notebook, no parameters cell, undeclared parameters."""
    tasks = [(p, s, j, t) for p in config.pipelines.values() for s in p.stages for j in s.jobs for t in j.tasks
             if getattr(t, "kind", None) == "notebook"]
    if not tasks:
        return []
    from .runner import declared_parameters, read_notebook

    out: list[Problem] = []
    for pipeline, stage, job, task in tasks:
        loc = task.loc
        where = f"{pipeline.name}/{stage.name}/{job.name}"
        path = Path(root) / task.path
        if not path.is_file():
            out.append(Problem(loc.file, loc.line, loc.col, f"notebook {task.path} of {where} is not in the workspace "
                               "(fine if a material checks it out into the job's folder)", "warning"))
            continue
        try:
            nb = read_notebook(path)
        except Exception as exc:
            out.append(Problem(loc.file, loc.line, loc.col, f"notebook {task.path} cannot be read: {exc}", "warning"))
            continue
        declared = declared_parameters(nb, task.kernel)
        if declared is None:
            out.append(Problem(loc.file, loc.line, loc.col, f"notebook {task.path} has no cell tagged 'parameters'; "
                               "papermill will inject the parameters in a cell at the top", "warning"))
            continue
        for name in sorted(set(task.parameters) - declared):
            out.append(Problem(loc.file, loc.line, loc.col, f"parameter {name!r} of {where} is not declared in the "
                               f"parameters cell of {task.path} (declared: {', '.join(sorted(declared)) or 'none'})",
                               "warning"))
    return out


register_task_runner("notebook", run_notebook_task)
register_stage_hook(_WarmNextStage())
register_run_hook(_WarmFirstStage())
