"""The worst day over real HTTP: the coordinators' group kicks the bot, migrates, or fails for hours; many
reports at once under the group's real window; forged SOS presses; kill -9 at the moment a card reached
Telegram; a double tap on Submit."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bot.runtime.clock import SystemClock
from bot.services.reports.body import alert_input
from bot.services.triage.alerts import CARD_KIND
from bot.settings import Settings
from bot.wiring import Services, build_limiter, open_services
from storage.reports import ReportRepository
from tests.fakebot import FakeBotApi
from tests.support.bots import BotProcess, RunningBot
from tests.support.people import ADMIN, COORDINATORS, Person
from tests.support.settings import make_settings
from tests.workspace_seed import Seed, seed_reports

CODE = re.compile(r"R-[0-9A-Z]{5}")
SHOWN_CODE = re.compile(r"K-[0-9A-Z]{5}")  # what a reporter is shown instead


@pytest.fixture
def crisis_settings(tmp_path: Path, fake: FakeBotApi) -> Settings:
    """Telegram's real limits, an admin and a coordinators' chat."""
    return make_settings(
        tmp_path,
        api_url=fake.url,
        admin_ids=frozenset({ADMIN}),
        coordinator_chat_id=COORDINATORS,
        rate_global_per_s=30.0,
        rate_group_per_min=20.0,
        reports_per_hour=100,
    )


@pytest.fixture
async def crisis_bot(crisis_settings: Settings) -> AsyncIterator[RunningBot]:
    """The running bot with the crisis settings."""
    running = RunningBot(crisis_settings)
    await running.start()
    yield running
    await running.stop()


async def started(bot: RunningBot, fake: FakeBotApi) -> Services:
    """Wait until the bot polls, then return its services."""
    await fake.wait_for("getUpdates", timeout=30)
    return bot.app_services()


async def queue_reports(services: Services, count: int) -> list[str]:
    """Create reports and queue their alerts, as submitting them does."""
    codes = await seed_reports(services.db, services.cipher, [Seed()] * count, services.clock.now())
    repo = ReportRepository()
    async with services.db.write() as conn:
        for code in codes:
            report = await repo.by_code(conn, code)
            await services.alerts.queue(conn, alert_input(services.cipher, report, []))
    services.outbox.notify()
    return codes


def visible_codes(fake: FakeBotApi, chat_id: int) -> set[str]:
    """Every report code shown in a chat so far (cards and digests)."""
    return {code for m in fake.chat_messages(chat_id) for code in CODE.findall(str(m.get("text", "")))}


async def wait_visible(fake: FakeBotApi, chat_id: int, codes: set[str], timeout: float) -> None:
    """Wait until every code is visible in the chat."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not codes <= visible_codes(fake, chat_id):
        if loop.time() > deadline:
            missing = codes - visible_codes(fake, chat_id)
            raise AssertionError(f"{len(missing)} of {len(codes)} codes never became visible")
        await asyncio.sleep(0.1)


async def outbox_rows(services: Services, where: str) -> list[dict[str, Any]]:
    """Return outbox rows matching a condition."""
    async with services.db.read() as conn:
        found = await conn.execute(text(f"SELECT * FROM outbox WHERE {where} ORDER BY id"))  # noqa: S608
        return [dict(r) for r in found.mappings()]


def admin_texts(fake: FakeBotApi) -> list[str]:
    """What the admin was told in private."""
    return [str(c.params.get("text", "")) for c in fake.sent("sendMessage", chat_id=ADMIN)]


