"""Kill -9 of the whole bot process mid-delivery: after a restart every outbox row is delivered."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from bot.clock import SystemClock
from bot.services.outbox import PRIORITY_BROADCAST, OutgoingMessage
from bot.wiring import build_limiter, open_services
from tests.conftest import make_settings
from tests.e2e.conftest import BotProcess
from tests.fakebot import FakeBotApi

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
