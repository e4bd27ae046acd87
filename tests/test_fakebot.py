"""Exercise the fake Bot API server over real HTTP, through python-telegram-bot and plain httpx."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import io
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from telegram import (
    Bot,
    BotCommand,
    BotCommandScopeAllPrivateChats,
    ChatMemberAdministrator,
    ChatMemberBanned,
    ChatMemberLeft,
    ChatMemberMember,
    ChatMemberRestricted,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    MessageEntity,
    Update,
)
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    Forbidden,
    NetworkError,
    RetryAfter,
    TimedOut,
)
from telegram.ext import Application, CommandHandler, ContextTypes

from tests.fakebot import FakeBotApi, UploadedFile

KEYBOARD = InlineKeyboardMarkup([[InlineKeyboardButton("Yes", callback_data="vote:yes")]])


@pytest.fixture(autouse=True)
def _ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opt into PTB's timedelta durations, whose int fallback warns and warnings are errors here."""
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


@pytest.fixture
async def fake() -> AsyncIterator[FakeBotApi]:
    """Run a fake Bot API server for one test."""
    async with FakeBotApi() as server:
        yield server
    assert server.server_errors == []


@pytest.fixture
async def bot(fake: FakeBotApi) -> AsyncIterator[Bot]:
    """Return an initialised PTB Bot talking to the fake server."""
    async with Bot(fake.token, base_url=f"{fake.url}/bot", base_file_url=f"{fake.url}/file/bot") as tg_bot:
        yield tg_bot


@pytest.fixture
async def http(fake: FakeBotApi) -> AsyncIterator[httpx.AsyncClient]:
    """Return a bare httpx client rooted at the bot's API path."""
    async with httpx.AsyncClient(base_url=f"{fake.url}/bot{fake.token}/") as client:
        yield client


# ---------------------------------------------------------------------- basics


async def test_get_me(fake: FakeBotApi, bot: Bot) -> None:
    me = await bot.get_me()
    assert me.id == fake.bot_id
    assert me.username == "jarchy_test_bot"
    assert me.is_bot
    assert bot.username == "jarchy_test_bot"
    assert [call.method for call in fake.sent()] == ["getMe", "getMe"]


async def test_send_message_round_trip(fake: FakeBotApi, bot: Bot) -> None:
    first = await bot.send_message(42, "hello")
    second = await bot.send_message(42, "<b>again</b>", parse_mode="HTML")
    other = await bot.send_message(43, "elsewhere")

    assert (first.message_id, second.message_id, other.message_id) == (1, 2, 1)
    assert first.chat.id == 42
    assert first.from_user is not None
    assert first.from_user.id == fake.bot_id
    calls = fake.sent("sendMessage", chat_id=42)
    assert [call.params["text"] for call in calls] == ["hello", "<b>again</b>"]
    assert calls[1].params["parse_mode"] == "HTML"
    assert calls[0].result["message_id"] == 1
    assert [msg["text"] for msg in fake.chat_messages(42)] == ["hello", "<b>again</b>"]


async def test_inline_keyboard_is_stored_as_dict(fake: FakeBotApi, bot: Bot) -> None:
    message = await bot.send_message(7, "Vote?", reply_markup=KEYBOARD)

    expected = {"inline_keyboard": [[{"text": "Yes", "callback_data": "vote:yes"}]]}
    assert fake.sent("sendMessage")[0].params["reply_markup"] == expected
    assert fake.chat_messages(7)[0]["reply_markup"] == expected
    assert message.reply_markup == KEYBOARD


async def test_text_validation(bot: Bot) -> None:
    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await bot.send_message(1, "x" * 4097)
    with pytest.raises(BadRequest, match=r"(?i)message text is empty"):
        await bot.send_message(1, "   ")


async def test_request_delay(fake: FakeBotApi, bot: Bot) -> None:
    fake.request_delay = 0.2
    started = time.monotonic()
    await bot.send_chat_action(1, "typing")
    assert time.monotonic() - started >= 0.2


# ---------------------------------------------------------------------- updates


async def test_get_updates_returns_messages_and_callbacks(fake: FakeBotApi, bot: Bot) -> None:
    sent = await bot.send_message(5, "Vote?", reply_markup=KEYBOARD)
    fake.add_message(user_id=5, text="/start campaign-42", username="alice")
    fake.add_callback_query(user_id=5, data="vote:yes", message_id=sent.message_id)

    updates = await bot.get_updates(timeout=0)

    assert [update.update_id for update in updates] == [1, 2]
    message = updates[0].message
    assert message is not None
    assert message.text == "/start campaign-42"
    assert message.entities == (MessageEntity(MessageEntity.BOT_COMMAND, 0, 6),)
    assert message.from_user is not None
    assert message.from_user.username == "alice"
    assert message.from_user.language_code == "en"
    assert message.message_id == 2  # the bot's "Vote?" took id 1 in this chat
    query = updates[1].callback_query
    assert query is not None
    assert query.data == "vote:yes"
    assert query.message is not None
    assert query.message.message_id == sent.message_id
    assert [msg["message_id"] for msg in fake.chat_messages(5)] == [1, 2]
    assert await query.answer("Thanks") is True
    with pytest.raises(BadRequest, match=r"(?i)query id is invalid"):
        await bot.answer_callback_query("no-such-query")


async def test_callback_answers_over_200_characters_are_refused(fake: FakeBotApi, bot: Bot) -> None:
    """Telegram refuses a toast or alert longer than 200 characters: the bot's answers must fit."""
    sent = await bot.send_message(5, "Vote?", reply_markup=KEYBOARD)
    fake.add_callback_query(user_id=5, data="vote:yes", message_id=sent.message_id)
    fake.add_callback_query(user_id=5, data="vote:yes", message_id=sent.message_id)
    first, second = [update.callback_query for update in await bot.get_updates(timeout=0)]
    assert first is not None and second is not None

    with pytest.raises(BadRequest, match=r"(?i)message_too_long"):
        await first.answer("я" * 201, show_alert=True)
    assert await second.answer("я" * 200, show_alert=True) is True
    refused = [c for c in fake.calls if c.method == "answerCallbackQuery" and not c.ok]
    assert [c.response.get("description") for c in refused] == ["Bad Request: MESSAGE_TOO_LONG"]