async def test_a_kicked_bot_holds_alerts_tells_the_admins_and_delivers_when_added_back(
    fake: FakeBotApi, crisis_bot: RunningBot
) -> None:
    services = await started(crisis_bot, fake)
    fake.kick_bot(COORDINATORS)
    await fake.wait_for("sendMessage", chat_id=ADMIN, timeout=15)
    assert "cannot reach the coordinators" in admin_texts(fake)[0]
    codes = await queue_reports(services, 3)
    await crisis_bot.quiet(fake)
    held = await outbox_rows(services, f"kind = '{CARD_KIND}'")
    assert {row["status"] for row in held} == {"held"}
    assert all(row["payload"] is not None for row in held), "a held alert keeps its payload"
    assert not visible_codes(fake, COORDINATORS)
    # The admin's /start says how many wait and why.
    Person(fake, ADMIN)
    fake.add_message(user_id=ADMIN, text="/start")
    welcome = await fake.wait_for(
        "sendMessage",
        chat_id=ADMIN,
        timeout=10,
        predicate=lambda c: "waiting</b> to reach" in str(c.params["text"]),
    )
    assert "3 alert(s) are waiting" in str(welcome[-1].params["text"])
    fake.restore_bot(COORDINATORS)
    await wait_visible(fake, COORDINATORS, set(codes), timeout=15)
    await fake.wait_for(
        "sendMessage", chat_id=ADMIN, predicate=lambda c: "again" in str(c.params["text"]), timeout=10
    )


async def test_a_refused_send_alone_opens_the_incident_and_a_probe_brings_it_back(
    fake: FakeBotApi, crisis_bot: RunningBot
) -> None:
    services = await started(crisis_bot, fake)
    fake.delete_chat(COORDINATORS)
    (code,) = await queue_reports(services, 1)
    await fake.wait_for("sendMessage", chat_id=ADMIN, timeout=15)
    assert "no longer exists" in admin_texts(fake)[0]
    fake._deleted_chats.discard(COORDINATORS)  # the group is back (restored by Telegram support)
    async with services.db.write() as conn:
        await conn.execute(text("UPDATE outbox SET due_at = created_at WHERE status = 'held'"))
    assert await services.watch.probe() == 1
    await wait_visible(fake, COORDINATORS, {code}, timeout=15)


async def test_alerts_follow_a_group_that_became_a_supergroup(
    fake: FakeBotApi, crisis_bot: RunningBot
) -> None:
    services = await started(crisis_bot, fake)
    new_chat = -1_001_234_567_890
    first = await queue_reports(services, 1)
    await wait_visible(fake, COORDINATORS, set(first), timeout=15)
    fake.migrate_chat(COORDINATORS, new_chat)
    second = await queue_reports(services, 2)
    await wait_visible(fake, new_chat, set(second), timeout=15)
    assert "supergroup" in " ".join(admin_texts(fake))
    third = await queue_reports(services, 1)
    await wait_visible(fake, new_chat, set(third), timeout=15)
    assert await services.alerts.is_coordinator_chat(new_chat)


async def test_an_outage_of_hours_drops_no_alert(fake: FakeBotApi, tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        api_url=fake.url,
        admin_ids=frozenset({ADMIN}),
        coordinator_chat_id=COORDINATORS,
        outbox_max_attempts=2,
    )
    bot = RunningBot(settings)
    await bot.start()
    try:
        services = await started(bot, fake)
        fake.fail_chat(COORDINATORS, 502)
        (code,) = await queue_reports(services, 1)
        # Far more attempts than a broadcast row would get, and the admins hear of it.
        await fake.wait_for("sendMessage", chat_id=ADMIN, timeout=60)
        assert "failing" in admin_texts(fake)[0]
        # The alert waits (as its card, or folded into a digest while the group's budget went on
        # retries): never dead, its payload kept, tried more often than any other row would be.
        waiting = await outbox_rows(
            services, "kind IN ('alert_card', 'alert_digest') AND status <> 'cancelled'"
        )
        assert waiting and all(row["status"] in ("pending", "sending") for row in waiting)
        assert all(row["payload"] is not None for row in waiting)
        tried = await outbox_rows(services, "kind IN ('alert_card', 'alert_digest')")
        assert max(int(str(row["attempts"])) for row in tried) > settings.outbox_max_attempts
        fake.heal_chat(COORDINATORS)
        await wait_visible(fake, COORDINATORS, {code}, timeout=40)
    finally:
        await bot.stop()


