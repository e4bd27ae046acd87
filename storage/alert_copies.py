"""Where each report's card is shown: the coordinators' chat, resends, on-duty and opened copies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.dialect import insert_or
from storage.schema import alert_copies, duty, user_roles


@dataclass(frozen=True)
class CardCopy:
    """One message showing a report's card; `chat` is encrypted, bound to `uid`."""

    uid: str
    chat_key: str
    chat: bytes
    message_id: int
    holder: str | None = None


@dataclass(frozen=True)
class OnDuty:
    """A coordinator on duty; `chat` is their encrypted private chat id."""

    pseudonym: str
    chat: bytes
    since: datetime


class AlertCopyRepository:
    """SQL for card copies."""

    async def add(
        self,
        conn: AsyncConnection,
        report_id: int,
        copy: CardCopy,
        now: datetime,
    ) -> bool:
        """Remember a copy; return False when this message was known already."""
        stmt = insert_or(conn, alert_copies).values(
            report_id=report_id,
            uid=copy.uid,
            chat_key=copy.chat_key,
            chat=copy.chat,
            message_id=copy.message_id,
            holder=copy.holder,
            created_at=now,
        )
        result = await conn.execute(stmt.on_conflict_do_nothing())
        return bool(result.rowcount)

    async def add_many(
        self, conn: AsyncConnection, copies: Sequence[tuple[int, CardCopy]], now: datetime
    ) -> None:
        """Remember copies (report id, copy) in one statement; those known already are left as they are."""
        if not copies:
            return
        rows = [
            {
                "report_id": report_id,
                "uid": copy.uid,
                "chat_key": copy.chat_key,
                "chat": copy.chat,
                "message_id": copy.message_id,
                "holder": copy.holder,
                "created_at": now,
            }
            for report_id, copy in copies
        ]
        await conn.execute(insert_or(conn, alert_copies).on_conflict_do_nothing(), rows)

    async def for_report(self, conn: AsyncConnection, report_id: int) -> list[CardCopy]:
        """Return every copy of a report's card, oldest first."""
        rows = await conn.execute(
            select(
                alert_copies.c.uid,
                alert_copies.c.chat_key,
                alert_copies.c.chat,
                alert_copies.c.message_id,
                alert_copies.c.holder,
            )
            .where(alert_copies.c.report_id == report_id)
            .order_by(alert_copies.c.id)
        )
        return [CardCopy(*r) for r in rows]

    async def is_copy(self, conn: AsyncConnection, report_id: int, chat_key: str, message_id: int) -> bool:
        """Tell whether a message is one of the report's card copies."""
        stmt = select(alert_copies.c.id).where(
            alert_copies.c.report_id == report_id,
            alert_copies.c.chat_key == chat_key,
            alert_copies.c.message_id == message_id,
        )
        return (await conn.execute(stmt)).first() is not None

    async def forget_holder(self, conn: AsyncConnection, holder: str) -> int:
        """Drop the private copies a coordinator holds (their role was revoked): no more edits to them."""
        result = await conn.execute(delete(alert_copies).where(alert_copies.c.holder == holder))
        return result.rowcount or 0


class DutyRepository:
    """SQL for who is on duty."""

    async def start(self, conn: AsyncConnection, pseudonym: str, chat: bytes, now: datetime) -> bool:
        """Put someone on duty; return False if they already were."""
        stmt = insert_or(conn, duty).values(pseudonym=pseudonym, chat=chat, since=now)
        result = await conn.execute(stmt.on_conflict_do_nothing())
        return bool(result.rowcount)

    async def stop(self, conn: AsyncConnection, pseudonym: str) -> bool:
        """Take someone off duty; return False if they were not on it."""
        result = await conn.execute(delete(duty).where(duty.c.pseudonym == pseudonym))
        return bool(result.rowcount)

    async def on_duty(self, conn: AsyncConnection) -> list[OnDuty]:
        """Return everyone on duty who still holds a role, longest first (someone whose role was taken
        gets nothing more, even before their duty row is cleared)."""
        holders = select(user_roles.c.pseudonym).where(user_roles.c.role.in_(("admin", "coordinator")))
        rows = await conn.execute(
            select(duty.c.pseudonym, duty.c.chat, duty.c.since)
            .where(duty.c.pseudonym.in_(holders))
            .order_by(duty.c.since)
        )
        return [OnDuty(*r) for r in rows]

    async def get(self, conn: AsyncConnection, pseudonym: str) -> OnDuty | None:
        """Return someone's duty, or None."""
        row = (
            await conn.execute(
                select(duty.c.pseudonym, duty.c.chat, duty.c.since).where(duty.c.pseudonym == pseudonym)
            )
        ).first()
        return OnDuty(*row) if row is not None else None
