"""A commit group's statements over many rows: one statement per table.

On PostgreSQL the rows go as one array per column (below); elsewhere as
SQLAlchemy's ``executemany``. :func:`among` is ``column IN values`` in the
form each database plans well.

A fleet's commit group writes a few hundred small rows (ledger, activities,
records, child rows) from many gateways. As one ``executemany`` per table
each row cost SQLAlchemy's parameter work, a pipelined statement of its own
and an executor start in PostgreSQL; here each table gets one statement
whose parameters are one array per column, turned back into rows by
``unnest`` (bench/fleet_scale.py, docs/benchmarks.md: issue 18's sixth
round). The SQL text is the same for every group, so psycopg prepares it.

The values are what SQLAlchemy's column types would bind: JSON as
``json.dumps`` text, times timezone-aware (a naive one is refused as
:class:`cloud_bridge.models.UTCDateTime` refuses it). What PostgreSQL
refuses (a NUL in text, an integer out of range) raises the same
SQLAlchemy errors as before, so poison isolation (:mod:`cloud_bridge.replay`)
is unchanged.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    ARRAY,
    JSON,
    Boolean,
    Column,
    Connection,
    Integer,
    String,
    Table,
    Text,
    any_,
    bindparam,
    insert,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import StatementError

from cloud_bridge.models import UTCDateTime

Row = Mapping[str, Any]
_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


def _array_type(column: Column[Any]) -> str:
    kind = column.type
    if isinstance(kind, UTCDateTime):
        return "timestamptz[]"
    if isinstance(kind, JSON):
        return "text[]"  # cast to json per element in the select list
    if isinstance(kind, Boolean):
        return "boolean[]"
    if isinstance(kind, Integer):
        return "integer[]"
    if isinstance(kind, String | Text):
        return "text[]"
    raise TypeError(f"no array form for column {column.name} of type {kind!r}")


def _select_item(column: Column[Any]) -> str:
    return f"u.{column.name}::json" if isinstance(column.type, JSON) else f"u.{column.name}"


def _placeholder(column: Column[Any]) -> str:
    """The column's array parameter, in binary format (``%b``).

    In text format psycopg quotes and escapes each element in Python (a regex
    over every envelope body: 1.4 ms of the worker's CPU for 80 bodies, against
    54 us in binary, measured here); times, integers and booleans cost the same
    per element. Binary times are aware (UTC, as ``_values`` makes them); the
    cast turns psycopg's choice of element type (``int2`` to ``int8`` by the
    largest number) into the column's. A column of NULLs only has no element
    to choose by: psycopg sends it as an untyped text array, and the cast
    types that too.
    """
    return f"%b::{_array_type(column)}"


@functools.cache
def _insert_sql(table: Table, names: tuple[str, ...]) -> str:
    columns = [table.c[n] for n in names]
    arrays = ", ".join(_placeholder(c) for c in columns)
    return (
        f"INSERT INTO {table.name} ({', '.join(names)}) "
        f"SELECT {', '.join(_select_item(c) for c in columns)} "
        f"FROM unnest({arrays}) AS u({', '.join(names)})"
    )


@functools.cache
def _update_sql(table: Table, key: str, names: tuple[str, ...]) -> str:
    columns = [table.c[n] for n in (key, *names)]
    arrays = ", ".join(_placeholder(c) for c in columns)
    sets = ", ".join(f"{n} = {_select_item(table.c[n])}" for n in names)
    return (
        f"UPDATE {table.name} SET {sets} "
        f"FROM unnest({arrays}) AS u({key}, {', '.join(names)}) "
        f"WHERE {table.name}.{key} = u.{key}"
    )


def _values(column: Column[Any], values: list[Any]) -> list[Any]:
    kind = column.type
    if isinstance(kind, JSON):
        try:
            return [None if v is None else json.dumps(v) for v in values]
        except (TypeError, ValueError, OverflowError) as exc:
            raise StatementError(str(exc), column.name, None, exc) from exc
    if isinstance(kind, UTCDateTime):
        # The column type's own conversion (to UTC; a naive time refused), raising as
        # SQLAlchemy does when a bind fails, so poison isolation sees the same error:
        # a time whose UTC instant falls outside Python's years must not be stored.
        try:
            return [kind.process_bind_param(v, _PG) for v in values]
        except (ValueError, OverflowError) as exc:
            raise StatementError(str(exc), column.name, None, exc) from exc
    return values


def _arrays(table: Table, names: Sequence[str], rows: Sequence[Row]) -> tuple[list[Any], ...]:
    return tuple(_values(table.c[n], [r[n] for r in rows]) for n in names)


def among(dialect: str, column: Any, name: str) -> Any:
    """``column IN :name`` for a text column, its values bound at execution (a list).

    For a statement built once and executed many times: building a SELECT and
    its column collections cost more Python than running it (issue 18's
    seventh round), and SQLAlchemy adapts a cached compilation's result
    columns to each new statement object it is given. On PostgreSQL it is
    ``= ANY(text[])``: one SQL text for any number of values, so psycopg
    prepares it (an IN list is a new statement for each length). The array is
    ``text[]``, not the column's ``varchar(n)[]``: in a prepared statement's
    generic plan PostgreSQL coerces a ``varchar(n)[]`` parameter again for
    every row it scans (docs/benchmarks.md, issue 18's sixth round).
    """
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(Text)))
    return column.in_(bindparam(name, expanding=True))


def insert_rows(conn: Connection, table: Table, rows: Sequence[Row]) -> None:
    """INSERT ``rows`` (dicts with the same keys) in one statement."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(insert(table), list(rows))
        return
    names = tuple(rows[0])
    conn.exec_driver_sql(_insert_sql(table, names), _arrays(table, names, rows))


def update_rows(conn: Connection, table: Table, key: str, rows: Sequence[Row]) -> None:
    """UPDATE each row (matched on ``key``) to its values (dicts with the same keys)."""
    if not rows:
        return
    names = tuple(n for n in rows[0] if n != key)
    if conn.dialect.name != "postgresql":
        conn.execute(
            update(table)
            .where(table.c[key] == bindparam(f"k_{key}"))
            .values(**{n: bindparam(f"k_{n}") for n in names}),
            [{f"k_{k}": v for k, v in r.items()} for r in rows],
        )
        return
    conn.exec_driver_sql(_update_sql(table, key, names), _arrays(table, (key, *names), rows))