async def test_many_reports_at_once_are_all_visible_through_digests_without_a_429(
    fake: FakeBotApi, crisis_bot: RunningBot
) -> None:
    fake.set_chat_limits(group_per_min=20)
    services = await started(crisis_bot, fake)
    codes = await queue_reports(services, 60)
    await wait_visible(fake, COORDINATORS, set(codes), timeout=30)
    assert fake.received_429 == 0
    group = [c for c in fake.sent() if c.params.get("chat_id") == COORDINATORS]
    assert len(group) <= 20, "one window's budget, digests included"
    digests = [c for c in group if "waiting" in str(c.params.get("text"))]
    assert digests
    # A coordinator opens one report from a digest: the full card comes in private.
    button = digests[0].params["reply_markup"]["inline_keyboard"][0][0]
    message_id = next(
        m["message_id"]
        for m in fake.chat_messages(COORDINATORS)
        if m.get("text") == digests[0].params["text"]
    )
    fake.add_callback_query(
        user_id=ADMIN, data=button["callback_data"], message_id=message_id, chat_id=COORDINATORS
    )
    opened = button["callback_data"].split(":")[1]
    card = await fake.wait_for(
        "sendMessage", chat_id=ADMIN, timeout=15, predicate=lambda c: opened in str(c.params.get("text"))
    )
    assert "Two officers detained" in str(card[0].params["text"])
    # A stranger pressing the same button is refused and gets nothing.
    fake.add_callback_query(
        user_id=9999, data=button["callback_data"], message_id=message_id, chat_id=COORDINATORS
    )
    await crisis_bot.quiet(fake)
    assert not fake.sent("sendMessage", chat_id=9999)


async def test_forged_sos_presses_are_held_back_and_a_real_sos_still_goes(
    fake: FakeBotApi, crisis_bot: RunningBot
) -> None:
    flooder, other = 8101, 8102
    fake.add_message(user_id=flooder, text="/start")
    await fake.wait_for("sendMessage", chat_id=flooder, timeout=10)
    before = len(fake.sent("answerCallbackQuery"))
    for _ in range(300):
        fake.add_callback_query(user_id=flooder, data=f"s:{secrets.token_hex(8)}:go", message_id=1)
    fake.add_message(user_id=other, text="/sos")
    confirm = await fake.wait_for("sendMessage", chat_id=other, timeout=20)
    go = next(
        b["callback_data"]
        for row in confirm[-1].params["reply_markup"]["inline_keyboard"]
        for b in row
        if b["callback_data"].endswith(":go")
    )
    fake.add_callback_query(user_id=other, data=go, message_id=fake.chat_messages(other)[-1]["message_id"])
    await fake.wait_for(
        "sendMessage", chat_id=COORDINATORS, timeout=20, predicate=lambda c: "SOS" in str(c.params["text"])
    )
    await crisis_bot.quiet(fake)
    answered = len(fake.sent("answerCallbackQuery")) - before
    # The flooder's presses count like any update: about a minute's allowance answered, the rest dropped.
    assert answered <= 4 + crisis_bot.settings.flood_per_minute + 1


async def test_a_double_tap_on_submit_gives_one_receipt_and_one_alert(
    fake: FakeBotApi, crisis_bot: RunningBot
) -> None:
    person = Person(fake, 8201)
    fake.add_message(user_id=8201, text="/report")
    await fake.wait_for("sendMessage", chat_id=8201)
    for action, arg in (("cat", "threats"), ("when", "now"), ("region", "bishkek"), ("skip", "")):
        await person.tap(action, arg)
    await person.say("Threatened by phone after the rally.")
    for action, arg in (("skip", ""), ("done", ""), ("contact", "no")):
        await person.tap(action, arg)
    review = person.keyboard_message()
    submit = next(d for d in person.buttons() if d.split(":")[3] == "submit")
    taps = {
        str(
            fake.add_callback_query(user_id=8201, data=submit, message_id=review["message_id"])[
                "callback_query"
            ]["id"]
        )
        for _ in range(2)
    }
    await fake.wait_for(
        "answerCallbackQuery",
        count=2,
        timeout=15,
        predicate=lambda c: str(c.params.get("callback_query_id")) in taps,
    )
    await fake.wait_for("deleteMessages", chat_id=8201, timeout=15)
    await crisis_bot.quiet(fake)
    with_code = [m for m in fake.chat_messages(8201) if SHOWN_CODE.search(str(m.get("text", "")))]
    assert len(with_code) == 1, "one receipt"
    shown = SHOWN_CODE.findall(str(with_code[0]["text"]))[0]
    # The receipt shows the reporter's own code; the card the one it is derived from.
    reporter_code = crisis_bot.app_services().reports.reporter_code
    cards = [
        m
        for m in fake.chat_messages(COORDINATORS)
        if any(reporter_code(code) == shown for code in CODE.findall(str(m.get("text", ""))))
    ]
    assert len(cards) == 1


