"""The async engine: SQLite in WAL mode with foreign keys, a busy timeout and secure delete."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

_READ_ONLY = "jarchy_read_only"
BUSY_TIMEOUT_MS = 5000
WAL_AUTOCHECKPOINT_PAGES = (
    1000  # SQLite's default: a lower one costs a synchronous checkpoint per few commits
)
WAL_SIZE_LIMIT_BYTES = 0  # truncate to the smallest size at every checkpoint that restarts the WAL


class Database:
    """One engine and the two kinds of transaction the repositories use."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        # SQLite has one writer at a time. Writers of this process queue here, in order, instead of in
        # SQLite's busy handler, which sleeps in growing steps (up to 100 ms) while it waits for the lock.
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
        engine = create_async_engine(url, **engine_options)
        if engine.dialect.name == "sqlite":
            _configure_sqlite(engine, busy_timeout_ms, foreign_keys)
        return cls(engine)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """Open a write transaction (BEGIN IMMEDIATE on SQLite), committed on success. Do not nest."""
        if not self.is_sqlite:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_turn, self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """Open a read-only transaction that does not take SQLite's write lock."""
        async with self.engine.connect() as conn:
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

    async def close(self) -> None:
        """Checkpoint (so no history is left in a WAL file) and dispose of every pooled connection."""
        if self.is_sqlite:
            with contextlib.suppress(Exception):
                await self.checkpoint()
        await self.engine.dispose()


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


def is_transient(error: BaseException) -> bool:
    """Tell whether a storage error may pass if retried (locked, busy, full, I/O)."""
    if isinstance(error, OperationalError | DBAPIError):
        text = str(error.orig if isinstance(error, DBAPIError) else error).lower()
        return any(word in text for word in ("locked", "busy", "full", "disk i/o", "unable to open"))
    return isinstance(error, asyncio.TimeoutError)
