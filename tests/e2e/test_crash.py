"""Kill -9 of the whole bot process mid-delivery: after a restart every outbox row is delivered."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from bot.runtime.clock import SystemClock
from bot.runtime.outbox import PRIORITY_BROADCAST, OutgoingMessage
from bot.wiring import build_limiter, open_services
from tests.campaign_seed import ready_campaign, seed_subscribers
from tests.fakebot import FakeBotApi
from tests.support.bots import BotProcess
from tests.support.settings import make_settings

RECIPIENTS = range(700_000, 700_300)
CONCURRENCY = 4


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
        await bot.start()
        await fake.wait_for("sendMessage", timeout=60, predicate=lambda call: True, count=len(RECIPIENTS))
        await asyncio.sleep(1.0)
    finally:
        await bot.stop()
    received = Counter(int(call.params["chat_id"]) for call in fake.sent("sendMessage"))
    assert set(received) == set(RECIPIENTS)
    duplicates = sum(count - 1 for count in received.values())
    # Only what was in flight or sent-but-not-yet-recorded at the kill: the worker's concurrency plus one
    # flush interval (50 ms) of sends at 100 msg/s.
    assert duplicates <= CONCURRENCY + 5
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
        await bot.start()
        await fake.wait_for(
            "sendMessage",
            count=len(BROADCAST_SUBSCRIBERS),
            timeout=120,
            predicate=lambda c: f"cp:{campaign_id}:acted" in str(c.params.get("reply_markup", "")),
        )
        await asyncio.sleep(1.0)
    finally:
        await bot.stop()
    received = Counter(delivered())
    assert set(received) == set(BROADCAST_SUBSCRIBERS)
    duplicates = sum(count - 1 for count in received.values())
    # Only messages in flight at the kill, or sent in the last flush interval before it.
    assert duplicates <= CONCURRENCY + rate // 20, duplicates
    assert fake.received_429 == 0
