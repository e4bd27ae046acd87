"""`jarchy db copy --to URL`: a SQLite installation moves to PostgreSQL with its sealed values byte for byte,
a second run copies nothing more, and the bot runs on the copy as it did on the original."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

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
        assert await read_rows(target, SEALED) == before  # sealed values byte for byte, ids kept
        # Cut short or not, running it again finishes the copy and changes nothing already there.
        code, output = await run_jarchy(settings, "db", "copy", "--to", target)
        assert code == 0 and "reports: 1 rows (0 copied now)" in output, output

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
