"""Fixtures of the report tests: a bot with an admin and a coordinators' chat."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.settings import Settings
from tests.fakebot import FakeBotApi
from tests.support.bots import RunningBot
from tests.support.people import ADMIN, COORDINATORS, Person
from tests.support.settings import make_settings

# Unit tests (test_phone_cleanup.py, test_key_rotation.py under tests/bot/services) import these from here.
__all__ = ["ADMIN", "COORDINATORS", "Person", "report_settings", "reporting_bot"]


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
