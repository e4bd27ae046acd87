"""`jarchy db copy --to URL`: a SQLite installation moves to PostgreSQL with its sealed values byte for byte
and the bot runs on the copy as it did on the original; a copy cut short runs nothing until a run again has
made it equal to the source; the source is locked meanwhile, and left unusable (or deleted) afterwards."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bot.settings import Settings
from storage import migrations
from storage.copy import copy_database
from storage.database import Database
from tests.e2e.test_reports import walk_to_review
from tests.fakebot import FakeBotApi
from tests.support.bots import RunningBot
from tests.support.database import (
    create_postgres_database,
    drop_postgres_database,
    postgres_required,
    postgres_url,
    read_rows,
)
from tests.support.people import ADMIN, COORDINATORS, Person
from tests.support.settings import make_settings, run_jarchy

SEALED = "SELECT id, body FROM reports ORDER BY id"


@pytest.mark.sqlite_only("the source is a SQLite installation; the target, a PostgreSQL database of its own")
async def test_a_sqlite_installation_moves_to_postgresql_intact(fake: FakeBotApi, tmp_path: Path) -> None:
    if postgres_url() is None:
        if postgres_required():
            pytest.fail("PostgreSQL is required here but JARCHY_TEST_POSTGRES_URL is not set")
        pytest.skip("no PostgreSQL: set JARCHY_TEST_POSTGRES_URL to run this test")
    settings = make_settings(
        tmp_path, api_url=fake.url, admin_ids=frozenset({ADMIN}), coordinator_chat_id=COORDINATORS
    )
    assert settings.database_url.startswith("sqlite")
    bot = RunningBot(settings)
    await bot.start()
    try:
        reporter = Person(fake, 611)
        await walk_to_review(fake, reporter)
        await reporter.tap("submit")
        await fake.wait_for("sendMessage", chat_id=COORDINATORS, timeout=15)
        await bot.quiet(fake)
    finally:
        await bot.stop()
    before = await read_rows(settings.database_url, SEALED)
    assert len(before) == 1

    target = await create_postgres_database(migrated=False)  # the copy migrates it
    try:
        code, output = await run_jarchy(settings, "db", "copy", "--to", target)
        assert code == 0, output
        assert "copied and verified" in output
        if make_url(target).password:  # on the command line: said to be readable by others
            assert "holds a password" in output, output
        assert await read_rows(target, SEALED) == before  # sealed values byte for byte, ids kept
        # The old file still holds everything: nothing may start on it, nor copy it again.
        for command in (("export", "--out", str(tmp_path / "out.csv")), ("db", "copy", "--to", target)):
            code, output = await run_jarchy(settings, *command)
            assert code == 2 and "was copied to PostgreSQL" in output, output

        moved = replace(settings, database_url=target)
        bot = RunningBot(moved, seed=False)
        await bot.start()
        try:
            await bot.started_services()
            second = Person(fake, 612)
            await walk_to_review(fake, second)
            await second.tap("submit")
            # A new report takes the next id: the sequences start after the copied rows.
            await fake.wait_for("sendMessage", chat_id=COORDINATORS, count=2, timeout=15)
            await bot.quiet(fake)
        finally:
            await bot.stop()
        ids = [row[0] for row in await read_rows(target, SEALED)]
        assert ids == [before[0][0], before[0][0] + 1]
    finally:
        await drop_postgres_database(target)


def _need_postgres() -> None:
    if postgres_url() is None:
        if postgres_required():
            pytest.fail("PostgreSQL is required here but JARCHY_TEST_POSTGRES_URL is not set")
        pytest.skip("no PostgreSQL: set JARCHY_TEST_POSTGRES_URL to run this test")


async def _installation(fake: FakeBotApi, tmp_path: Path) -> Settings:
    """A SQLite installation with one submitted report, its bot stopped."""
    settings = make_settings(
        tmp_path, api_url=fake.url, admin_ids=frozenset({ADMIN}), coordinator_chat_id=COORDINATORS
    )
    bot = RunningBot(settings)
    await bot.start()
    try:
        reporter = Person(fake, 611)
        await walk_to_review(fake, reporter)
        await reporter.tap("submit")
        await fake.wait_for("sendMessage", chat_id=COORDINATORS, timeout=15)
        await bot.quiet(fake)
    finally:
        await bot.stop()
    return settings


class _Cut(Exception):
    """The copy killed half-way."""


@pytest.mark.sqlite_only("the source is a SQLite installation; the target, a PostgreSQL database of its own")
async def test_a_copy_cut_short_refuses_to_run_and_a_resumed_copy_makes_it_equal(
    fake: FakeBotApi, tmp_path: Path
) -> None:
    _need_postgres()
    settings = await _installation(fake, tmp_path)
    target = await create_postgres_database(migrated=False)
    try:
        source, copy = Database.connect(settings.database_url), Database.connect(target)
        try:
            await migrations.upgrade(copy)

            def cut(table: str, _written: int) -> None:
                if table == "outbox":  # bot_state, inbox and outbox are in; reports are not
                    raise _Cut

            with pytest.raises(_Cut):
                await copy_database(source, copy, progress=cut)
        finally:
            await source.close()
            await copy.close()
        # The sequence moved with the batch: a new row cannot take the id of a copied one.
        (top, after), *_ = await read_rows(
            target, "SELECT max(id), (SELECT last_value FROM outbox_id_seq) FROM outbox"
        )
        assert after > top
        # Nothing starts on the half copy.
        moved = replace(settings, database_url=target)
        code, output = await run_jarchy(moved, "export", "--out", str(tmp_path / "out.csv"))
        assert code == 2 and "unfinished copy" in output, output

        # Meanwhile the source changes by UPDATEs and DELETEs (triage, /forget, purges), and the target
        # holds a row the source never had.
        writer = Database.connect(settings.database_url)
        async with writer.write() as conn:
            await conn.execute(
                text("UPDATE reports SET reporter = NULL, contact_chat = NULL, status = 'closed'")
            )
            await conn.execute(text("DELETE FROM inbox WHERE update_id = (SELECT min(update_id) FROM inbox)"))
        await writer.close()
        stale = Database.connect(target)
        async with stale.write() as conn:
            await conn.execute(text("INSERT INTO bot_state (key, value) VALUES ('stale', 'x')"))
        await stale.close()

        code, output = await run_jarchy(settings, "db", "copy", "--to", target)
        assert code == 0 and "copied and verified" in output, output
        for query in (
            "SELECT id, status, reporter IS NULL, contact_chat IS NULL, body FROM reports ORDER BY id",
            "SELECT update_id FROM inbox ORDER BY update_id",
            "SELECT key, value FROM bot_state WHERE key NOT IN ('copy_source_id', 'moved_to_postgresql') "
            "ORDER BY key",
        ):
            assert await read_rows(target, query) == await read_rows(settings.database_url, query), query
        assert (
            await read_rows(target, "SELECT 1 FROM bot_state WHERE key IN ('stale', 'copy_in_progress')")
            == []
        )
    finally:
        await drop_postgres_database(target)


@pytest.mark.sqlite_only("the source is a SQLite installation; the target, a PostgreSQL database of its own")
async def test_a_copy_refuses_a_target_that_holds_another_database(fake: FakeBotApi, tmp_path: Path) -> None:
    _need_postgres()
    settings = await _installation(fake, tmp_path)
    target = await create_postgres_database(migrated=True)
    try:
        other = Database.connect(target)
        async with other.write() as conn:
            await conn.execute(
                text("INSERT INTO bot_state (key, value) VALUES ('coordinator_chat_id', '-1')")
            )
        await other.close()
        code, output = await run_jarchy(settings, "db", "copy", "--to", target)
        assert code == 2 and "not empty" in output, output
        assert await read_rows(target, "SELECT count(*) FROM reports") == [(0,)]
    finally:
        await drop_postgres_database(target)


@pytest.mark.sqlite_only("the source is a SQLite installation; the target, a PostgreSQL database of its own")
async def test_retire_source_empties_and_deletes_the_sqlite_file(fake: FakeBotApi, tmp_path: Path) -> None:
    _need_postgres()
    settings = await _installation(fake, tmp_path)
    path = Path(make_url(settings.database_url).database or "")
    assert path.is_file()  # noqa: ASYNC240 - a test's own file
    target = await create_postgres_database(migrated=False)
    try:
        # The URL from the environment, not the command line (where its password would show).
        env = {"MY_TARGET": target}
        os.environ.update(env)
        try:
            code, output = await run_jarchy(
                settings, "db", "copy", "--to-env", "MY_TARGET", "--retire-source"
            )
        finally:
            del os.environ["MY_TARGET"]
        assert code == 0 and "retired the source" in output, output
        assert "holds a password" not in output
        left = [p.name for p in path.parent.iterdir() if p.name.startswith(path.name)]
        assert left == []
        assert await read_rows(target, "SELECT count(*) FROM reports") == [(1,)]
        # A start still pointing at the deleted file stops, instead of beginning an empty installation.
        code, output = await run_jarchy(settings, "export", "--out", str(tmp_path / "out.csv"))
        assert code == 2 and "moved to PostgreSQL and deleted" in output, output
        # `jarchy check` says so too, and leaves no empty file behind either.
        code, output = await run_jarchy(settings, "check")
        assert code == 1 and "moved to PostgreSQL and deleted" in output, output
        left = [p.name for p in path.parent.iterdir() if p.name.startswith(path.name)]
        assert left == []
    finally:
        await drop_postgres_database(target)


@pytest.mark.sqlite_only("the source is a SQLite installation")
async def test_db_copy_refuses_the_same_file_by_another_path(fake: FakeBotApi, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_url=fake.url)
    path = Path(make_url(settings.database_url).database or "")
    same = f"sqlite+aiosqlite:///{path.parent}/../{path.parent.name}/./{path.name}"
    code, output = await run_jarchy(settings, "db", "copy", "--to", same)
    assert code == 2 and "another database" in output, output


@pytest.mark.sqlite_only("the source is a SQLite installation; the target, a PostgreSQL database of its own")
async def test_the_copy_holds_the_sources_write_lock_throughout(fake: FakeBotApi, tmp_path: Path) -> None:
    _need_postgres()
    settings = await _installation(fake, tmp_path)
    path = Path(make_url(settings.database_url).database or "")
    refused: list[str] = []

    def write_meanwhile(_table: str, _written: int) -> None:
        # What a bot started despite the data directory's lock would do: it must wait, not write.
        with contextlib.closing(sqlite3.connect(path, timeout=0, isolation_level=None)) as other:
            try:
                other.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as error:
                refused.append(str(error))
            else:
                other.execute("ROLLBACK")
                refused.append("")

    target = await create_postgres_database(migrated=False)
    try:
        source, copy = Database.connect(settings.database_url), Database.connect(target)
        try:
            await migrations.upgrade(copy)
            await copy_database(source, copy, progress=write_meanwhile)
        finally:
            await source.close()
            await copy.close()
        assert refused and all("locked" in reason for reason in refused), refused
    finally:
        await drop_postgres_database(target)
