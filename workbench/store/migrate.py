"""Copy a whole run history into another store, e.g. from SQLite to PostgreSQL.

The target is opened as a store first, so it gets the same schema through the
same migrations (core and feature tables alike); then every table of the
shared metadata is copied in foreign-key order, ids included, in ONE target
transaction, and the row counts are compared before it commits: a copy either
arrives whole and checked, or not at all. A target that already holds runs is
refused, so a history is never merged into another by accident.
"""
from __future__ import annotations

from typing import Callable

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from ..errors import InvalidState, StoreError
from . import Store
from . import schema as S

_META_OWN = ("migrations", "schema_version")  # each store keeps its own


def copy_store(source: Store, target_url: str, *, batch: int = 1000,
               progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Copy ``source`` into the empty store at ``target_url``; returns rows per table."""
    if _same(source.url, target_url):
        raise InvalidState("the target is the store being copied")
    target = Store.open(target_url)
    try:
        with source.read() as conn:
            src_cols = _columns(conn)
        with target.read() as conn:
            dst_cols = _columns(conn)
            tables = [t for t in S.metadata.sorted_tables if t.name != "meta" and t.name in dst_cols]
            for t in tables:
                n = conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                if n:
                    raise InvalidState(
                        f"the target store is not empty ({t.name} has {n} rows): migrate into a new, empty database"
                    )
        missing = sorted(set(src_cols) - set(dst_cols) - {"meta"})
        if missing:
            raise StoreError(f"the target cannot hold tables {', '.join(missing)} (a feature missing here?)")
        counts: dict[str, int] = {}
        with source.read() as src, target.write() as dst:
            for t in tables:
                present = src_cols.get(t.name)
                counts[t.name] = _copy_table(src, dst, t, present, batch) if present else 0
                if progress:
                    progress(t.name, counts[t.name])
            _copy_meta(src, dst)
            for t in tables:
                got = dst.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                if got != counts[t.name]:
                    raise StoreError(f"row count check failed for {t.name}: copied {counts[t.name]}, target has {got}")
            if dst.dialect.name == "postgresql":
                _reset_sequences(dst, tables)
        return counts
    except DBAPIError as exc:
        why = str(getattr(exc, "orig", exc)).splitlines()[0]
        raise StoreError(f"copy failed, nothing was written: {why}") from None
    finally:
        target.close()


def _columns(conn: sa.Connection) -> dict[str, set[str]]:
    inspector = sa.inspect(conn)
    return {name: {c["name"] for c in inspector.get_columns(name)} for name in inspector.get_table_names()}


def _copy_table(src: sa.Connection, dst: sa.Connection, table: sa.Table, present: set[str], batch: int) -> int:
    cols = [c for c in table.columns if c.name in present]
    order = list(table.primary_key.columns) or cols[:1]
    result = src.execute(sa.select(*cols).order_by(*order))
    n = 0
    while rows := result.fetchmany(batch):
        dst.execute(table.insert(), [dict(r._mapping) for r in rows])
        n += len(rows)
    return n


def _copy_meta(src: sa.Connection, dst: sa.Connection) -> None:
    m = S.meta
    for key, value in src.execute(sa.select(m.c.key, m.c.value).where(m.c.key.not_in(_META_OWN))):
        dst.execute(sa.delete(m).where(m.c.key == key))
        dst.execute(m.insert().values(key=key, value=value))


def _reset_sequences(conn: sa.Connection, tables: list[sa.Table]) -> None:
    """Ids were copied as they were: PostgreSQL's sequences must continue after them."""
    for t in tables:
        pk = list(t.primary_key.columns)
        if len(pk) != 1 or not isinstance(pk[0].type, sa.Integer) or pk[0].autoincrement is False:
            continue
        seq = conn.execute(sa.text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": t.name, "c": pk[0].name}).scalar()
        if seq:
            top = conn.execute(sa.select(sa.func.max(pk[0]))).scalar()
            conn.execute(sa.text("SELECT setval(:s, :v, :called)"),
                         {"s": seq, "v": top or 1, "called": top is not None})


def _same(a: str, b: str) -> bool:
    try:
        return sa.engine.make_url(a) == sa.engine.make_url(b if "://" in b else f"sqlite:///{b}")
    except sa.exc.ArgumentError:
        return False


__all__ = ["copy_store"]