async def test_injected_message_variants(fake: FakeBotApi, bot: Bot) -> None:
    photo_id = fake.add_file(b"\x89PNG fake", file_name="pic.png")
    fake.add_message(user_id=8, chat_id=-100777, chat_type="supergroup", text="/report@jarchy_test_bot now")
    fake.add_message(user_id=8, photo_file_id=photo_id, caption="evidence")
    fake.add_message(user_id=8, location=(52.52, 13.405), reply_to_message_id=1)
    fake.add_edited_message(user_id=8, message_id=1, text="fixed", chat_id=-100777)

    updates = await bot.get_updates()

    group_msg = updates[0].message
    assert group_msg is not None
    assert group_msg.chat.type == "supergroup"
    assert group_msg.entities[0].length == len("/report@jarchy_test_bot")
    photo_msg = updates[1].message
    assert photo_msg is not None
    assert photo_msg.caption == "evidence"
    assert photo_msg.photo[-1].file_id == photo_id
    location_msg = updates[2].message
    assert location_msg is not None
    assert location_msg.location is not None
    assert location_msg.location.latitude == pytest.approx(52.52)
    assert location_msg.reply_to_message is not None
    assert location_msg.reply_to_message.message_id == 1
    edited = updates[3].edited_message
    assert edited is not None
    assert edited.text == "fixed"
    assert fake.chat_messages(-100777)[0]["text"] == "fixed"


async def test_long_poll_wakes_when_update_arrives(fake: FakeBotApi, bot: Bot) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.2)
    added = time.monotonic()
    fake.add_message(user_id=3, text="hi")

    updates = await asyncio.wait_for(poll, 2)

    assert time.monotonic() - added < 1.0
    assert updates[0].message is not None
    assert updates[0].message.text == "hi"


async def test_long_poll_times_out_empty(bot: Bot) -> None:
    started = time.monotonic()
    assert await bot.get_updates(timeout=1) == ()
    assert time.monotonic() - started >= 0.9


async def test_offset_confirms_and_drops_updates(fake: FakeBotApi, bot: Bot) -> None:
    for text in ("one", "two", "three"):
        fake.add_message(user_id=4, text=text)

    assert len(await bot.get_updates(timeout=0)) == 3
    assert fake.acknowledged_offset == 0

    rest = await bot.get_updates(offset=2, timeout=0)
    assert [update.update_id for update in rest] == [2, 3]
    assert [update["update_id"] for update in fake.pending_updates] == [2, 3]
    assert fake.acknowledged_offset == 2

    assert await bot.get_updates(offset=4, timeout=0) == ()
    assert fake.pending_updates == []
    assert fake.acknowledged_offset == 4


async def test_allowed_updates_filter(fake: FakeBotApi, bot: Bot) -> None:
    fake.add_message(user_id=4, text="skip me")
    fake.add_callback_query(user_id=4, data="x", message_id=1)

    updates = await bot.get_updates(timeout=0, allowed_updates=[Update.CALLBACK_QUERY])

    assert [update.update_id for update in updates] == [2]


async def test_second_poller_conflicts_first(fake: FakeBotApi, http: httpx.AsyncClient) -> None:
    # PTB serialises its own getUpdates calls, so two pollers are simulated with raw requests.
    first = asyncio.create_task(http.post("getUpdates", json={"timeout": 5}))
    await asyncio.sleep(0.1)
    second = asyncio.create_task(http.post("getUpdates", json={"timeout": 5}))
    ended = await asyncio.wait_for(first, 2)
    assert ended.status_code == 409
    assert "terminated by other getUpdates" in ended.json()["description"]
    fake.add_message(user_id=1, text="late")
    assert len((await asyncio.wait_for(second, 2)).json()["result"]) == 1


async def test_webhook_blocks_polling(fake: FakeBotApi, bot: Bot) -> None:
    fake.add_message(user_id=1, text="queued")
    assert await bot.set_webhook("https://example.invalid/hook")
    info = await bot.get_webhook_info()
    assert info.url == "https://example.invalid/hook"
    assert info.pending_update_count == 1
    with pytest.raises(Conflict, match=r"(?i)webhook is active"):
        await bot.get_updates()
    assert await bot.delete_webhook(drop_pending_updates=True)
    assert fake.pending_updates == []
    assert await bot.get_updates() == ()


async def test_application_polling_end_to_end(fake: FakeBotApi) -> None:
    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text("Welcome", reply_markup=KEYBOARD)

    app = (
        Application.builder()
        .token(fake.token)
        .base_url(f"{fake.url}/bot")
        .base_file_url(f"{fake.url}/file/bot")
        .build()
    )
    app.add_handler(CommandHandler("start", start))
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(timeout=1)
        fake.add_message(user_id=11, text="/start")
        replies = await fake.wait_for("sendMessage", chat_id=11)
        await app.updater.stop()
        await app.stop()

    assert replies[0].params["text"] == "Welcome"
    assert [msg["text"] for msg in fake.chat_messages(11)] == ["/start", "Welcome"]
    assert fake.acknowledged_offset == 2
    assert fake.pending_updates == []


# ---------------------------------------------------------------------- observing


async def test_wait_for_wakes_and_filters(fake: FakeBotApi, bot: Bot) -> None:
    async def later() -> None:
        await asyncio.sleep(0.1)
        for n in range(3):
            await bot.send_message(9, f"item {n}")

    sender = asyncio.create_task(later())
    calls = await fake.wait_for("sendmessage", chat_id=9, count=2, timeout=3)
    assert len(calls) >= 2
    last = await fake.wait_for("sendMessage", predicate=lambda call: call.params["text"] == "item 2")
    assert last[0].params["text"] == "item 2"
    await sender


