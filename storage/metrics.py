"""Read-only figures for monitoring (bot.metrics): queue depths, held alerts, reminder lag, broadcast
progress and alert latencies. Counts and times only: nothing here names a person or reads a payload."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.campaigns import campaign_ref
from storage.schema import campaigns, inbox, outbox

# A campaign is being delivered from the first batch queued until its last row is out.
_BROADCASTING = ("sending", "sent")


@dataclass(frozen=True)
class Depth:
    """How many rows of one kind are in one status."""

    kind: str
    status: str
    count: int


class MetricsRepository:
    """The queries behind /metrics; each is one aggregate over an indexed table."""

    async def inbox_by_status(self, conn: AsyncConnection) -> dict[str, int]:
        """Updates in the inbox by status (pending, done, failed)."""
        rows = await conn.execute(select(inbox.c.status, func.count()).group_by(inbox.c.status))
        return {status: count for status, count in rows.all()}

    async def outbox_by_kind(self, conn: AsyncConnection) -> list[Depth]:
        """Outbox rows by kind and status."""
        rows = await conn.execute(
            select(outbox.c.kind, outbox.c.status, func.count()).group_by(outbox.c.kind, outbox.c.status)
        )
        return [Depth(kind, status, count) for kind, status, count in rows.all()]

    async def oldest_due(self, conn: AsyncConnection, kinds: Sequence[str], now: datetime) -> datetime | None:
        """When the longest-waiting row of these kinds fell due, if one is due and not yet out."""
        query = select(func.min(outbox.c.due_at)).where(
            outbox.c.kind.in_(kinds), outbox.c.status.in_(("pending", "sending")), outbox.c.due_at <= now
        )
        value: datetime | None = (await conn.execute(query)).scalar()
        return value

    async def broadcasts(self, conn: AsyncConnection) -> list[tuple[str, str, int]]:
        """Campaigns being delivered: (their ref, a status of their rows, how many)."""
        live = select(campaigns.c.id).where(campaigns.c.status.in_(_BROADCASTING))
        ids = [row_id for (row_id,) in (await conn.execute(live)).all()]
        if not ids:
            return []
        refs = [campaign_ref(campaign_id) for campaign_id in ids]
        rows = await conn.execute(
            select(outbox.c.ref, outbox.c.status, func.count())
            .where(outbox.c.ref.in_(refs))
            .group_by(outbox.c.ref, outbox.c.status)
        )
        return [(str(ref), status, count) for ref, status, count in rows.all()]

    async def sent_since(
        self, conn: AsyncConnection, kinds: Sequence[str], since: datetime, limit: int = 10_000
    ) -> list[tuple[datetime, datetime]]:
        """(queued, sent) of rows of these kinds sent after `since`, oldest first."""
        rows = await conn.execute(
            select(outbox.c.created_at, outbox.c.sent_at)
            .where(outbox.c.kind.in_(kinds), outbox.c.status == "sent", outbox.c.sent_at > since)
            .order_by(outbox.c.sent_at)
            .limit(limit)
        )
        return [(created, sent) for created, sent in rows.all()]
