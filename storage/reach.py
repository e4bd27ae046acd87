"""SQL for the sealed reach records: which bots can write to a person (bot.services.access.fleet)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.dialect import insert_or
from storage.schema import reach, users


@dataclass(frozen=True)
class ReachRow:
    """One person's sealed record, and whether the main bot still reaches them (they never blocked it)."""

    pseudonym: str
    sealed: bytes | None
    active: bool


class ReachRepository:
    """Reads and writes of the reach table."""

    async def get(self, conn: AsyncConnection, pseudonym: str) -> bytes | None:
        """Return a person's sealed record, or None."""
        stmt = select(reach.c.sealed).where(reach.c.pseudonym == pseudonym)
        return (await conn.execute(stmt)).scalar()

    async def put(
        self, conn: AsyncConnection, pseudonym: str, chat_key: str, sealed: bytes, now: datetime
    ) -> None:
        """Write a person's record (the person's users row must exist)."""
        # The day only, as for users: an exact time beside an anonymous report received the same minute
        # would point at its author.
        now = now.replace(hour=0, minute=0, second=0, microsecond=0)
        stmt = insert_or(conn, reach).values(
            pseudonym=pseudonym, chat_key=chat_key, sealed=sealed, updated_at=now
        )
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[reach.c.pseudonym],
                set_={"chat_key": chat_key, "sealed": sealed, "updated_at": now},
            )
        )

    async def by_chat_keys(
        self, conn: AsyncConnection, chat_keys: Sequence[str]
    ) -> dict[str, tuple[str, bytes]]:
        """Return (pseudonym, sealed record) by private chat key, for the keys that have one."""
        if not chat_keys:
            return {}
        stmt = select(reach.c.chat_key, reach.c.pseudonym, reach.c.sealed).where(
            reach.c.chat_key.in_(sorted(set(chat_keys)))
        )
        return {row.chat_key: (row.pseudonym, row.sealed) for row in await conn.execute(stmt)}

    async def everyone(self, conn: AsyncConnection) -> list[ReachRow]:
        """Return every person the bot knows, with their record if they have one (for the census)."""
        stmt = select(users.c.pseudonym, users.c.active, reach.c.sealed).select_from(
            users.outerjoin(reach, reach.c.pseudonym == users.c.pseudonym)
        )
        return [ReachRow(row.pseudonym, row.sealed, bool(row.active)) for row in await conn.execute(stmt)]

    async def records(self, conn: AsyncConnection) -> list[tuple[str, bytes]]:
        """Return every (pseudonym, sealed record)."""
        stmt = select(reach.c.pseudonym, reach.c.sealed).order_by(reach.c.pseudonym)
        return [(row.pseudonym, row.sealed) for row in await conn.execute(stmt)]
