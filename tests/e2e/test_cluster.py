"""Two real bot processes on one PostgreSQL against the fake Bot API: one polls, one sends, both handle
updates; kill -9 of either costs at most what it had in flight, once its leases have run out.

The fake answers a second concurrent getUpdates with 409 Conflict, as Telegram does, so two pollers
would show as 409s here.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.runtime.clock import SystemClock
from bot.runtime.outbox import PRIORITY_BROADCAST, OutgoingMessage
from bot.webhook import SECRET_HEADER, webhook_secret
from bot.wiring import build_limiter, open_services
from tests.e2e.test_crash import assert_only_unrecorded_sends_repeat, drained, outbox_at_kill
from tests.fakebot import FakeBotApi
from tests.support.bots import BotProcess, RunningBot
from tests.support.database import read_rows
from tests.support.settings import free_port, make_settings


@pytest.fixture(autouse=True)
def on_postgresql(backend: str) -> None:
    """Several instances share PostgreSQL; on SQLite there is one instance by construction."""
    if backend != "postgresql":
        pytest.skip("several instances need PostgreSQL")


async def prepare(fake: FakeBotApi, tmp_path: Path) -> str:
    """Create the key and migrate the test's database once, as the first instance's start would."""
    settings = make_settings(tmp_path, api_url=fake.url)
    services = await open_services(settings, SystemClock(), build_limiter(settings, SystemClock()))
    await services.close()
    return settings.database_url


def pair(fake: FakeBotApi, tmp_path: Path, **settings: str) -> list[BotProcess]:
    """Two instances: data directories of their own (their own names), one key, one database."""
    return [BotProcess(fake, tmp_path / name, output=None, **settings) for name in ("a", "b")]


async def holder(url: str, lease: str, timeout: float = 30.0) -> str:
    """Wait until someone holds the lease; return its instance name."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        rows = await read_rows(url, "SELECT holder FROM leases WHERE name = :name", name=lease)
        if rows:
            return str(rows[0][0])
        if loop.time() > deadline:
            raise TimeoutError(f"nobody took the {lease} lease within {timeout} s")
        await asyncio.sleep(0.1)


def named(bots: list[BotProcess], name: str) -> BotProcess:
    """Return the process whose instance name is `name` (kept in its data directory)."""
    for bot in bots:
        if (bot.data_dir / "instance-id").read_text(encoding="ascii").strip() == name:
            return bot
    raise LookupError(name)


def replied_to(fake: FakeBotApi) -> Counter[int]:
    return Counter(int(call.params["chat_id"]) for call in fake.sent("sendMessage"))


def conflicts(fake: FakeBotApi) -> int:
    return sum(1 for call in fake.calls if call.method == "getUpdates" and call.status == 409)


async def stop_all(bots: list[BotProcess]) -> None:
    for bot in bots:
        if bot.process is not None and bot.process.returncode is None:
            await bot.stop()


async def test_one_instance_polls_and_the_other_takes_over_after_kill_9(
    fake: FakeBotApi, tmp_path: Path
) -> None:
    url = await prepare(fake, tmp_path)
    bots = pair(fake, tmp_path)
    await bots[0].start()
    first = await holder(url, "poller")
    await bots[1].start()
    try:
        await holder(url, "sender")
        for user in range(1000, 1010):
            fake.add_message(user_id=user, text="/start")
        await fake.wait_for("sendMessage", count=10, timeout=60)
        assert set(replied_to(fake)) == set(range(1000, 1010))
        assert conflicts(fake) == 0  # the standby never polled
        await named(bots, first).kill()
        for user in range(2000, 2010):
            fake.add_message(user_id=user, text="/start")
        # The standby takes the poller's lease once it runs out (15 s), and Telegram's queue with it.
        await fake.wait_for(
            "sendMessage", count=10, timeout=90, predicate=lambda call: int(call.params["chat_id"]) >= 2000
        )
        assert await holder(url, "poller") != first
        survivor = next(bot for bot in bots if bot is not named(bots, first))
        assert survivor.process is not None and survivor.process.returncode is None
        # At most the killed poller's last long poll, ended by the new poller's (as Telegram does).
        assert conflicts(fake) <= 1
    finally:
        await stop_all(bots)
    assert set(replied_to(fake)) == set(range(1000, 1010)) | set(range(2000, 2010))


RECIPIENTS = range(720_000, 720_300)


