"""The storage contract, on SQLite and on PostgreSQL: migrations, transactions, inbox and outbox."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from bot.runtime.clock import FakeClock
from storage import migrations
from storage.database import Database
from storage.inbox import InboxRepository
from storage.outbox import NewOutboxRow, OutboxRepository, Outcome
from storage.users import UserRepository


async def test_migrations_from_empty_create_every_table(empty_database_url: str) -> None:
    db = Database.connect(empty_database_url)
    try:
        assert await migrations.current_revision(db) is None
        await migrations.upgrade(db)
        await migrations.upgrade(db)  # a second run is a no-op
        assert await migrations.current_revision(db) == migrations.head_revision()
        async with db.read() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        assert {"users", "user_roles", "inbox", "outbox", "bot_state"} <= tables
    finally:
        await db.close()


async def test_downgrade_and_upgrade_again(empty_database_url: str) -> None:
    from alembic import command

    db = Database.connect(empty_database_url)
    try:
        await migrations.upgrade(db)

        def down(sync_conn: object) -> None:
            config = migrations.alembic_config()
            config.attributes["connection"] = sync_conn
            command.downgrade(config, "base")

        async with db.write() as conn:
            await conn.run_sync(down)
        assert await migrations.current_revision(db) is None
        await migrations.upgrade(db)
        assert await migrations.current_revision(db) == migrations.head_revision()
    finally:
        await db.close()


@pytest.mark.sqlite_only("PRAGMAs are SQLite's")
async def test_sqlite_runs_in_wal_with_foreign_keys_and_busy_timeout(db: Database) -> None:
    async with db.read() as conn:
        assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
        assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
        assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() == 5000
        assert (await conn.execute(text("PRAGMA secure_delete"))).scalar() == 1


async def test_writers_take_turns_across_instances(db: Database, clock: FakeClock) -> None:
    """Two engines on one database (two processes, two instances): a write waits for the other's commit,
    and then sees it, so read-then-write code needs no retry loop."""
    other = Database.connect(db.engine.url)
    users = UserRepository()
    holding, release = asyncio.Event(), asyncio.Event()
    order: list[str] = []

    async def first() -> None:
        async with db.write() as conn:
            await users.touch(conn, "p1", "ru", clock.now())
            holding.set()
            await release.wait()
            order.append("first commits")

    async def second() -> None:
        await holding.wait()
        async with other.write() as conn:
            # SQLite's lock comes with the first statement (storage.sqlite_driver), PostgreSQL's at once.
            user = await users.get(conn, "p1")
            order.append("second writes")
            assert user is not None  # the first writer's commit, seen by the waiting one
            await users.touch(conn, "p2", "en", clock.now())

    try:
        task = asyncio.create_task(second())
        holder = asyncio.create_task(first())
        await holding.wait()
        await asyncio.sleep(0.3)  # long enough for the second to reach the lock, were there none
        assert order == []
        release.set()
        await asyncio.wait_for(asyncio.gather(holder, task), timeout=10)
        assert order == ["first commits", "second writes"]
    finally:
        await other.close()


async def test_a_read_sees_one_snapshot_and_may_not_write(db: Database, clock: FakeClock) -> None:
    users = UserRepository()
    async with db.write() as conn:
        await users.touch(conn, "p1", "ru", clock.now())
    async with db.read() as conn:
        before = (await conn.execute(text("SELECT count(*) FROM users"))).scalar()
        async with db.write() as writer:  # another connection commits meanwhile
            await users.touch(writer, "p2", "en", clock.now())
        assert (await conn.execute(text("SELECT count(*) FROM users"))).scalar() == before == 1
    async with db.read() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM users"))).scalar() == 2


async def test_a_read_transaction_refuses_to_write_on_postgresql(db: Database, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite's reader would take the write lock instead; only PostgreSQL can refuse")
    with pytest.raises(DBAPIError, match="read-only transaction"):
        async with db.read() as conn:
            await conn.execute(text("DELETE FROM users"))


async def test_a_failed_transaction_leaves_nothing_half_written(db: Database, clock: FakeClock) -> None:
    users = UserRepository()
    try:
        async with db.write() as conn:
            await users.touch(conn, "p1", "ru", clock.now())
            await users.grant(conn, "p1", "superuser", clock.now())  # raises: unknown role
    except ValueError:
        pass
    async with db.read() as conn:
        assert await users.get(conn, "p1") is None


async def test_roles_need_an_existing_user(db: Database, clock: FakeClock) -> None:
    users = UserRepository()
    async with db.write() as conn:
        await users.ensure_exists(conn, "admin1", clock.now())
        await users.grant(conn, "admin1", "admin", clock.now())
        await users.grant(conn, "admin1", "admin", clock.now())
    async with db.read() as conn:
        user = await users.get(conn, "admin1")
    assert user is not None and user.roles == frozenset({"admin"})


async def test_inbox_takes_update_ids_past_32_bits(db: Database, clock: FakeClock) -> None:
    inbox = InboxRepository()
    big = 2**31 + 7
    async with db.write() as conn:
        await inbox.store(conn, [(big, b"a")], big + 1, clock.now())
        assert await inbox.store_pushed(conn, 2**40, b"b", clock.now())
    async with db.read() as conn:
        assert [r.update_id for r in await inbox.due(conn, clock.now(), 10)] == [big, 2**40]
        assert await inbox.offset(conn) == big + 1


async def test_inbox_deduplicates_by_update_id_and_keeps_the_offset(db: Database, clock: FakeClock) -> None:
    inbox = InboxRepository()
    async with db.write() as conn:
        assert await inbox.store(conn, [(1, b"a"), (2, b"b")], 3, clock.now()) == {1, 2}
    async with db.write() as conn:
        # Only what it inserted: the dispatcher hands those on without reading them back.
        assert await inbox.store(conn, [(2, b"again"), (3, b"c")], 4, clock.now()) == {3}
        assert await inbox.store(conn, [(3, b"and again")], 4, clock.now()) == set()
    async with db.read() as conn:
        due = await inbox.due(conn, clock.now(), 10)
        assert [(r.update_id, r.payload) for r in due] == [(1, b"a"), (2, b"b"), (3, b"c")]
        assert await inbox.offset(conn) == 4
    async with db.write() as conn:
        await inbox.mark_done(conn, [1, 2], clock.now())
    async with db.read() as conn:
        assert [r.update_id for r in await inbox.due(conn, clock.now(), 10)] == [3]
        payloads = (
            (await conn.execute(text("SELECT payload FROM inbox WHERE update_id IN (1, 2)"))).scalars().all()
        )
        assert payloads == [None, None]


def _row(
    uid: str, *, priority: int = 0, recipient: str | None = None, dedupe: str | None = None, clock: FakeClock
) -> NewOutboxRow:
    return NewOutboxRow(
        uid=uid, kind="test", method="sendMessage", payload=b"p", chat_key=f"chat-{uid}", chat_kind="private",
        recipient=recipient, priority=priority, due_at=clock.now(), dedupe_key=dedupe,
    )  # fmt: skip


async def test_outbox_claims_most_urgent_first_with_a_lease(db: Database, clock: FakeClock) -> None:
    repo = OutboxRepository()
    async with db.write() as conn:
        await repo.insert(
            conn,
            [_row("a", clock=clock), _row("b", priority=80, clock=clock), _row("c", clock=clock)],
            clock.now(),
        )
    async with db.write() as conn:
        claimed = await repo.claim(conn, "w1", clock.now(), clock.now() + timedelta(seconds=60), 2)
    assert [r.uid for r in claimed] == ["b", "a"]
    assert all(r.attempts == 1 for r in claimed)
    async with db.write() as conn:
        again = await repo.claim(conn, "w2", clock.now(), clock.now() + timedelta(seconds=60), 10)
    assert [r.uid for r in again] == ["c"]


async def test_expired_leases_come_back_and_live_ones_do_not(db: Database, clock: FakeClock) -> None:
    repo = OutboxRepository()
    async with db.write() as conn:
        await repo.insert(conn, [_row("a", clock=clock)], clock.now())
        await repo.claim(conn, "dead-worker", clock.now(), clock.now() + timedelta(seconds=60), 10)
    clock.advance(59)
    async with db.write() as conn:
        assert await repo.reclaim_expired(conn, clock.now()) == 0
    clock.advance(2)
    async with db.write() as conn:
        assert await repo.reclaim_expired(conn, clock.now()) == 1
        claimed = await repo.claim(conn, "w2", clock.now(), clock.now() + timedelta(seconds=60), 10)
    assert [r.uid for r in claimed] == ["a"] and claimed[0].attempts == 2


async def test_outcomes_of_a_lost_lease_are_ignored(db: Database, clock: FakeClock) -> None:
    repo = OutboxRepository()
    async with db.write() as conn:
        await repo.insert(conn, [_row("a", clock=clock)], clock.now())
        (row,) = await repo.claim(conn, "w1", clock.now(), clock.now() + timedelta(seconds=5), 10)
    clock.advance(10)
    async with db.write() as conn:
        await repo.reclaim_expired(conn, clock.now())
        await repo.claim(conn, "w2", clock.now(), clock.now() + timedelta(seconds=5), 10)
        await repo.apply(conn, "w1", [Outcome(id=row.id, status="sent", message_id=7, sent_at=clock.now())])
        (status,) = await repo.statuses(conn, [row.id])
    assert status.status == "sending" and status.message_id is None


async def test_sent_rows_drop_their_payload_and_keep_the_message_id(db: Database, clock: FakeClock) -> None:
    repo = OutboxRepository()
    async with db.write() as conn:
        await repo.insert(conn, [_row("a", clock=clock)], clock.now())
        (row,) = await repo.claim(conn, "w", clock.now(), clock.now() + timedelta(seconds=5), 10)
        await repo.apply(conn, "w", [Outcome(id=row.id, status="sent", message_id=99, sent_at=clock.now())])
        (status,) = await repo.statuses(conn)
        payload = (await conn.execute(text("SELECT payload FROM outbox"))).scalar()
    assert (status.status, status.message_id, payload) == ("sent", 99, None)


async def test_dedupe_key_makes_enqueueing_idempotent(db: Database, clock: FakeClock) -> None:
    repo = OutboxRepository()
    async with db.write() as conn:
        assert await repo.insert(conn, [_row("a", dedupe="reminder:1:7d", clock=clock)], clock.now()) == 1
        assert await repo.insert(conn, [_row("b", dedupe="reminder:1:7d", clock=clock)], clock.now()) == 0
        assert await repo.counts(conn) == {"pending": 1}


async def test_an_outbox_row_colliding_on_anything_but_its_dedupe_key_raises(
    db: Database, clock: FakeClock
) -> None:
    # Only the dedupe key makes an insert a no-op: a clash on the id or the uid is a bug to hear about, not
    # an alert to lose (on PostgreSQL, ON CONFLICT DO NOTHING without a target swallowed every clash).
    repo = OutboxRepository()
    async with db.write() as conn:
        assert await repo.insert(conn, [_row("a", dedupe="k1", clock=clock)], clock.now()) == 1
    with pytest.raises(IntegrityError):
        async with db.write() as conn:
            await repo.insert(conn, [_row("a", dedupe="k2", clock=clock)], clock.now())
    if db.is_postgresql:
        async with db.write() as conn:  # a sequence left behind copied ids (an interrupted `db copy`)
            await conn.execute(text("SELECT setval(pg_get_serial_sequence('outbox', 'id'), 1, false)"))
        with pytest.raises(IntegrityError):
            async with db.write() as conn:
                await repo.insert(conn, [_row("b", dedupe="k3", clock=clock)], clock.now())
    async with db.read() as conn:
        assert await repo.counts(conn) == {"pending": 1}


async def test_cancelling_takes_claimed_rows_from_their_worker_too(db: Database, clock: FakeClock) -> None:
    repo = OutboxRepository()
    async with db.write() as conn:
        await repo.insert(conn, [_row(u, recipient="r1", clock=clock) for u in "abc"], clock.now())
        (claimed,) = await repo.claim(conn, "w", clock.now(), clock.now() + timedelta(seconds=5), 1)
        assert await repo.cancel_pending(conn, recipient="r1") == 3
        # The worker's later outcome no longer applies: the row was taken from it.
        await repo.apply(conn, "w", [Outcome(id=claimed.id, status="pending", due_at=clock.now())])
        assert await repo.counts(conn) == {"cancelled": 3}


async def test_retention_purges_only_old_handled_inbox_rows(db: Database, clock: FakeClock) -> None:
    from bot.services.upkeep.retention import Retention

    inbox = InboxRepository()
    async with db.write() as conn:
        await inbox.store(conn, [(1, b"a"), (2, b"b"), (3, b"c")], 4, clock.now())
        await inbox.mark_done(conn, [1, 2], clock.now())
    retention = Retention(db, inbox, clock)
    clock.advance(3600)
    assert await retention.purge() == 0
    clock.advance(86_400)
    assert await retention.purge() == 2
    async with db.read() as conn:
        assert await inbox.counts(conn) == (await inbox.counts(conn)).__class__(pending=1, done=0, failed=0)
        assert await inbox.offset(conn) == 4


async def test_expired_rows_are_never_claimed(db: Database, clock: FakeClock) -> None:
    from dataclasses import replace

    repo = OutboxRepository()
    async with db.write() as conn:
        row = replace(_row("late", clock=clock), expires_at=clock.now() + timedelta(seconds=30))
        await repo.insert(conn, [row, _row("fine", clock=clock)], clock.now())
    clock.advance(60)
    async with db.write() as conn:
        claimed = await repo.claim(conn, "w", clock.now(), clock.now() + timedelta(seconds=60), 10)
        counts = await repo.counts(conn)
    assert [r.uid for r in claimed] == ["fine"]
    assert counts == {"sending": 1, "cancelled": 1}


async def test_the_migrations_build_exactly_the_schema(db: Database) -> None:
    """storage/schema.py and the Alembic migrations describe the same tables, columns and indexes."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from storage.schema import metadata

    def compare(sync_conn: Any) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(sync_conn), metadata))

    async with db.read() as conn:
        differences = await conn.run_sync(compare)
    assert differences == []


