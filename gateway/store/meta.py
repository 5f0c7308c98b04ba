"""The store's small key/value table (``meta``): last sync and the like."""

from __future__ import annotations

from sqlalchemy import Connection, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from gateway.store.schema import meta


def set_meta(conn: Connection, key: str, value: str) -> None:
    stmt = sqlite_insert(meta).values(key=key, value=value)
    conn.execute(stmt.on_conflict_do_update(index_elements=[meta.c.key], set_={"value": value}))


def get_meta(conn: Connection, key: str) -> str | None:
    return conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar_one_or_none()
