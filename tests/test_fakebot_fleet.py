"""Several bots at one fake address (serve_also), revoked tokens, and "a bot cannot write first"."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.fakebot import FakeBotApi

UNAUTHORIZED = {"ok": False, "error_code": 401, "description": "Unauthorized"}
CANT_INITIATE = "Forbidden: bot can't initiate conversation with a user"
BACKUP_TOKEN = "654321:BACKUP-TOKEN"


def backup_bot(**kwargs: Any) -> FakeBotApi:
    """Build the second bot, never started itself."""
    return FakeBotApi(BACKUP_TOKEN, bot_id=654321, bot_username="jarchy_backup_bot", **kwargs)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBotApi]:
    """Run the primary fake Bot API server for one test."""
    async with FakeBotApi() as server:
        yield server
    assert server.server_errors == []


@pytest.fixture
async def backup(fake: FakeBotApi) -> AsyncIterator[FakeBotApi]:
    """Serve a second bot at the primary's address."""
    other = backup_bot()
    fake.serve_also(other)
    yield other
    assert other.server_errors == []


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """Return a plain aiohttp client."""
    async with aiohttp.ClientSession() as client:
        yield client


async def call(
    session: aiohttp.ClientSession, bot: FakeBotApi, method: str, token: str | None = None, **params: Any
) -> tuple[int, dict[str, Any]]:
    """Call a method with `bot`'s token (or `token`) at `bot.url`; return the status and JSON body."""
    url = f"{bot.url}/bot{bot.token if token is None else token}/{method}"
    async with session.post(url, json=params) as response:
        body: dict[str, Any] = await response.json()
        return response.status, body


# ---------------------------------------------------------------------- several bots, one address


async def test_each_token_gets_its_own_get_me(
    fake: FakeBotApi, backup: FakeBotApi, session: aiohttp.ClientSession
) -> None:
    assert backup.url == fake.url
    status, primary_me = await call(session, fake, "getMe")
    assert status == 200
    status, backup_me = await call(session, backup, "getMe")
    assert status == 200
    assert (primary_me["result"]["id"], primary_me["result"]["username"]) == (123456, "jarchy_test_bot")
    assert (backup_me["result"]["id"], backup_me["result"]["username"]) == (654321, "jarchy_backup_bot")
    assert [call.method for call in fake.calls] == ["getMe"]
    assert [call.method for call in backup.calls] == ["getMe"]


async def test_each_token_polls_its_own_queue(
    fake: FakeBotApi, backup: FakeBotApi, session: aiohttp.ClientSession
) -> None:
    fake.add_message(user_id=7, text="to primary")
    backup.add_message(user_id=8, text="to backup")
    backup.add_message(user_id=8, text="to backup again")

    _, primary_updates = await call(session, fake, "getUpdates")
    _, backup_updates = await call(session, backup, "getUpdates")
    assert [u["message"]["text"] for u in primary_updates["result"]] == ["to primary"]
    assert [u["message"]["text"] for u in backup_updates["result"]] == ["to backup", "to backup again"]

    # Confirming on one token leaves the other's queue and offset alone.
    last = backup_updates["result"][-1]["update_id"]
    _, confirmed = await call(session, backup, "getUpdates", offset=last + 1)
    assert confirmed["result"] == []
    assert backup.acknowledged_offset == last + 1
    assert fake.acknowledged_offset == 0
    assert len(fake.pending_updates) == 1


async def test_a_long_poll_wakes_only_for_its_own_bot(
    fake: FakeBotApi, backup: FakeBotApi, session: aiohttp.ClientSession
) -> None:
    poll = asyncio.create_task(call(session, backup, "getUpdates", timeout=5))
    await asyncio.sleep(0.1)
    fake.add_message(user_id=7, text="not for the backup")
    await asyncio.sleep(0.1)
    assert not poll.done()
    backup.add_message(user_id=8, text="for the backup")
    status, body = await asyncio.wait_for(poll, 2)
    assert status == 200
    assert [u["message"]["text"] for u in body["result"]] == ["for the backup"]


