"""The ``config_repos`` table: each repository's last good revision (with its files) and its latest.

The last good revision's files are kept here, not only its sha, so a restart
(or a new server on another machine with the same store) runs the same
pipelines even when the mirror was thrown away and a force-push removed that
commit from the remote.  One row per repository id; the ``config_repos``
frame shows it.  Registered as the ``configrepos-1`` migration (SQLite and
PostgreSQL alike, through SQLAlchemy).
"""
from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..errors import Problem
from ..store import schema as S
from ..store.frames import register_frame

if TYPE_CHECKING:
    import pandas as pd

    from ..store.frames import Frames

config_repos = sa.Table(
    "config_repos", S.metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("branch", sa.String(255), nullable=False),
    sa.Column("good_revision", sa.String(64)),
    sa.Column("good_files", sa.Text),  # JSON {path: base64 bytes} of the good revision's config files
    sa.Column("good_at", sa.Float),
    sa.Column("latest_revision", sa.String(64)),
    sa.Column("error", sa.Text),  # JSON [{file, line, col, message}] of the latest revision, NULL when it loaded
    sa.Column("checked_at", sa.Float),
)
S.register_migration("configrepos-1", S.tables_created_by(config_repos))


@dataclass(frozen=True)
class RepoState:
    id: str
    url: str
    branch: str
    good_revision: str | None = None
    good_files: tuple[tuple[str, bytes], ...] = ()
    good_at: float | None = None
    latest_revision: str | None = None
    errors: tuple[Problem, ...] = ()
    checked_at: float | None = None


def _row(r: Any) -> RepoState:
    files = tuple((k, base64.b64decode(v)) for k, v in json.loads(r.good_files or "{}").items())
    return RepoState(r.id, r.url, r.branch, r.good_revision, files, r.good_at, r.latest_revision,
                     tuple(Problem(e["file"], e["line"], e["col"], e["message"]) for e in json.loads(r.error or "[]")),
                     r.checked_at)


def load_states(store: Any) -> dict[str, RepoState]:
    with store.read() as conn:
        return {r.id: _row(r) for r in conn.execute(sa.select(config_repos))}


def save_state(store: Any, st: RepoState) -> None:
    """Insert or replace the row of ``st.id``."""
    values = dict(url=st.url, branch=st.branch, good_revision=st.good_revision,
                  good_files=json.dumps({k: base64.b64encode(v).decode() for k, v in st.good_files}),
                  good_at=st.good_at, latest_revision=st.latest_revision,
                  error=json.dumps([{"file": e.file, "line": e.line, "col": e.col, "message": e.message}
                                    for e in st.errors]) if st.errors else None, checked_at=st.checked_at or time.time())
    with store.write() as conn:
        done = conn.execute(config_repos.update().where(config_repos.c.id == st.id).values(**values)).rowcount
        if not done:
            conn.execute(config_repos.insert().values(id=st.id, **values))


def _frame(frames: Frames) -> pd.DataFrame:
    """One row per config repository: its URL, the revision its pipelines run from, the latest, the error."""
    t = config_repos
    q = sa.select(t.c.id, t.c.url, t.c.branch, t.c.good_revision, t.c.good_at, t.c.latest_revision, t.c.error,
                  t.c.checked_at).order_by(t.c.id)
    df = frames.utc(frames.query(q), "good_at", "checked_at")
    df["error"] = [("\n".join(str(Problem(p["file"], p["line"], p["col"], p["message"])) for p in json.loads(e))
                    if isinstance(e, str) and e else None) for e in df["error"]]
    df["ok"] = df["error"].isna()
    return df


register_frame("config_repos", _frame)
