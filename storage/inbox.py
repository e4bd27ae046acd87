"""The durable inbox: updates stored before Telegram is told they arrived."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, case, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.dialect import Prebuilt
from storage.schema import bot_state, inbox

OFFSET_KEY = "telegram_offset"

# Built once: these run for every update (storage.dialect.Prebuilt).
# An INSERT that leaves a stored update as it is and returns the ids of the rows it made.
_STORE_NEW = Prebuilt(
    lambda insert: (
        insert(inbox).on_conflict_do_nothing(index_elements=[inbox.c.update_id]).returning(inbox.c.update_id)
    )
)


def _offset_upsert(insert: Any) -> Any:
    stmt = insert(bot_state).values(key=bindparam("offset_key"), value=bindparam("offset"))
    return stmt.on_conflict_do_update(index_elements=[bot_state.c.key], set_={"value": stmt.excluded.value})


_STORE_OFFSET = Prebuilt(_offset_upsert)
_OFFSET = select(bot_state.c.value).where(bot_state.c.key == bindparam("offset_key"))
_PENDING = (
    select(inbox.c.update_id, inbox.c.payload, inbox.c.attempts, inbox.c.received_at)
    .where(inbox.c.status == "pending")
    .order_by(inbox.c.update_id)
    .limit(bindparam("limit"))
)
_DUE = _PENDING.where(inbox.c.next_attempt_at <= bindparam("now"))
_LATER = _PENDING.where(inbox.c.next_attempt_at > bindparam("now"))
_NEXT_DUE = select(func.min(inbox.c.next_attempt_at)).where(inbox.c.status == "pending")
_MARK_DONE = (
    update(inbox)
    .where(inbox.c.update_id == bindparam("uid"))
    .values(
        status="done", payload=None, done_at=bindparam("at"), last_error=None, owner=None, lease_until=None
    )
)


@dataclass(frozen=True)
class InboxRow:
    """One stored update waiting to be handled."""

    update_id: int
    payload: bytes
    attempts: int
    received_at: datetime | None = None


@dataclass(frozen=True)
class HeldRow:
    """A pending update another instance has claimed and is handling now."""

    update_id: int
    payload: bytes | None


@dataclass(frozen=True)
class InboxCounts:
    """How many updates are in each state."""

    pending: int
    done: int
    failed: int


def _new_row(update_id: int, payload: bytes, now: datetime) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "payload": payload,
        "status": "pending",
        "attempts": 0,
        "received_at": now,
        "next_attempt_at": now,
    }


class InboxRepository:
    """SQL for the inbox and the polling offset."""

    def __init__(self, offset_key: str = OFFSET_KEY) -> None:
        """`offset_key`: each bot has its own getUpdates offset (a backup bot in use keeps its own)."""
        self._offset_key = offset_key

    async def store(
        self, conn: AsyncConnection, rows: Sequence[tuple[int, bytes]], offset: int, now: datetime
    ) -> set[int]:
        """Insert new updates (ignoring ones already stored) and advance the offset, in one transaction;
        return the ids of the updates it inserted."""
        new: set[int] = set()
        if rows:
            result = await conn.execute(
                _STORE_NEW(conn), [_new_row(update_id, payload, now) for update_id, payload in rows]
            )
            new.update(result.scalars())
        await conn.execute(_STORE_OFFSET(conn), {"offset_key": self._offset_key, "offset": str(offset)})
        return new

    async def store_pushed(
        self, conn: AsyncConnection, update_id: int, payload: bytes, now: datetime
    ) -> bool:
        """Insert one update Telegram pushed to the webhook; False if it was stored before (a resend, as
        Telegram makes when its request timed out): the row, pending or done, is the deduplication."""
        result = await conn.execute(_STORE_NEW(conn), _new_row(update_id, payload, now))
        return result.first() is not None

    async def offset(self, conn: AsyncConnection) -> int | None:
        """Return the next getUpdates offset, or None before the first update."""
        value = (await conn.execute(_OFFSET, {"offset_key": self._offset_key})).scalar()
        return int(value) if value is not None else None

    async def due(self, conn: AsyncConnection, now: datetime, limit: int) -> list[InboxRow]:
        """Return pending updates whose time has come, oldest first."""
        result = await conn.execute(_DUE, {"now": now, "limit": limit})
        return [InboxRow(r.update_id, r.payload, r.attempts, r.received_at) for r in result]

    async def later(self, conn: AsyncConnection, now: datetime, limit: int) -> list[InboxRow]:
        """Return pending updates put off until after `now`, oldest first."""
        result = await conn.execute(_LATER, {"now": now, "limit": limit})
        return [InboxRow(r.update_id, r.payload, r.attempts, r.received_at) for r in result]

    async def next_due_at(self, conn: AsyncConnection, instance: str | None = None) -> datetime | None:
        """Return when the earliest pending update is due, or None; with `instance`, an update another
        instance holds is due to this one only when that instance's claim runs out."""
        if instance is None:
            earliest: datetime | None = (await conn.execute(_NEXT_DUE)).scalar()
            return earliest
        foreign = and_(inbox.c.lease_until.is_not(None), ~_of_instance(instance))
        due_at = case(
            (and_(foreign, inbox.c.lease_until > inbox.c.next_attempt_at), inbox.c.lease_until),
            else_=inbox.c.next_attempt_at,
        )
        due: datetime | None = (
            await conn.execute(select(func.min(due_at)).where(inbox.c.status == "pending"))
        ).scalar()
        return due

    async def claimable(
        self, conn: AsyncConnection, now: datetime, instance: str, limit: int
    ) -> list[InboxRow]:
        """Return due pending updates nobody else holds (unclaimed, claimed by a run of `instance`, or
        claimed by an instance whose claim ran out), oldest first."""
        result = await conn.execute(
            select(inbox.c.update_id, inbox.c.payload, inbox.c.attempts, inbox.c.received_at)
            .where(
                inbox.c.status == "pending",
                inbox.c.next_attempt_at <= now,
                or_(inbox.c.owner.is_(None), inbox.c.lease_until <= now, _of_instance(instance)),
            )
            .order_by(inbox.c.update_id)
            .limit(limit)
        )
        return [InboxRow(r.update_id, r.payload, r.attempts, r.received_at) for r in result]

    async def held_by_others(
        self, conn: AsyncConnection, now: datetime, instance: str, limit: int = 1000
    ) -> list[HeldRow]:
        """Return pending updates other instances hold under a live claim (their chats are theirs)."""
        result = await conn.execute(
            select(inbox.c.update_id, inbox.c.payload)
            .where(
                inbox.c.status == "pending",
                inbox.c.owner.is_not(None),
                inbox.c.lease_until > now,
                ~_of_instance(instance),
            )
            .order_by(inbox.c.update_id)
            .limit(limit)
        )
        return [HeldRow(r.update_id, r.payload) for r in result]

    async def claim(
        self, conn: AsyncConnection, update_ids: Sequence[int], owner: str, until: datetime
    ) -> None:
        """Make `owner` the one handling these updates until `until` (renewed while it handles them)."""
        if update_ids:
            await conn.execute(
                update(inbox)
                .where(inbox.c.update_id.in_(list(update_ids)), inbox.c.status == "pending")
                .values(owner=owner, lease_until=until)
            )

    async def renew(self, conn: AsyncConnection, owner: str, until: datetime) -> int:
        """Extend every claim `owner` holds on pending updates; return how many."""
        result = await conn.execute(
            update(inbox).where(inbox.c.owner == owner, inbox.c.status == "pending").values(lease_until=until)
        )
        return result.rowcount or 0

    async def release_owned(self, conn: AsyncConnection, owner: str) -> int:
        """Give back the pending updates `owner` claimed and did not handle (a clean stop)."""
        result = await conn.execute(
            update(inbox)
            .where(inbox.c.owner == owner, inbox.c.status == "pending")
            .values(owner=None, lease_until=None)
        )
        return result.rowcount or 0

    async def mark_done(self, conn: AsyncConnection, update_ids: Sequence[int], now: datetime) -> None:
        """Mark updates handled and drop their payloads (they hold message text and ids)."""
        if update_ids:
            await conn.execute(_MARK_DONE, [{"uid": u, "at": now} for u in update_ids])

    async def retry_later(
        self, conn: AsyncConnection, update_id: int, at: datetime, error: str, *, count: bool = True
    ) -> None:
        """Keep an update pending for another try (counting it as a failed attempt unless told not to)."""
        await conn.execute(
            update(inbox)
            .where(inbox.c.update_id == update_id)
            .values(
                attempts=inbox.c.attempts + (1 if count else 0),
                next_attempt_at=at,
                last_error=error,
                owner=None,
                lease_until=None,
            )
        )

    async def mark_failed(self, conn: AsyncConnection, update_id: int, now: datetime, error: str) -> None:
        """Give up on an update that keeps failing; its payload is dropped like a handled one."""
        await conn.execute(
            update(inbox)
            .where(inbox.c.update_id == update_id)
            .values(
                status="failed",
                payload=None,
                done_at=now,
                attempts=inbox.c.attempts + 1,
                last_error=error,
                owner=None,
                lease_until=None,
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


def _of_instance(instance: str) -> Any:
    # An owner is "instance:run"; any run of this instance is this instance (a restart takes its rows).
    return inbox.c.owner.startswith(f"{instance}:", autoescape=True)
