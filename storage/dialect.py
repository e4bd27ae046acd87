"""What differs between SQLite and PostgreSQL, in one place."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from sqlalchemy import Column, CursorResult, Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

T = TypeVar("T")


class Prebuilt(Generic[T]):
    """A statement built once per dialect and reused, its values bound by name at each execution.

    Building a statement and its cache key costs SQLAlchemy about as much CPU as running a small one; the
    few that run for every update are built once.
    """

    def __init__(self, build: Callable[[Callable[[Table], Any]], T]) -> None:
        """`build` gets the dialect's INSERT (the one with ON CONFLICT) and returns the statement."""
        self._build = build
        self._built: dict[str, T] = {}

    def __call__(self, conn: AsyncConnection) -> T:
        """Return the statement for this connection's dialect."""
        name = conn.dialect.name
        built = self._built.get(name)
        if built is None:
            built = self._built[name] = self._build(pg_insert if name == "postgresql" else sqlite_insert)
        return built


def insert_or(conn: AsyncConnection, table: Table) -> Any:
    """Return an INSERT that supports on_conflict_do_nothing/on_conflict_do_update on this dialect."""
    if conn.dialect.name == "postgresql":
        return pg_insert(table)
    return sqlite_insert(table)


def new_id(result: CursorResult[Any]) -> int:
    """Return the primary key of the row an INSERT just made."""
    key = result.inserted_primary_key
    if key is None:
        raise RuntimeError("the database returned no id for a new row")
    return int(key[0])


async def insert_many_counted(
    conn: AsyncConnection, stmt: Any, rows: Sequence[dict[str, Any]], key: Column[Any]
) -> int:
    """Run a many-row INSERT (ON CONFLICT DO NOTHING, typically) and return how many rows it inserted."""
    if conn.dialect.name == "postgresql":
        # asyncpg's executemany reports no row count (SQLAlchemy sees -1); the rows RETURNING gives back
        # are exactly the inserted ones, a skipped conflict returning none.
        return len((await conn.execute(stmt.returning(key), rows)).all())
    result = await conn.execute(stmt, rows)
    return max(result.rowcount or 0, 0)