async def test_send_message_through_the_other_token_lands_in_its_state(
    fake: FakeBotApi, backup: FakeBotApi, session: aiohttp.ClientSession
) -> None:
    waiter = asyncio.create_task(backup.wait_for("sendMessage", chat_id=42, timeout=2))
    status, body = await call(session, backup, "sendMessage", chat_id=42, text="from the backup")
    assert status == 200
    assert body["result"]["from"]["id"] == 654321
    assert [c.params["text"] for c in await waiter] == ["from the backup"]
    assert [m["text"] for m in backup.chat_messages(42)] == ["from the backup"]
    assert fake.sent() == []
    assert fake.chat_messages(42) == []
    with pytest.raises(TimeoutError):
        await fake.wait_for("sendMessage", timeout=0.1)


async def test_the_other_bot_keeps_its_own_faults_and_files(
    fake: FakeBotApi, backup: FakeBotApi, session: aiohttp.ClientSession
) -> None:
    backup.fail_next("sendMessage", status=502)
    status, _ = await call(session, fake, "sendMessage", chat_id=1, text="primary is fine")
    assert status == 200
    async with session.post(
        f"{fake.url}/bot{BACKUP_TOKEN}/sendMessage", json={"chat_id": 1, "text": "x"}
    ) as response:
        assert response.status == 502

    file_id = backup.add_file(b"backup bytes", file_name="notes.txt")
    _, info = await call(session, backup, "getFile", file_id=file_id)
    path = info["result"]["file_path"]
    async with session.get(f"{fake.url}/file/bot{BACKUP_TOKEN}/{path}") as response:
        assert response.status == 200
        assert await response.read() == b"backup bytes"
    # The primary has no such file: its own token finds nothing at that path.
    async with session.get(f"{fake.url}/file/bot{fake.token}/{path}") as response:
        assert response.status == 404
    assert [c.method for c in backup.sent()] == ["getFile", "downloadFile"]


async def test_a_token_neither_bot_has_is_unauthorized(
    fake: FakeBotApi, backup: FakeBotApi, session: aiohttp.ClientSession
) -> None:
    status, body = await call(session, fake, "getMe", token="999:NOBODY")
    assert (status, body) == (401, UNAUTHORIZED)
    async with session.get(f"{fake.url}/file/bot999:NOBODY/documents/file_1.txt") as response:
        assert response.status == 401
    assert [c.status for c in fake.calls] == [401, 401]
    assert backup.calls == []


async def test_serve_also_before_start_is_wired_by_start(session: aiohttp.ClientSession) -> None:
    primary = FakeBotApi()
    other = backup_bot()
    primary.serve_also(other)
    async with primary:
        assert other.url == primary.url
        other.add_message(user_id=5, text="hi")
        status, body = await call(session, other, "getUpdates", timeout=1)
        assert status == 200
        assert [u["message"]["text"] for u in body["result"]] == ["hi"]
        assert len(await other.wait_for("getUpdates")) == 1


async def test_stop_ends_the_other_bots_long_poll(session: aiohttp.ClientSession) -> None:
    primary = FakeBotApi()
    other = backup_bot()
    await primary.start()
    primary.serve_also(other)
    poll = asyncio.create_task(call(session, other, "getUpdates", timeout=30))
    await asyncio.sleep(0.2)  # let the poll start waiting
    started = time.monotonic()
    await primary.stop()
    status, body = await asyncio.wait_for(poll, 3)
    assert time.monotonic() - started < 2.5
    assert (status, body["result"]) == (200, [])
    assert other._closing.is_set()


def test_serve_also_refuses_itself_and_a_twin_token() -> None:
    primary = FakeBotApi()
    with pytest.raises(ValueError, match="itself"):
        primary.serve_also(primary)
    with pytest.raises(ValueError, match="same token"):
        primary.serve_also(FakeBotApi(primary.token))


# ---------------------------------------------------------------------- a revoked token


async def test_revoked_token_answers_401_to_everything_until_restored(
    fake: FakeBotApi, session: aiohttp.ClientSession
) -> None:
    fake.revoke()
    assert await call(session, fake, "getMe") == (401, UNAUTHORIZED)
    assert await call(session, fake, "sendMessage", chat_id=1, text="x") == (401, UNAUTHORIZED)
    assert await call(session, fake, "getUpdates") == (401, UNAUTHORIZED)
    assert await call(session, fake, "noSuchMethod") == (401, UNAUTHORIZED)
    assert [(c.method, c.status) for c in fake.calls] == [
        ("getMe", 401),
        ("sendMessage", 401),
        ("getUpdates", 401),
        ("noSuchMethod", 401),
    ]
    assert fake.chat_messages(1) == []

    fake.restore()
    status, me = await call(session, fake, "getMe")
    assert (status, me["result"]["id"]) == (200, fake.bot_id)
    status, _ = await call(session, fake, "sendMessage", chat_id=1, text="back")
    assert status == 200
    assert [m["text"] for m in fake.chat_messages(1)] == ["back"]


