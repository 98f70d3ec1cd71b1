"""What a run was configured with, flattened to ``path -> value`` so two runs can be diffed line by line.

Recorded when a run is created (``run_configs``, one row per run, written in the
run's own transaction), because the pipeline files change after a run and a
comparison must show the config each run *had*. Secure variables are recorded by
name only, with a digest of their ciphertext: the comparison can say that one
changed, never what it is.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

import sqlalchemy as sa

from ..store import schema as S

run_configs = sa.Table(
    "run_configs", S.metadata,
    sa.Column("pipeline_run_id", sa.Integer, sa.ForeignKey("pipeline_runs.id"), primary_key=True),
    sa.Column("config", sa.JSON, nullable=False),  # path -> value (str), see pipeline_snapshot
    sa.Column("digest", sa.String(64), nullable=False),
)
S.register_migration("compare-1", S.tables_created_by(run_configs))

SECRET = "(secure value {})"


def _secure(value: str) -> str:
    return SECRET.format(hashlib.sha256(value.encode()).hexdigest()[:8])


def _vars(out: dict[str, str], prefix: str, plain: Mapping[str, str], secure: Mapping[str, str]) -> None:
    for k, v in (plain or {}).items():
        out[f"{prefix}env.{k}"] = str(v)
    for k, v in (secure or {}).items():
        out[f"{prefix}env.{k}"] = _secure(str(v))


def _task(t: Any) -> str:
    kind = getattr(t, "kind", "?")
    if kind == "exec":
        text = " ".join([t.command, *t.arguments])
    elif kind == "script":
        text = t.script.strip()
    elif kind == "notebook":
        text = f"{t.path} {json.dumps(dict(t.parameters), sort_keys=True, default=str)}"
    elif kind == "fetch":
        text = f"{t.pipeline or ''}/{t.stage}/{t.job} {t.source} -> {t.destination}"
    else:
        text = json.dumps(dict(getattr(t, "options", {}) or {}), sort_keys=True, default=str)
    run_if = getattr(t, "run_if", "passed")
    return f"{kind}: {text}" + ("" if run_if == "passed" else f" (run_if {run_if})")


def pipeline_snapshot(cfg: Any, env: Any = None) -> dict[str, str]:
    """The pipeline's config as flat, comparable, non-secret ``path -> value`` pairs."""
    out: dict[str, str] = {"label_template": cfg.label_template, "lock_behavior": cfg.lock_behavior}
    for k, v in (cfg.parameters or {}).items():
        out[f"param.{k}"] = str(v)
    if env is not None:
        out["environment"] = env.name
        _vars(out, f"environment[{env.name}].", env.environment_variables, env.secure_variables)
    _vars(out, "", cfg.environment_variables, cfg.secure_variables)
    for m in cfg.materials:
        if m.kind == "git":
            out[f"material.{m.name}"] = f"git {m.url} branch {m.branch}"
        elif m.kind == "dependency":
            out[f"material.{m.name}"] = f"pipeline {m.pipeline} stage {m.stage}"
    for s in cfg.stages:
        sp = f"stage.{s.name}."
        approval = s.approval.type
        who = [*s.approval.users, *(f"role:{r}" for r in s.approval.roles)]
        out[sp + "approval"] = approval + (f" ({', '.join(who)})" if who else "")
        if s.traffic is not None:
            out[sp + "traffic"] = f"{s.traffic.route} -> {s.traffic.weight}%"
        _vars(out, sp, s.environment_variables, s.secure_variables)
        for j in s.jobs:
            jp = f"{sp}job.{j.name}."
            for i, t in enumerate(j.tasks, 1):
                out[f"{jp}task{i}"] = _task(t)
            if j.timeout is not None:
                out[jp + "timeout"] = f"{j.timeout:g}s"
            if j.resources:
                out[jp + "resources"] = ", ".join(j.resources)
            if j.run_instances is not None:
                out[jp + "run_instances"] = str(j.run_instances)
            for a in j.artifacts:
                out[f"{jp}artifact.{a.source}"] = f"{a.type} -> {a.destination or '.'}"
            _vars(out, jp, j.environment_variables, j.secure_variables)
    return out


def digest(snapshot: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(snapshot.items())).encode()).hexdigest()


def recorder(cfg: Any, env: Any) -> Any:
    """The run-record writer the engine calls inside the run's transaction (see ``hooks.RUN_RECORDERS``)."""
    snap = pipeline_snapshot(cfg, env)
    d = digest(snap)

    def write(conn: sa.Connection, run_id: int) -> None:
        conn.execute(run_configs.insert(), {"pipeline_run_id": run_id, "config": snap, "digest": d})

    return write
