"""The durable inbox: no acknowledged update is lost, none is handled twice, faults are retried."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection
from telegram import Update
from telegram.ext import ApplicationHandlerStop, MessageHandler, filters

from bot.app import build_application
from bot.context import JarchyContext
from bot.runner import run_polling
from bot.runtime.clock import SystemClock
from bot.runtime.inbox import Dispatch, Dispatcher, DispatchResult, DurableInbox
from bot.settings import Settings
from bot.wiring import Services, build_limiter, open_services
from messages import catalogs
from messages.menus import help_screen
from storage.database import Database
from storage.inbox import InboxRepository, InboxRow
from tests.fakebot import FakeBotApi
from tests.support.bots import BotProcess, RunningBot
from tests.support.replies import next_reply, reply_texts


@asynccontextmanager
async def bot_with_handler(
    settings: Settings, text: str, callback: Callable[[Update, JarchyContext], Coroutine[Any, Any, None]]
) -> AsyncIterator[None]:
    """Run the real bot with one extra handler (ahead of the features) for messages equal to `text`."""
    app = build_application(settings)
    app.add_handler(MessageHandler(filters.Regex(f"^{text}$"), callback), group=-5)
    stop = asyncio.Event()
    task = asyncio.create_task(run_polling(settings, stop=stop, app=app))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


HELP_EN = help_screen(catalogs(), "en")


def inbox_of(
    services: Services, dispatch: Dispatcher, repo: InboxRepository | None = None, **options: Any
) -> DurableInbox:
    """An inbox on the services' database and fake Bot API, dispatching to `dispatch`."""
    return DurableInbox(
        db=services.db,
        repo=repo or services.inbox_repo,
        api=services.api,
        cipher=services.cipher,
        clock=services.clock,
        dispatch=dispatch,
        **options,
    )


async def test_an_update_stored_but_not_dispatched_is_handled_once_after_a_crash(
    fake: FakeBotApi, bot_settings: Settings
) -> None:
    dispatched: list[dict[str, Any]] = []

    async def never(update: dict[str, Any]) -> DispatchResult:
        dispatched.append(update)
        return DispatchResult(Dispatch.DONE)

    services = await open_services(bot_settings, SystemClock(), build_limiter(bot_settings, SystemClock()))
    inbox = inbox_of(services, never)
    fake.add_message(user_id=300, text="/help")
    assert await inbox.fetch_once(timeout_s=0) == 1
    assert await inbox.fetch_once(timeout_s=0) == 0  # this poll acknowledges the update to Telegram
    assert fake.acknowledged_offset == 2 and fake.pending_updates == []
    # The process dies here: acknowledged to Telegram, never dispatched.
    await services.close()
    assert dispatched == []

    running = RunningBot(bot_settings)
    await running.start()
    try:
        assert (await next_reply(fake, 300))["text"] == HELP_EN
        await asyncio.sleep(0.5)
        assert reply_texts(fake, 300) == [HELP_EN]
    finally:
        await running.stop()


async def test_a_restart_does_not_handle_an_update_twice(fake: FakeBotApi, bot: RunningBot) -> None:
    fake.add_message(user_id=301, text="/help")
    await next_reply(fake, 301)
    await bot.restart()
    fake.add_message(user_id=301, text="/start")
    await next_reply(fake, 301, count=2)
    await asyncio.sleep(0.5)
    assert len(reply_texts(fake, 301)) == 2


async def test_the_running_bot_keeps_no_list_of_who_wrote_to_it(fake: FakeBotApi, bot: RunningBot) -> None:
    # PTB without a persistence gathers every chat and user id in sets nothing empties: memory that grows
    # with each new person, and a roll of every Telegram id heard from, for whoever reads the memory.
    for user_id in (310, 311, 312):
        fake.add_message(user_id=user_id, text="/help")
        await next_reply(fake, user_id)
    assert bot.app is not None
    assert not bot.app._user_ids_to_be_updated_in_persistence
    assert not bot.app._chat_ids_to_be_updated_in_persistence


