"""What one triggered run is made of: each material's revision, and how it is recorded.

A :class:`TriggerPlan` is plain data decided before the run exists; the
engine hands its :meth:`TriggerPlan.record` to the store so that the run, its
material revisions, commits, provenance and ancestry are written in the SAME
transaction: a crash can never leave a run without the record of what it
was built from.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

import sqlalchemy as sa

from . import tables as T
from .dependency import UpstreamRun, provenance_rows
from .git import CommitInfo

__all__ = ["MaterialRev", "TriggerPlan", "revision_key"]


@dataclass(frozen=True)
class MaterialRev:
    """One material at one revision, as a run uses it."""

    name: str
    kind: str  # git | dependency
    fingerprint: str
    revision: str
    previous: str | None = None
    changed: bool = False
    url: str | None = None
    branch: str | None = None
    upstream: UpstreamRun | None = None
    commits: tuple[CommitInfo, ...] = ()

    def as_revision(self) -> dict[str, Any]:
        """The JSON kept in ``pipeline_runs.revisions`` (enough for jobs to check out without a query)."""
        if self.kind == "dependency" and self.upstream is not None:
            u = self.upstream
            return {"kind": "dependency", "revision": u.locator, "pipeline": u.pipeline, "counter": u.counter,
                    "label": u.label, "stage": u.stage, "stage_counter": u.stage_counter, "changed": self.changed}
        return {"kind": "git", "revision": self.revision, "url": self.url, "branch": self.branch,
                "previous": self.previous, "changed": self.changed}

    def ancestors(self) -> dict[str, str]:
        if self.upstream is not None:
            return dict(self.upstream.ancestors)
        return {self.fingerprint: self.revision}


def revision_key(pairs: Mapping[str, str], extra: str = "") -> str:
    """A short canonical name of a revision set: equal sets, equal keys (at-most-once triggering)."""
    text = json.dumps(sorted(pairs.items()), separators=(",", ":")) + ("|" + extra if extra else "")
    return hashlib.sha1(text.encode()).hexdigest()


@dataclass(frozen=True)
class TriggerPlan:
    pipeline: str
    materials: tuple[MaterialRev, ...] = ()
    trigger: str = "material"  # material | dependency | timer | manual
    reason: str = ""
    key_extra: str = ""  # e.g. the timer fire time: same revisions, another fire, another run
    notes: tuple[str, ...] = field(default_factory=tuple)  # e.g. an upstream that never passed, left out

    @property
    def revisions(self) -> dict[str, Any]:
        return {m.name: m.as_revision() for m in self.materials}

    @property
    def revision_key(self) -> str:
        return revision_key({m.name: m.revision for m in self.materials}, self.key_extra)

    @property
    def ancestors(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for m in self.materials:
            for k, v in m.ancestors().items():
                out.setdefault(k, v)
        return out

    def record(self, conn: sa.Connection, run_id: int) -> None:
        """Write the run's materials, commits, provenance and ancestry (inside the run's own transaction)."""
        revs = [
            dict(pipeline_run_id=run_id, material=m.name, kind=m.kind, fingerprint=m.fingerprint, revision=m.revision,
                 previous_revision=m.previous, changed=m.changed, url=m.url, branch=m.branch,
                 upstream_pipeline=m.upstream.pipeline if m.upstream else None,
                 upstream_counter=m.upstream.counter if m.upstream else None,
                 upstream_label=m.upstream.label if m.upstream else None,
                 upstream_stage=m.upstream.stage if m.upstream else None,
                 upstream_stage_counter=m.upstream.stage_counter if m.upstream else None)
            for m in self.materials
        ]
        if revs:
            conn.execute(T.material_revisions.insert(), revs)
        commit_rows = [
            dict(pipeline_run_id=run_id, material=m.name, sha=c.sha, author=c.author, author_email=c.author_email,
                 author_time=c.author_time, commit_time=c.commit_time, message=c.message)
            for m in self.materials for c in m.commits
        ]
        if commit_rows:
            conn.execute(T.commits.insert(), commit_rows)
        prov = provenance_rows(run_id, [(m.name, m.upstream) for m in self.materials if m.upstream is not None])
        if prov:
            conn.execute(T.provenance.insert(), prov)
        conn.execute(T.run_ancestry.insert(), {"pipeline_run_id": run_id, "ancestors": self.ancestors})

    def describe(self) -> str:
        return self.reason or ", ".join(f"{m.name} {m.revision[:12]}" for m in self.materials) or "no materials"
