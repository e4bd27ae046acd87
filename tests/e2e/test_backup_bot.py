"""The backup bot end to end: two tokens on one fake Telegram, the main one revoked, everything moves.

Both fake bots refuse to write first to anyone who never started them (403 "bot can't initiate
conversation"), as Telegram does: what reaches a person through the backup reaches them only because
they pressed Start there.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from bot.settings import SecretStr, Settings
from bot.wiring import Services
from messages import catalogs
from storage.database import Database
from storage.types import to_micros
from tests.campaign_seed import ready_campaign, seed_subscribers
from tests.fakebot import FakeBotApi
from tests.support.bots import RunningBot
from tests.support.people import Person
from tests.support.settings import TEST_TOKEN, make_settings, run_jarchy

BACKUP_TOKEN = "654321:BACKUP-TOKEN-abcdef"
BACKUP_ID = 654321
BACKUP_NAME = "jarchy_backup_bot"
ADMIN = 5201  # admin and coordinator; started the backup, as the README asks
READY = 5202  # follows the case, subscribes, started the backup
STRANDED = 5203  # follows the case, subscribes, never started the backup (until the end)
COORDINATORS = -100777


@pytest.fixture
async def fake() -> AsyncIterator[FakeBotApi]:
    """The main bot's fake Telegram, also serving the backup bot's token."""
    async with FakeBotApi(TEST_TOKEN, require_start=True) as server:
        yield server


@pytest.fixture
def backup(fake: FakeBotApi) -> FakeBotApi:
    """The backup bot, at the same address as the main one."""
    other = FakeBotApi(BACKUP_TOKEN, bot_id=BACKUP_ID, bot_username=BACKUP_NAME, require_start=True)
    fake.serve_also(other)
    return other


def fleet_settings(tmp_path: Path, fake: FakeBotApi, **overrides: object) -> Settings:
    """A bot with one backup, which switches after about a second of refusals."""
    values: dict[str, object] = {
        "api_url": fake.url,
        "admin_ids": frozenset({ADMIN}),
        "coordinator_chat_id": COORDINATORS,
        "backup_bot_tokens": (SecretStr(BACKUP_TOKEN),),
        "switch_after_min": 0.02,
        "fleet_check_s": 0.3,
        "reminder_interval_s": 1.0,
        "broadcast_interval_s": 0.3,
        **overrides,
    }
    return make_settings(tmp_path, **values)


async def until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Wait until `condition()` holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def texts_to(server: FakeBotApi, chat_id: int) -> list[str]:
    """What a bot sent into a chat (sendMessage texts)."""
    return [str(call.params.get("text", "")) for call in server.sent("sendMessage", chat_id=chat_id)]


def reminders(server: FakeBotApi, chat_id: int) -> list[str]:
    return [t for t in texts_to(server, chat_id) if "⚖️" in t]


def campaign_calls(server: FakeBotApi, chat_id: int, campaign: int) -> list[Any]:
    return [
        c
        for c in server.sent("sendMessage", chat_id=chat_id)
        if f"cp:{campaign}:acted" in str(c.params.get("reply_markup", ""))
    ]


async def move_hearing_close(settings: Settings) -> None:
    """Bring the hearing to 2 hours and 3 seconds from now: its 2-hour reminder falls due at once."""
    db = Database.connect(settings.database_url)
    try:
        async with db.write() as conn:
            soon = datetime.now(UTC) + timedelta(hours=2, seconds=3)
            await conn.execute(text("UPDATE hearings SET starts_at = :t"), {"t": to_micros(soon)})
    finally:
        await db.close()


async def services_of(bot: RunningBot, bot_id: int) -> Services:
    """Wait for the run on this bot (a switch starts a new Application) and return its services."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        services: Services | None = bot.app.bot_data.services if bot.app is not None else None
        if services is not None and services.fleet.active.bot_id == bot_id:
            return services
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"the bot did not start on {bot_id}")
        await asyncio.sleep(0.05)


