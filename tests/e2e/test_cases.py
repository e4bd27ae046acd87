"""Court cases end to end: follow a case, get a reminder, say "I will attend", hear of the postponement."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from icalendar import Calendar
from sqlalchemy import text

from messages import catalogs
from storage.database import Database
from storage.types import to_micros
from tests.fakebot import FakeBotApi
from tests.support.bots import RunningBot
from tests.support.people import Person
from tests.support.settings import make_settings

COORDINATOR = 5101
FOLLOWER = 5102


async def test_follow_remind_attend_postpone(fake: FakeBotApi, tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, api_url=fake.url, admin_ids=frozenset({COORDINATOR}), reminder_interval_s=1.0
    )
    bot = RunningBot(settings)
    await bot.start()
    try:
        coordinator, follower = Person(fake, COORDINATOR), Person(fake, FOLLOWER, "ru")
        reply = await coordinator.say(
            "/case_new Makhabat T. | Blogger charged for a post | Art. 327 | public"
        )
        assert "#1" in reply["text"]
        in_three_hours = (datetime.now(ZoneInfo("Asia/Bishkek")) + timedelta(hours=3)).strftime(
            "%d.%m.%Y %H:%M"
        )
        reply = await coordinator.say(
            f"/hearing_add 1 | {in_three_hours} | Oktyabrsky court | Bishkek, Toktogula 1"
        )
        assert "#1" in reply["text"]
        # A stranger cannot schedule anything.
        refused = await follower.say("/hearing_cancel 1")
        assert refused["text"] == catalogs().text("ru", "cases.refused")

        listing = await follower.say("/cases")
        assert "Makhabat" in listing["text"]
        await follower.press("cf:1", fake.sent("sendMessage", chat_id=FOLLOWER)[-1].result["message_id"])
        assert follower.last_text() == catalogs().text("ru", "follow.done", title="Makhabat T.")

        # Bring the hearing to 2 hours and 3 seconds from now, so the 2-hour reminder falls due at once.
        db = Database.connect(settings.database_url)
        try:
            async with db.write() as conn:
                soon = datetime.now(UTC) + timedelta(hours=2, seconds=3)
                await conn.execute(text("UPDATE hearings SET starts_at = :t"), {"t": to_micros(soon)})
        finally:
            await db.close()
        (reminder,) = await fake.wait_for(
            "sendMessage", chat_id=FOLLOWER, timeout=20, predicate=lambda c: "⚖️" in str(c.params.get("text"))
        )
        assert "Makhabat" in reminder.params["text"]
        buttons = [b["callback_data"] for b in reminder.params["reply_markup"]["inline_keyboard"][0]]
        assert buttons == ["att:1:0", "ics:1"]
        await follower.press("att:1:0", reminder.result["message_id"])
        assert follower.answers()[-1] == catalogs().text("ru", "attend.done")
        count = await coordinator.say("/hearings 1")
        assert "1" in count["text"].split(":")[-1]

        new_time = (datetime.now(ZoneInfo("Asia/Bishkek")) + timedelta(days=5)).strftime("%d.%m.%Y %H:%M")
        await coordinator.say(f"/hearing_postpone 1 | {new_time}")
        (notice,) = await fake.wait_for(
            "sendMessage",
            chat_id=FOLLOWER,
            timeout=20,
            predicate=lambda c: new_time in str(c.params.get("text")),
        )
        assert "⚠️" in notice.params["text"]
        # The old "I will attend" button no longer counts for the moved hearing.
        await follower.press("att:1:0", reminder.result["message_id"])
        assert follower.answers()[-1] == catalogs().text("ru", "attend.stale")

        fake.add_message(user_id=FOLLOWER, text="/calendar", language_code="ru")
        (document,) = await fake.wait_for("sendDocument", chat_id=FOLLOWER, timeout=15)
        content = fake.files[document.result["document"]["file_id"]].content
        (event,) = Calendar.from_ical(content).walk("VEVENT")
        assert event.decoded("dtstart").strftime("%d.%m.%Y %H:%M") == new_time
        assert event.decoded("sequence") == 1
    finally:
        await bot.stop()


async def test_registered_channels_get_public_announcements(fake: FakeBotApi, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_url=fake.url, admin_ids=frozenset({COORDINATOR}))
    bot = RunningBot(settings)
    await bot.start()
    channel = -100888
    try:
        coordinator = Person(fake, COORDINATOR)
        fake.add_message(user_id=FOLLOWER, chat_id=channel, chat_type="supergroup", text="/bind_channel")
        (refusal,) = await fake.wait_for("sendMessage", chat_id=channel, timeout=15)
        assert refusal.params["text"] == catalogs().text("en", "channel.refused")
        fake.add_message(user_id=COORDINATOR, chat_id=channel, chat_type="supergroup", text="/bind_channel")
        await fake.wait_for("sendMessage", chat_id=channel, count=2, timeout=15)
        await coordinator.say("/case_new Kanyshay M. | Activist detained after a rally | Art. 264 | public")
        await coordinator.say("/case_new Private matter | Not to be announced | n/a | private")
        await coordinator.say("/case_edit 2 | Private matter | Still not announced | n/a | private")
        later = (datetime.now(ZoneInfo("Asia/Bishkek")) + timedelta(days=9)).strftime("%d.%m.%Y %H:%M")
        await coordinator.say(f"/hearing_add 1 | {later} | Leninsky court | Bishkek, Chui 32")
        await coordinator.say(f"/hearing_add 2 | {later} | Leninsky court | Bishkek, Chui 32")
        posts = await fake.wait_for("sendMessage", chat_id=channel, count=3, timeout=15)
        await asyncio.sleep(0.5)
        announced = [c.params["text"] for c in fake.sent("sendMessage", chat_id=channel)][2:]
        assert len(announced) == 1 and "Kanyshay" in announced[0]
        assert "reply_markup" not in posts[-1].params
    finally:
        await bot.stop()
