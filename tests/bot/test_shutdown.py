"""Stopping is bounded: a loop that hangs is cut after the grace period, the others finish normally."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.runner import _stop_within


async def test_a_hanging_loop_is_cancelled_after_the_grace_period(caplog: pytest.LogCaptureFixture) -> None:
    finished: list[str] = []

    async def quick() -> None:
        await asyncio.sleep(0.01)
        finished.append("quick")

    async def stuck_inside() -> None:
        await asyncio.Event().wait()

    async def hangs() -> None:
        await stuck_inside()

    tasks = {asyncio.create_task(quick(), name="quick"), asyncio.create_task(hangs(), name="delivery")}
    loop = asyncio.get_running_loop()
    started = loop.time()
    with caplog.at_level(logging.WARNING, logger="bot.runner"):
        results = await _stop_within(tasks, 0.2)
    assert loop.time() - started < 2.0
    assert finished == ["quick"]
    assert sum(isinstance(r, asyncio.CancelledError) for r in results) == 1
    assert "delivery did not stop" in caplog.text
    assert "stuck_inside" in caplog.text  # says where it hung