async def test_main_token_revoked_everything_moves_to_the_backup(
    fake: FakeBotApi, backup: FakeBotApi, tmp_path: Path
) -> None:
    settings = fleet_settings(tmp_path, fake)
    bot = RunningBot(settings)
    await bot.start()
    try:
        services = await bot.started_services()
        await until(lambda: BACKUP_ID in services.fleet.usernames, what="the backup's getMe")
        admin, ready, stranded = Person(fake, ADMIN), Person(fake, READY, "ru"), Person(fake, STRANDED)

        # Invited once in /start (not twice), in the person's language.
        invite = catalogs().text("ru", "fleet.invite", backup=BACKUP_NAME)
        welcome = await ready.say("/start")
        assert invite in welcome["text"]
        again = await ready.say("/start")
        assert invite not in again["text"]

        # Pressing Start in the backup is recorded; the backup answers where to write meanwhile.
        for person in (READY, ADMIN):
            backup.add_message(user_id=person, text="/start", language_code="ru" if person == READY else "en")
        await backup.wait_for("sendMessage", chat_id=READY, timeout=15)
        hello = catalogs().text("ru", "fleet.standby_hello", active="jarchy_test_bot")
        assert texts_to(backup, READY) == [hello]
        await backup.wait_for("sendMessage", chat_id=ADMIN, timeout=15)

        # A case both follow; both subscribe.
        await admin.say("/case_new Makhabat T. | Blogger charged for a post | Art. 327 | public")
        in_three_hours = (datetime.now(ZoneInfo("Asia/Bishkek")) + timedelta(hours=3)).strftime(
            "%d.%m.%Y %H:%M"
        )
        await admin.say(f"/hearing_add 1 | {in_three_hours} | Oktyabrsky court | Bishkek, Toktogula 1")
        for follower in (ready, stranded):
            await follower.say("/cases")
            listing = fake.sent("sendMessage", chat_id=follower.user_id)[-1]
            await follower.press("cf:1", listing.result["message_id"])
        await seed_subscribers(services, [READY, STRANDED])
        # A contactable report: its status update comes after the switch.
        await file_report(ready, fake, contactable=True)
        (card,) = await fake.wait_for("sendMessage", chat_id=COORDINATORS, timeout=15)
        code = re.search(r"R-[A-Z0-9]{5}", card.params["text"])
        assert code is not None
        census = await services.backups.census()
        assert census.unreachable == 0  # the main bot still answers: it reaches everyone

        # The main token is revoked; then a reminder and a campaign fall due.
        fake.revoke()
        await move_hearing_close(settings)
        campaign = await ready_campaign(services, ADMIN)

        # About a second of refusals later, the backup is in use.
        moved = await services_of(bot, BACKUP_ID)
        await backup.wait_for(
            "sendMessage", chat_id=READY, timeout=30, predicate=lambda c: "⚖️" in str(c.params.get("text"))
        )
        await until(lambda: len(campaign_calls(backup, READY, campaign)) == 1, 30, "the campaign")
        moved_note = catalogs().text(
            "ru", "fleet.moved_person", new=f"@{BACKUP_NAME}", old="@jarchy_test_bot"
        )
        await until(lambda: moved_note in texts_to(backup, READY), 30, "the moved notice")
        # The admins hear how many no working bot can reach: the one who never started the backup.
        await until(
            lambda: any("/bots" in t and "1" in t for t in texts_to(backup, ADMIN)), 30, "the admins' summary"
        )
        census = await moved.backups.census()
        assert census.unreachable == 1

        # An SOS through the backup reaches the coordinators through the backup.
        on_backup = Person(backup, READY, "ru")
        await on_backup.say("/sos")
        await on_backup.tap("go", prefix="s")
        (alert,) = await backup.wait_for("sendMessage", chat_id=COORDINATORS, timeout=15)
        assert "SOS" in alert.params["text"]

        # A coordinator takes the report through the backup: the reporter hears of it from the backup.
        admin_on_backup = Person(backup, ADMIN)
        screen_id = backup.sent("sendMessage", chat_id=ADMIN)[-1].result["message_id"]
        # The card in private (as a digest's code button sends it): live, with its triage buttons.
        await admin_on_backup.press(f"o:{code.group()}", screen_id)
        await backup.wait_for(
            "sendMessage", chat_id=ADMIN, timeout=15, predicate=lambda c: code.group() in str(c.params)
        )
        take = next(d for d in admin_on_backup.buttons() if d.endswith(":take"))
        await admin_on_backup.press(take, admin_on_backup.keyboard_message()["message_id"])
        update = catalogs().text("ru", "contact.update_taken", code="")
        await until(
            lambda: any(update.split("<code>")[0] in t for t in texts_to(backup, READY)),
            30,
            "the status update",
        )

        # The card the main bot posted is not edited through the backup (it would edit another message,
        # or fail): its edit waits for the main bot. The private copy the backup sent is kept current.
        await until(
            lambda: any(
                c.method == "editMessageText" and c.params.get("chat_id") == ADMIN for c in backup.calls
            ),
            15,
            "the private copy's edit",
        )
        old_card = card.result["message_id"]
        assert not [
            c
            for c in backup.calls
            if c.params.get("chat_id") == COORDINATORS and c.params.get("message_id") == old_card
        ]

        # Admins see who is unreachable in /bots, through the backup.
        backup.add_message(user_id=ADMIN, text="/bots")
        (screen,) = await backup.wait_for(
            "sendMessage",
            chat_id=ADMIN,
            timeout=15,
            predicate=lambda c: (
                "@jarchy_backup_bot" in str(c.params) and "in use" in str(c.params.get("text"))
            ),
        )
        assert (
            catalogs().text("en", "fleet.unreachable", unreachable=1, people=census.people)
            in screen.params["text"]
        )

        # Nothing was even tried towards the stranded person through a bot that cannot reach them.
        assert [c for c in backup.calls if c.params.get("chat_id") == STRANDED] == []
    finally:
        await bot.stop()

    # The switch survives a restart; the stranded person presses Start in the backup at last, and what
    # waited for them arrives, once.
    await bot.start()
    try:
        await services_of(bot, BACKUP_ID)
        backup.add_message(user_id=STRANDED, text="/start")
        await until(lambda: len(reminders(backup, STRANDED)) == 1, 30, "the stranded person's reminder")
        await until(lambda: len(campaign_calls(backup, STRANDED, campaign)) == 1, 30, "their campaign")
        await bot.quiet(backup)
    finally:
        await bot.stop()
    # Nothing doubled: one reminder and one campaign call per person, through whichever bot.
    for person in (READY, STRANDED):
        assert len(reminders(backup, person)) + len(reminders(fake, person)) == 1
        assert (
            len(campaign_calls(backup, person, campaign)) + len(campaign_calls(fake, person, campaign)) == 1
        )
    assert Counter(texts_to(backup, READY))[moved_note] == 1