async def test_wait_for_timeout_explains(fake: FakeBotApi, bot: Bot) -> None:
    await bot.send_message(1, "to the wrong chat")
    with pytest.raises(TimeoutError) as info:
        await fake.wait_for("sendMessage", chat_id=2, timeout=0.2)
    text = str(info.value)
    assert "sendMessage" in text
    assert "chat 2" in text
    assert "'to the wrong chat'" in text


# ---------------------------------------------------------------------- faults


async def test_forbidden_chat(fake: FakeBotApi, bot: Bot) -> None:
    fake.forbidden_chats.add(99)
    with pytest.raises(Forbidden, match="blocked by the user"):
        await bot.send_message(99, "anyone there?")
    assert fake.sent("sendMessage") == []
    assert fake.calls[-1].status == 403
    assert fake.chat_messages(99) == []


async def test_rate_limit_answers_429(fake: FakeBotApi, bot: Bot) -> None:
    fake.set_rate_limit(2)
    await bot.send_message(1, "a")
    await bot.edit_message_text("a2", chat_id=1, message_id=1)
    with pytest.raises(RetryAfter) as info:
        await bot.send_message(1, "b")
    assert info.value.retry_after == dt.timedelta(seconds=1)
    assert fake.received_429 == 1
    await bot.send_chat_action(1, "typing")  # not a sending method, so never limited

    await asyncio.sleep(1.05)
    await bot.send_message(1, "c")
    assert [call.status for call in fake.calls if call.method != "getMe"] == [200, 200, 429, 200, 200]


async def test_rate_limit_sliding_window_with_retry_after(fake: FakeBotApi, http: httpx.AsyncClient) -> None:
    fake.set_rate_limit(3, retry_after=7)
    statuses = [
        (await http.post("sendMessage", json={"chat_id": 1, "text": "x"})).status_code for _ in range(5)
    ]
    assert statuses == [200, 200, 200, 429, 429]
    body = (await http.post("copyMessage", json={"chat_id": 2, "from_chat_id": 1, "message_id": 1})).json()
    assert body == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 7",
        "parameters": {"retry_after": 7},
    }
    assert fake.received_429 == 3


async def test_fail_next(fake: FakeBotApi, bot: Bot) -> None:
    fake.fail_next("sendMessage")
    fake.fail_next("sendMessage", status=400, description="chat not found")
    fake.fail_next("sendMessage", status=502)

    with pytest.raises(NetworkError, match="Internal Server Error") as info:
        await bot.send_message(1, "a")
    assert type(info.value) is NetworkError
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.send_message(1, "b")
    with pytest.raises(NetworkError, match="Bad Gateway"):
        await bot.send_message(1, "c")
    await bot.send_message(1, "d")
    assert [msg["text"] for msg in fake.chat_messages(1)] == ["d"]
    assert [call.status for call in fake.calls if call.method == "sendMessage"] == [500, 400, 502, 200]


async def test_timeout_next_delivers_but_never_answers(fake: FakeBotApi, bot: Bot) -> None:
    fake.timeout_next("sendMessage", delay=10)
    with pytest.raises(TimedOut):
        await bot.send_message(3, "slow", read_timeout=0.3)
    assert [call.params["text"] for call in fake.sent("sendMessage", chat_id=3)] == ["slow"]
    assert [msg["text"] for msg in fake.chat_messages(3)] == ["slow"]

    fake.timeout_next("sendMessage", delay=10, deliver=False)
    with pytest.raises(TimedOut):
        await bot.send_message(3, "lost", read_timeout=0.3)
    assert len(fake.sent("sendMessage", chat_id=3)) == 1
    assert fake.calls[-1].status == 504

    await bot.send_message(3, "fast")
    assert [msg["text"] for msg in fake.chat_messages(3)] == ["slow", "fast"]


async def test_stop_does_not_wait_for_stalled_requests() -> None:
    async with FakeBotApi() as server, httpx.AsyncClient() as client:
        server.timeout_next("getMe", delay=30)
        with pytest.raises(httpx.ReadTimeout):
            await client.get(f"{server.url}/bot{server.token}/getMe", timeout=0.2)
        started = time.monotonic()
        await server.stop()
        assert time.monotonic() - started < 1.5


# ---------------------------------------------------------------------- files


async def test_get_file_and_download(fake: FakeBotApi, bot: Bot) -> None:
    content = bytes(range(256)) * 10
    file_id = fake.add_file(content, file_name="leaflet.pdf")

    tg_file = await bot.get_file(file_id)
    buffer = io.BytesIO()
    await tg_file.download_to_memory(buffer)

    assert tg_file.file_size == len(content)
    assert buffer.getvalue() == content
    assert fake.sent("downloadFile")[0].params["file_path"].endswith(".pdf")
    with pytest.raises(BadRequest, match=r"(?i)invalid file_id"):
        await bot.get_file("nope")


async def test_uploaded_document_can_be_downloaded_again(fake: FakeBotApi, bot: Bot) -> None:
    content = b"%PDF-1.4 fake report\n" * 100
    message = await bot.send_document(
        5, document=content, filename="report.pdf", caption="Report", reply_markup=KEYBOARD
    )

    assert message.document is not None
    assert message.document.file_name == "report.pdf"
    assert message.caption == "Report"
    upload = fake.sent("sendDocument")[0].params["document"]
    assert isinstance(upload, UploadedFile)
    assert upload.content == content
    assert fake.sent("sendDocument", chat_id=5)[0].params["reply_markup"] == KEYBOARD.to_dict()
    data = await (await bot.get_file(message.document.file_id)).download_as_bytearray()
    assert bytes(data) == content


