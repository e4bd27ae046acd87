"""Where alerts go is hard to change quietly: the configured chat cannot be moved from Telegram, the first
chat is bound at once, and a move needs a second admin; every move is told to the old chat and every admin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bot.services.reports.body import alert_input
from bot.services.triage.alerts import BIND_REQUEST
from bot.wiring import Services
from messages import catalogs
from storage.database import Database
from storage.reports import ReportRepository
from tests.fakebot import FakeBotApi
from tests.support.bots import RunningBot
from tests.support.people import ADMIN, COORDINATORS
from tests.support.settings import make_settings
from tests.workspace_seed import Seed, seed_reports

SECOND = 5002
FIRST_GROUP, SECOND_GROUP = -100401, -100402


async def started(bot: RunningBot, fake: FakeBotApi) -> Services:
    """Wait until the bot (started or restarted just now) polls, then return its services."""
    await fake.wait_for("getUpdates", count=len(fake.sent("getUpdates")) + 1, timeout=30)
    return bot.app_services()


async def bind(fake: FakeBotApi, user_id: int, chat_id: int) -> str:
    """Send /bind in a group as `user_id`; return the bot's answer there."""
    before = len(fake.sent("sendMessage", chat_id=chat_id))
    fake.add_message(user_id=user_id, chat_id=chat_id, chat_type="supergroup", text="/bind")
    calls = await fake.wait_for("sendMessage", chat_id=chat_id, count=before + 1, timeout=15)
    return str(calls[-1].params["text"])


async def stored_chat(services: Services) -> str | None:
    """Return the chat /bind stored."""
    async with services.db.read() as conn:
        value = await conn.execute(text("SELECT value FROM bot_state WHERE key = 'coordinator_chat_id'"))
        return value.scalar()


async def bind_audit(services: Services) -> list[tuple[Any, ...]]:
    """Return the audit entries about where alerts go: actor, action, target, outcome, detail."""
    async with services.db.read() as conn:
        rows = await conn.execute(
            text(
                "SELECT actor, action, target, outcome, detail FROM audit_log"
                " WHERE action LIKE 'alerts.bind%' ORDER BY id"
            )
        )
        return [tuple(row) for row in rows]


async def queue_reports(services: Services, count: int) -> list[str]:
    """Create reports and queue their alerts, as submitting them does."""
    codes = await seed_reports(services.db, services.cipher, [Seed()] * count, services.clock.now())
    async with services.db.write() as conn:
        for code in codes:
            report = await ReportRepository().by_code(conn, code)
            await services.alerts.queue(conn, alert_input(services.cipher, report, []))
    services.outbox.notify()
    return codes


def texts_to(fake: FakeBotApi, chat_id: int) -> list[str]:
    """Return what the bot sent to a chat, oldest first."""
    return [str(c.params.get("text", "")) for c in fake.sent("sendMessage", chat_id=chat_id)]


@pytest.fixture
async def two_admins(fake: FakeBotApi, tmp_path: Path) -> AsyncIterator[RunningBot]:
    """A bot with two admins and no configured coordinators' chat."""
    bot = RunningBot(make_settings(tmp_path, api_url=fake.url, admin_ids=frozenset({ADMIN, SECOND})))
    await bot.start()
    await started(bot, fake)
    yield bot
    await bot.stop()


async def test_the_configured_chat_cannot_be_moved_from_telegram(fake: FakeBotApi, tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, api_url=fake.url, admin_ids=frozenset({ADMIN}), coordinator_chat_id=COORDINATORS
    )
    bot = RunningBot(settings)
    await bot.start()
    try:
        services = await started(bot, fake)
        # A binding stored before (an earlier /bind) does not override the configuration either.
        async with services.db.write() as conn:
            await conn.execute(
                text("INSERT INTO bot_state (key, value) VALUES ('coordinator_chat_id', :v)"),
                {"v": str(FIRST_GROUP)},
            )
        await bot.restart()
        services = await started(bot, fake)
        assert await services.alerts.is_coordinator_chat(COORDINATORS)
        answer = await bind(fake, ADMIN, SECOND_GROUP)
        assert answer == catalogs().text("en", "bind.pinned")
        await bot.quiet(fake)
        assert await stored_chat(services) == str(FIRST_GROUP)
        assert await services.alerts.is_coordinator_chat(COORDINATORS)
        assert not await services.alerts.is_coordinator_chat(SECOND_GROUP)
        admin = services.pseudonyms.of_user(ADMIN)
        assert await bind_audit(services) == [
            (admin, "alerts.bind", str(SECOND_GROUP), "refused", "bind.pinned")
        ]
        assert not texts_to(fake, FIRST_GROUP)  # nobody was told of a move that did not happen
    finally:
        await bot.stop()


