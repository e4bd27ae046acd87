"""Which gated actions each update already committed, so a retried update does not act twice."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.dialect import insert_or
from storage.schema import acted_updates, inbox


class ActedRepository:
    """SQL for the acted_updates ledger."""

    async def claim(
        self, conn: AsyncConnection, update_id: int, seq: int, action: str, now: datetime
    ) -> bool:
        """Record the `seq`-th action of an update in the caller's transaction; False if it was recorded
        (and so committed) by an earlier run of the same update."""
        stmt = insert_or(conn, acted_updates).on_conflict_do_nothing(
            index_elements=[acted_updates.c.update_id, acted_updates.c.seq]
        )
        result = await conn.execute(stmt, {"update_id": update_id, "seq": seq, "action": action, "at": now})
        # Ignored when an earlier run (or a concurrent one, on another instance) recorded it first.
        return bool(result.rowcount)

    async def purge_before(self, conn: AsyncConnection, before: datetime) -> int:
        """Delete entries older than `before` whose update is no longer pending (it cannot run again);
        a pending one (the bot was down) keeps them however old, or its next run would act again."""
        pending = select(inbox.c.update_id).where(inbox.c.status == "pending")
        stmt = delete(acted_updates).where(
            acted_updates.c.at < before, acted_updates.c.update_id.not_in(pending)
        )
        return (await conn.execute(stmt)).rowcount or 0