async def test_jarchy_bot_status_and_switch_from_the_server(
    fake: FakeBotApi, backup: FakeBotApi, tmp_path: Path
) -> None:
    # Never by itself: only the command switches here.
    settings = fleet_settings(tmp_path, fake, switch_after_min=0)
    cli = {"api_url": fake.url, "backup_bot_tokens": BACKUP_TOKEN}
    bot = RunningBot(settings)
    await bot.start()
    try:
        services = await bot.started_services()
        await until(lambda: BACKUP_ID in services.fleet.usernames, what="the backup's getMe")
        # /bots warns of a backup that could not post alerts after a switch.
        backup.chat_member_statuses[(COORDINATORS, BACKUP_ID)] = "left"
        screen = await Person(fake, ADMIN).say("/bots")
        assert catalogs().text("en", "fleet.not_in_group") in screen["text"]
        assert screen["text"].count("⚠️") == 1  # the main bot is in the group
        code, output = await run_jarchy(settings, "bot", "status", **cli)
        assert code == 0, output
        assert "* 123456  main    @jarchy_test_bot" in output
        assert f"  {BACKUP_ID}  backup  @{BACKUP_NAME}" in output
        assert TEST_TOKEN.split(":")[1] not in output and BACKUP_TOKEN.split(":")[1] not in output
        # The signed statement of official bots names the backup, asked of Telegram.
        signing = {"signing_key_file": str(tmp_path / "signing" / "statement.key")}
        code, output = await run_jarchy(settings, "verify-statement", "--new-key", **cli, **signing)
        assert code == 0 and "@jarchy_test_bot" in output and f"@{BACKUP_NAME}" in output, output
        code, output = await run_jarchy(settings, "bot", "switch", "--to", "@nobody_bot", **cli)
        assert code == 2 and "--to @nobody_bot" in output
        code, output = await run_jarchy(settings, "bot", "switch", "--to", f"@{BACKUP_NAME}", **cli)
        assert code == 0, output
        moved = await services_of(bot, BACKUP_ID)
        async with moved.db.read() as conn:
            actors = (
                await conn.execute(text("SELECT actor FROM audit_log WHERE action = 'bot.switch'"))
            ).scalars()
            assert list(actors) == ["cli"]
        # The main bot still answers, so nothing waits: the switch was the organisation's choice.
        code, output = await run_jarchy(settings, "bot", "status", **cli)
        assert f"* {BACKUP_ID}  backup" in output
    finally:
        await bot.stop()