async def test_the_scrubs_vacuum_reaches_every_transient_table(db: Database, backend: str) -> None:
    """On PostgreSQL the scrub vacuums the tables it rewrote (old versions are dead tuples until then);
    on SQLite it checkpoints instead and vacuum is a no-op."""
    from storage.sealed_rows import SealedRowRepository

    tables = SealedRowRepository.tables
    names = sorted(t.name for t in tables)

    async def vacuumed() -> dict[str, int]:
        async with db.read() as conn:
            rows = await conn.execute(
                text("SELECT relname, vacuum_count FROM pg_stat_user_tables WHERE relname = ANY(:names)"),
                {"names": names},
            )
            return {name: int(count) for name, count in rows}

    await db.vacuum(tables)  # nothing to check on SQLite but that it is harmless
    if backend != "postgresql":
        return
    before = await vacuumed()
    await db.vacuum(tables)
    after = await vacuumed()
    assert sorted(after) == names
    assert all(after[name] == before.get(name, 0) + 1 for name in names), (before, after)


async def test_a_lost_connection_is_transient(db: Database, backend: str) -> None:
    """A restarted server (or SQLite's busy lock) fails an update that a retry would pass."""
    from storage.database import is_transient

    if backend != "postgresql":
        pytest.skip("SQLite has no server connection to lose; its busy errors are tested in tests/e2e")
    async with db.engine.connect() as victim, db.engine.connect() as killer:
        pid = (await victim.execute(text("SELECT pg_backend_pid()"))).scalar()
        await killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        await killer.commit()
        with pytest.raises(DBAPIError) as lost:
            await victim.execute(text("SELECT 1"))
    assert is_transient(lost.value)
    with pytest.raises(DBAPIError) as wrong:
        async with db.read() as conn:
            await conn.execute(text("SELECT 1 / 0"))
    assert not is_transient(wrong.value)
