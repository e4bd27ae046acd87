"""End-to-end fixtures: the real bot (real HTTP, a real database) against the local fake Bot API.

Every test here runs on SQLite and on PostgreSQL (tests.support.backends). The helpers themselves
(RunningBot, BotProcess, reply helpers, the barrier) live in tests/support.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.settings import Settings
from tests.fakebot import FakeBotApi
from tests.support.bots import RunningBot
from tests.support.settings import TEST_TOKEN, make_settings


@pytest.fixture(autouse=True)
def on_each_backend(backend: str) -> str:
    """Run the test once per backend; make_settings and BotProcess pick the test's database up."""
    return backend


@pytest.fixture
async def fake() -> AsyncIterator[FakeBotApi]:
    """A fake Telegram on 127.0.0.1."""
    async with FakeBotApi(TEST_TOKEN) as server:
        yield server


@pytest.fixture
def bot_settings(tmp_path: Path, fake: FakeBotApi) -> Settings:
    """Settings pointing the bot at the fake server, with a data dir of its own."""
    return make_settings(tmp_path, api_url=fake.url)


@pytest.fixture
async def bot(bot_settings: Settings) -> AsyncIterator[RunningBot]:
    """The running bot."""
    running = RunningBot(bot_settings)
    await running.start()
    yield running
    await running.stop()
