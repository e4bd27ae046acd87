"""Saving a draft: one statement when the kind is known, and a draft of another kind is never touched."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import event

from bot.runtime.clock import FakeClock
from storage.database import Database
from storage.drafts import DraftRepository, StoredDraft


async def test_a_save_that_names_the_kind_is_one_statement(db: Database, clock: FakeClock) -> None:
    drafts, now = DraftRepository(), clock.now()
    expires = now + timedelta(days=1)
    async with db.write() as conn:
        await drafts.put(conn, StoredDraft("p1", "n1", "report", b"old", expires), now)
    ran: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        ran.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        async with db.write() as conn:
            assert await drafts.save(conn, "p1", "n1", b"new", now, expires, kind="report")
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
    assert [s.split()[0] for s in ran if not s.lstrip().upper().startswith(("BEGIN", "SELECT PG_"))] == [
        "UPDATE"
    ]
    async with db.read() as conn:
        stored = await drafts.get(conn, "p1", "report", now)
    assert stored is not None and stored.payload == b"new"


async def test_a_save_of_a_gone_or_other_draft_changes_nothing(db: Database, clock: FakeClock) -> None:
    drafts, now = DraftRepository(), clock.now()
    expires = now + timedelta(days=1)
    async with db.write() as conn:
        await drafts.put(conn, StoredDraft("p1", "n1", "sos", b"sos", expires), now)
        assert not await drafts.save(conn, "p1", "n1", b"x", now, expires, kind="report")  # another kind
        assert not await drafts.save(conn, "p1", "n2", b"x", now, expires, kind="sos")  # another nonce
        assert not await drafts.save(conn, "p2", "n1", b"x", now, expires, kind="sos")  # another person
        assert not await drafts.save(conn, "p1", "n1", b"x", expires, expires, kind="sos")  # expired
        assert await drafts.save(conn, "p1", "n1", b"kept", now, expires)  # the kind read from the row
    async with db.read() as conn:
        stored = await drafts.get(conn, "p1", "sos", now)
    assert stored is not None and stored.payload == b"kept"