async def test_send_photo_upload_and_reuse(fake: FakeBotApi, bot: Bot) -> None:
    first = await bot.send_photo(6, photo=b"\x89PNG\r\n fake", caption="one")
    file_id = first.photo[-1].file_id
    second = await bot.send_photo(6, photo=file_id)
    assert second.photo[-1].file_id == file_id
    assert len(fake.files) == 1


async def test_media_group_resolves_attached_uploads(fake: FakeBotApi, bot: Bot) -> None:
    album = await bot.send_media_group(
        6, [InputMediaPhoto(b"first", caption="Banner"), InputMediaPhoto(b"second")]
    )
    assert [msg.message_id for msg in album] == [1, 2]
    assert album[0].media_group_id == album[1].media_group_id
    assert album[0].caption == "Banner"
    data = await (await bot.get_file(album[1].photo[-1].file_id)).download_as_bytearray()
    assert bytes(data) == b"second"


# ---------------------------------------------------------------------- editing, deleting, copying


async def test_edit_and_delete_missing_messages(bot: Bot) -> None:
    with pytest.raises(BadRequest, match="Message to edit not found"):
        await bot.edit_message_text("new", chat_id=5, message_id=999)
    with pytest.raises(BadRequest, match="Message to edit not found"):
        await bot.edit_message_reply_markup(chat_id=5, message_id=999, reply_markup=KEYBOARD)
    with pytest.raises(BadRequest, match="Message to delete not found"):
        await bot.delete_message(5, 999)


async def test_edit_and_delete_existing_messages(fake: FakeBotApi, bot: Bot) -> None:
    sent = await bot.send_message(5, "draft", reply_markup=KEYBOARD)
    fake.add_message(user_id=5, text="user text")

    edited = await bot.edit_message_text("final", chat_id=5, message_id=sent.message_id)
    assert isinstance(edited, type(sent))
    stored = fake.chat_messages(5)[0]
    assert stored["text"] == "final"
    assert "reply_markup" not in stored  # Telegram drops the keyboard when an edit omits it
    assert "edit_date" in stored
    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await bot.edit_message_text("final", chat_id=5, message_id=sent.message_id)
    with pytest.raises(BadRequest, match=r"(?i)can't be edited"):
        await bot.edit_message_text("hijack", chat_id=5, message_id=2)

    assert await bot.delete_messages(5, [1, 999])
    assert [msg["text"] for msg in fake.chat_messages(5)] == ["user text"]


async def test_copy_and_forward(fake: FakeBotApi, bot: Bot) -> None:
    fake.add_message(user_id=20, text="tip from the field")

    copied = await bot.copy_message(chat_id=-100500, from_chat_id=20, message_id=1)
    forwarded = await bot.forward_message(chat_id=-100500, from_chat_id=20, message_id=1)
    many = await bot.copy_messages(chat_id=21, from_chat_id=20, message_ids=[1, 999])

    assert copied.message_id == 1
    assert forwarded.forward_origin is not None
    assert [item.message_id for item in many] == [1]
    assert [msg["text"] for msg in fake.chat_messages(-100500)] == ["tip from the field"] * 2
    assert fake.chat_messages(21)[0]["from"]["id"] == fake.bot_id
    with pytest.raises(BadRequest, match="Message to copy not found"):
        await bot.copy_message(chat_id=21, from_chat_id=20, message_id=999)


# ---------------------------------------------------------------------- commands and chats


async def test_set_my_commands_per_language(fake: FakeBotApi, bot: Bot) -> None:
    english = [BotCommand("start", "Start"), BotCommand("alert", "Send an alert")]
    german = [BotCommand("start", "Starten")]
    assert await bot.set_my_commands(english)
    assert await bot.set_my_commands(german, language_code="de")
    assert await bot.set_my_commands(german, scope=BotCommandScopeAllPrivateChats(), language_code="de")

    assert fake.my_commands == {
        None: [command.to_dict() for command in english],
        "de": [command.to_dict() for command in german],
    }
    assert ("all_private_chats", "de") in fake.my_commands_by_scope
    assert await bot.get_my_commands(language_code="de") == tuple(german)
    assert await bot.get_my_commands(language_code="fr") == ()
    assert await bot.delete_my_commands(language_code="de")
    assert set(fake.my_commands) == {None}
    with pytest.raises(BadRequest, match=r"(?i)bot_command_invalid"):
        await bot.set_my_commands([BotCommand("Bad Command", "nope")])


async def test_chat_and_member_lookups(fake: FakeBotApi, bot: Bot) -> None:
    fake.add_message(user_id=30, chat_id=-100900, chat_type="supergroup", text="hi")
    fake.chat_member_statuses[(-100900, 31)] = "kicked"

    chat = await bot.get_chat(-100900)
    assert chat.type == "supergroup"
    assert isinstance(await bot.get_chat_member(-100900, fake.bot_id), ChatMemberAdministrator)
    assert isinstance(await bot.get_chat_member(-100900, 30), ChatMemberMember)
    assert isinstance(await bot.get_chat_member(-100900, 31), ChatMemberBanned)
    assert await bot.leave_chat(-100900)
    assert fake.left_chats == {-100900}


# ---------------------------------------------------------------------- raw HTTP


