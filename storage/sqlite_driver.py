"""SQLAlchemy's aiosqlite adapter, one trip to the driver's thread per statement instead of four or five.

aiosqlite runs every sqlite3 call on a thread of its own connection; each call is a trip there and back
(a queue put that wakes the thread, a write to the event loop's self-pipe that wakes the loop). SQLAlchemy's
adapter makes four of them for every statement (open a cursor, execute, fetch, close it) and one more for a
BEGIN, which is a statement of its own. Under load those wake-ups, not SQLite, were the largest cost of an
update: a third of the bot process's CPU was the kernel switching threads.

Here a statement is one trip: the cursor is opened, executed, read to the end and closed on the driver's
thread, and what SQLAlchemy asks of it afterwards (description, rowcount, lastrowid) is kept. A BEGIN is held
back and sent in the same trip as the transaction's first statement; a transaction that never ran one ends
without a trip. sqlite3 objects are still used only on their own thread, as aiosqlite intends.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Sequence
from typing import Any, cast

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)

_BEGINS = frozenset({"BEGIN", "BEGIN IMMEDIATE", "BEGIN DEFERRED", "BEGIN EXCLUSIVE"})


class _Finished:
    """What SQLAlchemy reads of a cursor once its statement has run (the sqlite3 cursor is closed by then)."""

    __slots__ = ("arraysize", "description", "lastrowid", "rowcount")

    def __init__(self, description: Any = None, rowcount: int = -1, lastrowid: int | None = None) -> None:
        self.description = description
        self.rowcount = rowcount
        self.lastrowid = lastrowid
        self.arraysize = 1

    def close(self) -> None:
        """Nothing to close: the statement ran and its cursor was closed on the driver's thread."""


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A cursor whose every statement is one trip to the driver's thread."""

    __slots__ = ()
    _awaitable_cursor_close = False

    def __init__(self, adapt_connection: Any) -> None:
        # No trip to open a cursor: it is opened where the statement runs.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = _Finished()  # type: ignore[assignment]
        self._soft_closed_memoized = {}  # type: ignore[assignment]
        self._rows = collections.deque()

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        connection = cast(OneTripConnection, self._adapt_connection)
        if isinstance(operation, str) and operation.strip().upper() in _BEGINS:
            connection._held_begin = operation
            return None
        begin, connection._held_begin = connection._held_begin, None
        async with connection._execute_mutex:
            rows, finished = await self._connection._execute(
                _run, connection.sqlite, begin, operation, parameters
            )
        self._cursor = finished
        if rows is not None:
            self._rows = collections.deque(rows)
        return None

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        connection = cast(OneTripConnection, self._adapt_connection)
        begin, connection._held_begin = connection._held_begin, None
        async with connection._execute_mutex:
            _, finished = await self._connection._execute(
                _run_many, connection.sqlite, begin, operation, seq_of_parameters
            )
        self._cursor = finished
        return None


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """aiosqlite's connection as SQLAlchemy sees it, with a BEGIN held until the first statement."""

    __slots__ = ("_held_begin",)
    _cursor_cls = OneTripCursor

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self._held_begin: str | None = None

    @property
    def sqlite(self) -> sqlite3.Connection:
        """The sqlite3 connection itself, to be used on the driver's thread only."""
        conn: sqlite3.Connection = self._connection._conn
        return conn

    def commit(self) -> None:
        if self._held_begin is not None:
            self._held_begin = None  # nothing ran: there is no transaction to end
            return
        super().commit()

    def rollback(self) -> None:
        if self._held_begin is not None:
            self._held_begin = None
            return
        super().rollback()


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module SQLAlchemy is given for SQLite (`create_async_engine(..., module=...)`)."""

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        adapted = super().connect(*arg, **kw)
        return OneTripConnection(self, adapted._connection)


def dbapi() -> OneTripDBAPI:
    """Return the DBAPI module for SQLite engines."""
    return OneTripDBAPI(aiosqlite, sqlite3)


def _run(
    conn: sqlite3.Connection, begin: str | None, operation: str, parameters: Any
) -> tuple[list[Any] | None, _Finished]:
    # On the driver's thread: the whole statement, from a held BEGIN to the last row.
    cursor = conn.cursor()
    try:
        if begin is not None:
            cursor.execute(begin)
        if parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        rows = cursor.fetchall() if cursor.description else None
        return rows, _Finished(cursor.description, cursor.rowcount, cursor.lastrowid)
    finally:
        cursor.close()


def _run_many(
    conn: sqlite3.Connection, begin: str | None, operation: str, seq_of_parameters: Sequence[Any]
) -> tuple[None, _Finished]:
    cursor = conn.cursor()
    try:
        if begin is not None:
            cursor.execute(begin)
        cursor.executemany(operation, seq_of_parameters)
        return None, _Finished(cursor.description, cursor.rowcount, cursor.lastrowid)
    finally:
        cursor.close()
