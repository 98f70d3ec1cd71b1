"""Manual approvals, rejections and the one authorization path.

Everything a person decides about a run (approve, reject, roll back, move
traffic by hand) goes through :func:`authorize`, whether it comes from the CLI,
a dashboard or a notebook, and every decision, refusal included, lands in the
``audit`` table (frames ``audit`` and ``approvals``). Who may approve a stage
is its ``approval.users`` plus the members of its ``approval.roles`` (the
top-level ``roles:`` section); a manual approval naming nobody is open to
anyone who can use the workspace, as in GoCD without group permissions.

State changes are compare-and-set in the store (WAITING → SCHEDULED or
REJECTED), so two people approving the same stage at the same moment produce
exactly one approval; the other gets a clear "already approved" error. A
decision's state change and its ``ok`` audit row are one transaction
(:func:`record_in`), so neither survives a crash or a failed write without the other.
See docs/approvals.md for the trust model.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import sqlalchemy as sa

from .config.model import Approval, Config, Pipeline, Stage
from .errors import InvalidState, NotFound, Unauthorized, UsageError
from .identity import Identity, as_identity
from .status import Status
from .store import schema as S
from .store.frames import register_frame

if TYPE_CHECKING:
    import pandas as pd

    from .store import PipelineRun, StageRun
    from .store.frames import Frames
    from .workspace import Workspace

audit = sa.Table(
    "audit",
    S.metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("user", sa.String(255), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),  # approve | reject | rollback | traffic
    sa.Column("target", sa.String(512), nullable=False),  # P/C/S, P/C or route:R
    sa.Column("pipeline", sa.String(255)),
    sa.Column("counter", sa.Integer),
    sa.Column("stage", sa.String(255)),
    sa.Column("comment", sa.Text),
    sa.Column("outcome", sa.String(16), nullable=False),  # ok | unauthorized | refused
    sa.Column("detail", sa.Text),
)
sa.Index("ix_audit_target", audit.c.target)
S.register_migration("approvals-1", S.tables_created_by(audit))

ACTIONS = ("approve", "reject", "rollback", "traffic", "trigger", "rerun", "cancel", "unlock", "pause", "unpause", "incident", "mark",
           "token", "webhook", "notification")


# -- who may act (pure) ---------------------------------------------------------


@dataclass(frozen=True)
class Approvers:
    """The people allowed by a set of approvals: named users, roles and their members."""

    users: frozenset[str]
    roles: tuple[str, ...]
    members: frozenset[str]  # users ∪ members of roles
    anyone: bool  # no approval names anybody

    def allows(self, user: str, groups: Iterable[str] = ()) -> bool:
        """``user`` is named (directly or through a role), or is in a hub group a role lists as ``group:NAME``."""
        return self.anyone or user in self.members or any(f"group:{g}" in self.members for g in groups)

    def describe(self, cfg: Config | None = None) -> str:
        if self.anyone:
            return "anyone"
        parts = sorted(self.users)
        for r in self.roles:
            who = ", ".join((cfg.roles.get(r) or ()) if cfg else ()) if cfg else ""
            parts.append(f"role {r}" + (f" ({who})" if who else " (no members)" if cfg else ""))
        return ", ".join(parts)


def approvers(cfg: Config, subject: Stage | Approval | Pipeline | Iterable[Approval]) -> Approvers:
    """Who may act on ``subject``.

    A stage or approval: its users and roles. A pipeline (rollback, traffic):
    the people of all its manual approvals. Nobody named anywhere → anyone.
    """
    if isinstance(subject, Stage):
        approvals: Sequence[Approval] = [subject.approval]
    elif isinstance(subject, Approval):
        approvals = [subject]
    elif isinstance(subject, Pipeline):
        approvals = [s.approval for s in subject.stages if s.approval.manual]
    else:
        approvals = list(subject)
    users = frozenset(u for a in approvals for u in a.users)
    roles = tuple(dict.fromkeys(r for a in approvals for r in a.roles))
    members = set(users)
    for r in roles:
        members.update(cfg.roles.get(r, ()))
    return Approvers(users, roles, frozenset(members), anyone=not users and not roles)


def may(cfg: Config, subject: Any, user: "str | Identity") -> bool:
    who = as_identity(user)
    return approvers(cfg, subject).allows(who.user, who.groups)


# -- audit ------------------------------------------------------------------------


def record(ws: "Workspace", user: str, action: str, target: str, outcome: str, *, comment: str | None = None,
           detail: str | None = None, pipeline: str | None = None, counter: int | None = None,
           stage: str | None = None) -> None:
    """One audit row, in its own transaction: for attempts that change nothing (refused, unauthorized).

    A decision that changes state writes its row with :func:`record_in`, inside
    the transaction that changes the state, so neither can exist without the other.
    """
    with ws.store.write() as conn:
        record_in(conn, user, action, target, outcome, comment=comment, detail=detail, pipeline=pipeline,
                  counter=counter, stage=stage)


def record_in(conn: sa.Connection, user: str, action: str, target: str, outcome: str, *,
              comment: str | None = None, detail: str | None = None, pipeline: str | None = None,
              counter: int | None = None, stage: str | None = None) -> None:
    """One audit row inside the caller's write transaction (``Store.write()``)."""
    conn.execute(audit.insert().values(
        at=time.time(), user=user, action=action, target=target, pipeline=pipeline, counter=counter,
        stage=stage, comment=comment, outcome=outcome, detail=detail,
    ))


