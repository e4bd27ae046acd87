"""The end-to-end suite really runs the bot on the test's backend, in-process and as a child process."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url

from bot.settings import Settings
from tests.fakebot import FakeBotApi
from tests.support.bots import BotProcess, RunningBot


async def test_the_bot_runs_on_the_tests_backend(bot: RunningBot, backend: str) -> None:
    services = await bot.started_services()
    assert services.db.engine.dialect.name == backend


def test_a_bot_process_is_given_the_tests_database(
    fake: FakeBotApi, bot_settings: Settings, tmp_path: Path, backend: str
) -> None:
    process = BotProcess(fake, tmp_path / "data")
    url = process.env.get("JARCHY_DATABASE_URL", bot_settings.database_url)
    assert make_url(url).get_backend_name() == backend
    assert url == bot_settings.database_url
