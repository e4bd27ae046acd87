"""The unit of work commits only when told to, and what waits for the commit runs after it, never after
a rollback."""

from __future__ import annotations

import pytest

from bot.runtime.clock import FakeClock
from bot.runtime.outbox import Outbox
from bot.runtime.unit_of_work import UnitOfWork
from bot.security import Cipher, Pseudonymizer
from storage.database import Database
from storage.outbox import OutboxRepository
from storage.state import StateRepository

state = StateRepository()


class Woken:
    """Records the delivery worker's wake-ups."""

    def __init__(self) -> None:
        self.times = 0

    def __call__(self, urgent: bool) -> None:
        self.times += 1


@pytest.fixture
def woken() -> Woken:
    return Woken()


@pytest.fixture
def outbox(cipher: Cipher, pseudonyms: Pseudonymizer, clock: FakeClock, woken: Woken) -> Outbox:
    return Outbox(OutboxRepository(), cipher, pseudonyms, clock, on_enqueued=woken)


async def stored(db: Database) -> str | None:
    async with db.read() as conn:
        return await state.get(conn, "k")


async def test_after_commit_work_runs_after_the_commit(db: Database, outbox: Outbox, woken: Woken) -> None:
    ran: list[str | None] = []
    async with UnitOfWork(db, outbox) as uow:
        await state.put(uow.conn, "k", "v")
        uow.wake_delivery()
        # The work sees the transaction ended: the write turn is free for what it starts.
        uow.after_commit(lambda: ran.append("locked" if db._write_turn.locked() else "free"))
        await uow.commit()
        assert ran == [] and woken.times == 0  # not yet: the block has not ended
    assert ran == ["free"]
    assert woken.times == 1
    assert await stored(db) == "v"


async def test_leaving_without_a_commit_rolls_back_and_runs_nothing(
    db: Database, outbox: Outbox, woken: Woken
) -> None:
    ran: list[int] = []
    async with UnitOfWork(db, outbox) as uow:
        await state.put(uow.conn, "k", "v")
        uow.wake_delivery()
        uow.after_commit(lambda: ran.append(1))
    assert ran == [] and woken.times == 0
    assert await stored(db) is None


async def test_an_exception_inside_rolls_back_and_queues_nothing(
    db: Database, outbox: Outbox, woken: Woken
) -> None:
    ran: list[int] = []
    with pytest.raises(RuntimeError, match="boom"):
        async with UnitOfWork(db, outbox) as uow:
            await state.put(uow.conn, "k", "v")
            uow.wake_delivery()
            uow.after_commit(lambda: ran.append(1))
            raise RuntimeError("boom")
    assert ran == [] and woken.times == 0
    assert await stored(db) is None
    # The write turn was given back: the next unit of work runs.
    async with UnitOfWork(db, outbox) as uow:
        await state.put(uow.conn, "k", "again")
        await uow.commit()
    assert await stored(db) == "again"


async def test_a_failed_follow_up_is_raised_yet_the_commit_stands(db: Database, outbox: Outbox) -> None:
    def fail() -> None:
        raise OSError("gone")

    ran: list[int] = []
    with pytest.raises(OSError, match="gone"):
        async with UnitOfWork(db, outbox) as uow:
            await state.put(uow.conn, "k", "v")
            uow.after_commit(fail)
            uow.after_commit(lambda: ran.append(1))
            await uow.commit()
    assert ran == [1]
    assert await stored(db) == "v"


async def test_after_commit_work_may_be_awaited(db: Database, outbox: Outbox) -> None:
    # Deleting evidence files is async (a thread per unlink) and must wait for the commit as well.
    ran: list[int] = []

    async def delete_files() -> None:
        ran.append(1)

    async with UnitOfWork(db, outbox) as uow:
        uow.after_commit(delete_files)
        await uow.commit()
    assert ran == [1]
