"""Fixtures of the report tests: a bot with an admin and a coordinators' chat."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.settings import Settings
from tests.fakebot import FakeBotApi
from tests.support.bots import RunningBot
from tests.support.people import ADMIN, COORDINATORS, Person
from tests.support.settings import make_settings

# Unit tests (tests/test_phone_cleanup.py, tests/test_key_rotation.py) still import these from here.
__all__ = ["ADMIN", "COORDINATORS", "Person", "report_settings", "reporting_bot", "settle"]


@pytest.fixture
def report_settings(tmp_path: Path, fake: FakeBotApi) -> Settings:
    """A bot with an admin and a coordinators' chat."""
    return make_settings(
        tmp_path, api_url=fake.url, admin_ids=frozenset({ADMIN}), coordinator_chat_id=COORDINATORS
    )


@pytest.fixture
async def reporting_bot(report_settings: Settings) -> AsyncIterator[RunningBot]:
    """The running bot with the report settings."""
    running = RunningBot(report_settings)
    await running.start()
    yield running
    await running.stop()


async def settle(seconds: float = 0.3) -> None:
    """Sleep a fixed time. Kept for the unit tests that still use it; wait with tests.support.barrier.quiet
    or fake.wait_for instead."""
    await asyncio.sleep(seconds)
