"""Declared commands end to end: a one-liner keeps its line breaks, and /hearing_add alone walks the
coordinator through its fields with buttons and the date picker, across a restart, to the same save."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import text

from bot.domain.callbacks import DatePress, FlowPress
from messages import catalogs
from storage.types import from_micros
from tests.fakebot import FakeBotApi
from tests.support.bots import RunningBot
from tests.support.people import Person
from tests.support.settings import make_settings

COORDINATOR = 5201
STRANGER = 5202
BISHKEK = ZoneInfo("Asia/Bishkek")


def _press_data(person: Person, family: type[FlowPress] | type[DatePress], **wanted: object) -> str:
    for data in person.buttons():
        if family.matches(data):
            value = family.unpack(data)
            if all(getattr(value, name) == want for name, want in wanted.items()):
                return data
    raise AssertionError(f"no {family.__name__} {wanted} in {person.buttons()}")


async def _tap(person: Person, family: type[FlowPress] | type[DatePress], **wanted: object) -> None:
    await person.press(_press_data(person, family, **wanted), person.keyboard_message()["message_id"])


async def test_guided_hearing_with_the_picker_survives_a_restart(fake: FakeBotApi, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_url=fake.url, admin_ids=frozenset({COORDINATOR}))
    bot = RunningBot(settings)
    await bot.start()
    try:
        coordinator, stranger = Person(fake, COORDINATOR), Person(fake, STRANGER)
        # The one-liner keeps line breaks inside a field, and \| writes a bar.
        reply = await coordinator.say(
            "/case_new Aida K. | Detained after a post\nHeld since May | Art. 1\\|2 | public"
        )
        assert "#1" in reply["text"]
        case, _ = await bot.app_services().hearings.case_view(1)
        assert case.description == "Detained after a post\nHeld since May" and case.charges == "Art. 1|2"

        first = await coordinator.say("/hearing_add")
        assert catalogs().text("en", "prompt.case") in first["text"]
        pick = _press_data(coordinator, FlowPress, action="pick", value="1")

        # Someone else pressing the coordinator's button is refused politely, and nothing moves.
        await stranger.press(pick, 1)
        assert stranger.answers()[-1] == catalogs().plain("en", "flow.stale")

        await _tap(coordinator, FlowPress, action="pick", value="1")
        assert catalogs().text("en", "prompt.when") in coordinator.last_text()
        # Three days ahead in the coordinator's zone: the next month's page if it falls there.
        day = datetime.now(BISHKEK).date() + timedelta(days=3)
        if day.month != datetime.now(BISHKEK).month:
            await _tap(coordinator, DatePress, action="month", value=day.year * 100 + day.month)
        await _tap(coordinator, DatePress, action="day", value=day.year * 10000 + day.month * 100 + day.day)
        await _tap(coordinator, DatePress, action="hour", value=10)
        await _tap(coordinator, DatePress, action="minute", value=30)
        assert catalogs().text("en", "prompt.court") in coordinator.last_text()

        await bot.restart()  # the flow is in the database, not in memory

        await coordinator.say("Oktyabrsky court")
        reply = await coordinator.say("Bishkek,\nToktogula 1")
        assert catalogs().text("en", "prompt.details") in reply["text"]
        await _tap(coordinator, FlowPress, action="skip")
        await _tap(coordinator, FlowPress, action="skip")
        summary = coordinator.keyboard_message()
        assert "Oktyabrsky court" in summary["text"] and f"{day:%d.%m.%Y} 10:30" in summary["text"]
        save = _press_data(coordinator, FlowPress, action="save")
        await coordinator.press(save, summary["message_id"])
        assert "#1" in coordinator.last_text() and "keyboard" not in str(coordinator.bot_messages()[-1])

        # The same Save again: the flow has ended, nothing is added twice.
        await coordinator.press(save, summary["message_id"])
        assert coordinator.answers()[-1] == catalogs().plain("en", "flow.stale")
        async with bot.app_services().db.read() as conn:
            rows = (await conn.execute(text("SELECT starts_at, court, address FROM hearings"))).all()
            audited = (
                await conn.execute(text("SELECT count(*) FROM audit_log WHERE action = 'hearing.add'"))
            ).scalar()
            flows = (await conn.execute(text("SELECT count(*) FROM drafts WHERE kind = 'flow'"))).scalar()
        ((starts_at, court, address),) = rows
        expected = datetime(day.year, day.month, day.day, 10, 30, tzinfo=BISHKEK).astimezone(UTC)
        assert from_micros(starts_at) == expected
        assert (court, address) == ("Oktyabrsky court", "Bishkek,\nToktogula 1")
        assert audited == 1 and flows == 0

        # Moving it: the hearing is a button, named by its time and case.
        first = await coordinator.say("/hearing_move")
        assert catalogs().text("en", "prompt.hearing") in first["text"]
        (label,) = [
            b["text"] for row in first["reply_markup"]["inline_keyboard"] for b in row if "#" in b["text"]
        ]
        assert label == f"#1 {day:%d.%m} 10:30 Aida K."
        await _tap(coordinator, FlowPress, action="pick", value="1")
        assert catalogs().text("en", "prompt.court") in coordinator.last_text()
    finally:
        await bot.stop()


async def test_a_stranger_cannot_start_a_flow_and_cancel_ends_one(fake: FakeBotApi, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_url=fake.url, admin_ids=frozenset({COORDINATOR}))
    bot = RunningBot(settings)
    await bot.start()
    try:
        coordinator, stranger = Person(fake, COORDINATOR), Person(fake, STRANGER)
        refused = await stranger.say("/case_new")
        assert refused["text"] == catalogs().text("en", "cases.refused")
        await coordinator.say("/case_new")
        await coordinator.say("Aida K.")
        reply = await coordinator.say("Line one\nline two")
        assert catalogs().text("en", "prompt.charges") in reply["text"]
        # A stranger typing meanwhile does not reach the coordinator's flow.
        await stranger.say("Art. 99")
        await _tap(coordinator, FlowPress, action="back")
        assert "Line one" in coordinator.last_text()  # the value given is shown again
        cancel = _press_data(coordinator, FlowPress, action="cancel")
        message_id = coordinator.keyboard_message()["message_id"]
        await stranger.press(cancel, message_id)
        assert stranger.answers()[-1] == catalogs().plain("en", "flow.stale")
        await coordinator.press(cancel, message_id)
        assert coordinator.last_text() == catalogs().plain("en", "flow.cancelled")
        await bot.quiet(fake)
        async with bot.app_services().db.read() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM cases"))).scalar() == 0
            assert (await conn.execute(text("SELECT count(*) FROM drafts"))).scalar() == 0
            refusals = (
                await conn.execute(text("SELECT action, detail FROM audit_log WHERE outcome = 'refused'"))
            ).all()
        assert ("case.new", "role") in refusals and ("flow.press", "role") in refusals
    finally:
        await bot.stop()


async def test_a_report_started_mid_flow_gets_what_is_typed_next(fake: FakeBotApi, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_url=fake.url, admin_ids=frozenset({COORDINATOR}))
    bot = RunningBot(settings)
    await bot.start()
    try:
        coordinator = Person(fake, COORDINATOR)
        await coordinator.say("/case_new")
        await coordinator.say("Aida K.")  # the flow now waits for the description
        await coordinator.say("/report")
        await coordinator.tap("cat", "detention")
        await coordinator.tap("when", "now")
        await coordinator.tap("region", "bishkek")
        await coordinator.tap("skip")
        reply = await coordinator.say("Two officers took a colleague at the court")
        # The report's next step, not the flow's: the flow was set aside when the report began.
        assert catalogs().text("en", "prompt.charges") not in reply["text"]
        async with bot.app_services().db.read() as conn:
            kinds = (await conn.execute(text("SELECT kind FROM drafts"))).scalars().all()
            assert (await conn.execute(text("SELECT count(*) FROM cases"))).scalar() == 0
        assert "flow" not in kinds and kinds
    finally:
        await bot.stop()