@pytest.mark.sqlite_only("reads the bytes of the SQLite file and its WAL")
async def test_an_inbox_payload_is_encrypted_and_dropped_once_handled(
    fake: FakeBotApi, bot: RunningBot
) -> None:
    fake.add_message(user_id=302, text="/help canary-4F7Q")
    await next_reply(fake, 302)
    await asyncio.sleep(0.3)
    raw = (bot.settings.data_dir / "jarchy.db").read_bytes()
    wal = bot.settings.data_dir / "jarchy.db-wal"
    raw += wal.read_bytes() if wal.exists() else b""
    assert b"canary-4F7Q" not in raw
    db = Database.connect(bot.settings.database_url)
    try:
        async with db.read() as conn:
            payloads = (
                (await conn.execute(text("SELECT payload FROM inbox WHERE status = 'done'"))).scalars().all()
            )
        assert payloads and all(p is None for p in payloads)
    finally:
        await db.close()


async def test_a_transient_fault_keeps_the_update_for_another_try(
    fake: FakeBotApi, bot_settings: Settings
) -> None:
    calls = Counter[str]()

    async def flaky(update: Update, context: JarchyContext) -> None:
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise OperationalError("INSERT …", {}, sqlite3.OperationalError("database is locked"))
        if update.effective_message is not None:
            await update.effective_message.reply_text("handled")
        raise ApplicationHandlerStop

    async with bot_with_handler(bot_settings, "flaky", flaky):
        fake.add_message(user_id=303, text="flaky")
        await fake.wait_for("sendMessage", chat_id=303, count=2, timeout=15)
        texts = reply_texts(fake, 303)
        assert texts[0] == catalogs().text("en", "error.retrying")
        assert texts[1] == "handled" and calls["flaky"] == 2


async def test_a_locked_database_delays_but_loses_nothing(fake: FakeBotApi, tmp_path: Path) -> None:
    from tests.support.settings import make_settings

    settings = make_settings(tmp_path, api_url=fake.url, db_busy_timeout_ms=100)
    running = RunningBot(settings)
    await running.start()
    try:
        fake.add_message(user_id=304, text="/help")
        await next_reply(fake, 304)
        # The locker is another process's writer (SQLite's write lock, PostgreSQL's writers' advisory
        # lock). It waits its turn like any writer: on a loaded machine the bot may itself be mid-write
        # (its start-up jobs); the point is what the bot does while the locker holds the lock.
        locker = Database.connect(settings.database_url, busy_timeout_ms=30_000)
        try:
            async with locker.write() as conn:
                await conn.execute(text("SELECT 1"))  # the lock is taken with the first statement
                fake.add_message(user_id=305, text="/help", language_code="ru")
                await asyncio.sleep(1.5)
        finally:
            await locker.dispose()  # no checkpoint: the bot is the database's owner
        await next_reply(fake, 305, timeout=20)
        await asyncio.sleep(0.5)
        helps = [
            t
            for t in reply_texts(fake, 305)
            if t.startswith(catalogs().text("ru", "help.text", commands="")[:10])
        ]
        assert len(helps) == 1
    finally:
        await running.stop()


async def test_kill_9_loses_no_acknowledged_update(fake: FakeBotApi, tmp_path: Path) -> None:
    bot = BotProcess(fake, tmp_path / "data")
    await bot.start()
    users = list(range(400, 460))
    try:
        await fake.wait_for("getUpdates", timeout=30)
        last_update_id = 0
        for user in users:
            last_update_id = fake.add_message(user_id=user, text="/help")["update_id"]
        # Kill once Telegram has been told the whole batch arrived, while replies are still going out
        # (direct replies share the 30 msg/s cap, so 60 of them take about two seconds).
        await fake.wait_for("sendMessage", count=1, timeout=30)
        await fake.wait_for("getUpdates", predicate=lambda c: int(c.params.get("offset", 0)) > last_update_id)
        await bot.kill()
        answered_before = {int(c.params["chat_id"]) for c in fake.sent("sendMessage")}
        assert fake.acknowledged_offset > last_update_id
        assert 0 < len(answered_before) < len(users)

        await bot.start()
        for user in users:
            await fake.wait_for("sendMessage", chat_id=user, timeout=30)
    finally:
        await bot.stop()
    replies = Counter(int(c.params["chat_id"]) for c in fake.sent("sendMessage"))
    assert set(replies) == set(users)
    # Only updates in flight at the kill may be answered twice: at most the dispatcher's concurrency.
    assert sum(count - 1 for count in replies.values()) <= 8


