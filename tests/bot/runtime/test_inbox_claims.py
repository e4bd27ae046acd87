"""Inbox claims between instances on one database: one chat at a time, takeover after a claim lapses, and a
row this instance cannot decrypt (a peer's) left alone rather than failed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bot.runtime.clock import FakeClock
from bot.runtime.inbox import Dispatch, DispatchResult, DurableInbox
from bot.runtime.telegram_api import TelegramApi
from bot.security import Cipher, DataKey
from bot.security.bindings import update_binding
from bot.security.transient import TransientKeys
from bot.settings import SecretStr
from storage.database import Database
from storage.inbox import InboxRepository


def message(update_id: int, chat: int) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {"message_id": update_id, "chat": {"id": chat, "type": "private"}, "text": "hi"},
    }


class Instance:
    """One instance's inbox on the shared database, recording what it handled."""

    def __init__(
        self, db: Database, cipher: Cipher, clock: FakeClock, name: str, *, run: str = "run1", ahead: int = 32
    ) -> None:
        self.handled: list[int] = []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.inbox = DurableInbox(
            db=db,
            repo=InboxRepository(),
            api=TelegramApi("http://127.0.0.1:9", SecretStr("0:none")),  # never called: nothing polls
            cipher=cipher,
            clock=clock,
            dispatch=self._dispatch,
            owner=f"{name}:{run}",
            claim_ahead=ahead,
        )

    async def _dispatch(self, update: dict[str, Any]) -> DispatchResult:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        self.handled.append(update["update_id"])
        return DispatchResult(Dispatch.DONE)


async def store(db: Database, cipher: Cipher, clock: FakeClock, updates: list[dict[str, Any]]) -> None:
    repo = InboxRepository()
    async with db.write() as conn:
        for update in updates:
            sealed = cipher.encrypt_json(update, binding=update_binding(update["update_id"]), transient=True)
            await repo.store_pushed(conn, update["update_id"], sealed, clock.now())


async def statuses(db: Database) -> dict[int, str]:
    async with db.read() as conn:
        rows = (await conn.execute(text("SELECT update_id, status FROM inbox"))).all()
    return {update_id: status for update_id, status in rows}


def shared_cipher(key: DataKey, tmp_path: Path, name: str = "shared") -> Cipher:
    return Cipher(key, TransientKeys(tmp_path / f"{name}.keys", key))


async def test_a_chat_another_instance_handles_is_not_claimed(
    backend: str, db: Database, key: DataKey, clock: FakeClock, tmp_path: Path
) -> None:
    cipher = shared_cipher(key, tmp_path)
    # a has room for one update: chat 100's first.
    a, b = Instance(db, cipher, clock, "a", ahead=1), Instance(db, cipher, clock, "b")
    await store(db, cipher, clock, [message(1, 100), message(2, 100), message(3, 200)])
    a.gate = asyncio.Event()
    first = asyncio.create_task(a.inbox.dispatch_pending())
    await asyncio.wait_for(a.entered.wait(), 5)
    # b may take chat 200, never update 2: chat 100 is a's until its update 1 is done.
    await b.inbox.dispatch_pending()
    assert b.handled == [3]
    a.gate.set()
    await first
    assert a.handled == [1]
    await b.inbox.dispatch_pending()
    assert b.handled == [3, 2]
    assert set((await statuses(db)).values()) == {"done"}


async def test_the_rows_of_an_instance_that_died_are_taken_over_after_its_claim(
    backend: str, db: Database, key: DataKey, clock: FakeClock, tmp_path: Path
) -> None:
    cipher = shared_cipher(key, tmp_path)
    a, b = Instance(db, cipher, clock, "a"), Instance(db, cipher, clock, "b")
    await store(db, cipher, clock, [message(1, 100), message(2, 100), message(3, 300)])
    a.gate = asyncio.Event()
    dying = asyncio.create_task(a.inbox.dispatch_pending())
    await asyncio.wait_for(a.entered.wait(), 5)
    dying.cancel()  # killed mid-handler: nothing is marked, nothing released
    await asyncio.gather(dying, return_exceptions=True)
    await b.inbox.dispatch_pending()
    assert b.handled == []  # a's claims are live for another CLAIM_S
    clock.advance(16)
    await b.inbox.dispatch_pending()
    assert sorted(b.handled) == [1, 2, 3]
    assert b.handled.index(1) < b.handled.index(2)  # chat 100 in order
    assert set((await statuses(db)).values()) == {"done"}


async def test_a_restarted_instance_takes_its_own_rows_back_at_once(
    backend: str, db: Database, key: DataKey, clock: FakeClock, tmp_path: Path
) -> None:
    cipher = shared_cipher(key, tmp_path)
    a = Instance(db, cipher, clock, "a")
    await store(db, cipher, clock, [message(1, 100)])
    a.gate = asyncio.Event()
    dying = asyncio.create_task(a.inbox.dispatch_pending())
    await asyncio.wait_for(a.entered.wait(), 5)
    dying.cancel()
    await asyncio.gather(dying, return_exceptions=True)
    again = Instance(db, cipher, clock, "a", run="run2")
    await again.inbox.dispatch_pending()
    assert again.handled == [1]


async def test_a_peers_row_this_instance_cannot_decrypt_is_left_to_the_peer(
    backend: str, db: Database, key: DataKey, clock: FakeClock, tmp_path: Path
) -> None:
    mine, theirs = shared_cipher(key, tmp_path, "a"), shared_cipher(key, tmp_path, "b")
    a, b = Instance(db, mine, clock, "a"), Instance(db, theirs, clock, "b")
    await store(db, mine, clock, [message(1, 100)])
    await b.inbox.dispatch_pending()
    assert b.handled == []
    assert await statuses(db) == {1: "pending"}  # neither claimed nor failed by b
    async with db.read() as conn:
        assert (await conn.execute(text("SELECT owner FROM inbox"))).scalar() is None
    await a.inbox.dispatch_pending()
    assert a.handled == [1]
    assert await statuses(db) == {1: "done"}


async def test_a_clean_stop_gives_unhandled_claims_back(
    backend: str, db: Database, key: DataKey, clock: FakeClock, tmp_path: Path
) -> None:
    cipher = shared_cipher(key, tmp_path)
    a, b = Instance(db, cipher, clock, "a"), Instance(db, cipher, clock, "b")
    await store(db, cipher, clock, [message(1, 100), message(2, 100)])
    a.gate = asyncio.Event()
    running = asyncio.create_task(a.inbox.run_dispatch())
    await asyncio.wait_for(a.entered.wait(), 5)
    a.inbox.stop()
    a.gate.set()  # update 1 finishes; update 2, claimed behind it, is given back
    await asyncio.wait_for(running, 5)
    assert a.handled == [1]
    await b.inbox.dispatch_pending()  # at once, without waiting for a's claim to lapse
    assert b.handled == [2]
