"""The audit log: append-only rows, each carrying the hash of the one before."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Table, func, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.schema import (
    audit_log,
    bot_state,
    campaigns,
    cases,
    invites,
    report_events,
    report_notes,
    reports,
    team,
    user_roles,
)

# What only a database in use holds. Admin roles are not on the list: they are granted from the settings at
# every start, before the chain's first entry.
_IN_USE: tuple[Table, ...] = (reports, report_events, report_notes, team, invites, cases, campaigns)


@dataclass(frozen=True)
class AuditEntry:
    """One recorded action."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    outcome: str
    detail: str | None
    prev_hash: str
    hash: str


class AuditRepository:
    """SQL for the audit log; the caller computes hashes."""

    async def last(self, conn: AsyncConnection) -> AuditEntry | None:
        """Return the newest entry, or None for an empty log."""
        row = (await conn.execute(select(audit_log).order_by(audit_log.c.id.desc()).limit(1))).first()
        return _entry(row) if row is not None else None

    async def first(self, conn: AsyncConnection) -> AuditEntry | None:
        """Return the oldest entry, or None for an empty log."""
        row = (await conn.execute(select(audit_log).order_by(audit_log.c.id).limit(1))).first()
        return _entry(row) if row is not None else None

    async def seal(self, conn: AsyncConnection, key: str) -> str | None:
        """Read the seal under a row lock (PostgreSQL; SQLite has one writer anyway), so that a concurrent
        appender waits and the seal and the last row it reads next belong together."""
        stmt = select(bot_state.c.value).where(bot_state.c.key == key).with_for_update()
        return (await conn.execute(stmt)).scalar()

    async def in_use(self, conn: AsyncConnection) -> bool:
        """Tell whether the database has been used: it holds reports, their events or notes, a team, invites,
        cases, campaigns or coordinators."""
        probes = [select(literal(1)).select_from(table).limit(1) for table in _IN_USE]
        coordinators = select(literal(1)).select_from(user_roles).where(user_roles.c.role == "coordinator")
        probes.append(coordinators.limit(1))
        for probe in probes:
            if (await conn.execute(probe)).first() is not None:
                return True
        return False

    async def append(
        self,
        conn: AsyncConnection,
        *,
        entry_id: int,
        at: datetime,
        actor: str,
        action: str,
        target: str | None,
        outcome: str,
        detail: str | None,
        prev_hash: str,
        hash_: str,
    ) -> None:
        """Insert an entry with the id the chain gives it."""
        await conn.execute(
            audit_log.insert().values(
                id=entry_id,
                at=at,
                actor=actor,
                action=action,
                target=target,
                outcome=outcome,
                detail=detail,
                prev_hash=prev_hash,
                hash=hash_,
            )
        )

    async def latest(self, conn: AsyncConnection, limit: int) -> list[AuditEntry]:
        """Return the newest entries, newest first."""
        rows = await conn.execute(select(audit_log).order_by(audit_log.c.id.desc()).limit(limit))
        return [_entry(r) for r in rows]

    async def count(self, conn: AsyncConnection) -> int:
        """Return how many entries there are."""
        return int((await conn.execute(select(func.count()).select_from(audit_log))).scalar() or 0)

    async def walk(self, conn: AsyncConnection, batch: int = 1000) -> AsyncIterator[AuditEntry]:
        """Yield every entry, oldest first, a batch at a time."""
        after = 0
        while True:
            rows = (
                await conn.execute(
                    select(audit_log).where(audit_log.c.id > after).order_by(audit_log.c.id).limit(batch)
                )
            ).all()
            for row in rows:
                yield _entry(row)
            if len(rows) < batch:
                return
            after = rows[-1].id


def _entry(row: Row[Any]) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        at=row.at,
        actor=row.actor,
        action=row.action,
        target=row.target,
        outcome=row.outcome,
        detail=row.detail,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )
