"""An identity a clone cannot fake: the safety word on every sensitive screen, never in logs or in clear on
disk, gone once cleared; /verify for official, foreign and malformed names."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, text

from bot.logs import _QUIET as QUIET_LIBRARIES
from bot.settings import Settings
from messages import catalogs
from storage import schema
from storage.types import to_micros
from tests.campaign_seed import ready_campaign
from tests.fakebot import FakeBotApi
from tests.support.bots import RunningBot
from tests.support.people import ADMIN, COORDINATORS, Person
from tests.support.settings import make_settings

PERSON = 7301
# Typed with odd spacing and a decomposed "é": stored and shown as one NFC line.
TYPED = "  Ochre   Marmot e\u0301t\u0301 41 "
WORD = "Ochre Marmot ét́ 41"
WORD_PARTS = ("Ochre Marmot", "Marmot")


@pytest.fixture
def identity_settings(tmp_path: Path, fake: FakeBotApi) -> Settings:
    """A bot with an admin, a coordinators' chat, fast reminders and one listed backup bot."""
    return make_settings(
        tmp_path,
        api_url=fake.url,
        admin_ids=frozenset({ADMIN}),
        coordinator_chat_id=COORDINATORS,
        reminder_interval_s=1.0,
        official_bots=("jarchy_backup_bot",),
    )


def _has_word(call_text: Any) -> bool:
    return WORD in str(call_text)


async def _say_safeword(fake: FakeBotApi, argument: str) -> tuple[int, str]:
    """Send /safeword with an argument; return the command's message id and the bot's answer."""
    before = len(fake.sent("sendMessage", chat_id=PERSON))
    update = fake.add_message(user_id=PERSON, text=f"/safeword {argument}")
    calls = await fake.wait_for("sendMessage", chat_id=PERSON, count=before + 1, timeout=15)
    return int(update["message"]["message_id"]), str(calls[-1].params["text"])


async def _deleted(fake: FakeBotApi, message_id: int) -> None:
    await fake.wait_for(
        "deleteMessages",
        chat_id=PERSON,
        timeout=15,
        predicate=lambda c: message_id in c.params.get("message_ids", []),
    )


async def _walk_to_review(fake: FakeBotApi, person: Person) -> None:
    """Walk a short report to its review (in a chat that had messages before: tests.e2e.test_reports)."""
    before = len(fake.sent("sendMessage", chat_id=person.user_id))
    fake.add_message(user_id=person.user_id, text="/report")
    await fake.wait_for("sendMessage", chat_id=person.user_id, count=before + 1, timeout=15)
    await person.tap("cat", "detention")
    await person.tap("when", "today")
    await person.tap("region", "elsewhere")
    await person.say("Almaty")
    await person.say(location=(42.874612, 74.612345))
    await person.say("Detained outside the court.")
    await person.tap("skip")
    await person.tap("done")
    await person.tap("contact", "yes")


def _on_disk(settings: Settings) -> bytes:
    """Every byte of the SQLite database, its WAL and shared memory."""
    files = [settings.data_dir / name for name in ("jarchy.db", "jarchy.db-wal", "jarchy.db-shm")]
    return b"".join(path.read_bytes() for path in files if path.exists())


