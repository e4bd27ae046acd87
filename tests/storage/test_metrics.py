"""The monitoring queries: depths by kind and status, reminder lag, broadcast progress, alert latencies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from storage.campaigns import CampaignRepository, campaign_ref
from storage.database import Database
from storage.metrics import Depth, MetricsRepository
from storage.outbox import NewOutboxRow, OutboxRepository
from storage.schema import outbox

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _row(uid: str, kind: str, due: datetime, ref: str | None = None) -> NewOutboxRow:
    return NewOutboxRow(
        uid=uid,
        kind=kind,
        method="sendMessage",
        payload=b"sealed",
        chat_key=f"chat-{uid}",
        chat_kind="private",
        recipient=None,
        priority=0,
        due_at=due,
        ref=ref,
    )


async def test_the_figures_count_what_waits_and_time_what_went(db: Database) -> None:
    repo, rows = MetricsRepository(), OutboxRepository()
    async with db.write() as conn:
        campaign_id = await CampaignRepository().create(conn, "Free Aziza", "someone", b"sealed", NOW)
        await CampaignRepository().set(conn, campaign_id, NOW, status="sending")
        ref = campaign_ref(campaign_id)
        await rows.insert(
            conn,
            [
                _row("r1", "reminder", NOW - timedelta(minutes=5)),  # due five minutes ago, still waiting
                _row("r2", "reminder", NOW + timedelta(hours=1)),  # not due yet: no lag
                _row("c1", "campaign", NOW, ref=ref),
                _row("c2", "campaign", NOW, ref=ref),
                _row("a1", "alert_card", NOW - timedelta(seconds=3)),
                _row("o1", "campaign", NOW, ref="C-999999"),  # no live campaign of that number
            ],
            NOW - timedelta(seconds=3),
        )
        await conn.execute(
            update(outbox).where(outbox.c.uid.in_(("a1", "c1"))).values(status="sent", sent_at=NOW)
        )
    async with db.read() as conn:
        depths = await repo.outbox_by_kind(conn)
        assert Depth("reminder", "pending", 2) in depths and Depth("alert_card", "sent", 1) in depths
        assert await repo.oldest_due(conn, ("reminder",), NOW) == NOW - timedelta(minutes=5)
        assert await repo.oldest_due(conn, ("campaign_reminder",), NOW) is None
        assert sorted(await repo.broadcasts(conn)) == [(ref, "pending", 1), (ref, "sent", 1)]
        latencies = await repo.sent_since(conn, ("alert_card",), NOW - timedelta(minutes=1))
        assert latencies == [(NOW - timedelta(seconds=3), NOW)]
        assert await repo.sent_since(conn, ("alert_card",), NOW) == []
        assert await repo.inbox_by_status(conn) == {}
