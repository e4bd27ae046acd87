"""Buttons are checked like commands: forged callback data shows nothing, changes nothing, is answered
without telling what exists, and is audited; a stranger's /bind_channel never makes the bot ask Telegram."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import text

from bot.domain.callbacks import AttendPress, Callback, OpenCard
from bot.services.access.roles import UNNAMED
from bot.services.cases.commands import HEARING_ADD
from bot.wiring import Services
from messages import Safe, catalogs
from messages.command_screens import render_usage
from tests.e2e.reporting import report_settings
from tests.fakebot import FakeBotApi
from tests.support.bots import RunningBot
from tests.support.people import ADMIN, Person

__all__ = ["report_settings"]

STRANGER = 6201
FOREIGN = -100666  # a group someone added the bot to: not the coordinators' chat


@pytest.fixture
async def bot(fake: FakeBotApi, report_settings: Any) -> AsyncIterator[RunningBot]:
    """The running bot with an admin, a coordinators' chat, and a stranger who has written to it."""
    running = RunningBot(report_settings)
    await running.start()
    await Person(fake, ADMIN).say("/help")
    await Person(fake, STRANGER).say("/help")
    yield running
    await running.stop()


async def refused(services: Services) -> list[tuple[Any, ...]]:
    """Return every refused attempt in the audit log: actor, action, target, detail."""
    async with services.db.read() as conn:
        rows = await conn.execute(
            text("SELECT actor, action, target, detail FROM audit_log WHERE outcome = 'refused' ORDER BY id")
        )
        return [tuple(row) for row in rows]


async def press(fake: FakeBotApi, user_id: int, data: str, chat_id: int | None = None) -> str:
    """Press a button with this callback data (in the presser's private chat, or `chat_id`); return the
    answer's text."""
    update = fake.add_callback_query(
        user_id=user_id,
        data=data,
        message_id=1,
        chat_id=chat_id,
        chat_type="private" if chat_id is None else "supergroup",
    )
    query_id = str(update["callback_query"]["id"])
    (answer,) = await fake.wait_for(
        "answerCallbackQuery",
        timeout=15,
        predicate=lambda c: str(c.params.get("callback_query_id")) == query_id,
    )
    return str(answer.params.get("text", ""))


async def test_a_forged_attend_on_a_hidden_or_missing_hearing_tells_nothing(
    fake: FakeBotApi, bot: RunningBot
) -> None:
    services = bot.app_services()
    hearings = services.hearings
    case_id = await hearings.create_case(ADMIN, "Closed trial", "Not public", "n/a", False)
    hidden = await hearings.add_hearing(ADMIN, case_id, "10.03.2031 12:00", "Court", "Address", None, None)
    before = await refused(services)
    answers = [await press(fake, STRANGER, f"att:{hearing_id}:0") for hearing_id in (hidden.id, 999)]
    assert answers[0] == answers[1] == catalogs().plain("en", "attend.stale")
    async with services.db.read() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM attendance"))).scalar() == 0
    # Audited without naming the presser: the log outlives /forget, and must not tie a follower to a case.
    assert (await refused(services))[len(before) :] == [
        (UNNAMED, "hearing.attend", f"#{hidden.id}", "hearings.not_found"),
        (UNNAMED, "hearing.attend", "#999", "hearings.not_found"),
    ]


async def test_coordinators_buttons_pressed_in_a_foreign_chat_are_refused(
    fake: FakeBotApi, bot: RunningBot
) -> None:
    services = bot.app_services()
    case_id = await services.hearings.create_case(ADMIN, "Open trial", "Public", "Art. 1", True)
    hearing = await services.hearings.add_hearing(
        ADMIN, case_id, "10.03.2031 12:00", "Court", "Address", None, None
    )
    invite = await services.team.invite(ADMIN)
    wrong_chat = catalogs().plain("en", "coord.wrong_chat")
    admin = services.pseudonyms.of_user(ADMIN)
    presses = {
        "rl:2:999999:....": "desk.list",
        "tm:rv:0123456789": "team.revoke",
        "tm:rvy:0123456789": "team.revoke",
        f"inv:x:{invite.id}": "team.withdraw",
        OpenCard("R-ABCDE").pack(): "alerts.open",
        "duty:on": "team.duty",
        f"ics:{hearing.id}": "hearing.calendar",
    }
    for data, action in presses.items():
        before = await refused(services)
        assert await press(fake, ADMIN, data, chat_id=FOREIGN) == wrong_chat, data
        # The calendar button is a follower's: its refusal does not name the presser.
        actor = UNNAMED if action == "hearing.calendar" else admin
        assert (await refused(services))[len(before) :] == [(actor, action, None, "wrong chat")], data
    await bot.quiet(fake)
    # Nothing was posted, sent or edited in the foreign chat, and nothing changed.
    assert not [c for c in fake.sent() if c.params.get("chat_id") == FOREIGN and c.method != "getUpdates"]
    async with services.db.read() as conn:
        withdrawn = await conn.execute(
            text("SELECT withdrawn_at FROM invites WHERE id = :i"), {"i": invite.id}
        )
        assert withdrawn.scalar() is None
        duty = await conn.execute(
            text("SELECT count(*) FROM audit_log WHERE action = 'team.duty' AND outcome = 'ok'")
        )
        assert duty.scalar() == 0


