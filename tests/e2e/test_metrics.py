"""/metrics end to end: the figures a scrape reads while alerts are sent, held, and a 429 is answered."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_crisis import queue_reports, started, wait_visible
from tests.fakebot import FakeBotApi
from tests.support.bots import RunningBot
from tests.support.people import ADMIN, COORDINATORS, Person
from tests.support.settings import free_port, make_settings


async def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as got:
        assert got.status == 200
        assert got.headers["Content-Type"].startswith("text/plain")
        body = await got.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


async def _scrape_until(
    port: int, check: Callable[[dict[tuple[str, tuple[tuple[str, str], ...]], float]], bool], timeout: float
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        figures = await _scrape(port)
        if check(figures):
            return figures
        if loop.time() > deadline:
            raise AssertionError(f"the figures never got there: {figures}")
        await asyncio.sleep(0.2)


async def test_a_scrape_shows_queues_sends_429s_held_alerts_and_alert_latency(
    fake: FakeBotApi, tmp_path: Path
) -> None:
    port = free_port()
    settings = make_settings(
        tmp_path,
        api_url=fake.url,
        admin_ids=frozenset({ADMIN}),
        coordinator_chat_id=COORDINATORS,
        metrics_listen=("127.0.0.1", port),
    )
    bot = RunningBot(settings)
    await bot.start()
    try:
        services = await started(bot, fake)
        await Person(fake, 401).say("/help")
        codes = await queue_reports(services, 2)
        await wait_visible(fake, COORDINATORS, set(codes), timeout=20)
        await bot.quiet(fake)
        figures = await _scrape(port)
        assert figures[("jarchy_inbox_updates", (("status", "done"),))] >= 1
        assert figures[("jarchy_inbox_updates", (("status", "pending"),))] == 0
        assert figures[("jarchy_sends_total", ())] >= 3  # the reply and two alerts at least
        assert figures[("jarchy_alert_latency_seconds_count", ())] == 2
        assert figures[("jarchy_alert_latency_seconds_bucket", (("le", "+Inf"),))] == 2
        assert figures[("jarchy_alerts_held", ())] == 0
        assert figures[("jarchy_telegram_429_total", ())] == 0
        # A scrape feeds each alert's latency once.
        again = await _scrape(port)
        assert again[("jarchy_alert_latency_seconds_count", ())] == 2

        # Telegram answering an alert 429 once: counted, and the alert still goes.
        fake.fail_next("sendMessage", status=429, description="Too Many Requests: retry after 1")
        (late,) = await queue_reports(services, 1)
        await wait_visible(fake, COORDINATORS, {late}, timeout=20)
        # The group refusing the bot: the next alert is held until it is back.
        fake.kick_bot(COORDINATORS)
        await queue_reports(services, 1)
        await fake.wait_for("sendMessage", chat_id=ADMIN, timeout=20)  # the admins hear the group is lost
        # The alert is tried once the 429's pause is over, refused, and held.
        figures = await _scrape_until(port, lambda f: f[("jarchy_alerts_held", ())] == 1, timeout=20)
        assert figures[("jarchy_telegram_429_total", ())] >= 1
        assert any(
            name == "jarchy_outbox_rows" and dict(labels)["status"] == "held" and value >= 1
            for (name, labels), value in figures.items()
        )
    finally:
        await bot.stop()