def _target_parts(target: str) -> dict[str, Any]:
    parts = target.split("/")
    if len(parts) >= 2 and parts[1].isdigit():
        return {"pipeline": parts[0], "counter": int(parts[1]), "stage": parts[2] if len(parts) > 2 else None}
    return {}


def authorize(ws: "Workspace", subject: Any, user: "str | Identity | None", action: str, *, target: str,
              comment: str | None = None) -> str:
    """The one check: returns the acting user, or audits the attempt and raises Unauthorized.

    ``user`` is a name (asserted: the local CLI) or an :class:`Identity` the
    release service proved; a ``read``-scoped token never decides anything.
    """
    identity = require_act(ws, user, action, target=target, comment=comment)
    user = identity.user
    cfg = ws.config
    who = approvers(cfg, subject)
    if who.allows(user, identity.groups):
        return user
    message = f"{user} may not {action} {target}: allowed are {who.describe(cfg)}"
    via = signed_in(identity)
    record(ws, user, action, target, "unauthorized", comment=comment,
           detail=f"{message} ({via})" if via else message, **_target_parts(target))
    raise Unauthorized(message + "; this attempt was recorded")


def signed_in(identity: Identity) -> str | None:
    """How a proven identity was established, for its audit rows ("signed in via hub, groups qa"); None
    for an asserted (local) one."""
    if identity.via == "local":
        return None
    groups = f", groups {', '.join(sorted(identity.groups))}" if identity.groups else ""
    return f"signed in via {identity.via}{groups}"


def require_act(ws: "Workspace", user: "str | Identity | None", action: str, *, target: str,
                comment: str | None = None) -> Identity:
    """The acting identity, unless it may only read (a ``read`` token): then audited and refused.

    Actions open to anyone who may use the workspace (trigger, rerun, cancel,
    unlock, incidents) call this alone; decisions call :func:`authorize`, which calls it first.
    """
    identity = as_identity(user)
    if not identity.may_act:
        message = f"{identity.user} may not {action} {target}: the token has the read scope only"
        record(ws, identity.user, action, target, "unauthorized", comment=comment, detail=message,
               **_target_parts(target))
        raise Unauthorized(message + "; this attempt was recorded")
    return identity


def refuse(ws: "Workspace", user: str, action: str, target: str, message: str, comment: str | None = None) -> InvalidState:
    """Audit a refused (invalid) attempt and return the error to raise."""
    record(ws, user, action, target, "refused", comment=comment, detail=message, **_target_parts(target))
    return InvalidState(message)


# -- approve / reject -------------------------------------------------------------