async def test_kill_9_of_the_sender_hands_its_rows_to_the_other_instance(
    fake: FakeBotApi, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, api_url=fake.url)
    services = await open_services(settings, SystemClock(), build_limiter(settings, SystemClock()))
    async with services.db.write() as conn:
        await services.outbox.enqueue(
            conn,
            [
                OutgoingMessage(
                    "sendMessage",
                    {"chat_id": chat, "text": "campaign"},
                    kind="campaign",
                    recipient_user_id=chat,
                    priority=PRIORITY_BROADCAST,
                )
                for chat in RECIPIENTS
            ],
        )
    await services.close()
    url = settings.database_url
    # Paced under the fake's limit: this test is about the takeover, not about pacing at the cap (a
    # stalled event loop on a loaded machine can bunch sends into a 429; bench/cluster.py measures that).
    bots = pair(fake, tmp_path, rate_global_per_s="20", outbox_concurrency="4", outbox_lease_s="60")
    fake.set_rate_limit(30)
    for bot in bots:
        await bot.start()
    try:
        sender = await holder(url, "sender")
        await fake.wait_for("sendMessage", count=40, timeout=60)
        await named(bots, sender).kill()
        at_kill = await outbox_at_kill(url, services.pseudonyms, RECIPIENTS)
        # Taken over within the sender's lease (6 s), not the rows' own 60 s outbox leases.
        await fake.wait_for("sendMessage", count=len(RECIPIENTS), timeout=90)
        await drained(url, timeout=60)
        assert await holder(url, "sender") != sender
    finally:
        await stop_all(bots)
    received = Counter(int(call.params["chat_id"]) for call in fake.sent("sendMessage"))
    assert set(received) == set(RECIPIENTS)
    assert_only_unrecorded_sends_repeat(received, at_kill)
    assert fake.received_429 == 0


async def test_the_updates_an_instance_was_handling_are_handled_by_the_other_after_kill_9(
    fake: FakeBotApi, tmp_path: Path
) -> None:
    """Needs the instances to share their transient keys: the killed instance's rows are sealed under its
    own, so only then can the other decrypt them (until then the test fails here by timing out)."""
    url = await prepare(fake, tmp_path)
    bots = pair(fake, tmp_path)
    for bot in bots:
        await bot.start()
    try:
        await holder(url, "poller")
        await holder(url, "sender")
        # Each has lent the other its keys (within a sync interval of the second start): before that, a
        # kill leaves rows only their own instance can read, until it restarts (see the README).
        loop = asyncio.get_running_loop()
        lent_by = loop.time() + 30
        while len(await read_rows(url, "SELECT DISTINCT holder FROM transient_shares")) < 2:
            assert loop.time() < lent_by, "the instances never lent each other their keys"
            await asyncio.sleep(0.1)
        # The replies reach the people but their answers hang: the handlers are mid-update when killed.
        fake.timeout_next("sendMessage", times=3, delay=120)
        for user in range(3000, 3003):
            fake.add_message(user_id=user, text="/start")
        await fake.wait_for("sendMessage", count=3, timeout=60)
        owners = await read_rows(url, "SELECT DISTINCT owner FROM inbox WHERE status = 'pending'")
        assert len(owners) == 1 and owners[0][0] is not None
        killed = named(bots, str(owners[0][0]).rsplit(":", 1)[0])
        await killed.kill()
        # Its claims run out (15 s) and the other instance runs the updates again: a repeat of what was
        # in flight, nothing lost.
        deadline = loop.time() + 90
        while (await read_rows(url, "SELECT count(*) FROM inbox WHERE status = 'pending'"))[0][0]:
            assert loop.time() < deadline, "the killed instance's updates were never handled"
            await asyncio.sleep(0.2)
    finally:
        await stop_all(bots)
    replies = replied_to(fake)
    assert all(replies[user] >= 2 for user in range(3000, 3003)), replies


def _help(update_id: int, user_id: int) -> dict[str, Any]:
    person = {"id": user_id, "is_bot": False, "first_name": "Test", "language_code": "en"}
    message: dict[str, Any] = {
        "message_id": update_id,
        "date": int(time.time()),
        "chat": {"id": user_id, "type": "private", "first_name": "Test"},
        "from": person,
        "text": "/help",
        "entities": [{"type": "bot_command", "offset": 0, "length": 5}],
    }
    return {"update_id": update_id, "message": message}


async def test_behind_a_webhook_any_instance_takes_updates_and_each_is_handled_once(
    fake: FakeBotApi, tmp_path: Path
) -> None:
    """A load balancer posts to either instance; whichever stored an update, it is handled once."""
    await prepare(fake, tmp_path)
    bots, urls = [], []
    for name in ("a", "b"):
        port = free_port()
        url = f"http://127.0.0.1:{port}/telegram/hook"
        settings = make_settings(
            tmp_path,
            api_url=fake.url,
            data_dir=tmp_path / name,
            webhook_url=url,
            webhook_listen=("127.0.0.1", port),
        )
        bots.append(RunningBot(settings, seed=False))
        urls.append(url)
    for bot in bots:
        await bot.start()
    try:
        await fake.wait_for("setWebhook", count=2, timeout=30)
        services = [await bot.started_services() for bot in bots]
        secret = webhook_secret(bots[0].settings, services[0].key)
        users = range(5000, 5010)
        update_id = 1
        async with aiohttp.ClientSession() as session:
            for round_ in range(3):
                for user in users:
                    # Alternating: one person's updates arrive at both instances.
                    target = urls[(user + round_) % 2]
                    async with session.post(
                        target, json=_help(update_id, user), headers={SECRET_HEADER: secret}
                    ) as response:
                        assert response.status == 200
                    update_id += 1
        await fake.wait_for("sendMessage", count=3 * len(users), timeout=60)
        await asyncio.sleep(1.0)  # a repeat would come now
    finally:
        for bot in bots:
            await bot.stop()
    assert replied_to(fake) == Counter({user: 3 for user in users})
