"""Small named values the bot keeps between runs (the bound coordinators' chat, the polling offset)."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.dialect import insert_or
from storage.schema import bot_state

COORDINATOR_CHAT = "coordinator_chat_id"


class StateRepository:
    """Key-value reads and writes."""

    async def get(self, conn: AsyncConnection, key: str) -> str | None:
        """Return a value, or None."""
        return (await conn.execute(select(bot_state.c.value).where(bot_state.c.key == key))).scalar()

    async def put(self, conn: AsyncConnection, key: str, value: str) -> None:
        """Set a value."""
        stmt = insert_or(conn, bot_state).values(key=key, value=value)
        await conn.execute(
            stmt.on_conflict_do_update(index_elements=[bot_state.c.key], set_={"value": value})
        )

    async def put_if_absent(self, conn: AsyncConnection, key: str, value: str) -> str:
        """Set a value unless one is there; return the value the key holds now."""
        stmt = insert_or(conn, bot_state).values(key=key, value=value)
        await conn.execute(stmt.on_conflict_do_nothing(index_elements=[bot_state.c.key]))
        stored = await self.get(conn, key)
        return value if stored is None else stored

    async def delete(self, conn: AsyncConnection, key: str) -> None:
        """Remove a value."""
        await conn.execute(delete(bot_state).where(bot_state.c.key == key))