async def test_a_strangers_bind_channel_asks_telegram_nothing(fake: FakeBotApi, bot: RunningBot) -> None:
    services = bot.app_services()
    before = await refused(services)
    fake.add_message(user_id=STRANGER, chat_id=FOREIGN, chat_type="supergroup", text="/bind_channel")
    (answer,) = await fake.wait_for("sendMessage", chat_id=FOREIGN, timeout=15)
    assert answer.params["text"] == catalogs().text("en", "channel.refused")
    in_private = await Person(fake, STRANGER).say("/bind_channel @somechannel")
    assert in_private["text"] == catalogs().text("en", "channel.refused")
    await bot.quiet(fake)
    assert not [c for c in fake.calls if c.method in ("getChat", "getChatMember")]
    stranger = services.pseudonyms.of_user(STRANGER)
    assert (await refused(services))[len(before) :] == [
        (stranger, "channel.bind", str(FOREIGN), "role"),
        (stranger, "channel.bind", None, "role"),
    ]


async def test_bad_input_to_hearing_commands_is_audited_once(fake: FakeBotApi, bot: RunningBot) -> None:
    services = bot.app_services()
    case_id = await services.hearings.create_case(ADMIN, "Open trial", "Public", "Art. 1", True)
    admin, stranger = Person(fake, ADMIN), Person(fake, STRANGER)
    en = catalogs()
    before = await refused(services)
    reply = await admin.say(f"/hearing_add {case_id} | next Tuesday | Court | Address")
    # The field that could not be read, why, and the usage assembled from the declaration.
    usage = render_usage(en, "en", HEARING_ADD)
    problem = Safe(en.text("en", "hearings.bad_time"))
    field = en.text("en", "cmd.field_error", field=en.plain("en", "field.when"), problem=problem)
    assert reply["text"] == field + "\n\n" + usage
    reply = await admin.say("/hearing_add oops")
    assert reply["text"] == usage
    reply = await admin.say("/hearing_postpone 999 | 10.03.2031 12:00")
    assert reply["text"] == en.text("en", "hearings.not_found")
    # A stranger's unreadable command is refused for the role (no syntax shown), and audited once.
    reply = await stranger.say("/hearing_add oops")
    assert reply["text"] == en.text("en", "cases.refused")
    pseudonym, outsider = services.pseudonyms.of_user(ADMIN), services.pseudonyms.of_user(STRANGER)
    assert (await refused(services))[len(before) :] == [
        (pseudonym, "hearing.add", f"#{case_id}", "hearings.bad_time"),
        (pseudonym, "hearing.add", None, "hearings.usage_add"),
        (pseudonym, "hearing.change", "#999", "hearings.not_found"),
        (outsider, "hearing.add", None, "role"),
    ]
    async with services.db.read() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM hearings"))).scalar() == 0


@pytest.fixture
async def roomy_bot(fake: FakeBotApi, report_settings: Any) -> AsyncIterator[RunningBot]:
    """The running bot with an admin, and room for more presses a minute than the flood guard allows."""
    running = RunningBot(replace(report_settings, flood_per_minute=1000))
    await running.start()
    await Person(fake, ADMIN).say("/help")
    yield running
    await running.stop()


async def test_a_malformed_press_of_every_family_is_answered_and_changes_nothing(
    fake: FakeBotApi, roomy_bot: RunningBot
) -> None:
    services = roomy_bot.app_services()
    en = catalogs()
    families = [f for prefix, f in Callback.families().items() if not prefix.startswith("test-")]
    assert len(families) > 20
    before = await refused(services)
    sent_before = len(fake.sent())
    for family in families:
        # The prefix alone, and too many parts of the wrong type: no family unpacks either.
        for data in (family.prefix, f"{family.prefix}:Z!:Z!:Z!:Z!:Z!:Z!"):
            assert not family.matches(data)
            # Attendance answers its own malformed data (and audits it); the rest get the fallback's answer.
            expected = "attend.stale" if family is AttendPress else "callback.stale"
            assert await press(fake, ADMIN, data) == en.plain("en", expected), data
    # Data no family writes at all, and data over Telegram's 64 bytes (only a forged client sends it).
    for data in ("zz-nope:1", "t:" + "9" * 70):
        assert await press(fake, ADMIN, data) == en.plain("en", "callback.stale"), data
    await roomy_bot.quiet(fake)
    assert {c.method for c in fake.sent()[sent_before:]} <= {"answerCallbackQuery", "getUpdates"}
    admin = services.pseudonyms.of_user(ADMIN)
    # Every refusal is audited: by family, never naming the presser (attendance names its own, as before).
    unmatched = [
        (UNNAMED, "button.unmatched", None, family.prefix)
        for family in families
        if family is not AttendPress
        for _ in range(2)
    ]
    attend = [(admin, "hearing.attend", None, "callback.stale")] * 2
    outside = [(UNNAMED, "button.unmatched", None, "unknown"), (UNNAMED, "button.unmatched", None, "t")]
    assert sorted((await refused(services))[len(before) :]) == sorted(unmatched + attend + outside)
