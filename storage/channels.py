"""The organisation's registered channels and groups."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.dialect import insert_or
from storage.schema import channels


class ChannelRepository:
    """SQL for channels."""

    async def add(self, conn: AsyncConnection, chat_id: int, now: datetime) -> bool:
        """Register a channel; False if it already was."""
        stmt = insert_or(conn, channels).values(chat_id=chat_id, added_at=now).on_conflict_do_nothing()
        return bool((await conn.execute(stmt)).rowcount)

    async def remove(self, conn: AsyncConnection, chat_id: int) -> None:
        """Forget a channel."""
        await conn.execute(delete(channels).where(channels.c.chat_id == chat_id))

    async def all(self, conn: AsyncConnection) -> list[int]:
        """Return every registered channel."""
        return list((await conn.execute(select(channels.c.chat_id).order_by(channels.c.chat_id))).scalars())