async def test_every_body_encoding_is_normalised(fake: FakeBotApi, http: httpx.AsyncClient) -> None:
    markup = {"inline_keyboard": [[{"text": "a", "callback_data": "b"}]]}
    json_body = await http.post(
        "sendMessage", json={"chat_id": "-1001234", "text": "[1]", "reply_markup": markup}
    )
    form_body = await http.post(
        "sendMessage",
        data={
            "chat_id": "-1001234",
            "text": "{}",
            "reply_markup": json.dumps(markup),
            "protect_content": "true",
        },
    )
    query = await http.get("sendMessage", params={"chat_id": "@campaign", "text": "query"})
    multipart = await http.post(
        "sendDocument",
        data={"chat_id": "77", "caption": "[not json"},
        files={"document": ("notes.txt", b"notes", "text/plain")},
    )

    assert [r.status_code for r in (json_body, form_body, query, multipart)] == [200] * 4
    params = [call.params for call in fake.sent()]
    assert params[0] == {"chat_id": -1001234, "text": "[1]", "reply_markup": markup}
    assert params[1] == {"chat_id": -1001234, "text": "{}", "reply_markup": markup, "protect_content": True}
    assert params[2] == {"chat_id": "@campaign", "text": "query"}
    assert params[3]["chat_id"] == 77
    assert params[3]["caption"] == "[not json"
    assert params[3]["document"] == UploadedFile("notes.txt", "text/plain", b"notes")
    channel = query.json()["result"]["chat"]
    assert channel["type"] == "channel"
    assert fake.chat_messages(channel["id"])[0]["text"] == "query"
    assert len(fake.sent("sendMessage", chat_id="@campaign")) == 1


async def test_wrong_token_and_unknown_method(fake: FakeBotApi, http: httpx.AsyncClient) -> None:
    unknown = await http.post("sendTelepathy", json={"chat_id": 1})
    assert unknown.status_code == 404
    assert unknown.json() == {"ok": False, "error_code": 404, "description": "Not Found"}

    async with httpx.AsyncClient() as client:
        wrong = await client.post(f"{fake.url}/bot1:WRONG/getMe")
        stray = await client.get(f"{fake.url}/favicon.ico")
    assert wrong.status_code == 401
    assert wrong.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}
    assert stray.status_code == 404
    assert [call.status for call in fake.calls] == [404, 401, 404]


# ---------------------------------------------------------------------- Telegram's limits and crises


class SteppedClock:
    """A monotonic clock the test moves by hand, so rate windows slide without sleeping."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        """Return the current reading."""
        return self.now


@pytest.fixture
def clock(fake: FakeBotApi) -> SteppedClock:
    """Drive the fake's rate windows by a hand-moved clock."""
    stepped = SteppedClock()
    fake.clock = stepped
    return stepped


async def say(
    http: httpx.AsyncClient, chat_id: int | str, text: str = "x", **extra: object
) -> httpx.Response:
    """Send a text message over raw HTTP."""
    return await http.post("sendMessage", json={"chat_id": chat_id, "text": text, **extra})


def too_many(retry: int) -> dict[str, object]:
    """Return Telegram's 429 body."""
    return {
        "ok": False,
        "error_code": 429,
        "description": f"Too Many Requests: retry after {retry}",
        "parameters": {"retry_after": retry},
    }


async def test_group_window_admits_twenty_a_minute(
    fake: FakeBotApi, http: httpx.AsyncClient, bot: Bot
) -> None:
    fake.set_chat_limits(group_per_min=20)
    assert (await say(http, -100, "first")).status_code == 200
    for n in range(14):
        assert (await say(http, -100, f"send {n}")).status_code == 200
    for n in range(5):  # edits count against the chat like sends do
        edit = await http.post(
            "editMessageText", json={"chat_id": -100, "message_id": 1, "text": f"edit {n}"}
        )
        assert edit.status_code == 200

    refused = await say(http, -100, "21st")
    assert refused.status_code == 429
    body = refused.json()
    retry = body["parameters"]["retry_after"]
    assert 1 <= retry <= 60
    assert body == too_many(retry)
    with pytest.raises(RetryAfter) as info:
        await bot.send_message(-100, "22nd")
    waited = info.value.retry_after
    assert isinstance(waited, dt.timedelta)
    assert dt.timedelta(seconds=1) <= waited <= dt.timedelta(seconds=60)

    assert (await say(http, -200, "another group")).status_code == 200
    assert (await say(http, 5, "a private chat")).status_code == 200  # its limit is off
    # Chat actions, deletions and lookups are not flood-counted.
    assert (await http.post("sendChatAction", json={"chat_id": -100, "action": "typing"})).status_code == 200
    assert (await http.post("getChat", json={"chat_id": -100})).status_code == 200
    assert (await http.post("deleteMessage", json={"chat_id": -100, "message_id": 2})).status_code == 200
    assert fake.received_429 == 2
    assert fake.received_429_by_chat == {-100: 2}
    assert len(fake.chat_messages(-100)) == 14


async def test_group_window_slides_and_refusals_do_not_count(
    fake: FakeBotApi, http: httpx.AsyncClient, clock: SteppedClock
) -> None:
    fake.set_chat_limits(group_per_min=3)
    for offset in (0, 10, 20):
        clock.now = 1000 + offset
        assert (await say(http, "@news")).status_code == 200
    clock.now = 1030
    assert (await say(http, "@news")).json() == too_many(30)  # until the call at 1000 leaves
    clock.now = 1059.5
    assert (await say(http, "@news")).json() == too_many(1)
    clock.now = 1060
    assert (await say(http, "@news")).status_code == 200  # the refused calls took no slot
    assert (await say(http, "@news")).json() == too_many(10)
    channel_id = fake.sent("sendMessage")[0].result["chat"]["id"]
    assert fake.received_429_by_chat == {channel_id: 3}
    assert all(call.at >= 1000 for call in fake.calls)

    fake.set_chat_limits(group_per_min=1, retry_after=9)
    assert (await say(http, -7)).status_code == 200
    assert (await say(http, -7)).json() == too_many(9)
    fake.set_chat_limits()
    assert (await say(http, -7)).status_code == 200


async def test_private_window(fake: FakeBotApi, http: httpx.AsyncClient, clock: SteppedClock) -> None:
    fake.set_chat_limits(private_per_s=1)
    assert (await say(http, 1)).status_code == 200
    clock.now += 0.5
    assert (await say(http, 1)).json() == too_many(1)
    assert (await say(http, 2)).status_code == 200
    clock.now += 0.5
    assert (await say(http, 1)).status_code == 200
    assert (await say(http, -5)).status_code == 200  # groups are unlimited unless group_per_min is set

    fake.set_chat_limits(private_per_s=2.7)  # two a second
    assert [(await say(http, 1)).status_code for _ in range(3)] == [200, 200, 429]

    fake.set_chat_limits(private_per_s=0.25)  # one every four seconds
    assert (await say(http, 1)).status_code == 200
    clock.now += 0.5
    assert (await say(http, 1)).json() == too_many(4)
    clock.now += 3.5
    assert (await say(http, 1)).status_code == 200


