"""The durable inbox: updates stored before Telegram is told they arrived."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.dialect import insert_or
from storage.schema import bot_state, inbox

OFFSET_KEY = "telegram_offset"


@dataclass(frozen=True)
class InboxRow:
    """One stored update waiting to be handled."""

    update_id: int
    payload: bytes
    attempts: int
    received_at: datetime | None = None


@dataclass(frozen=True)
class InboxCounts:
    """How many updates are in each state."""

    pending: int
    done: int
    failed: int


class InboxRepository:
    """SQL for the inbox and the polling offset."""

    async def store(
        self, conn: AsyncConnection, rows: Sequence[tuple[int, bytes]], offset: int, now: datetime
    ) -> None:
        """Insert new updates (ignoring ones already stored) and advance the offset, in one transaction."""
        if rows:
            stmt = insert_or(conn, inbox).on_conflict_do_nothing(index_elements=[inbox.c.update_id])
            await conn.execute(
                stmt,
                [
                    {
                        "update_id": update_id,
                        "payload": payload,
                        "status": "pending",
                        "attempts": 0,
                        "received_at": now,
                        "next_attempt_at": now,
                    }
                    for update_id, payload in rows
                ],
            )
        upsert = insert_or(conn, bot_state).values(key=OFFSET_KEY, value=str(offset))
        await conn.execute(
            upsert.on_conflict_do_update(index_elements=[bot_state.c.key], set_={"value": str(offset)})
        )

    async def store_pushed(
        self, conn: AsyncConnection, update_id: int, payload: bytes, now: datetime
    ) -> bool:
        """Insert one update Telegram pushed to the webhook; False if it was stored before (a resend, as
        Telegram makes when its request timed out): the row, pending or done, is the deduplication."""
        stmt = insert_or(conn, inbox).on_conflict_do_nothing(index_elements=[inbox.c.update_id])
        result = await conn.execute(
            stmt.values(
                update_id=update_id,
                payload=payload,
                status="pending",
                attempts=0,
                received_at=now,
                next_attempt_at=now,
            )
        )
        return bool(result.rowcount)

    async def offset(self, conn: AsyncConnection) -> int | None:
        """Return the next getUpdates offset, or None before the first update."""
        value = (await conn.execute(select(bot_state.c.value).where(bot_state.c.key == OFFSET_KEY))).scalar()
        return int(value) if value is not None else None

    async def due(self, conn: AsyncConnection, now: datetime, limit: int) -> list[InboxRow]:
        """Return pending updates whose time has come, oldest first."""
        result = await conn.execute(
            select(inbox.c.update_id, inbox.c.payload, inbox.c.attempts, inbox.c.received_at)
            .where(inbox.c.status == "pending", inbox.c.next_attempt_at <= now)
            .order_by(inbox.c.update_id)
            .limit(limit)
        )
        return [InboxRow(r.update_id, r.payload, r.attempts, r.received_at) for r in result]

    async def next_due_at(self, conn: AsyncConnection) -> datetime | None:
        """Return when the earliest pending update is due, or None."""
        due: datetime | None = (
            await conn.execute(select(func.min(inbox.c.next_attempt_at)).where(inbox.c.status == "pending"))
        ).scalar()
        return due

    async def mark_done(self, conn: AsyncConnection, update_ids: Sequence[int], now: datetime) -> None:
        """Mark updates handled and drop their payloads (they hold message text and ids)."""
        if update_ids:
            await conn.execute(
                update(inbox)
                .where(inbox.c.update_id == bindparam("uid"))
                .values(status="done", payload=None, done_at=now, last_error=None),
                [{"uid": u} for u in update_ids],
            )

    async def retry_later(
        self, conn: AsyncConnection, update_id: int, at: datetime, error: str, *, count: bool = True
    ) -> None:
        """Keep an update pending for another try (counting it as a failed attempt unless told not to)."""
        await conn.execute(
            update(inbox)
            .where(inbox.c.update_id == update_id)
            .values(attempts=inbox.c.attempts + (1 if count else 0), next_attempt_at=at, last_error=error)
        )

    async def mark_failed(self, conn: AsyncConnection, update_id: int, now: datetime, error: str) -> None:
        """Give up on an update that keeps failing; its payload is dropped like a handled one."""
        await conn.execute(
            update(inbox)
            .where(inbox.c.update_id == update_id)
            .values(
                status="failed", payload=None, done_at=now, attempts=inbox.c.attempts + 1, last_error=error
            )
        )

    async def purge_done(self, conn: AsyncConnection, before: datetime) -> int:
        """Delete handled rows older than `before`; the stored offset keeps deduplication working."""
        result = await conn.execute(
            delete(inbox).where(inbox.c.status.in_(("done", "failed")), inbox.c.done_at < before)
        )
        return result.rowcount or 0

    async def counts(self, conn: AsyncConnection) -> InboxCounts:
        """Return how many updates are pending, done and failed."""
        result = await conn.execute(select(inbox.c.status, func.count()).group_by(inbox.c.status))
        rows: dict[str, int] = {status: count for status, count in result.all()}
        return InboxCounts(rows.get("pending", 0), rows.get("done", 0), rows.get("failed", 0))
