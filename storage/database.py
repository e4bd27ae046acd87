"""The async engine and its two kinds of transaction, with SQLite's semantics on either backend.

SQLite (WAL mode, foreign keys, a busy timeout, secure delete) has one writer at a time and readers that see
one snapshot each. The repositories were written for that: a write may read, decide and write (a once-per-
update claim, a counter, a watermark) without a race. PostgreSQL is given the same semantics: writers take
one transaction-scoped advisory lock (so they are serialised across processes and instances too), readers
run REPEATABLE READ, READ ONLY.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Table, event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from storage import sqlite_driver

_READ_ONLY = "jarchy_read_only"
BUSY_TIMEOUT_MS = 5000
WAL_AUTOCHECKPOINT_PAGES = (
    1000  # SQLite's default: a lower one costs a synchronous checkpoint per few commits
)
WAL_SIZE_LIMIT_BYTES = 0  # truncate to the smallest size at every checkpoint that restarts the WAL
# The key of the advisory lock every PostgreSQL writer holds for its transaction ("jarchy" as 6 bytes). One
# key for the whole database: a later change may narrow it per aggregate once writers no longer rely on it.
WRITE_LOCK_KEY = int.from_bytes(b"jarchy", "big")
_WRITE_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
# Where a write transaction keeps what must run once it has ended (see after_transaction).
_AFTER_TRANSACTION = "jarchy_after_transaction"


class Database:
    """One engine and the two kinds of transaction the repositories use."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self.is_postgresql = engine.dialect.name == "postgresql"
        # SQLite has one writer at a time. Writers of this process queue here, in order, instead of in
        # SQLite's busy handler, which sleeps in growing steps (up to 100 ms) while it waits for the lock.
        # On PostgreSQL the same queue keeps waiting writers from each holding a pooled connection while
        # they wait for the advisory lock.
        self._write_turn = asyncio.Lock()

    @classmethod
    def connect(
        cls,
        url: str | URL,
        *,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        foreign_keys: bool = True,
        **engine_options: Any,
    ) -> Database:
        """Create the engine for a URL, making the SQLite file's folder if needed."""
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # Parameters may hold personal data; they must not appear in exception texts that reach logs.
        engine_options.setdefault("hide_parameters", True)
        # Every transaction here ends in an explicit commit or rollback, so the pool's own rollback on
        # return is a wasted round trip to the driver's thread on every use.
        engine_options.setdefault("pool_reset_on_return", None)
        if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "asyncpg":
            # SQLite's busy timeout, kept: a writer that cannot have the writers' lock (or any row lock)
            # within it fails with 55P03, a transient error, and its update is retried later, instead of
            # every writer of every instance hanging behind one stuck transaction. 0 means "wait forever"
            # to PostgreSQL, so SQLite's "do not wait" becomes the shortest wait it knows.
            connect_args = dict(engine_options.pop("connect_args", {}))
            server_settings = dict(connect_args.get("server_settings", {}))
            server_settings.setdefault("lock_timeout", f"{max(int(busy_timeout_ms), 1)}ms")
            connect_args["server_settings"] = server_settings
            engine_options["connect_args"] = connect_args
        if parsed.get_backend_name() == "sqlite" and parsed.get_driver_name() == "aiosqlite":
            # One trip to the driver's thread per statement (storage.sqlite_driver), not four or five.
            engine_options.setdefault("module", sqlite_driver.dbapi())
        engine = create_async_engine(url, **engine_options)
        if engine.dialect.name == "sqlite":
            _configure_sqlite(engine, busy_timeout_ms, foreign_keys)
        return cls(engine)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """Open a write transaction, the only one running, committed on success. Do not nest.

        SQLite: BEGIN IMMEDIATE takes the database's write lock, sent with the first statement (one trip
        to the driver's thread: storage.sqlite_driver); writers of this process are in order from the
        start (the queue below), other processes' writers from that first statement. PostgreSQL: READ
        COMMITTED plus the advisory lock, taken first; every later statement takes a fresh snapshot, so it
        sees everything the previous holder committed before the lock was released (REPEATABLE READ would
        freeze the snapshot at the lock's own statement, taken before the wait, and fail with
        serialization errors).
        """
        async with self._write_turn:
            info: dict[Any, Any] | None = None
            try:
                async with self.engine.begin() as conn:
                    # The connection record's own dict: it outlives the transaction, so the work filed in
                    # it is found (and taken out) once the commit or rollback is over.
                    info = conn.info
                    if self.is_postgresql:
                        await conn.execute(_WRITE_LOCK, {"key": WRITE_LOCK_KEY})
                    yield conn
            finally:
                for work in info.pop(_AFTER_TRANSACTION, ()) if info is not None else ():
                    work()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """Open a read-only transaction that sees one snapshot and never waits for the writer.

        SQLite's WAL readers see the database as of their first read; PostgreSQL's REPEATABLE READ does
        the same (READ COMMITTED would let two queries of one read see different commits), and READ ONLY
        refuses a write that should have gone through write().
        """
        async with self.engine.connect() as conn:
            if self.is_postgresql:
                await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            else:
                await conn.execution_options(**{_READ_ONLY: True})
            async with conn.begin():
                yield conn

    async def ping(self) -> None:
        """Run the cheapest query there is; raise if the database does not answer (readiness checks)."""
        async with self.read() as conn:
            await conn.execute(text("SELECT 1"))

    async def checkpoint(self) -> bool:
        """Copy the WAL into the database and truncate it to nothing (SQLite; a no-op elsewhere).

        Old versions of rows live in the WAL until it is overwritten; truncating ends that history in the
        file (not on the disk's free blocks: that is what full-disk encryption is for). Return False if a
        reader kept it from finishing (the next checkpoint catches up).
        """
        if not self.is_sqlite:
            return True
        async with self._write_turn, self.engine.connect() as conn:
            # On the driver's connection: through SQLAlchemy it would run inside a transaction of its own,
            # which a checkpoint cannot finish in.
            driver = (await conn.get_raw_connection()).driver_connection
            if driver is None:
                return False
            cursor = await driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            row = await cursor.fetchone()
            await cursor.close()
        return row is not None and row[0] == 0

    async def vacuum(self, tables: Sequence[Table]) -> None:
        """Have PostgreSQL reclaim the dead versions of these tables' rows now (a no-op elsewhere).

        An UPDATE or DELETE on PostgreSQL leaves the old version of the row in the table's pages (a dead
        tuple) until VACUUM, or autovacuum whenever it gets there, prunes it and lets the space be reused.
        VACUUM does not overwrite the bytes: they stay until a new row lands on them (README: security
        model). It cannot run inside a transaction, so it runs on an autocommit connection; SKIP_LOCKED
        leaves out a table another VACUUM (autovacuum) is busy with, which does the same work.
        """
        if not self.is_postgresql or not tables:
            return
        preparer = self.engine.dialect.identifier_preparer
        names = ", ".join(preparer.format_table(table) for table in tables)
        async with self.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f"VACUUM (SKIP_LOCKED) {names}"))

    async def close(self) -> None:
        """Checkpoint (so no history is left in a WAL file) and dispose of every pooled connection."""
        if self.is_sqlite:
            with contextlib.suppress(Exception):
                await self.checkpoint()
        await self.dispose()

    async def dispose(self) -> None:
        """Dispose of every pooled connection, without a checkpoint (for a database another process owns)."""
        await self.engine.dispose()


def after_transaction(conn: AsyncConnection, work: Callable[[], None]) -> None:
    """Run `work` once the write transaction on `conn` has ended, committed or rolled back.

    For in-memory copies of rows (storage.users' cache): a reader that began before the commit still sees
    the old rows, so dropping the copies only while writing would let it put the old values back.
    """
    conn.info.setdefault(_AFTER_TRANSACTION, []).append(work)


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int, foreign_keys: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from the driver so writes can start with BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        # Deleted report text must not linger in free pages of a seized disk.
        cursor.execute("PRAGMA secure_delete=ON")
        # An accepted update or outbox row must survive power loss, not only a process crash.
        cursor.execute("PRAGMA synchronous=FULL")
        # Keep the WAL short: it holds old versions of rows (secure_delete does not reach it). Checkpoint
        # every ~4 MB of changes and cut the file back after each, instead of leaving it at its peak; the
        # scrub (bot.services.upkeep.history) checkpoints and truncates after every anonymous report and
        # purge.
        cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        cursor.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A deferred transaction that reads then writes can fail with SQLITE_BUSY at once, ignoring the
        # busy timeout; taking the write lock up front makes writers queue instead.
        if conn.get_execution_options().get(_READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


# PostgreSQL's SQLSTATEs that may pass if retried: a lost or refused connection (class 08), a
# serialization failure or deadlock (40001, 40P01), insufficient resources (class 53: too many connections,
# disk full, out of memory), a lock not available (55P03), a server shutting down, restarting or not yet
# accepting connections (57P01-57P03), an I/O error (class 58).
_TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "58")
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03"})
_TRANSIENT_SQLITE_WORDS = ("locked", "busy", "full", "disk i/o", "unable to open")


def is_transient(error: BaseException) -> bool:
    """Tell whether a storage error may pass if retried (locked, busy, full, I/O, a lost connection)."""
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True  # the connection broke (a restarted server): the pool opens a new one
        sqlstate = getattr(error.orig, "sqlstate", None)
        if isinstance(sqlstate, str):
            return sqlstate in _TRANSIENT_SQLSTATES or sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES
    if isinstance(error, OperationalError | DBAPIError):
        words = str(error.orig if isinstance(error, DBAPIError) else error).lower()
        return any(word in words for word in _TRANSIENT_SQLITE_WORDS)
    # asyncpg raises the socket's own error when the server cannot be reached at all.
    return isinstance(error, asyncio.TimeoutError | ConnectionError)