async def test_a_long_transient_fault_never_exhausts_an_update(
    fake: FakeBotApi, bot_settings: Settings
) -> None:
    failures = Counter[str]()

    async def locked_for_a_while(update: Update, context: JarchyContext) -> None:
        failures["n"] += 1
        if failures["n"] <= bot_settings.inbox_max_attempts + 1:
            raise OperationalError("UPDATE …", {}, sqlite3.OperationalError("database is locked"))
        if update.effective_message is not None:
            await update.effective_message.reply_text("finally")
        raise ApplicationHandlerStop

    async with bot_with_handler(bot_settings, "locked", locked_for_a_while):
        fake.add_message(user_id=306, text="locked")
        await fake.wait_for(
            "sendMessage", chat_id=306, timeout=30, predicate=lambda c: c.params.get("text") == "finally"
        )


async def test_a_slow_handler_delays_only_its_own_chat(fake: FakeBotApi, bot_settings: Settings) -> None:
    async def slow(update: Update, context: JarchyContext) -> None:
        await asyncio.sleep(3)
        if update.effective_message is not None:
            await update.effective_message.reply_text("slow done")
        raise ApplicationHandlerStop

    async with bot_with_handler(bot_settings, "slow", slow):
        await fake.wait_for("getUpdates", timeout=15)
        fake.add_message(user_id=307, text="slow")
        await asyncio.sleep(0.3)
        fake.add_message(user_id=308, text="/help")
        await next_reply(fake, 308, timeout=15)
        # The other chat's answer came while the slow handler was still running.
        assert fake.sent("sendMessage", chat_id=307) == []
        await fake.wait_for("sendMessage", chat_id=307, timeout=15)


async def test_polls_and_passes_read_only_what_they_need(fake: FakeBotApi, bot_settings: Settings) -> None:
    # Under load every statement counts: the offset this poller stored is not read back before each poll,
    # what one instance stores goes to its chat's chain without being read back, done-marks are written
    # several at a time, and a dispatch pass reads its due rows and the next due time in one transaction.
    handled: list[int] = []

    async def dispatch(update: dict[str, Any]) -> DispatchResult:
        handled.append(update["update_id"])
        return DispatchResult(Dispatch.DONE)

    services = await open_services(bot_settings, SystemClock(), build_limiter(bot_settings, SystemClock()))
    statements: Counter[str] = Counter()

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "FROM bot_state" in statement:
            statements["offset read"] += 1
        if "min(inbox.next_attempt_at)" in statement:
            statements["next due"] += 1
        if statement.startswith("SELECT inbox.update_id") and "next_attempt_at <=" in statement:
            statements["due rows"] += 1
        if statement.startswith("UPDATE inbox SET payload"):
            statements["done-marks"] += 1

    event.listen(services.db.engine.sync_engine, "before_cursor_execute", seen)
    inbox = inbox_of(services, dispatch, polling_timeout_s=1)
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(inbox.run())
    started = loop.time()
    try:
        for user in range(10):
            fake.add_message(user_id=400 + user, text="/help")
            await fake.wait_for("getUpdates", count=len(fake.sent("getUpdates")) + 1, timeout=10)
        for _ in range(100):
            if len(handled) == 10:
                break
            await asyncio.sleep(0.05)
        took = loop.time() - started
    finally:
        inbox.stop()
        await asyncio.wait_for(task, 10)
        async with services.db.read() as conn:
            unmarked = (
                await conn.execute(text("SELECT count(*) FROM inbox WHERE status <> 'done'"))
            ).scalar()
        await services.close()
    assert len(handled) == 10
    polls = len(fake.sent("getUpdates"))
    assert polls >= 10
    assert statements["offset read"] == 1  # the first poll's; every later one knew what it had stored
    # Ten updates, one poll each: passes came at the start and once a second while idle, never per update.
    assert statements["due rows"] <= 2 + int(took), (statements, took)
    # The marks of updates finishing within 0.1 s of each other share one write (the last at the stop).
    assert statements["done-marks"] < 10, statements
    assert unmarked == 0  # the stop wrote the marks still waiting
    # Every pass read the next due time with its due rows: never a pass that read it alone.
    assert statements["next due"] == statements["due rows"] > 0


