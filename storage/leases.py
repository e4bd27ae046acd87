"""Named leases: one instance holds a duty (polling, sending) until its lease expires or it lets go.

A lease is a row (name, holder, expires_at). Taking it is one upsert that succeeds only if the row is
missing, already ours, or expired, and says which by returning the holder it wrote: atomic on both
backends (SQLite has one writer; PostgreSQL's ON CONFLICT DO UPDATE locks the row it tests). Renewing is
taking it again before it expires. Times are the instances' clocks: hosts must keep them synchronised to
well within a lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, delete, literal, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.database import Database
from storage.dialect import insert_or
from storage.schema import leases
from storage.types import UtcTimestamp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lease:
    """Who holds a named lease, and until when."""

    name: str
    holder: str
    expires_at: datetime


class LeaseRepository:
    """SQL for the named leases."""

    async def acquire(
        self, conn: AsyncConnection, name: str, holder: str, now: datetime, until: datetime
    ) -> bool:
        """Take or renew the lease `name` for `holder` until `until`; False while another holder's lease
        has not expired."""
        stmt = insert_or(conn, leases).values(name=name, holder=holder, expires_at=until, acquired_at=now)
        stmt = stmt.on_conflict_do_update(
            index_elements=[leases.c.name],
            set_={
                "holder": holder,
                "expires_at": until,
                # A renewal keeps the moment it was first taken; a takeover starts a new one.
                "acquired_at": case(
                    (leases.c.holder == holder, leases.c.acquired_at), else_=literal(now, UtcTimestamp())
                ),
            },
            where=or_(leases.c.holder == holder, leases.c.expires_at <= now),
        ).returning(leases.c.holder)
        return (await conn.execute(stmt)).scalar() == holder

    async def release(self, conn: AsyncConnection, name: str, holder: str) -> bool:
        """Let go of the lease if `holder` has it (a clean stop: another instance takes over at once)."""
        result = await conn.execute(delete(leases).where(leases.c.name == name, leases.c.holder == holder))
        return bool(result.rowcount)

    async def get(self, conn: AsyncConnection, name: str) -> Lease | None:
        """Return the lease's row (expired or not), or None if nobody took it since the last release."""
        row = (
            await conn.execute(
                select(leases.c.name, leases.c.holder, leases.c.expires_at).where(leases.c.name == name)
            )
        ).first()
        return Lease(row.name, row.holder, row.expires_at) if row is not None else None

    async def holder(self, conn: AsyncConnection, name: str, now: datetime) -> str | None:
        """Return who holds the lease now, or None when it is free or expired."""
        lease = await self.get(conn, name)
        return lease.holder if lease is not None and lease.expires_at > now else None


class PassLocks:
    """Periodic passes that run on one instance at a time: `hold(name)` yields True if no other instance
    (nor this one) runs the pass now (it then runs here, however many transactions it takes), False if one
    does: skip it, the other is doing the work.

    PostgreSQL: session advisory locks, all on one connection of their own (a pass holding a pooled
    connection while it waits for another would let eight passes starve the pool), gone with the
    connection if the process dies. SQLite has one instance: only this process's own passes are kept apart.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._conn: AsyncConnection | None = None
        self._turn = asyncio.Lock()
        self._held: set[str] = set()

    @asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[bool]:
        """Yield whether this instance may run the pass `name` now."""
        if name in self._held:
            yield False
            return
        key = int.from_bytes(hashlib.sha256(f"jarchy.pass:{name}".encode()).digest()[:8], "big", signed=True)
        if self._db.is_postgresql and not await self._statement("SELECT pg_try_advisory_lock(:key)", key):
            yield False
            return
        self._held.add(name)
        try:
            yield True
        finally:
            self._held.discard(name)
            # No connection: the one that held the lock is gone, and the lock with it.
            if self._db.is_postgresql and self._conn is not None:
                await self._statement("SELECT pg_advisory_unlock(:key)", key)

    async def close(self) -> None:
        """Close the locks' connection (every lock it held is released with it)."""
        async with self._turn:
            conn, self._conn = self._conn, None
            if conn is not None:
                # Invalidated, not returned to the pool: the session (and its locks) must end with it.
                with contextlib.suppress(Exception):
                    await conn.invalidate()
                with contextlib.suppress(Exception):
                    await conn.close()

    async def _statement(self, sql: str, key: int) -> bool:
        async with self._turn:
            try:
                if self._conn is None:
                    opened = await self._db.engine.connect()
                    await opened.execution_options(isolation_level="AUTOCOMMIT")
                    self._conn = opened
                return bool((await self._conn.execute(text(sql), {"key": key})).scalar())
            except Exception:
                # A broken connection took its locks with it: start again on a new one next time.
                log.warning("the periodic passes' lock connection failed; opening a new one")
                broken, self._conn = self._conn, None
                if broken is not None:
                    with contextlib.suppress(Exception):
                        await broken.invalidate()
                    with contextlib.suppress(Exception):
                        await broken.close()
                return False