async def test_chat_and_global_windows_together(
    fake: FakeBotApi, http: httpx.AsyncClient, clock: SteppedClock
) -> None:
    fake.set_rate_limit(2, retry_after=3)
    fake.set_chat_limits(private_per_s=1)
    assert (await say(http, 1)).status_code == 200
    assert (await say(http, 1)).json() == too_many(1)  # the chat's window refuses
    assert (await say(http, 2)).status_code == 200
    assert (await say(http, 3)).json() == too_many(3)  # the global window refuses
    clock.now += 1
    # The refused call to chat 3 entered no window, so it may go first in the next second.
    assert [(await say(http, chat)).status_code for chat in (3, 1, 2)] == [200, 200, 429]
    assert fake.received_429 == 3
    assert fake.received_429_by_chat == {1: 1, 3: 1, 2: 1}


async def test_callback_data_is_limited_to_64_bytes(
    fake: FakeBotApi, bot: Bot, http: httpx.AsyncClient
) -> None:
    def keyboard(*data: str) -> InlineKeyboardMarkup:
        """Return a keyboard with a short first button and one row per callback_data."""
        return InlineKeyboardMarkup(
            [[InlineKeyboardButton("ok", callback_data="ok")]]
            + [[InlineKeyboardButton(str(n), callback_data=item)] for n, item in enumerate(data)]
        )

    sent = await bot.send_message(1, "fits", reply_markup=keyboard("x" * 64, "é" * 32))
    with pytest.raises(BadRequest, match=r"(?i)button_data_invalid"):
        await bot.send_message(1, "too long", reply_markup=keyboard("x" * 65))
    with pytest.raises(BadRequest, match=r"(?i)button_data_invalid"):
        await bot.send_message(1, "too long in UTF-8", reply_markup=keyboard("é" * 33))
    with pytest.raises(BadRequest, match=r"(?i)button_data_invalid"):
        await bot.edit_message_reply_markup(1, sent.message_id, reply_markup=keyboard("y" * 65))
    with pytest.raises(BadRequest, match=r"(?i)button_data_invalid"):
        await bot.edit_message_text("new", 1, sent.message_id, reply_markup=keyboard("", "z"))
    answer = await say(
        http, 1, "raw", reply_markup={"inline_keyboard": [[{"text": "a", "callback_data": "a" * 65}]]}
    )
    assert answer.json() == {
        "ok": False,
        "error_code": 400,
        "description": "Bad Request: BUTTON_DATA_INVALID",
    }

    grid = [
        [{"text": str(n), "callback_data": str(n)} for n in range(row, row + 10)] for row in range(0, 100, 10)
    ]
    assert (await say(http, 1, "100 buttons", reply_markup={"inline_keyboard": grid})).status_code == 200
    grid[-1].append({"text": "one more", "url": "https://example.org"})
    crowded = await say(http, 1, "101 buttons", reply_markup={"inline_keyboard": grid})
    assert crowded.json()["description"] == "Bad Request: reply markup is too long"
    assert [msg["text"] for msg in fake.chat_messages(1)] == ["fits", "100 buttons"]
    assert fake.chat_messages(1)[0]["reply_markup"] == keyboard("x" * 64, "é" * 32).to_dict()


async def test_migrate_chat(fake: FakeBotApi, bot: Bot, http: httpx.AsyncClient) -> None:
    old, new = -555, -1_000_000_000_555
    fake.add_message(user_id=5, chat_id=old, chat_type="group", text="hello group")
    greeting = await bot.send_message(old, "hi")
    assert await bot.get_updates(offset=2, timeout=0) == ()

    fake.migrate_chat(old, new)

    with pytest.raises(ChatMigrated) as info:
        await bot.send_message(old, "still there?")
    assert info.value.new_chat_id == new
    answer = await say(http, old)
    assert answer.status_code == 400
    assert answer.json() == {
        "ok": False,
        "error_code": 400,
        "description": "Bad Request: group chat was upgraded to a supergroup chat",
        "parameters": {"migrate_to_chat_id": new},
    }
    with pytest.raises(ChatMigrated):
        await bot.edit_message_text("edited", old, greeting.message_id)
    with pytest.raises(ChatMigrated):
        await bot.delete_message(old, greeting.message_id)
    moved = await bot.send_message(new, "moved")
    assert moved.chat.type == "supergroup"
    assert (await bot.get_chat(new)).type == "supergroup"

    farewell, welcome = [update.message for update in await bot.get_updates(timeout=0)]
    assert farewell is not None
    assert welcome is not None
    assert (farewell.chat.id, farewell.chat.type, farewell.migrate_to_chat_id) == (old, "group", new)
    assert (welcome.chat.id, welcome.chat.type, welcome.migrate_from_chat_id) == (new, "supergroup", old)
    assert farewell.from_user is not None
    assert farewell.from_user.id == 1
    assert welcome.from_user == farewell.from_user


def parse_update(fake: FakeBotApi, update: dict[str, object]) -> Update:
    """Parse an update the fake queued the way PTB parses getUpdates, offline."""
    parsed = Update.de_json(copy.deepcopy(update), Bot(fake.token))
    assert parsed.update_id == update["update_id"]
    return parsed


