"""An admin revokes a coordinator from the /team buttons in each language: Telegram accepts the button's
answer (at most 200 characters) and the confirmation becomes the full revoke text.

The full text, with a 32-character name and the freed reports, is over 200 characters in most languages:
answered as an alert it was refused with MESSAGE_TOO_LONG and the admin saw nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from bot.services.access.team import NAME_MAX
from messages import LANGUAGES, catalogs
from tests.e2e.reporting import report_settings
from tests.fakebot import ApiCall, FakeBotApi
from tests.support.bots import RunningBot
from tests.support.people import ADMIN, Person

__all__ = ["report_settings"]

COORDINATOR = 6201
# A display name at its limit: the longest the answer and the message can get.
LONG_NAME = ("Gulnara Abdykadyrova-Toktogulova " * 2)[:NAME_MAX].strip()


@pytest.fixture
async def running(report_settings: Any) -> AsyncIterator[RunningBot]:
    """A running bot with the admin and one coordinator with a display name at the limit."""
    bot = RunningBot(replace(report_settings, flood_per_minute=1000))
    await bot.start()
    yield bot
    await bot.stop()


async def _press(fake: FakeBotApi, person: Person, data: str, message_id: int) -> ApiCall:
    """Press a button and return the bot's answer to it, accepted by the fake or not."""
    update = fake.add_callback_query(
        user_id=person.user_id, data=data, message_id=message_id, language_code=person.language
    )
    query_id = str(update["callback_query"]["id"])

    def answers() -> list[ApiCall]:
        # fake.sent() lists only accepted calls: a refused answer must fail here, not time out.
        return [
            c
            for c in fake.calls
            if c.method == "answerCallbackQuery" and str(c.params.get("callback_query_id")) == query_id
        ]

    for _ in range(300):
        if answers():
            return answers()[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{data}: no answer")


@pytest.mark.parametrize("language", LANGUAGES)
async def test_revoke_from_the_team_buttons_in_every_language(
    fake: FakeBotApi, running: RunningBot, language: str
) -> None:
    admin = Person(fake, ADMIN, language)
    await admin.say("/start")  # the services are open once the bot answers
    services = running.app_services()
    await services.users.choose_language(ADMIN, language)
    await services.users.seen(COORDINATOR, language)
    invite = await services.team.invite(ADMIN)
    await services.team.join(COORDINATOR, invite.token)
    assert await services.team.set_name(COORDINATOR, LONG_NAME) == LONG_NAME
    assert len(LONG_NAME) == NAME_MAX

    await admin.say("/team")
    listing = admin.keyboard_message()
    (revoke_button,) = [d for d in admin.buttons() if d.startswith("tm:rv:")]
    ref = revoke_button.rsplit(":", 1)[-1]
    asked = await _press(fake, admin, revoke_button, listing["message_id"])
    assert asked.ok, asked.response

    # The /team listing has buttons too: wait for the confirmation's own.
    await fake.wait_for("sendMessage", chat_id=ADMIN, predicate=lambda c: "tm:rvy:" in str(c.params))
    confirmation = admin.keyboard_message()
    assert admin.buttons() == [f"tm:rvy:{ref}"]
    texts = catalogs()
    assert confirmation["text"] == texts.plain(language, "team.revoke_confirm", ref=ref)

    answer = await _press(fake, admin, f"tm:rvy:{ref}", confirmation["message_id"])
    assert answer.ok, f"Telegram refused the answer: {answer.response}"
    assert answer.params.get("text") == texts.plain(language, "team.revoked_short", name=LONG_NAME)

    edited = await fake.wait_for("editMessageText", chat_id=ADMIN)
    assert edited[-1].params["message_id"] == confirmation["message_id"]
    full = texts.plain(language, "team.revoked", name=LONG_NAME, freed=0)
    changed = next(m for m in admin.bot_messages() if m["message_id"] == confirmation["message_id"])
    assert changed["text"] == full
    assert not await services.gate.holds(COORDINATOR, ("coordinator",))


async def test_a_name_with_html_characters_is_shown_as_it_is(fake: FakeBotApi, running: RunningBot) -> None:
    # The revoke text is rendered plain (it doubles as the button's answer): sent under the HTML default,
    # "<b>" would turn bold or, unclosed, make Telegram refuse the whole message.
    name = "Tom & <b>Jerry"
    admin = Person(fake, ADMIN, "en")
    await admin.say("/start")
    services = running.app_services()
    await services.users.seen(COORDINATOR, "en")
    invite = await services.team.invite(ADMIN)
    await services.team.join(COORDINATOR, invite.token)
    assert await services.team.set_name(COORDINATOR, name) == name

    await admin.say("/team")
    (revoke_button,) = [d for d in admin.buttons() if d.startswith("tm:rv:")]
    ref = revoke_button.rsplit(":", 1)[-1]
    await _press(fake, admin, revoke_button, admin.keyboard_message()["message_id"])
    await fake.wait_for("sendMessage", chat_id=ADMIN, predicate=lambda c: "tm:rvy:" in str(c.params))
    confirmation = admin.keyboard_message()
    await _press(fake, admin, f"tm:rvy:{ref}", confirmation["message_id"])

    (edited,) = await fake.wait_for("editMessageText", chat_id=ADMIN)
    assert edited.params["text"] == catalogs().plain("en", "team.revoked", name=name, freed=0)
    assert "parse_mode" not in edited.params
    # The confirmation above it is rendered as HTML and sent as HTML.
    (asked,) = [c for c in fake.sent("sendMessage", chat_id=ADMIN) if "tm:rvy:" in str(c.params)]
    assert asked.params["parse_mode"] == "HTML"