class _PausingDue(InboxRepository):
    """The inbox's SQL, with a pass that can be held after it read its due rows (as a slow read is)."""

    def __init__(self) -> None:
        super().__init__()
        self.hold: asyncio.Event | None = None
        self.read_done = asyncio.Event()

    async def due(self, conn: AsyncConnection, now: datetime, limit: int) -> list[InboxRow]:
        rows = await super().due(conn, now, limit)
        if self.hold is not None:
            self.read_done.set()
            await self.hold.wait()
        return rows


async def test_a_chats_update_stored_during_a_pass_is_not_overtaken_by_a_later_one(
    fake: FakeBotApi, bot_settings: Settings
) -> None:
    # A is put off for a retry; B (same chat) is stored while the pass that takes A up again is still
    # reading; D comes after that pass. B was not in what the pass read, so D must wait for the pass that
    # reads B, not go straight to the chat's chain ahead of it.
    handled: list[str] = []
    tried: set[str] = set()

    async def dispatch(update: dict[str, Any]) -> DispatchResult:
        body = update["message"]["text"]
        handled.append(body)
        if body == "a" and body not in tried:
            tried.add(body)
            return DispatchResult(Dispatch.RETRY, "database is locked")
        return DispatchResult(Dispatch.DONE)

    services = await open_services(bot_settings, SystemClock(), build_limiter(bot_settings, SystemClock()))
    repo = _PausingDue()
    inbox = inbox_of(services, dispatch, repo=repo)
    try:
        fake.add_message(user_id=520, text="a")
        await inbox.fetch_once(timeout_s=0)
        await inbox.dispatch_pending()
        assert handled == ["a"]
        await inbox.dispatch_pending()  # settles A's first run (a pass skips what was in flight at its start)
        for _ in range(50):  # until A's retry is due
            async with services.db.read() as conn:
                if await repo.due(conn, services.clock.now(), 10):
                    break
            await asyncio.sleep(0.1)
        repo.hold = asyncio.Event()
        taking_a = asyncio.create_task(inbox.dispatch_pending())
        await asyncio.wait_for(repo.read_done.wait(), 5)
        fake.add_message(user_id=520, text="b")
        await inbox.fetch_once(timeout_s=0)
        repo.hold.set()
        repo.hold = None
        await asyncio.wait_for(taking_a, 10)
        fake.add_message(user_id=520, text="d")
        await inbox.fetch_once(timeout_s=0)
        await inbox.dispatch_pending()
        await inbox.dispatch_pending()
    finally:
        await services.close()
    assert handled == ["a", "a", "b", "d"]


async def test_an_update_the_webhook_stored_is_not_handled_again_when_polling_brings_it(
    fake: FakeBotApi, bot_settings: Settings
) -> None:
    # Switching from a webhook to polling: Telegram may send again an update whose webhook answer was
    # lost. It is in the inbox already (here: handled), so the poll that brings it hands on nothing.
    handled: list[int] = []

    async def dispatch(update: dict[str, Any]) -> DispatchResult:
        handled.append(update["update_id"])
        return DispatchResult(Dispatch.DONE)

    services = await open_services(bot_settings, SystemClock(), build_limiter(bot_settings, SystemClock()))
    inbox = inbox_of(services, dispatch)
    try:
        await inbox.dispatch_pending()  # the first pass: from here on, what is stored is handed on
        update = fake.add_message(user_id=521, text="/help")
        assert await inbox.accept(dict(update)) is True
        await inbox.dispatch_pending()
        await inbox.dispatch_pending()  # a pass after it finished: nothing in memory remembers it now
        assert handled == [update["update_id"]]
        fresh = fake.add_message(user_id=522, text="/help")
        assert await inbox.fetch_once(timeout_s=0) == 2  # the webhook's update again, and a new one
        await inbox.dispatch_pending()
        await asyncio.sleep(0.2)
    finally:
        await services.close()
    assert handled == [update["update_id"], fresh["update_id"]]