def _locate(ws: "Workspace", locator: str) -> tuple["PipelineRun", Pipeline, Stage, str]:
    from .engine import find_run

    run, rest = find_run(ws.store, locator)
    if len(rest) != 1:
        raise NotFound(f"{locator!r}: expected PIPELINE/COUNTER/STAGE")
    pipeline = ws.config.pipeline(run.pipeline)
    stage = pipeline.stage(rest[0])
    if stage is None:
        names = ", ".join(s.name for s in pipeline.stages)
        raise NotFound(f"pipeline {run.pipeline} has no stage {rest[0]!r} (stages: {names})")
    return run, pipeline, stage, f"{run.pipeline}/{run.counter}/{stage.name}"


def _waiting_stage(ws: "Workspace", run: "PipelineRun", pipeline: Pipeline, stage: Stage) -> "StageRun":
    """The stage run to decide on, or InvalidState saying why there is none."""
    if run.status == Status.CANCELLED:
        raise InvalidState(f"run {run.locator} was cancelled")
    detail = ws.store.run_detail(run)
    latest = detail.latest_stages()
    sr = latest.get(stage.name)
    if sr is None:
        raise InvalidState(f"stage {stage.name} of {run.locator} is not waiting for approval (it has not been reached)")
    if sr.status != Status.WAITING:
        if sr.approved_by:
            raise InvalidState(_already(run, sr))
        raise InvalidState(f"stage {stage.name} of {run.locator} is {sr.status}, not waiting for approval")
    if run.status.finished:
        raise InvalidState(f"run {run.locator} is {run.status}; its stage {stage.name} can no longer be approved")
    if stage.approval.allow_only_on_success:
        pos = [s.name for s in pipeline.stages].index(stage.name)
        if pos > 0:
            prev = latest.get(pipeline.stages[pos - 1].name)
            if prev is None or prev.status != Status.PASSED:
                raise InvalidState(f"stage {stage.name} allows approval only on success, and the previous stage "
                                   f"{pipeline.stages[pos - 1].name} is {prev.status if prev else 'not run'}")
    return sr


def _already(run: "PipelineRun", sr: "StageRun") -> str:
    verb = "rejected" if sr.status == Status.REJECTED else "approved"
    return f"stage {sr.name} of {run.locator} was already {verb} by {sr.approved_by} (now {sr.status})"


def _decide(ws: "Workspace", locator: str, action: str, user: "str | Identity | None", comment: str | None) -> tuple["PipelineRun", "StageRun", str]:
    run, pipeline, stage, target = _locate(ws, locator)
    identity = as_identity(user)
    user = authorize(ws, stage, identity, action, target=target, comment=comment)
    try:
        sr = _waiting_stage(ws, run, pipeline, stage)
        # The stage, the run and the audit row change in ONE transaction: a process killed (or a
        # write failing) anywhere in between leaves all three as they were, never an approval
        # without its audit row. A lost compare-and-set raises inside it and writes nothing.
        with ws.store.write() as conn:
            if action == "approve":
                new = ws.store.set_stage_status(sr.id, Status.SCHEDULED, expect=[Status.WAITING], approved_by=user,
                                                conn=conn)
                _set_run_status_if(conn, run.id, [Status.WAITING], Status.SCHEDULED, None)
            else:
                new = ws.store.set_stage_status(sr.id, Status.REJECTED, f"rejected by {user}: {comment}",
                                                expect=[Status.WAITING], approved_by=user, conn=conn)
                _set_run_status_if(conn, run.id, [Status.WAITING, Status.SCHEDULED, Status.RUNNING], Status.REJECTED,
                                   f"stage {sr.name} rejected by {user}: {comment}")
            record_in(conn, user, action, target, "ok", comment=comment, detail=signed_in(identity),
                      pipeline=run.pipeline, counter=run.counter, stage=stage.name)
    except InvalidState as exc:
        msg = str(exc)
        again = ws.store.run_detail(run.id).latest_stages().get(stage.name)
        if again is not None and again.approved_by and again.status != Status.WAITING:  # lost a race: say who won
            msg = _already(run, again)
        raise refuse(ws, user, action, target, msg, comment) from None
    return run, new, user