async def test_a_token_refused_at_start_hands_over_to_the_backup(
    fake: FakeBotApi, backup: FakeBotApi, tmp_path: Path
) -> None:
    backup.mark_started(READY)
    settings = fleet_settings(tmp_path, fake)
    fake.revoke()  # before the first start: the bot must come up on the backup by itself
    bot = RunningBot(settings)
    await bot.start()
    try:
        services = await services_of(bot, BACKUP_ID)
        backup.add_message(user_id=READY, text="/start")
        (welcome,) = await backup.wait_for("sendMessage", chat_id=READY, timeout=15)
        assert "jarchy" in welcome.params["text"]
        assert services.fleet.main.bot_id in services.fleet.refused
    finally:
        await bot.stop()


async def file_report(person: Person, fake: FakeBotApi, contactable: bool) -> None:
    """File a short report through the guided form."""
    before = len(fake.sent("sendMessage", chat_id=person.user_id))
    fake.add_message(user_id=person.user_id, text="/report")
    await fake.wait_for("sendMessage", chat_id=person.user_id, count=before + 1)
    for action, arg in (("cat", "threats"), ("when", "now"), ("region", "chui"), ("skip", "")):
        await person.tap(action, arg)
    await person.say("They phoned my mother.")
    await person.tap("skip")
    await person.tap("done")
    await person.tap("contact", "yes" if contactable else "no")
    await person.tap("submit")


async def test_an_anonymous_report_writes_no_invitation_a_contactable_one_invites_once(
    fake: FakeBotApi, backup: FakeBotApi, tmp_path: Path
) -> None:
    bot = RunningBot(fleet_settings(tmp_path, fake))
    await bot.start()
    try:
        services = await bot.started_services()
        await until(lambda: BACKUP_ID in services.fleet.usernames, what="the backup's getMe")
        person = Person(fake, 5210)
        invite = catalogs().text("en", "fleet.invite", backup=BACKUP_NAME)
        await file_report(person, fake, contactable=False)
        await bot.quiet(fake)
        assert invite not in texts_to(fake, 5210)
        async with services.db.read() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM reach"))).scalar() == 0
        await file_report(person, fake, contactable=True)
        await until(lambda: invite in texts_to(fake, 5210), 15, "the invitation")
        await file_report(person, fake, contactable=True)
        await bot.quiet(fake)
        assert texts_to(fake, 5210).count(invite) == 1
    finally:
        await bot.stop()