async def test_kick_and_restore_bot(fake: FakeBotApi, bot: Bot, http: httpx.AsyncClient) -> None:
    group, supergroup = -42, -1_000_000_000_042
    fake.add_message(user_id=7, chat_id=group, chat_type="group", text="hi", first_name="Ann")
    await bot.get_updates(offset=2, timeout=0)

    kicked = fake.kick_bot(group, by_user_id=7)
    change = parse_update(fake, kicked).my_chat_member
    assert change is not None
    assert change.chat.id == group
    assert change.from_user.first_name == "Ann"
    assert isinstance(change.old_chat_member, ChatMemberAdministrator)
    assert isinstance(change.new_chat_member, ChatMemberBanned)
    assert change.new_chat_member.status == "kicked"
    assert change.new_chat_member.user.id == fake.bot_id

    with pytest.raises(Forbidden, match="bot was kicked from the group chat"):
        await bot.send_message(group, "anyone?")
    assert (await say(http, group)).json() == {
        "ok": False,
        "error_code": 403,
        "description": "Forbidden: bot was kicked from the group chat",
    }
    with pytest.raises(Forbidden, match="kicked"):
        await bot.send_chat_action(group, "typing")
    assert isinstance(await bot.get_chat_member(group, fake.bot_id), ChatMemberBanned)
    fake.kick_bot(supergroup)
    with pytest.raises(Forbidden, match="bot was kicked from the supergroup chat"):
        await bot.send_message(supergroup, "anyone?")

    # my_chat_member is delivered by default, but not to a bot that subscribed to other updates only.
    assert await bot.get_updates(timeout=0, allowed_updates=[Update.MESSAGE]) == ()
    delivered = await bot.get_updates(timeout=0, allowed_updates=[])
    assert [update.my_chat_member is not None for update in delivered] == [True, True]
    last_seen = delivered[-1].update_id

    restored = fake.restore_bot(group, by_user_id=7, status="member")
    back = parse_update(fake, restored).my_chat_member
    assert back is not None
    assert isinstance(back.old_chat_member, ChatMemberBanned)
    assert isinstance(back.new_chat_member, ChatMemberMember)
    assert (await bot.send_message(group, "back")).text == "back"
    assert isinstance(await bot.get_chat_member(group, fake.bot_id), ChatMemberMember)
    assert [update.update_id for update in await bot.get_updates(offset=last_seen + 1, timeout=0)] == [
        restored["update_id"]
    ]


async def test_bot_left_restricted_and_blocked(fake: FakeBotApi, bot: Bot) -> None:
    left = parse_update(fake, fake.kick_bot(-10, status="left")).my_chat_member
    assert left is not None
    assert isinstance(left.new_chat_member, ChatMemberLeft)
    with pytest.raises(Forbidden, match="bot is not a member of the group chat"):
        await bot.send_message(-10, "x")

    restricted = parse_update(fake, fake.kick_bot(-11, status="restricted")).my_chat_member
    assert restricted is not None
    member = restricted.new_chat_member
    assert isinstance(member, ChatMemberRestricted)
    assert member.status == "restricted"
    assert member.can_send_messages is False
    assert isinstance(await bot.get_chat_member(-11, fake.bot_id), ChatMemberRestricted)
    with pytest.raises(BadRequest, match=r"(?i)not enough rights to send text messages to the chat"):
        await bot.send_message(-11, "x")

    fake.add_message(user_id=12, text="hello", first_name="Bo")
    blocked = parse_update(fake, fake.kick_bot(12)).my_chat_member
    assert blocked is not None
    assert blocked.from_user.id == 12  # in a private chat the user is the one who blocks
    assert isinstance(blocked.old_chat_member, ChatMemberMember)
    with pytest.raises(Forbidden, match="bot was blocked by the user"):
        await bot.send_message(12, "x")
    unblocked = parse_update(fake, fake.restore_bot(12)).my_chat_member
    assert unblocked is not None
    assert unblocked.new_chat_member.status == "member"
    assert (await bot.send_message(12, "again")).text == "again"

    with pytest.raises(ValueError, match="status"):
        fake.kick_bot(-10, status="member")
    with pytest.raises(ValueError, match="status"):
        fake.restore_bot(-10, status="kicked")


async def test_delete_chat(fake: FakeBotApi, bot: Bot) -> None:
    await bot.send_message(-77, "before")
    fake.delete_chat(-77)
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.send_message(-77, "after")
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.get_chat(-77)
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.get_chat_member(-77, fake.bot_id)
    assert fake.calls[-1].response["description"] == "Bad Request: chat not found"
    assert [msg["text"] for msg in fake.chat_messages(-77)] == ["before"]


async def test_fail_chat_until_healed(
    fake: FakeBotApi, bot: Bot, http: httpx.AsyncClient, clock: SteppedClock
) -> None:
    fake.set_chat_limits(private_per_s=1)
    fake.fail_chat(7)
    fake.fail_chat(8, 504)
    fake.fail_chat(9, 400, "chat not found")

    answer = await say(http, 7)
    assert (answer.status_code, answer.text) == (502, "Bad Gateway")
    with pytest.raises(NetworkError, match="Bad Gateway"):
        await bot.send_message(7, "x")
    with pytest.raises(NetworkError, match="Bad Gateway"):
        await bot.send_chat_action(7, "typing")
    answer = await say(http, 8)
    assert (answer.status_code, answer.text) == (504, "Gateway Timeout")
    assert (await say(http, 9)).json() == {
        "ok": False,
        "error_code": 400,
        "description": "Bad Request: chat not found",
    }
    assert (await say(http, 10)).status_code == 200
    assert fake.received_429 == 0

    fake.heal_chat(7)
    # The failed calls entered no flood window, so the first call after healing goes through.
    assert (await bot.send_message(7, "healed")).text == "healed"
    assert [msg["text"] for msg in fake.chat_messages(7)] == ["healed"]
    assert [call.status for call in fake.calls if call.params.get("chat_id") == 7] == [502, 502, 502, 200]


# ---------------------------------------------------------------------- a group's members