async def test_the_safety_word_is_on_every_sensitive_screen_and_nowhere_else(
    fake: FakeBotApi, identity_settings: Settings, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Every level of our own logs, with the libraries as production configures them (bot.logs: at WARNING,
    # since python-telegram-bot logs request bodies at DEBUG).
    caplog.set_level(logging.DEBUG)
    for name in QUIET_LIBRARIES:
        caplog.set_level(logging.WARNING, logger=name)
    texts = catalogs()
    bot = RunningBot(identity_settings)
    await bot.start()
    try:
        services = await bot.started_services()
        person = Person(fake, PERSON)
        # Odd input first: too long, several lines, shaped like a report number; each answered politely.
        message_id, answer = await _say_safeword(fake, "x" * 40)
        assert answer == texts.text("en", "safeword.too_long", limit=32)
        await _deleted(fake, message_id)
        _, answer = await _say_safeword(fake, "two\nlines")
        assert answer == texts.text("en", "safeword.one_line")
        _, answer = await _say_safeword(fake, "K-ABCDE")
        assert answer == texts.text("en", "safeword.one_line")
        _, answer = await _say_safeword(fake, "a")
        assert answer == texts.text("en", "safeword.too_short", limit=2)
        assert (await person.say("/safeword"))["text"] == texts.text("en", "safeword.usage")

        message_id, answer = await _say_safeword(fake, TYPED)
        assert answer == texts.text("en", "safeword.saved") and WORD not in answer
        await _deleted(fake, message_id)  # the message that carried it leaves the chat
        assert (await person.say("/safeword"))["text"] == texts.text("en", "safeword.is_set")

        # The report's review, before it is sent.
        await _walk_to_review(fake, person)
        review = person.keyboard_message()["text"]
        assert review.startswith("🔑") and WORD in review
        await person.tap("submit")
        await fake.wait_for("sendMessage", chat_id=COORDINATORS, timeout=15)
        async with services.db.read() as conn:
            code = str((await conn.execute(select(schema.reports.c.code))).scalar_one())

        # A coordinator's question.
        await services.contact.ask(ADMIN, code, "Are you safe now?")
        (question,) = await fake.wait_for(
            "sendMessage",
            chat_id=PERSON,
            timeout=15,
            predicate=lambda c: "Are you safe now?" in str(c.params),
        )
        assert _has_word(question.params["text"])

        # The SOS confirmation.
        fake.add_message(user_id=PERSON, text="/sos")
        sos_line = "Are you being detained"
        (sos,) = await fake.wait_for(
            "sendMessage",
            chat_id=PERSON,
            timeout=15,
            predicate=lambda c: sos_line in str(c.params.get("text")),
        )
        assert _has_word(sos.params["text"])

        # A campaign call, queued for this person in the outbox.
        await services.campaigns.subscribe(PERSON, PERSON)
        await ready_campaign(services, ADMIN)
        (call,) = await fake.wait_for(
            "sendMessage",
            chat_id=PERSON,
            timeout=20,
            predicate=lambda c: "Write a letter today." in str(c.params.get("text")),
        )
        assert _has_word(call.params["text"])

        # A hearing reminder.
        case_id = await services.hearings.create_case(ADMIN, "Case of Aziza", "Detained", "Art. 330", True)
        await services.hearings.follow(PERSON, PERSON, case_id)
        later = (datetime.now(ZoneInfo("Asia/Bishkek")) + timedelta(hours=3)).strftime("%d.%m.%Y %H:%M")
        await Person(fake, ADMIN).say(f"/hearing_add {case_id} | {later} | Oktyabrsky court | Toktogula 1")
        async with services.db.write() as conn:
            soon = datetime.now(UTC) + timedelta(hours=2, seconds=3)
            await conn.execute(text("UPDATE hearings SET starts_at = :t"), {"t": to_micros(soon)})
        (reminder,) = await fake.wait_for(
            "sendMessage", chat_id=PERSON, timeout=20, predicate=lambda c: "⚖️" in str(c.params.get("text"))
        )
        assert _has_word(reminder.params["text"])

        # What went anywhere else never carries it: the coordinators' chat, the channels.
        assert not any(_has_word(c.params) for c in fake.calls if str(c.params.get("chat_id")) != str(PERSON))

        # Cleared, it is gone from the next screen.
        message_id, answer = await _say_safeword(fake, "-")
        assert answer == texts.text("en", "safeword.cleared")
        await _deleted(fake, message_id)
        _, answer = await _say_safeword(fake, "-")
        assert answer == texts.text("en", "safeword.none")
        await services.contact.ask(ADMIN, code, "Still there?")
        (after,) = await fake.wait_for(
            "sendMessage", chat_id=PERSON, timeout=15, predicate=lambda c: "Still there?" in str(c.params)
        )
        assert not _has_word(after.params["text"]) and "🔑" not in after.params["text"]
        async with services.db.read() as conn:
            assert (await conn.execute(select(schema.users.c.safeword).where(
                schema.users.c.safeword.is_not(None)
            ))).first() is None  # fmt: skip
        await bot.quiet(fake)
        if backend == "sqlite":
            disk = _on_disk(identity_settings)
            assert b"SQLite format 3" in disk
            assert not any(part.encode() in disk for part in WORD_PARTS)
    finally:
        await bot.stop()
    if backend == "sqlite":
        assert not any(part.encode() in _on_disk(identity_settings) for part in WORD_PARTS)
    for record in caplog.records:
        logged = record.getMessage() + (record.exc_text or "") + repr(record.args)
        assert not any(part in logged for part in WORD_PARTS), logged


async def test_the_safety_word_is_sealed_while_it_is_set(
    fake: FakeBotApi, identity_settings: Settings, backend: str
) -> None:
    bot = RunningBot(identity_settings)
    await bot.start()
    try:
        _, answer = await _say_safeword(fake, TYPED)
        assert answer == catalogs().text("en", "safeword.saved")
        services = await bot.started_services()
        assert await services.safewords.of_person(PERSON) == WORD
        await bot.quiet(fake)
        if backend == "sqlite":
            assert not any(part.encode() in _on_disk(identity_settings) for part in WORD_PARTS)
        async with services.db.read() as conn:
            sealed = (await conn.execute(select(schema.users.c.safeword))).scalars().all()
        assert [s for s in sealed if s is not None] and all(b"Marmot" not in bytes(s) for s in sealed if s)
    finally:
        await bot.stop()


@pytest.mark.parametrize(
    ("asked", "key", "name"),
    [
        ("@jarchy_test_bot", "verify.official", "jarchy_test_bot"),  # the running bot (getMe)
        ("JARCHY_TEST_BOT", "verify.official", "jarchy_test_bot"),
        ("@Jarchy_Backup_Bot", "verify.official", "jarchy_backup_bot"),  # JARCHY_OFFICIAL_BOTS
        ("https://t.me/jarchy_backup_bot", "verify.official", "jarchy_backup_bot"),
        ("@jarchy_test_b0t", "verify.foreign", "jarchy_test_b0t"),  # a look-alike
        ("@jarchy_test_bot_official", "verify.foreign", "jarchy_test_bot_official"),
        ("@@!!", "verify.malformed", ""),
        ("@abc", "verify.malformed", ""),
        ("<b>x</b>", "verify.malformed", ""),
        ("", "verify.usage", ""),
    ],
)
async def test_verify_answers_for_official_foreign_and_malformed_names(
    fake: FakeBotApi, identity_settings: Settings, asked: str, key: str, name: str
) -> None:
    bot = RunningBot(identity_settings)
    await bot.start()
    try:
        reply = await Person(fake, PERSON).say(f"/verify {asked}".strip())
        official = "@jarchy_test_bot, @jarchy_backup_bot"
        expected = catalogs().text("en", key, name=name, official=official, example="jarchy_test_bot")
        assert reply["text"] == expected
    finally:
        await bot.stop()