def _set_run_status_if(conn: sa.Connection, run_id: int, expect: Iterable[Status], status: Status,
                       reason: str | None) -> None:
    pr = S.pipeline_runs
    values: dict[str, Any] = {"status": status.value}
    if reason is not None:
        values["reason"] = reason
    if status.finished:
        values["finished_at"] = time.time()
    conn.execute(pr.update().where(pr.c.id == run_id, pr.c.status.in_([s.value for s in expect])).values(**values))


def approve(ws: "Workspace", locator: str, *, user: "str | Identity | None" = None, comment: str | None = None,
            drive: bool = True, listener: Callable[..., None] | None = None) -> "PipelineRun":
    """Approve the waiting stage ``PIPELINE/COUNTER/STAGE``; with ``drive`` continue the run here.

    Without ``drive`` the stage is left SCHEDULED for whatever drives runs
    (``workbench tick``/``serve``, or another ``approve``).
    """
    run, _sr, _user = _decide(ws, locator, "approve", user, comment)
    if not drive:
        return ws.store.get_pipeline_run_by_id(run.id)
    with ws.engine(listener=listener) as engine:
        return engine.drive(run.id)


def reject(ws: "Workspace", locator: str, *, user: "str | Identity | None" = None, comment: str | None = None) -> "PipelineRun":
    """Reject the waiting stage: it is marked rejected and the run ends (rejected)."""
    if not comment or not comment.strip():
        raise UsageError("a rejection needs a comment saying why (--comment)")
    run, _sr, user = _decide(ws, locator, "reject", user, comment)
    return ws.store.get_pipeline_run_by_id(run.id)


def pending_approvals(ws: "Workspace") -> list[dict[str, Any]]:
    """Stages waiting for a person, with who may approve them (for the CLI and dashboards)."""
    cfg = ws.config
    out = []
    runs = ws.store.pipeline_runs(statuses=[Status.WAITING, Status.SCHEDULED, Status.RUNNING])
    details = ws.store.run_details(runs, jobs=False)  # one query for all, not one per open run
    for run in runs:
        for sr in details[run.id].latest_stages().values():
            if sr.status != Status.WAITING:
                continue
            stage = cfg.pipelines[run.pipeline].stage(sr.name) if run.pipeline in cfg.pipelines else None
            who = approvers(cfg, stage) if stage is not None else None
            out.append({
                "pipeline": run.pipeline, "counter": run.counter, "label": run.label, "stage": sr.name,
                "locator": f"{run.pipeline}/{run.counter}/{sr.name}", "waiting_since": sr.created_at,
                "approvers": who.describe(cfg) if who else "unknown (stage no longer in the config)",
                "may_approve": sorted(who.members) if who and not who.anyone else None,
            })
    return out


# -- frames -------------------------------------------------------------------------


def _audit_frame(frames: "Frames") -> "pd.DataFrame":
    """Every decision and refused attempt: who, when, what, target, comment, outcome."""
    a = audit
    df = frames.query(sa.select(
        a.c.id.label("audit_id"), a.c.at, a.c.user, a.c.action, a.c.target, a.c.pipeline, a.c.counter, a.c.stage,
        a.c.comment, a.c.outcome, a.c.detail,
    ).order_by(a.c.id))
    df["counter"] = df["counter"].astype("Int64")
    return frames.utc(df, "at")


def _approvals_frame(frames: "Frames") -> "pd.DataFrame":
    """Approval decisions only (approve and reject, granted or not)."""
    df = _audit_frame(frames)
    return df[df["action"].isin(["approve", "reject"])].reset_index(drop=True)


register_frame("audit", _audit_frame)
register_frame("approvals", _approvals_frame)


def _register_masking() -> None:
    from .hooks import register_job_hook
    from .secrets import MASKING_HOOK

    register_job_hook(MASKING_HOOK)


_register_masking()

__all__ = ["Approvers", "approvers", "approve", "authorize", "may", "pending_approvals", "record", "record_in", "reject", "require_act", "audit"]
