"""Helpers shared by the materials and triggering tests: pipelines as YAML text, logs, runs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping


def git_material(url: str, **options: Any) -> dict[str, Any]:
    return {"git": url, **options}


def pipeline(name: str, materials: Mapping[str, Mapping[str, Any]], script: str = "echo ok", *,
             stages: list[Any] | None = None, **options: Any) -> dict[str, Any]:
    """One pipeline mapping: a single stage ``build`` with job ``job`` running ``script`` unless ``stages``."""
    body: dict[str, Any] = {"materials": dict(materials), **options}
    body["stages"] = stages or [{"build": {"jobs": {"job": {"tasks": [{"script": script}]}}}}]
    return {name: body}


def config_yaml(*pipelines: Mapping[str, Any]) -> str:
    merged: dict[str, Any] = {}
    for p in pipelines:
        merged.update(p)
    # JSON is YAML: no quoting surprises in scripts
    return json.dumps({"format_version": 10, "pipelines": merged}, indent=2)


def write(workspace: Any, *pipelines: Mapping[str, Any]) -> Any:
    workspace.write("p.gocd.yaml", config_yaml(*pipelines))
    return workspace.open()


def runs(ws: Any, pipeline: str) -> list[Any]:
    return list(reversed(ws.store.pipeline_runs(pipeline)))


def job_log(ws: Any, run: Any, stage: str = "build", job: str = "job") -> str:
    detail = ws.store.run_detail(run.id)
    for s in detail.stages:
        if s.name == stage:
            for j in detail.jobs.get(s.id, ()):
                if j.name == job and j.log_path:
                    return Path(j.log_path).read_text()
    raise AssertionError(f"no log for {run.locator}/{stage}/{job}")