async def test_kill_9_as_a_card_reaches_telegram_gives_two_live_copies_at_once(
    fake: FakeBotApi, tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path, api_url=fake.url, coordinator_chat_id=COORDINATORS, admin_ids=frozenset({ADMIN})
    )
    services = await open_services(settings, SystemClock(), build_limiter(settings, SystemClock()))
    (code,) = await queue_reports(services, 1)
    await services.close()
    bot = BotProcess(fake, settings.data_dir, coordinator_chat_id=str(COORDINATORS), admin_ids=str(ADMIN))
    # The card arrives in the group, but its answer never comes back: the bot is killed meanwhile.
    fake.timeout_next("sendMessage", delay=30.0, deliver=True)
    await bot.start()
    try:
        first = await fake.wait_for("sendMessage", chat_id=COORDINATORS, timeout=30)
        await bot.kill()
        restarted = asyncio.get_running_loop().time()
        await bot.start()
        cards = await fake.wait_for("sendMessage", chat_id=COORDINATORS, count=2, timeout=30)
        # Taken back at once, not after the 60-second lease, and marked as a possible repeat.
        assert asyncio.get_running_loop().time() - restarted < 20
        assert "may repeat" in str(cards[1].params["text"])
        copies = [m for m in fake.chat_messages(COORDINATORS) if code in str(m.get("text", ""))]
        assert len(copies) == 2
        # Take on the copy nobody recorded edits both.
        unknown = copies[0]["message_id"]
        assert first[0].params["text"] == copies[0]["text"]
        fake.add_callback_query(
            user_id=ADMIN, data=f"t:{code}:take", message_id=unknown, chat_id=COORDINATORS
        )
        await fake.wait_for("editMessageText", chat_id=COORDINATORS, count=2, timeout=30)
        edited = {c.params["message_id"] for c in fake.sent("editMessageText", chat_id=COORDINATORS)}
        assert edited == {m["message_id"] for m in copies}
    finally:
        await bot.stop()


async def test_a_forged_press_on_another_card_never_makes_it_a_copy(
    fake: FakeBotApi, crisis_bot: RunningBot
) -> None:
    services = await started(crisis_bot, fake)
    first, second = await queue_reports(services, 2)
    await wait_visible(fake, COORDINATORS, {first, second}, timeout=15)
    card_of = {
        code: next(m for m in fake.chat_messages(COORDINATORS) if code in str(m.get("text", "")))
        for code in (first, second)
    }
    # A modified client sends the first report's button data on the second report's card.
    fake.add_callback_query(
        user_id=ADMIN,
        data=f"t:{first}:take",
        message_id=card_of[second]["message_id"],
        chat_id=COORDINATORS,
    )
    edits = await fake.wait_for("editMessageText", chat_id=COORDINATORS, timeout=15)
    await crisis_bot.quiet(fake)
    assert {c.params["message_id"] for c in fake.sent("editMessageText", chat_id=COORDINATORS)} == {
        card_of[first]["message_id"]
    }
    assert first in str(edits[0].params["text"])
    still = next(
        m for m in fake.chat_messages(COORDINATORS) if m["message_id"] == card_of[second]["message_id"]
    )
    assert second in str(still["text"]), "the second card still shows its own report"
