"""Starting while Telegram is unreachable or refuses the token: wait and come up, or stop in one line."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from asyncio.subprocess import PIPE
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from bot.runtime.clock import SystemClock
from bot.runtime.inbox import DispatchResult, DurableInbox
from bot.security import create_key_file
from bot.settings import Settings
from bot.telegram_start import TokenRefused
from bot.wiring import build_limiter, open_services
from messages import catalogs
from messages.menus import command_list
from storage.database import Database
from storage.types import to_micros
from tests.fakebot import FakeBotApi
from tests.support.backends import database_url_for
from tests.support.bots import RunningBot
from tests.support.database import seed_database
from tests.support.people import Person
from tests.support.replies import next_reply
from tests.support.settings import TEST_TOKEN, free_port, make_settings

COORDINATOR = 5201
FOLLOWER = 5202
WAITING = 5203
HELP_EN = catalogs().text("en", "help.text", commands=command_list(catalogs(), "en"))
UNREACHABLE = "Telegram is unreachable at"


async def _follow_a_case(settings: Settings, fake: FakeBotApi) -> None:
    """Run the bot once: a coordinator adds a case with a hearing in three hours, a follower follows it."""
    bot = RunningBot(settings)
    await bot.start()
    try:
        coordinator, follower = Person(fake, COORDINATOR), Person(fake, FOLLOWER)
        await coordinator.say("/case_new Makhabat T. | Blogger charged for a post | Art. 327 | public")
        when = (datetime.now(ZoneInfo("Asia/Bishkek")) + timedelta(hours=3)).strftime("%d.%m.%Y %H:%M")
        await coordinator.say(f"/hearing_add 1 | {when} | Oktyabrsky court | Bishkek, Toktogula 1")
        await follower.say("/cases")
        await follower.press("cf:1", fake.sent("sendMessage", chat_id=FOLLOWER)[-1].result["message_id"])
    finally:
        await bot.stop()


async def _acknowledge_undispatched(settings: Settings, fake: FakeBotApi, user_id: int) -> None:
    """Leave a /help in the inbox that Telegram considers delivered and the bot has not handled yet."""

    async def never(update: dict[str, object]) -> DispatchResult:
        raise AssertionError("nothing is dispatched here")

    services = await open_services(settings, SystemClock(), build_limiter(settings, SystemClock()))
    try:
        inbox = DurableInbox(
            db=services.db,
            repo=services.inbox_repo,
            api=services.api,
            cipher=services.cipher,
            clock=services.clock,
            dispatch=never,
        )
        fake.add_message(user_id=user_id, text="/help")
        assert await inbox.fetch_once(timeout_s=0) == 1
        assert await inbox.fetch_once(timeout_s=0) == 0  # acknowledges it to Telegram
    finally:
        await services.close()


async def _queued_reminders(settings: Settings) -> int:
    db = Database.connect(settings.database_url)
    try:
        async with db.read() as conn:
            found = await conn.execute(text("SELECT count(*) FROM outbox WHERE kind = 'reminder'"))
            return int(found.scalar_one())
    finally:
        await db.close()


async def _until(predicate: object, timeout: float = 15.0) -> None:
    assert callable(predicate)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_bot_started_while_telegram_is_down_comes_up_by_itself_and_handles_what_waited(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    fake = FakeBotApi(TEST_TOKEN)
    await fake.start(port)
    settings = make_settings(
        tmp_path,
        api_url=fake.url,
        admin_ids=frozenset({COORDINATOR}),
        reminder_interval_s=0.5,
        start_retry_max_s=0.3,
    )
    try:
        await _follow_a_case(settings, fake)
        await _acknowledge_undispatched(settings, fake, WAITING)
    finally:
        await fake.stop()  # Telegram is gone: its port refuses connections
    # The hearing moves to 2 hours and 3 seconds from now: its 2-hour reminder falls due during the outage.
    db = Database.connect(settings.database_url)
    try:
        async with db.write() as conn:
            soon = datetime.now(UTC) + timedelta(hours=2, seconds=3)
            await conn.execute(text("UPDATE hearings SET starts_at = :t"), {"t": to_micros(soon)})
    finally:
        await db.close()
    assert await _queued_reminders(settings) == 0

    bot = RunningBot(settings)
    caplog.set_level(logging.INFO, logger="bot.telegram_start")
    await bot.start()
    try:

        async def tried_twice() -> bool:
            return sum(UNREACHABLE in r.getMessage() for r in caplog.records) >= 2

        await _until(tried_twice)

        # Meanwhile what needs no Telegram goes on: the reminder is queued in the outbox.
        async def reminder_queued() -> bool:
            return await _queued_reminders(settings) == 1

        await _until(reminder_queued)
        line = next(r.getMessage() for r in caplog.records if UNREACHABLE in r.getMessage())
        assert f"127.0.0.1:{port}" in line and "next try in" in line and " UTC" in line
        assert TEST_TOKEN not in line

        await fake.start(port)  # Telegram is back
        (reminder,) = await fake.wait_for(
            "sendMessage", chat_id=FOLLOWER, timeout=20, predicate=lambda c: "⚖️" in str(c.params.get("text"))
        )
        assert "Makhabat" in reminder.params["text"]
        assert (await next_reply(fake, WAITING, timeout=20))["text"] == HELP_EN
        # The bot is up for new work too.
        fake.add_message(user_id=WAITING, text="/help")
        assert (await next_reply(fake, WAITING, count=2, timeout=20))["text"] == HELP_EN
        assert any("Telegram answers at" in r.getMessage() for r in caplog.records)
    finally:
        await bot.stop()
        await fake.stop()


async def test_a_stop_while_waiting_for_telegram_ends_cleanly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, api_url=f"http://127.0.0.1:{free_port()}", start_retry_max_s=0.2)
    bot = RunningBot(settings)
    caplog.set_level(logging.INFO, logger="bot.telegram_start")
    await bot.start()

    async def waiting() -> bool:
        return any(UNREACHABLE in r.getMessage() for r in caplog.records)

    await _until(waiting)
    await bot.stop()  # surfaces any error the bot died of
    assert bot.app is not None and bot.app.bot_data.services is None  # closed again


def _env(tmp_path: Path, api_url: str, token: str) -> dict[str, str]:
    data_dir = tmp_path / "data"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "PTB_TIMEDELTA": "true",
        "JARCHY_BOT_TOKEN": token,
        "JARCHY_API_URL": api_url,
        "JARCHY_DATA_DIR": str(data_dir),
        "JARCHY_KEY_FILE": str(tmp_path / "keys" / "jarchy.key"),
        # INFO, as an operator runs it: every line the bot writes is looked at.
        "JARCHY_LOG_LEVEL": "INFO",
    }
    database_url = database_url_for(tmp_path)
    if database_url is not None:
        env["JARCHY_DATABASE_URL"] = database_url
    else:
        seed_database(make_settings(tmp_path))
    return env


async def test_a_refused_token_exits_2_with_one_line_that_never_shows_the_token(
    fake: FakeBotApi, tmp_path: Path
) -> None:
    refused = "654321:AAHrefusedTokenXyz0123456789abcdefgh"
    # A restart (the key exists): a first start would also say, on a line of its own, that it made the key.
    create_key_file(tmp_path / "keys" / "jarchy.key")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", env=_env(tmp_path, fake.url, refused), stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    stdout, stderr = out.decode(), err.decode()
    assert process.returncode == 2, stderr
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert "JARCHY_BOT_TOKEN" in lines[0] and "@BotFather" in lines[0] and "Unauthorized" in lines[0]
    for secret in (refused, refused.split(":")[1]):
        assert secret not in stdout + stderr
    assert "Unclosed" not in stderr and "Traceback" not in stderr
    assert [c.method for c in fake.calls] == ["getMe"]  # asked once: no retry changes a refusal


async def test_sigterm_while_waiting_for_telegram_stops_without_a_traceback(tmp_path: Path) -> None:
    api_url = f"http://127.0.0.1:{free_port()}"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", env=_env(tmp_path, api_url, TEST_TOKEN), stdout=PIPE, stderr=PIPE
    )
    assert process.stderr is not None
    seen: list[str] = []
    while not any(UNREACHABLE in line for line in seen):
        line = await asyncio.wait_for(process.stderr.readline(), 30)
        assert line, "".join(seen)
        seen.append(line.decode())
    process.terminate()
    out, err = await asyncio.wait_for(process.communicate(), 30)
    stderr = "".join(seen) + err.decode()
    assert process.returncode == 0, stderr
    assert api_url in stderr and "next try in" in stderr
    assert TEST_TOKEN not in out.decode() + stderr
    assert "Unclosed" not in stderr and "Traceback" not in stderr


async def test_an_answer_like_502_is_waited_out_like_an_outage(
    fake: FakeBotApi, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail_next("getMe", 2, status=502, description="Bad Gateway")
    bot = RunningBot(make_settings(tmp_path, api_url=fake.url, start_retry_max_s=0.2))
    caplog.set_level(logging.INFO, logger="bot.telegram_start")
    await bot.start()
    try:
        fake.add_message(user_id=WAITING, text="/help")
        assert (await next_reply(fake, WAITING, timeout=20))["text"] == HELP_EN
        tries = [r.getMessage() for r in caplog.records if UNREACHABLE in r.getMessage()]
        assert len(tries) == 2 and all("Bad Gateway" in line for line in tries)
    finally:
        await bot.stop()


async def test_a_404_at_start_is_a_refusal_and_leaves_nothing_open(fake: FakeBotApi, tmp_path: Path) -> None:
    fake.fail_next("getMe", status=404, description="Not Found")
    bot = RunningBot(make_settings(tmp_path, api_url=fake.url, start_retry_max_s=0.2))
    await bot.start()
    with pytest.raises(TokenRefused, match="Not Found") as refused:
        await bot.stop()
    assert TEST_TOKEN not in str(refused.value)
    assert [c.method for c in fake.calls] == ["getMe"]


async def test_a_token_refused_after_the_start_also_exits_2_without_showing_it(
    fake: FakeBotApi, tmp_path: Path
) -> None:
    create_key_file(tmp_path / "keys" / "jarchy.key")
    fake.fail_next("getUpdates", status=401, description="Unauthorized")  # revoked while starting
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", env=_env(tmp_path, fake.url, TEST_TOKEN), stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    output = out.decode() + err.decode()
    assert process.returncode == 2, output
    last = err.decode().splitlines()[-1]
    assert last.startswith("jarchy: ") and "JARCHY_BOT_TOKEN" in last
    assert TEST_TOKEN not in output and "Unclosed" not in output
