"""The lease contract, on SQLite and on PostgreSQL: one holder at a time, renewals, takeover on expiry."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from bot.runtime.clock import FakeClock
from storage.database import Database
from storage.leases import LeaseRepository, PassLocks

LEASE = timedelta(seconds=15)


async def test_one_holder_at_a_time_until_the_lease_expires(db: Database, clock: FakeClock) -> None:
    leases = LeaseRepository()
    now = clock.now()
    async with db.write() as conn:
        assert await leases.acquire(conn, "poller", "a", now, now + LEASE)
        assert not await leases.acquire(conn, "poller", "b", now, now + LEASE)
        assert await leases.acquire(conn, "sender", "b", now, now + LEASE)  # another name, another lease
        assert await leases.holder(conn, "poller", now) == "a"
    later = now + LEASE + timedelta(seconds=1)
    async with db.write() as conn:
        assert await leases.holder(conn, "poller", later) is None  # expired: nobody holds it
        assert await leases.acquire(conn, "poller", "b", later, later + LEASE)
        assert not await leases.acquire(conn, "poller", "a", later, later + LEASE)
        assert await leases.holder(conn, "poller", later) == "b"


async def test_a_renewal_extends_the_lease(db: Database, clock: FakeClock) -> None:
    leases = LeaseRepository()
    now = clock.now()
    async with db.write() as conn:
        assert await leases.acquire(conn, "poller", "a", now, now + LEASE)
    renewed = now + timedelta(seconds=10)
    async with db.write() as conn:
        assert await leases.acquire(conn, "poller", "a", renewed, renewed + LEASE)
    after_first = now + LEASE + timedelta(seconds=1)
    async with db.write() as conn:
        assert not await leases.acquire(conn, "poller", "b", after_first, after_first + LEASE)
        lease = await leases.get(conn, "poller")
    assert lease is not None and lease.holder == "a" and lease.expires_at == renewed + LEASE


async def test_a_release_frees_the_lease_only_for_its_holder(db: Database, clock: FakeClock) -> None:
    leases = LeaseRepository()
    now = clock.now()
    async with db.write() as conn:
        assert await leases.acquire(conn, "poller", "a", now, now + LEASE)
        assert not await leases.release(conn, "poller", "b")
        assert await leases.holder(conn, "poller", now) == "a"
        assert await leases.release(conn, "poller", "a")
        assert await leases.holder(conn, "poller", now) is None
        assert await leases.acquire(conn, "poller", "b", now, now + LEASE)


async def test_racing_instances_get_exactly_one_lease(db: Database, clock: FakeClock) -> None:
    """Several engines on one database (several instances) ask at once: exactly one holds the lease."""
    engines = [Database.connect(db.engine.url) for _ in range(4)]
    leases = LeaseRepository()
    now = clock.now()

    async def ask(engine: Database, holder: str) -> bool:
        async with engine.write() as conn:
            return await leases.acquire(conn, "poller", holder, now, now + LEASE)

    try:
        won = await asyncio.gather(*(ask(engine, f"i{n}") for n, engine in enumerate(engines)))
    finally:
        for engine in engines:
            await engine.close()
    assert sum(won) == 1
    async with db.read() as conn:
        assert await leases.holder(conn, "poller", now) == f"i{won.index(True)}"


async def test_a_pass_runs_on_one_instance_at_a_time(db: Database, backend: str) -> None:
    """A second instance finds the pass taken and skips it; once it ends, the pass is free again."""
    other = Database.connect(db.engine.url)
    mine, theirs = PassLocks(db), PassLocks(other)
    try:
        async with mine.hold("reminders") as first:
            assert first
            async with mine.hold("reminders") as again:
                assert not again  # nor twice at once in one instance
            async with theirs.hold("reminders") as second:
                # SQLite has one instance by construction: nothing to exclude between instances.
                assert second is (backend != "postgresql")
            async with theirs.hold("purge") as unrelated:
                assert unrelated  # another pass is not held up
        async with theirs.hold("reminders") as later:
            assert later
    finally:
        await mine.close()
        await theirs.close()
        await other.close()


async def test_a_dead_instances_passes_are_free_again(db: Database, backend: str) -> None:
    """The locks live on a connection: an instance that dies (its connection closes) leaves none held."""
    other = Database.connect(db.engine.url)
    dying, alive = PassLocks(other), PassLocks(db)
    try:
        async with dying.hold("broadcast") as held:
            assert held
            await dying.close()  # what a kill -9 does to its connection
            async with alive.hold("broadcast") as taken:
                assert taken
    finally:
        await alive.close()
        await dying.close()
        await other.close()