async def test_a_move_needs_a_second_admin_and_everyone_hears_of_it(
    fake: FakeBotApi, two_admins: RunningBot
) -> None:
    services = two_admins.app_services()
    en = catalogs()
    first, second = services.pseudonyms.of_user(ADMIN), services.pseudonyms.of_user(SECOND)

    # The first chat is bound at once, by one admin.
    assert await bind(fake, ADMIN, FIRST_GROUP) == en.text("en", "bind.done", released=0)
    assert await stored_chat(services) == str(FIRST_GROUP)

    # Moving it: the first admin only asks. The new group and every admin in private are told.
    asked = await bind(fake, ADMIN, SECOND_GROUP)
    assert asked == en.text("en", "bind.requested", hours=24)
    for admin in (ADMIN, SECOND):
        await fake.wait_for(
            "sendMessage",
            chat_id=admin,
            timeout=15,
            predicate=lambda c: (
                str(SECOND_GROUP) in str(c.params.get("text"))
                and "another admin sends /bind" in str(c.params.get("text"))
            ),
        )
    assert await stored_chat(services) == str(FIRST_GROUP)
    assert await services.alerts.is_coordinator_chat(FIRST_GROUP)

    # The same admin again does not complete it.
    again = await bind(fake, ADMIN, SECOND_GROUP)
    assert again == en.text("en", "bind.second_admin", hours=24)
    assert await stored_chat(services) == str(FIRST_GROUP)

    # A different admin in the same group does: the old chat and every admin hear of it.
    done = await bind(fake, SECOND, SECOND_GROUP)
    assert done == en.text("en", "bind.done", released=0)
    assert await stored_chat(services) == str(SECOND_GROUP)
    assert await services.alerts.is_coordinator_chat(SECOND_GROUP)
    moved_away = en.text("en", "bind.moved_away")
    await fake.wait_for(
        "sendMessage", chat_id=FIRST_GROUP, timeout=15, predicate=lambda c: c.params.get("text") == moved_away
    )
    assert str(SECOND_GROUP) not in moved_away and "Test supergroup" not in moved_away
    for admin in (ADMIN, SECOND):
        await fake.wait_for(
            "sendMessage",
            chat_id=admin,
            timeout=15,
            predicate=lambda c: (
                str(SECOND_GROUP) in str(c.params.get("text"))
                and "Alerts now go to" in str(c.params.get("text"))
            ),
        )
    async with services.db.read() as conn:
        pending = await conn.execute(
            text("SELECT count(*) FROM bot_state WHERE key = :k"), {"k": BIND_REQUEST}
        )
        assert pending.scalar() == 0
    assert await bind_audit(services) == [
        (first, "alerts.bind", str(FIRST_GROUP), "ok", "first"),
        (first, "alerts.bind_request", str(SECOND_GROUP), "ok", None),
        (first, "alerts.bind", str(SECOND_GROUP), "refused", "bind.second_admin"),
        (second, "alerts.bind", str(SECOND_GROUP), "ok", "approved"),
    ]


async def test_alerts_follow_the_completed_move(fake: FakeBotApi, two_admins: RunningBot) -> None:
    services = two_admins.app_services()
    await bind(fake, ADMIN, FIRST_GROUP)
    await bind(fake, ADMIN, SECOND_GROUP)
    # While the move waits for the second admin, alerts still go to the bound chat.
    (waiting,) = await queue_reports(services, 1)
    await fake.wait_for(
        "sendMessage",
        chat_id=FIRST_GROUP,
        timeout=15,
        predicate=lambda c: waiting in str(c.params.get("text")),
    )
    await bind(fake, SECOND, SECOND_GROUP)
    (moved,) = await queue_reports(services, 1)
    await fake.wait_for(
        "sendMessage",
        chat_id=SECOND_GROUP,
        timeout=15,
        predicate=lambda c: moved in str(c.params.get("text")),
    )
    assert not [t for t in texts_to(fake, FIRST_GROUP) if moved in t]


async def test_one_admin_moves_alerts_alone_but_the_old_chat_is_told(
    fake: FakeBotApi, tmp_path: Path
) -> None:
    bot = RunningBot(make_settings(tmp_path, api_url=fake.url, admin_ids=frozenset({ADMIN})))
    await bot.start()
    try:
        services = await started(bot, fake)
        await bind(fake, ADMIN, FIRST_GROUP)
        answer = await bind(fake, ADMIN, SECOND_GROUP)
        assert answer == catalogs().text("en", "bind.done", released=0)
        assert await stored_chat(services) == str(SECOND_GROUP)
        moved_away = catalogs().text("en", "bind.moved_away")
        await fake.wait_for(
            "sendMessage",
            chat_id=FIRST_GROUP,
            timeout=15,
            predicate=lambda c: c.params.get("text") == moved_away,
        )
        # A stranger cannot move them back.
        assert await bind(fake, 7401, FIRST_GROUP) == catalogs().text("en", "bind.refused")
        assert await stored_chat(services) == str(SECOND_GROUP)
    finally:
        await bot.stop()


async def test_a_pinned_chat_still_follows_telegrams_migration(fake: FakeBotApi, tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, api_url=fake.url, admin_ids=frozenset({ADMIN}), coordinator_chat_id=COORDINATORS
    )
    bot = RunningBot(settings)
    await bot.start()
    try:
        new_chat = -1009999
        services = await started(bot, fake)
        await services.watch.migrated(COORDINATORS, new_chat)
        assert await services.alerts.is_coordinator_chat(new_chat)
        await bot.restart()
        assert await (await started(bot, fake)).alerts.is_coordinator_chat(new_chat)
    finally:
        await bot.stop()
    db = Database.connect(settings.database_url)
    try:
        async with db.read() as conn:
            stored = await conn.execute(text("SELECT value FROM bot_state WHERE key = 'coordinator_chat_id'"))
            assert stored.scalar() is None  # the pin is not turned into a /bind
    finally:
        await db.close()
