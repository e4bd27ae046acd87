"""Kill -9 of the whole bot process mid-delivery: after a restart every outbox row is delivered."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from bot.runtime.clock import SystemClock
from bot.runtime.outbox import PRIORITY_BROADCAST, OutgoingMessage
from bot.security import Pseudonymizer
from bot.wiring import build_limiter, open_services
from tests.campaign_seed import ready_campaign, seed_subscribers
from tests.fakebot import FakeBotApi
from tests.support.bots import BotProcess
from tests.support.database import read_rows
from tests.support.settings import make_settings

RECIPIENTS = range(700_000, 700_300)
CONCURRENCY = 4


async def outbox_at_kill(url: str, pseudonyms: Pseudonymizer, chats: Iterable[int]) -> dict[int, str]:
    """Read each recipient's outbox status as the killed process left it (its WAL included)."""
    chat_of = {pseudonyms.of_user(chat): chat for chat in chats}
    rows = await read_rows(url, "SELECT recipient, status FROM outbox WHERE recipient IS NOT NULL")
    return {chat_of[recipient]: status for recipient, status in rows if recipient in chat_of}


async def drained(url: str, timeout: float = 60.0) -> None:
    """Wait until the running child's outbox has no row left to send or leased (across processes)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        ((left,),) = await read_rows(
            url, "SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending')"
        )
        if not left:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"{left} outbox rows still unsent after {timeout} s")
        await asyncio.sleep(0.05)


def assert_only_unrecorded_sends_repeat(received: Counter[int], at_kill: dict[int, str]) -> None:
    """A row goes twice only if it was sent and the kill came before its outcome was written: it was
    still leased ("sending"). A row recorded as sent never goes again; a pending one had not gone yet.

    (How many that is depends on how long the last flush took, which load stretches: the proof is which
    rows repeat, not how many.)"""
    repeated = {chat for chat, count in received.items() if count > 1}
    assert all(count <= 2 for count in received.values()), received.most_common(3)
    wrong = {chat: at_kill.get(chat) for chat in repeated if at_kill.get(chat) != "sending"}
    assert not wrong, f"sent twice though recorded as {sorted(set(wrong.values()), key=str)}: {wrong}"
    leased = sum(1 for status in at_kill.values() if status == "sending")
    assert len(repeated) <= leased


async def test_kill_9_mid_delivery_loses_no_outbox_row(fake: FakeBotApi, tmp_path: Path) -> None:
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

    bot = BotProcess(
        fake,
        settings.data_dir,
        rate_global_per_s="100",
        outbox_concurrency=str(CONCURRENCY),
        outbox_lease_s="5",
    )
    fake.set_rate_limit(100)
    await bot.start()
    try:
        await fake.wait_for("sendMessage", count=100, timeout=60)
        await bot.kill()
        assert len(fake.sent("sendMessage")) < len(RECIPIENTS)
        at_kill = await outbox_at_kill(settings.database_url, services.pseudonyms, RECIPIENTS)
        await bot.start()
        await fake.wait_for("sendMessage", timeout=60, predicate=lambda call: True, count=len(RECIPIENTS))
        await drained(settings.database_url)
    finally:
        # SIGTERM: the bot writes every outcome before it exits, so anything sent twice is in fake.calls.
        await bot.stop()
    received = Counter(int(call.params["chat_id"]) for call in fake.sent("sendMessage"))
    assert set(received) == set(RECIPIENTS)
    assert_only_unrecorded_sends_repeat(received, at_kill)
    assert fake.received_429 == 0


BROADCAST_SUBSCRIBERS = list(range(710_000, 715_000))


async def test_kill_9_mid_broadcast_every_subscriber_gets_it_once(fake: FakeBotApi, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, api_url=fake.url, admin_ids=frozenset({5001}))
    services = await open_services(settings, SystemClock(), build_limiter(settings, SystemClock()))
    try:
        await seed_subscribers(services, BROADCAST_SUBSCRIBERS)
        campaign_id = await ready_campaign(services, 5001)
    finally:
        await services.close()

    def delivered() -> list[int]:
        return [
            int(call.params["chat_id"])
            for call in fake.sent("sendMessage")
            if f"cp:{campaign_id}:acted" in str(call.params.get("reply_markup", ""))
        ]

    rate = 400
    bot = BotProcess(
        fake,
        settings.data_dir,
        admin_ids="5001",  # the author keeps the role: a campaign of someone without one is not delivered
        rate_global_per_s=str(rate),
        outbox_concurrency=str(CONCURRENCY),
        outbox_lease_s="5",
        broadcast_interval_s="0.3",
    )
    fake.set_rate_limit(rate)
    await bot.start()
    try:
        await fake.wait_for(
            "sendMessage", count=1500, timeout=90, predicate=lambda c: f"cp:{campaign_id}:" in str(c.params)
        )
        await bot.kill()
        assert len(delivered()) < len(BROADCAST_SUBSCRIBERS)
        at_kill = await outbox_at_kill(settings.database_url, services.pseudonyms, BROADCAST_SUBSCRIBERS)
        await bot.start()
        await fake.wait_for(
            "sendMessage",
            count=len(BROADCAST_SUBSCRIBERS),
            timeout=120,
            predicate=lambda c: f"cp:{campaign_id}:acted" in str(c.params.get("reply_markup", "")),
        )
        await drained(settings.database_url)
    finally:
        await bot.stop()
    received = Counter(delivered())
    assert set(received) == set(BROADCAST_SUBSCRIBERS)
    assert_only_unrecorded_sends_repeat(received, at_kill)
    assert fake.received_429 == 0
