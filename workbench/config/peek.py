"""A cheap first look at one pipeline's first stage, taken before the feature modules load.

``workbench run`` uses it to start a notebook job's kernel at once. Loading
the config properly registers every feature first (task kinds, sections), and
the features bring SQLAlchemy, the engine and papermill: most of a second of
one CPU, after which a kernel started only then still needs half a second to
boot. Started from this look, the kernel boots on the other CPU meanwhile.

It is a hint, never a decision: anything it does not expect (a template, a
parse error, a pipeline it cannot find) gives ``None``, and the run warms its
kernels the usual way once the config is loaded. A kernel started for a
wrong hint is only idle, and is killed at exit.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

try:  # libyaml's parser: the look must cost milliseconds
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - PyYAML without libyaml
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

from . import pipeline_files


def first_stage_notebooks(workspace_dir: Path, pipeline: str) -> tuple[int, str] | None:
    """How many jobs of ``pipeline``'s first stage run a notebook, and the first one's kernel."""
    for path in pipeline_files(workspace_dir):
        if path.suffix == ".json":  # GoCD JSON plugin files: the real loader reads them; the look is for YAML
            continue
        try:
            doc = yaml.load(path.read_bytes(), Loader=_Loader)  # noqa: S506  (a safe loader)
        except Exception:  # noqa: BLE001  (the real loader reports it with its line and column)
            return None
        pipelines = doc.get("pipelines") if isinstance(doc, dict) else None
        if isinstance(pipelines, dict) and pipeline in pipelines:
            return _count(pipelines[pipeline])
    return None


def _count(spec: Any) -> tuple[int, str] | None:
    stages = spec.get("stages") if isinstance(spec, dict) else None
    if not isinstance(stages, list) or not stages or not isinstance(stages[0], dict) or len(stages[0]) != 1:
        return None
    body = next(iter(stages[0].values()))
    jobs = body.get("jobs") if isinstance(body, dict) else None
    if not isinstance(jobs, dict):
        return None
    count, kernel = 0, None
    for job in jobs.values():
        tasks = job.get("tasks") if isinstance(job, dict) else None
        notebooks = [t["notebook"] for t in tasks or () if isinstance(t, dict) and "notebook" in t] \
            if isinstance(tasks, list) else []
        if notebooks:
            count += 1
            if kernel is None:
                first = notebooks[0]
                kernel = str(first.get("kernel") or "python3") if isinstance(first, dict) else "python3"
    return (count, kernel or "python3") if count else None
