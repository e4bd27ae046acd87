"""SQLite's reads step on the event loop's thread (no hop to the driver's thread per call); writes do not."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.database import Database
from tests.support.backends import POSTGRESQL


async def stepping_thread(conn: AsyncConnection) -> int:
    """Return the id of the thread SQLite runs this connection's statements on."""
    driver: Any = (await conn.get_raw_connection()).driver_connection
    driver._conn.create_function("jarchy_thread", 0, threading.get_ident)
    return int((await conn.execute(text("SELECT jarchy_thread()"))).scalar_one())


async def test_reads_run_on_the_loop_s_thread_and_writes_on_the_driver_s(db: Database, backend: str) -> None:
    if backend == POSTGRESQL:
        pytest.skip("SQLite's driver only")
    async with db.read() as conn:
        assert await stepping_thread(conn) == threading.get_ident()
        # Still the read-only snapshot of before: the pragmas of every connection apply to these too.
        assert (await conn.execute(text("PRAGMA secure_delete"))).scalar_one() == 1
        assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar_one() > 0
    async with db.write() as conn:
        assert await stepping_thread(conn) != threading.get_ident()


async def test_an_inline_read_sees_a_commit_made_after_it_began_only_in_the_next_read(db: Database) -> None:
    async with db.write() as conn:
        await conn.execute(text("CREATE TABLE probe (x INTEGER)"))
        await conn.execute(text("INSERT INTO probe VALUES (1)"))
    async with db.read() as reader:
        assert (await reader.execute(text("SELECT count(*) FROM probe"))).scalar_one() == 1
        async with db.write() as conn:
            await conn.execute(text("INSERT INTO probe VALUES (2)"))
        assert (await reader.execute(text("SELECT count(*) FROM probe"))).scalar_one() == 1
    async with db.read() as reader:
        assert (await reader.execute(text("SELECT count(*) FROM probe"))).scalar_one() == 2
