"""Webhook mode end to end: the fake Bot API pushes updates to the bot's own server as Telegram does; requests
without the secret are refused and leave nothing; an update is stored before its 200; a resend runs once."""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text

from bot.runtime.inbox import ALLOWED_UPDATES
from bot.webhook import MAX_BODY_BYTES, SECRET_HEADER
from messages import catalogs
from storage.database import Database
from tests.fakebot import FakeBotApi
from tests.support.bots import RunningBot
from tests.support.people import Person
from tests.support.settings import free_port, make_settings

HELP = catalogs().text("en", "help.text", commands="")[:20]


@pytest.fixture
async def hooked(fake: FakeBotApi, tmp_path: Path) -> AsyncIterator[tuple[RunningBot, str]]:
    """A bot in webhook mode, with Telegram (the fake) posting to it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram/hook"
    settings = make_settings(
        tmp_path,
        api_url=fake.url,
        webhook_url=url,
        webhook_listen=("127.0.0.1", port),
        db_busy_timeout_ms=100,
    )
    bot = RunningBot(settings)
    await bot.start()
    await fake.wait_for("setWebhook", timeout=20)
    yield bot, url
    await bot.stop()


def _update(update_id: int, user_id: int, body: str = "/help") -> dict[str, Any]:
    """A message update as Telegram sends it, from someone the fake already knows."""
    person = {"id": user_id, "is_bot": False, "first_name": "Test", "language_code": "en"}
    message: dict[str, Any] = {
        "message_id": update_id,
        "date": int(time.time()),
        "chat": {"id": user_id, "type": "private", "first_name": "Test"},
        "from": person,
        "text": body,
    }
    if body.startswith("/"):
        message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(body.split()[0])}]
    return {"update_id": update_id, "message": message}


async def _post(url: str, payload: bytes | dict[str, Any], secret: str | None) -> int:
    headers = {SECRET_HEADER: secret} if secret is not None else {}
    async with aiohttp.ClientSession() as session:
        if isinstance(payload, dict):
            response = await session.post(url, json=payload, headers=headers)
        else:
            response = await session.post(url, data=io.BytesIO(payload), headers=headers)
        async with response:
            return response.status


async def _inbox_ids(bot: RunningBot) -> set[int]:
    async with bot.app_services().db.read() as conn:
        return set((await conn.execute(text("SELECT update_id FROM inbox"))).scalars())


async def test_updates_come_through_the_webhook_and_polling_is_never_used(
    fake: FakeBotApi, hooked: tuple[RunningBot, str]
) -> None:
    bot, url = hooked
    (set_webhook,) = fake.sent("setWebhook")
    assert set_webhook.params["url"] == url
    assert set_webhook.params["allowed_updates"] == list(ALLOWED_UPDATES)
    assert set_webhook.params["drop_pending_updates"] is False
    # Derived from the data key: long, and of the characters Telegram allows.
    assert fake.webhook_secret is not None and len(fake.webhook_secret) >= 40
    reply = await Person(fake, 301).say("/help")
    assert reply["text"].startswith(HELP[:10])
    await bot.quiet(fake)
    assert not fake.sent("getUpdates") and not fake.sent("deleteWebhook")
    assert [status for _, status in fake.webhook_pushes] == [200]


async def test_a_forged_or_missing_secret_is_refused_and_stored_nowhere(
    fake: FakeBotApi, hooked: tuple[RunningBot, str], caplog: pytest.LogCaptureFixture
) -> None:
    bot, url = hooked
    await Person(fake, 302).say("/start")  # the fake knows the chat from now on
    secret = fake.webhook_secret
    assert secret is not None
    forged = _update(900_001, 302)
    for given in (None, "", secret[:-1] + ("A" if secret[-1] != "A" else "B"), secret + "x", "ё" * 8):
        assert await _post(url, forged, given) == 403, given
    # Said once, not once a request: forged requests cannot fill the log.
    refusals = [r for r in caplog.records if "without the right secret" in r.getMessage()]
    assert len(refusals) == 1
    # The right secret, but nothing Telegram would send: refused, not stored either.
    assert await _post(url, b"{not json", secret) == 400
    assert await _post(url, {"update_id": "900002"}, secret) == 400
    assert await _post(url, b"x" * (MAX_BODY_BYTES + 1), secret) == 413
    await bot.quiet(fake)
    assert 900_001 not in await _inbox_ids(bot) and "900002" not in map(str, await _inbox_ids(bot))
    answered = [c for c in fake.sent("sendMessage", chat_id=302)]
    assert len(answered) == 1, "only the /start the fake pushed"


async def test_an_update_is_stored_before_its_200_and_a_resend_is_handled_once(
    fake: FakeBotApi, hooked: tuple[RunningBot, str]
) -> None:
    bot, url = hooked
    await Person(fake, 303).say("/start")
    secret = fake.webhook_secret
    update = _update(900_010, 303)
    # While the database cannot be written, the update is not acknowledged: Telegram will send it again.
    # The locker is another process's writer (SQLite's write lock, PostgreSQL's writers' advisory lock).
    locker = Database.connect(bot.settings.database_url, busy_timeout_ms=30_000)
    try:
        async with locker.write() as conn:
            await conn.execute(text("SELECT 1"))  # the lock is taken with the first statement
            assert await _post(url, update, secret) == 503
    finally:
        await locker.dispose()  # no checkpoint: the bot is the database's owner
    assert 900_010 not in await _inbox_ids(bot)
    # Then it is: the row is there as soon as the 200 is.
    assert await _post(url, update, secret) == 200
    assert 900_010 in await _inbox_ids(bot)
    await fake.wait_for("sendMessage", chat_id=303, count=2, timeout=15)
    # Telegram sending it once more (its request timed out on its side) changes nothing.
    assert await _post(url, update, secret) == 200
    await bot.quiet(fake)
    assert len(fake.sent("sendMessage", chat_id=303)) == 2


async def test_telegram_sends_again_what_the_bot_did_not_take(fake: FakeBotApi, tmp_path: Path) -> None:
    # The bot is down when a message comes: Telegram keeps it and posts it again once the server is up.
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    settings = make_settings(tmp_path, api_url=fake.url, webhook_url=url, webhook_listen=("127.0.0.1", port))
    bot = RunningBot(settings)
    await bot.start()
    await fake.wait_for("setWebhook", timeout=20)
    await bot.stop()
    fake.add_message(user_id=304, text="/help")
    await fake.wait_for_push(status=0, timeout=10)
    await bot.start()
    try:
        await fake.wait_for("sendMessage", chat_id=304, timeout=20)
        assert any(status == 0 for _, status in fake.webhook_pushes)
        assert fake.webhook_pushes[-1][1] == 200
    finally:
        await bot.stop()


async def test_health_and_readiness(fake: FakeBotApi, hooked: tuple[RunningBot, str]) -> None:
    _, url = hooked
    root = url.rsplit("/telegram", 1)[0]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{root}/healthz") as health:
            assert health.status == 200
        async with session.get(f"{root}/readyz") as ready:
            assert ready.status == 200
        # The webhook path takes only POSTs from Telegram.
        async with session.get(url) as wrong:
            assert wrong.status == 405
