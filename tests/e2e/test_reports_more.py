"""SOS, /myreports, /forget, /bind with held alerts, triage rights, and nothing readable on disk."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

from sqlalchemy import text

from bot.settings import Settings
from messages import catalogs
from storage.database import Database
from tests.e2e.reporting import report_settings, reporting_bot
from tests.e2e.test_reports import walk_to_review
from tests.fakebot import FakeBotApi
from tests.support.bots import RunningBot
from tests.support.people import ADMIN, COORDINATORS, Person
from tests.support.settings import make_settings

__all__ = ["report_settings", "reporting_bot"]

CANARY_TEXT = "CANARY-TEXT-7Qx9 officers took Azamat"
CANARY_PEOPLE = "CANARY-PEOPLE-Lk2"
CANARY_FILE = b"CANARY-FILE-BYTES-9f8e7d"


async def test_sos_is_two_taps_then_updates_then_a_clean_phone(
    fake: FakeBotApi, reporting_bot: RunningBot
) -> None:
    person = Person(fake, 701)
    fake.add_message(user_id=701, text="/sos")
    await fake.wait_for("sendMessage", chat_id=701)
    await person.tap("go", prefix="s")
    (alert,) = await fake.wait_for("sendMessage", chat_id=COORDINATORS, timeout=15)
    assert "SOS" in alert.params["text"] and "R-" in alert.params["text"]
    await person.say("Bishkek, Sverdlovsky district police station, with my lawyer")
    await person.say(location=(42.8791, 74.6123))
    # Follow-ups are merged into the SOS card (edits, only the latest state), never messages of their own.
    await fake.wait_for(
        "editMessageText",
        chat_id=COORDINATORS,
        timeout=15,
        predicate=lambda c: "Sverdlovsky" in c.params["text"] and "42.88, 74.61" in c.params["text"],
    )
    card = next(m for m in fake.chat_messages(COORDINATORS) if m["message_id"] == alert.result["message_id"])
    assert "Sverdlovsky" in card["text"] and "42.88" in card["text"]
    assert len(fake.sent("sendMessage", chat_id=COORDINATORS)) == 1
    # A second SOS within the minute is refused politely; the coordinators already have the first.
    fake.add_message(user_id=701, text="/sos")
    await fake.wait_for("sendMessage", chat_id=701, count=4, timeout=15)
    await person.tap("done", prefix="s")
    await fake.wait_for("deleteMessages", chat_id=701, timeout=15)
    assert (
        next(
            c.params["text"]
            for c in fake.sent("sendMessage", chat_id=COORDINATORS)
            if "reply_markup" in c.params
        )
        == alert.params["text"]
    )


async def test_sos_limit_is_said_plainly(fake: FakeBotApi, reporting_bot: RunningBot) -> None:
    person = Person(fake, 702)
    await person.say("/sos")
    await person.tap("go", prefix="s")
    await person.tap("done", prefix="s")
    await person.say("/sos")
    await person.tap("go", prefix="s")
    assert person.answers()[-1] == catalogs().text("en", "sos.limit")
    await fake.wait_for("sendMessage", chat_id=COORDINATORS, timeout=15)
    await reporting_bot.quiet(fake)
    assert len([c for c in fake.sent("sendMessage", chat_id=COORDINATORS) if "reply_markup" in c.params]) == 1


async def test_myreports_lists_contactable_reports_and_forget_unlinks_them(
    fake: FakeBotApi, reporting_bot: RunningBot
) -> None:
    person = Person(fake, 710)
    await walk_to_review(fake, person)
    await person.tap("submit")
    code = fake.sent("editMessageText", chat_id=710)[-1].params["text"].split("<code>")[1].split("</code>")[0]
    listing = await person.say("/myreports")
    assert code in listing["text"]
    await person.say("/forget")
    await person.tap("yes", prefix="forget")
    assert person.last_text() == catalogs().text("en", "forget.done")
    listing = await person.say("/myreports")
    assert listing["text"] == catalogs().text("en", "myreports.empty")
    db = Database.connect(reporting_bot.settings.database_url)
    try:
        async with db.read() as conn:
            row = (await conn.execute(text("SELECT reporter, contact_chat, contactable FROM reports"))).one()
            assert tuple(row) == (None, None, 0)
            assert (await conn.execute(text("SELECT count(*) FROM drafts"))).scalar() == 0
    finally:
        await db.close()


async def test_alerts_wait_for_a_chat_and_go_out_on_bind(fake: FakeBotApi, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_url=fake.url, admin_ids=frozenset({ADMIN}))
    bot = RunningBot(settings)
    await bot.start()
    try:
        admin = Person(fake, ADMIN)
        welcome = await admin.say("/start")
        assert catalogs().text("en", "start.no_alert_chat") in welcome["text"]
        reporter = Person(fake, 720)
        await walk_to_review(fake, reporter)
        await reporter.tap("submit")
        await bot.quiet(fake)
        assert not [
            c for c in fake.calls if c.method == "sendMessage" and c.params.get("chat_id") == COORDINATORS
        ]
        # A stranger cannot choose where alerts go.
        fake.add_message(user_id=721, chat_id=COORDINATORS, chat_type="supergroup", text="/bind")
        (refusal,) = await fake.wait_for("sendMessage", chat_id=COORDINATORS, timeout=15)
        assert refusal.params["text"] == catalogs().text("en", "bind.refused")
        fake.add_message(user_id=ADMIN, chat_id=COORDINATORS, chat_type="supergroup", text="/bind")
        calls = await fake.wait_for("sendMessage", chat_id=COORDINATORS, count=3, timeout=15)
        assert any("reply_markup" in c.params and "R-" in c.params["text"] for c in calls)
    finally:
        await bot.stop()


async def test_triage_buttons_record_coordinators_and_refuse_strangers(
    fake: FakeBotApi, reporting_bot: RunningBot
) -> None:
    reporter = Person(fake, 730)
    await walk_to_review(fake, reporter)
    await reporter.tap("submit")
    (alert,) = await fake.wait_for("sendMessage", chat_id=COORDINATORS, timeout=15)
    code = alert.params["text"].split("New report ")[1].split("<")[0]
    message_id = alert.result["message_id"]
    stranger = Person(fake, 731)
    before = len(fake.sent("answerCallbackQuery"))
    fake.add_callback_query(
        user_id=731,
        data=f"t:{code}:take",
        message_id=message_id,
        chat_id=COORDINATORS,
        chat_type="supergroup",
    )
    await fake.wait_for("answerCallbackQuery", count=before + 1)
    assert stranger.answers()[-1] == catalogs().text("en", "coord.refused")
    fake.add_callback_query(
        user_id=ADMIN,
        data=f"t:{code}:take",
        message_id=message_id,
        chat_id=COORDINATORS,
        chat_type="supergroup",
    )
    await fake.wait_for("answerCallbackQuery", count=before + 2)
    assert stranger.answers()[-1] == catalogs().text("en", "triage.done_take", code=code)
    db = Database.connect(reporting_bot.settings.database_url)
    try:
        async with db.read() as conn:
            events = (await conn.execute(text("SELECT action FROM report_events"))).scalars().all()
        assert events == ["take"]
    finally:
        await db.close()


async def test_nothing_readable_on_disk(fake: FakeBotApi, report_settings: Settings) -> None:
    bot = RunningBot(report_settings)
    await bot.start()
    person = Person(fake, 987_654_321)
    try:
        fake.add_message(user_id=person.user_id, text="/report")
        await fake.wait_for("sendMessage", chat_id=person.user_id)
        await person.tap("cat", "violence")
        await person.tap("when", "now")
        await person.tap("region", "talas")
        await person.say(location=(42.51234567, 72.24204861))
        await person.say(CANARY_TEXT)
        await person.say(CANARY_PEOPLE)
        await person.say(document_file_id=fake.add_file(CANARY_FILE, file_name="canary.txt"))
        await person.tap("done")
        await person.tap("contact", "yes")
        await person.tap("submit")
        await fake.wait_for("sendDocument", chat_id=COORDINATORS, timeout=15)
        await fake.wait_for("deleteMessages", chat_id=person.user_id, timeout=15)
        await bot.quiet(fake)
        # Scanned while the bot runs (the WAL still holds recent pages) and again after it stopped.
        _assert_no_canaries(report_settings.data_dir, person.user_id)
    finally:
        await bot.stop()
    _assert_no_canaries(report_settings.data_dir, person.user_id)


def _assert_no_canaries(data_dir: Path, user_id: int) -> None:
    # The id as text and as SQLite would store an integer (big-endian), and the float coordinates.
    canaries = [
        CANARY_TEXT.encode(),
        CANARY_PEOPLE.encode(),
        CANARY_FILE,
        b"42.5123",
        b"72.2420",
        str(user_id).encode(),
        user_id.to_bytes(4, "big"),
        struct.pack(">d", 42.51234567),
    ]
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert any(p.parent.name == "evidence" for p in files)
    for path in files:
        content = path.read_bytes()
        for canary in canaries:
            assert canary not in content, f"{canary!r} readable in {path.name}"


async def test_an_anonymous_report_keeps_no_link_to_its_author(
    fake: FakeBotApi, reporting_bot: RunningBot
) -> None:
    person = Person(fake, 740)
    fake.add_message(user_id=740, text="/report")
    await fake.wait_for("sendMessage", chat_id=740)
    for action, arg in (("cat", "threats"), ("when", "now"), ("region", "chui"), ("skip", "")):
        await person.tap(action, arg)
    await person.say("They phoned my mother.")
    await person.tap("skip")
    await person.tap("done")
    await person.tap("contact", "no")
    await person.tap("submit")
    assert (await person.say("/myreports"))["text"] == catalogs().text("en", "myreports.empty")
    await fake.wait_for("deleteMessages", chat_id=740, timeout=15)
    db = Database.connect(reporting_bot.settings.database_url)
    try:
        async with db.read() as conn:
            row = (await conn.execute(text("SELECT reporter, contact_chat, contactable FROM reports"))).one()
            assert tuple(row) == (None, None, 0)
            recipients = (await conn.execute(text("SELECT recipient, dedupe_key FROM outbox"))).all()
            assert all(r == (None, None) for r in recipients)
    finally:
        await db.close()


async def test_an_expired_draft_is_purged_with_its_evidence_and_conversation(
    fake: FakeBotApi, tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path, api_url=fake.url, coordinator_chat_id=COORDINATORS, draft_ttl_h=1 / 3600
    )
    bot = RunningBot(settings)
    await bot.start()
    try:
        person = Person(fake, 750)
        fake.add_message(user_id=750, text="/report")
        await fake.wait_for("sendMessage", chat_id=750)
        old = person.keyboard_message()
        await asyncio.sleep(1.5)
        await person.press(next(d for d in person.buttons() if ":cat:" in d), old["message_id"])
        assert person.answers()[-1] == catalogs().text("en", "report.expired")
        services = bot.app_services()
        assert await services.reports.purge_expired() == 1
        services.delivery.wake()
        await fake.wait_for("deleteMessages", chat_id=750, timeout=15)
    finally:
        await bot.stop()


async def test_an_sos_opened_while_composing_a_campaign_gets_the_line_typed_next(
    fake: FakeBotApi, reporting_bot: RunningBot
) -> None:
    admin = Person(fake, ADMIN)
    await admin.say("/campaign_new Free them")
    campaign_id = int(admin.buttons()[0].split(":")[1])
    await admin.press(f"cc:{campaign_id}:text", admin.keyboard_message()["message_id"])
    await fake.wait_for(
        "sendMessage", chat_id=ADMIN, timeout=10, predicate=lambda c: "campaign text" in c.params["text"]
    )
    # The campaign waits for its text; then the coordinator is the one in trouble.
    fake.add_message(user_id=ADMIN, text="/sos")
    await fake.wait_for("sendMessage", chat_id=ADMIN, predicate=lambda c: "🆘" in c.params["text"])
    await admin.tap("go", prefix="s")
    await fake.wait_for("sendMessage", chat_id=COORDINATORS, timeout=15)
    await admin.say("Taken to the Oktyabrsky district station")
    await fake.wait_for(
        "editMessageText",
        chat_id=COORDINATORS,
        timeout=15,
        predicate=lambda c: "Oktyabrsky" in c.params["text"],
    )
    # The campaign did not take the line, and still waits for its text.
    campaigns = reporting_bot.app_services().campaigns
    assert not (await campaigns.view(ADMIN, campaign_id)).campaign.body
    waiting = await campaigns.pending(ADMIN)
    assert waiting is not None and (waiting.campaign_id, waiting.field) == (campaign_id, "text")
