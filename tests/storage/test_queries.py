"""Repository queries whose SQL differs between the backends, or could: each answer must be the same."""

from __future__ import annotations

from datetime import timedelta

from bot.runtime.clock import FakeClock
from bot.security import Cipher
from storage.database import Database
from storage.outbox import NewOutboxRow, OutboxRepository
from storage.report_queries import ReportQueries
from tests.workspace_seed import Seed, seed_reports


async def test_weekly_counts_fall_in_whole_weeks_after_the_start(
    db: Database, cipher: Cipher, clock: FakeClock
) -> None:
    since = clock.now()
    for days in (0, 4, 6.9, 7, 10, 13.99):
        await seed_reports(db, cipher, [Seed()], since + timedelta(days=days))
    async with db.read() as conn:
        weekly = await ReportQueries().weekly(conn, since)
    # 4 and 6.9 days in are week 0, not rounded up to week 1 (PostgreSQL rounds a numeric cast).
    assert sorted(weekly) == [(0, "detention", "new", 3), (1, "detention", "new", 3)]


async def test_a_batch_insert_counts_only_the_rows_it_added(db: Database, clock: FakeClock) -> None:
    def row(uid: str, dedupe: str | None) -> NewOutboxRow:
        return NewOutboxRow(
            uid=uid, kind="test", method="sendMessage", payload=b"p", chat_key="c", chat_kind="private",
            recipient=None, priority=0, due_at=clock.now(), dedupe_key=dedupe,
        )  # fmt: skip

    repo = OutboxRepository()
    async with db.write() as conn:
        assert await repo.insert(conn, [row("a", "k1"), row("b", None), row("c", "k2")], clock.now()) == 3
        assert await repo.insert(conn, [row("d", "k1"), row("e", "k3"), row("f", "k2")], clock.now()) == 1
        assert await repo.counts(conn) == {"pending": 4}
