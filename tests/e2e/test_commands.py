"""/start, /help and /language end to end in all four languages, and polite answers to everything else."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.settings import Settings
from messages import LANGUAGES, catalogs
from messages.menus import PUBLIC_COMMANDS, command_list, help_screen
from tests.fakebot import FakeBotApi
from tests.support.bots import RunningBot
from tests.support.replies import next_reply, reply_texts
from tests.support.settings import make_settings


@pytest.mark.parametrize("language", LANGUAGES)
async def test_start_and_help_answer_in_the_users_language(
    fake: FakeBotApi, bot: RunningBot, language: str
) -> None:
    texts = catalogs()
    user = 1000 + LANGUAGES.index(language)
    fake.add_message(user_id=user, text="/start", language_code=language)
    welcome = await next_reply(fake, user)
    assert welcome["text"] == texts.text(language, "start.welcome", commands=command_list(texts, language))
    assert welcome["parse_mode"] == "HTML"
    fake.add_message(user_id=user, text="/help", language_code=language)
    help_ = await next_reply(fake, user, count=2)
    assert help_["text"] == help_screen(texts, language)


async def test_an_unsupported_telegram_language_falls_back_to_the_default(
    fake: FakeBotApi, bot: RunningBot
) -> None:
    fake.add_message(user_id=77, text="/help", language_code="de")
    reply = await next_reply(fake, 77)
    assert reply["text"].startswith(
        catalogs().text("en", "help.text", commands=command_list(catalogs(), "en"))[:20]
    )


@pytest.mark.parametrize("language", LANGUAGES)
async def test_language_choice_is_stored_and_wins_over_telegrams(
    fake: FakeBotApi, bot: RunningBot, language: str
) -> None:
    texts = catalogs()
    user = 2000 + LANGUAGES.index(language)
    fake.add_message(user_id=user, text="/language", language_code="en")
    prompt = await next_reply(fake, user)
    assert prompt["text"] == texts.text("en", "language.prompt")
    buttons = [b["callback_data"] for row in prompt["reply_markup"]["inline_keyboard"] for b in row]
    assert buttons == [f"lang:{code}" for code in LANGUAGES]
    message_id = fake.sent("sendMessage", chat_id=user)[-1].result["message_id"]
    fake.add_callback_query(user_id=user, data=f"lang:{language}", message_id=message_id, language_code="en")
    (edit,) = await fake.wait_for("editMessageText", chat_id=user)
    assert edit.params["text"] == texts.text(language, "language.changed")
    # Telegram still says "en", but the stored choice wins, also after a restart.
    await bot.restart()
    fake.add_message(user_id=user, text="/help", language_code="en")
    reply = await next_reply(fake, user, count=2)
    assert reply["text"] == help_screen(texts, language)


async def test_command_menus_are_published_per_language(fake: FakeBotApi, bot: RunningBot) -> None:
    await fake.wait_for("setMyCommands", count=len(LANGUAGES) + 1)
    for language in LANGUAGES:
        commands = fake.my_commands_by_scope[("all_private_chats", language)]
        assert [c["command"] for c in commands] == list(PUBLIC_COMMANDS)
        assert commands[0]["description"] == catalogs().text(language, "command.start")
    assert ("all_private_chats", None) in fake.my_commands_by_scope
    fake.add_message(user_id=9, text="/help")
    await next_reply(fake, 9)
    assert (bot.settings.data_dir / "heartbeat").exists()  # what the container healthcheck reads


async def test_unknown_command_and_free_text_get_a_pointer_to_help(fake: FakeBotApi, bot: RunningBot) -> None:
    fake.add_message(user_id=5, text="/nonsense", language_code="ru")
    assert (await next_reply(fake, 5))["text"] == catalogs().text("ru", "fallback.unknown_command")
    fake.add_message(user_id=5, sticker=True, language_code="ru")
    assert (await next_reply(fake, 5, count=2))["text"] == catalogs().text("ru", "fallback.not_understood")
    fake.add_message(user_id=5, text="x" * 4096 + "\u202e\u0000 odd", language_code="ru")
    assert (await next_reply(fake, 5, count=3))["text"] == catalogs().text("ru", "fallback.not_understood")


async def test_groups_edits_and_foreign_buttons_get_silence_or_a_polite_answer(
    fake: FakeBotApi, bot: RunningBot
) -> None:
    fake.add_message(user_id=6, chat_id=-100500, chat_type="supergroup", text="hello bot")
    fake.add_message(user_id=6, chat_id=-100500, chat_type="supergroup", text="/start")
    sent = fake.add_message(user_id=6, text="/help")
    await next_reply(fake, 6)
    fake.add_edited_message(user_id=6, message_id=sent["message"]["message_id"], text="/start")
    fake.add_callback_query(user_id=6, data="forged:delete-everything", message_id=999)
    (answer,) = await fake.wait_for("answerCallbackQuery")
    assert answer.params["text"] == catalogs().text("en", "callback.stale")
    fake.add_message(user_id=6, text="/help")
    await next_reply(fake, 6, count=2)
    await bot.quiet(fake)
    assert fake.sent("sendMessage", chat_id=-100500) == []
    assert len(reply_texts(fake, 6)) == 2  # nothing for the edit


async def test_direct_replies_honour_429_and_still_arrive(fake: FakeBotApi, bot: RunningBot) -> None:
    await fake.wait_for("setMyCommands", count=len(LANGUAGES) + 1)
    assert bot.app is not None
    # When the bot started each send that went through and when each 429 reached it, per chat, on the
    # fake's clock. A 429 pauses the chat it was about (everyone only when several chats hear one at once,
    # bot.runtime.ratelimit): a send already on its way when the 429 came back could not have known of it,
    # and another chat's send is the fake's window to judge, so only the same chat's sends started after
    # the answer reached the bot are held to its retry window.
    accepted: list[tuple[float, object]] = []
    refused: list[tuple[float, object]] = []
    request = bot.app.bot.request
    do_request = request.do_request

    async def timed(url: str, method: str, request_data: Any = None, **kwargs: Any) -> tuple[int, bytes]:
        begun = fake.clock()
        status, body = await do_request(url, method, request_data, **kwargs)
        chat = (request_data.parameters if request_data is not None else {}).get("chat_id")
        if status == 429:
            refused.append((fake.clock(), chat))
        elif url.endswith("/sendMessage") and status == 200:
            accepted.append((begun, chat))
        return status, body

    request.do_request = timed
    fake.set_rate_limit(1, retry_after=1)
    for user in (11, 12, 13):
        fake.add_message(user_id=user, text="/help")
    for user in (11, 12, 13):
        await next_reply(fake, user, timeout=15)
    assert fake.received_429 >= 1 and refused
    # After a 429 (answered at `at`) nothing more goes to that chat until the second it asked for has
    # passed, counted from when Telegram answered.
    for call in [c for c in fake.calls if c.status == 429]:
        chat = call.params.get("chat_id")
        known = min(when for when, to in refused if when >= call.at and to == chat)
        early = [b for b, to in accepted if to == chat and known < b < call.at + 1.0 - 0.01]
        assert not early, (call.at, known, early)


async def test_timezone_choice_is_stored(fake: FakeBotApi, bot: RunningBot) -> None:
    fake.add_message(user_id=21, text="/timezone", language_code="uz")
    prompt = await next_reply(fake, 21)
    assert prompt["text"] == catalogs().text("uz", "timezone.prompt")
    message_id = fake.sent("sendMessage", chat_id=21)[-1].result["message_id"]
    fake.add_callback_query(user_id=21, data="tz:1", message_id=message_id, language_code="uz")
    (edit,) = await fake.wait_for("editMessageText", chat_id=21)
    assert edit.params["text"] == catalogs().text("uz", "timezone.changed", zone="Asia/Tashkent")
    fake.add_callback_query(user_id=21, data="tz:99", message_id=message_id, language_code="uz")
    await fake.wait_for("answerCallbackQuery", count=2)
    assert fake.sent("answerCallbackQuery")[-1].params["text"] == catalogs().text("uz", "callback.stale")


async def test_a_flood_from_one_person_is_held_back_but_sos_gets_through(
    fake: FakeBotApi, bot_settings: Settings
) -> None:
    settings = replace(bot_settings, flood_per_minute=5)
    running = RunningBot(settings)
    await running.start()
    try:
        for _ in range(12):
            fake.add_message(user_id=31, text="spam")
        await fake.wait_for("sendMessage", chat_id=31, count=6, timeout=15)
        fake.add_message(user_id=32, text="/help")
        await next_reply(fake, 32)
        fake.add_message(user_id=31, text="/sos")
        await fake.wait_for("sendMessage", chat_id=31, count=7, timeout=15)
        await asyncio.sleep(0.3)
        texts = reply_texts(fake, 31)
        assert texts.count(catalogs().text("en", "flood.warning")) == 1
        assert len(texts) == 7  # five answers, one warning, then the SOS prompt
        assert texts[-1] == catalogs().text("en", "sos.confirm")
    finally:
        await running.stop()


async def test_help_says_how_to_stay_reachable_with_the_organisations_proxy_link(
    fake: FakeBotApi, tmp_path: Path
) -> None:
    link = "https://t.me/proxy?server=proxy.example.org&port=443&secret=ee0123456789abcdef"
    bot = RunningBot(make_settings(tmp_path, api_url=fake.url, proxy_link=link))
    await bot.start()
    try:
        texts = catalogs()
        for number, language in enumerate(LANGUAGES):
            user = 3000 + number
            fake.add_message(user_id=user, text="/help", language_code=language)
            reply = await next_reply(fake, user)
            assert reply["text"] == help_screen(texts, language, proxy_link=link)
            assert texts.text(language, "help.reachable") in reply["text"]
            # The link's & is escaped in the HTML Telegram is given, so its query arrives whole.
            assert f'<a href="{link.replace("&", "&amp;")}">' in reply["text"]
    finally:
        await bot.stop()
