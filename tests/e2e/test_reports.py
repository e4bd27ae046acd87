"""The guided report end to end: every step, evidence, edits, submit once, alert, and a clean phone."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from bot.domain.report_form import MAX_TEXT
from messages import catalogs
from storage import migrations  # noqa: F401 - keeps the migration package importable in this module
from storage.database import Database
from tests.e2e.reporting import report_settings, reporting_bot
from tests.fakebot import FakeBotApi
from tests.support.bots import RunningBot
from tests.support.people import COORDINATORS, Person
from tests.support.settings import make_settings

__all__ = ["report_settings", "reporting_bot"]  # fixtures used by these tests

PHOTO = b"\x89PNG\r\n\x1a\n-fake-photo-of-a-bruise"
DOCUMENT = b"%PDF-1.4 summons for questioning"


async def walk_to_review(
    fake: FakeBotApi, person: Person, *, story: str = "Detained outside the court."
) -> None:
    """Walk every step with evidence, a typed date, a place elsewhere and a location."""
    fake.add_message(user_id=person.user_id, text="/report", language_code=person.language)
    await fake.wait_for("sendMessage", chat_id=person.user_id, timeout=15)
    await person.tap("cat", "detention")
    await person.tap("when", "type")
    assert "31.02" not in person.last_text()
    reply = await person.say("31.02.2025 10:00")
    assert reply["text"].startswith(catalogs().text(person.language, "report.when_invalid")[:15])
    reply = await person.say("01.01.2099 10:00")
    assert reply["text"].startswith(catalogs().text(person.language, "report.when_future")[:15])
    yesterday = (datetime.now(ZoneInfo("Asia/Bishkek")) - timedelta(days=1)).strftime("%d.%m.%Y")
    await person.say(f"{yesterday} 14:30")
    await person.tap("region", "elsewhere")
    await person.say("Almaty")
    await person.say(location=(42.874612, 74.612345))
    reply = await person.say("x" * (MAX_TEXT + 1))
    assert str(MAX_TEXT) in reply["text"].replace(",", "").replace("\u202f", "").replace(" ", "")
    await person.say(story)
    await person.tap("skip")
    photo = fake.add_file(PHOTO, file_name="photo.jpg")
    document = fake.add_file(DOCUMENT, file_name="summons.pdf")
    await person.say(photo_file_id=photo)
    reply = await person.say(document_file_id=document)
    assert "2" in reply["text"]
    await person.tap("done")
    await person.tap("contact", "yes")


@pytest.mark.parametrize("language", ["en", "ru"])
async def test_the_whole_guided_report_reaches_the_coordinators(
    fake: FakeBotApi, reporting_bot: RunningBot, language: str
) -> None:
    person = Person(fake, 601 + ["en", "ru"].index(language), language)
    texts = catalogs()
    await walk_to_review(fake, person, story="Detained outside the Oktyabrsky court.")
    review = person.last_text()
    assert "Almaty" in review and "42.87" in review and "Oktyabrsky" in review
    assert texts.plain(language, "category.detention") in review
    # Edit on the review screen: the time becomes "today", then back to the review.
    await person.tap("edit", "when")
    await person.tap("when", "today")
    assert person.keyboard_message()["text"] == person.last_text()
    assert datetime.now(ZoneInfo("Asia/Bishkek")).strftime("%d.%m.%Y") in person.last_text()
    await person.tap("submit")
    # The review screen became the receipt.
    edits = fake.sent("editMessageText", chat_id=person.user_id)
    receipt = edits[-1].params["text"]
    # Rendered HTML, and the receipt keeps no button; the steps before it kept theirs.
    assert all(e.params.get("parse_mode") == "HTML" for e in edits)
    assert "reply_markup" not in edits[-1].params and all("reply_markup" in e.params for e in edits[:-1])
    shown = receipt.split("<code>")[1].split("</code>")[0]
    assert shown.startswith("K-") and len(shown) == 7  # the reporter's own code (tests/test_phone_cleanup.py)

    alert = (await fake.wait_for("sendMessage", chat_id=COORDINATORS, timeout=15))[0].params
    code = re.findall(r"R-\w{5}", alert["text"])[0]
    assert reporting_bot.app_services().reports.reporter_code(code) == shown and shown not in alert["text"]
    assert "Oktyabrsky" in alert["text"]
    assert [b["callback_data"] for b in alert["reply_markup"]["inline_keyboard"][0]] == [
        f"t:{code}:ack",
        f"t:{code}:take",
        f"t:{code}:close",
    ]
    await fake.wait_for("sendPhoto", chat_id=COORDINATORS, timeout=15)
    await fake.wait_for("sendDocument", chat_id=COORDINATORS, timeout=15)
    await fake.wait_for("sendLocation", chat_id=COORDINATORS, timeout=15)
    # Coordinators never learn who reported, and nothing is forwarded (which would show the author).
    to_coordinators = [c for c in fake.calls if c.params.get("chat_id") == COORDINATORS]
    for call in to_coordinators:
        shown = str(call.params)
        assert str(person.user_id) not in shown and "Test" not in shown
    assert not [c for c in fake.calls if c.method in ("forwardMessage", "forwardMessages")]

    # Nothing left on the phone but the neutral receipt.
    await fake.wait_for("deleteMessages", chat_id=person.user_id, timeout=15)
    await reporting_bot.quiet(fake)
    remaining = fake.chat_messages(person.user_id)
    assert [m.get("text") for m in remaining] == [receipt]


async def test_a_double_submit_makes_one_report(fake: FakeBotApi, reporting_bot: RunningBot) -> None:
    person = Person(fake, 610)
    await walk_to_review(fake, person)
    message = person.keyboard_message()
    submit = next(d for d in person.buttons() if d.split(":")[3] == "submit")
    await asyncio.gather(
        person.press(submit, message["message_id"]), person.press(submit, message["message_id"])
    )
    await fake.wait_for("sendMessage", chat_id=COORDINATORS, timeout=15)
    await reporting_bot.quiet(fake)
    alerts = [c for c in fake.sent("sendMessage", chat_id=COORDINATORS) if "reply_markup" in c.params]
    assert len(alerts) == 1
    async with _db(reporting_bot) as db, db.read() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM reports"))).scalar() == 1


async def test_a_restart_mid_draft_resumes_where_the_person_was(
    fake: FakeBotApi, reporting_bot: RunningBot
) -> None:
    person = Person(fake, 620)
    fake.add_message(user_id=620, text="/report")
    await fake.wait_for("sendMessage", chat_id=620)
    await person.tap("cat", "threats")
    await person.tap("when", "now")
    await reporting_bot.restart()
    await person.tap("region", "bishkek")  # the old keyboard still works: the draft survived
    reply = await person.say("/report")
    assert reply["text"] == catalogs().text("en", "report.resume")
    await person.tap("resume")
    assert person.last_text() == catalogs().text("en", "report.step.location", count=0)


async def test_cancel_and_old_buttons_change_nothing(fake: FakeBotApi, reporting_bot: RunningBot) -> None:
    person = Person(fake, 630)
    fake.add_message(user_id=630, text="/report")
    await fake.wait_for("sendMessage", chat_id=630)
    old = person.keyboard_message()
    await person.tap("cat", "surveillance")
    await person.tap("cancel")
    assert catalogs().text("en", "report.cancelled") in [
        c.params["text"] for c in fake.sent("sendMessage", chat_id=630)
    ]
    await person.press(
        f"r:{old['reply_markup']['inline_keyboard'][0][0]['callback_data'].split(':')[1]}:category:cat:other",
        old["message_id"],
    )
    assert person.answers()[-1] == catalogs().text("en", "report.expired")
    await person.press("r:deadbeef:review:submit:", 1)
    assert person.answers()[-1] == catalogs().text("en", "report.expired")
    async with _db(reporting_bot) as db, db.read() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM reports"))).scalar() == 0
        assert (await conn.execute(text("SELECT count(*) FROM drafts"))).scalar() == 0


async def test_wrong_input_gets_a_reprompt_and_changes_nothing(
    fake: FakeBotApi, reporting_bot: RunningBot
) -> None:
    person = Person(fake, 640)
    fake.add_message(user_id=640, text="/report")
    await fake.wait_for("sendMessage", chat_id=640)
    reply = await person.say(sticker=True)
    assert reply["text"].startswith(catalogs().text("en", "report.use_buttons"))
    await person.tap("cat", "other")
    await person.tap("when", "now")
    await person.tap("region", "naryn")
    await person.tap("skip")
    reply = await person.say(sticker=True)
    assert reply["text"].startswith(catalogs().text("en", "report.expects_text"))
    reply = await person.say("\u202e\u0000   ")
    assert reply["text"].startswith(catalogs().text("en", "report.expects_text"))
    reply = await person.say("Ко мне пришли 👮 ночью\u200d")
    assert reply["text"] == catalogs().text("en", "report.step.people", count=0)


def _db(bot: RunningBot) -> _OpenDb:
    return _OpenDb(bot)


class _OpenDb:
    def __init__(self, bot: RunningBot) -> None:
        self._db = Database.connect(bot.settings.database_url)

    async def __aenter__(self) -> Database:
        return self._db

    async def __aexit__(self, *exc: object) -> None:
        await self._db.close()


async def test_telegram_failing_mid_flow_loses_no_step_and_makes_one_report(
    fake: FakeBotApi, reporting_bot: RunningBot
) -> None:
    person = Person(fake, 650)
    fake.add_message(user_id=650, text="/report")
    await fake.wait_for("sendMessage", chat_id=650)
    fake.fail_next("editMessageText", 1, status=502)
    await person.tap("cat", "court")
    # The step was saved; the failed edit is retried with the update, and the screen catches up.
    await fake.wait_for("editMessageText", chat_id=650, timeout=15)
    assert person.last_text() == catalogs().text("en", "report.step.when", count=0)
    await person.tap("when", "now")
    await person.tap("region", "batken")
    await person.tap("skip")
    await person.say("Summoned without a written order.")
    await person.tap("skip")
    await person.tap("done")
    await person.tap("contact", "no")
    fake.fail_next("editMessageText", 1, status=500)
    message = person.keyboard_message()
    submit = next(d for d in person.buttons() if d.split(":")[3] == "submit")
    fake.add_callback_query(user_id=650, data=submit, message_id=message["message_id"])
    receipts = await fake.wait_for(
        "editMessageText", chat_id=650, timeout=20, predicate=lambda c: "K-" in str(c.params.get("text"))
    )
    assert len(receipts) == 1
    assert [m for m in person.bot_messages() if "K-" in str(m.get("text"))] == [
        m for m in person.bot_messages() if m["message_id"] == message["message_id"]
    ]
    await fake.wait_for("sendMessage", chat_id=COORDINATORS, timeout=15)
    async with _db(reporting_bot) as db, db.read() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM reports"))).scalar() == 1


async def test_a_retried_message_is_not_taken_twice(fake: FakeBotApi, reporting_bot: RunningBot) -> None:
    person = Person(fake, 660)
    fake.add_message(user_id=660, text="/report")
    await fake.wait_for("sendMessage", chat_id=660)
    for action, arg in (("cat", "other"), ("when", "now"), ("region", "osh_city"), ("skip", "")):
        await person.tap(action, arg)
    fake.fail_next("sendMessage", 1, status=502)
    fake.add_message(user_id=660, text="The story, once.")
    await fake.wait_for(
        "sendMessage",
        chat_id=660,
        timeout=20,
        predicate=lambda c: str(c.params.get("text")) == catalogs().text("en", "report.step.people", count=0),
    )
    await person.tap("skip")
    await person.tap("done")
    await person.tap("contact", "no")
    review = person.last_text()
    assert review.count("The story, once.") == 1
    assert "<b>People affected:</b> —" in review


async def test_a_burst_of_submits_alerts_before_it_cleans_up_the_phones(
    fake: FakeBotApi, tmp_path: Path
) -> None:
    # Limits off, as in bench/alert_latency.py: every alert goes as its own card at once.
    settings = make_settings(
        tmp_path,
        api_url=fake.url,
        coordinator_chat_id=COORDINATORS,
        rate_global_per_s=0,
        rate_private_per_s=0,
        rate_group_per_min=0,
    )
    running = RunningBot(settings)
    await running.start()
    try:
        await _burst_of_submits(fake)
    finally:
        await running.stop()


async def _burst_of_submits(fake: FakeBotApi) -> None:
    people = [Person(fake, 640 + i) for i in range(12)]

    await asyncio.gather(
        *(_to_anonymous_review(fake, p, f"Threatened after the rally, {p.user_id}.") for p in people)
    )
    for person in people:
        submit = next(d for d in person.buttons() if d.split(":")[3] == "submit")
        fake.add_callback_query(
            user_id=person.user_id, data=submit, message_id=person.keyboard_message()["message_id"]
        )
    cards = await fake.wait_for(
        "sendMessage",
        chat_id=COORDINATORS,
        count=len(people),
        timeout=30,
        predicate=lambda c: "reply_markup" in c.params,
    )
    deletions = []
    for person in people:
        deletions += await fake.wait_for("deleteMessages", chat_id=person.user_id, timeout=30)
    # Every alert of the burst reached the coordinators before any reporter's conversation was deleted;
    # and each conversation was deleted within seconds all the same.
    assert max(c.at for c in cards) < min(d.at for d in deletions)
    assert max(d.at for d in deletions) - max(c.at for c in cards) < 10


async def test_the_scrub_after_an_anonymous_report_comes_after_its_conversation_left_the_phone(
    fake: FakeBotApi, reporting_bot: RunningBot
) -> None:
    # A deletion still queued at the scrub is re-sealed under the epoch that stays (its payload names the
    # reporter's chat); one already sent has no payload left, and the retired epoch takes its old copies.
    person = Person(fake, 660)
    await _to_anonymous_review(fake, person, "Followed home after the rally.")
    keys = reporting_bot.app_services().cipher.transient_keys
    assert keys is not None
    epoch = keys.current
    await person.tap("submit")
    for _ in range(300):
        if keys.current != epoch:
            break
        await asyncio.sleep(0.05)
    assert keys.current != epoch, "the anonymous report was followed by a scrub"
    assert fake.sent("deleteMessages", chat_id=person.user_id), "the conversation had gone before the scrub"


async def test_a_stop_right_after_submit_still_clears_the_conversation(
    fake: FakeBotApi, tmp_path: Path
) -> None:
    # The deletion is due seconds after Submit; a bot stopped (a deploy, a server being taken) meanwhile
    # sends it first rather than leave the conversation on the phone until it runs again.
    running = RunningBot(make_settings(tmp_path, api_url=fake.url, coordinator_chat_id=COORDINATORS))
    await running.start()
    try:
        person = Person(fake, 670)
        await _to_anonymous_review(fake, person, "Searched at the border.")
        await person.tap("submit")
    finally:
        await running.stop()
    assert fake.sent("deleteMessages", chat_id=person.user_id)


async def _to_anonymous_review(fake: FakeBotApi, person: Person, story: str) -> None:
    """Walk a text-only anonymous report the shortest way to its review screen."""
    fake.add_message(user_id=person.user_id, text="/report")
    await fake.wait_for("sendMessage", chat_id=person.user_id, timeout=15)
    for action, arg in (("cat", "threats"), ("when", "now"), ("region", "bishkek"), ("skip", "")):
        await person.tap(action, arg)
    await person.say(story)
    for action, arg in (("skip", ""), ("done", ""), ("contact", "no")):
        await person.tap(action, arg)
