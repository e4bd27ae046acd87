"""SQLite's driver adapter: one trip to the driver's thread per statement, with SQLite's semantics kept."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiosqlite.core
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from storage.database import Database

_meta = MetaData()
_items = Table("items", _meta, Column("id", Integer, primary_key=True), Column("name", String, unique=True))


@pytest.fixture(autouse=True)
def sqlite_only(backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("the adapter is SQLite's")


@pytest.fixture
async def plain(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database.connect(f"sqlite+aiosqlite:///{tmp_path / 'plain.db'}", busy_timeout_ms=100)
    async with db.write() as conn:
        await conn.run_sync(_meta.create_all)
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every call made on a driver's thread, by the name of what it ran."""
    calls: list[str] = []
    original = aiosqlite.core.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: object, *args: object, **kwargs: object) -> object:
        calls.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(aiosqlite.core.Connection, "_execute", counted)
    yield calls


async def test_a_read_is_two_trips_and_a_write_one_more_per_statement(
    plain: Database, trips: list[str]
) -> None:
    async with plain.write() as conn:
        await conn.execute(insert(_items).values(id=1, name="a"))
    async with plain.read() as conn:
        assert (await conn.execute(select(_items.c.name))).scalars().all() == ["a"]
    assert len(trips) == 4  # BEGIN IMMEDIATE with the INSERT, commit; BEGIN with the SELECT, commit
    trips.clear()
    async with plain.write() as conn:
        await conn.execute(update(_items).values(name="b"))
        await conn.execute(insert(_items).values(id=2, name="c"))
    assert len(trips) == 3


async def test_a_transaction_that_runs_nothing_makes_no_trip(plain: Database, trips: list[str]) -> None:
    async with plain.write():
        pass
    async with plain.read():
        pass
    assert trips == []


async def test_rowcount_lastrowid_and_rows_are_those_of_the_statement(plain: Database) -> None:
    async with plain.write() as conn:
        inserted = await conn.execute(insert(_items).values(name="a"))
        assert inserted.inserted_primary_key == (1,)
        await conn.execute(insert(_items), [{"name": "b"}, {"name": "c"}])
        changed = await conn.execute(update(_items).where(_items.c.id > 1).values(name=_items.c.name + "!"))
        assert changed.rowcount == 2
        rows = (await conn.execute(select(_items.c.id, _items.c.name).order_by(_items.c.id))).all()
    assert [tuple(row) for row in rows] == [(1, "a"), (2, "b!"), (3, "c!")]


async def test_a_failed_statement_rolls_back_its_transaction_and_the_connection_goes_on(
    plain: Database,
) -> None:
    with pytest.raises(IntegrityError):
        async with plain.write() as conn:
            await conn.execute(insert(_items).values(id=1, name="a"))
            await conn.execute(insert(_items).values(id=2, name="a"))  # the same name: refused
    async with plain.read() as conn:
        assert (await conn.execute(select(_items))).all() == []
    async with plain.write() as conn:
        await conn.execute(insert(_items).values(id=3, name="a"))
    async with plain.read() as conn:
        assert (await conn.execute(select(_items.c.id))).scalars().all() == [3]


async def test_a_lock_another_process_holds_fails_the_first_statement_and_nothing_is_left_open(
    plain: Database, tmp_path: Path
) -> None:
    other = Database.connect(f"sqlite+aiosqlite:///{tmp_path / 'plain.db'}", busy_timeout_ms=100)
    try:
        async with other.write() as holder:
            await holder.execute(insert(_items).values(id=1, name="held"))
            with pytest.raises(OperationalError, match="locked"):
                async with plain.write() as conn:
                    await conn.execute(insert(_items).values(id=2, name="mine"))
            # The held BEGIN IMMEDIATE went with that statement and failed there: no half-begun
            # transaction is left on the pooled connection to swallow the next one.
            async with plain.read() as conn:
                assert (await conn.execute(select(_items))).all() == []
        async with plain.write() as conn:
            await conn.execute(insert(_items).values(id=2, name="mine"))
        async with plain.read() as conn:
            assert (await conn.execute(select(_items.c.id).order_by(_items.c.id))).scalars().all() == [1, 2]
    finally:
        await other.dispose()


async def test_pragmas_and_driver_sql_go_through_too(plain: Database) -> None:
    async with plain.read() as conn:
        assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
        assert (await conn.exec_driver_sql("SELECT 40 + 2")).scalar() == 42