async def test_members_join_are_counted_and_announced_to_an_administrator_bot(
    fake: FakeBotApi, bot: Bot
) -> None:
    group = -1_000_000_000_500
    joined = fake.add_chat_member(group, 40, first_name="Eve", username="eve")
    assert joined is not None
    change = parse_update(fake, joined).chat_member
    assert change is not None
    assert change.chat.type == "supergroup"
    assert (change.from_user.id, change.new_chat_member.user.username) == (40, "eve")
    assert isinstance(change.old_chat_member, ChatMemberLeft)
    assert isinstance(change.new_chat_member, ChatMemberMember)
    promoted = fake.add_chat_member(group, 41, "administrator", by_user_id=40, update=True)
    assert promoted is not None and parse_update(fake, promoted).chat_member is not None
    assert fake.add_chat_member(group, 42, update=False) is None  # joined before anyone could see

    assert await bot.get_chat_member_count(group) == 4  # the bot is one of them
    assert isinstance(await bot.get_chat_member(group, 43), ChatMemberLeft)  # never in the list
    assert fake.chat_members(group) == {
        40: "member",
        41: "administrator",
        42: "member",
        fake.bot_id: "administrator",
    }
    # chat_member is not delivered unless asked for, as Telegram does.
    assert await bot.get_updates(timeout=0) == ()
    delivered = await bot.get_updates(timeout=0, allowed_updates=[Update.CHAT_MEMBER])
    assert [u.update_id for u in delivered] == [joined["update_id"], promoted["update_id"]]

    # No chat_member updates for a bot that is not an administrator there.
    fake.restore_bot(group, status="member")
    assert fake.add_chat_member(group, 44) is None
    with pytest.raises(ValueError, match="status"):
        fake.add_chat_member(group, 45, "owner")


async def test_ban_then_unban_only_if_banned_removes_someone_who_may_come_back(
    fake: FakeBotApi, bot: Bot
) -> None:
    group = -1_000_000_000_501
    fake.add_chat_member(group, 40)
    fake.add_chat_member(group, 41)
    assert await bot.ban_chat_member(group, 40, revoke_messages=True)
    assert isinstance(await bot.get_chat_member(group, 40), ChatMemberBanned)
    assert await bot.get_chat_member_count(group) == 2
    assert await bot.unban_chat_member(group, 40, only_if_banned=True)
    assert isinstance(await bot.get_chat_member(group, 40), ChatMemberLeft)
    # The bot's own changes come as chat_member updates too, made by the bot.
    changes = [parse_update(fake, u).chat_member for u in fake.pending_updates[-2:]]
    assert [(c.from_user.id, c.new_chat_member.status) for c in changes if c] == [
        (fake.bot_id, "kicked"),
        (fake.bot_id, "left"),
    ]
    # only_if_banned leaves a member alone; without it, unbanning removes them.
    assert await bot.unban_chat_member(group, 41, only_if_banned=True)
    assert isinstance(await bot.get_chat_member(group, 41), ChatMemberMember)
    assert await bot.unban_chat_member(group, 41)
    assert isinstance(await bot.get_chat_member(group, 41), ChatMemberLeft)
    # A supergroup bans people who are not in it, and an until_date is kept.
    until = int(time.time()) + 3600
    assert await bot.ban_chat_member(group, 50, until_date=until)
    banned = await bot.get_chat_member(group, 50)
    assert isinstance(banned, ChatMemberBanned) and banned.until_date is not None
    assert int(banned.until_date.timestamp()) == until


async def test_removing_members_fails_like_telegram(fake: FakeBotApi, bot: Bot) -> None:
    group, basic = -1_000_000_000_502, -502
    fake.add_chat_member(group, 40)
    fake.add_chat_member(group, 41, "administrator")
    fake.add_chat_member(group, 42, "creator")
    with pytest.raises(BadRequest, match=r"(?i)can't remove chat owner"):
        await bot.ban_chat_member(group, 42)
    with pytest.raises(BadRequest, match=r"(?i)user is an administrator of the chat"):
        await bot.ban_chat_member(group, 41)
    with pytest.raises(BadRequest, match=r"(?i)can't ban members in private chats"):
        await bot.ban_chat_member(40, 40)

    fake.set_admin_rights(group, can_restrict_members=False)
    me = await bot.get_chat_member(group, fake.bot_id)
    assert isinstance(me, ChatMemberAdministrator) and me.can_restrict_members is False
    with pytest.raises(BadRequest, match=r"(?i)not enough rights to restrict/unrestrict chat member"):
        await bot.ban_chat_member(group, 40)
    assert fake.calls[-1].response["description"] == (
        "Bad Request: not enough rights to restrict/unrestrict chat member"
    )
    assert isinstance(await bot.get_chat_member(group, 40), ChatMemberMember)
    with pytest.raises(ValueError, match="rights"):
        fake.set_admin_rights(group, can_fly=True)

    # A basic group has no list of removed users: banning removes, unbanning does not exist.
    fake.add_chat_member(basic, 40)
    with pytest.raises(BadRequest, match=r"(?i)USER_NOT_PARTICIPANT"):
        await bot.ban_chat_member(basic, 43)
    assert await bot.ban_chat_member(basic, 40)
    assert isinstance(await bot.get_chat_member(basic, 40), ChatMemberLeft)
    with pytest.raises(BadRequest, match=r"(?i)method is available for supergroup and channel chats only"):
        await bot.unban_chat_member(basic, 40, only_if_banned=True)
    fake.restore_bot(basic, status="member")
    fake.add_chat_member(basic, 44)
    with pytest.raises(BadRequest, match=r"(?i)CHAT_ADMIN_REQUIRED"):
        await bot.ban_chat_member(basic, 44)

    fake.kick_bot(group)
    with pytest.raises(Forbidden, match="bot was kicked from the supergroup chat"):
        await bot.ban_chat_member(group, 40)
    with pytest.raises(Forbidden, match="bot was kicked"):
        await bot.get_chat_member_count(group)