async def test_revoke_ends_a_waiting_long_poll_with_401(
    fake: FakeBotApi, session: aiohttp.ClientSession
) -> None:
    poll = asyncio.create_task(call(session, fake, "getUpdates", timeout=30))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    fake.revoke()
    assert await asyncio.wait_for(poll, 2) == (401, UNAUTHORIZED)
    assert time.monotonic() - started < 1.0
    assert fake.calls[-1].status == 401


async def test_revoking_one_bot_leaves_the_other_working(
    fake: FakeBotApi, backup: FakeBotApi, session: aiohttp.ClientSession
) -> None:
    backup.revoke()
    assert await call(session, backup, "getMe") == (401, UNAUTHORIZED)
    status, _ = await call(session, fake, "getMe")
    assert status == 200
    backup.restore()
    status, me = await call(session, backup, "getMe")
    assert (status, me["result"]["username"]) == (200, "jarchy_backup_bot")


# ---------------------------------------------------------------------- a bot cannot write first


async def test_require_start_refuses_the_first_word_until_the_user_writes(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeBotApi(require_start=True) as fake:
        status, body = await call(session, fake, "sendMessage", chat_id=77, text="hello?")
        assert (status, body) == (403, {"ok": False, "error_code": 403, "description": CANT_INITIATE})
        status, body = await call(session, fake, "sendChatAction", chat_id=77, action="typing")
        assert (status, body["description"]) == (403, CANT_INITIATE)
        assert fake.started_users == set()

        fake.add_message(user_id=77, text="/start")
        assert fake.started_users == {77}
        status, _ = await call(session, fake, "sendMessage", chat_id=77, text="hello!")
        assert status == 200
        # Groups are not private chats: a bot may always write there.
        status, _ = await call(session, fake, "sendMessage", chat_id=-100, text="group")
        assert status == 200


async def test_require_start_counts_only_private_contact(
    fake: FakeBotApi, session: aiohttp.ClientSession
) -> None:
    fake.require_start = True
    # Writing in a group does not start the bot in private.
    fake.add_message(user_id=9, chat_id=-5, chat_type="group", text="hi all")
    status, body = await call(session, fake, "sendMessage", chat_id=9, text="psst")
    assert (status, body["description"]) == (403, CANT_INITIATE)
    # A button press in their private chat does.
    fake.add_callback_query(user_id=9, data="go", message_id=1)
    status, _ = await call(session, fake, "sendMessage", chat_id=9, text="psst")
    assert status == 200
    # And a test may say so directly.
    fake.mark_started(10)
    status, _ = await call(session, fake, "sendPhoto", chat_id=10, photo=fake.add_file(b"img"))
    assert status == 200


async def test_a_blocked_user_is_still_blocked_not_unstarted(
    fake: FakeBotApi, session: aiohttp.ClientSession
) -> None:
    fake.require_start = True
    fake.forbidden_chats.add(11)
    status, body = await call(session, fake, "sendMessage", chat_id=11, text="x")
    assert (status, body["description"]) == (403, "Forbidden: bot was blocked by the user")
    fake.add_message(user_id=11, text="/start")
    status, body = await call(session, fake, "sendMessage", chat_id=11, text="x")
    assert (status, body["description"]) == (403, "Forbidden: bot was blocked by the user")


async def test_require_start_is_per_bot(
    fake: FakeBotApi, backup: FakeBotApi, session: aiohttp.ClientSession
) -> None:
    fake.require_start = backup.require_start = True
    fake.add_message(user_id=12, text="/start")
    status, _ = await call(session, fake, "sendMessage", chat_id=12, text="x")
    assert status == 200
    status, body = await call(session, backup, "sendMessage", chat_id=12, text="x")
    assert (status, body["description"]) == (403, CANT_INITIATE)


async def test_without_require_start_the_bot_may_write_first(
    fake: FakeBotApi, session: aiohttp.ClientSession
) -> None:
    assert fake.require_start is False
    status, _ = await call(session, fake, "sendMessage", chat_id=13, text="hi")
    assert status == 200
